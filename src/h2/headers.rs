//! The heads each side gets on the generic path: the same rules as the fast path's (`h1::write`), applied to
//! hyper's header maps instead of raw bytes.
//!
//! Hop-by-hop headers are dropped (RFC 9110 §7.6.1, the same list and the same `_` aliases as `h1::write`), except
//! `TE: trailers`, which HTTP/2 allows and gRPC servers look for. The backend learns who the client was from
//! `X-Forwarded-For` (appended to), `X-Forwarded-Proto` (`http` or `https` as the client reached us),
//! `X-Forwarded-Host` and RFC 7239 `Forwarded` (appended to). The target is written as each backend protocol wants it:
//! origin form plus `Host` for HTTP/1.1, scheme and authority (`:authority`) for HTTP/2.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{request, response, StatusCode, Version};

use crate::h1::write::{is_hop_by_hop, is_underscore_alias};
use crate::upstream::Backend;

/// Why a request from an HTTP/1.x client, as hyper read it, is refused by our own engine's rules (its head is
/// written out again and read by `h1::request::parse`): hyper (httparse) takes what the fast path refuses (no Host
/// or two, a target or Host outside RFC 3986, an unknown or doubled transfer coding, CONNECT), and those must not
/// reach a backend on this path either. `None`: an HTTP/2 request, or one the fast path would take.
///
/// What hyper has already normalised away cannot be seen here: a fragment, a repeated equal Content-Length, a
/// Content-Length next to chunked (hyper drops it and closes after the answer), bare LF line ends.
pub fn refusal<B>(request: &http::Request<B>) -> Option<crate::h1::request::Refusal> {
    let version = match request.version() {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        _ => return None,
    };
    let uri = request.uri();
    let target = match (uri.scheme(), uri.path_and_query(), uri.authority()) {
        (Some(_), _, _) => uri.to_string(),
        (None, Some(path), _) => path.as_str().to_owned(),
        (None, None, Some(authority)) => authority.as_str().to_owned(),
        (None, None, None) => "/".to_owned(),
    };
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.push(b' ');
    head.extend_from_slice(version.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    crate::h1::request::parse(&head).err()
}

/// Whether a request asks to switch protocols (HTTP/1.1 `Connection: upgrade` with an `Upgrade`).
pub fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && names_token(headers, "upgrade")
}

fn names_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Turns an extended CONNECT (RFC 8441: `:protocol`, how HTTP/2 clients open a WebSocket) into the HTTP/1.1 upgrade
/// request a backend expects: `GET` with `Connection: upgrade` and `Upgrade: <protocol>`, and for WebSocket a
/// `Sec-WebSocket-Key` (an HTTP/2 client sends none: RFC 8441 §5). Answers whether the request was one.
pub fn extended_connect_as_upgrade<B>(request: &mut http::Request<B>) -> bool {
    if request.method() != http::Method::CONNECT {
        return false;
    }
    let Some(protocol) = request.extensions().get::<hyper::ext::Protocol>() else {
        return false;
    };
    let Ok(upgrade) = HeaderValue::from_str(protocol.as_str()) else {
        return false;
    };
    let websocket = protocol.as_str().eq_ignore_ascii_case("websocket");
    *request.method_mut() = http::Method::GET;
    let headers = request.headers_mut();
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if websocket && !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    }
    true
}

/// A fresh `Sec-WebSocket-Key`: 16 bytes, base64. Its only purpose is to show that the server understood a
/// WebSocket handshake (RFC 6455 §1.3); std's per-process random hash keys are random enough for that.
fn websocket_key() -> HeaderValue {
    use base64::Engine;
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    HeaderValue::from_str(&key).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The backend's `101` to an extended CONNECT, as the HTTP/2 client expects it: `200`, without the HTTP/1.1
/// handshake's headers.
pub fn upgraded_as_connect(parts: &mut response::Parts) {
    parts.status = StatusCode::OK;
    for name in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_ACCEPT,
    ] {
        parts.headers.remove(name);
    }
}

/// Removes hop-by-hop headers, those named by `Connection`, and (requests) the `_` aliases of ours. `keep_upgrade`:
/// leave `Upgrade` (a 101, or an upgrade request going to an HTTP/1.1 backend).
fn drop_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, aliases: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let bytes = name.as_str().as_bytes();
            let upgrade = keep_upgrade && *name == header::UPGRADE;
            !upgrade
                && (is_hop_by_hop(bytes)
                    || named.contains(name)
                    || (aliases && is_underscore_alias(bytes)))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
    if te_trailers && aliases {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Rewrites a client's request for `backend`: target, hop-by-hop headers, forwarding headers. `client` is the
/// client's address, `https` how it reached us, `upgrade` whether the request asks to switch protocols.
pub fn request(
    parts: &mut request::Parts,
    backend: &Backend,
    client: IpAddr,
    https: bool,
    upgrade: bool,
) {
    let headers = &mut parts.headers;
    // The client's authority: HTTP/2's `:authority` (or an absolute-form target), else `Host`.
    let given: Option<Authority> = parts.uri.authority().cloned().or_else(|| {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        host.parse().ok()
    });
    // An empty Host (RFC 9110 §7.2: a target without an authority) is kept for an HTTP/1.1 backend, as the fast
    // path keeps it; an HTTP/2 one needs an `:authority`.
    let empty_host = given.is_none()
        && headers
            .get(header::HOST)
            .is_some_and(|host| host.is_empty());
    let h2 = backend.options.protocol.is_h2();
    drop_hop_by_hop(headers, upgrade && !h2, true);
    if upgrade && !h2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let forwarded_for: Vec<HeaderValue> =
        headers.get_all("x-forwarded-for").iter().cloned().collect();
    let forwarded: Vec<HeaderValue> = headers.get_all(header::FORWARDED).iter().cloned().collect();
    for name in [
        header::HOST,
        header::FORWARDED,
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-forwarded-proto"),
        HeaderName::from_static("x-forwarded-host"),
    ] {
        headers.remove(name);
    }

    let authority = given
        .clone()
        .or_else(|| backend.authority.parse().ok())
        .unwrap_or_else(|| Authority::from_static("localhost"));
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if h2 {
        let scheme = match backend.options.tls.is_some()
            || backend.options.protocol == crate::config::Protocol::H2
        {
            true => Scheme::HTTPS,
            false => Scheme::HTTP,
        };
        let mut uri = Uri::builder().scheme(scheme).authority(authority);
        uri = uri.path_and_query(path);
        if let Ok(uri) = uri.build() {
            parts.uri = uri;
        }
        parts.version = Version::HTTP_2;
    } else {
        parts.uri = Uri::from(path);
        if empty_host {
            headers.insert(header::HOST, HeaderValue::from_static(""));
        } else if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, host);
        }
        parts.version = Version::HTTP_11;
    }

    let ip = client.to_canonical();
    let mut chain = String::new();
    for value in forwarded_for.iter().filter_map(|v| v.to_str().ok()) {
        if !value.trim().is_empty() {
            chain.push_str(value.trim());
            chain.push_str(", ");
        }
    }
    chain.push_str(&ip.to_string());
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(host) = &given {
        if let Ok(value) = HeaderValue::from_str(host.as_str()) {
            headers.insert("x-forwarded-host", value);
        }
    }
    let mut element = String::new();
    for value in forwarded.iter().filter_map(|v| v.to_str().ok()) {
        if !value.trim().is_empty() {
            element.push_str(value.trim());
            element.push_str(", ");
        }
    }
    match ip {
        IpAddr::V4(_) => element.push_str(&format!("for={ip}")),
        // An IPv6 address is a quoted string with brackets (RFC 7239 §6).
        IpAddr::V6(_) => element.push_str(&format!("for=\"[{ip}]\"")),
    }
    if let Some(host) = &given {
        element.push_str(&format!(";host=\"{}\"", host.as_str()));
    }
    element.push_str(";proto=");
    element.push_str(proto);
    if let Ok(value) = HeaderValue::from_str(&element) {
        headers.insert(header::FORWARDED, value);
    }
}

/// Says how a request body of unknown length goes to an HTTP/1.1 backend: `Transfer-Encoding: chunked`, set here
/// because hyper's client would otherwise send a `GET`, `HEAD` or `CONNECT` without its body (it assumes those
/// have none) and drop the body in silence: a chunked `GET` on the generic path, or an HTTP/2 `GET` with DATA and
/// no `content-length`, would reach the backend bodiless. `ended`: the body is known to be empty.
pub fn frame_body(parts: &mut request::Parts, backend: &Backend, ended: bool) {
    if ended
        || backend.options.protocol.is_h2()
        || parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        return;
    }
    parts.headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
}

/// Rewrites a backend's response head for the client: hop-by-hop headers dropped (a `101` keeps its `Upgrade`).
/// A Content-Length next to a Transfer-Encoding is dropped (RFC 9112 §6.3: the coding frames the body, and hyper
/// read it so): else the client would be told a length the body does not have.
pub fn response(parts: &mut response::Parts) {
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    drop_hop_by_hop(&mut parts.headers, switching, false);
    if switching {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn backend(protocol: crate::config::Protocol) -> Backend {
        let mut config = BackendConfig {
            id: 1,
            host: "127.0.0.1".into(),
            port: 8001,
            addr: ([127, 0, 0, 1], 8001).into(),
            options: Default::default(),
            weight: 1,
            max_connections: None,
            resolve: Default::default(),
        };
        config.options.protocol = protocol;
        Backend::new(&config, None, 1)
    }

    #[test]
    fn an_h2_request_goes_to_http1_with_host_and_forwarding() {
        let request = http::Request::builder()
            .method("POST")
            .uri("https://example.com/a?b")
            .version(Version::HTTP_2)
            .header("te", "trailers")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x_forwarded_for", "evil")
            .header("forwarded", "for=203.0.113.7")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let backend = backend(crate::config::Protocol::Http1);
        super::request(
            &mut parts,
            &backend,
            "127.0.0.1".parse().unwrap(),
            true,
            false,
        );
        assert_eq!(parts.uri, "/a?b");
        assert_eq!(parts.version, Version::HTTP_11);
        let h = &parts.headers;
        assert_eq!(h["host"], "example.com");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.7, for=127.0.0.1;host=\"example.com\";proto=https"
        );
        assert_eq!(h["x-kept"], "yes");
        assert!(!h.contains_key("x_forwarded_for"));
    }

    #[test]
    fn an_http1_request_goes_to_h2_with_an_authority() {
        let request = http::Request::builder()
            .uri("/p")
            .header("host", "svc.local:8080")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "5")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let backend = backend(crate::config::Protocol::H2c);
        super::request(&mut parts, &backend, "::1".parse().unwrap(), false, false);
        assert_eq!(parts.uri, "http://svc.local:8080/p");
        assert_eq!(parts.version, Version::HTTP_2);
        let h = &parts.headers;
        for gone in ["host", "connection", "x-secret", "keep-alive"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";host=\"svc.local:8080\";proto=http"
        );
    }
}
