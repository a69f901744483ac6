//! How a backend is chosen for a request: the selection API, and one file per algorithm.
//!
//! A balancer is built once per routing snapshot ([`build`], off the hot path: a reload builds a new one) and asked
//! per request ([`Balance::pick`]) with the [`Candidates`]: the snapshot's backends (each with its weight and live
//! state: health, admin state, requests in flight, latency estimate), an optional key of the request (for
//! hash-based algorithms: a client address, a header) and a filter saying which backends are eligible right now
//! (healthy, enabled, and not already tried for this request). It answers an index into the backend list.
//!
//! Algorithms are `&self` types using atomics (no lock, no allocation per pick), shared by every worker. The
//! request holds the chosen backend's in-flight guard (`crate::backend::InFlight`) for as long as its attempt
//! lasts; the balancer itself counts nothing.
//!
//! - `round_robin`: one shared counter; every backend in turn, skipping the ineligible ones.

pub mod key;
mod round_robin;

use std::sync::Arc;

pub use round_robin::RoundRobin;

use crate::backend::Backend;
use crate::config::BalanceConfig;

/// What one pick chooses from.
pub struct Candidates<'a> {
    /// The snapshot's backends, in config order: the index a balancer answers is into this list.
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
    /// An eligible backend's index, or `None` when no backend passes the filter.
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

/// The balancer for a snapshot's backends. Only round robin exists yet; the choice of algorithm (and what it
/// precomputes from the list: weights, a hash ring) comes with its config key.
pub fn build(_config: &BalanceConfig, _backends: &[Arc<Backend>]) -> Box<dyn Balance> {
    Box::new(RoundRobin::default())
}
