//! HTTP/1.1 framing byte for byte (RFC 9112): what `lb` refuses and how (the status, then the connection closed),
//! what it lets through intact, and above all that no sequence of bytes gets a second, smuggled request to a backend.
//!
//! Every test writes raw bytes to `lb`, with a [`RecordingBackend`] behind it: a backend that reads requests by hand,
//! leniently, and records every request it reads and every byte it receives. A malformed request is followed, in the
//! same write, by `GET /smuggled`; that request must never be answered, and `smuggled` must never reach the backend.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::harness::{wait_until, RawBackend, RawConn, RawResponse, TestLb, HEALTH_PATH};

/// How long `lb` may take to answer and close a connection; only reached when it leaves the connection open.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// The request pipelined behind every malformed one: it must never be answered nor forwarded.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n";

/// A refused request must be answered with this and nothing else.
const BAD_REQUEST: &[&[u16]] = &[&[400]];

/// `head`, then `body`, then [`SMUGGLED`], as one write.
fn with_smuggled(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\n{body}{SMUGGLED}").into_bytes()
}

mod accepted;
mod recording;
mod refused;
mod targets;

use recording::RecordingBackend;
use targets::{on_every_path, Lb, Path};

/// The data of a whole chunked body (extensions ignored, no trailers), or `None` if it is not one.
fn dechunk(mut body: &str) -> Option<String> {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(data);
        }
        data.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Cases the generic path lets through where the fast path refuses them, left out of [`assert_refused`] there
/// unless `LB_FRAMING_GAPS` is set (then they fail): hyper reads them one way (its chunked decoder, httparse, which
/// takes a bare LF as a line end, and `http::Uri`, which drops a fragment; it keeps one of two equal
/// Content-Lengths, and drops a Content-Length next to chunked, then closes after the answer), and what it
/// normalised is gone before lb's own check of its heads (`h2::headers::refusal`) can see it. Each such request
/// reaches the backend re-framed by hyper, as hyper read it: a request behind it is a request of its own, not bytes
/// the backend could read differently.
fn known_gap(path: Path, case: &str) -> bool {
    const BODIES: &[&str] = &[
        "size of 17 hex digits, leading zeros",
        "bare LF ending the trailers",
    ];
    const HEADS: &[&str] = &[
        "bare LF ending the request line",
        "bare LF in a value",
        "CL.TE",
        "TE.CL",
        "Transfer-Encoding first",
        "Content-Length with Transfer-Encoding",
        "twice, the same",
        "a fragment",
        "a fragment after a query",
        "absolute: a fragment",
    ];
    let gap = match path {
        Path::Tcp | Path::Tls => false,
        // Its first head is our engine's to read: only bodies are hyper's.
        Path::Generic => BODIES.contains(&case),
        Path::GenericSecond => BODIES.contains(&case) || HEADS.contains(&case),
    };
    gap && std::env::var_os("LB_FRAMING_GAPS").is_none()
}

/// What may reach the backend of a request `lb` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Nothing at all: the head alone is reason to refuse.
    Nothing,
    /// The head: `lb` may forward it before it finds the body broken. Never what follows the body.
    HeadsOnly,
}

/// Sends every case at once, each on a connection of its own. Each must get one of `allowed` (the statuses of
/// everything it got, in order), then a closed connection. Then a clean request must still be served, and the
/// backend must have seen nothing but what `reach` allows and the clean request, and no byte of `smuggled`. Fails
/// listing everything that went wrong.
async fn assert_refused(
    lb: &Lb,
    backend: &RecordingBackend,
    cases: &[(&str, Vec<u8>)],
    allowed: &[&[u16]],
    reach: Reach,
) {
    let cases: Vec<&(&str, Vec<u8>)> = cases
        .iter()
        .filter(|(name, _)| !known_gap(lb.path, name))
        .collect();
    let answers = join_all(cases.iter().map(|(_, request)| exchange(lb, request))).await;
    let mut wrong: Vec<String> = cases
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| !(answer.closed && allowed.contains(&answer.statuses.as_slice())))
        .map(|((name, _), answer)| {
            format!(
                "{name}: got {:?}, closed: {}, received {:?}",
                answer.statuses, answer.closed, answer.raw
            )
        })
        .collect();

    // The backend records a request before it answers, so once the clean one is answered it has been recorded.
    let clean = response_on_new_connection(lb, "/clean").await;
    if (clean.status, clean.text().as_str()) != (200, "saw GET /clean") {
        wrong.push(format!("lb no longer serves a clean request: {clean:?}"));
    }
    let targets = backend.targets();
    let unexpected: Vec<&String> = match reach {
        Reach::Nothing => targets.iter().filter(|t| *t != "/clean").collect(),
        Reach::HeadsOnly => targets
            .iter()
            .filter(|t| {
                !cases
                    .iter()
                    .any(|(_, r)| r.starts_with(format!("POST {t} ").as_bytes()))
            })
            .filter(|t| *t != "/clean")
            .collect(),
    };
    if !unexpected.is_empty() {
        wrong.push(format!(
            "the backend got {unexpected:?} (allowed: {reach:?}); all it got: {:?}",
            backend.requests()
        ));
    }
    if backend.received("smuggled") {
        wrong.push(format!(
            "smuggled bytes reached the backend: {:?}",
            backend.requests()
        ));
    }
    assert!(
        wrong.is_empty(),
        "{} problems on {:?} ({} cases, each wanting one of {allowed:?} and a close):\n{}",
        wrong.len(),
        lb.path,
        cases.len(),
        wrong.join("\n")
    );
}

/// GETs `target` on a fresh connection (closed after the answer) and answers the response.
async fn response_on_new_connection(lb: &Lb, target: &str) -> RawResponse {
    let mut conn = lb.raw().await;
    conn.send(
        format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    tokio::time::timeout(CLOSE_WITHIN, conn.response())
        .await
        .unwrap_or_else(|_| panic!("no whole response to GET {target} within {CLOSE_WITHIN:?}"))
}

/// What `lb` sent back on one connection.
#[derive(Debug)]
struct Answer {
    /// The status of every response, in order.
    statuses: Vec<u16>,
    /// Whether `lb` closed the connection within [`CLOSE_WITHIN`].
    closed: bool,
    raw: String,
}

/// Writes `request` on a fresh connection (behind a clean one on [`Path::GenericSecond`], whose answer is left
/// out of the statuses), then reads whatever comes until `lb` closes it or [`CLOSE_WITHIN`] passes. The write side
/// stays open: the close must be `lb`'s own decision.
async fn exchange(lb: &Lb, request: &[u8]) -> Answer {
    let mut stream = lb.connect().await;
    // lb may rightly refuse and close before it has read everything.
    if stream.write_all(&lb.bytes(request)).await.is_ok() {
        let _ = stream.flush().await;
    }
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    };
    let closed = tokio::time::timeout(CLOSE_WITHIN, read).await.is_ok();
    let raw = lb.own_answers(String::from_utf8_lossy(&received).into_owned());
    let statuses = status_lines(&raw).map(|(_, status)| status).collect();
    Answer {
        statuses,
        closed,
        raw,
    }
}

/// Where each status line in `raw` starts, and its status: wherever `HTTP/1.x NNN ` occurs, since a response
/// whose body does not end in CRLF runs straight into the next one.
fn status_lines(raw: &str) -> impl Iterator<Item = (usize, u16)> + '_ {
    raw.match_indices("HTTP/1.").filter_map(|(at, _)| {
        let status = raw.get(at + 9..at + 12)?.parse().ok()?;
        (raw.get(at + 8..at + 9) == Some(" ")).then_some((at, status))
    })
}
