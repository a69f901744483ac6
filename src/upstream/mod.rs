//! How the data plane reaches backends: what it routes by, and the connections it keeps to them.
//!
//! - `snapshot`: the immutable routing state (backends, the balancer built over them, settings), published through
//!   an `ArcSwap`; a new snapshot carries each backend's live state over by identity.
//! - `pool`: keep-alive connections to backends, one pool per worker thread (no locks on the hot path).
//!
//! A backend's identity and live state are `crate::backend`'s (below this module and `balance`, which both read
//! them); [`Backend`] is named here too for the proxy, which reaches backends through this module.

mod pool;
mod snapshot;

pub use crate::backend::Backend;
pub use pool::{KeepAlive, Lease, Pool, Reuse};
pub use snapshot::{Routing, Snapshot};
