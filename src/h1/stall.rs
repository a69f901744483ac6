//! A read or write side that fails when it makes no progress for too long.
//!
//! A body can stop moving from either end: a client that stops sending its upload, a backend that stops in the
//! middle of a response, a client that stops reading a download. Each would hold its exchange (and its backend
//! connection) forever. Wrapped in [`Stall`], a side that stays pending for `limit` without moving a byte fails
//! with `TimedOut`, like nginx's `client_body_timeout`, `proxy_read_timeout` and `send_timeout`. The timer is made
//! only the first time the side has to wait, so a body that moves at once costs no timer at all.
//!
//! A body that moves, but barely (a byte every few seconds), never stalls; with a [`Pace`] the side must also keep
//! an average rate: from the first wait on, it gets `base` plus one second for every `bytes_per_second` it moves,
//! as Apache's `mod_reqtimeout` (`body=30,MinRate=1024`). Slow uploads thus cannot hold a backend connection for
//! long, while a large upload at any sensible speed earns all the time it needs.

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
    pace: Option<Pace>,
    /// A write had to wait since [`Stall::take_waited`] last looked.
    waited: bool,
    /// Made at the first wait, with the pace's account from then on.
    timer: Option<Timer>,
}

/// An average rate a side must keep (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub base: Duration,
    pub bytes_per_second: u64,
}

struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// When the side first waited, and the bytes it moved since.
    since: Instant,
    moved: u64,
}

impl Timer {
    /// When `pace` runs out for what this side moved since it first waited.
    fn paced_until(&self, pace: Option<Pace>) -> Option<Instant> {
        let pace = pace?;
        let rate = pace.bytes_per_second.max(1);
        let earned = Duration::from_secs(self.moved / rate)
            + Duration::from_nanos((self.moved % rate) * 1_000_000_000 / rate);
        Some(self.since + (pace.base + earned).min(crate::config::duration::MAX_DURATION))
    }

    /// Sets the timer to the earlier of the stall limit (from `now`) and the pace's end.
    fn set(&mut self, now: Instant, limit: Duration, pace: Option<Pace>) {
        let stall = now + limit;
        let deadline = self
            .paced_until(pace)
            .map_or(stall, |paced| paced.min(stall));
        self.sleep.as_mut().reset(deadline);
    }
}

impl<T> Stall<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Stall {
            inner,
            limit,
            pace: None,
            waited: false,
            timer: None,
        }
    }

    /// A side that must also keep `pace`.
    pub fn paced(inner: T, limit: Duration, pace: Option<Pace>) -> Self {
        Stall {
            pace,
            ..Stall::new(inner, limit)
        }
    }

    /// Whether a write had to wait (the receiver is slower than we read) since the last call.
    pub fn take_waited(&mut self) -> bool {
        std::mem::take(&mut self.waited)
    }

    fn moved(&mut self, bytes: usize) {
        if let Some(timer) = &mut self.timer {
            timer.moved += bytes as u64;
            timer.set(Instant::now(), self.limit, self.pace);
        }
    }

    /// Called while the inner side is pending: fails once it has been pending for `limit`, or is behind its pace.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let (limit, pace) = (self.limit, self.pace);
        let timer = self.timer.get_or_insert_with(|| {
            let now = Instant::now();
            let mut timer = Timer {
                sleep: Box::pin(tokio::time::sleep_until(now + limit)),
                since: now,
                moved: 0,
            };
            timer.set(now, limit, pace);
            timer
        });
        if timer.sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        let behind = timer
            .paced_until(pace)
            .is_some_and(|paced| paced <= Instant::now());
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            if behind {
                format!(
                    "slower than {} bytes/s",
                    self.pace.map_or(0, |p| p.bytes_per_second)
                )
            } else {
                format!("no progress for {:?}", self.limit)
            },
        ))
    }

    /// Passes a poll through, resetting the clock on progress and failing after `limit` without it.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
        moved: impl FnOnce(&R) -> usize,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.moved(result.as_ref().map_or(0, moved));
                Poll::Ready(result)
            }
            Poll::Pending => match self.waited_too_long(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
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
        self.watch(cx, polled, |&n| n)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_ready(cx)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, bytes);
        self.waited |= polled.is_pending();
        self.watch(cx, polled, |&n| n)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled, |_| 0)
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
    async fn a_side_behind_its_pace_times_out_though_it_moves() {
        let (mut near, far) = loopback_pair().await;
        let pace = Pace {
            base: Duration::from_secs(10),
            bytes_per_second: 1024,
        };
        let mut reader = Stall::paced(far, Duration::from_secs(5), Some(pace));
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if near.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let mut buf = BytesMut::with_capacity(8);
        let error = loop {
            match read_into(&mut reader, &mut buf).await {
                Ok(n) => assert_eq!(n, 1),
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            error.to_string().contains("slower than 1024 bytes/s"),
            "{error}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(12),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_side_earns_time_beyond_the_base() {
        let (mut near, far) = loopback_pair().await;
        let pace = Pace {
            base: Duration::from_secs(1),
            bytes_per_second: 1024,
        };
        let mut reader = Stall::paced(far, Duration::from_secs(5), Some(pace));
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                near.write_all(&[7u8; 2048]).await.unwrap();
            }
        });
        let mut total = 0;
        while total < 20 * 1024 {
            let mut buf = BytesMut::with_capacity(4096);
            total += read_into(&mut reader, &mut buf)
                .await
                .expect("2 KiB every 0.5 s keeps the pace");
        }
        writer.await.unwrap();
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
