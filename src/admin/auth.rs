//! Who may use the admin plane.
//!
//! - With `admin_token`: every request carries it, as `Authorization: Bearer <token>` (scripts, `lb status`) or as
//!   the password of Basic authentication (a browser asks for it once, on the dashboard's 401, and then sends it with
//!   every request of the page). Compared in constant time. Anything else: 401.
//! - Without a token (loopback only; startup refuses otherwise): the `Host` must name this machine (an IP address or
//!   `localhost`), so that a web page whose own name resolves to 127.0.0.1 (DNS rebinding) cannot read or steer it.
//! - Always: a request that changes something (`POST`) sent by a browser from another origin is refused (403): a
//!   page from anywhere could otherwise post a form to 127.0.0.1:9000.

use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use super::answer::{self, Answer};

/// `Ok` when the request may go on; else the answer that refuses it.
pub fn check(token: Option<&str>, method: &Method, headers: &HeaderMap) -> Result<(), Box<Answer>> {
    match token {
        Some(token) => {
            if !carries(token, headers.get(header::AUTHORIZATION)) {
                let mut refused = answer::error(
                    StatusCode::UNAUTHORIZED,
                    "this admin plane needs its token: Authorization: Bearer <admin_token>",
                );
                refused.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"lb admin\", charset=\"UTF-8\""),
                );
                return Err(Box::new(refused));
            }
        }
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            if !host.is_some_and(names_this_machine) {
                return Err(Box::new(answer::error(
                    StatusCode::FORBIDDEN,
                    "Host must be an IP address or localhost (set admin_token to serve other names)",
                )));
            }
        }
    }
    if !matches!(*method, Method::GET | Method::HEAD) && cross_origin(headers) {
        return Err(Box::new(answer::error(
            StatusCode::FORBIDDEN,
            "cross-origin request refused",
        )));
    }
    Ok(())
}

/// Whether `authorization` carries `token`: `Bearer <token>`, or Basic with `<token>` as the password.
fn carries(token: &str, authorization: Option<&HeaderValue>) -> bool {
    let Some(value) = authorization.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return same(rest.as_bytes(), token.as_bytes());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return false;
        };
        let password = match decoded.iter().position(|&b| b == b':') {
            Some(colon) => &decoded[colon + 1..],
            None => &decoded[..],
        };
        return same(password, token.as_bytes());
    }
    false
}

/// Equal, in a time that depends on the lengths only.
fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// `127.0.0.1:9000`, `[::1]:9000`, `localhost:9000` (a port or none), and nothing more: not
/// `[::1]attacker.example`.
fn names_this_machine(host: &str) -> bool {
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => return false,
        },
        None => {
            // The port keeps its colon, as after `]`.
            let (name, port) = host.split_at(host.find(':').unwrap_or(host.len()));
            let ok = name.eq_ignore_ascii_case("localhost")
                || name.parse::<std::net::Ipv4Addr>().is_ok();
            (ok, port)
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// A browser's request from a page of another origin: its `Origin` names another host:port than `Host`.
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false; // not sent by a page (curl, lb status), or a same-origin GET
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok();
    let authority = origin.and_then(|o| o.split_once("://")).map(|(_, a)| a);
    match (authority, host) {
        (Some(authority), Some(host)) => !authority.eq_ignore_ascii_case(host),
        _ => true, // "null" (a sandboxed frame, a file) or unreadable: not a page of ours
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.insert(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const TOKEN: &str = "0123456789abcdef";

    #[test]
    fn a_token_is_required_when_set() {
        let get = &Method::GET;
        assert!(check(Some(TOKEN), get, &headers(&[])).is_err());
        let bearer = format!("Bearer {TOKEN}");
        assert!(check(Some(TOKEN), get, &headers(&[("authorization", &bearer)])).is_ok());
        let wrong = format!("Bearer {TOKEN}x");
        assert!(check(Some(TOKEN), get, &headers(&[("authorization", &wrong)])).is_err());
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{TOKEN}"));
        let basic = format!("Basic {basic}");
        assert!(check(Some(TOKEN), get, &headers(&[("authorization", &basic)])).is_ok());
    }

    #[test]
    fn without_a_token_the_host_must_name_this_machine() {
        let get = &Method::GET;
        for host in [
            "127.0.0.1:9000",
            "localhost:9000",
            "[::1]:9000",
            "LOCALHOST",
        ] {
            assert!(
                check(None, get, &headers(&[("host", host)])).is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example:9000",
            "evil.example",
            "[::1]evil.example",
            "[::1]:9000:evil",
            "localhost:evil",
            "127.0.0.1:9000:1",
            "::1",
        ] {
            assert!(
                check(None, get, &headers(&[("host", host)])).is_err(),
                "{host}"
            );
        }
        assert!(check(None, get, &headers(&[])).is_err(), "no Host");
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let post = &Method::POST;
        let host = ("host", "127.0.0.1:9000");
        assert!(check(None, post, &headers(&[host])).is_ok());
        let same = headers(&[host, ("origin", "http://127.0.0.1:9000")]);
        assert!(check(None, post, &same).is_ok());
        let other = headers(&[host, ("origin", "http://example.com")]);
        assert!(check(None, post, &other).is_err());
        let null = headers(&[host, ("origin", "null")]);
        assert!(check(None, post, &null).is_err());
    }
}
