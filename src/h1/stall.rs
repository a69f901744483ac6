//! A read or write side that fails when it makes no progress for too long.
//!
//! A body can stop moving from either end: a client that stops sending its upload, a backend that stops in the
//! middle of a response, a client that stops reading a download. Each would hold its exchange (and its backend
//! connection) forever. Wrapped in [`Stall`], a side that stays pending for `limit` without moving a byte fails
//! with `TimedOut`, like nginx's `client_body_timeout`, `proxy_read_timeout` and `send_timeout`. The timer is made
//! only the first time the side has to wait, so a body that moves at once costs no timer at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::socket::ReadInto;

pub struct Stall<T> {
    inner: T,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Stall<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Stall {
            inner,
            limit,
            timer: None,
        }
    }

    fn moved(&mut self) {
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(Instant::now() + self.limit);
        }
    }

    /// Called while the inner side is pending: fails once it has been pending for `limit`.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).is_ready()
    }

    fn stalled(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress for {:?}", self.limit),
        )
    }

    /// Passes a poll through, resetting the clock on progress and failing after `limit` without it.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending if self.waited_too_long(cx) => Poll::Ready(Err(self.stalled())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: ReadInto> ReadInto for Stall<T> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_read_into(cx, buf);
        self.watch(cx, polled)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, bytes);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::socket::{loopback_pair, read_into};
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_side_that_never_moves_times_out() {
        let (mut near, far) = loopback_pair().await;
        let mut reader = Stall::new(far, Duration::from_secs(5));
        near.write_all(b"abc").await.unwrap();
        let mut buf = BytesMut::with_capacity(8);
        assert_eq!(read_into(&mut reader, &mut buf).await.unwrap(), 3);
        let started = Instant::now();
        let error = read_into(&mut reader, &mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_resets_the_clock() {
        let (mut near, far) = loopback_pair().await;
        let mut reader = Stall::new(far, Duration::from_secs(5));
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                near.write_all(b"x").await.unwrap();
            }
        });
        for _ in 0..4 {
            let mut buf = BytesMut::with_capacity(8);
            assert_eq!(
                read_into(&mut reader, &mut buf).await.unwrap(),
                1,
                "3 s apart is within 5 s"
            );
        }
        writer.await.unwrap();
    }
}
