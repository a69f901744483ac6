//! The redirect listener (`[[listeners]] redirect_https = true`): every request gets `301` to the same path and
//! query on `https://`, the host taken from the request's `Host` (its port dropped) and the port of the TLS
//! listener (left out when it is 443). A request without a usable host gets `400`.
//!
//! Nothing here is on a hot path (a browser comes once, then remembers the https URL), so hyper's HTTP/1 server
//! does the HTTP. Each answer closes its connection: a client that was redirected has nothing more to ask here, and
//! a drain then never waits for an idle redirect connection.

use std::convert::Infallible;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::worker::Open;

/// Serves one connection of a redirect listener; `https_port` is the TLS listener's actual port. `open` counts the
/// connection (`max_connections`, the drain) until it ends.
pub async fn serve(stream: TcpStream, https_port: u16, header_timeout: Duration, open: Open) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| async move {
        Ok::<_, Infallible>(redirect(&request, https_port))
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "redirect connection failed");
    }
    drop(open);
}

/// The answer to one request.
fn redirect<B>(request: &Request<B>, https_port: u16) -> Response<Empty<Bytes>> {
    let host = request
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            Some(strip_port(value).to_owned())
        })
        .filter(|host| is_host(host));
    let Some(host) = host else {
        return answer(StatusCode::BAD_REQUEST, None);
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    answer(StatusCode::MOVED_PERMANENTLY, Some(location))
}

fn answer(status: StatusCode, location: Option<String>) -> Response<Empty<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, "0")
        .header(header::CONNECTION, "close");
    if let Some(location) = location {
        response = response.header(header::LOCATION, location);
    }
    response.body(Empty::new()).unwrap_or_else(|_| {
        let mut fallback = Response::new(Empty::new());
        *fallback.status_mut() = StatusCode::BAD_REQUEST;
        fallback
    })
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    host.split(':').next().unwrap_or(host)
}

/// A host name or address fit for a URL: letters, digits, `-`, `.`, and a bracketed IPv6 address.
fn is_host(host: &str) -> bool {
    let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        }
        None => !host.is_empty() && host.chars().all(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(target: &str, host: Option<&str>, port: u16) -> (u16, Option<String>) {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let response = redirect(&request.body(()).unwrap(), port);
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (response.status().as_u16(), location)
    }

    #[test]
    fn the_same_url_on_https() {
        let to = |l: &str| Some(l.to_owned());
        assert_eq!(
            location("/a/b?c=d", Some("shop.test:8080"), 443),
            (301, to("https://shop.test/a/b?c=d"))
        );
        assert_eq!(
            location("/", Some("shop.test"), 8443),
            (301, to("https://shop.test:8443/"))
        );
        assert_eq!(
            location("/x", Some("[::1]:80"), 8443),
            (301, to("https://[::1]:8443/x"))
        );
        assert_eq!(
            location("http://abs.test/p?q", Some("other.test"), 443),
            (301, to("https://abs.test/p?q"))
        );
    }

    #[test]
    fn no_usable_host_is_400() {
        assert_eq!(location("/", None, 443), (400, None));
        assert_eq!(location("/", Some(""), 443), (400, None));
        assert_eq!(location("/", Some("a b"), 443), (400, None));
        assert_eq!(location("/", Some("evil.test/x"), 443), (400, None));
    }
}
