//! Reading a client's request head, strictly (RFC 9112).
//!
//! `httparse` splits the head; this module decides what it means and refuses anything two HTTP implementations
//! could read two ways: a body's length must be known one way only (a single, plain Content-Length, or a
//! Transfer-Encoding that ends in `chunked`, never both), HTTP/1.1 needs exactly one Host, and the head and the
//! request target are bounded. A refusal carries the status the client gets.
//! The request target and the authority (an absolute-form target's, or the Host header's) must follow RFC 3986 to
//! the byte (`uri`).

use std::ops::Range;

use http::{Method, StatusCode};

use super::uri::{valid_authority, valid_target, Empty};
use super::{
    contains_token, names_headers, offset, parse_content_length, BodyLength, Header, MAX_HEADERS,
};

/// Request heads larger than this get 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Request targets longer than this get 414 (nginx allows 8 KiB, HAProxy about 16 KiB).
pub const MAX_TARGET: usize = 16 * 1024;
/// Request lines (before their LF) longer than this get 414, complete or not: a client still sending one is refused
/// before its end, so a whole one must be too, or a request would be taken or refused depending on how it arrived.
pub const MAX_REQUEST_LINE: usize = MAX_TARGET + 1024;

/// A parsed request head. Ranges index the head's bytes.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// Origin-form target (`/path?query`, or `*`).
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<Header>,
    /// The Host header, or the authority of an absolute-form target (which wins, RFC 9112 §3.2.2).
    pub host: Option<Range<usize>>,
    pub body: BodyLength,
    /// The client sent a Content-Length (so a `Content-Length: 0` is stated again to the backend).
    pub declared_length: bool,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// A `Connection` header names other headers (which must then not be forwarded either).
    pub connection_names: bool,
    /// The request asks to switch protocols (HTTP/1.1, `Connection: upgrade` and one `Upgrade` naming a protocol
    /// other than `h2c`): the index of the `Upgrade` header in `headers` (an index rather than its range: the head is
    /// moved a few times per request, and stays small).
    pub upgrade: Option<u8>,
}

impl RequestHead {
    /// The `Upgrade` value of a request that asks to switch protocols (see [`RequestHead::upgrade`]).
    pub fn upgrade_value<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        let header = self.headers.get(usize::from(self.upgrade?))?;
        Some(&buf[header.value.clone()])
    }
}

/// Why a head was refused, as the status to answer with and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

fn bad(reason: &'static str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, reason)
}

/// Parses the head at the start of `buf`: `Ok(None)` if it is not complete yet, else the head and its length.
pub fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, Refusal> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let length = match request.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return check_partial(buf).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    // httparse accepts a bare LF as a line end; a backend or a cache in front of us may not agree on where the
    // line ends, so only CRLF is taken.
    if buf[..length]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
    {
        return Err(bad("line not ended by CRLF"));
    }
    if length > MAX_HEAD {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ));
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("bad method"))?;
    let minor = request.version.unwrap_or(1);
    let target_str = request.path.unwrap_or_default();
    // `method SP target SP HTTP/1.x CR`: httparse took single spaces and a CR before the LF (checked above).
    let line = request.method.unwrap_or_default().len() + target_str.len() + 11;
    if target_str.len() > MAX_TARGET || line > MAX_REQUEST_LINE {
        return Err(refuse(StatusCode::URI_TOO_LONG, "request target too long"));
    }
    let mut target = offset(buf, target_str.as_bytes());
    let mut authority = None;
    if method == Method::CONNECT {
        return Err(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not supported",
        ));
    }
    match target_str.as_bytes().first() {
        Some(b'/') => {}
        Some(b'*') if target_str == "*" && method == Method::OPTIONS => {}
        _ => {
            let (auth, path) = split_absolute(target_str).ok_or(bad("bad request target"))?;
            if !valid_authority(&target_str.as_bytes()[auth.clone()], Empty::Refused) {
                return Err(bad("bad authority in the request target"));
            }
            authority = Some(target.start + auth.start..target.start + auth.end);
            target = target.start + path.start..target.start + path.end;
        }
    }
    if !valid_target(&buf[target.clone()]) {
        return Err(bad("bad byte in the request target"));
    }

    let mut headers = Vec::with_capacity(request.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut other_coding = false;
    let mut host: Option<Range<usize>> = None;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive = false;
    let mut connection_names = false;
    let mut connection_upgrade = false;
    // The index in `headers` of the first `Upgrade`, and how many there are.
    let (mut upgrade, mut upgrades) = (0, 0);
    for field in request.headers.iter() {
        let name = offset(buf, field.name.as_bytes());
        let value = offset(buf, field.value);
        let lower = field.name.as_bytes();
        if lower.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            content_length =
                Some(parse_content_length(field.value).ok_or(bad("bad Content-Length"))?);
        } else if lower.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in field.value.split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    continue;
                }
                if chunked_last {
                    // Anything after `chunked`, including a second `chunked`.
                    return Err(bad("chunked is not the last transfer coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_last = true;
                } else {
                    other_coding = true;
                }
            }
        } else if lower.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = Some(value.clone());
        } else if lower.eq_ignore_ascii_case(b"connection") {
            connection_names |= names_headers(field.value);
            close |= contains_token(field.value, b"close");
            keep_alive |= contains_token(field.value, b"keep-alive");
            connection_upgrade |= contains_token(field.value, b"upgrade");
        } else if lower.eq_ignore_ascii_case(b"upgrade") {
            upgrade = headers.len();
            upgrades += 1;
        }
        headers.push(Header { name, value });
    }

    let body = if transfer_encoding {
        if minor == 0 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if other_coding {
            return Err(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported transfer coding",
            ));
        }
        if !chunked_last {
            return Err(bad("Transfer-Encoding without chunked"));
        }
        if content_length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        BodyLength::Chunked
    } else {
        match content_length {
            None | Some(0) => BodyLength::Empty,
            Some(length) => BodyLength::Length(length),
        }
    };
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Err(bad("a request needs exactly one Host header"));
    }
    // Checked even when an absolute-form target's authority replaces it (RFC 9112 §3.2.2: a Host with an invalid
    // value is refused). An empty Host is what RFC 9110 §7.2 asks of a client whose target has no authority; it is
    // kept as it is (the backend gets an empty Host, no `host=` in Forwarded).
    if let Some(host) = &host {
        if !valid_authority(&buf[host.clone()], Empty::Allowed) {
            return Err(bad("bad Host header"));
        }
    }
    // RFC 9110 §7.8: an HTTP/1.0 request's Upgrade is ignored; `h2c` is HTTP/2 for us to speak, not a tunnel.
    let upgrade = match (minor, connection_upgrade, upgrades) {
        (1, true, 1) => {
            let value = &buf[headers[upgrade].value.clone()];
            let offers = valid_upgrade(value) && upgrade_protocols(value).next().is_some();
            // An index below MAX_HEADERS (128).
            offers.then(|| u8::try_from(upgrade).unwrap_or(u8::MAX))
        }
        _ => None,
    };
    let head = RequestHead {
        method,
        target,
        minor,
        headers,
        host: authority.or(host),
        body,
        declared_length: content_length.is_some(),
        keep_alive: if minor == 1 {
            !close
        } else {
            keep_alive && !close
        },
        connection_names,
        upgrade,
    };
    Ok(Some((head, length)))
}

/// The protocols an `Upgrade` value names that a tunnel may carry: every one but `h2c`.
pub fn upgrade_protocols(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    protocols(value).filter(|p| !p.eq_ignore_ascii_case(b"h2c"))
}

/// The entries of an `Upgrade` value.
pub fn protocols(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// Whether every entry of an `Upgrade` value is `protocol-name ["/" protocol-version]`, both tokens (RFC 9110
/// §7.8), and there is one.
fn valid_upgrade(value: &[u8]) -> bool {
    let token = |t: &[u8]| !t.is_empty() && t.iter().all(|&b| super::is_token_char(b));
    let valid = |p: &[u8]| match p.iter().position(|&b| b == b'/') {
        Some(slash) => token(&p[..slash]) && token(&p[slash + 1..]),
        None => token(p),
    };
    let empty_entries = value
        .split(|&b| b == b',')
        .all(|p| p.trim_ascii().is_empty());
    !empty_entries && protocols(value).all(valid)
}

/// For a head still incomplete: whether it has already gone past a limit.
fn check_partial(buf: &[u8]) -> Result<(), Refusal> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.is_none() && buf.len() > MAX_REQUEST_LINE {
        return Err(refuse(StatusCode::URI_TOO_LONG, "request target too long"));
    }
    if buf.len() >= MAX_HEAD {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        ));
    }
    Ok(())
}

/// Splits `http://authority/path?query` into the ranges of the authority and of the origin-form rest.
fn split_absolute(target: &str) -> Option<(Range<usize>, Range<usize>)> {
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let start = scheme_end + 3;
    let end = target[start..]
        .find(['/', '?'])
        .map_or(target.len(), |i| start + i);
    let authority = &target[start..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // The rest must start with '/': `http://host?q` has no path; we cannot point into the buffer for a `/`
    // that is not there, so such a target is refused rather than rewritten.
    let rest = if end == target.len() {
        // `http://host`: the path is empty, served as `/` by the writer.
        end..end
    } else if target.as_bytes()[end] == b'/' {
        end..target.len()
    } else {
        return None;
    };
    Some((start..end, rest))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> RequestHead {
        parse(raw.as_bytes())
            .expect("accepted")
            .expect("complete")
            .0
    }

    fn refused(raw: &str) -> StatusCode {
        parse(raw.as_bytes()).expect_err("refused").status
    }

    #[test]
    fn a_plain_get() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nNEXT";
        let (head, length) = parse(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(length, raw.len() - 4);
        assert_eq!(&raw[head.target.clone()], "/a?b=1");
        assert_eq!(&raw[head.host.clone().unwrap()], "x");
        assert_eq!(head.body, BodyLength::Empty);
        assert!(head.keep_alive);
        assert_eq!(head.headers.len(), 2);
    }

    #[test]
    fn incomplete_heads_wait() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn keep_alive_rules_per_version() {
        assert!(!ok("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_lengths() {
        let head = ok("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(head.body, BodyLength::Length(12));
        let head = ok("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head.body, BodyLength::Chunked);
    }

    #[test]
    fn absolute_form_gives_the_host() {
        let raw = "GET http://example.com:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n";
        let head = ok(raw);
        assert_eq!(&raw[head.target.clone()], "/p?q");
        assert_eq!(&raw[head.host.clone().unwrap()], "example.com:81");
    }

    #[test]
    fn framing_that_could_be_read_two_ways_is_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\n\r\n",
        ];
        for raw in cases {
            assert_eq!(refused(raw), StatusCode::BAD_REQUEST, "{raw:?}");
        }
    }

    #[test]
    fn targets_and_authorities_are_held_to_rfc_3986() {
        for raw in [
            "GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://a/b#c HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://a:99999x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://a\"b/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http:/// HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n",
            // The authority wins over Host, which must still be valid (RFC 9112 §3.2.2).
            "GET http://a/ HTTP/1.1\r\nHost: a,b\r\n\r\n",
        ] {
            assert_eq!(refused(raw), StatusCode::BAD_REQUEST, "{raw:?}");
        }
        let raw = "GET http://[::1]:81/caf%C3%A9?q=/:@ HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(&raw[head.host.unwrap()], "[::1]:81");
        assert_eq!(&raw[head.target], "/caf%C3%A9?q=/:@");
        let raw = "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
        assert_eq!(&raw[ok(raw).host.unwrap()], "example.com:8080");
        ok("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn an_empty_host_is_kept_when_the_target_has_no_authority() {
        let raw = "GET / HTTP/1.1\r\nHost: \r\n\r\n";
        assert_eq!(ok(raw).host.map(|h| h.len()), Some(0));
        let raw = "GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n";
        assert_eq!(&raw[ok(raw).host.unwrap()], "a");
    }

    #[test]
    fn unknown_codings_are_not_implemented() {
        let raw = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(refused(raw), StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn limits() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_TARGET)
        );
        assert_eq!(refused(&long_target), StatusCode::URI_TOO_LONG);
        let unfinished_target = format!("GET /{}", "a".repeat(MAX_TARGET + 2000));
        assert_eq!(refused(&unfinished_target), StatusCode::URI_TOO_LONG);
        // A long method makes a line refused while it arrives; whole, it is refused alike.
        let method = "M".repeat(MAX_REQUEST_LINE - MAX_TARGET - 10);
        let long_line = format!(
            "{method} /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_TARGET - 1)
        );
        let line_end = long_line.find('\n').unwrap();
        assert_eq!(line_end, MAX_REQUEST_LINE + 1);
        assert_eq!(refused(&long_line[..line_end]), StatusCode::URI_TOO_LONG);
        assert_eq!(refused(&long_line), StatusCode::URI_TOO_LONG);
        assert!(ok(&long_line[1..]).body == BodyLength::Empty);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(refused(&big), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(refused(&many), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
