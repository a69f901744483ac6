//! A tunnel: what an exchange becomes once the backend answered an upgrade with `101 Switching Protocols`
//! (WebSocket, or any protocol a client and its backend agree on). From then on the bytes are not HTTP: they are
//! copied both ways as they come.
//!
//! - **Half-close**: a side that ends its stream has the end passed on (the other side's write is shut down) while the
//!   other direction goes on; the tunnel ends when both directions have, or at once when either fails (a reset).
//! - **Idle**: no byte in either direction for `timeouts.tunnel_idle` (1 h by default) closes both sides; a one-way
//!   stream (a server pushing, a client only listening) is not idle.
//! - **Bounded**: each direction holds at most one read ([`CHUNK`]) and reads nothing more until it is written, so a
//!   side that stops reading stops the other side's sender through TCP's own flow control, not through our memory.
//! - **Drain**: a tunnel is an exchange in flight (the worker counts it); it is not cut by a drain, but lives until
//!   the drain deadline ends the process.

use std::cell::Cell;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::h1::client::Client;
use crate::h1::socket::{read_into, ReadInto};
use crate::h1::transport::Transport;

/// The most a direction reads at once (and so holds).
const CHUNK: usize = 16 * 1024;

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides ended their streams.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// A side failed (reset, or a write to a side that went away).
    Failed,
}

/// Copies bytes between `client` and `backend` until both directions end, one fails, or nothing moves for
/// `idle`. Bytes already read on either side (`client.buf`, `backend_buf`) go first.
pub async fn run<T: Transport>(
    client: &mut Client<T>,
    backend: &mut TcpStream,
    backend_buf: &mut BytesMut,
    idle: Duration,
) -> Ended {
    let last = Cell::new(Instant::now());
    let (mut client_read, mut client_write) = client.stream.split();
    let (mut backend_read, mut backend_write) = backend.split();
    let up = copy(&mut client_read, &mut client.buf, &mut backend_write, &last);
    let down = copy(&mut backend_read, backend_buf, &mut client_write, &last);
    let both = futures_util::future::try_join(up, down);
    let quiet = async {
        loop {
            let until = last.get() + idle;
            tokio::time::sleep_until(until).await;
            if last.get() + idle <= Instant::now() {
                return;
            }
        }
    };
    tokio::select! {
        ended = both => match ended {
            Ok(_) => Ended::Closed,
            Err(error) => {
                tracing::debug!(peer = %client.peer, %error, "tunnel failed");
                Ended::Failed
            }
        },
        () = quiet => Ended::Idle,
    }
}

/// Copies `src` to `dst` (after what `buf` holds already) until `src` ends, then ends `dst`'s stream.
async fn copy<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    last: &Cell<Instant>,
) -> io::Result<()>
where
    R: ReadInto + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        if !buf.is_empty() {
            dst.write_all(buf).await?;
            buf.clear();
            last.set(Instant::now());
        }
        if buf.capacity() < CHUNK {
            buf.reserve(CHUNK);
        }
        if read_into(src, buf).await? == 0 {
            return dst.shutdown().await;
        }
        last.set(Instant::now());
    }
}
