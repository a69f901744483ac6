//! What is written about each request once it ended: the access log line (when `access_log` is on), and a line
//! for a failure, at the level its side deserves.
//!
//! A backend's failure is a warning, at most one a second per backend and kind, then a sum (`log_limit`): a dead
//! backend costs one line a second, not one per request. The client's own doing (it went away, it was too slow) is a
//! debug line.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::failure::Failure;
use crate::h1::request::RequestHead;
use crate::log_limit::{self, Subject};
use crate::proxy::ProxyError;

/// The request a line is about.
pub struct Request<'a> {
    pub peer: SocketAddr,
    pub head: &'a RequestHead,
    pub raw: &'a [u8],
}

impl Request<'_> {
    fn target(&self) -> &str {
        std::str::from_utf8(&self.raw[self.head.target.clone()]).unwrap_or("?")
    }
}

/// The access log line: `peer "METHOD target HTTP/1.x" status backend=ID 1.234ms`.
pub fn exchange(request: &Request<'_>, status: StatusCode, backend: Option<u64>, took: Duration) {
    let backend = backend.map_or_else(|| "-".to_owned(), |id| id.to_string());
    tracing::info!(
        target: "lb::access",
        "{} \"{} {} HTTP/1.{}\" {} backend={backend} {:.3}ms",
        request.peer,
        request.head.method,
        request.target(),
        request.head.minor,
        status.as_u16(),
        took.as_secs_f64() * 1000.0,
    );
}

/// One line per failure (see the module docs).
pub fn failure(request: &Request<'_>, error: &ProxyError) {
    let failure = error.failure;
    let status = failure.status().as_u16();
    let (client, method, target) = (request.peer, &request.head.method, request.target());
    if !failure.blames_backend()
        && failure != Failure::NoBackend
        && failure != Failure::LocalShortage
    {
        tracing::debug!(%client, %method, target, %error, status, "request ended by the client");
        return;
    }
    let subject = error.backend.map_or(Subject::Backends, Subject::Backend);
    let key = log_limit::Key {
        subject,
        what: "requests failed",
        reason: failure.as_str(),
    };
    if log_limit::first(key) {
        tracing::warn!(%client, %method, target, status, "request failed: {error}");
    }
}
