//! Backends and how the data plane reaches them.
//!
//! - `backend`: a backend's identity (from config) and its live, shared state (health, counters).
//! - `snapshot`: the immutable routing state (backends + balancer) published through an `ArcSwap`.
//! - `pool`: keep-alive connections to backends, one pool per worker thread (no locks on the hot path).

mod backend;
mod pool;
mod snapshot;

pub use backend::Backend;
pub use pool::{KeepAlive, Lease, Pool, Reuse};
pub use snapshot::{Routing, Snapshot};
