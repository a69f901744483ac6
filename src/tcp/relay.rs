//! Copying a TCP-mode connection both ways: client to backend and back, until both directions end.
//!
//! - **Half-close**: a side that ends its stream (a FIN) has the end passed on (`shutdown(Write)` on the other
//!   side) while the other direction goes on: a client that sends its request and shuts down its write still gets
//!   the whole answer. The copy is tokio's `copy_bidirectional`, which does exactly that, with one buffer per
//!   direction for the connection's life ([`BUFFER`]).
//! - **Idle**: no byte in either direction for the idle timeout (`timeouts.tunnel_idle`, as for upgraded
//!   connections) closes both sides; a one-way stream is not idle.
//! - **Counted**: the bytes each way, for the access log.
//! - **First bytes**: a client outside `accept_proxy` on a listener that has it must not start with a PROXY header
//!   ([`FirstBytes::Checked`]); its first bytes are held back until they tell (at most 12), and the connection
//!   fails if they are one, before any of them reached the backend. A server-speaks-first protocol is not held up:
//!   the backend's direction flows meanwhile.
//!
//! Between two plain sockets `splice` does the same without copying through user space; this copy serves the
//! rest (TLS on either side, a client whose first bytes are checked, no pipe to be had).

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::proxy_protocol::{sniff, Sniff};

/// Each direction's buffer: large enough that a bulk transfer moves in few system calls (64 KiB is what a
/// loopback or LAN socket usually has ready at once), allocated once per connection.
pub const BUFFER: usize = 64 * 1024;

/// Whether the client's first bytes are checked for a PROXY header it may not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    Unchecked,
    Checked,
}

/// How a relay ended, and what it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub ended: Ended,
    /// Bytes from the client to the backend (what `lb` read from the client, bytes read past a PROXY header too).
    pub up: u64,
    /// Bytes from the backend to the client.
    pub down: u64,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both directions ended their streams.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// A side failed (a reset, a write to a side that went away, or a PROXY header it may not send).
    Failed,
}

/// Copies between `client` and `backend` (after `leftover`, bytes already read from the client) until both
/// directions end, one fails, or nothing moves for `idle`.
pub async fn run<C, B>(
    client: &mut C,
    backend: &mut B,
    leftover: &[u8],
    first: FirstBytes,
    idle: Duration,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Cell::new(Instant::now());
    let up = Cell::new(leftover.len() as u64);
    let down = Cell::new(0);
    let mut client = Watched {
        inner: client,
        last: &last,
        read: &up,
        held: match first {
            FirstBytes::Checked => Some(Vec::new()),
            FirstBytes::Unchecked => None,
        },
    };
    let mut backend = Watched {
        inner: backend,
        last: &last,
        read: &down,
        held: None,
    };
    let copy = async {
        if !leftover.is_empty() {
            backend.write_all(leftover).await?;
        }
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, BUFFER, BUFFER).await
    };
    let quiet = async {
        loop {
            tokio::time::sleep_until(last.get() + idle).await;
            if last.get() + idle <= Instant::now() {
                return;
            }
        }
    };
    let ended = tokio::select! {
        copied = copy => match copied {
            Ok(_) => Ended::Closed,
            Err(error) => {
                tracing::debug!(%error, "tcp connection failed");
                Ended::Failed
            }
        },
        () = quiet => Ended::Idle,
    };
    Relayed {
        ended,
        up: up.get(),
        down: down.get(),
    }
}

/// A side of the relay that notes when bytes move and counts what it reads, and (for the client, when asked)
/// holds back its first bytes until they tell whether they are a PROXY header.
struct Watched<'a, S> {
    inner: &'a mut S,
    last: &'a Cell<Instant>,
    read: &'a Cell<u64>,
    /// The first bytes while they could still be a PROXY header; `None` once decided (or not checked).
    held: Option<Vec<u8>>,
}

impl<S: AsyncRead + Unpin> Watched<'_, S> {
    /// Reads the first bytes a few at a time until they are decided; answers the bytes to pass on (at most 12).
    fn poll_first_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        let Some(held) = self.held.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        loop {
            match sniff(held) {
                Sniff::NotHeader => break,
                Sniff::V1 | Sniff::V2 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "PROXY header from a source not in accept_proxy",
                    )))
                }
                Sniff::Undecided => {}
            }
            let mut room = [0u8; 12];
            let want = 12usize.saturating_sub(held.len()).max(1);
            let mut more = ReadBuf::new(&mut room[..want]);
            ready!(Pin::new(&mut *self.inner).poll_read(cx, &mut more))?;
            if more.filled().is_empty() {
                break; // the end of the stream: what is held goes on, then the end
            }
            held.extend_from_slice(more.filled());
        }
        Poll::Ready(Ok(self.held.take()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match ready!(this.poll_first_bytes(cx))? {
            // Never more than 12 bytes, and the copy reads into a buffer of `BUFFER` bytes.
            Some(first) if !first.is_empty() && first.len() <= buf.remaining() => {
                buf.put_slice(&first)
            }
            Some(first) if !first.is_empty() => {
                return Poll::Ready(Err(io::Error::other("read buffer too small")))
            }
            _ => ready!(Pin::new(&mut *this.inner).poll_read(cx, buf))?,
        }
        let read = buf.filled().len() - before;
        if read > 0 {
            this.read.set(this.read.get() + read as u64);
            this.last.set(Instant::now());
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt};

    #[tokio::test]
    async fn half_close_passes_the_end_on_and_the_answer_still_comes_back() {
        let (mut client, mut lb_client) = duplex(1024);
        let (mut lb_backend, mut backend) = duplex(1024);
        let relay = async move {
            let idle = Duration::from_secs(5);
            run(
                &mut lb_client,
                &mut lb_backend,
                b"he",
                FirstBytes::Unchecked,
                idle,
            )
            .await
        };
        let peers = async {
            client.write_all(b"llo").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            backend.write_all(b"bye").await.unwrap();
            backend.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"bye");
        };
        let (relayed, ()) = tokio::join!(relay, peers);
        let want = Relayed {
            ended: Ended::Closed,
            up: 5,
            down: 3,
        };
        assert_eq!(relayed, want);
    }

    #[tokio::test]
    async fn checked_first_bytes_that_are_a_header_never_reach_the_backend() {
        for (sent, passes) in [
            (&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..], false),
            (b"\r\n\r\n\0\r\nQUIT\n!", false),
            (b"PRO", true),
            (b"SSH-2.0-x\r\n", true),
        ] {
            let (mut client, mut lb_client) = duplex(1024);
            let (mut lb_backend, mut backend) = duplex(1024);
            let relay = async move {
                let idle = Duration::from_secs(5);
                let checked = FirstBytes::Checked;
                run(&mut lb_client, &mut lb_backend, b"", checked, idle).await
                // Both of lb's ends close here.
            };
            let peers = async move {
                // Sent a byte at a time: the decision waits for enough of them.
                for byte in sent {
                    let _ = client.write_all(&[*byte]).await;
                }
                let _ = client.shutdown().await;
                let mut got = Vec::new();
                let _ = backend.read_to_end(&mut got).await;
                got
            };
            let (relayed, got) = tokio::join!(relay, peers);
            match passes {
                true => assert_eq!(got, sent),
                false => {
                    assert_eq!(got, b"", "{sent:?}");
                    assert_eq!(relayed.ended, Ended::Failed);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_moving_for_the_idle_timeout_ends_it() {
        let (_client, mut lb_client) = duplex(1024);
        let (mut lb_backend, _backend) = duplex(1024);
        let relayed = run(
            &mut lb_client,
            &mut lb_backend,
            b"",
            FirstBytes::Unchecked,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(relayed.ended, Ended::Idle);
    }
}
