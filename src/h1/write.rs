//! The heads each side gets: hop-by-hop headers dropped, framing redone, forwarding headers added.
//!
//! RFC 9110 §7.6.1: `Connection` and every header it names are meant for the next hop only, as are `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and the non-standard `Proxy-Connection`; each hop states its own
//! framing and connection handling. The backend learns who the client was from `X-Forwarded-For` (appended to, so
//! a chain of proxies stays readable), `X-Forwarded-Proto`, `X-Forwarded-Host` and RFC 7239 `Forwarded`
//! (appended). Heads are written straight from the bytes that were read: no header map is built.
//!
//! A request header whose name is one of those with `_` for `-` (`X_Forwarded_For`, `Content_Length`...) is
//! dropped, as nginx does: a CGI-style backend maps `-` and `_` alike (`HTTP_X_FORWARDED_FOR`), so such a header
//! would stand beside, or in for, the one we set or removed.

use std::io::Write;
use std::net::IpAddr;

use http::StatusCode;

use super::request::{upgrade_protocols, RequestHead};
use super::response::ResponseHead;
use super::{contains_token, is_token_char, BodyLength, Header};

const HOP_BY_HOP: [&[u8]; 8] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-connection",
    // HTTP/2's settings for an `Upgrade: h2c` (RFC 9113 §3.2.1: connection-specific), which we never forward.
    b"http2-settings",
];

pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
}

/// The request headers we set, replace or remove by name whose names have a `-` (`Host` and `Forwarded` have none,
/// so nothing can alias them by `_`).
const ALIASED: [&[u8]; 7] = [
    b"content-length",
    b"transfer-encoding",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"keep-alive",
    b"proxy-connection",
];

/// Whether `name` has a `_` and is one of [`ALIASED`] with `_` for some `-` (case-insensitive).
pub fn is_underscore_alias(name: &[u8]) -> bool {
    name.contains(&b'_')
        && ALIASED.iter().any(|ours| {
            ours.len() == name.len()
                && ours
                    .iter()
                    .zip(name)
                    .all(|(&o, &n)| o == n.to_ascii_lowercase() || (o == b'-' && n == b'_'))
        })
}

/// Whether a `Connection` header of this head names `name` (so it is hop-by-hop too).
fn named_by_connection(buf: &[u8], headers: &[Header], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| buf[h.name.clone()].eq_ignore_ascii_case(b"connection"))
        .any(|h| contains_token(&buf[h.value.clone()], name))
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a client reached us, as the backend learns it (`X-Forwarded-Proto`, `Forwarded: proto=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    #[allow(dead_code)] // the TLS transport's (next issue)
    Https,
}

/// The request head the backend gets, for a request from `client` that came over `proto` (the transport's
/// scheme). `backend` is the Host used when the client sent none (HTTP/1.0).
pub fn request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client: IpAddr,
    proto: Scheme,
    backend: &str,
) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = &buf[head.target.clone()];
    out.extend_from_slice(if target.is_empty() { b"/" } else { target });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = head.host.clone().map(|r| &buf[r]);
    header(out, b"host", host.unwrap_or(backend.as_bytes()));

    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    for field in &head.headers {
        let name = &buf[field.name.clone()];
        let value = &buf[field.value.clone()];
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for.push(value);
        } else if name.eq_ignore_ascii_case(b"forwarded") {
            forwarded.push(value);
        } else if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || is_underscore_alias(name)
            || (head.connection_names && named_by_connection(buf, &head.headers, name))
        {
            continue;
        } else {
            header(out, name, value);
        }
    }
    if let Some(upgrade) = head.upgrade_value(buf) {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        for (i, protocol) in upgrade_protocols(upgrade).enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(protocol);
        }
        out.extend_from_slice(b"\r\n");
    }
    // The framing is stated by us, from what we parsed: no header the client named in `Connection` (nor a
    // duplicate) can make the backend read the body differently from how we send it.
    match head.body {
        BodyLength::Chunked => header(out, b"transfer-encoding", b"chunked"),
        BodyLength::Length(length) => write_length(out, length),
        BodyLength::Empty if head.declared_length => write_length(out, 0),
        BodyLength::Empty | BodyLength::UntilClose => {}
    }

    let ip = client.to_canonical();
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in forwarded_for.iter().filter(|v| !v.trim_ascii().is_empty()) {
        out.extend_from_slice(value.trim_ascii());
        out.extend_from_slice(b", ");
    }
    write_ip(out, ip);
    out.extend_from_slice(b"\r\n");
    // Whole constant lines, one per scheme: they cost no copy call of their own.
    out.extend_from_slice(match proto {
        Scheme::Http => b"x-forwarded-proto: http\r\n".as_slice(),
        Scheme::Https => b"x-forwarded-proto: https\r\n".as_slice(),
    });
    if let Some(host) = host {
        header(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"forwarded: ");
    for value in forwarded.iter().filter(|v| !v.trim_ascii().is_empty()) {
        out.extend_from_slice(value.trim_ascii());
        out.extend_from_slice(b", ");
    }
    match ip {
        IpAddr::V4(_) => {
            out.extend_from_slice(b"for=");
            write_ip(out, ip);
        }
        // An IPv6 address is a quoted string with brackets (RFC 7239 §6).
        IpAddr::V6(_) => {
            out.extend_from_slice(b"for=\"[");
            write_ip(out, ip);
            out.extend_from_slice(b"]\"");
        }
    }
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        if host.iter().all(|&b| is_token_char(b)) {
            out.extend_from_slice(b";host=");
            out.extend_from_slice(host);
        } else if !host.iter().any(|&b| b == b'"' || b == b'\\') {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(host);
            out.push(b'"');
        }
    }
    out.extend_from_slice(match proto {
        Scheme::Http => b";proto=http\r\n\r\n".as_slice(),
        Scheme::Https => b";proto=https\r\n\r\n".as_slice(),
    });
}

fn write_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = length;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Writes an address in its usual text form; IPv4 without the formatting machinery (it is on every request).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// How the client gets a response's body and connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientFraming {
    /// Chunked to the client (an HTTP/1.1 client of a chunked response).
    pub chunked: bool,
    /// The client connection stays open after this response.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.0 (so keep-alive must be said out loud).
    pub http10: bool,
    /// The body goes with the backend's own transfer codings (`gzip, chunked`), stated again as they came.
    pub codings: bool,
}

/// The response head the client gets. An informational (1xx) head is written with its own headers only.
pub fn response_head(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead, framing: ClientFraming) {
    let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    let reason = &buf[head.reason.clone()];
    if reason.is_empty() {
        out.extend_from_slice(head.status.canonical_reason().unwrap_or("").as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
    for field in &head.headers {
        let name = &buf[field.name.clone()];
        // Content-Length is stated by us below, from what we parsed. A `101` keeps the protocol it switches to.
        let kept_upgrade = switching && name.eq_ignore_ascii_case(b"upgrade");
        let dropped = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || (head.connection_names && named_by_connection(buf, &head.headers, name));
        if dropped && !kept_upgrade {
            continue;
        }
        header(out, name, &buf[field.value.clone()]);
    }
    if head.status.is_informational() {
        if switching {
            out.extend_from_slice(b"connection: upgrade\r\n");
        }
        out.extend_from_slice(b"\r\n");
        return;
    }
    match (head.body, head.content_length) {
        (BodyLength::Length(length), _) => write_length(out, length),
        // HEAD and 304 keep the length of the body they stand for; an empty body says 0. Never on 204.
        (BodyLength::Empty, Some(length)) if head.status != StatusCode::NO_CONTENT => {
            write_length(out, length)
        }
        _ => {}
    }
    if framing.codings {
        out.extend_from_slice(b"transfer-encoding: ");
        let codings = head
            .headers
            .iter()
            .filter(|h| buf[h.name.clone()].eq_ignore_ascii_case(b"transfer-encoding"))
            .map(|h| buf[h.value.clone()].trim_ascii())
            .filter(|v| !v.is_empty());
        for (i, value) in codings.enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"\r\n");
    } else if framing.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !framing.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if framing.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response of our own (an error): status line, a short text body, `connection: close` if `close`. Answers the
/// body's length.
pub fn error_response(out: &mut Vec<u8>, status: StatusCode, close: bool) -> usize {
    let reason = status.canonical_reason().unwrap_or("");
    let body_len = 3 + 1 + reason.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {body_len}\r\n",
        code = status.as_u16()
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let _ = write!(out, "\r\n{} {reason}\n", status.as_u16());
    body_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::{request, response};

    fn forwarded(raw: &str, client: &str) -> String {
        let (head, _) = request::parse(raw.as_bytes()).unwrap().unwrap();
        let mut out = Vec::new();
        request_head(
            &mut out,
            raw.as_bytes(),
            &head,
            client.parse().unwrap(),
            Scheme::Http,
            "10.0.0.1:80",
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_drops_hop_by_hop_and_adds_forwarding() {
        let raw = "POST /p?q HTTP/1.1\r\nHost: example.com:8000\r\nConnection: keep-alive, X-Secret\r\n\
                   X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n\
                   Transfer-Encoding: chunked\r\nX-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\n\
                   X-Kept: yes\r\n\r\n";
        assert_eq!(
            forwarded(raw, "127.0.0.1"),
            "POST /p?q HTTP/1.1\r\nhost: example.com:8000\r\nX-Kept: yes\r\ntransfer-encoding: chunked\r\n\
             x-forwarded-for: 203.0.113.7, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.com:8000\r\n\
             forwarded: for=203.0.113.7, for=127.0.0.1;host=\"example.com:8000\";proto=http\r\n\r\n"
        );
    }

    #[test]
    fn underscore_aliases_of_our_headers_are_dropped() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nx_forwarded_proto: https\r\n\
                   X-Forwarded_Host: evil\r\nCONTENT_LENGTH: 5\r\nTransfer_Encoding: chunked\r\n\
                   Keep_Alive: 1\r\nProxy_Connection: x\r\nX_Request_Id: 7\r\nX_Forwarded_Fo: kept\r\n\
                   X-Forwarded-For_: kept\r\n\r\n";
        assert_eq!(
            forwarded(raw, "127.0.0.1"),
            "GET / HTTP/1.1\r\nhost: a\r\nX_Request_Id: 7\r\nX_Forwarded_Fo: kept\r\n\
             X-Forwarded-For_: kept\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: a\r\nforwarded: for=127.0.0.1;host=a;proto=http\r\n\r\n"
        );
        assert!(is_underscore_alias(b"x_forwarded_for"));
        assert!(!is_underscore_alias(b"x-forwarded-for"));
        assert!(!is_underscore_alias(b"x_forwarded_fox"));
    }

    #[test]
    fn http10_without_host_gets_the_backend_as_host() {
        let out = forwarded("GET / HTTP/1.0\r\n\r\n", "::1");
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nhost: 10.0.0.1:80\r\n"),
            "{out}"
        );
        assert!(out.contains("x-forwarded-for: ::1\r\n"), "{out}");
        assert!(
            out.contains("forwarded: for=\"[::1]\";proto=http\r\n"),
            "{out}"
        );
    }

    #[test]
    fn response_redoes_framing() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: x-a\r\n\
                   X-A: 1\r\nX-B: 2\r\n\r\n";
        let (head, _) = response::parse(raw.as_bytes(), false).unwrap().unwrap();
        let mut out = Vec::new();
        let framing = ClientFraming {
            chunked: false,
            keep_alive: false,
            http10: true,
            codings: false,
        };
        response_head(&mut out, raw.as_bytes(), &head, framing);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-B: 2\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn ipv4_addresses_are_written_plainly() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.40", "255.199.100.9"] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
    }

    #[test]
    fn error_responses_have_matching_lengths() {
        let mut out = Vec::new();
        error_response(&mut out, StatusCode::SERVICE_UNAVAILABLE, false);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
    }
}
