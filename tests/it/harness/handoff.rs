//! [`HandoffBackend`]: a bare-socket backend that answers health checks itself and hands every other connection,
//! with the head of its first request already read, to the test ([`Handed`]), which then plays the server by hand:
//! a `101` and a made-up protocol after it, half-closes, floods, silences.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::{HEALTH_PATH, PATIENCE};

/// A request head as the backend read it (leniently).
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header(&self.headers, name)
    }

    /// Every value of the header `name` (any case), in the order received.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str()).collect()
    }

    /// The comma-separated tokens of every `Connection` header, lowercased.
    pub fn connection_tokens(&self) -> Vec<String> {
        tokens(self.header_values("connection"))
    }
}

/// Asserts that a request reached the backend as plain HTTP: no `Upgrade`, no `upgrade` in `Connection`. `what`
/// names the case in the failure message.
pub fn assert_not_asked_to_upgrade(seen: &crate::harness::backend::Seen, what: &str) {
    assert_eq!(
        seen.header_values("upgrade"),
        Vec::<&str>::new(),
        "{what} reached the backend: {seen:?}"
    );
    let connection = tokens(seen.header_values("connection"));
    assert!(!connection.contains(&"upgrade".to_owned()), "{seen:?}");
}

/// The comma-separated tokens of header values, trimmed and lowercased.
pub fn tokens<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// One backend connection handed to the test, with the head of its first request.
pub struct Handed {
    pub head: Head,
    stream: TcpStream,
    /// Bytes read past the head.
    buf: Vec<u8>,
}

impl Handed {
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the backend writes to lb");
    }

    /// Reads exactly `n` bytes; panics if the connection ends first or after [`PATIENCE`].
    pub async fn read_exactly(&mut self, n: usize) -> Vec<u8> {
        let read = async {
            while self.buf.len() < n {
                let mut chunk = vec![0u8; 64 * 1024];
                let got = self.stream.read(&mut chunk).await.expect("backend read");
                assert!(
                    got > 0,
                    "the connection from lb ended after {} of {n} bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                );
                self.buf.extend_from_slice(&chunk[..got]);
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .unwrap_or_else(|_| panic!("the backend got {} of {n} bytes", self.buf.len()));
        self.buf.drain(..n).collect()
    }

    /// Reads until the peer (lb) ends its sending side (a FIN, or a reset); answers what came before it. Panics
    /// after `timeout`.
    pub async fn read_until_eof(&mut self, timeout: Duration) -> Vec<u8> {
        let mut received = std::mem::take(&mut self.buf);
        let read = async {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = self.stream.read(&mut chunk).await {
                received.extend_from_slice(&chunk[..n]);
            }
        };
        let ended = tokio::time::timeout(timeout, read).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            ended.is_ok(),
            "lb still sending to the backend after {timeout:?}, received {text:?}"
        );
        received
    }

    /// Ends the backend's sending side (a FIN); reading goes on.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .expect("shut down the write side");
    }

    /// The socket, and the bytes already read past the head.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}

pub struct HandoffBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handed: mpsc::UnboundedReceiver<Handed>,
    server: JoinHandle<()>,
}

impl HandoffBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a hand-off backend");
        let addr = listener.local_addr().expect("hand-off backend address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (hand, handed) = mpsc::unbounded_channel();
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (hand, counter) = (hand.clone(), counter.clone());
                        connections.spawn(first_request(stream, hand, counter));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        HandoffBackend {
            addr,
            accepted,
            handed,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections whose first request was not a health check, handed or waiting to be.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next connection that brought a request; panics after [`PATIENCE`].
    pub async fn next(&mut self) -> Handed {
        self.try_next(PATIENCE)
            .await
            .expect("a request reached the backend")
    }

    /// The next connection that brought a request within `timeout`, if any.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Handed> {
        tokio::time::timeout(timeout, self.handed.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for HandoffBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn first_request(
    mut stream: TcpStream,
    hand: mpsc::UnboundedSender<Handed>,
    accepted: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let Some(head) = read_head(&mut stream, &mut buf).await else {
        return;
    };
    if head.target == HEALTH_PATH {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
        let _ = stream.write_all(ok).await;
        let _ = stream.shutdown().await;
        return;
    }
    accepted.fetch_add(1, Ordering::SeqCst);
    let _ = hand.send(Handed { head, stream, buf });
}

/// Reads one request head; what follows it stays in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
    })
}
