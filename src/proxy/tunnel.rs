//! A tunnel: what an exchange becomes once the backend answered an upgrade with `101 Switching Protocols`
//! (WebSocket, or any protocol a client and its backend agree on). From then on the bytes are not HTTP: they are
//! copied both ways as they come.
//!
//! - **Half-close**: a side that ends its stream has the end passed on (the other side's write is shut down) while the
//!   other direction goes on; the tunnel ends when both directions have, or at once when either fails. A side that
//!   failed (a reset, a write to a side that went away) is named, and the caller resets the other.
//! - **Idle**: no byte in either direction for `timeouts.tunnel_idle` (1 h by default) closes both sides; a one-way
//!   stream (a server pushing, a client only listening) is not idle.
//! - **Bounded**: a direction holds one of the worker's buffers only while bytes move: it waits for its side to be
//!   readable without one, reads once, writes what it read, and gives the buffer back. A side that stops reading
//!   stops the other side's sender through TCP's own flow control, not through our memory, and a quiet tunnel (an
//!   open WebSocket between messages) holds no buffer at all.
//! - **Drain**: a tunnel is an exchange in flight (the worker counts it); it is not cut by a drain, but lives until
//!   the drain deadline ends the process.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::h1::buffers::Buffers;
use crate::h1::client::Client;
use crate::h1::socket::{read_into, ReadInto};
use crate::h1::transport::Transport;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides ended their streams.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// A side failed (a reset, or a write to a side that went away).
    Failed(Side),
}

/// One end of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// What a direction reads at least at once, when bytes move.
const CHUNK: usize = 16 * 1024;

/// Where one direction failed, and how.
struct Failed(Side, io::Error);

/// Copies bytes between `client` and `backend` until both directions end, one fails, or nothing moves for
/// `idle`. Bytes already read on either side (`client.buf`, `backend_buf`) go first; those buffers are given back
/// to `buffers` once written out.
pub async fn run<T: Transport>(
    buffers: &Buffers,
    client: &mut Client<T>,
    backend: &mut TcpStream,
    backend_buf: &mut BytesMut,
    idle: Duration,
) -> Ended {
    let last = Cell::new(Instant::now());
    let (mut client_read, mut client_write) = client.stream.split();
    let (mut backend_read, mut backend_write) = backend.split();
    let up = Direction {
        from: Side::Client,
        to: Side::Backend,
        buffers,
        last: &last,
    };
    let down = Direction {
        from: Side::Backend,
        to: Side::Client,
        ..up
    };
    let up = up.copy(&mut client_read, &mut client.buf, &mut backend_write);
    let down = down.copy(&mut backend_read, backend_buf, &mut client_write);
    let both = futures_util::future::try_join(up, down);
    let quiet = async {
        loop {
            tokio::time::sleep_until(last.get() + idle).await;
            if last.get() + idle <= Instant::now() {
                return;
            }
        }
    };
    tokio::select! {
        ended = both => match ended {
            Ok(_) => Ended::Closed,
            Err(Failed(side, error)) => {
                tracing::debug!(peer = %client.peer, ?side, %error, "tunnel failed");
                Ended::Failed(side)
            }
        },
        () = quiet => Ended::Idle,
    }
}

/// One direction of a tunnel.
#[derive(Clone, Copy)]
struct Direction<'a> {
    from: Side,
    to: Side,
    buffers: &'a Buffers,
    /// When a byte last moved, either way.
    last: &'a Cell<Instant>,
}

impl Direction<'_> {
    /// Copies `src` to `dst` (after what `leftover` holds) until `src` ends, then ends `dst`'s stream.
    async fn copy<R, W>(
        self,
        src: &mut R,
        leftover: &mut BytesMut,
        dst: &mut W,
    ) -> Result<(), Failed>
    where
        R: ReadInto + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let failed_to = |error| Failed(self.to, error);
        if !leftover.is_empty() {
            dst.write_all(leftover).await.map_err(failed_to)?;
            self.last.set(Instant::now());
        }
        self.buffers.recycle_bytes(std::mem::take(leftover));
        loop {
            poll_fn(|cx| src.poll_ready(cx))
                .await
                .map_err(|error| Failed(self.from, error))?;
            let mut buf = self.buffers.bytes();
            if buf.capacity() < CHUNK {
                buf.reserve(CHUNK);
            }
            let moved = match read_into(src, &mut buf).await {
                Ok(0) => Ok(false),
                Ok(_) => dst.write_all(&buf).await.map(|()| true).map_err(failed_to),
                Err(error) => Err(Failed(self.from, error)),
            };
            self.buffers.recycle_bytes(buf);
            if !moved? {
                return dst.shutdown().await.map_err(failed_to);
            }
            self.last.set(Instant::now());
        }
    }
}
