//! One request's journey: pick a backend, forward the request, retry where that is safe, relay the answer (or the
//! tunnel an upgrade turns the exchange into), and say how it ended.
//!
//! - `retry`: which backends a request goes to and how often (the retry rule, the failures to connect).
//! - `relay`: one attempt on one backend: request and response on the wire, keep-alive on the backend side;
//!   `informational`: the 1xx answers that come before the final one.
//! - `tunnel`: the exchange after a `101 Switching Protocols`: bytes both ways until both sides are done.
//! - `outcome`: how the journey ended, and why a request could not be proxied (a kind from `crate::failure`, and
//!   the backend it happened on); what it recorded on its way (attempts, time to the response head, body bytes).
//! - `metered`: a writer that counts the bytes it passes on (the body bytes of the access log).
//!
//! The proxy never writes an answer of its own and never closes the client connection: it returns an [`Outcome`]
//! (delivered, failed before anything reached the client, or broken after the answer started), and the connection
//! answers 502/503/504, lingers, or resets. Failures are logged here only where they lead to a retry (at most one
//! line a second per backend and kind, `crate::log_limit`); the connection logs the request's end.

pub mod budget;
mod informational;
mod metered;
mod outcome;
mod relay;
mod retry;
mod tunnel;

pub use outcome::{Outcome, ProxyError, Record};
pub use retry::{is_idempotent, resent_elsewhere, Tried};

use tokio::time::Instant;

use crate::h1::client::Client;
use crate::h1::request::RequestHead;
use crate::h1::transport::Transport;
use crate::upstream::Snapshot;
use crate::worker::Worker;

/// Proxies one request whose head (`raw`, parsed as `head`) was read from `client` by `started`, routed by
/// `snapshot`. Counts the answer on its backend when one delivered it (the caller counts the others, `lb`'s own),
/// and fills `record`.
pub async fn handle<T: Transport>(
    worker: &Worker,
    snapshot: &Snapshot,
    client: &mut Client<T>,
    (head, raw): (&RequestHead, &[u8]),
    started: Instant,
    record: &mut Record,
) -> Outcome {
    let mut out = worker.buffers().vec();
    let request = retry::Request { head, raw, started };
    let outcome = retry::attempts(worker, snapshot, client, request, &mut out, record).await;
    worker.buffers().recycle_vec(out);
    outcome
}
