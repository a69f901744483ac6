//! Backends for the unit tests of the algorithms, and the fixture of the `pick` microbenchmark (`bench/pick.rs`):
//! backends built the way a snapshot builds them ([`Backend::new`]), numbered 1.. in order, at `127.0.0.1:8001`,
//! `:8002`, …

use std::sync::Arc;

use super::{build, Balance, Candidates};
use crate::backend::Backend;
use crate::config::{BackendConfig, BalanceConfig};

/// One backend per weight, in order.
pub fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
    weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| {
            let id = index as u64 + 1;
            let port = 8000 + id as u16;
            let config = BackendConfig {
                id,
                host: "127.0.0.1".into(),
                port,
                addr: ([127, 0, 0, 1], port).into(),
                options: Default::default(),
                weight,
                max_connections: None,
                resolve: Default::default(),
            };
            Arc::new(Backend::new(&config, None, 1))
        })
        .collect()
}

/// `count` backends of weight 1.
#[cfg(test)]
pub fn equal_backends(count: usize) -> Vec<Arc<Backend>> {
    backends(&vec![1; count])
}

/// How many of `picks` picks, with every backend eligible, went to each backend.
#[cfg(test)]
pub fn counts(balancer: &dyn Balance, backends: &[Arc<Backend>], picks: usize) -> Vec<usize> {
    let candidates = Candidates {
        backends,
        key: None,
        eligible: &|_| true,
    };
    let mut counts = vec![0; backends.len()];
    for _ in 0..picks {
        counts[balancer.pick(&candidates).expect("an eligible backend")] += 1;
    }
    counts
}

/// Sets the requests in flight to the backend, as if its in-flight guards counted so many.
#[cfg(test)]
pub fn set_in_flight(backend: &Backend, in_flight: usize) {
    backend
        .state
        .in_flight
        .store(in_flight, std::sync::atomic::Ordering::Relaxed);
}

/// A balancer as [`build`] makes it for a pool of backends with the given weights, asked as the proxy asks it
/// (the filter reads health, admin state and `max_connections`, as `Tried::pick_next` does).
pub struct PickBench {
    backends: Vec<Arc<Backend>>,
    balancer: Box<dyn Balance>,
}

impl PickBench {
    pub fn new(config: &BalanceConfig, weights: &[u32]) -> Self {
        let backends = backends(weights);
        let balancer = build(config, &backends);
        PickBench { backends, balancer }
    }

    /// One pick for a request keyed `key`; the backend's index.
    #[inline]
    pub fn pick(&self, key: Option<u64>) -> Option<usize> {
        let backends = &self.backends;
        let eligible = |i: usize| backends[i].is_eligible() && !backends[i].is_full();
        self.balancer.pick(&Candidates {
            backends,
            key,
            eligible: &eligible,
        })
    }

    /// What the proxy reports after an answer's head.
    pub fn observe(&self, index: usize, took: std::time::Duration) {
        self.balancer.observe(index, took);
    }
}
