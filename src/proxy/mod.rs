//! One request's journey: pick a backend, forward the request, retry where that is safe, relay the answer (or the
//! tunnel an upgrade turns the exchange into), and say how it ended.
//!
//! - `retry`: which backends a request goes to and how often (the retry rule, the failures to connect).
//! - `relay`: one attempt on one backend: request and response on the wire, keep-alive on the backend side;
//!   `informational`: the 1xx answers that come before the final one.
//! - `tunnel`: the exchange after a `101 Switching Protocols`: bytes both ways until both sides are done.
//! - `error`: why a request could not be proxied, as a kind (`crate::failure`) and the backend it happened on.
//!
//! The proxy never writes an answer of its own and never closes the client connection: it returns an [`Outcome`]
//! (delivered, failed before anything reached the client, or broken after the answer started), and the connection
//! answers 502/503/504, lingers, or resets. Failures are logged here only where they lead to a retry (at most one
//! line a second per backend and kind, `crate::log_limit`); the connection logs the request's end.

mod error;
mod informational;
mod relay;
mod retry;
mod tunnel;

use http::StatusCode;

pub use error::ProxyError;

use crate::h1::client::Client;
use crate::h1::request::RequestHead;
use crate::h1::transport::Transport;
use crate::worker::Worker;

/// How a request's journey ended.
pub enum Outcome {
    /// A backend's answer reached the client whole (for an upgrade: the `101`, and the tunnel after it ended).
    Delivered {
        status: StatusCode,
        backend: u64,
        /// The answer left the client connection able to carry another request (and said so).
        keep_alive: bool,
        /// The whole request (its body too) was read from the client.
        request_read: bool,
    },
    /// Nothing reached the client: it gets the error's status (unless it is gone).
    Failed(ProxyError),
    /// The answer had started and broke, or the client is gone: the connection must end, with a reset.
    Broken(ProxyError),
}

/// Proxies one request whose head (`raw`, parsed as `head`) was read from `client`.
pub async fn handle<T: Transport>(
    worker: &Worker,
    client: &mut Client<T>,
    head: &RequestHead,
    raw: &[u8],
) -> Outcome {
    let snapshot = worker.routing().load_full();
    let mut out = worker.buffers().vec();
    let outcome = retry::attempts(worker, &snapshot, client, head, raw, &mut out).await;
    worker.buffers().recycle_vec(out);
    outcome
}
