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
    /// The status line's reason phrase (`Not Found`).
    pub reason: String,
    pub body: String,
}

impl Reply {
    /// The `error` of one of lb's JSON error answers; `None` when the answer is not one (another server answered).
    pub fn error(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
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
    let not_http = || format!("{addr} sent an answer that is not HTTP (is it lb's admin plane?)");
    // Read until the answer is whole (its Content-Length) or the connection ends, not only until it ends: a
    // server that is not lb may keep the connection open whatever `Connection: close` asked.
    let mut raw = Vec::new();
    let mut buffer = [0; 16 * 1024];
    loop {
        if let Some(whole) = complete(&raw) {
            raw.truncate(whole);
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => raw.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let patience = PATIENCE.as_secs();
                return Err(format!(
                    "lb's admin plane at {addr} did not answer within {patience} s"
                ));
            }
            Err(error) => {
                return Err(format!(
                    "lb's admin plane at {addr} did not answer: {error}"
                ))
            }
        }
    }
    parse(&raw).ok_or_else(not_http)
}

/// The length of the answer at the start of `raw` once it is all there (its head says how long its body is).
fn complete(raw: &[u8]) -> Option<usize> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    (raw.len() >= end + length).then_some(end + length)
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").trim().to_owned();
    let body = String::from_utf8_lossy(&raw[end + 4..]).into_owned();
    Some(Reply {
        status,
        reason,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let reply =
            parse(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\n\r\n{\"error\":\"nope\"}\n")
                .unwrap();
        assert_eq!((reply.status, reply.reason.as_str()), (400, "Bad Request"));
        assert_eq!(reply.error().as_deref(), Some("nope"));
        assert!(parse(b"garbage").is_none());
        let html = parse(b"HTTP/1.0 404 File not found\r\n\r\n<html>\n</html>\n").unwrap();
        assert_eq!((html.status, html.error()), (404, None));
    }

    #[test]
    fn an_answer_is_whole_when_its_body_is_all_there() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(complete(&answer[..answer.len() - 1]), None);
        assert_eq!(complete(answer), Some(answer.len()));
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\n\r\n{}"),
            None,
            "no length: until the end"
        );
    }
}
