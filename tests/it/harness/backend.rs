//! The servers the tests put behind `lb`, each on 127.0.0.1 with a port of its own.
//!
//! [`TestBackend`] is a real hyper HTTP/1 server with a few routes and knobs; [`RawBackend`] is a bare socket that
//! answers health checks and misbehaves on everything else, for the cases no well-behaved server can produce.
//!
//! Routes of a `TestBackend` (every one but the health path is recorded as a [`Seen`]):
//! - `/health`: 200, or 500 after `set_healthy(false)`;
//! - `/slow?ms=N`: the greeting after N milliseconds;
//! - `/download?bytes=N`: N bytes of [`pattern_chunks`], generated chunk by chunk, with a Content-Length;
//! - `/upload`: reads the body as it comes and answers `<sha256 hex> <length>`;
//! - `/echo...`: answers the request body;
//! - `/die?bytes=N[&chunked=1]`: promises 2N bytes (or a chunked body), sends N, then drops the connection;
//! - anything else: 200 `hello from backend <id>` with an `x-backend-id` header.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The path `lb` is configured to health-check (see `LbBuilder`).
pub const HEALTH_PATH: &str = "/health";

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn of(req: &Request<Incoming>) -> Self {
        Seen {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req
                .headers()
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.to_string(), value)
                })
                .collect(),
        }
    }

    /// Every value of the header `name`, in the order received.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the header `name`, which must appear at most once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.header_values(name);
        assert!(
            values.len() <= 1,
            "{name} sent {} times: {values:?}",
            values.len()
        );
        values.first().copied()
    }
}

struct Shared {
    id: u64,
    healthy: AtomicBool,
    health_checks: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A real HTTP/1 server that can be made unhealthy, stopped and restarted on the same port.
pub struct TestBackend {
    pub id: u64,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl TestBackend {
    pub async fn start(id: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        TestBackend::serve_on(id, listener)
    }

    /// A backend on `addr` (another loopback address than 127.0.0.1, say, for names that resolve to it), or `None`
    /// when it is taken.
    pub async fn start_at(id: u64, addr: SocketAddr) -> Option<Self> {
        let listener = TcpListener::bind(addr).await.ok()?;
        Some(TestBackend::serve_on(id, listener))
    }

    fn serve_on(id: u64, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("backend address");
        let shared = Arc::new(Shared {
            id,
            healthy: AtomicBool::new(true),
            health_checks: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        TestBackend {
            id,
            addr,
            shared,
            server: Mutex::new(Some(server)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes the health path answer 200 (`true`) or 500 (`false`); other paths are unaffected.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received, health checks excluded.
    pub fn hits(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// The last request received, health checks excluded.
    pub fn last_seen(&self) -> Seen {
        let seen = self.shared.seen.lock().unwrap();
        seen.last()
            .cloned()
            .expect("the backend has seen no request")
    }

    /// Closes the listener and every open connection, at once: connecting is refused from now on.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot bind {} again: {e}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let server = tokio::spawn(serve(listener, self.shared.clone()));
        *self.server.lock().unwrap() = Some(server);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}

/// Accepts until aborted; aborting drops the listener and the `JoinSet`, which aborts every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| respond(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == HEALTH_PATH {
        shared.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = match shared.healthy.load(Ordering::SeqCst) {
            true => StatusCode::OK,
            false => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return Ok(text(status, "health"));
    }
    shared.seen.lock().unwrap().push(Seen::of(&req));
    let number = |name: &str| query_number(req.uri().query(), name);
    let response = match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms").unwrap_or(1000))).await;
            hello(shared.id)
        }
        "/download" => download(number("bytes").unwrap_or(0)),
        "/die" => die(number("bytes").unwrap_or(1000), number("chunked").is_some()),
        "/upload" => upload(req.into_body()).await,
        p if p.starts_with("/echo") => match req.into_body().collect().await {
            Ok(body) => Response::new(full(body.to_bytes())),
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("broken body: {e}")),
        },
        _ => hello(shared.id),
    };
    Ok(response)
}

fn query_number(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response
}

fn hello(id: u64) -> Response<Body> {
    let mut response = text(StatusCode::OK, &format!("hello from backend {id}"));
    response.headers_mut().insert("x-backend-id", id.into());
    response
}

fn download(bytes: u64) -> Response<Body> {
    let body = StreamBody::new(pattern_chunks(bytes).map_ok(Frame::data));
    let mut response = Response::new(body.boxed_unsync());
    response.headers_mut().insert(CONTENT_LENGTH, bytes.into());
    response
}

async fn upload(mut body: Incoming) -> Response<Body> {
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    length += data.len() as u64;
                    hasher.update(&data);
                }
            }
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("broken upload: {e}")),
        }
    }
    text(StatusCode::OK, &format!("{:x} {length}", hasher.finalize()))
}

/// Sends `bytes` bytes of a body that was promised longer, waits for them to leave, then fails the body, which makes
/// hyper drop the connection.
fn die(bytes: u64, chunked: bool) -> Response<Body> {
    let part = stream::iter([Ok(Frame::data(Bytes::from(vec![b'x'; bytes as usize])))]);
    let death = stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(io::Error::other("the backend dies mid-response"))
    });
    let mut response = Response::new(StreamBody::new(part.chain(death)).boxed_unsync());
    if !chunked {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, (2 * bytes).into());
    }
    response
}

const CHUNK: u64 = 64 * 1024;

/// `total` bytes of deterministic data, made one 64 KiB chunk at a time. Each chunk starts with its index, so a lost,
/// repeated or reordered chunk changes the checksum.
pub fn pattern_chunks(total: u64) -> impl Stream<Item = io::Result<Bytes>> + Send + Sync + 'static {
    stream::iter((0..total.div_ceil(CHUNK)).map(move |index| Ok(pattern_chunk(index, total))))
}

/// The SHA-256 of `pattern_chunks(total)`, in lowercase hex.
pub fn pattern_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    for index in 0..total.div_ceil(CHUNK) {
        hasher.update(pattern_chunk(index, total));
    }
    format!("{:x}", hasher.finalize())
}

fn pattern_chunk(index: u64, total: u64) -> Bytes {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..CHUNK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    });
    let len = (total - index * CHUNK).min(CHUNK) as usize;
    let mut chunk = block[..len].to_vec();
    let stamp = index.to_le_bytes();
    let n = len.min(stamp.len());
    chunk[..n].copy_from_slice(&stamp[..n]);
    Bytes::from(chunk)
}

/// A socket that passes health checks (200, then close) and answers any other request with `reply`, possibly
/// nothing, then closes.
pub struct RawBackend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(reply: &'static [u8]) -> Self {
        Self::serve(reply, false).await
    }

    /// Sends `reply` and then keeps the connection open without a word (for up to 30 s).
    pub async fn start_stalling(reply: &'static [u8]) -> Self {
        Self::serve(reply, true).await
    }

    async fn serve(reply: &'static [u8], stall: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a raw backend");
        let addr = listener.local_addr().expect("raw backend address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(raw_exchange(stream, reply, counter.clone(), stall));
            }
        });
        RawBackend { addr, hits, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received, health checks excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn raw_exchange(
    mut stream: TcpStream,
    reply: &'static [u8],
    hits: Arc<AtomicUsize>,
    stall: bool,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let request_line = String::from_utf8_lossy(&head);
    let target = request_line.split(' ').nth(1).unwrap_or_default();
    let health = target == HEALTH_PATH;
    let answer = if health {
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"[..]
    } else {
        hits.fetch_add(1, Ordering::SeqCst);
        reply
    };
    let _ = stream.write_all(answer).await;
    if stall && !health {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    let _ = stream.shutdown().await;
}
