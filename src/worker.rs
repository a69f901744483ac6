//! What one worker thread owns and every one of its connections shares: the routing handle, the backend connection
//! pool, spare buffers, coarse timers, the drain state and the worker's counters.
//!
//! Nothing here is shared with another thread except through [`WorkerCounts`]: counters only this worker writes
//! (a plain load and store, no atomic read-modify-write on a shared cache line per request), which another thread
//! (the drain deadline, the metrics scrape) reads and sums. Beside the connections and exchanges open now, they
//! count the answers `lb` made itself (a refused head, 408, a failed or broken exchange: `lb_requests_total` with
//! `backend=""`; a backend's answers are counted on the backend, `backend::stats`) and the retries.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::admission::ConnectionLimit;
use crate::backend::stats::{self, StatusClass};
use crate::config::PoolConfig;
use crate::h1::buffers::Buffers;
use crate::timers::Timers;
use crate::upstream::{KeepAlive, Lease, Pool, Routing};

/// One worker thread's context.
pub struct Worker {
    /// Which worker this is (0..workers): the slot it writes in each backend's counters.
    index: usize,
    routing: Arc<Routing>,
    pool: Pool,
    buffers: Buffers,
    timers: Timers,
    /// Set when shutdown begins: answers then say `connection: close`.
    draining: Cell<bool>,
    counts: Arc<WorkerCounts>,
    limit: Arc<ConnectionLimit>,
    /// Raised when the last connection (during a drain) or the last exchange closes.
    quiet: Notify,
}

/// A worker's connections, exchanges and tunnels, readable by other threads. Written only by the worker.
#[derive(Debug, Default)]
pub struct WorkerCounts {
    /// Client connections open.
    open: AtomicUsize,
    /// Requests being proxied (from a whole head to the end of the answer, or of the tunnel it became).
    in_flight: AtomicUsize,
    /// Of those, the ones that became tunnels (an upgraded connection).
    tunnels: AtomicUsize,
    /// Answers `lb` made itself, by [`StatusClass`] (index 0 = 1xx): refused heads, 408, failed or broken exchanges.
    own: [AtomicU64; 5],
    /// Attempts after a request's first (see `proxy::retry`).
    retries: AtomicU64,
}

impl WorkerCounts {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Answers `lb` made itself, by status class (index 0 = 1xx).
    pub fn own(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.own[i].load(Ordering::Relaxed))
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Adds `delta` to a counter only this thread writes, and answers the new value.
fn bump(counter: &AtomicUsize, delta: isize) -> usize {
    let value = counter.load(Ordering::Relaxed).wrapping_add_signed(delta);
    counter.store(value, Ordering::Relaxed);
    value
}

impl Worker {
    pub fn new(
        index: usize,
        routing: Arc<Routing>,
        counts: Arc<WorkerCounts>,
        limit: Arc<ConnectionLimit>,
    ) -> Self {
        Worker {
            index,
            routing,
            pool: Pool::new(index),
            buffers: Buffers::default(),
            timers: Timers::default(),
            draining: Cell::new(false),
            counts,
            limit,
            quiet: Notify::new(),
        }
    }

    /// Which worker this is: its slot in per-backend counters.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// This worker's coarse deadlines.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// This worker's spare buffers.
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// This worker's idle backend connections.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether shutdown has begun (answers close their connections).
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Keeps a backend connection for another exchange.
    pub fn keep(&self, addr: SocketAddr, lease: Lease, keep: KeepAlive, config: &PoolConfig) {
        if self.pool.give_back(addr, lease, keep, config) {
            // The sweeper has idle connections to watch again.
            self.timers.arm();
        }
    }

    /// Runs the worker's sweeper: fires deadlines, closes idle backend connections past their time (or closed by
    /// their backend), gives back spare buffers when nothing is in flight. Never returns.
    pub async fn sweep(&self) {
        let chores = |now| {
            let routing = self.routing.load();
            self.pool
                .purge(now, |addr| routing.backends.iter().any(|b| b.addr == addr));
            // Tunnels are exchanges that may last hours without holding a buffer: they do not keep the spares.
            if self.counts.in_flight() == self.counts.tunnels() {
                self.buffers.trim();
            }
            !self.pool.is_empty()
        };
        self.timers.sweep(|| self.timer_tick(), chores).await
    }

    /// How often the sweeper fires deadlines: an eighth of the shortest timeout it keeps.
    fn timer_tick(&self) -> Duration {
        let timeouts = &self.routing.load().timeouts;
        let shortest = timeouts
            .client_header
            .min(timeouts.idle)
            .min(timeouts.backend_response);
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Starts the drain: from now on answers close their connections, and a connection waiting for its next
    /// request waits at most `grace` (a request already on its way is still answered). Returns when every
    /// connection of this worker has closed.
    pub async fn drain(&self, grace: Duration) {
        self.draining.set(true);
        self.timers.drain(grace);
        while self.counts.open() > 0 {
            self.quiet.notified().await;
        }
    }

    /// Counts a connection just accepted (and counted against `max_connections`) as open until the returned
    /// guard drops: from now on, not from when its task first runs, so that a drain starting in between still
    /// waits for it.
    pub fn open(self: &Rc<Self>) -> Open {
        bump(&self.counts.open, 1);
        Open(self.clone())
    }

    /// Counts an answer `lb` made itself (`lb_requests_total{backend=""}`).
    pub fn count_own(&self, class: StatusClass) {
        stats::bump(&self.counts.own[class.index()], 1);
    }

    /// Counts an attempt after a request's first.
    pub fn count_retry(&self) {
        stats::bump(&self.counts.retries, 1);
    }

    /// Counts one exchange in flight for as long as the returned guard lives.
    pub fn exchange(&self) -> InFlight<'_> {
        bump(&self.counts.in_flight, 1);
        InFlight(self)
    }

    /// Counts one tunnel open for as long as the returned guard lives (within its exchange).
    pub fn tunnel(&self) -> Tunnel<'_> {
        bump(&self.counts.tunnels, 1);
        Tunnel(self)
    }
}

/// An open client connection, owned by its task (see [`Worker::open`]).
pub struct Open(Rc<Worker>);

impl Open {
    pub fn worker(&self) -> &Worker {
        &self.0
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let worker = &self.0;
        worker.limit.release();
        if bump(&worker.counts.open, -1) == 0 {
            worker.quiet.notify_waiters();
        }
    }
}

/// An exchange in flight (see [`Worker::exchange`]).
pub struct InFlight<'a>(&'a Worker);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let counts = &self.0.counts;
        if bump(&counts.in_flight, -1) == 0 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// A tunnel open (see [`Worker::tunnel`]).
pub struct Tunnel<'a>(&'a Worker);

impl Drop for Tunnel<'_> {
    fn drop(&mut self) {
        bump(&self.0.counts.tunnels, -1);
    }
}
