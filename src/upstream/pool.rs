//! Keep-alive connections to backends, one pool per worker thread.
//!
//! Each worker owns its pool (`Rc`, no locks): a connection is only ever used by the thread that opened it. A
//! connection is lent out for one request and comes back when the response body has been read to its end
//! ([`PooledBody`]); a response cut short, or a backend that asked to close, loses the connection instead. Idle
//! connections are reused newest first, and dropped after [`MAX_IDLE`] so that a backend closing its idle keep-alive
//! connections rarely races a reuse.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::ProxyBody;

/// How long an idle backend connection is kept for reuse.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per backend per worker; more are closed when they come back.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Why no connection to a backend could be had. Nothing of the request was sent in either case.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("{}", describe_io(.0))]
    Connect(io::Error),
    #[error("handshake failed: {0}")]
    Handshake(hyper::Error),
}

/// A short, lowercase description of a connect error, as logs show it (`connection refused`).
pub fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        _ => error.to_string(),
    }
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// The backend connections of one worker thread.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
}

/// A connection lent out of the pool for one request.
pub struct Lease {
    pub sender: SendRequest<ProxyBody>,
    pub addr: SocketAddr,
}

impl Pool {
    /// An idle connection to `addr` that is ready for a request, or a new one.
    pub async fn lease(
        self: &Rc<Self>,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Lease, UpstreamError> {
        while let Some(mut sender) = self.take_idle(addr) {
            if sender.ready().await.is_ok() {
                return Ok(Lease { sender, addr });
            }
        }
        let sender = connect(addr, connect_timeout).await?;
        Ok(Lease { sender, addr })
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < MAX_IDLE && !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_BACKEND {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Wraps a response body so that the connection returns to the pool once the body has been read to its end.
    pub fn track(self: &Rc<Self>, lease: Lease, body: Incoming) -> PooledBody {
        PooledBody {
            inner: body,
            home: Some((Rc::downgrade(self), lease.addr, lease.sender)),
        }
    }
}

async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<SendRequest<ProxyBody>, UpstreamError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout(timeout)),
        Ok(Err(error)) => return Err(UpstreamError::Connect(error)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::task::spawn_local(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%addr, %error, "backend connection ended");
        }
    });
    Ok(sender)
}

/// A backend's response body; gives its connection back to the pool when read to the end.
pub struct PooledBody {
    inner: Incoming,
    home: Option<(Weak<Pool>, SocketAddr, SendRequest<ProxyBody>)>,
}

impl PooledBody {
    fn go_home(&mut self) {
        if let Some((pool, addr, sender)) = self.home.take() {
            if let Some(pool) = pool.upgrade() {
                pool.give_back(addr, sender);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.go_home(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.go_home(),
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read (HEAD, 204, 304, fully read) leaves a reusable connection; a body dropped
        // midway does not, and the connection closes with its sender.
        if self.inner.is_end_stream() {
            self.go_home();
        }
    }
}
