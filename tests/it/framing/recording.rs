//! A backend that reads HTTP/1.1 by hand and records what it reads.

use super::*;

/// One request as a [`RecordingBackend`] read it.
#[derive(Clone)]
pub(super) struct Received {
    /// Which connection it came on: the backend numbers them from 0 as it accepts them.
    pub(super) connection: usize,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) headers: Vec<(String, String)>,
    /// `None` until the body has been read whole, by Transfer-Encoding if it mentions chunked, else by the first
    /// Content-Length.
    pub(super) body: Option<Vec<u8>>,
}

impl std::fmt::Debug for Received {
    /// One line: the connection, the request line, the framing headers and the body as text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let framing: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| name == "content-length" || name == "transfer-encoding")
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        let body = self.body.as_ref().map(|b| String::from_utf8_lossy(b));
        write!(
            f,
            "[connection {}] {} {} {framing:?} body {body:?}",
            self.connection, self.method, self.target
        )
    }
}

#[derive(Default)]
pub(super) struct Recording {
    /// Health checks excluded.
    pub(super) requests: Vec<Received>,
    /// Every byte received, on every connection, health checks included.
    pub(super) bytes: Vec<u8>,
    pub(super) connections: usize,
}

/// A backend on a bare socket that reads HTTP/1.1 by hand, leniently (as a naive server would: bare LF ends a line,
/// any Transfer-Encoding mentioning chunked means chunked, else the first Content-Length), keeps connections alive,
/// and records what it reads. Health checks get 200; any other request gets 200 `saw <method> <target>`, or a fixed
/// reply (see [`RecordingBackend::replying`]).
pub(super) struct RecordingBackend {
    pub(super) addr: SocketAddr,
    pub(super) recording: Arc<Mutex<Recording>>,
    pub(super) server: JoinHandle<()>,
}

impl RecordingBackend {
    pub(super) async fn start() -> Self {
        Self::serve(None).await
    }

    /// Answers requests whose target starts with `prefix` with exactly `reply`, and keeps the connection open.
    pub(super) async fn replying(prefix: &'static str, reply: &'static [u8]) -> Self {
        Self::serve(Some((prefix, reply))).await
    }

    pub(super) async fn serve(reply: Option<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a recording backend");
        let addr = listener.local_addr().expect("recording backend address");
        let recording = Arc::new(Mutex::new(Recording::default()));
        let shared = recording.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let connection = {
                    let mut recording = shared.lock().unwrap();
                    recording.connections += 1;
                    recording.connections - 1
                };
                let wire = Wire {
                    stream,
                    buf: Vec::new(),
                    recording: shared.clone(),
                };
                connections.spawn(wire.serve(connection, reply));
            }
        });
        RecordingBackend {
            addr,
            recording,
            server,
        }
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn requests(&self) -> Vec<Received> {
        self.recording.lock().unwrap().requests.clone()
    }

    pub(super) fn targets(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.target).collect()
    }

    /// Whether `needle` occurs anywhere in the bytes received.
    pub(super) fn received(&self, needle: &str) -> bool {
        let recording = self.recording.lock().unwrap();
        let needle = needle.as_bytes();
        recording.bytes.windows(needle.len()).any(|w| w == needle)
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A target prefix, and the exact bytes to answer requests for such targets with.
pub(super) type Reply = (&'static str, &'static [u8]);

/// The largest head or chunk the backend reads: far beyond any test's.
pub(super) const WIRE_LIMIT: usize = 1024 * 1024;

/// One connection to a [`RecordingBackend`]: the socket, what was read but not yet parsed, and the recording.
pub(super) struct Wire {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
    pub(super) recording: Arc<Mutex<Recording>>,
}

impl Wire {
    /// Serves requests until the peer closes, asks to close, or sends what even a lenient reader cannot frame.
    pub(super) async fn serve(mut self, connection: usize, reply: Option<Reply>) {
        while let Some((method, target, headers)) = self.head().await {
            if target == HEALTH_PATH {
                let _ = self
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            } else {
                let index = {
                    let mut recording = self.recording.lock().unwrap();
                    recording.requests.push(Received {
                        connection,
                        method: method.clone(),
                        target: target.clone(),
                        headers: headers.clone(),
                        body: None,
                    });
                    recording.requests.len() - 1
                };
                let Some(body) = self.body(&headers).await else {
                    return;
                };
                self.recording.lock().unwrap().requests[index].body = Some(body);
                let answer = match reply {
                    Some((prefix, reply)) if target.starts_with(prefix) => reply.to_vec(),
                    _ => {
                        let text = format!("saw {method} {target}");
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        )
                        .into_bytes()
                    }
                };
                if self.stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
            let close = headers
                .iter()
                .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"));
            if close {
                let _ = self.stream.shutdown().await;
                return;
            }
        }
    }

    /// Reads more; `false` at the end of the stream or past the limit.
    pub(super) async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(n @ 1..) if self.buf.len() < WIRE_LIMIT => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.recording
                    .lock()
                    .unwrap()
                    .bytes
                    .extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// One line, without its LF and any CR before it.
    pub(super) async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Some(String::from_utf8_lossy(line).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    pub(super) async fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buf.len() < len {
            if len > WIRE_LIMIT || !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..len).collect())
    }

    /// The method, the target and the headers (names lowercased, values trimmed).
    pub(super) async fn head(&mut self) -> Option<(String, String, Vec<(String, String)>)> {
        let mut request_line = self.line().await?;
        while request_line.is_empty() {
            request_line = self.line().await?;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Some((method, target, headers));
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    pub(super) async fn body(&mut self, headers: &[(String, String)]) -> Option<Vec<u8>> {
        let value = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.to_ascii_lowercase())
        };
        if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let size_line = self.line().await?;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).ok()?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    return Some(body);
                }
                body.extend(self.take(size).await?);
                if !self.line().await?.is_empty() {
                    return None;
                }
            }
        }
        match value("content-length") {
            Some(length) => self.take(length.parse().ok()?).await,
            None => Some(Vec::new()),
        }
    }
}
