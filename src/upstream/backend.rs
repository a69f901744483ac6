//! A backend: who it is (fixed at config time) and how it is doing (shared, updated live).
//!
//! The health checker writes `healthy`; the data plane only reads it, lock-free. Counters live here, next to the
//! state they count, so metrics later are a view of this rather than a second bookkeeping.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::BackendConfig;

/// A backend as the data plane sees it: identity plus a handle on its live state.
#[derive(Debug)]
pub struct Backend {
    pub id: u64,
    /// `host:port` as written in the config (used as the Host of health checks and in logs).
    pub authority: String,
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
}

impl Backend {
    pub fn new(config: &BackendConfig) -> Self {
        Backend {
            id: config.id,
            authority: format!("{}:{}", config.host, config.port),
            addr: config.addr,
            state: Arc::new(BackendState::default()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }
}

impl fmt::Display for Backend {
    /// `backend 2 127.0.0.1:8002`: the form every log line uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {} {}", self.id, self.authority)
    }
}

/// Live state of one backend, shared by the health checker and every worker.
#[derive(Debug)]
pub struct BackendState {
    pub healthy: AtomicBool,
    /// Requests answered by this backend (any status).
    pub requests: AtomicU64,
    /// Connection attempts that failed (refused, unreachable, timed out).
    pub connect_failures: AtomicU64,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            // Until the first check says otherwise: the startup check runs before traffic is accepted.
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }
}
