//! One request's journey: pick a backend, forward the request, retry where that is safe, answer.
//!
//! - `retry`: which backends a request goes to and how often (the retry rule, the failures to connect).
//! - `relay`: one attempt on one backend: request and response on the wire, keep-alive on both sides.
//! - `error`: why a request could not be proxied, as a kind (`crate::failure`) and the backend it happened on.
//!
//! Every failure ends as one answer, or as a cut connection: 503 (nothing healthy, or out of local resources),
//! 502 (attempts failed, or a response that cannot be forwarded safely), 504 (no response head in time), 408 (a
//! request body too slow); a response that breaks after it started is cut with a reset, so a truncated body never
//! looks complete; a client that went away gets nothing and blames no backend. Log lines per failure kind are
//! limited (`crate::log_limit`): a dead backend costs one line a second, not one per request.

mod error;
mod relay;
mod retry;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

pub use error::ProxyError;

use crate::config::{PoolConfig, Timeouts};
use crate::connection::Client;
use crate::failure::{Failure, CLIENT_CLOSED_REQUEST};
use crate::h1::buffers::Buffers;
use crate::h1::request::RequestHead;
use crate::h1::{write, BodyLength};
use crate::log_limit::{self, Subject};
use crate::timers::Timers;
use crate::upstream::{KeepAlive, Pool, Routing};
use retry::Outcome;

/// What a worker thread needs to proxy: the shared routing state and its own connection pool, buffers and timers.
pub struct Proxy {
    routing: Arc<Routing>,
    pool: Pool,
    buffers: Buffers,
    timers: Timers,
    /// Set when shutdown begins: answers then say `connection: close`.
    draining: Cell<bool>,
}

impl Proxy {
    pub fn new(routing: Arc<Routing>) -> Self {
        Proxy {
            routing,
            pool: Pool::default(),
            buffers: Buffers::default(),
            timers: Timers::default(),
            draining: Cell::new(false),
        }
    }

    /// This worker's coarse deadlines.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// This worker's spare buffers.
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether shutdown has begun (answers close their connections).
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn start_draining(&self) {
        self.draining.set(true);
    }

    /// Keeps a backend connection for another exchange.
    fn keep(
        &self,
        addr: SocketAddr,
        stream: tokio::net::TcpStream,
        keep: KeepAlive,
        config: &PoolConfig,
    ) {
        if self.pool.give_back(addr, stream, keep, config) {
            // The sweeper has idle connections to watch again.
            self.timers.arm();
        }
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

    /// The worker's chores besides deadlines, every tick: closes idle backend connections past their time (or
    /// closed by their backend), and gives back spare buffers when nothing is in flight. Returns whether there is
    /// still something to watch.
    pub fn sweep(&self, now: Instant, quiet: bool) -> bool {
        self.pool.purge(now);
        if quiet {
            self.buffers.trim();
        }
        !self.pool.is_empty()
    }

    /// The timeouts in force now.
    pub fn timeouts(&self) -> Timeouts {
        self.routing.load().timeouts.clone()
    }

    /// Proxies one request whose head (`raw`, parsed as `head`) was read from `client`, and writes the answer.
    /// Returns whether the client connection can carry another request.
    pub async fn handle(&self, client: &mut Client, head: &RequestHead, raw: &[u8]) -> bool {
        let started = Instant::now();
        let snapshot = self.routing.load_full();
        let mut out = self.buffers.vec();
        let outcome = retry::attempts(self, &snapshot, client, head, raw, &mut out).await;
        self.buffers.recycle_vec(out);
        let (status, backend, keep_alive) = match outcome {
            Outcome::Delivered {
                status,
                backend,
                keep_alive,
            } => (status, Some(backend), keep_alive),
            Outcome::Failed(error) => {
                log_failure(client, head, raw, &error);
                if error.failure == Failure::ClientGone {
                    (CLIENT_CLOSED_REQUEST, error.backend, false)
                } else {
                    let kept = self.answer_error(client, head, error.status()).await;
                    (error.status(), error.backend, kept)
                }
            }
            Outcome::Broken(error) => {
                log_failure(client, head, raw, &error);
                // The answer was cut (by the backend, or because the client stopped reading): a reset, not a clean
                // end, so that no client takes a truncated body for a complete one.
                let _ = socket2::SockRef::from(&client.stream).set_linger(Some(Duration::ZERO));
                let status = match error.failure {
                    Failure::ClientGone | Failure::ClientTooSlow => CLIENT_CLOSED_REQUEST,
                    _ => error.status(),
                };
                (status, error.backend, false)
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

    /// Writes an error answer of our own. Returns whether the connection can carry another request.
    async fn answer_error(
        &self,
        client: &mut Client,
        head: &RequestHead,
        status: StatusCode,
    ) -> bool {
        // Without a body nothing of the request is left unread, so the connection stays usable.
        let clean = head.body == BodyLength::Empty && head.keep_alive && !self.draining();
        let mut out = Vec::with_capacity(192);
        write::error_response(&mut out, status, !clean);
        let write = client.stream.write_all(&out);
        let written = matches!(
            tokio::time::timeout(crate::connection::LINGER, write).await,
            Ok(Ok(()))
        );
        if written && !clean {
            crate::connection::linger_close(&mut client.stream).await;
        }
        written && clean
    }
}

/// One line per failure, at the level its side deserves: a backend's failure is a warning (at most one a second
/// per backend and kind, then a sum), the client's own doing a debug line.
fn log_failure(client: &Client, head: &RequestHead, raw: &[u8], error: &ProxyError) {
    let failure = error.failure;
    let status = failure.status().as_u16();
    let (method, target) = (&head.method, target(head, raw));
    if !failure.blames_backend()
        && failure != Failure::NoBackend
        && failure != Failure::LocalShortage
    {
        tracing::debug!(client = %client.peer, %method, target, %error, status, "request ended by the client");
        return;
    }
    let subject = error.backend.map_or(Subject::Backends, Subject::Backend);
    let key = log_limit::Key {
        subject,
        what: "requests failed",
        reason: failure.as_str(),
    };
    if log_limit::first(key) {
        tracing::warn!(client = %client.peer, %method, target, status, "request failed: {error}");
    }
}

fn target<'a>(head: &RequestHead, raw: &'a [u8]) -> &'a str {
    std::str::from_utf8(&raw[head.target.clone()]).unwrap_or("?")
}
