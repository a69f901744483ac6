//! One request's journey: pick a backend, forward the request, retry where that is safe, answer.
//!
//! The retry rule (as Pingora's): a request may go to another backend whenever nothing of it was sent (the
//! connection could not be made). Once bytes reached a backend, it is resent only if its method is idempotent and
//! it has no body, and never to the same backend. Every failure ends as one answer: 503 (nothing healthy), 502
//! (attempts failed, or a response that cannot be forwarded safely), 504 (no response head in time); a backend
//! that fails after its response started makes us close the client connection, so a cut body never looks whole.
//!
//! The request body and the response head travel at the same time, so `Expect: 100-continue` and backends that
//! answer before reading the whole body both work.

mod error;

use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

pub use error::ProxyError;

use crate::config::Timeouts;
use crate::connection::Client;
use crate::h1::body::{self, BodyError};
use crate::h1::buffers::Buffers;
use crate::h1::request::RequestHead;
use crate::h1::response::{self, BadResponse, ResponseHead};
use crate::h1::socket;
use crate::h1::write::{self, ClientFraming};
use crate::h1::BodyLength;
use crate::timers::Timers;
use crate::upstream::{describe_io, Backend, Lease, Pool, Routing, Snapshot};

/// What a worker thread needs to proxy: the shared routing state and its own connection pool.
pub struct Proxy {
    routing: Arc<Routing>,
    pool: Rc<Pool>,
    buffers: Buffers,
    timers: Timers,
}

/// How an exchange that reached the client ended.
struct Delivered {
    status: StatusCode,
    backend: u64,
    /// The client connection can carry another request.
    keep_alive: bool,
}

/// A failed attempt on one backend.
enum Attempt {
    /// Nothing reached the backend, or the request may be resent: try the next backend.
    Retry(String),
    /// Nothing was written to the client yet: answer with the error's status.
    Fail(ProxyError),
    /// The response had started: the client connection must be closed.
    Broken(ProxyError),
}

impl Proxy {
    pub fn new(routing: Arc<Routing>) -> Self {
        Proxy {
            routing,
            pool: Rc::new(Pool::default()),
            buffers: Buffers::default(),
            timers: Timers::default(),
        }
    }

    /// This worker's coarse deadlines.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// How often the worker's sweeper fires deadlines: an eighth of the shortest timeout it keeps.
    pub fn timer_tick(&self) -> Duration {
        let timeouts = self.timeouts();
        let shortest = timeouts
            .client_header
            .min(timeouts.idle)
            .min(timeouts.backend_response);
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// This worker's spare buffers.
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// The timeouts in force now.
    pub fn timeouts(&self) -> Timeouts {
        self.routing.load().timeouts.clone()
    }

    /// Proxies one request whose head (`raw`, parsed as `head`) was read from `client`, and writes the answer.
    /// Returns whether the client connection can carry another request.
    pub async fn handle(
        &self,
        client: &mut Client,
        head: &RequestHead,
        raw: &[u8],
        draining: bool,
    ) -> bool {
        let started = Instant::now();
        let snapshot = self.routing.load_full();
        let (status, backend, keep_alive) = match self
            .forward(&snapshot, client, head, raw, draining)
            .await
        {
            Ok(done) => (done.status, Some(done.backend), done.keep_alive),
            Err((error, broken)) => {
                tracing::warn!(client = %client.peer, method = %head.method, target = %target(head, raw), %error, "request failed");
                if broken {
                    (error.status(), None, false)
                } else {
                    // Without a body nothing of the request is left unread, so the connection stays usable.
                    let clean = head.body == BodyLength::Empty && head.keep_alive && !draining;
                    let mut out = Vec::with_capacity(192);
                    write::error_response(&mut out, error.status(), !clean);
                    let write = client.stream.write_all(&out);
                    let written = matches!(
                        tokio::time::timeout(crate::connection::LINGER, write).await,
                        Ok(Ok(()))
                    );
                    if written && !clean {
                        crate::connection::linger_close(&mut client.stream).await;
                    }
                    (error.status(), None, written && clean)
                }
            }
        };
        if snapshot.access_log {
            let backend = backend.map_or_else(|| "-".to_owned(), |id| id.to_string());
            tracing::info!(
                target: "lb::access",
                "{} \"{} {} HTTP/1.{}\" {} backend={backend} {:.3}ms",
                client.peer,
                head.method,
                target(head, raw),
                head.minor,
                status.as_u16(),
                started.elapsed().as_secs_f64() * 1000.0,
            );
        }
        keep_alive
    }

    async fn forward(
        &self,
        snapshot: &Snapshot,
        client: &mut Client,
        head: &RequestHead,
        raw: &[u8],
        draining: bool,
    ) -> Result<Delivered, (ProxyError, bool)> {
        let mut out = self.buffers.vec();
        let result = self
            .attempts(snapshot, client, head, raw, draining, &mut out)
            .await;
        self.buffers.recycle_vec(out);
        result
    }

    async fn attempts(
        &self,
        snapshot: &Snapshot,
        client: &mut Client,
        head: &RequestHead,
        raw: &[u8],
        draining: bool,
        out: &mut Vec<u8>,
    ) -> Result<Delivered, (ProxyError, bool)> {
        let replayable = is_idempotent(&head.method) && head.body == BodyLength::Empty;
        let backends = &snapshot.backends;
        let mut tried = Tried::default();
        let mut last_failure: Option<String> = None;
        // A kept-alive connection that failed before any answer was most likely closed by the backend just as it
        // was lent (its idle timeout): the same backend then gets one more try, on a new connection.
        let mut again_on_new: Option<usize> = None;
        let mut renewed = false;
        loop {
            let (index, new_connection) = match again_on_new.take() {
                Some(index) => (index, true),
                None => {
                    let eligible = |i: usize| backends[i].is_healthy() && !tried.contains(i);
                    let Some(index) = snapshot.balancer.pick(backends.len(), &eligible) else {
                        let error = match last_failure {
                            None => ProxyError::NoHealthyBackend,
                            Some(last) => ProxyError::AllAttemptsFailed(last),
                        };
                        return Err((error, false));
                    };
                    tried.push(index);
                    (index, false)
                }
            };
            let backend = &backends[index];
            let timeout = snapshot.timeouts.connect;
            let lease = if new_connection {
                Box::pin(self.pool.connect(backend.addr, timeout)).await
            } else {
                self.pool.lease(backend.addr, timeout).await
            };
            let lease = match lease {
                Ok(lease) => lease,
                Err(error) => {
                    backend
                        .state
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let reason = error.to_string();
                    tracing::warn!(backend = backend.id, addr = %backend.addr, %reason, "backend unreachable, trying the next one");
                    last_failure = Some(reason);
                    continue;
                }
            };
            out.clear();
            write::request_head(out, raw, head, client.peer.ip(), &backend.authority);
            let reused = lease.reused;
            let mut up_buf = self.buffers.bytes();
            let attempt = self
                .exchange(
                    snapshot,
                    backend,
                    lease,
                    client,
                    head,
                    out,
                    &mut up_buf,
                    replayable,
                    draining,
                )
                .await;
            self.buffers.recycle_bytes(up_buf);
            match attempt {
                Ok(done) => {
                    backend.state.requests.fetch_add(1, Ordering::Relaxed);
                    return Ok(done);
                }
                Err(Attempt::Retry(reason)) if reused && !renewed => {
                    tracing::debug!(backend = backend.id, %reason, "kept-alive backend connection failed before answering, resending on a new one");
                    renewed = true;
                    again_on_new = Some(index);
                }
                Err(Attempt::Retry(reason)) => {
                    tracing::warn!(backend = backend.id, %reason, "backend failed before answering, resending to the next one");
                    last_failure = Some(reason);
                }
                Err(Attempt::Fail(error)) => return Err((error, false)),
                Err(Attempt::Broken(error)) => return Err((error, true)),
            }
        }
    }

    /// One attempt on one backend: send the head and body, bring back the response.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        snapshot: &Snapshot,
        backend: &Backend,
        lease: Lease,
        client: &mut Client,
        head: &RequestHead,
        out: &mut Vec<u8>,
        up_buf: &mut BytesMut,
        replayable: bool,
        draining: bool,
    ) -> Result<Delivered, Attempt> {
        let Lease { mut stream, reused } = lease;
        let timeouts = &snapshot.timeouts;
        let head_request = head.method == Method::HEAD;
        let http11 = head.minor == 1;
        let mut response_out = self.buffers.vec();
        // The request body and the response travel at the same time, for as long as both last: a backend may answer
        // before it has read the whole body (and keep reading it), and `Expect: 100-continue` needs the 100 to reach
        // the client before the body comes.
        let mut request_sent = false;
        let mut send_failed: Option<BodyError> = None;
        let relayed: Result<(StatusCode, bool, bool), Attempt> = async {
            let (mut up_read, mut up_write) = stream.split();
            let (mut client_read, mut client_write) = client.stream.split();
            let mut send = pin!(body::forward(
                &mut client_read,
                &mut client.buf,
                &mut up_write,
                out,
                head.body,
                false,
                timeouts.idle,
            ));
            let received = {
                let mut receive = pin!(receive_head(
                    &mut up_read,
                    up_buf,
                    head_request,
                    &mut client_write,
                    http11,
                ));
                // The backend has `backend_response` to answer once it has the whole request, or once it stopped
                // taking the body; until then, the body moving at all is what counts (its own stall timeout). The
                // deadline is polled only from then on, and counts from its first poll.
                let mut deadline = pin!(self.timers.deadline(timeouts.backend_response));
                loop {
                    tokio::select! {
                        biased;
                        received = &mut receive => break received,
                        sent = &mut send, if !request_sent && send_failed.is_none() => match sent {
                            Ok(()) => {
                                request_sent = true;
                            }
                            Err(error) if error.is_source() => {
                                return Err(Attempt::Fail(ProxyError::ClientBody(error)))
                            }
                            // The backend stopped reading: it may still have answered; the response read tells.
                            Err(error) => {
                                if reused && replayable {
                                    return Err(Attempt::Retry(error.to_string()));
                                }
                                send_failed = Some(error);
                            }
                        },
                        () = &mut deadline, if request_sent || send_failed.is_some() => {
                            break Err(Receive::TimedOut)
                        }
                    }
                }
            };
            let (response, head_length) = received.map_err(|failure| match failure {
                Receive::TimedOut => Attempt::Fail(ProxyError::UpstreamTimeout {
                    backend: backend.id,
                    after: timeouts.backend_response,
                }),
                Receive::ClientGone => Attempt::Broken(ProxyError::Upstream {
                    backend: backend.id,
                    reason: "client went away".to_owned(),
                }),
                Receive::Bad(error) => Attempt::Fail(ProxyError::BadResponse {
                    backend: backend.id,
                    error,
                }),
                Receive::Closed { reason, answered } if replayable && !answered => {
                    Attempt::Retry(reason)
                }
                Receive::Closed { reason, .. } => Attempt::Fail(ProxyError::Upstream {
                    backend: backend.id,
                    reason,
                }),
            })?;

            // The response head goes to the client together with the body's first bytes. Keep-alive is decided
            // now: only when the whole request is already sent can the connection be trusted for the next one.
            let dechunk = !http11 && response.body == BodyLength::Chunked;
            let keep_alive = head.keep_alive
                && request_sent
                && !draining
                && !dechunk
                && response.body != BodyLength::UntilClose;
            let framing = ClientFraming {
                chunked: http11 && response.body == BodyLength::Chunked,
                keep_alive,
                http10: !http11,
            };
            write::response_head(
                &mut response_out,
                &up_buf[..head_length],
                &response,
                framing,
            );
            up_buf.advance(head_length);
            if body::small_rest_to_come(response.body, up_buf.len()) {
                socket::acknowledge_now(up_read.as_ref());
            }
            if !body::fits_one_write(response.body, up_buf.len()) {
                crate::connection::no_delay(client_write.as_ref(), &mut client.nodelay);
            }
            let mut forward = pin!(body::forward(
                &mut up_read,
                up_buf,
                &mut client_write,
                &mut response_out,
                response.body,
                dechunk,
                timeouts.backend_response,
            ));
            let forwarded = loop {
                tokio::select! {
                    biased;
                    forwarded = &mut forward => break forwarded,
                    sent = &mut send, if !request_sent && send_failed.is_none() => match sent {
                        Ok(()) => request_sent = true,
                        Err(error) => send_failed = Some(error),
                    },
                }
            };
            if let Err(error) = forwarded {
                let reason = if error.is_source() {
                    format!("backend failed mid-response: {error}")
                } else {
                    format!("client went away mid-response: {error}")
                };
                return Err(Attempt::Broken(ProxyError::Upstream {
                    backend: backend.id,
                    reason,
                }));
            }
            Ok((response.status, keep_alive, response.keep_alive))
        }
        .await;
        self.buffers.recycle_vec(response_out);
        let (status, keep_alive, backend_keep_alive) = relayed?;
        let reusable = backend_keep_alive && request_sent && up_buf.is_empty();
        // Only a connection that ends is looked at (a look may cost a system call).
        let ends_cleanly = || request_sent && crate::connection::nothing_unread(client);
        if !keep_alive && !ends_cleanly() {
            // Part of the request body, or another request, is still coming: read it away for a moment, so that
            // closing does not reset the connection under the answer just sent. Otherwise the close that follows
            // sends the end of the stream by itself.
            crate::connection::linger_close(&mut client.stream).await;
        }
        if reusable {
            self.pool.give_back(backend.addr, stream);
        }
        Ok(Delivered {
            status,
            backend: backend.id,
            keep_alive,
        })
    }
}

/// The backends one request already tried: the first inline (no allocation per request), the others (retries)
/// in a list.
#[derive(Default)]
struct Tried {
    first: Option<usize>,
    more: Vec<usize>,
}

impl Tried {
    fn contains(&self, index: usize) -> bool {
        self.first == Some(index) || self.more.contains(&index)
    }

    fn push(&mut self, index: usize) {
        if self.first.is_none() {
            self.first = Some(index);
        } else {
            self.more.push(index);
        }
    }
}

/// Why no response head came back.
enum Receive {
    /// The backend had the whole request and did not answer within `backend_response`.
    TimedOut,
    /// The backend closed or reset the connection; `answered`: some response bytes had arrived.
    Closed {
        reason: String,
        answered: bool,
    },
    Bad(BadResponse),
    /// Forwarding an informational response to the client failed.
    ClientGone,
}

/// Reads the backend's final response head, forwarding informational (1xx) ones to an HTTP/1.1 client.
async fn receive_head(
    up_read: &mut ReadHalf<'_>,
    up_buf: &mut BytesMut,
    head_request: bool,
    client_write: &mut WriteHalf<'_>,
    http11: bool,
) -> Result<(ResponseHead, usize), Receive> {
    let mut answered = false;
    loop {
        if !up_buf.is_empty() {
            answered = true;
            if let Some((head, length)) =
                response::parse(up_buf, head_request).map_err(Receive::Bad)?
            {
                if !head.status.is_informational() {
                    return Ok((head, length));
                }
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    // We never forward Upgrade, so a backend switching protocols is not speaking to us.
                    return Err(Receive::Bad(BadResponse(
                        "unexpected 101 Switching Protocols",
                    )));
                }
                let mut out = Vec::with_capacity(length);
                if http11 {
                    let framing = ClientFraming {
                        chunked: false,
                        keep_alive: true,
                        http10: false,
                    };
                    write::response_head(&mut out, &up_buf[..length], &head, framing);
                }
                up_buf.advance(length);
                if http11 {
                    // The final answer follows this one: it must not wait for this one's acknowledgement.
                    let _ = client_write.as_ref().set_nodelay(true);
                    client_write
                        .write_all(&out)
                        .await
                        .map_err(|_| Receive::ClientGone)?;
                }
                continue;
            }
        }
        match body::fill(up_read, up_buf).await {
            Ok(0) => {
                let reason = "backend closed the connection without a response".to_owned();
                return Err(Receive::Closed { reason, answered });
            }
            Ok(_) => {}
            Err(error) => {
                let reason = describe_io(&error);
                return Err(Receive::Closed { reason, answered });
            }
        }
    }
}

fn target<'a>(head: &RequestHead, raw: &'a [u8]) -> &'a str {
    std::str::from_utf8(&raw[head.target.clone()]).unwrap_or("?")
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
