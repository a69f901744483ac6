//! The routing state the data plane reads per request, published atomically.
//!
//! A `Snapshot` is immutable: the backend list, the balancer built for it (once, here, not per request) and the
//! settings the proxy needs. The control plane builds a new one and swaps it in ([`Routing::publish`]); a request
//! takes one `load()` and keeps a consistent view for its whole journey, so a request in flight during a swap
//! finishes on the snapshot it started with.
//!
//! Live per-backend state is an `Arc<BackendState>` inside each `Backend`. [`Snapshot::build`] carries it over from
//! the previous snapshot by identity (same id and same address): health, counters and requests in flight survive a
//! reload, and a request still running on the old snapshot counts against the same backend as new ones. A backend
//! that changed address, or is new, starts fresh (healthy until its first check, which comes before traffic); a
//! removed one is dropped with the last snapshot that holds it.
//!
//! The TLS client setups of TLS backends (`tls_client`) are built with the snapshot, so a reload re-reads the
//! files they come from and connections never parse them.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::cluster::Cluster;
use super::routes::{Routes, DEFAULT_CLUSTER};
use super::tls_client;
use crate::backend::{Backend, Identity};
use crate::config::{AccessLogFormat, Config, HealthConfig, PoolConfig, Retries, Timeouts};
use crate::proxy::budget::RetryBudget;

#[derive(Debug)]
pub struct Snapshot {
    /// Every backend of every pool, pools in config order (what the admin plane, metrics and checks go over).
    pub backends: Vec<Arc<Backend>>,
    /// The pools: the default one first (maybe without backends), then the named ones.
    pub clusters: Vec<Cluster>,
    pub routes: Routes,
    pub retries: Retries,
    /// Recent requests and retries, carried over from snapshot to snapshot.
    pub budget: Arc<RetryBudget>,
    /// Whether every backend is reached as HTTP/1.1 in clear text without a PROXY header: then HTTP/1.1 clients
    /// are served by the fast path (`h1`, `proxy`); otherwise by the generic one (hyper's client, any protocol).
    #[allow(dead_code)] // read by the connection (issue 10, in progress)
    pub plain: bool,
    pub timeouts: Timeouts,
    pub pool: PoolConfig,
    /// The access log's format, when it is on.
    pub access_log: Option<AccessLogFormat>,
    /// Which config this is: 1 for the one the server started with, one more for each reload since (0: not published).
    pub generation: u64,
    /// When it was built (just before it was published).
    pub loaded_at: SystemTime,
}

impl Snapshot {
    /// The routing state for `config`, keeping the live state of every backend that `previous` has too.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Self {
        // TLS client setups are built here, once per snapshot, and shared by backends with the same settings.
        let mut tls = tls_client::Configs::default();
        let mut backends: Vec<Arc<Backend>> = Vec::new();
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for (index, cluster) in config.clusters.iter().enumerate() {
            let members: Vec<Arc<Backend>> = cluster
                .backends
                .iter()
                .map(|b| {
                    let identity = Identity {
                        id: b.id,
                        addr: b.addr,
                    };
                    let known = previous.and_then(|previous| previous.backend(identity));
                    let backend =
                        Backend::new(b, known.map(|known| known.state.clone()), config.workers)
                            .in_cluster(index, cluster.slow_start);
                    Arc::new(backend.with_tls(tls.for_backend(b)))
                })
                .collect();
            backends.extend(members.iter().cloned());
            clusters.push(Cluster::new(cluster, members));
        }
        Snapshot {
            plain: backends.iter().all(|b| b.options.is_plain()),
            backends,
            clusters,
            routes: Routes::new(&config.routes),
            retries: config.retries.clone(),
            budget: previous.map_or_else(
                || Arc::new(RetryBudget::new(config.workers)),
                |p| p.budget.clone(),
            ),
            timeouts: config.timeouts.clone(),
            pool: config.pool.clone(),
            access_log: config.access_log.then_some(config.access_log_format),
            generation: 0, // the control plane numbers what it publishes
            loaded_at: SystemTime::now(),
        }
    }

    /// The cluster a request to `host` and `path` goes to: by the routes, else the default pool; `None` when no route
    /// takes it and there is no default pool (404).
    #[inline]
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<&Cluster> {
        if self.routes.is_empty() {
            return Some(&self.clusters[DEFAULT_CLUSTER]);
        }
        match self.routes.find(host, path) {
            Some(index) => Some(&self.clusters[index]),
            None => Some(&self.clusters[DEFAULT_CLUSTER]).filter(|c| !c.backends.is_empty()),
        }
    }

    /// The default pool (top-level `backends`): where TCP mode and requests no route takes go.
    pub fn default_cluster(&self) -> &Cluster {
        &self.clusters[DEFAULT_CLUSTER]
    }

    /// How `backend` is health checked: as its pool says.
    pub fn health_of(&self, backend: &Backend) -> &HealthConfig {
        &self.clusters[backend.cluster].health
    }

    /// The backend with this identity, if this snapshot routes to it.
    pub fn backend(&self, identity: Identity) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.identity() == identity)
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

    /// Makes `snapshot` the current one: requests that start from now on see it; those in flight keep theirs.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::config::{self, BackendConfig, Overrides};

    fn backend(id: u64, port: u16) -> BackendConfig {
        BackendConfig {
            id,
            host: "127.0.0.1".into(),
            port,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            options: Default::default(),
            weight: 1,
            max_connections: None,
            resolve: Default::default(),
        }
    }

    fn config(backends: Vec<BackendConfig>) -> Config {
        config::from_backends(backends, &Overrides::default()).expect("a valid config")
    }

    #[test]
    fn a_backend_with_the_same_id_and_address_keeps_its_state() {
        let old = Snapshot::build(&config(vec![backend(1, 8001), backend(2, 8002)]), None);
        old.backends[1]
            .state
            .healthy
            .store(false, Ordering::Relaxed);
        old.backends[1]
            .state
            .checks_passed
            .store(7, Ordering::Relaxed);
        let in_flight = old.backends[1].state.enter();

        // Reordered, and backend 2 now second of three: identity is id + address, not position.
        let new = Snapshot::build(
            &config(vec![backend(3, 8003), backend(2, 8002), backend(1, 8001)]),
            Some(&old),
        );

        let (kept, also_kept) = (&new.backends[1], &new.backends[2]);
        assert!(Arc::ptr_eq(&kept.state, &old.backends[1].state));
        assert!(Arc::ptr_eq(&also_kept.state, &old.backends[0].state));
        assert!(!kept.is_healthy(), "health carried over");
        assert_eq!(kept.state.checks_passed.load(Ordering::Relaxed), 7);
        assert_eq!(kept.state.in_flight.load(Ordering::Relaxed), 1);
        drop(in_flight);
        assert_eq!(
            kept.state.in_flight.load(Ordering::Relaxed),
            0,
            "a request that started on the old snapshot ends on the same count"
        );
        assert!(new.backends[0].is_healthy(), "a new backend starts fresh");
    }

    #[test]
    fn a_backend_whose_address_changed_starts_fresh() {
        let old = Snapshot::build(&config(vec![backend(1, 8001)]), None);
        old.backends[0]
            .state
            .healthy
            .store(false, Ordering::Relaxed);

        let new = Snapshot::build(&config(vec![backend(1, 9001)]), Some(&old));

        assert!(!Arc::ptr_eq(&new.backends[0].state, &old.backends[0].state));
        assert!(new.backends[0].is_healthy());
        assert_eq!(new.backends[0].addr.port(), 9001);
    }

    #[test]
    fn a_removed_backend_is_dropped_with_the_last_snapshot_that_holds_it() {
        let old = Snapshot::build(&config(vec![backend(1, 8001), backend(2, 8002)]), None);
        let removed = Arc::downgrade(&old.backends[0].state);

        let new = Snapshot::build(&config(vec![backend(2, 8002)]), Some(&old));
        assert_eq!(new.backends.len(), 1);
        assert_eq!(new.backends[0].id, 2);
        assert!(
            removed.upgrade().is_some(),
            "still held by the old snapshot"
        );

        drop(old);
        assert!(
            removed.upgrade().is_none(),
            "nothing keeps its state any more"
        );
    }

    #[test]
    fn publish_swaps_for_new_requests_and_keeps_the_view_of_those_in_flight() {
        let routing = Routing::new(Snapshot::build(&config(vec![backend(1, 8001)]), None));
        let in_flight = routing.load_full();

        let next = Snapshot::build(
            &config(vec![backend(1, 8001), backend(2, 8002)]),
            Some(&routing.load()),
        );
        routing.publish(next);

        assert_eq!(routing.load().backends.len(), 2);
        assert_eq!(in_flight.backends.len(), 1);
        assert!(Arc::ptr_eq(
            &routing.load().backends[0].state,
            &in_flight.backends[0].state
        ));
    }
}
