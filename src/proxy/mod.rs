//! One request's journey: pick a backend, forward the request, retry where that is safe, answer.
//!
//! The retry rule (as Pingora's): a request may go to another backend whenever nothing of it was sent (the
//! connection could not be made, or a pooled connection turned out closed before the request went out). Once bytes
//! reached a backend, it is resent only if its method is idempotent and it has no body, and never to the same
//! backend. Every failure ends as one answer: 503 (nothing healthy), 502 (attempts failed), 504 (no response head
//! in time).

mod error;
mod headers;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

pub use error::ProxyError;

use crate::upstream::{Backend, Pool, PooledBody, Routing, Snapshot};

/// The body sent to a backend: the client's, streamed, or none for a resent request.
pub type ProxyBody = Either<Incoming, Empty<Bytes>>;
/// The body sent to the client: a backend's, streamed, or one of ours (an error page).
pub type ClientBody = Either<PooledBody, Full<Bytes>>;

/// Request targets longer than this get 414 (nginx allows 8 KiB, HAProxy about 16 KiB).
pub const MAX_URI_LEN: usize = 16 * 1024;

/// What a worker thread needs to proxy: the shared routing state and its own connection pool.
pub struct Proxy {
    routing: Arc<Routing>,
    pool: Rc<Pool>,
}

impl Proxy {
    pub fn new(routing: Arc<Routing>) -> Self {
        Proxy {
            routing,
            pool: Rc::new(Pool::default()),
        }
    }

    /// Proxies one request from `client` and returns what the client should get.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ClientBody> {
        let started = Instant::now();
        let snapshot = self.routing.load_full();
        let method = request.method().clone();
        let uri = request.uri().clone();
        let version = request.version();
        let (response, backend) = match self.forward(&snapshot, request, client).await {
            Ok((response, backend)) => (response.map(Either::Left), Some(backend)),
            Err(error) => {
                match &error {
                    ProxyError::UriTooLong(_) => {
                        tracing::debug!(%client, %error, "request refused")
                    }
                    _ => tracing::warn!(%client, %method, %uri, %error, "request failed"),
                }
                (error.response().map(Either::Right), None)
            }
        };
        if snapshot.access_log {
            let backend = backend.map_or_else(|| "-".to_owned(), |id| id.to_string());
            tracing::info!(
                target: "lb::access",
                "{client} \"{method} {uri} {version:?}\" {} backend={backend} {:.3}ms",
                response.status().as_u16(),
                started.elapsed().as_secs_f64() * 1000.0,
            );
        }
        response
    }

    async fn forward(
        &self,
        snapshot: &Snapshot,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<(Response<PooledBody>, u64), ProxyError> {
        if request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len())
            > MAX_URI_LEN
        {
            return Err(ProxyError::UriTooLong(MAX_URI_LEN));
        }
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (HTTP/1.0 may omit it); two could route two ways.
        let hosts = request.headers().get_all(header::HOST).iter().count();
        if hosts > 1 || (hosts == 0 && request.version() == Version::HTTP_11) {
            return Err(ProxyError::BadRequest(
                "a request needs exactly one Host header",
            ));
        }
        let mut request = prepare(request, client);
        // A copy to resend elsewhere if the backend fails after the request went out: only for requests that are
        // safe to repeat and carry no body.
        let replayable =
            is_idempotent(request.method()) && http_body::Body::is_end_stream(request.body());
        let backends = &snapshot.backends;
        let mut tried: Vec<usize> = Vec::new();
        let mut last_failure: Option<String> = None;
        loop {
            let eligible = |i: usize| backends[i].is_healthy() && !tried.contains(&i);
            let Some(index) = snapshot.balancer.pick(backends.len(), &eligible) else {
                return Err(match last_failure {
                    None => ProxyError::NoHealthyBackend,
                    Some(last) => ProxyError::AllAttemptsFailed(last),
                });
            };
            tried.push(index);
            let backend = &backends[index];
            let copy = replayable.then(|| copy_head(&request));
            match self.exchange(snapshot, backend, request).await {
                Ok(response) => {
                    backend.state.requests.fetch_add(1, Ordering::Relaxed);
                    return Ok((response, backend.id));
                }
                Err(Failure::NotSent(unsent, reason)) => {
                    tracing::warn!(backend = backend.id, addr = %backend.addr, %reason, "backend unreachable, trying the next one");
                    request = *unsent;
                    last_failure = Some(reason);
                }
                Err(Failure::Sent(error)) => match (copy, error) {
                    (Some(copy), ProxyError::Upstream { reason, .. }) => {
                        tracing::warn!(backend = backend.id, %reason, "backend failed, resending the request to the next one");
                        request = copy;
                        last_failure = Some(reason);
                    }
                    (_, error) => return Err(error),
                },
            }
        }
    }

    /// One attempt on one backend.
    async fn exchange(
        &self,
        snapshot: &Snapshot,
        backend: &Backend,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, Failure> {
        let timeouts = &snapshot.timeouts;
        if !request.headers().contains_key(header::HOST) {
            // HTTP/1.0 clients may omit Host; HTTP/1.1 backends require one.
            if let Ok(host) = HeaderValue::from_str(&backend.authority) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        let mut lease = match self.pool.lease(backend.addr, timeouts.connect).await {
            Ok(lease) => lease,
            Err(error) => {
                backend
                    .state
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Failure::NotSent(Box::new(request), error.to_string()));
            }
        };
        let sent = tokio::time::timeout(
            timeouts.backend_response,
            lease.sender.try_send_request(request),
        )
        .await;
        let mut response = match sent {
            Err(_) => {
                return Err(Failure::Sent(ProxyError::UpstreamTimeout {
                    backend: backend.id,
                    after: timeouts.backend_response,
                }))
            }
            Ok(Ok(response)) => response,
            Ok(Err(mut error)) => {
                let reason = error.error().to_string();
                return Err(match error.take_message() {
                    Some(unsent) => Failure::NotSent(Box::new(unsent), reason),
                    None => Failure::Sent(ProxyError::Upstream {
                        backend: backend.id,
                        reason,
                    }),
                });
            }
        };
        headers::strip_hop_by_hop(response.headers_mut());
        Ok(response.map(|body| self.pool.track(lease, body)))
    }
}

/// The outcome of a failed attempt: whether the request may still go elsewhere as it is.
enum Failure {
    NotSent(Box<Request<ProxyBody>>, String),
    Sent(ProxyError),
}

/// Turns the client's request into the one the backend gets: HTTP/1.1, origin-form target, hop-by-hop headers
/// removed, forwarding headers added, a Host always present.
fn prepare(request: Request<Incoming>, client: SocketAddr) -> Request<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    // An absolute-form target (`GET http://host/path`) names the host itself, and wins over the Host header
    // (RFC 9112 §3.2.2).
    if let Some(authority) = parts.uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    let host = parts.headers.get(header::HOST).cloned();
    headers::add_forwarding(&mut parts.headers, client, host.as_ref());
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, Either::Left(body))
}

/// A bodiless copy of a request's head, for resending it.
fn copy_head(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
