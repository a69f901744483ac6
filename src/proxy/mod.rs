//! One request's journey: pick a backend, forward the request, retry where that is safe, relay the answer (or the
//! tunnel an upgrade turns the exchange into), and say how it ended.
//!
//! - `retry`: which backends a request goes to and how often (the retry rule, the failures to connect).
//! - `relay`: one attempt on one backend: request and response on the wire, keep-alive on the backend side;
//!   `informational`: the 1xx answers that come before the final one.
//! - `tunnel`: the exchange after a `101 Switching Protocols`: bytes both ways until both sides are done.
//! - `outcome`: how the journey ended, and why a request could not be proxied (a kind from `crate::failure`, and
//!   the backend it happened on).
//!
//! The proxy never writes an answer of its own and never closes the client connection: it returns an [`Outcome`]
//! (delivered, failed before anything reached the client, or broken after the answer started), and the connection
//! answers 502/503/504, lingers, or resets. Failures are logged here only where they lead to a retry (at most one
//! line a second per backend and kind, `crate::log_limit`); the connection logs the request's end.

mod informational;
mod outcome;
mod relay;
mod retry;
mod tunnel;

pub use outcome::{Outcome, ProxyError};

use crate::h1::client::Client;
use crate::h1::request::RequestHead;
use crate::h1::transport::Transport;
use crate::upstream::Snapshot;
use crate::worker::Worker;

/// Proxies one request whose head (`raw`, parsed as `head`) was read from `client`, routed by `snapshot`.
pub async fn handle<T: Transport>(
    worker: &Worker,
    snapshot: &Snapshot,
    client: &mut Client<T>,
    head: &RequestHead,
    raw: &[u8],
) -> Outcome {
    let mut out = worker.buffers().vec();
    let outcome = retry::attempts(worker, snapshot, client, head, raw, &mut out).await;
    worker.buffers().recycle_vec(out);
    outcome
}
