//! The generic path's tunnel: bytes both ways between a client and a backend that switched protocols (a `101`, or
//! the `200` of a WebSocket over HTTP/2), until both sides are done or nothing moved for `timeouts.tunnel_idle`.
//!
//! hyper hands over each side as an upgraded stream; tokio's `copy_bidirectional` moves the bytes (with
//! half-close). Both streams note the time of their last transfer in one cell, which a watch compares with the
//! idle limit: one timer per tunnel, re-armed only when it fires.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::worker::Worker;

/// Runs the tunnel once both sides have upgraded; counted as one of the worker's tunnels while it lasts.
pub async fn run(worker: &Worker, client: OnUpgrade, backend: OnUpgrade, idle: Duration) {
    let _open = worker.tunnel();
    let (Ok(client), Ok(backend)) = futures_util::future::join(client, backend).await else {
        return;
    };
    let last = Cell::new(Instant::now());
    let mut client = Noted {
        inner: TokioIo::new(client),
        last: &last,
    };
    let mut backend = Noted {
        inner: TokioIo::new(backend),
        last: &last,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    let watch = async {
        loop {
            let until = last.get() + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    tokio::select! {
        _ = copy => {}
        () = watch => tracing::debug!("tunnel idle: closed"),
    }
}

/// A stream that notes when bytes last went through it.
struct Noted<'a, T> {
    inner: T,
    last: &'a Cell<Instant>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Noted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Noted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.last.set(Instant::now());
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
