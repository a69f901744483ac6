//! The attempts of one request on the generic path: backends one after another, as the retry rule allows
//! (`proxy::retry`), until one answers with its head; leasing a connection (a kept-alive HTTP/1.1 sender or the
//! backend's multiplexed HTTP/2 connection) and sending on it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, TrySendError};
use tokio::time::Instant;

use super::body::Paced;
use super::clients::{self, Sender, UpBody};
use super::conn::Conn;
use super::headers;
use crate::backend::outlier::Observed;
use crate::backend::BackendState;
use crate::failure::Failure;
use crate::log_limit::{self, Subject};
use crate::proxy::{is_idempotent, resent_elsewhere, ProxyError, Record, Tried};
use crate::upstream::{Backend, Cluster, ConnectError, Snapshot};
use crate::worker::Worker;

/// A backend's answer (its head), and what it came over.
pub(super) struct Answered {
    pub response: Response<Incoming>,
    pub index: usize,
    /// An HTTP/1.1 connection, to keep once the body is through.
    pub sender: Option<http1::SendRequest<UpBody>>,
}

/// Sends the request to one backend after another, as the retry rule allows, until one answers (its head).
/// `guard` holds the in-flight count of the backend of the current attempt (and of the answer, once there is one).
#[allow(clippy::too_many_arguments)] // the request and where it goes, as `exchange` worked them out
pub(super) async fn attempts<'s>(
    conn: &Conn,
    snapshot: &'s Snapshot,
    cluster: Option<&'s Cluster>,
    key: Option<u64>,
    request: Request<Paced>,
    upgrade: bool,
    started: Instant,
    record: &mut Record,
    guard: &mut Option<crate::backend::InFlight<'s>>,
) -> Result<Answered, ProxyError> {
    let worker = conn.worker();
    let replayable = is_idempotent(request.method()) && request.body().is_end_stream();
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let Some(cluster) = cluster else {
        return Err(ProxyError::new(Failure::NoRoute, None, ""));
    };
    let backends = &cluster.backends;
    let mut tried = Tried::new(snapshot, cluster, key, worker.index());
    let mut last_failure: Option<ProxyError> = None;
    let mut again_on_new: Option<usize> = None;
    let mut reached = 0;
    loop {
        let (index, new_connection) = match again_on_new.take() {
            Some(index) => (index, true),
            None => {
                let Some(index) = tried.pick_next() else {
                    return Err(last_failure
                        .unwrap_or_else(|| ProxyError::new(tried.nothing_left(), None, "")));
                };
                (index, false)
            }
        };
        record.attempts += 1;
        let started = match record.attempts {
            1 => started,
            _ => {
                worker.count_retry();
                Instant::now()
            }
        };
        let backend = &backends[index];
        *guard = None;
        *guard = Some(backend.state.enter());
        let (sender, reused) = match lease(conn, snapshot, backend, new_connection).await {
            Ok(lease) => lease,
            Err(error) => {
                let failure = error.failure();
                if failure == Failure::LocalShortage {
                    return Err(ProxyError::new(failure, None, error.to_string()));
                }
                unreachable_backend(backend, &backend.state, &error);
                cluster.observe(index, Observed::ConnectFailed);
                last_failure = Some(ProxyError::new(
                    failure,
                    Some(backend.id),
                    error.to_string(),
                ));
                continue;
            }
        };
        let mut up = Request::new(match body.take() {
            Some(body) => Either::Left(body),
            None => Either::Right(Empty::new()),
        });
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = parts.uri.clone();
        *up.version_mut() = parts.version;
        *up.headers_mut() = parts.headers.clone();
        let (mut up_parts, up_body) = up.into_parts();
        headers::request(&mut up_parts, backend, conn.peer.ip(), conn.https, upgrade);
        if !upgrade {
            headers::frame_body(&mut up_parts, backend, up_body.is_end_stream());
        }
        let up = Request::from_parts(up_parts, up_body);
        let timeout = snapshot.timeouts.backend_response;
        match send(worker, sender, up, timeout).await {
            Ok((response, sender)) => {
                let took = started.elapsed();
                record.upstream = Some(took);
                let status = response.status().as_u16();
                cluster.observe(index, Observed::Answered { status, took });
                return Ok(Answered {
                    response,
                    index,
                    sender,
                });
            }
            // The connection was closed before the request could go: nothing of it was sent.
            Err(Sent::No(request)) => {
                if let Either::Left(unsent) = request.into_body() {
                    body = Some(unsent);
                }
                if reused {
                    again_on_new = Some(index);
                } else {
                    let error = ProxyError::new(
                        Failure::Closed,
                        Some(backend.id),
                        "closed before the request",
                    );
                    last_failure = Some(error);
                }
            }
            Err(Sent::Failed(error)) => {
                let error =
                    ProxyError::new(failure_of(&error), Some(backend.id), error.to_string());
                if error.failure.blames_backend() {
                    cluster.observe(index, Observed::Failed);
                }
                reached += 1;
                if !replayable || reached >= 2 {
                    return Err(error);
                }
                if reused {
                    tracing::debug!(backend = backend.id, %error, "kept-alive backend connection failed before answering, resending on a new one");
                    again_on_new = Some(index);
                } else {
                    resent_elsewhere(backend.id, &error);
                    last_failure = Some(error);
                }
            }
            Err(Sent::TimedOut) => {
                cluster.observe(index, Observed::Failed);
                return Err(ProxyError::new(
                    Failure::ResponseTimeout,
                    Some(backend.id),
                    format!("no response head within {timeout:?}"),
                ));
            }
        }
    }
}

/// Logs (at most once a second per backend and reason) and counts a failed connect.
fn unreachable_backend(backend: &Backend, state: &BackendState, error: &ConnectError) {
    state.connect_failures.fetch_add(1, Ordering::Relaxed);
    let key = log_limit::Key {
        subject: Subject::Backend(backend.id),
        what: "requests retried elsewhere",
        reason: error.failure().as_str(),
    };
    if log_limit::first(key) {
        tracing::warn!("{backend} unreachable ({error}): request retried on the next backend");
    }
}

/// A sender for `backend`: a kept one (`true`), unless `new` asks for a new connection.
async fn lease(
    conn: &Conn,
    snapshot: &Snapshot,
    backend: &Backend,
    new: bool,
) -> Result<(Sender, bool), ConnectError> {
    let worker = conn.worker();
    if !new {
        if let Some(sender) = conn.clients(backend, |c| c.take(worker, backend, &snapshot.pool)) {
            return Ok((sender, true));
        }
    }
    // A `send_proxy` backend learns the client from a PROXY header at the start of the connection; such a
    // connection is kept in `conn.own` (see `Conn::clients`), never lent to another client.
    let prelude = backend.options.send_proxy.map(|version| {
        let local = conn.local.unwrap_or_else(|| unspecified(conn.peer));
        crate::proxy_protocol::header(version, conn.peer, local)
    });
    conn.clients(backend, |c| c.forget_gone(worker, snapshot));
    let timeout = snapshot.timeouts.connect;
    let sender = clients::connect(worker, backend, timeout, prelude.as_deref()).await?;
    if let Sender::H2(h2) = &sender {
        conn.clients(backend, |c| c.keep_h2(worker, backend, h2));
    }
    Ok((sender, false))
}

/// Whether a request left.
enum Sent {
    /// Not sent: here it is back.
    No(Box<Request<UpBody>>),
    /// Sent (maybe in part), and the backend failed before its response head.
    Failed(hyper::Error),
    /// No response head within `backend_response`.
    TimedOut,
}

/// Sends `request` and waits for the response head, at most `timeout`.
async fn send(
    worker: &Worker,
    sender: Sender,
    request: Request<UpBody>,
    timeout: Duration,
) -> Result<(Response<Incoming>, Option<http1::SendRequest<UpBody>>), Sent> {
    let deadline = worker.timers().deadline(timeout);
    let unsent = |error: TrySendError<Request<UpBody>>| {
        let mut error = error;
        match error.take_message() {
            Some(request) => Sent::No(Box::new(request)),
            None => Sent::Failed(error.into_error()),
        }
    };
    match sender {
        Sender::H1(mut sender) => {
            if sender.ready().await.is_err() {
                return Err(Sent::No(Box::new(request)));
            }
            tokio::select! {
                biased;
                sent = sender.try_send_request(request) => sent.map(|r| (r, Some(sender))).map_err(unsent),
                () = deadline => Err(Sent::TimedOut),
            }
        }
        Sender::H2(mut sender) => {
            if sender.ready().await.is_err() {
                return Err(Sent::No(Box::new(request)));
            }
            tokio::select! {
                biased;
                sent = sender.try_send_request(request) => sent.map(|r| (r, None)).map_err(unsent),
                () = deadline => Err(Sent::TimedOut),
            }
        }
    }
}

/// The kind of a failure hyper reports on a backend connection.
fn failure_of(error: &hyper::Error) -> Failure {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Failure::of_io(io, false);
        }
        source = cause.source();
    }
    if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
        Failure::BadResponse
    } else if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        Failure::Closed
    } else {
        Failure::Reset
    }
}

/// The unspecified address of `like`'s family (a PROXY header's destination when the local address is unknown).
fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}
