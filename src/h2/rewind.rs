//! A client connection handed over from our HTTP/1.1 engine to hyper, with what the engine already read put back
//! in front.
//!
//! The engine reads before it knows what it has: the first bytes of an HTTP/2 connection preface, or a request head
//! that must go to the generic path because some backend is not plain HTTP/1.1. Those bytes are not lost: [`Rewind`]
//! yields them first, then reads the transport. It reads through the engine's own [`ReadInto`] (every transport has
//! it), into a small buffer of its own: one copy more than a direct read, paid only off the fast path.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h1::socket::ReadInto;

/// How much one read of the transport takes at most.
const READ_SIZE: usize = 16 * 1024;

/// A transport with bytes already read from it in front.
pub struct Rewind<T> {
    inner: T,
    /// What was read and not yet consumed: first the bytes handed over, later what a read brought.
    buf: BytesMut,
}

impl<T> Rewind<T> {
    pub fn new(inner: T, already_read: BytesMut) -> Self {
        Rewind {
            inner,
            buf: already_read,
        }
    }
}

impl<T: ReadInto + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            this.buf.reserve(READ_SIZE);
            if ready!(this.inner.poll_read_into(cx, &mut this.buf))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::socket::loopback_pair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn yields_what_was_read_before_the_rest() {
        let (mut near, far) = loopback_pair().await;
        let mut rewind = Rewind::new(far, BytesMut::from(&b"PRI * "[..]));
        near.write_all(b"HTTP/2.0").await.unwrap();
        drop(near);
        let mut all = Vec::new();
        rewind.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"PRI * HTTP/2.0");
    }
}
