//! HTTP/2 on both sides of `lb` in tests: [`H2Backend`] (hyper's server speaking HTTP/1.1 and h2c with prior
//! knowledge on one port), [`GrpcBackend`] (a tonic server with a hand-written service over raw bytes: no protoc),
//! an h2c client ([`h2c_client`]) and [`RawH2`], a client that writes frames by hand for what no well-behaved
//! client sends (more streams than allowed, a burst of resets).
//!
//! Routes of an `H2Backend` (every one but the health path is recorded as a [`Seen`]):
//! - `/health`: 200;
//! - `/echo`: answers the request body as it streams in;
//! - `/stall`: `part` of a body that never ends;
//! - `/trailers`: `payload`, then the trailers `x-sum: 42` and `grpc-status: 0`;
//! - `/slow?ms=N`: the greeting after N milliseconds;
//! - anything else: 200 `hello from backend <id>`, with `x-version` (the HTTP version it was asked in).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::{stream, Stream};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::backend::Seen;
use super::PATIENCE;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// hyper's server on both HTTP/1.1 and h2c (prior knowledge), recording what it saw.
pub struct H2Backend {
    pub id: u64,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Seen, String)>>>,
    server: tokio::task::JoinHandle<()>,
}

impl H2Backend {
    pub async fn start(id: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(id, req, record.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        H2Backend {
            id,
            addr,
            seen,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening: new connections are refused (those open stay).
    pub fn stop(&self) {
        self.server.abort();
    }

    /// Requests seen (health checks not counted).
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request seen, and the HTTP version it came in (`HTTP/2.0`, `HTTP/1.1`).
    pub fn last_seen(&self) -> (Seen, String) {
        let seen = self.seen.lock().unwrap();
        seen.last().cloned().expect("a request was seen")
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    id: u64,
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<(Seen, String)>>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        return Ok(Response::new(full("ok")));
    }
    let version = format!("{:?}", req.version());
    seen.lock().unwrap().push((Seen::of(&req), version.clone()));
    let response = match path.as_str() {
        "/echo" => Response::new(req.into_body().boxed()),
        "/stall" => {
            let start = stream::iter([Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(
                b"part",
            )))]);
            Response::new(BodyExt::boxed(StreamBody::new(
                futures_util::StreamExt::chain(start, stream::pending()),
            )))
        }
        "/trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-sum", "42".parse().unwrap());
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = stream::iter([
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"payload"))),
                Ok(Frame::trailers(trailers)),
            ]);
            Response::new(StreamBody::new(frames).boxed())
        }
        _ => {
            if let Some(ms) = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|ms| ms.parse().ok())
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut response = Response::new(full(format!("hello from backend {id}")));
            response
                .headers_mut()
                .insert("x-version", version.parse().unwrap());
            response
        }
    };
    Ok(response)
}

/// An h2c (prior knowledge) connection to `addr`: its sender, for as many streams as wanted.
pub async fn h2c_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// A request of `method` to `path` (authority `lb`) with `body`.
pub fn h2_request(method: &str, path: &str, body: impl Into<Bytes>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("http://lb{path}"))
        .body(full(body))
        .unwrap()
}

/// Sends `request` on `sender` and reads the whole answer: status, headers, body, trailers.
pub async fn h2_fetch(
    sender: &mut hyper::client::conn::http2::SendRequest<Body>,
    request: Request<Body>,
) -> (u16, http::HeaderMap, Bytes, Option<http::HeaderMap>) {
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("a body in time")
        .expect("a whole body");
    let trailers = collected.trailers().cloned();
    (
        parts.status.as_u16(),
        parts.headers,
        collected.to_bytes(),
        trailers,
    )
}

/// A client that writes HTTP/2 frames by hand (after the preface and an empty SETTINGS).
pub struct RawH2 {
    stream: TcpStream,
    read: Vec<u8>,
}

/// A frame as read: type, flags, stream, payload.
#[derive(Debug)]
#[allow(dead_code)] // read when a test fails (Debug)
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub const RST_STREAM: u8 = 0x3;
pub const GOAWAY: u8 = 0x7;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

impl RawFrame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

impl RawH2 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut raw = RawH2 {
            stream,
            read: Vec::new(),
        };
        raw.frame(0x4, 0, 0, &[]).await;
        raw
    }

    async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = Vec::with_capacity(9 + payload.len());
        out.put_uint(payload.len() as u64, 3);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_u32(stream);
        out.extend_from_slice(payload);
        // A peer that closed may refuse more: what it said before is what the tests read.
        let _ = self.stream.write_all(&out).await;
    }

    /// A GET of `path` on `stream` (HEADERS with END_STREAM and END_HEADERS; HPACK literals, no Huffman).
    pub async fn get(&mut self, stream: u32, path: &str) {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.push(0x04); // :path, literal without indexing
        block.push(path.len() as u8);
        block.extend_from_slice(path.as_bytes());
        block.push(0x01); // :authority
        block.push(2);
        block.extend_from_slice(b"lb");
        self.frame(0x1, 0x5, stream, &block).await;
    }

    /// The start of a GET's header block on `stream`, to be continued (HEADERS without END_HEADERS).
    pub async fn open_headers(&mut self, stream: u32) {
        self.frame(0x1, 0x1, stream, &[0x82, 0x86, 0x84, 0x01, 2, b'l', b'b'])
            .await;
    }

    /// A CONTINUATION frame on `stream` carrying one header `x-a` of `len` bytes (4000 at most; not the last).
    pub async fn continuation(&mut self, stream: u32, len: usize) {
        assert!((127..=4000).contains(&len));
        let mut block = vec![0x00, 3, b'x', b'-', b'a'];
        let rest = len - 127;
        block.extend_from_slice(&[0x7f, (rest & 0x7f) as u8 | 0x80, (rest >> 7) as u8]);
        block.resize(block.len() + len, b'a');
        self.frame(0x9, 0, stream, &block).await;
    }

    /// A PING (not an acknowledgement).
    pub async fn ping(&mut self) {
        self.frame(0x6, 0, 0, &[0; 8]).await;
    }

    pub async fn reset(&mut self, stream: u32, code: u32) {
        self.frame(RST_STREAM, 0, stream, &code.to_be_bytes()).await;
    }

    /// Reads frames (acknowledging the server's SETTINGS) until `done` says so, the connection closes, or `wait`
    /// passes; answers every frame read.
    pub async fn read_until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&[RawFrame]) -> bool,
    ) -> Vec<RawFrame> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while self.read.len() >= 9 {
                let len = (usize::from(self.read[0]) << 16)
                    | (usize::from(self.read[1]) << 8)
                    | usize::from(self.read[2]);
                if self.read.len() < 9 + len {
                    break;
                }
                let mut head = &self.read[..9];
                head.advance(3);
                let (kind, flags) = (head.get_u8(), head.get_u8());
                let stream = head.get_u32() & 0x7fff_ffff;
                let payload = self.read[9..9 + len].to_vec();
                self.read.drain(..9 + len);
                if kind == 0x4 && flags & 1 == 0 {
                    self.frame(0x4, 1, 0, &[]).await;
                }
                frames.push(RawFrame {
                    kind,
                    flags,
                    stream,
                    payload,
                });
            }
            if done(&frames) {
                return frames;
            }
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.read.extend_from_slice(&buf[..n]),
                _ => return frames,
            }
        }
    }
}

/// A tonic gRPC server (h2c only) with the service `test.Greeter`: `Hello` (unary: `hello <name> from backend
/// <id>`; the name `missing` answers NOT_FOUND) and `Count` (server streaming: `<id>:1` … `<id>:N` for N in the
/// request).
pub struct GrpcBackend {
    pub id: u64,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl GrpcBackend {
    pub async fn start(id: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(Greeter { id }, incoming)
                .await;
        });
        GrpcBackend { id, addr, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// gRPC messages as raw bytes (what a generated codec would do with protobuf, without protoc).
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The backend's service: routes by path as generated code does.
#[derive(Clone)]
struct Greeter {
    id: u64,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let id = self.id;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            Ok(match request.uri().path() {
                "/test.Greeter/Hello" => grpc.unary(Hello { id }, request).await,
                "/test.Greeter/Count" => grpc.server_streaming(Count { id }, request).await,
                _ => tonic::Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

#[derive(Clone)]
struct Hello {
    id: u64,
}

impl tonic::codegen::Service<tonic::Request<Vec<u8>>> for Hello {
    type Response = tonic::Response<Vec<u8>>;
    type Error = tonic::Status;
    type Future = BoxFuture<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        let id = self.id;
        Box::pin(async move {
            let name = String::from_utf8_lossy(request.get_ref()).into_owned();
            if name == "missing" {
                return Err(tonic::Status::not_found("no such name"));
            }
            let mut response =
                tonic::Response::new(format!("hello {name} from backend {id}").into_bytes());
            let forwarded = request
                .metadata()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if let Ok(value) = forwarded.parse() {
                response
                    .metadata_mut()
                    .insert("x-seen-forwarded-for", value);
            }
            Ok(response)
        })
    }
}

#[derive(Clone)]
struct Count {
    id: u64,
}

type Messages = Pin<Box<dyn Stream<Item = Result<Vec<u8>, tonic::Status>> + Send>>;

impl tonic::codegen::Service<tonic::Request<Vec<u8>>> for Count {
    type Response = tonic::Response<Messages>;
    type Error = tonic::Status;
    type Future = BoxFuture<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        let id = self.id;
        Box::pin(async move {
            let n: u32 = String::from_utf8_lossy(request.get_ref())
                .parse()
                .map_err(|_| tonic::Status::invalid_argument("not a number"))?;
            let messages = (1..=n).map(move |i| Ok(format!("{id}:{i}").into_bytes()));
            let messages: Messages = Box::pin(stream::iter(messages));
            Ok(tonic::Response::new(messages))
        })
    }
}

/// A gRPC client over one h2c connection to `addr`.
pub async fn grpc_client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("a gRPC channel");
    tonic::client::Grpc::new(channel)
}
