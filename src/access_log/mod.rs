//! What is written about each request once it ended: the access log line (when the access log is on), and a line
//! for a failure, at the level its side deserves.
//!
//! The access log has a line for every answer, `lb`'s own too (a refused head: 400, 414, 431; 408; 502, 503, 504;
//! 499 for a client that left), naming the backend tried when there was one; a request that got no answer at all
//! (the client closed before its head was whole) has none. Lines go to stdout, apart from the process log (stderr):
//! one stream that holds only access lines, in one `format` (`format`), is what log shippers and `awk` want, and it
//! does not depend on `--log-level`. A line is formatted in a buffer the worker thread keeps and handed, whole, to a
//! writer thread (`sink`), so that a stdout nobody reads drops lines rather than stalling traffic; it costs nothing
//! when the log is off.
//!
//! A backend's failure is a warning, at most one a second per backend and kind, then a sum (`log_limit`): a dead
//! backend costs one line a second, not one per request. The client's own doing (it went away, it was too slow) is a
//! debug line.

mod date;
mod format;
mod sink;

pub use sink::flush;

pub use format::Line;

use std::cell::RefCell;
use std::net::SocketAddr;

use crate::config::AccessLogFormat;
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

thread_local! {
    /// The line being written, kept for the next one (each worker thread has its own).
    static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes one access log line to stdout, through the writer thread (an error writing it, such as a closed stdout, is
/// not the request's).
pub fn write(format: AccessLogFormat, line: &Line<'_>) {
    let now = date::Utc::now();
    BUFFER.with_borrow_mut(|out| {
        out.clear();
        format::write(out, format, line, now);
        sink::append(out.as_bytes());
        if out.capacity() > 16 * 1024 {
            *out = String::new();
        }
    });
}

/// One line per failure (see the module docs).
pub fn failure(request: &Request<'_>, error: &ProxyError) {
    let failure = error.failure;
    let status = failure.status().as_u16();
    let (client, method, target) = (request.peer, &request.head.method, request.target());
    if failure == Failure::NoRoute {
        tracing::debug!(%client, %method, target, status, "no route takes the request and there is no default pool");
        return;
    }
    if failure == Failure::Full {
        // `Tried::pick_next` said so already, once a second at most.
        tracing::debug!(%client, %method, target, status, "every backend at max_connections");
        return;
    }
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
