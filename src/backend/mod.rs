//! A backend: who it is (fixed by the config) and a handle on how it is doing (shared, updated live).
//!
//! Identity and live state are apart on purpose. A [`Backend`] is immutable and belongs to one routing snapshot; its
//! [`BackendState`] (`state.rs`: health and its recent history (`history.rs`), admin state, requests in flight,
//! counters) is an `Arc` that a new snapshot carries over when the backend keeps its [`Identity`] (same id, same
//! address), so a reload keeps what is known about a backend (the operator's disable or drain included) and the
//! requests already on their way to it are still counted.
//!
//! This module sits below both `balance` (which reads backends to choose one) and `upstream` (whose snapshot holds
//! backends and the balancer built over them), so that neither imports the other backwards.

pub mod clock;
pub mod history;
pub mod outlier;
mod state;
pub mod stats;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use state::{AdminState, BackendState, InFlight};

use crate::config::{BackendConfig, BackendOptions};

/// What [`Backend::effective_weight`] is counted in: a `weight` of 1 at full is this much, so that a ramp keeps
/// its precision in integers (a weight of 1 at 10% is 100).
pub const WEIGHT_SCALE: u32 = 1000;

/// A backend as the data plane sees it: identity plus a handle on its live state.
#[derive(Debug)]
pub struct Backend {
    pub id: u64,
    /// `host:port` as written in the config (used as the Host of health checks and in logs).
    pub authority: String,
    pub addr: SocketAddr,
    /// The host as written in the config (the default TLS server name, which `tls` holds ready).
    #[allow(dead_code)] // the TLS server name is built from the config's, with the snapshot
    pub host: String,
    /// How it is reached beyond its address: protocol, TLS, PROXY header.
    pub options: BackendOptions,
    /// For a TLS backend, how the handshake is made (built with the snapshot: see [`Backend::with_tls`]), or why it
    /// could not be set up (a file the config named changed since it was checked); every connect then fails so.
    pub tls: Option<Result<TlsClient, String>>,
    /// Its share of new requests relative to the other backends of its pool (0: none); see
    /// [`Backend::effective_weight`] for slow start.
    pub weight: u32,
    /// Requests in flight to it at once; beyond, it is skipped like an ineligible backend.
    pub max_connections: Option<usize>,
    /// The index of its pool in the snapshot's clusters.
    pub cluster: usize,
    /// Its pool's slow start window: after it comes up, its weight ramps from 10% to full over this.
    pub slow_start: Option<std::time::Duration>,
    pub state: Arc<BackendState>,
}

/// TLS to a backend, ready to connect with: built once per snapshot (`upstream::tls_client`), not per connection.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Trust, client certificate, ALPN; one `Arc` for every backend of a snapshot with the same TLS settings.
    pub config: Arc<rustls::ClientConfig>,
    /// The name verified in the backend's certificate, and sent as SNI unless it is an IP address.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// What makes two backends of two snapshots the same one: the config's id and the address connections go to.
/// A backend whose address changed is another backend for everything it knows (health, counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    pub id: u64,
    pub addr: SocketAddr,
}

impl Backend {
    /// The backend `config` describes, with `state` carried over from a previous snapshot, or a fresh state (with
    /// counters for `workers` workers).
    pub fn new(config: &BackendConfig, state: Option<Arc<BackendState>>, workers: usize) -> Self {
        Backend {
            id: config.id,
            authority: config.authority(),
            addr: config.addr,
            host: config.host.clone(),
            options: config.options.clone(),
            tls: None,
            weight: config.weight,
            max_connections: config.max_connections,
            cluster: 0,
            slow_start: None,
            state: state.unwrap_or_else(|| Arc::new(BackendState::new(workers))),
        }
    }

    /// The same backend, as a member of the `cluster`-th pool, which ramps new backends up over `slow_start`.
    pub fn in_cluster(self, cluster: usize, slow_start: Option<std::time::Duration>) -> Self {
        Backend {
            cluster,
            slow_start,
            ..self
        }
    }

    /// The same backend, reached over TLS as `tls` says (what the snapshot built for its `tls` options).
    pub fn with_tls(self, tls: Option<Result<TlsClient, String>>) -> Self {
        Backend { tls, ..self }
    }

    pub fn identity(&self) -> Identity {
        Identity {
            id: self.id,
            addr: self.addr,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }

    /// Whether new requests may go to it: healthy, enabled by the operator (not disabled, not draining), at an
    /// address (its checks fail while its name does not resolve; this says it even before they have), and not
    /// ejected by passive health. (Not whether it is full: see [`Backend::is_full`].)
    ///
    /// Read per pick: a few relaxed loads while it is not ejected. An ejection that is over ends here, for whoever
    /// asks first (see `outlier`).
    #[inline]
    pub fn is_eligible(&self) -> bool {
        self.is_healthy()
            && self.state.admin() == AdminState::Enabled
            && self.is_resolved()
            && !self.is_ejected()
    }

    /// Whether it has an address to connect to: not a host name that never resolved (`config::UNRESOLVED`).
    #[inline]
    pub fn is_resolved(&self) -> bool {
        self.addr.port() != 0
    }

    /// Whether passive health ejected it, and the ejection is not over.
    #[inline]
    pub fn is_ejected(&self) -> bool {
        match self.state.outlier.ejected_until_ms() {
            0 => false,
            until => outlier::still_ejected(self, until, clock::now_ms()),
        }
    }

    /// Whether it has as many requests in flight as `max_connections` allows.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.max_connections
            .is_some_and(|max| self.state.in_flight.load(Ordering::Relaxed) >= max)
    }

    /// Its weight at full, in the scale of [`Backend::effective_weight`]: `weight × WEIGHT_SCALE` (what to compare
    /// an effective weight with, to know how far its ramp has come).
    #[inline]
    pub fn full_weight(&self) -> u32 {
        self.weight.saturating_mul(WEIGHT_SCALE)
    }

    /// Its weight now, in [`WEIGHT_SCALE`]ths of a `weight` unit: `weight × WEIGHT_SCALE`, or less while it ramps
    /// up after coming up (slow start: linearly from 10% to full over its pool's window, never 0 unless `weight`
    /// is 0). Only the ratios between backends mean something; compare it with other backends' effective weights,
    /// never with a `weight`. At most 1000 × 1000 per backend: sum them in a `u64`.
    ///
    /// Without slow start it costs a multiplication; during a ramp, a clock read; after it, one relaxed load.
    #[inline]
    pub fn effective_weight(&self) -> u32 {
        let full = self.full_weight();
        match self.slow_start {
            None => full,
            Some(window) => self.state.ramped(full, window, clock::now_ms()),
        }
    }
}

impl fmt::Display for Backend {
    /// `backend 2 127.0.0.1:8002`: the form every log line uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {} {}", self.id, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligible_only_when_healthy_and_enabled() {
        let config = BackendConfig {
            id: 1,
            host: "localhost".into(),
            port: 8001,
            addr: ([127, 0, 0, 1], 8001).into(),
            options: Default::default(),
            weight: 1,
            max_connections: None,
            resolve: Default::default(),
        };
        let backend = Backend::new(&config, None, 1);
        assert!(
            backend.is_eligible(),
            "a new backend is enabled and taken as up"
        );
        assert_eq!(backend.to_string(), "backend 1 localhost:8001");

        for admin in [AdminState::Disabled, AdminState::Draining] {
            backend.state.set_admin(admin);
            assert!(!backend.is_eligible(), "{admin:?}");
        }
        backend.state.set_admin(AdminState::Enabled);
        backend.state.healthy.store(false, Ordering::Relaxed);
        assert!(!backend.is_eligible(), "down");
    }

    #[test]
    fn effective_weight_is_scaled_and_ramps_only_with_slow_start() {
        let mut config = BackendConfig {
            id: 1,
            host: "localhost".into(),
            port: 8001,
            addr: ([127, 0, 0, 1], 8001).into(),
            options: Default::default(),
            weight: 3,
            max_connections: None,
            resolve: Default::default(),
        };
        let steady = Backend::new(&config, None, 1);
        assert_eq!(steady.effective_weight(), 3 * WEIGHT_SCALE);
        assert_eq!(steady.full_weight(), steady.effective_weight());
        let window = std::time::Duration::from_secs(3600);
        let ramping = Backend::new(&config, None, 1).in_cluster(0, Some(window));
        let now = ramping.effective_weight();
        assert!((300..3000).contains(&now), "{now}: just added, it ramps");
        config.weight = 0;
        let none = Backend::new(&config, None, 1).in_cluster(0, Some(window));
        assert_eq!(none.effective_weight(), 0);
    }
}
