//! What changes in the headers on the way through: hop-by-hop headers go, forwarding headers come.
//!
//! RFC 9110 §7.6.1: `Connection` and every header it names are meant for the next hop only, as are `Keep-Alive`,
//! `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and the non-standard `Proxy-Connection`. Message framing is
//! redone by each hop (hyper writes `Transfer-Encoding`/`Content-Length` for the body it is given).
//! The backend learns who the client was from `X-Forwarded-For` (appended to, so a chain of proxies stays
//! readable), `X-Forwarded-Proto`, `X-Forwarded-Host` and RFC 7239 `Forwarded` (appended).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1, including every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

/// Adds the forwarding headers for a request from `client`, whose Host was `host` (if any).
pub fn add_forwarding(headers: &mut HeaderMap, client: SocketAddr, host: Option<&HeaderValue>) {
    let ip = client.ip().to_canonical();
    append_list(headers, &X_FORWARDED_FOR, &ip.to_string());
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    append_list(headers, &header::FORWARDED, &forwarded_element(ip, host));
}

/// One RFC 7239 element: `for=192.0.2.1;host="example.com:8000";proto=http`.
fn forwarded_element(ip: IpAddr, host: Option<&HeaderValue>) -> String {
    let mut element = match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        // An IPv6 address is a quoted string with brackets (RFC 7239 §6).
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        if host.bytes().all(is_token_char) {
            element.push_str(";host=");
            element.push_str(host);
        } else if !host.contains(['"', '\\']) {
            element.push_str(";host=\"");
            element.push_str(host);
            element.push('"');
        }
    }
    element.push_str(";proto=http");
    element
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `item` to a comma-separated list header, merging any repeated fields into one.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &str) {
    let mut combined = String::new();
    for value in headers.get_all(name) {
        if let Ok(value) = value.to_str() {
            let value = value.trim();
            if !value.is_empty() {
                combined.push_str(value);
                combined.push_str(", ");
            }
        }
    }
    combined.push_str(item);
    if let Ok(value) = HeaderValue::from_str(&combined) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn strips_connection_and_what_it_names() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn appends_forwarding_to_existing_values() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        let host = HeaderValue::from_static("example.com:8000");
        add_forwarding(&mut headers, "127.0.0.1:5000".parse().unwrap(), Some(&host));
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "example.com:8000");
        assert_eq!(
            headers["forwarded"],
            "for=203.0.113.7, for=127.0.0.1;host=\"example.com:8000\";proto=http"
        );
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let mut headers = HeaderMap::new();
        add_forwarding(&mut headers, "[::1]:5000".parse().unwrap(), None);
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=http");
    }
}
