//! How the data plane reaches backends: what it routes by, and the connections it keeps to them.
//!
//! - `snapshot`: the immutable routing state (backends, the pools and routes over them, settings), published
//!   through an `ArcSwap`; a new snapshot carries each backend's live state over by identity.
//! - `cluster`: one pool of backends (`[pools.NAME]` or the default pool) with the balancer built over it.
//! - `routes`: which pool a request goes to (`[[routes]]`, by host and path prefix).
//! - `connector`: a new connection to any backend (TCP, TLS, a PROXY header first), for the generic path and the
//!   health checks.
//! - `tls_client`: the TLS client setups (trust, client certificate, ALPN) of a snapshot's backends, built with it.
//! - `pool`: keep-alive connections to backends, one pool per worker thread (no locks on the hot path).
//!
//! A backend's identity and live state are `crate::backend`'s (below this module and `balance`, which both read
//! them); [`Backend`] is named here too for the proxy, which reaches backends through this module.

mod cluster;
pub mod connector;
mod pool;
mod routes;
mod snapshot;
mod tls_client;

pub use crate::backend::Backend;
pub use cluster::Cluster;
pub use connector::ConnectError;
pub use pool::{KeepAlive, Lease, Pool, Reuse};
pub use snapshot::{Routing, Snapshot};
