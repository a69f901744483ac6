//! The routing state the data plane reads per request, published atomically.
//!
//! A `Snapshot` is immutable: the backend list, the balancer built for it and the settings the proxy needs. The
//! control plane builds a new one and swaps it in (`Routing::publish`); a request takes one `load()` and keeps a
//! consistent view for its whole journey. Live per-backend state sits in `Arc<BackendState>` inside each `Backend`,
//! so a future reload can carry it over by backend identity.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::backend::Backend;
use crate::balance::{Balance, RoundRobin};
use crate::config::{Config, PoolConfig, Timeouts};

#[derive(Debug)]
pub struct Snapshot {
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Box<dyn Balance>,
    pub timeouts: Timeouts,
    pub pool: PoolConfig,
    pub access_log: bool,
}

impl Snapshot {
    pub fn build(config: &Config) -> Self {
        Snapshot {
            backends: config
                .backends
                .iter()
                .map(|b| Arc::new(Backend::new(b)))
                .collect(),
            balancer: Box::new(RoundRobin::default()),
            timeouts: config.timeouts.clone(),
            pool: config.pool.clone(),
            access_log: config.access_log,
        }
    }
}

/// The current snapshot, shared by every worker and the control plane.
#[derive(Debug)]
pub struct Routing {
    current: ArcSwap<Snapshot>,
}

impl Routing {
    pub fn new(snapshot: Snapshot) -> Self {
        Routing {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot, for a quick look (without taking a reference count).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, kept by the caller for as long as it needs a consistent view.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}
