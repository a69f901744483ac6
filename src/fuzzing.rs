//! What the fuzz targets in `fuzz/` reach of the crate: a thin function per target over the real code. Not an API:
//! hidden from the docs and free to change with the targets.

use std::net::{IpAddr, Ipv4Addr};

pub use crate::config::{Config, ConfigError, Overrides};
pub use crate::h1::chunked::{ChunkError, ChunkedReader};
pub use crate::h1::request::{Refusal, RequestHead, MAX_HEAD as MAX_REQUEST_HEAD};
pub use crate::h1::response::{BadResponse, ResponseHead, MAX_HEAD as MAX_RESPONSE_HEAD};
pub use crate::h1::write::ClientFraming;
pub use crate::h1::{BodyLength, Header, MAX_HEADERS};

/// The Host the backend gets from [`forward_request`] when the client sent none.
pub const BACKEND: &str = "10.0.0.1:80";

/// `h1::request::parse`: the request head at the start of `buf`, if complete, and its length.
pub fn request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, Refusal> {
    crate::h1::request::parse(buf)
}

/// The head the backend gets for `head` (parsed from `buf`), from a client at 192.0.2.1.
pub fn forward_request(buf: &[u8], head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    crate::h1::write::request_head(
        &mut out,
        buf,
        head,
        client,
        crate::h1::write::Scheme::Http,
        BACKEND,
    );
    out
}

/// `h1::response::parse`.
pub fn response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, BadResponse> {
    crate::h1::response::parse(buf, head_request)
}

/// The head the client gets for `head` (parsed from `buf`).
pub fn forward_response(buf: &[u8], head: &ResponseHead, framing: ClientFraming) -> Vec<u8> {
    let mut out = Vec::new();
    crate::h1::write::response_head(&mut out, buf, head, framing);
    out
}

/// `config::from_text` without reading the files a config names (reading a config never sends a DNS query).
pub fn config(text: &str, toml: bool) -> Result<Config, ConfigError> {
    let name = if toml { "lb.toml" } else { "lb.json" };
    crate::config::offline(|| crate::config::from_text(name, text, toml, &Overrides::default()))
}

/// [`config`] on `data`, with what the config targets check: an accepted config has backends, workers and
/// statuses; an error is one printable line naming the file.
pub fn check_config(data: &[u8], toml: bool) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config(text, toml) {
        Ok(config) => {
            assert!(config.backends().next().is_some());
            assert!(config.workers >= 1);
            assert!(!config.health.statuses.is_empty());
        }
        Err(e) => {
            let line = e.to_string();
            let name = if toml { "lb.toml" } else { "lb.json" };
            assert!(line.starts_with(name), "{line}");
            // One line, nothing that moves a terminal's cursor.
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
}

pub use crate::config::ProxyVersion;
pub use crate::proxy_protocol::{Header as ProxyHeader, Malformed as MalformedProxyHeader};

/// `proxy_protocol::decode`: the PROXY header (v1 or v2) at the start of `buf`, if complete, and its length.
pub fn proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, MalformedProxyHeader> {
    crate::proxy_protocol::decode(buf)
}

/// `proxy_protocol::header`: what a backend with `send_proxy = version` gets first.
pub fn proxy_header_for(
    version: ProxyVersion,
    client: std::net::SocketAddr,
    local: std::net::SocketAddr,
) -> Vec<u8> {
    crate::proxy_protocol::header(version, client, local).to_vec()
}
