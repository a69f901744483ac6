//! How a backend is chosen for a request.
//!
//! A balancer is built once per snapshot from the backend list (off the hot path) and asked per request, with a
//! filter that says which backends are eligible right now (healthy, and not already tried for this request). It
//! answers an index into the snapshot's backend list. Algorithms are `&self` types using atomics, one file each.

mod round_robin;

pub use round_robin::RoundRobin;

/// A selection algorithm over `len` backends, indexed `0..len` in config order.
pub trait Balance: Send + Sync + std::fmt::Debug {
    /// An eligible backend, or `None` when no backend passes `eligible`.
    fn pick(&self, len: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}
