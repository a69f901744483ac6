//! The command line's side of the admin plane (`lb reload`, `lb status`, `lb check --admin`): one request to the
//! running balancer's admin address, blocking, with deadlines.
//!
//! Written over a plain `TcpStream` rather than an HTTP client crate: one request with `Connection: close` to our
//! own server, whose answers always carry a `Content-Length`, is a few lines; a client crate would be a large
//! dependency for it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the balancer may take to answer (a reload checks new backends once first).
const PATIENCE: Duration = Duration::from_secs(30);

/// The balancer's answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The `error` of a JSON error answer, else the body.
    pub fn error(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| self.body.trim().to_owned())
    }
}

/// Sends `method path` to the admin plane at `addr` (with `token` as a bearer token, if any). `Err`: the one line
/// that says why no answer came.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Reply, String> {
    let unreachable = |error: std::io::Error| {
        format!(
            "cannot reach lb's admin plane at {addr}: {error} (is lb running with --admin {addr}?)"
        )
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(PATIENCE))
        .map_err(unreachable)?;
    let host = match addr {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: lb-cli\r\ncontent-length: 0\r\nconnection: close\r\n"
    );
    if let Some(token) = token {
        request.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|error| format!("lb's admin plane at {addr} did not answer: {error}"))?;
    parse(&raw).ok_or_else(|| format!("lb's admin plane at {addr} sent an answer that is not HTTP"))
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = String::from_utf8_lossy(&raw[end + 4..]).into_owned();
    Some(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let reply =
            parse(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\n{\"error\":\"nope\"}\n")
                .unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.error(), "nope");
        assert!(parse(b"garbage").is_none());
    }
}
