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

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::attempts::{attempts, Answered};
use super::body::{own_answer, ClientBody, Ended, Paced, Tracked};
use super::conn::{Active, Conn};
use super::headers;
use super::logged::Logged;
use super::tunnel;
use crate::access_log::{self, Line};
use crate::backend::stats::StatusClass;
use crate::balance::key::request_hash;
use crate::failure::{Failure, CLIENT_CLOSED_REQUEST};
use crate::proxy::{ProxyError, Record};
use crate::upstream::Backend;
use crate::worker::Worker;

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
