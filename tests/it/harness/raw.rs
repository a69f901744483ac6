//! [`RawConn`]: a client socket that sends bytes exactly as given and reads HTTP/1 responses by hand, for what a
//! real HTTP client will not send or would hide (malformed requests, pipelining, how a connection ends).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::PATIENCE;

/// One response read off a [`RawConn`].
#[derive(Debug)]
pub struct RawResponse {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a [`RawConn`] runs over: a TCP stream, or a TLS stream over one.
pub trait RawStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawStream for T {}

/// A client socket that sends bytes exactly as given and parses HTTP/1 responses by hand.
pub struct RawConn {
    stream: BufReader<Box<dyn RawStream>>,
    /// A status line read by `try_response` before the rest.
    pending_status_line: Option<String>,
    said_close: bool,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect to lb");
        RawConn::from_stream(stream)
    }

    pub fn from_stream(stream: impl RawStream + 'static) -> RawConn {
        RawConn {
            stream: BufReader::new(Box::new(stream)),
            pending_status_line: None,
            said_close: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("send to lb");
    }

    /// Sends, for when `lb` may rightly close the connection before reading everything. Flushed: a TLS stream
    /// (tokio-rustls) may keep records it could not write at once until the next write or flush.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await
    }

    /// Reads one response: the head, then a body framed by Content-Length, chunked encoding, or the end of the
    /// connection.
    pub async fn response(&mut self) -> RawResponse {
        self.response_within(PATIENCE).await
    }

    /// Reads one response, waiting for it at most `patience` (on the test's clock: a paused one advances only as the
    /// runtime's timers make it, so a wait for `lb`'s own timeouts must allow for them).
    pub async fn response_within(&mut self, patience: Duration) -> RawResponse {
        tokio::time::timeout(patience, self.read_response(false))
            .await
            .unwrap_or_else(|_| panic!("no response within {patience:?}"))
    }

    /// Reads one response, or says why there was none (the connection closed or failed first).
    pub async fn try_response(&mut self) -> Result<RawResponse, String> {
        let read = tokio::time::timeout(PATIENCE, async {
            let line = self.try_line().await?;
            if line.is_empty() {
                return Err("closed before a response".to_owned());
            }
            self.pending_status_line = Some(line);
            Ok(self.read_response(false).await)
        });
        let response = read.await.map_err(|_| "no response in time".to_owned())??;
        self.said_close = response
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        Ok(response)
    }

    /// Whether the last response read by [`RawConn::try_response`] said `connection: close`.
    pub fn last_said_close(&self) -> bool {
        self.said_close
    }

    async fn try_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Reads the response to a HEAD request: a head, never a body.
    pub async fn head_response(&mut self) -> RawResponse {
        tokio::time::timeout(PATIENCE, self.read_response(true))
            .await
            .expect("a response within the patience")
    }

    async fn read_response(&mut self, to_head: bool) -> RawResponse {
        let status_line = match self.pending_status_line.take() {
            Some(line) => line,
            None => self.line().await,
        };
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok());
        let status = status.unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status_line,
            status,
            headers,
            body: Vec::new(),
        };
        if to_head || matches!(status, 100..=199 | 204 | 304) {
            return response;
        }
        if let Some(length) = response.header("content-length") {
            let mut body = vec![0; length.parse().expect("a numeric content-length")];
            self.stream
                .read_exact(&mut body)
                .await
                .expect("the whole body");
            response.body = body;
        } else if response
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            loop {
                let size = usize::from_str_radix(self.line().await.split(';').next().unwrap(), 16);
                let size = size.expect("a chunk size");
                let mut chunk = vec![0; size + 2];
                self.stream
                    .read_exact(&mut chunk)
                    .await
                    .expect("a whole chunk");
                response.body.extend_from_slice(&chunk[..size]);
                if size == 0 {
                    break;
                }
            }
        } else {
            self.stream
                .read_to_end(&mut response.body)
                .await
                .expect("the body up to close");
        }
        response
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self.stream.read_line(&mut line).await.expect("read a line");
        assert!(read > 0, "the connection closed before a full response");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// Reads exactly `n` bytes past what was read so far (after a `101`, the tunnel's bytes); panics if the
    /// connection ends first or after [`PATIENCE`].
    pub async fn read_exactly(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        let read = tokio::time::timeout(PATIENCE, self.stream.read_exact(&mut bytes)).await;
        let read = read.unwrap_or_else(|_| panic!("{n} bytes did not arrive within the patience"));
        read.unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        bytes
    }

    /// Ends the client's sending side (a FIN); reading goes on.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .get_mut()
            .shutdown()
            .await
            .expect("shut down the write side");
    }

    /// Reads whatever arrives until the peer closes (or resets) the connection; panics after `timeout`.
    pub async fn read_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let mut received = Vec::new();
        let read = async {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = self.stream.read(&mut buf).await {
                received.extend_from_slice(&buf[..n]);
            }
        };
        let closed = tokio::time::timeout(timeout, read).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            closed.is_ok(),
            "still open after {timeout:?}, received {text:?}"
        );
        received
    }
}
