//! How a backend is chosen for a request: the selection API, and one file per algorithm.
//!
//! A balancer is built once per routing snapshot and pool ([`build`], off the hot path: a reload builds a new one)
//! and asked per request ([`Balance::pick`]) with the [`Candidates`]: the pool's backends (each with its weight and
//! live state: health, admin state, requests in flight), an optional key of the request (for consistent hashing: a
//! client address, a header) and a filter saying which backends are eligible right now (healthy, enabled, not full,
//! and not already tried for this request). It answers an index into the backend list. The proxy tells it how long
//! each answered attempt took to its response head ([`Balance::observe`]); only latency-aware algorithms listen.
//!
//! Algorithms are `&self` types shared by every worker, with no allocation per pick: atomics, except smooth
//! weighted round robin's short critical section. The request holds the chosen backend's in-flight guard
//! (`crate::backend::InFlight`) for as long as its attempt lasts; the balancer itself counts nothing. Weights are
//! read through [`Backend::effective_weight`] at each pick, so slow start's ramp applies to every algorithm that
//! weighs. A weight of 0 gets no new request from any of them.
//!
//! `balance = …` of a pool:
//! - `round_robin` (the default): every backend in turn. With equal weights and no slow start, one shared
//!   counter (`round_robin.rs`, the cheapest pick there is); otherwise nginx's smooth weighted round robin
//!   (`smooth_weighted.rs`), which interleaves turns by weight (5, 1, 1 → `a a b a c a a`).
//! - `least_request`: power of two random choices over requests in flight relative to weight (`least_request.rs`,
//!   `p2c.rs`): a slow or stuck backend keeps its requests longer and so gets fewer new ones.
//! - `peak_ewma`: power of two random choices over a peak-sensitive, decaying average of response times ×
//!   (in flight + 1) (`peak_ewma.rs`): avoids a slow backend from its first slow answer, before it piles up
//!   requests; the best default for backends of uneven speed.
//! - `random`: weighted random (`random.rs`): no shared position, so nothing to coordinate.
//! - `consistent_hash`: Maglev over the request key (`maglev.rs`), weighted, optionally with bounded load: the
//!   same key goes to the same backend, in every `lb` process with the same backends, for caches and sessions.
//!
//! Shared pieces: `rng.rs` (a lock-free seeded generator), `weights.rs` (drawing by weight), `key.rs` (what a
//! request is hashed by), and `testing.rs` (backends for the tests and the `pick` microbenchmark). The simulation
//! of `simulation.rs` (a test) runs the real balancers against backends of uneven speed in virtual time.

pub mod key;
mod least_request;
mod maglev;
mod p2c;
mod peak_ewma;
mod random;
mod rng;
mod round_robin;
#[cfg(test)]
mod simulation;
mod smooth_weighted;
#[doc(hidden)]
pub mod testing;
mod weights;

use std::sync::Arc;

use least_request::LeastRequest;
use maglev::Maglev;
use peak_ewma::PeakEwma;
use random::Random;
use rng::Rng;
use round_robin::RoundRobin;
use smooth_weighted::SmoothWeighted;

use crate::backend::Backend;
use crate::config::{Algorithm, BalanceConfig};

/// What one pick chooses from.
pub struct Candidates<'a> {
    /// The pool's backends, in config order: the index a balancer answers is into this list.
    pub backends: &'a [Arc<Backend>],
    /// The hash of what the request is keyed by ([`key_hash`]), for algorithms that send the same key to the same
    /// backend; `None`: no key.
    pub key: Option<u64>,
    /// Whether the backend at an index may take this request now.
    pub eligible: &'a dyn Fn(usize) -> bool,
}

impl Candidates<'_> {
    pub fn len(&self) -> usize {
        self.backends.len()
    }
}

/// A selection algorithm, built for one backend list.
pub trait Balance: Send + Sync + std::fmt::Debug {
    /// An eligible backend's index, or `None` when no backend passes the filter (or every one that does has
    /// weight 0).
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize>;

    /// The backend at `index` answered a response head `took` after its attempt started (latency-aware algorithms
    /// learn from it; the others ignore it).
    fn observe(&self, _index: usize, _took: std::time::Duration) {}
}

/// The hash of a request key, the same in every process and build (no per-process seed): FNV-1a, 64 bits.
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The balancer `config` asks for, over a pool's `backends` (in config order). The drawing algorithms are seeded
/// from the process's randomness; consistent hashing's table depends on the backends alone.
pub fn build(config: &BalanceConfig, backends: &[Arc<Backend>]) -> Box<dyn Balance> {
    match config.algorithm {
        Algorithm::RoundRobin if weighs(backends) => Box::new(SmoothWeighted::new(backends.len())),
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::LeastRequest => Box::new(LeastRequest::new(backends, Rng::from_entropy())),
        Algorithm::PeakEwma => Box::new(PeakEwma::new(backends, Rng::from_entropy())),
        Algorithm::Random => Box::new(Random::new(backends, Rng::from_entropy())),
        Algorithm::ConsistentHash => Box::new(Maglev::new(
            backends,
            config.hash_bound,
            Rng::from_entropy(),
        )),
    }
}

/// Whether round robin must weigh: weights differ, are all 0, or may ramp (slow start).
fn weighs(backends: &[Arc<Backend>]) -> bool {
    let Some(first) = backends.first() else {
        return false;
    };
    first.weight == 0
        || backends
            .iter()
            .any(|b| b.weight != first.weight || b.slow_start.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;

    #[test]
    fn round_robin_weighs_only_when_it_must() {
        let config = BalanceConfig::default();
        let kind = |weights: &[u32]| format!("{:?}", build(&config, &backends(weights)));
        assert!(kind(&[2, 2, 2]).starts_with("RoundRobin"));
        assert!(kind(&[]).starts_with("RoundRobin"));
        assert!(kind(&[3, 1, 1]).starts_with("SmoothWeighted"));
        assert!(kind(&[0, 0]).starts_with("SmoothWeighted"));
        let ramping: Vec<_> = backends(&[1, 1])
            .into_iter()
            .map(|b| {
                let b = Arc::into_inner(b).unwrap();
                Arc::new(b.in_cluster(0, Some(std::time::Duration::from_secs(30))))
            })
            .collect();
        assert!(format!("{:?}", build(&config, &ramping)).starts_with("SmoothWeighted"));
    }

    #[test]
    fn every_algorithm_is_built_and_picks() {
        let backends = backends(&[1, 2, 3]);
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastRequest,
            Algorithm::PeakEwma,
            Algorithm::Random,
            Algorithm::ConsistentHash,
        ] {
            let config = BalanceConfig {
                algorithm,
                ..Default::default()
            };
            let balancer = build(&config, &backends);
            let candidates = Candidates {
                backends: &backends,
                key: Some(key_hash(b"alice")),
                eligible: &|i| i != 0,
            };
            let picked = balancer.pick(&candidates);
            assert!(matches!(picked, Some(1 | 2)), "{algorithm:?}: {picked:?}");
            balancer.observe(1, std::time::Duration::from_millis(3));
        }
    }
}
