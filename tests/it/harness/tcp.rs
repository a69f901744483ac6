//! A TCP backend for TCP mode: it greets each connection with its id, echoes what it reads, and says goodbye
//! after the client's end of stream (so a half-closed connection shows whether the answer still comes back).
//! Started with [`TcpBackend::expecting_proxy`], it first reads a PROXY protocol header (v1 or v2) and records it
//! as it came; a connection that closes without sending anything (a TCP health check) is not recorded.
//!
//! Also the client side of the PROXY protocol for tests: [`v1_header`] and [`v2_header`], written here from the
//! spec rather than taken from `lb`, so that the tests check `lb` against the spec and not against itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A greeting, echo and goodbye TCP backend on 127.0.0.1.
pub struct TcpBackend {
    pub id: u64,
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    id: u64,
    expect_proxy: bool,
    /// Connections that sent a byte (or a header), health checks excluded.
    sessions: AtomicUsize,
    /// The headers of clients' connections (LOCAL ones, from health checks, are counted apart).
    headers: Mutex<Vec<Vec<u8>>>,
    /// Headers that named no client (`PROXY UNKNOWN`, v2 LOCAL): the health checks'.
    locals: AtomicUsize,
}

/// What the backend `id` writes first on each connection.
pub fn greeting(id: u64) -> String {
    format!("hello from tcp backend {id}\n")
}

/// What the backend `id` writes after the client's end of stream.
pub fn goodbye(id: u64) -> String {
    format!("bye from {id}\n")
}

impl TcpBackend {
    pub async fn start(id: u64) -> Self {
        TcpBackend::listen(id, false).await
    }

    /// A backend whose connections must start with a PROXY header, which it records.
    pub async fn expecting_proxy(id: u64) -> Self {
        TcpBackend::listen(id, true).await
    }

    async fn listen(id: u64, expect_proxy: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("backend address");
        let shared = Arc::new(Shared {
            id,
            expect_proxy,
            sessions: AtomicUsize::new(0),
            headers: Mutex::new(Vec::new()),
            locals: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        TcpBackend {
            id,
            addr,
            shared,
            server: Mutex::new(Some(server)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections that sent something (health checks only connect, so they are not counted).
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// The PROXY headers received, as they came.
    pub fn headers(&self) -> Vec<Vec<u8>> {
        self.shared.headers.lock().unwrap().clone()
    }

    /// How many headers named no client (the health checks' own connections).
    pub fn locals(&self) -> usize {
        self.shared.locals.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection: connecting is refused from now on.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.spawn(session(stream, shared.clone()));
    }
}

async fn session(mut stream: TcpStream, shared: Arc<Shared>) {
    if shared.expect_proxy {
        match read_proxy_header(&mut stream).await {
            Some(header) if is_local(&header) => {
                shared.locals.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Some(header) => {
                shared.sessions.fetch_add(1, Ordering::SeqCst);
                shared.headers.lock().unwrap().push(header);
            }
            None => return,
        }
    }
    if stream
        .write_all(greeting(shared.id).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0; 64 * 1024];
    let mut counted = shared.expect_proxy;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if !counted {
                    counted = true;
                    shared.sessions.fetch_add(1, Ordering::SeqCst);
                }
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = stream.write_all(goodbye(shared.id).as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Whether a header names no client: v1 `PROXY UNKNOWN`, or the v2 LOCAL command (a sender's health check).
pub fn is_local(header: &[u8]) -> bool {
    header.starts_with(b"PROXY UNKNOWN") || (header.len() > 12 && header[12] == 0x20)
}

/// Reads one v1 or v2 header, byte by byte for v1 (so nothing past it is taken); `None` if the connection ends or
/// does not start with one.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(stream: &mut R) -> Option<Vec<u8>> {
    let mut header = vec![0; 1];
    stream.read_exact(&mut header).await.ok()?;
    match header[0] {
        b'P' => {
            while !header.ends_with(b"\r\n") && header.len() < 108 {
                header.push(stream.read_u8().await.ok()?);
            }
            Some(header)
        }
        b'\r' => {
            header.resize(16, 0);
            stream.read_exact(&mut header[1..]).await.ok()?;
            let len = u16::from_be_bytes([header[14], header[15]]) as usize;
            header.resize(16 + len, 0);
            stream.read_exact(&mut header[16..]).await.ok()?;
            Some(header)
        }
        _ => None,
    }
}

/// The v1 header saying `client` reached `local` (both IPv4 or both IPv6).
pub fn v1_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
    .into_bytes()
}

/// The v2 header (PROXY command, TCP) saying `client` reached `local` (both IPv4 or both IPv6).
pub fn v2_header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x21);
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            out.extend([0x11, 0, 12]);
            out.extend(c.ip().octets());
            out.extend(l.ip().octets());
        }
        (SocketAddr::V6(c), SocketAddr::V6(l)) => {
            out.extend([0x21, 0, 36]);
            out.extend(c.ip().octets());
            out.extend(l.ip().octets());
        }
        _ => panic!("one family for both addresses"),
    }
    out.extend(client.port().to_be_bytes());
    out.extend(local.port().to_be_bytes());
    out
}
