//! How many client connections may be open at once (`max_connections`), over all workers.
//!
//! At the limit a worker stops accepting: new connections wait in the kernel's listen queue (and are served as
//! soon as others close) instead of being accepted and failed; each worker holds at most one accepted connection
//! waiting for its turn. The limit also keeps file descriptors for what
//! each client needs besides its own socket (a backend connection), for the health checks and for the backend
//! pool, so that a flood of clients cannot make the health checks fail for lack of descriptors. Without a
//! configured value it is derived from the open-files limit at startup, as HAProxy derives its `maxconn`.
//!
//! One shared counter, touched when a connection opens and closes (never per request).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;

/// The open client connections of all workers and their limit.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    freed: Notify,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max: max.max(1),
            freed: Notify::new(),
        })
    }

    /// Waits until a connection may be accepted, and counts it as open. The caller must [`release`] it.
    ///
    /// [`release`]: ConnectionLimit::release
    pub async fn acquire(&self) {
        while !self.try_acquire() {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the second look, so that a close in between is not missed.
            freed.as_mut().enable();
            if self.try_acquire() {
                return;
            }
            freed.await;
        }
    }

    fn try_acquire(&self) -> bool {
        if self.open.fetch_add(1, Ordering::AcqRel) < self.max {
            return true;
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// Counts a connection as open whatever the limit (one the kernel had queued when the listener closed).
    pub fn force(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// A connection counted by [`acquire`](ConnectionLimit::acquire) or [`force`](ConnectionLimit::force) closed.
    pub fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        // Every close wakes one waiting worker (or leaves a permit for the next to wait): waking only when the
        // limit was reached would leave a second waiting worker asleep once the first took the one free place.
        self.freed.notify_one();
    }
}

/// File descriptors kept for everything but client connections and their backend connections: standard streams,
/// each worker's event loop and listener, the control runtime, signals, logs.
const BASE_RESERVE: u64 = 64;

/// The open-files limit as it is, not raised: for a server started inside another program (the in-process tests),
/// whose process-wide limits are not its own to change.
pub fn open_files_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// The open-files limit, raised to the hard limit first (as nginx's `worker_rlimit_nofile` and HAProxy do): what
/// the process may open. `None` where the limit cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().ok()?;
    if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The connection limit `max_connections` derives from an open-files limit of `files`: each client may need its own
/// socket and one to a backend, after reserving descriptors for the health checks (one per backend) and for the
/// idle backend pool (up to a quarter of them).
pub fn derived_max_connections(files: u64, config: &Config) -> usize {
    let backends = config.backends().count() as u64;
    let pool = (config.pool.max_idle_per_backend as u64)
        .saturating_mul(backends)
        .saturating_mul(config.workers as u64)
        .min(files / 4);
    let reserve = BASE_RESERVE + 2 * config.workers as u64 + backends + pool;
    let max = files.saturating_sub(reserve) / 2;
    usize::try_from(max.max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn at_the_limit_a_connection_waits_until_another_closes() {
        let limit = ConnectionLimit::new(2);
        limit.acquire().await;
        limit.acquire().await;
        let waiting = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third connection must wait");
        limit.release();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(limit.open.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn every_waiting_worker_gets_its_turn() {
        let limit = ConnectionLimit::new(2);
        limit.acquire().await;
        limit.acquire().await;
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move { limit.acquire().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        limit.release();
        limit.release();
        for waiter in waiting {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("both waiters get a place")
                .unwrap();
        }
    }

    #[test]
    fn the_derived_limit_leaves_room_for_checks_and_the_pool() {
        let config = crate::config::from_backends(
            (1..=2)
                .map(|id| crate::config::BackendConfig {
                    id,
                    host: "127.0.0.1".into(),
                    port: 8000 + id as u16,
                    addr: ([127, 0, 0, 1], 8000 + id as u16).into(),
                    options: Default::default(),
                    weight: 1,
                    max_connections: None,
                    resolve: Default::default(),
                })
                .collect(),
            &crate::config::Overrides {
                workers: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        // 1024 files: 64 + 4 + 2 reserved, a pool of 64 × 2 × 2 = 256, so (1024 - 326) / 2.
        assert_eq!(derived_max_connections(1024, &config), 349);
        assert_eq!(derived_max_connections(10, &config), 1);
        assert!(derived_max_connections(1_048_576, &config) > 500_000);
    }
}
