//! One backend's checks: a check (`GET <path>` on a fresh connection, or only the connection for a `tcp` check,
//! within the check timeout), the loop that
//! checks every interval and flips the backend's health through the rise/fall machine, and the check before
//! traffic (`check_once`). Every check that was made is recorded in the backend's state (counters, history: see
//! `backend::history`) and logged at debug.
//!
//! A check reaches the backend the way requests do (`upstream::connector`): over TLS for a `tls` backend (so a `tcp`
//! check of one passes only once the handshake, verification included, has), and in the backend's HTTP version:
//! HTTP/1.1, or HTTP/2 for `protocol = "h2c"` and `"h2"`. A backend that answers a check but not in the way requests
//! will need is not healthy. A backend whose host name does not resolve yet is not connected to at all: its checks
//! fail ("name does not resolve") until the name resolves, which makes it another backend (see `dns`).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request, Response, Uri, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use super::state::{Flip, HealthState};
use crate::backend::history::Check;
use crate::backend::Backend;
use crate::config::{HealthConfig, HealthKind, Protocol};
use crate::failure::{describe_io_static, is_local_shortage};
use crate::log_limit::{self, Subject};
use crate::proxy_protocol;
use crate::upstream::connector::{self, Upstream};
use crate::upstream::{ConnectError, Snapshot};

/// How soon a check that could not be made for a local reason is tried again.
const LOCAL_RETRY: Duration = Duration::from_millis(100);

/// What one check found.
#[derive(Debug)]
enum Verdict {
    /// The backend answered this status, which passes (`None`: a TCP check, which asks for no status).
    Pass(Option<u16>),
    /// It did not answer in time, or with a status that does not pass (then `status` is it).
    Fail { status: Option<u16>, error: String },
    /// No verdict: the check could not be made for a local reason (the reason, for the log).
    Local(&'static str),
}

/// A check that was made: what it found, when it started and how long it took.
struct Made {
    verdict: Verdict,
    at: SystemTime,
    took: Duration,
}

impl Made {
    fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Pass(_))
    }

    /// Why it failed (empty if it did not).
    fn error(&self) -> &str {
        match &self.verdict {
            Verdict::Fail { error, .. } => error,
            _ => "",
        }
    }

    /// Records it in `backend`'s state, after which the backend is `up`, and logs it at debug.
    fn record(self, backend: &Backend, up: bool) {
        let ms = format_args!("{:.2}", self.took.as_secs_f64() * 1000.0);
        let (ok, status, error) = match self.verdict {
            Verdict::Pass(status) => {
                tracing::debug!(status, %ms, "{backend} health check passed");
                (true, status, None)
            }
            Verdict::Fail { status, error } => {
                tracing::debug!(status, %error, %ms, "{backend} health check failed");
                (false, status, Some(error))
            }
            Verdict::Local(_) => {
                // Not a check of the backend: not counted, not in its history.
                backend.state.healthy.store(up, Ordering::Relaxed);
                return;
            }
        };
        let check = Check {
            at: self.at,
            ok,
            status,
            error,
            took: self.took,
        };
        backend.state.checked(check, up);
    }
}

/// Checks every backend once (each as its pool in `snapshot` says), concurrently, and sets each one's health from
/// the result.
pub async fn check_once(backends: &[Arc<Backend>], snapshot: &Snapshot) {
    let checks = backends.iter().map(|backend| async move {
        let made = check(backend, snapshot.health_of(backend)).await;
        let healthy = match &made.verdict {
            Verdict::Pass(_) => true,
            Verdict::Fail { error, .. } => {
                tracing::warn!("{backend} down at its first check: {error}");
                false
            }
            Verdict::Local(reason) => {
                tracing::warn!("{backend} not checked at first ({reason}): taken as up");
                true
            }
        };
        made.record(backend, healthy);
    });
    futures_util::future::join_all(checks).await;
}

/// Checks `backend` every interval until `stop`, flipping its health per the rise/fall rules.
pub(super) async fn watch(backend: Arc<Backend>, config: HealthConfig, stop: CancellationToken) {
    let mut state = HealthState::new(backend.is_healthy(), config.rise, config.fall);
    let mut up = backend.is_healthy();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate, and `check_once` just did that check
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let made = loop {
            let made = tokio::select! {
                _ = stop.cancelled() => return,
                made = check(&backend, &config) => made,
            };
            let Verdict::Local(reason) = made.verdict else {
                break made;
            };
            let key = log_limit::Key {
                subject: Subject::Backend(backend.id),
                what: "health checks not made",
                reason,
            };
            if log_limit::first(key) {
                tracing::warn!(
                    "{backend}: health check not made ({reason}): not counted, trying again"
                );
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LOCAL_RETRY.min(config.interval)) => {}
            }
        };
        match state.record(made.passed()) {
            None => {}
            Some(Flip::Down(failures)) => {
                up = false;
                let last = made.error();
                tracing::warn!("{backend} down: {failures} checks failed, last: {last}");
            }
            Some(Flip::Up(passes)) => {
                up = true;
                tracing::info!("{backend} up: {passes} checks passed");
            }
        }
        made.record(&backend, up);
    }
}

/// One check: whether the backend answered the health path with an accepted status in time, and if not why.
async fn check(backend: &Backend, config: &HealthConfig) -> Made {
    let at = SystemTime::now();
    let started = Instant::now();
    let verdict = match tokio::time::timeout(config.timeout, probe(backend, config)).await {
        Err(_) => Verdict::Fail {
            status: None,
            error: format!("timed out after {:?}", config.timeout),
        },
        Ok(Err(verdict)) => verdict,
        Ok(Ok(None)) => Verdict::Pass(None),
        Ok(Ok(Some(status))) if config.passes(status) => Verdict::Pass(Some(status)),
        Ok(Ok(Some(status))) => Verdict::Fail {
            status: Some(status),
            error: format!("status {status}"),
        },
    };
    Made {
        verdict,
        at,
        took: started.elapsed(),
    }
}

/// The status the backend answered (`None` for a TCP check, which passes once connected), or why there is none.
async fn probe(backend: &Backend, config: &HealthConfig) -> Result<Option<u16>, Verdict> {
    let fail = |error: String| Verdict::Fail {
        status: None,
        error,
    };
    // A backend whose host name has no address yet has no place to be checked at (its address is a placeholder).
    if !backend.is_resolved() {
        return Err(fail("name does not resolve".to_owned()));
    }
    // The check's own timeout bounds the connect. A `send_proxy` backend gets a header naming no client first.
    let prelude = backend.options.send_proxy.map(proxy_protocol::local_header);
    let stream = connector::connect(backend, config.timeout, prelude.as_deref())
        .await
        .map_err(|error| match error {
            ConnectError::Io(error) if is_local_shortage(&error) => {
                Verdict::Local(describe_io_static(&error))
            }
            other => fail(other.to_string()),
        })?;
    if config.kind == HealthKind::Tcp {
        return Ok(None);
    }
    let agent = concat!("lb-health-check/", env!("CARGO_PKG_VERSION"));
    let status = match backend.options.protocol {
        Protocol::Http1 => {
            let request = Request::get(config.path.as_str())
                .header(header::HOST, backend.authority.as_str())
                .header(header::USER_AGENT, agent)
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|error| fail(error.to_string()))?;
            http1(stream, request).await
        }
        Protocol::H2c | Protocol::H2 => {
            // HTTP/2 carries the host in the `:authority` of an absolute URI, and has no `Connection` header.
            let scheme = match backend.tls {
                Some(_) => "https",
                None => "http",
            };
            let uri = Uri::builder()
                .scheme(scheme)
                .authority(backend.authority.as_str())
                .path_and_query(config.path.as_str())
                .build()
                .map_err(|error| fail(error.to_string()))?;
            let request = Request::get(uri)
                .version(Version::HTTP_2)
                .header(header::USER_AGENT, agent)
                .body(Empty::<Bytes>::new())
                .map_err(|error| fail(error.to_string()))?;
            http2(stream, request).await
        }
    };
    status.map(Some).map_err(|error| fail(with_causes(&error)))
}

/// `error` and what caused it, as one line: hyper's own words say where the exchange failed (`error writing a body
/// to connection`), the causes why (`received fatal alert: CertificateRequired`, from TLS).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = error.to_string();
        if !line.ends_with(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
        cause = error.source();
    }
    line
}

/// Sends `request` over HTTP/1.1 on `stream`; answers the response's status.
async fn http1(stream: Upstream, request: Request<Empty<Bytes>>) -> hyper::Result<u16> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    answered(sender.send_request(request), connection).await
}

/// Sends `request` over HTTP/2 on `stream`; answers the response's status.
///
/// hyper's HTTP/2 client spawns its connection task (and one per request) on the executor, here the runtime that
/// runs the checks. Once the check is over (answered, failed or timed out), both ends are dropped and the spawned
/// task resets the stream and closes the connection, so nothing outlives the check for long.
async fn http2(stream: Upstream, request: Request<Empty<Bytes>>) -> hyper::Result<u16> {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    answered(sender.send_request(request), connection).await
}

/// The status `exchange` gets, driving `connection` meanwhile: driven here rather than spawned, so a backend that
/// hangs leaves nothing behind when the check times out.
async fn answered(
    exchange: impl Future<Output = hyper::Result<Response<Incoming>>>,
    connection: impl Future<Output = hyper::Result<()>>,
) -> hyper::Result<u16> {
    let mut exchange = std::pin::pin!(exchange);
    let response = tokio::select! {
        biased;
        response = &mut exchange => response,
        ended = connection => match ended {
            Ok(()) => exchange.await,
            Err(error) => Err(error),
        },
    };
    response.map(|r| r.status().as_u16())
}
