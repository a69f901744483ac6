//! [`ScriptedBackend`]: a keep-alive backend on a bare socket whose every answer is a script of raw writes, pauses
//! and closes, for the misbehaviours no well-behaved server produces (stray bytes after an answer, cut chunked
//! bodies, silent idle closes). It counts requests and open connections, so tests can see what `lb` does to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::HEALTH_PATH;

/// One request as the scripted backend read it (leniently).
#[derive(Debug, Clone)]
pub struct ScriptedRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// 0 for the first request on its connection, 1 for the next...
    pub on_connection: usize,
}

impl ScriptedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header(&self.headers, name)
    }
}

/// What the backend does, in order, to answer a request.
#[derive(Debug, Clone)]
pub enum Step {
    Write(Vec<u8>),
    Sleep(Duration),
    /// Closes the connection (a FIN).
    Close,
    /// Resets the connection.
    Reset,
    /// Turns Nagle's algorithm on (`true`) or off for this connection: with it on, a small write that follows
    /// another waits until the first is acknowledged (as Python's `http.server` does with a head and a body).
    Nagle(bool),
}

impl Step {
    pub fn write(bytes: impl AsRef<[u8]>) -> Step {
        Step::Write(bytes.as_ref().to_vec())
    }
}

type Script = dyn Fn(&ScriptedRequest) -> Vec<Step> + Send + Sync;

pub struct ScriptedBackend {
    addr: SocketAddr,
    counts: Arc<Counts>,
    server: JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    hits: AtomicUsize,
    open: AtomicUsize,
}

impl ScriptedBackend {
    /// Answers every request but the health checks with `script`, keeping connections open in between.
    pub async fn start(
        script: impl Fn(&ScriptedRequest) -> Vec<Step> + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_idle_close(None, script).await
    }

    /// Like [`ScriptedBackend::start`], and closes a connection without a word once it has been idle for `idle`
    /// (as many servers do with kept-alive connections).
    pub async fn start_with_idle_close(
        idle: Option<Duration>,
        script: impl Fn(&ScriptedRequest) -> Vec<Step> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a scripted backend");
        let addr = listener.local_addr().expect("scripted backend address");
        let counts = Arc::new(Counts::default());
        let script: Arc<Script> = Arc::new(script);
        let server = {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut connections = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            counts.open.fetch_add(1, Ordering::SeqCst);
                            let (counts, script) = (counts.clone(), script.clone());
                            connections.spawn(async move {
                                connection(stream, &counts, &*script, idle).await;
                                counts.open.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        Some(_) = connections.join_next() => {}
                    }
                }
            })
        };
        ScriptedBackend {
            addr,
            counts,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received, health checks excluded.
    pub fn hits(&self) -> usize {
        self.counts.hits.load(Ordering::SeqCst)
    }

    /// Connections open now (health checks included while they last).
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn connection(
    mut stream: TcpStream,
    counts: &Counts,
    script: &Script,
    idle: Option<Duration>,
) {
    let mut buf = Vec::new();
    for on_connection in 0.. {
        let read = read_request(&mut stream, &mut buf, on_connection);
        let request = match idle {
            Some(idle) if on_connection > 0 => match tokio::time::timeout(idle, read).await {
                Ok(request) => request,
                Err(_) => return,
            },
            _ => read.await,
        };
        let Some(request) = request else { return };
        if request.target == HEALTH_PATH {
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = stream.write_all(ok).await;
            return;
        }
        counts.hits.fetch_add(1, Ordering::SeqCst);
        for step in script(&request) {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(pause) => tokio::time::sleep(pause).await,
                Step::Close => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Step::Nagle(on) => {
                    let _ = stream.set_nodelay(!on);
                }
                Step::Reset => {
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    return;
                }
            }
        }
    }
}

/// Reads one request: its head, and a body framed by Content-Length or chunked (read up to the last chunk).
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    on_connection: usize,
) -> Option<ScriptedRequest> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut request = ScriptedRequest {
        method,
        target,
        headers,
        body: Vec::new(),
        on_connection,
    };
    if let Some(length) = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buf.len() < length {
            fill(stream, buf).await?;
        }
        request.body = buf.drain(..length).collect();
    } else if request
        .header("transfer-encoding")
        .is_some_and(|te| te.contains("chunked"))
    {
        let end = loop {
            if let Some(at) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                break at + 5;
            }
            fill(stream, buf).await?;
        };
        request.body = buf.drain(..end).collect();
    }
    Some(request)
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
