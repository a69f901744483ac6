//! The generic path: HTTP/2 clients, and HTTP/1.1 clients when some backend is not plain HTTP/1.1 (TLS, h2c/h2,
//! a PROXY header), served by hyper and proxied with the fast path's balancer, retry rule, guards, counters and
//! access log lines.
//!
//! - `server`: the entry points ([`serve`] for HTTP/2, [`serve_h1`] for HTTP/1.1) and the limits against floods.
//! - `forward`: the hyper service: route, forward, count, log; `attempts`: pick and retry, lease and send;
//!   `conn`: one client connection as its requests share it.
//! - `clients`: per-worker senders to backends (HTTP/1.1 kept alive, HTTP/2 multiplexed).
//! - `headers`: the heads each side gets (hop-by-hop, forwarding headers, target form).
//! - `body`: the backend's body on its way to the client (counted, trailers included); `lb`'s own answers.
//! - `logged`: a hyper request as the access log reads it.
//! - `tunnel`: bytes both ways after an upgrade, until both sides are done or `timeouts.tunnel_idle`.
//! - `rewind`: a transport with the bytes our HTTP/1.1 engine already read put back in front.
//!
//! Everything runs on the worker's current-thread runtime (`spawn_local`): nothing here is `Send`, nothing is
//! shared with another worker.

mod attempts;
mod body;
mod clients;
mod conn;
mod forward;
mod headers;
mod logged;
mod rewind;
mod server;
mod tunnel;

use std::future::Future;

pub use conn::Ends;
pub use rewind::Rewind;
pub use server::{serve, serve_h1};

/// The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the first bytes of a connection are (the start of) the HTTP/2 preface: at least `PRI ` of it, which no
/// HTTP/1.1 request begins with (`PRI` is not a method anything serves).
pub fn is_preface(first: &[u8]) -> bool {
    let n = first.len().min(PREFACE.len());
    n >= 4 && first[..n] == PREFACE[..n]
}

/// hyper's executor on a worker: tasks run on the worker's own thread (`spawn_local`), so they need not be `Send`.
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_a_request() {
        assert!(is_preface(PREFACE));
        assert!(is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"));
        assert!(is_preface(b"PRI * HT"));
        assert!(!is_preface(b"PRI"));
        assert!(!is_preface(b"POST / HTTP/1.1\r\n"));
        assert!(!is_preface(b"PRI * HTTP/1.1\r\n"));
    }
}
