//! A pool of backends as the data plane sees it: its members, the balancer built over them, and how it is checked
//! and watched (a `[pools.NAME]` table, or the top-level `backends`: the default pool). Called a cluster here, as
//! Envoy does, to keep it apart from the connection pool (`upstream::pool`).
//!
//! A request is routed to one cluster (`routes.rs`) and every attempt it makes picks from that cluster's backends.

use std::sync::Arc;

use crate::backend::outlier::{self, Observed};
use crate::backend::Backend;
use crate::balance::{self, Balance};
use crate::config::{ClusterConfig, HashKey, HealthConfig, PassiveHealth};

/// What a failed attempt or a 5xx answer counts as for latency-aware balancing (linkerd's default for a backend it
/// knows nothing of).
pub const FAILURE_PENALTY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub struct Cluster {
    /// `""` for the default pool, else the `[pools.NAME]` name.
    pub name: String,
    /// Its backends, in config order; the same `Arc`s as the snapshot's flat list.
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Box<dyn Balance>,
    /// What a request is hashed by, when the balancer is keyed (`consistent_hash`); `None`: no key is computed.
    pub hash_key: Option<HashKey>,
    pub health: HealthConfig,
    /// `[passive_health]`: outlier ejection from real traffic, when on.
    pub passive: Option<PassiveHealth>,
}

impl Cluster {
    /// The cluster `config` describes, over `backends` (built from its backend list, in order).
    pub fn new(config: &ClusterConfig, backends: Vec<Arc<Backend>>) -> Self {
        let keyed = config.balance.algorithm == crate::config::Algorithm::ConsistentHash;
        Cluster {
            name: config.name.clone(),
            balancer: balance::build(&config.balance, &backends),
            backends,
            hash_key: keyed.then(|| config.balance.hash_key.clone()),
            health: config.health.clone(),
            passive: config.passive_health.clone(),
        }
    }

    /// Records what an attempt on the backend at `index` came to: for its passive health, and for the balancer
    /// (the time to an answer's head). A failure is not a fast answer: a 5xx, or an attempt that failed, counts as
    /// taking at least [`FAILURE_PENALTY`], so that latency-aware balancing does not favour a backend that errs
    /// quickly (the review saw `peak_ewma` send two thirds of the requests to one answering 500 at once).
    #[inline]
    pub fn observe(&self, index: usize, observed: Observed) {
        match observed {
            Observed::Answered { took, status } if status < 500 => {
                self.balancer.observe(index, took)
            }
            Observed::Answered { took, .. } => {
                self.balancer.observe(index, took.max(FAILURE_PENALTY))
            }
            Observed::Failed | Observed::ConnectFailed => {
                self.balancer.observe(index, FAILURE_PENALTY)
            }
            Observed::Connected => {}
        }
        outlier::observe(
            &self.backends[index],
            observed,
            self.passive.as_ref(),
            &self.backends,
        );
    }

    /// `pool api` or `the default pool`: how log lines name it.
    pub fn describe(&self) -> String {
        match self.name.as_str() {
            "" => "the default pool".to_owned(),
            name => format!("pool {name}"),
        }
    }
}
