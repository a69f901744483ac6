//! The generic proxy path: one request from a client (HTTP/2, or HTTP/1.1 through hyper) to a backend of any
//! protocol, with the fast path's rules.
//!
//! The same backend is picked as the fast path would (the snapshot's balancer, asked with the eligibility filter
//! and the backends already tried), counted in flight on it while its attempt lasts (`BackendState::enter`) and in
//! the worker's exchanges until the answer ends (`Worker::exchange`: a drain waits for it). The retry rule is
//! `proxy::retry`'s: another backend when nothing was sent (no connection, or hyper hands the request back unsent);
//! after bytes reached a backend, only an idempotent request without a body, once; a kept-alive connection that
//! failed before any answer is retried on a new one to the same backend. Failures answer 502/503/504 with the
//! fast path's bodies; a backend's answer is counted on it once its body reached the client whole, and every
//! request gets an access log line when its answer ends.
//!
//! Why a task per request (`spawn_local`): hyper takes the response head from the service and streams the body
//! itself, but the request's guards and its log line belong to the end of the body. The task holds them, hands
//! the head over through a channel, and waits for the body to report how it ended (`body::Tracked`).

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, TrySendError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body::{own_answer, ClientBody, Ended, Paced, Tracked};
use super::clients::{self, Clients, Sender, UpBody};
use super::headers;
use super::logged::Logged;
use super::tunnel;
use crate::access_log::{self, Line};
use crate::backend::outlier::Observed;
use crate::backend::stats::StatusClass;
use crate::backend::BackendState;
use crate::balance::key::request_hash;
use crate::failure::{Failure, CLIENT_CLOSED_REQUEST};
use crate::log_limit::{self, Subject};
use crate::proxy::{is_idempotent, ProxyError, Record, Tried};
use crate::upstream::{Backend, Cluster, ConnectError, Snapshot};
use crate::worker::{Open, Worker};

/// One client connection on the generic path, shared by its requests.
pub struct Conn {
    /// Counts the connection as open (and against `max_connections`) until its last request is done.
    open: Open,
    pub peer: SocketAddr,
    /// The address the client reached (see [`Ends::local`]).
    local: Option<SocketAddr>,
    /// The client reached us over TLS (`X-Forwarded-Proto: https`).
    https: bool,
    /// Senders to `send_proxy` backends: their connections speak for this client only.
    own: Clients,
    /// Requests in progress, and when the last one ended: what the idle timeout looks at.
    active: Cell<usize>,
    last: Cell<Instant>,
}

/// Who is on either end of a client connection, and how it came.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    pub peer: SocketAddr,
    /// The address the client reached: the destination of a PROXY header sent to a `send_proxy` backend.
    pub local: Option<SocketAddr>,
    /// The client reached us over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

impl Conn {
    pub fn new(open: Open, ends: Ends) -> Self {
        Conn {
            open,
            peer: ends.peer,
            local: ends.local,
            https: ends.https,
            own: Clients::default(),
            active: Cell::new(0),
            last: Cell::new(Instant::now()),
        }
    }

    pub fn worker(&self) -> &Worker {
        self.open.worker()
    }

    /// Since when the connection has had no request in progress (`None`: it has one now).
    pub fn idle_since(&self) -> Option<Instant> {
        (self.active.get() == 0).then(|| self.last.get())
    }

    fn clients<R>(&self, backend: &Backend, f: impl FnOnce(&Clients) -> R) -> R {
        match backend.options.send_proxy {
            Some(_) => f(&self.own),
            None => clients::of_worker(f),
        }
    }
}

/// The hyper service of a client connection on the generic path.
#[derive(Clone)]
pub struct Generic(pub Rc<Conn>);

impl hyper::service::Service<Request<Incoming>> for Generic {
    type Response = Response<ClientBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ClientBody>, Infallible>>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if let Some(refusal) = headers::refusal(&request) {
            tracing::debug!(peer = %self.0.peer, status = refusal.status.as_u16(), reason = refusal.reason, "request refused");
            let mut answer = own_answer(refusal.status);
            // As on the fast path: after a refused head, nothing more is read from the connection.
            answer.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return Box::pin(async move { Ok(answer) });
        }
        let (reply, answer) = oneshot::channel();
        tokio::task::spawn_local(exchange(self.0.clone(), request, reply));
        Box::pin(async move {
            Ok(answer
                .await
                .unwrap_or_else(|_| own_answer(StatusCode::BAD_GATEWAY)))
        })
    }
}

/// A request in progress on its connection (see [`Conn::idle_since`]).
struct Active<'a>(&'a Conn);

impl<'a> Active<'a> {
    fn new(conn: &'a Conn) -> Self {
        conn.active.set(conn.active.get() + 1);
        Active(conn)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0.last.set(Instant::now());
    }
}

/// A backend's answer (its head), and what it came over.
struct Answered {
    response: Response<Incoming>,
    index: usize,
    /// An HTTP/1.1 connection, to keep once the body is through.
    sender: Option<http1::SendRequest<UpBody>>,
}

/// One request, from its head to the end of its answer (or its tunnel).
async fn exchange(
    conn: Rc<Conn>,
    mut request: Request<Incoming>,
    mut reply: oneshot::Sender<Response<ClientBody>>,
) {
    let _active = Active::new(&conn);
    let worker = conn.worker();
    let _in_flight = worker.exchange();
    let started = Instant::now();
    let snapshot = worker.routing().load_full();
    let logged = Logged::of(&request);
    let view = access_log::Request {
        peer: conn.peer,
        head: &logged.head,
        raw: &logged.raw,
    };
    // A WebSocket over HTTP/2 (extended CONNECT) goes to the backend as an HTTP/1.1 upgrade.
    let connect = headers::extended_connect_as_upgrade(&mut request);
    let upgrade =
        headers::asks_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let mut record = Record::default();
    let mut guard = None;
    // Set when the client's body came too slowly: whatever failed then is the client's doing.
    let slow = Arc::new(AtomicBool::new(false));
    // Set when the client's body could not be read: a malformed body is the client's fault (400).
    let broken = Arc::new(AtomicBool::new(false));
    let request = {
        let (parts, body) = request.into_parts();
        let timeouts = &snapshot.timeouts;
        let body = Paced::new(
            body,
            timeouts.request_body,
            timeouts.idle,
            slow.clone(),
            broken.clone(),
        );
        Request::from_parts(parts, body)
    };
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .map(|h| h.as_bytes())
        });
    let path = request.uri().path().as_bytes();
    let cluster = snapshot.route(host, path);
    let key = cluster.and_then(|cluster| {
        let key = cluster.hash_key.as_ref()?;
        let headers = request.headers();
        let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
        Some(request_hash(key, conn.peer.ip(), path, header))
    });
    let attempt = {
        let attempts = attempts(
            &conn,
            &snapshot,
            cluster,
            key,
            request,
            upgrade.is_some(),
            started,
            &mut record,
            &mut guard,
        );
        tokio::select! {
            biased;
            attempt = attempts => Some(attempt),
            () = reply.closed() => None,
        }
    };
    // Whose answer it was: a backend's (counted on it), or `lb`'s own (counted on the worker).
    let (status, backend, own) = match attempt {
        None => {
            let error = ProxyError::new(Failure::ClientGone, None, "");
            access_log::failure(&view, &error);
            (CLIENT_CLOSED_REQUEST, None, true)
        }
        Some(Err(mut error)) => {
            if slow.load(Ordering::Relaxed) {
                error.failure = Failure::ClientTooSlow;
            } else if broken.load(Ordering::Relaxed) {
                error.failure = Failure::ClientBody;
            }
            access_log::failure(&view, &error);
            let status = error.status();
            let answer = own_answer(status);
            record.body_bytes = answer.body().size_hint().exact().unwrap_or(0);
            let status = match reply.send(answer) {
                Ok(()) => status,
                Err(_) => CLIENT_CLOSED_REQUEST,
            };
            (status, error.backend, true)
        }
        Some(Ok(answer)) => {
            let Answered {
                mut response,
                index,
                sender,
            } = answer;
            let Some(backend) = cluster.map(|cluster| &cluster.backends[index]) else {
                unreachable!("an answer comes from a backend of the request's pool")
            };
            let status = response.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                let upgraded = hyper::upgrade::on(&mut response);
                let (mut parts, _) = response.into_parts();
                headers::response(&mut parts);
                if connect {
                    headers::upgraded_as_connect(&mut parts);
                }
                let head = Response::from_parts(parts, Either::Right(Full::default()));
                match (upgrade, reply.send(head)) {
                    (Some(client), Ok(())) => {
                        answered(worker, backend, status, &record);
                        let idle = snapshot.timeouts.tunnel_idle;
                        tunnel::run(worker, client, upgraded, idle).await;
                        (status, Some(backend.id), false)
                    }
                    _ => (CLIENT_CLOSED_REQUEST, Some(backend.id), true),
                }
            } else {
                let (mut parts, body) = response.into_parts();
                // A backend that sent both framings may mean either: as on the fast path, its connection is not
                // kept (what follows on it could be the rest of a body read the other way).
                let both_framings = parts.headers.contains_key(http::header::TRANSFER_ENCODING)
                    && parts.headers.contains_key(http::header::CONTENT_LENGTH);
                let sender = sender.filter(|_| !both_framings);
                headers::response(&mut parts);
                let (tracked, ended) = Tracked::new(body, snapshot.timeouts.backend_response);
                let _ = reply.send(Response::from_parts(parts, Either::Left(tracked)));
                let ended = ended.await.unwrap_or(Ended::Dropped(0));
                match ended {
                    Ended::Whole(bytes) => {
                        record.body_bytes = bytes;
                        answered(worker, backend, status, &record);
                        if let Some(sender) = sender {
                            conn.clients(backend, |c| {
                                c.give_back(worker, backend, sender, &snapshot.pool)
                            });
                        }
                        (status, Some(backend.id), false)
                    }
                    Ended::Broken(bytes, detail) => {
                        record.body_bytes = bytes;
                        let error = match slow.load(Ordering::Relaxed) {
                            true => {
                                ProxyError::new(Failure::ClientTooSlow, Some(backend.id), detail)
                            }
                            false => ProxyError::new(Failure::Closed, Some(backend.id), detail),
                        };
                        access_log::failure(&view, &error);
                        let status = match error.failure {
                            Failure::ClientTooSlow => CLIENT_CLOSED_REQUEST,
                            _ => error.status(),
                        };
                        (status, Some(backend.id), true)
                    }
                    Ended::Stalled(bytes, detail) => {
                        record.body_bytes = bytes;
                        let error = ProxyError::new(Failure::Stalled, Some(backend.id), detail);
                        access_log::failure(&view, &error);
                        (error.status(), Some(backend.id), true)
                    }
                    Ended::Dropped(bytes) => {
                        record.body_bytes = bytes;
                        let error = ProxyError::new(Failure::ClientGone, Some(backend.id), "");
                        access_log::failure(&view, &error);
                        (CLIENT_CLOSED_REQUEST, Some(backend.id), true)
                    }
                }
            }
        }
    };
    drop(guard);
    if own {
        worker.count_own(StatusClass::of(status.as_u16()));
    }
    if let Some(format) = snapshot.access_log {
        let line = Line {
            peer: conn.peer,
            request: Some((&logged.head, &logged.raw)),
            status,
            backend,
            record,
            took: started.elapsed(),
        };
        access_log::write(format, &line);
    }
}

/// Counts the answer `backend` delivered, and the time it took to its head (as `proxy::retry` does).
fn answered(worker: &Worker, backend: &Backend, status: StatusCode, record: &Record) {
    let stats = &backend.state.stats;
    stats.count(worker.index(), StatusClass::of(status.as_u16()));
    if let Some(waited) = record.upstream {
        stats.time(worker.index(), waited);
    }
}

/// Sends the request to one backend after another, as the retry rule allows, until one answers (its head).
/// `guard` holds the in-flight count of the backend of the current attempt (and of the answer, once there is one).
#[allow(clippy::too_many_arguments)] // the request and where it goes, as `exchange` worked them out
async fn attempts<'s>(
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
                        .unwrap_or_else(|| ProxyError::new(Failure::NoBackend, None, "")));
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
                    let key = log_limit::Key {
                        subject: Subject::Backend(backend.id),
                        what: "requests resent elsewhere",
                        reason: error.failure.as_str(),
                    };
                    if log_limit::first(key) {
                        tracing::warn!("{error}: request resent to the next backend");
                    }
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
