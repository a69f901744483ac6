//! One backend's checks: a check (`GET <path>` on a fresh connection, within the check timeout), the loop that
//! checks every interval and flips the backend's health through the rise/fall machine, and the check before
//! traffic (`check_once`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::state::{Flip, HealthState};
use crate::backend::Backend;
use crate::config::HealthConfig;
use crate::failure::{describe_io, describe_io_static, is_local_shortage};
use crate::log_limit::{self, Subject};

/// How soon a check that could not be made for a local reason is tried again.
const LOCAL_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// What one check found.
#[derive(Debug)]
enum Verdict {
    Pass,
    Fail(String),
    /// No verdict: the check could not be made for a local reason (the reason, for the log).
    Local(&'static str),
}

/// Checks every backend once, concurrently, and sets each one's health from the result.
pub async fn check_once(backends: &[Arc<Backend>], config: &HealthConfig) {
    let checks = backends.iter().map(|backend| async move {
        let healthy = match check(backend, config).await {
            Verdict::Pass => true,
            Verdict::Fail(reason) => {
                tracing::warn!("{backend} down at its first check: {reason}");
                false
            }
            Verdict::Local(reason) => {
                tracing::warn!("{backend} not checked at first ({reason}): taken as up");
                true
            }
        };
        backend.state.healthy.store(healthy, Ordering::Relaxed);
    });
    futures_util::future::join_all(checks).await;
}

/// Checks `backend` every interval until `stop`, flipping its health per the rise/fall rules.
pub(super) async fn watch(backend: Arc<Backend>, config: HealthConfig, stop: CancellationToken) {
    let mut state = HealthState::new(backend.is_healthy(), config.rise, config.fall);
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate, and `check_once` just did that check
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let verdict = loop {
            let verdict = tokio::select! {
                _ = stop.cancelled() => return,
                verdict = check(&backend, &config) => verdict,
            };
            let Verdict::Local(reason) = verdict else {
                break verdict;
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
        let passed = matches!(verdict, Verdict::Pass);
        match state.record(passed) {
            None => {}
            Some(Flip::Down(failures)) => {
                backend.state.healthy.store(false, Ordering::Relaxed);
                let last = match verdict {
                    Verdict::Fail(reason) => reason,
                    _ => String::new(),
                };
                tracing::warn!("{backend} down: {failures} checks failed, last: {last}");
            }
            Some(Flip::Up(passes)) => {
                backend.state.healthy.store(true, Ordering::Relaxed);
                tracing::info!("{backend} up: {passes} checks passed");
            }
        }
    }
}

/// One check: whether the backend answered the health path with an accepted status in time, and if not why.
async fn check(backend: &Backend, config: &HealthConfig) -> Verdict {
    match tokio::time::timeout(config.timeout, probe(backend, config)).await {
        Err(_) => Verdict::Fail(format!("timed out after {:?}", config.timeout)),
        Ok(Err(verdict)) => verdict,
        Ok(Ok(status)) if config.passes(status) => Verdict::Pass,
        Ok(Ok(status)) => Verdict::Fail(format!("status {status}")),
    }
}

async fn probe(backend: &Backend, config: &HealthConfig) -> Result<u16, Verdict> {
    let fail = |reason: String| Verdict::Fail(reason);
    let stream =
        TcpStream::connect(backend.addr).await.map_err(|error| {
            match is_local_shortage(&error) {
                true => Verdict::Local(describe_io_static(&error)),
                false => fail(describe_io(&error)),
            }
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| fail(error.to_string()))?;
    let request = Request::get(config.path.as_str())
        .header(header::HOST, backend.authority.as_str())
        .header(
            header::USER_AGENT,
            concat!("lb-health-check/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| fail(error.to_string()))?;
    let mut exchange = std::pin::pin!(sender.send_request(request));
    // The connection is driven here rather than spawned, so a backend that hangs leaves nothing behind when the
    // check times out.
    let response = tokio::select! {
        biased;
        response = &mut exchange => response,
        ended = connection => match ended {
            Ok(()) => exchange.await,
            Err(error) => Err(error),
        },
    };
    response
        .map(|r| r.status().as_u16())
        .map_err(|error| fail(error.to_string()))
}
