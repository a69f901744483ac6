//! Keep-alive connections to backends, one pool per worker thread.
//!
//! Each worker owns its pool (no locks): a connection is only ever used by the thread that opened it. A connection
//! is lent for one exchange and given back only when that exchange ended cleanly, both sides agreed to keep it open
//! and nothing unexpected is waiting on it. Idle connections are reused newest first.
//!
//! Bounds (a burst must not leave sockets behind): at most `pool.max_idle_per_backend` idle connections per backend
//! (more are closed as they come back), none kept past `pool.idle_timeout` or past the idle timeout the backend
//! announced (`Keep-Alive: timeout=N`, minus a margin), and the worker's sweeper ([`Pool::purge`]) closes the
//! expired ones and those the backend closed, whether or not traffic comes.
//!
//! Stray bytes (a body after a bodiless answer, bytes past a Content-Length) must never be read as the answer to the
//! next request: a connection goes back only if nothing is left in its buffer, bodiless answers cost their
//! connection (see [`KeepAlive::discard`]), and an idle connection that became readable is never lent.
//!
//! Reuse is judged by how much a failure would cost. Before reuse, a connection the backend closed (or wrote to,
//! unasked) in the meantime is noticed from its readiness when it was idle only briefly (the busy case, no system
//! call), with a non-blocking read otherwise. A request that cannot be resent (not idempotent, or with a body)
//! goes only on a connection used within the last [`SAFE_REUSE`], always checked with a read: a backend that
//! closes idle connections silently would otherwise fail such requests now and then (HAProxy's `http-reuse safe`
//! reasons alike).
//!
//! Every connection is counted on its backend while it is open, pooled or in use (`lb_backend_connections`): a
//! [`Counted`] guard travels with the socket and takes it off the worker's count when both are dropped, wherever that
//! happens (purged, past the idle limit, not kept after an exchange, a tunnel's end). It is made when a connection
//! is, so a request on a pooled connection pays nothing for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::connector::ConnectError;
use crate::backend::{Backend, BackendState};
use crate::config::PoolConfig;

use crate::h1::socket::{self, Unread};

/// A connection idle for less than this is trusted to be open unless the reactor saw it become readable.
const TRUST_READINESS: Duration = Duration::from_millis(100);
/// A request that cannot be resent goes only on a connection used this recently: well below the idle timeouts
/// backends use (gunicorn 2 s, Node.js and Apache 5 s, nginx 75 s), and short enough that a new connection for a
/// request that comes later costs little.
pub const SAFE_REUSE: Duration = Duration::from_millis(200);
/// The most of an announced `Keep-Alive: timeout` we use: a connection is given up this long (or half the
/// announced time, if less) before the backend would close it.
const ANNOUNCED_MARGIN: Duration = Duration::from_secs(1);

struct Idle {
    stream: TcpStream,
    counted: Counted,
    since: Instant,
    /// Not lent after this: `pool.idle_timeout`, or earlier if the backend announced a shorter one.
    until: Instant,
}

/// The backend connections of one worker thread.
pub struct Pool {
    /// The worker's index: its slot in each backend's connection count.
    worker: usize,
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
}

/// A connection for one exchange; `reused` says it served an exchange before (so it may have been closed by the
/// backend since, which is why a failure on it may be retried).
pub struct Lease {
    pub stream: TcpStream,
    pub reused: bool,
    counted: Counted,
}

/// One connection open to a backend, counted in the backend's stats (on the worker that opened it) until dropped.
struct Counted {
    state: Arc<BackendState>,
    worker: usize,
}

impl Counted {
    fn new(state: &Arc<BackendState>, worker: usize) -> Counted {
        state.stats.opened(worker);
        Counted {
            state: state.clone(),
            worker,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.state.stats.closed(self.worker);
    }
}

/// Which idle connections a request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Any that looks open: the request may be resent if the connection turns out closed.
    Any,
    /// Only one used within [`SAFE_REUSE`] and checked with a read: the request cannot be resent.
    Safe,
}

/// What the backend said about keeping a connection (from the response that ended on it).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepAlive {
    /// `Keep-Alive: timeout=N`.
    pub announced: Option<Duration>,
    /// The response had no body (HEAD, 204, 304): a backend that sends one anyway sends it after the head, maybe
    /// only once our next request acknowledges the head (Nagle's algorithm), too late for any check to see it
    /// before that request is sent; such bytes would be taken for the next answer. The connection is not kept.
    pub discard: bool,
}

impl Pool {
    /// The pool of the worker with this index.
    pub fn new(worker: usize) -> Pool {
        Pool {
            worker,
            idle: RefCell::default(),
        }
    }

    /// An idle connection to `backend` that still looks open, or a new one.
    pub async fn lease(
        &self,
        backend: &Backend,
        connect_timeout: Duration,
        reuse: Reuse,
    ) -> Result<Lease, ConnectError> {
        if let Some(lease) = self.take_idle(backend, reuse) {
            return Ok(lease);
        }
        self.connect(backend, connect_timeout).await
    }

    /// A new connection to `backend`.
    pub async fn connect(
        &self,
        backend: &Backend,
        connect_timeout: Duration,
    ) -> Result<Lease, ConnectError> {
        let connect = TcpStream::connect(backend.addr);
        let stream = match tokio::time::timeout(connect_timeout, connect).await {
            Err(_) => return Err(ConnectError::Timeout(connect_timeout)),
            Ok(Err(error)) => return Err(ConnectError::Io(error)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        Ok(Lease {
            stream,
            reused: false,
            counted: Counted::new(&backend.state, self.worker),
        })
    }

    fn take_idle(&self, backend: &Backend, reuse: Reuse) -> Option<Lease> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&backend.addr)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            let idle_for = now.saturating_duration_since(entry.since);
            if reuse == Reuse::Safe && idle_for >= SAFE_REUSE {
                // Still fine for a request that may be resent: keep it (the newest is last, so all others are older).
                list.push(entry);
                return None;
            }
            if now >= entry.until {
                continue;
            }
            let checked = reuse == Reuse::Safe || idle_for >= TRUST_READINESS;
            if !looks_open(&entry.stream, checked) {
                continue;
            }
            let mut counted = entry.counted;
            if !Arc::ptr_eq(&counted.state, &backend.state) {
                // Pooled for a backend a reload replaced (a new id on the same address): counted on this one now.
                counted = Counted::new(&backend.state, self.worker);
            }
            return Some(Lease {
                stream: entry.stream,
                reused: true,
                counted,
            });
        }
        None
    }

    /// Takes back a connection whose last exchange ended cleanly and that may serve another. Returns true when
    /// the pool had no idle connection before (so the sweeper has something to watch again).
    pub fn give_back(
        &self,
        addr: SocketAddr,
        lease: Lease,
        keep_alive: KeepAlive,
        config: &PoolConfig,
    ) -> bool {
        if config.max_idle_per_backend == 0 || keep_alive.discard {
            return false;
        }
        let now = Instant::now();
        let mut keep_for = config.idle_timeout;
        if let Some(announced) = keep_alive.announced {
            let margin = ANNOUNCED_MARGIN.min(announced / 2);
            keep_for = keep_for.min(announced - margin);
        }
        if keep_for.is_zero() {
            return false;
        }
        let mut idle = self.idle.borrow_mut();
        let was_empty = idle.is_empty();
        let list = idle.entry(addr).or_default();
        if list.len() >= config.max_idle_per_backend {
            // The oldest is the least likely to be reused (and the most likely to be closed by the backend).
            list.remove(0);
        }
        list.push(Idle {
            stream: lease.stream,
            counted: lease.counted,
            since: now,
            until: now + keep_for,
        });
        was_empty
    }

    /// Closes the idle connections past their time, those that became readable (the backend closed them, or
    /// sent something unasked), and those to addresses `routed` no longer says (a reload removed their backend). Run
    /// by the worker's sweeper.
    pub fn purge(&self, now: Instant, routed: impl Fn(SocketAddr) -> bool) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|&addr, list| {
            if !routed(addr) {
                return false;
            }
            list.retain(|entry| now < entry.until && looks_open(&entry.stream, false));
            if list.capacity() > 4 * list.len().max(4) {
                list.shrink_to_fit();
            }
            !list.is_empty()
        });
        if idle.is_empty() && idle.capacity() > 0 {
            *idle = HashMap::new();
        }
    }

    /// Whether no idle connection is kept (the sweeper need not run for the pool).
    pub fn is_empty(&self) -> bool {
        self.idle.borrow().is_empty()
    }
}

/// An idle connection has nothing to read: if it became readable, the backend closed it (or sent something
/// unasked), and it must not carry a request. Unless `checked`, a connection the reactor has not seen become
/// readable is trusted without a system call (the busy case); a readable one, or one to be `checked`, gets a
/// non-blocking read, which also sees a close the reactor has not reported yet (a backend's own idle timeout
/// firing just now).
fn looks_open(stream: &TcpStream, checked: bool) -> bool {
    socket::unread(stream, checked) == Unread::Nothing
}
