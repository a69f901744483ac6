//! Our own HTTP/1.1 engine: the proxy's hot path.
//!
//! hyper parses a request into a header map, hands it to a service on another task and re-encodes it; a proxy
//! needs none of that. This engine reads a head into one buffer, checks it strictly, writes the rewritten head for
//! the other side straight from the buffer's bytes, and then moves the body through without looking at it more
//! than its framing requires. hyper stays for the small things off the hot path (health checks, the demo).
//!
//! - `request` / `response`: parse and judge a head (framing, Host, limits); refusals carry their status.
//!   `uri`: the RFC 3986 bytes of request targets and authorities.
//! - `chunked`: a strict streaming reader of the chunked coding, which finds where a body ends.
//! - `write`: the heads each side gets (hop-by-hop headers dropped, forwarding headers added).
//! - `scan`: where a head ends, found in linear time however the head arrives.
//! - `body`: moving a body from one socket to the other in its framing; `stall`: its inactivity timeout;
//!   `socket`: reads that know when they emptied the socket (no wasted read before each wait).

pub mod body;
pub mod buffers;
pub mod chunked;
pub mod client;
#[cfg(test)]
mod differential;
pub mod request;
pub mod response;
mod scan;
pub mod socket;
pub mod stall;
pub mod transport;
mod uri;
pub mod write;

use std::ops::Range;

pub use scan::HeadScan;

/// The most header fields in one head; beyond it: 431 (request) or 502 (response).
pub const MAX_HEADERS: usize = 128;

/// One header field: ranges of its name and value within the head's bytes.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all.
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// The range of `part` within `buf`; empty when `part` is not a slice of `buf` (httparse hands out a static empty
/// string for a missing reason phrase, or one it did not take as text).
fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= buf.len() && !part.is_empty() => start..end,
        _ => 0..0,
    }
}

/// A Content-Length value: digits only, no sign, no list, no overflow.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a `Connection` value names headers (anything but the `close` and `keep-alive` options), which are then
/// hop-by-hop too.
fn names_headers(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        !item.is_empty()
            && !item.eq_ignore_ascii_case(b"close")
            && !item.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
