//! The request head rules of `request::parse` as a model, with httparse's lexing written out.
//!
//! ```text
//! request-head = *( CRLF / LF ) request-line *field-line line-end
//! request-line = method SP target SP version line-end
//! method       = 1*tchar
//! target       = 1*( %x21-7E / %x80-FF )              ; valid UTF-8; its form and bytes are judged below
//! version      = "HTTP/1.0" / "HTTP/1.1"
//! field-line   = 1*tchar ":" *( SP / HTAB ) value line-end
//! value        = *( HTAB / %x20-7E / %x80-FF )        ; less its trailing SP / HTAB
//! line-end     = CRLF / LF                            ; a CR not before a LF is an error at once
//! ```
//!
//! A byte outside this lexing is a 400 at once, complete head or not; the 129th field line is a 431. Bytes running
//! out is "incomplete" unless a limit is already passed: a first line over 17 KiB (414), 64 KiB in all (431). Then,
//! on a complete head, the first rule that fails decides: a LF without its CR (400); the head over 64 KiB (431);
//! the target over 16 KiB or the request line (before its LF) over 17 KiB (414); CONNECT (501); the target form: origin (`/...`), `*` for OPTIONS, or absolute
//! (`http://` or `https://`, an authority, then nothing or a path starting with `/`) (400); the authority's and the
//! path's bytes (400); field by field, a second or malformed Content-Length, or a coding after `chunked` (400);
//! Transfer-Encoding in HTTP/1.0 (400), with a coding other than chunked (501), not ending in chunked or with a
//! Content-Length (400); not exactly one Host in HTTP/1.1, at most one in 1.0 (400); a Host not empty and not a
//! valid authority (400).

use super::{mutate, shown, Rng};
use crate::h1::request::{self, MAX_HEAD, MAX_REQUEST_LINE, MAX_TARGET};
use crate::h1::{BodyLength, MAX_HEADERS};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Incomplete,
    Refused(u16),
    Head {
        length: usize,
        method: String,
        /// The origin-form part (for an absolute-form target, its path and query).
        target: Vec<u8>,
        minor: u8,
        host: Option<Vec<u8>>,
        body: BodyLength,
        keep_alive: bool,
    },
}

enum Stop {
    More,
    Bad,
    TooMany,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Result<u8, Stop> {
        self.buf.get(self.at).copied().ok_or(Stop::More)
    }

    fn expect(&mut self, byte: u8) -> Result<(), Stop> {
        if self.peek()? != byte {
            return Err(Stop::Bad);
        }
        self.at += 1;
        Ok(())
    }

    fn line_end(&mut self) -> Result<(), Stop> {
        if self.peek()? == b'\r' {
            self.at += 1;
        }
        self.expect(b'\n')
    }

    /// One or more tchar, then `end` (taken, not returned).
    fn token_then(&mut self, end: u8) -> Result<&'a [u8], Stop> {
        let start = self.at;
        while self.peek()? != end || self.at == start {
            if !is_tchar(self.peek()?) {
                return Err(Stop::Bad);
            }
            self.at += 1;
        }
        self.at += 1;
        Ok(&self.buf[start..self.at - 1])
    }
}

struct Lexed<'a> {
    length: usize,
    /// The request line's length before its LF.
    line: usize,
    method: &'a [u8],
    target: &'a [u8],
    minor: u8,
    fields: Vec<(&'a [u8], &'a [u8])>,
}

fn lex(buf: &[u8]) -> Result<Lexed<'_>, Stop> {
    let mut c = Cursor { buf, at: 0 };
    while matches!(c.peek()?, b'\r' | b'\n') {
        c.line_end()?;
    }
    let line_start = c.at;
    let method = c.token_then(b' ')?;
    let start = c.at;
    while matches!(c.peek()?, 0x21..=0x7e | 0x80..) {
        c.at += 1;
    }
    let target = &buf[start..c.at];
    c.expect(b' ')?;
    if target.is_empty() || std::str::from_utf8(target).is_err() {
        return Err(Stop::Bad);
    }
    for &byte in b"HTTP/1." {
        c.expect(byte)?;
    }
    let minor = match c.peek()? {
        b'0' => 0,
        b'1' => 1,
        _ => return Err(Stop::Bad),
    };
    c.at += 1;
    c.line_end()?;
    let line = c.at - 1 - line_start;
    let mut fields = Vec::new();
    while !matches!(c.peek()?, b'\r' | b'\n') {
        let name = c.token_then(b':')?;
        while matches!(c.peek()?, b' ' | b'\t') {
            c.at += 1;
        }
        let start = c.at;
        while !matches!(c.peek()?, b'\r' | b'\n') {
            if !matches!(c.peek()?, b'\t' | 0x20..=0x7e | 0x80..) {
                return Err(Stop::Bad);
            }
            c.at += 1;
        }
        let mut value = &buf[start..c.at];
        while let [rest @ .., b' ' | b'\t'] = value {
            value = rest;
        }
        c.line_end()?;
        if fields.len() == MAX_HEADERS {
            return Err(Stop::TooMany);
        }
        fields.push((name, value));
    }
    c.line_end()?;
    Ok(Lexed {
        length: c.at,
        line,
        method,
        target,
        minor,
        fields,
    })
}

fn model(buf: &[u8]) -> Outcome {
    let lexed = match lex(buf) {
        Ok(lexed) => lexed,
        Err(Stop::More) if !buf.contains(&b'\n') && buf.len() > MAX_REQUEST_LINE => {
            return Outcome::Refused(414)
        }
        Err(Stop::More) if buf.len() >= MAX_HEAD => return Outcome::Refused(431),
        Err(Stop::More) => return Outcome::Incomplete,
        Err(Stop::TooMany) => return Outcome::Refused(431),
        Err(Stop::Bad) => return Outcome::Refused(400),
    };
    judge(&lexed, &buf[..lexed.length]).unwrap_or_else(Outcome::Refused)
}

fn judge(lexed: &Lexed, head: &[u8]) -> Result<Outcome, u16> {
    let lines: Vec<&[u8]> = head.split(|&b| b == b'\n').collect();
    if !lines[..lines.len() - 1]
        .iter()
        .all(|line| line.ends_with(b"\r"))
    {
        return Err(400);
    }
    if lexed.length > MAX_HEAD {
        return Err(431);
    }
    let (method, target) = (lexed.method, lexed.target);
    if target.len() > MAX_TARGET || lexed.line > MAX_REQUEST_LINE {
        return Err(414);
    }
    if method == b"CONNECT" {
        return Err(501);
    }
    let (authority, path) = if target.starts_with(b"/") || (target == b"*" && method == b"OPTIONS")
    {
        (None, target)
    } else {
        let (authority, path) = absolute(target).ok_or(400u16)?;
        (Some(authority), path)
    };
    if authority.is_some_and(|a| a.is_empty() || !authority_ok(a)) || !path_ok(path) {
        return Err(400);
    }

    let (mut length, mut te, mut chunked_last, mut other_coding) = (None, false, false, false);
    let (mut hosts, mut close, mut keep_alive) = (Vec::new(), false, false);
    for &(name, value) in &lexed.fields {
        let items = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        match name.to_ascii_lowercase().as_slice() {
            b"content-length" if length.is_some() => return Err(400),
            b"content-length" => length = Some(content_length(value).ok_or(400u16)?),
            b"transfer-encoding" => {
                te = true;
                for coding in items().filter(|c| !c.is_empty()) {
                    if chunked_last {
                        return Err(400);
                    }
                    chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                    other_coding |= !chunked_last;
                }
            }
            b"host" => hosts.push(value),
            b"connection" => {
                close |= items().any(|i| i.eq_ignore_ascii_case(b"close"));
                keep_alive |= items().any(|i| i.eq_ignore_ascii_case(b"keep-alive"));
            }
            _ => {}
        }
    }
    let body = match (te, length) {
        (true, _) if lexed.minor == 0 => return Err(400),
        (true, _) if other_coding => return Err(501),
        (true, _) if !chunked_last => return Err(400),
        (true, Some(_)) => return Err(400),
        (true, None) => BodyLength::Chunked,
        (false, None | Some(0)) => BodyLength::Empty,
        (false, Some(n)) => BodyLength::Length(n),
    };
    match hosts.as_slice() {
        [] if lexed.minor == 0 => {}
        [host] if host.is_empty() || authority_ok(host) => {}
        _ => return Err(400),
    }
    Ok(Outcome::Head {
        length: lexed.length,
        method: String::from_utf8(method.to_vec()).unwrap(),
        target: path.to_vec(),
        minor: lexed.minor,
        host: authority.or(hosts.first().copied()).map(<[u8]>::to_vec),
        body,
        keep_alive: !close && (lexed.minor == 1 || keep_alive),
    })
}

/// `http://` or `https://` (any case), the authority up to `/`, `?` or the end, then nothing or `/...`.
fn absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let lower = target.to_ascii_lowercase();
    let scheme = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|scheme| lower.starts_with(scheme))?;
    let rest = &target[scheme.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    (!path.starts_with(b"?")).then_some((authority, path))
}

/// 1 to 19 digits: no sign, no list, no whitespace (19 nines fit in a u64).
fn content_length(value: &[u8]) -> Option<u64> {
    if !(1..=19).contains(&value.len()) || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// RFC 3986 sub-delims, less the comma (a Host that reads as a list is refused).
fn sub_delim(b: u8) -> bool {
    b"!$&'()*+;=".contains(&b)
}

/// Whether `bytes` is made of `allowed` bytes and `%XX` triplets: split at each `%`, every piece after the first
/// starts with two hex digits.
fn escaped(bytes: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    bytes.split(|&b| b == b'%').enumerate().all(|(i, piece)| {
        let rest = match i {
            0 => piece,
            _ if piece.len() >= 2 && piece[..2].iter().all(u8::is_ascii_hexdigit) => &piece[2..],
            _ => return false,
        };
        rest.iter().all(|&b| allowed(b))
    })
}

/// RFC 3986 `path-abempty [ "?" query ]`: pchar, `/` and `?`; plus what browsers leave unencoded: `[ ] ^ |` in the
/// path, and also `{ } \ `` ` `` in the query.
fn path_ok(target: &[u8]) -> bool {
    let rfc = |b: u8| unreserved(b) || sub_delim(b) || b == b',' || b":@/".contains(&b);
    let browsers = |b: u8| b"[]^|".contains(&b);
    match target.iter().position(|&b| b == b'?') {
        None => escaped(target, |b| rfc(b) || browsers(b)),
        Some(q) => {
            escaped(&target[..q], |b| rfc(b) || browsers(b))
                && escaped(&target[q..], |b| {
                    rfc(b) || browsers(b) || b"?{}\\`".contains(&b)
                })
        }
    }
}

/// RFC 3986 `host [ ":" port ]`, the host not empty, the port 1 to 5 digits up to 65535.
fn authority_ok(authority: &[u8]) -> bool {
    let (host_ok, port) = match authority.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(close) => (ip_literal_ok(&rest[..close]), &rest[close + 1..]),
            None => return false,
        },
        None => {
            let colon = authority
                .iter()
                .position(|&b| b == b':')
                .unwrap_or(authority.len());
            let name = &authority[..colon];
            let reg_name = !name.is_empty() && escaped(name, |b| unreserved(b) || sub_delim(b));
            (reg_name, &authority[colon..])
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len())
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u16>().ok())
                    .is_some()
                && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    host_ok && port_ok
}

/// An IPv6 address, or `IPvFuture`: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ).
fn ip_literal_ok(inside: &[u8]) -> bool {
    if let Some(rest) = inside.strip_prefix(b"v").or(inside.strip_prefix(b"V")) {
        return match rest.iter().position(|&b| b == b'.') {
            Some(dot) => {
                dot > 0
                    && rest[..dot].iter().all(u8::is_ascii_hexdigit)
                    && rest.len() > dot + 1
                    && rest[dot + 1..]
                        .iter()
                        .all(|&b| unreserved(b) || sub_delim(b) || b == b':')
            }
            None => false,
        };
    }
    std::str::from_utf8(inside).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn real(buf: &[u8]) -> Outcome {
    match request::parse(buf) {
        Ok(None) => Outcome::Incomplete,
        Err(refusal) => Outcome::Refused(refusal.status.as_u16()),
        Ok(Some((head, length))) => Outcome::Head {
            length,
            method: head.method.as_str().to_string(),
            target: buf[head.target].to_vec(),
            minor: head.minor,
            host: head.host.map(|r| buf[r].to_vec()),
            body: head.body,
            keep_alive: head.keep_alive,
        },
    }
}

/// Mostly (93 %) one of `good`, else one of `bad`.
fn either<'a>(rng: &mut Rng, good: &[&'a str], bad: &[&'a str]) -> &'a str {
    match rng.percent(93) {
        true => rng.pick(good),
        false => rng.pick(bad),
    }
}

fn authority(rng: &mut Rng) -> String {
    let good = [
        "a",
        "example.com",
        "127.0.0.1",
        "[::1]",
        "[2001:db8::1]",
        "[v1.x:y]",
        "xn--d.example",
        "%41b",
        "a_b~!$&'()*+;=",
    ];
    let bad = [
        "",
        "[zz]",
        "[::1",
        "a b",
        "a,b",
        "u@a",
        "a\"b",
        "a%2",
        "caf\u{e9}",
        "a/b",
    ];
    let host = either(rng, &good, &bad);
    let good = ["", "", "", ":80", ":0", ":65535", ":080"];
    let bad = [":65536", ":", ":8x", ":123456", ":-1"];
    format!("{host}{}", either(rng, &good, &bad))
}

fn target(rng: &mut Rng) -> Vec<u8> {
    let good = [
        "a",
        "b/c",
        "/",
        "%41",
        "%e9",
        "?",
        "q=1&r=2",
        "~",
        ":@!$&'()*+,;=",
    ];
    let bad = ["%zz", "%", "#frag", "caf\u{e9}", "[", "|", "{}", "\""];
    match rng.below(40) {
        0..=23 => {
            let mut t = String::from("/");
            for _ in 0..rng.below(5) {
                t.push_str(either(rng, &good, &bad));
            }
            t.into_bytes()
        }
        24..=34 => {
            let scheme = either(
                rng,
                &["http://", "HTTP://", "https://"],
                &["ftp://", "http:/"],
            );
            let rest = either(rng, &["", "/", "/p?q", "/%7e"], &["?q", "/a#b"]);
            format!("{scheme}{}{rest}", authority(rng)).into_bytes()
        }
        35 | 36 => b"*".to_vec(),
        37 => b"\xff/".to_vec(),
        _ => long_target(rng),
    }
}

fn long_target(rng: &mut Rng) -> Vec<u8> {
    let length = MAX_TARGET - 2 + rng.below(4);
    let mut t = vec![b'a'; length];
    t[0] = b'/';
    t
}

fn field(rng: &mut Rng) -> String {
    match rng.below(16) {
        0 => format!("Host: {}", authority(rng)),
        2 => {
            let good = ["0", "5", "007", "9999999999999999999"];
            let bad = ["+1", "1, 1", "", "99999999999999999999", "0x5", "5a"];
            format!("Content-Length: {}", either(rng, &good, &bad))
        }
        3 => {
            let good = ["chunked", "CHUNKED", "chunked , ", ", chunked"];
            let bad = [
                "gzip, chunked",
                "chunked, gzip",
                "identity",
                ",",
                "",
                "chunked, chunked",
            ];
            format!("Transfer-Encoding: {}", either(rng, &good, &bad))
        }
        4 => {
            let values = ["close", "keep-alive", "x-a", "Close, X", "upgrade", ""];
            format!("Connection: {}", rng.pick(&values))
        }
        5 => {
            let good = ["X-A", "Accept", "TE", "X_Y", "Forwarded", "!#$%&'*+-.^_`|~"];
            let bad = ["X A", "", "X\t", "h\u{e9}", "X\"Y"];
            format!("{}: v", either(rng, &good, &bad))
        }
        _ => {
            let good = [
                "b",
                "",
                "  padded  ",
                "a\tb",
                "caf\u{e9}",
                "a\"b",
                "a,b;c=d",
            ];
            let bad = ["a\x00b", "a\x7fb", "a\rb"];
            format!("X-Value: {}", either(rng, &good, &bad))
        }
    }
}

fn generate(rng: &mut Rng) -> Vec<u8> {
    let line_end = |rng: &mut Rng| match rng.percent(99) {
        true => &b"\r\n"[..],
        false => rng.pick(&[&b"\n"[..], b"\r", b"\r\r\n"]),
    };
    let mut out = Vec::new();
    if rng.percent(5) {
        out.extend_from_slice(rng.pick(&[&b"\r\n"[..], b"\n", b"\r\n\r\n"]));
    }
    let good = [
        "GET", "POST", "PUT", "HEAD", "OPTIONS", "PURGE", "get", "M-SEARCH",
    ];
    let long_line = rng.percent(2);
    if long_line {
        // With a target near its limit, the line is near its own.
        let method = MAX_REQUEST_LINE - MAX_TARGET - 12 + rng.below(4);
        out.extend(std::iter::repeat_n(b'M', method));
    } else {
        out.extend_from_slice(either(rng, &good, &["CONNECT", "G@T", "", "GET\t"]).as_bytes());
    }
    out.extend_from_slice(if rng.percent(97) { b" " } else { b"  " });
    out.extend(match long_line {
        true => long_target(rng),
        false => target(rng),
    });
    out.push(b' ');
    let good = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"];
    let bad = ["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.10"];
    out.extend_from_slice(either(rng, &good, &bad).as_bytes());
    out.extend_from_slice(line_end(rng));
    let mut fields: Vec<String> = (0..rng.below(5)).map(|_| field(rng)).collect();
    if rng.percent(90) {
        let at = rng.below(fields.len() + 1);
        fields.insert(at, format!("Host: {}", authority(rng)));
    }
    if rng.percent(3) {
        let many = MAX_HEADERS - 2 + rng.below(4);
        fields.extend((0..many).map(|i| format!("X-{i}: 1")));
    }
    if rng.below(400) == 0 {
        fields.push(format!(
            "X-Big: {}",
            "a".repeat(MAX_HEAD - 100 + rng.below(200))
        ));
    }
    for field in fields {
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(line_end(rng));
    }
    out.extend_from_slice(line_end(rng));
    if rng.percent(30) {
        out.extend_from_slice(rng.pick(&[&b"hello"[..], b"GET /next HTTP/1.1\r\n"]));
    }
    out
}

#[test]
fn request_parse_agrees_with_the_model() {
    let mut rng = Rng::new(11);
    let (mut heads, mut incomplete) = (0, 0);
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..4000 {
        let mut input = generate(&mut rng);
        if rng.percent(25) {
            mutate(&mut rng, &mut input);
        }
        if rng.percent(12) {
            input.truncate(rng.below(input.len() + 1));
        }
        let want = model(&input);
        assert_eq!(real(&input), want, "case {case}: {}", shown(&input));
        match want {
            Outcome::Head { .. } => heads += 1,
            Outcome::Incomplete => incomplete += 1,
            Outcome::Refused(status) => *statuses.entry(status).or_insert(0) += 1,
        }
    }
    // Every outcome must be common enough for the comparison to mean something.
    assert!(
        heads > 600 && incomplete > 200,
        "{heads} heads, {incomplete} incomplete, {statuses:?}"
    );
    for status in [400, 414, 431, 501] {
        assert!(statuses.get(&status) > Some(&20), "{statuses:?}");
    }
}
