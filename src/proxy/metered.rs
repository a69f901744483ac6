//! A writer that counts the bytes it passes on: what the client was sent of a response, for the access log (nginx's
//! `$body_bytes_sent` is the same count less the head). Counting here rather than in the body's framing code keeps
//! one number for every framing (a length, chunks, until close, dechunked) and for an answer cut in the middle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// `inner`, counting what it accepted.
pub struct Metered<'a, W> {
    inner: &'a mut W,
    pub written: u64,
}

impl<'a, W> Metered<'a, W> {
    pub fn new(inner: &'a mut W) -> Self {
        Metered { inner, written: 0 }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Metered<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn counts_what_it_passes_on() {
        let mut sink = Vec::new();
        let mut metered = Metered::new(&mut sink);
        metered.write_all(b"head\r\n\r\n").await.unwrap();
        metered.write_all(b"body").await.unwrap();
        assert_eq!(metered.written, 12);
        assert_eq!(sink, b"head\r\n\r\nbody");
    }
}
