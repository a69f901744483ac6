//! The bytes of request targets and authorities (RFC 3986), as the request parser checks them.
//!
//! A target and an authority (an absolute-form target's, or the Host header's) are copied into the backend's request
//! line, `Host`, `X-Forwarded-Host` and `Forwarded`; a byte that one reader takes for a delimiter and another for
//! data (a `#`, a space, a comma, a quote, a raw non-ASCII byte) is how a request reaches a backend as something else
//! than what we checked. So both must follow the grammar to the byte. A target costs one pass over its bytes through a
//! 256-entry table; only a `%` or a rare byte leaves the tight loop.

/// What each byte may be in the path of a request target (RFC 3986 `path-abempty`, the part after the authority):
/// `pchar` and `/`; `%` starts a `pct-encoded` triplet. Plus what browsers leave unencoded in a path although RFC
/// 3986 does not allow it (the WHATWG URL standard's path percent-encode set leaves them out): `[` `]` `^` `|`;
/// refusing those would refuse real traffic, and none of them is a delimiter to an HTTP/1 reader. Everything else
/// is refused: controls, space, `"` `#` `<` `>` `\` `` ` `` `{` `}`, DEL and every byte from 0x80 on.
static PATH_BYTES: [Class; 256] = byte_classes(b"-._~!$&'()*+,;=:@/[]^|");
/// What each byte may be in the query (after the first `?`): the path's bytes, `?`, and what browsers leave
/// unencoded in a query (`{` `}` `\` `` ` ``: `?filter[name]={x}` is common). Still refused: controls, space, `"`
/// `#` `<` `>`, DEL and every byte from 0x80 on.
static QUERY_BYTES: [Class; 256] = byte_classes(b"-._~!$&'()*+,;=:@/[]^|?{}\\`");
/// What each byte may be in a `reg-name` (RFC 3986), less the comma: a Host that could be read as a list is
/// refused.
static REG_NAME_BYTES: [Class; 256] = byte_classes(b"-._~!$&'()*+;=");

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Refused,
    Plain,
    Percent,
}

/// A byte table: ASCII letters and digits and `also` are plain, `%` starts a triplet, the rest is refused.
const fn byte_classes(also: &[u8]) -> [Class; 256] {
    let mut table = [Class::Refused; 256];
    let mut b = 0;
    while b < 256 {
        if (b as u8).is_ascii_alphanumeric() {
            table[b] = Class::Plain;
        }
        b += 1;
    }
    let mut i = 0;
    while i < also.len() {
        table[also[i] as usize] = Class::Plain;
        i += 1;
    }
    table[b'%' as usize] = Class::Percent;
    table
}

/// Whether every byte of `bytes` is plain in `table` or starts a `%XX` triplet of two hex digits.
fn all_in(table: &[Class; 256], bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match table[usize::from(bytes[at])] {
            Class::Plain => at += 1,
            Class::Percent
                if bytes.len() > at + 2
                    && bytes[at + 1].is_ascii_hexdigit()
                    && bytes[at + 2].is_ascii_hexdigit() =>
            {
                at += 3
            }
            _ => return false,
        }
    }
    true
}

/// Whether an origin-form target (or the path and query of an absolute-form one) is made of RFC 3986 bytes (with
/// the few that browsers send unencoded, see [`PATH_BYTES`]): no fragment (RFC 9112 §3.2), no raw non-ASCII
/// byte, every `%` followed by two hex digits.
pub(super) fn valid_target(target: &[u8]) -> bool {
    match target.iter().position(|&b| b == b'?') {
        None => all_in(&PATH_BYTES, target),
        Some(query) => {
            all_in(&PATH_BYTES, &target[..query]) && all_in(&QUERY_BYTES, &target[query..])
        }
    }
}

/// Whether an empty Host value is taken (an empty authority never is).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Empty {
    Allowed,
    Refused,
}

/// Whether `authority` is RFC 3986 `host [ ":" port ]`: a `reg-name` without commas (which an IPv4 address is
/// too), or an `IP-literal` in brackets, never empty; then, if there is a colon, a port of 1 to 5 digits up to
/// 65535. Userinfo (`user@`) is refused as any other byte outside the grammar is.
pub(super) fn valid_authority(authority: &[u8], empty: Empty) -> bool {
    if authority.is_empty() {
        return empty == Empty::Allowed;
    }
    let (host, port) = if authority[0] == b'[' {
        let Some(close) = authority.iter().position(|&b| b == b']') else {
            return false;
        };
        if !valid_ip_literal(&authority[1..close]) {
            return false;
        }
        match &authority[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&authority[..=close], Some(port)),
            _ => return false,
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        }
    };
    if host.is_empty() || (host[0] != b'[' && !all_in(&REG_NAME_BYTES, host)) {
        return false;
    }
    port.is_none_or(valid_port)
}

/// 1 to 5 digits, at most 65535 (an empty port, which RFC 3986 allows, says nothing and is refused).
fn valid_port(port: &[u8]) -> bool {
    (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// The inside of an `IP-literal`: an IPv6 address (no zone), or `IPvFuture` (`v` hex digits `.` then unreserved,
/// sub-delims or `:`).
fn valid_ip_literal(inside: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inside {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, address) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !address.is_empty()
            && address
                .iter()
                .all(|&b| b == b':' || REG_NAME_BYTES[usize::from(b)] == Class::Plain);
    }
    std::str::from_utf8(inside).is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_outside_rfc_3986_are_refused() {
        let targets: [&[u8]; 21] = [
            b"/a#frag",
            b"/#",
            b"/a?b#c",
            b"/caf\xc3\xa9",
            b"/\xff",
            b"/a?caf\xc3\xa9",
            b"/a\"b",
            b"/a?b\"c",
            b"/a<b>",
            b"/a?<b>",
            b"/a?b c",
            b"/a?b\x7f",
            b"/a{b}",
            b"/a\\b",
            b"/a`b",
            b"/a%",
            b"/a?b%",
            b"/a%2",
            b"/a%zz",
            b"/a%2G",
            b"/a%%32%30",
        ];
        for target in targets {
            assert!(
                !valid_target(target),
                "{:?}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn targets_of_rfc_3986_bytes_pass() {
        for target in [
            "",
            "/",
            "*",
            "/caf%C3%A9%2fbar%7E",
            "/a-._~!$&'()*+,;=:@/b?c=d&e=/f?g:h@i",
            "/?",
            "/a[b]|c^d",
            "/search?filter[name]=x&a[]=1&q={json}|^\\`x",
        ] {
            assert!(valid_target(target.as_bytes()), "{target}");
        }
    }

    #[test]
    fn bad_authorities_are_refused() {
        for authority in [
            "a\"b",
            "a:99999x",
            "a:65536",
            "a:123456",
            "a:065535",
            "a:x",
            "a:",
            "a:-1",
            "a:+80",
            ":80",
            "u@a",
            "u:p@a",
            "a,b",
            "a;b,c",
            "a b",
            "a\tb",
            "caf\u{e9}.example",
            "a/b",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[zz]",
            "[1.2.3.4]",
            "[::1%25eth0]",
            "[v1]",
            "[v.x]",
            "[vx.y]",
            "[v1.a,b]",
            "a%2",
            "a%zz",
            "a\\b",
            "a|b",
            "a{b}",
            "a^b",
            "::1",
            "a:1:2",
        ] {
            assert!(
                !valid_authority(authority.as_bytes(), Empty::Allowed),
                "{authority:?}"
            );
        }
        // An absolute-form target names no empty host (RFC 9110 §4.2.1); an empty Host is allowed (RFC 9110 §7.2).
        assert!(!valid_authority(b"", Empty::Refused));
        assert!(valid_authority(b"", Empty::Allowed));
    }

    #[test]
    fn good_authorities_pass() {
        for authority in [
            "a",
            "example.com",
            "example.com:8080",
            "a:0",
            "a:08080",
            "a:65535",
            "127.0.0.1:80",
            "999.1.1.1",
            "xn--bcher-kva.example",
            "under_score.example",
            "a-b.c~d!$&'()*+;=",
            "%41%62c",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]",
            "[::ffff:192.0.2.1]:1",
            "[v1.fe80::a+en1]",
            "[V7.a:b]",
        ] {
            assert!(
                valid_authority(authority.as_bytes(), Empty::Refused),
                "{authority:?}"
            );
        }
    }
}
