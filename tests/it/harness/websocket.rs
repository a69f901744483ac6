//! [`WsEchoBackend`]: a real WebSocket server (tokio-tungstenite) that echoes text and binary messages, closes the
//! session itself when told `bye`, and answers plain HTTP requests (lb's health checks) with a small `200`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The text message that makes the server start the close handshake.
pub const BYE: &str = "bye";
/// The close frame the server sends after [`BYE`].
pub const BYE_CODE: CloseCode = CloseCode::Normal;
pub const BYE_REASON: &str = "bye bye";

#[derive(Default)]
struct Shared {
    /// The request headers of every WebSocket handshake, in order.
    handshakes: Mutex<Vec<Vec<(String, String)>>>,
    /// Plain HTTP requests answered (health checks included).
    plain: AtomicUsize,
    /// Sessions in which the server received the peer's Close frame.
    closes_received: AtomicUsize,
    /// Sessions that ended (the server dropped its socket).
    ended: AtomicUsize,
}

pub struct WsEchoBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl WsEchoBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a websocket backend");
        let addr = listener.local_addr().expect("websocket backend address");
        let shared = Arc::new(Shared::default());
        let server = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut connections = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            connections.spawn(connection(stream, shared.clone()));
                        }
                        Some(_) = connections.join_next() => {}
                    }
                }
            })
        };
        WsEchoBackend {
            addr,
            shared,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request headers of every WebSocket handshake so far (names lowercased).
    pub fn handshakes(&self) -> Vec<Vec<(String, String)>> {
        self.shared.handshakes.lock().unwrap().clone()
    }

    /// Sessions in which the server received the client's Close frame.
    pub fn closes_received(&self) -> usize {
        self.shared.closes_received.load(Ordering::SeqCst)
    }

    /// Sessions the server has ended.
    pub fn ended(&self) -> usize {
        self.shared.ended.load(Ordering::SeqCst)
    }
}

impl Drop for WsEchoBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some((head, head_len)) = peek_head(&stream).await else {
        return;
    };
    let websocket = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.to_ascii_lowercase().contains("websocket")
        })
    });
    if !websocket {
        // Consume the head (a GET has no body) and answer.
        let mut discard = vec![0u8; head_len];
        if stream.read_exact(&mut discard).await.is_err() {
            return;
        }
        shared.plain.fetch_add(1, Ordering::SeqCst);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
        let _ = stream.write_all(ok).await;
        let _ = stream.shutdown().await;
        return;
    }
    // tungstenite's callback type fixes the error type (a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let record = {
        let shared = shared.clone();
        move |request: &Request, response: Response| {
            let headers = request
                .headers()
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.to_string(), value)
                })
                .collect();
            shared.handshakes.lock().unwrap().push(headers);
            Ok(response)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) if text.as_str() == BYE => {
                let frame = CloseFrame {
                    code: BYE_CODE,
                    reason: BYE_REASON.into(),
                };
                if ws.close(Some(frame)).await.is_err() {
                    break;
                }
            }
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            Message::Close(_) => {
                shared.closes_received.fetch_add(1, Ordering::SeqCst);
            }
            // Pings are answered by tungstenite itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    drop(ws);
    shared.ended.fetch_add(1, Ordering::SeqCst);
}

/// Peeks at the socket until it holds a whole request head; answers the head and its length in bytes (the socket
/// still holds it).
async fn peek_head(stream: &TcpStream) -> Option<(String, usize)> {
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..2000 {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(at) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            return Some((String::from_utf8_lossy(&buf[..at + 4]).into_owned(), at + 4));
        }
        // Part of a head: wait for the rest (peeking again at once would find the same bytes).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
