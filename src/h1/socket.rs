//! Reading a socket into a buffer without the system call that only says "nothing more".
//!
//! tokio's sockets are edge-triggered: after a read, the socket counts as readable until a read fails with
//! `WouldBlock`. A proxy that waits for the next request (or the next response) right after a read thus first makes
//! a read that returns nothing: one wasted system call per request on each side, a tenth of what a small request
//! costs us. nginx avoids it the same way we do here: a read that returns less than the room it was given has
//! emptied the socket, so the socket no longer counts as readable (new bytes or the peer's close raise a new edge,
//! and a close seen by the reactor stays visible). [`ReadInto`] is that read, into a `BytesMut`.
//!
//! One case fools the rule, here as in nginx: a read stops short at TCP urgent data with bytes still queued behind
//! it. Only a client that sends urgent data (no HTTP client does) is affected, and only its own connection: it
//! waits for its next bytes, bounded by the usual timeouts.

use std::future::{poll_fn, Future};
use std::io::{self, Read};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;

/// A read side that reads into the spare room of a buffer.
pub trait ReadInto {
    /// Reads at most the buffer's spare capacity (made if there is none); `Ok(0)` is the end of the stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;

    /// Ready when a read may find something (bytes, the end, an error): for waiting without a buffer.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Reads once into `buf` (which the caller gave room), waiting until there is something to read.
/// (A plain function returning the poll: no `async` state machine of its own around it.)
pub fn read_into<'a, R: ReadInto + ?Sized>(
    src: &'a mut R,
    buf: &'a mut BytesMut,
) -> impl Future<Output = io::Result<usize>> + 'a {
    poll_fn(move |cx| src.poll_read_into(cx, buf))
}

impl<R: ReadInto + ?Sized> ReadInto for &mut R {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        (**self).poll_read_into(cx, buf)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_ready(cx)
    }
}

impl ReadInto for TcpStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_read_stream(self, cx, buf)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ReadInto for ReadHalf<'_> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_read_stream(self.as_ref(), cx, buf)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

/// Reads what is there now, if anything: `WouldBlock` when nothing is (without a system call when the reactor
/// already knows).
pub fn try_read_into(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut read = None;
    let outcome = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        read = Some(n);
        if n > 0 && n < room {
            // A short read emptied the socket: report `WouldBlock` so that tokio clears the readiness it had.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (outcome, read) {
        (Err(error), Some(n)) if error.kind() == io::ErrorKind::WouldBlock => Ok(n),
        (outcome, _) => outcome,
    }
}

/// What a peer sent that we have not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    Nothing,
    /// The peer closed its side.
    Closed,
    /// Bytes wait (or the socket failed): the connection is not cleanly idle.
    Pending,
}

/// Looks at what `stream` holds unread, without taking it. Unless `always`, a socket the reactor has not seen
/// become readable is taken at its word (no system call: reads that empty a socket clear its readiness); a
/// readable one, or any with `always`, gets a peek, which also sees a close the reactor has not reported yet.
pub fn unread(stream: &TcpStream, always: bool) -> Unread {
    // `try_io` reads the readiness without a system call and, unlike `poll_read_ready`, without tokio's
    // cooperative budget (which, once spent, reports "not ready" whatever the socket's state).
    let readable = stream.try_io(Interest::READABLE, || Ok(())).is_ok();
    if !readable && !always {
        return Unread::Nothing;
    }
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let socket = socket2::SockRef::from(stream);
    let peeked = match readable {
        // Through `try_io`, so that a peek finding nothing clears stale readiness.
        true => stream.try_io(Interest::READABLE, || socket.peek(&mut probe)),
        // A plain system call: tokio's own reads do not even try while the reactor has not reported readiness.
        false => socket.peek(&mut probe),
    };
    match peeked {
        Ok(0) => Unread::Closed,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Unread::Nothing,
        Ok(_) | Err(_) => Unread::Pending,
    }
}

/// Acknowledges what arrived at once, and the next few segments too. Wanted when a message's head has come and its
/// body has not: a sender using Nagle's algorithm (Python's `http.server`, most clients that do not set
/// TCP_NODELAY) holds a small body back until its head is acknowledged, and a kept-alive or fresh (see the
/// listener) connection acknowledges late: 40 ms for nothing.
pub fn acknowledge_now(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_quickack(true);
}

/// Reads what the socket holds now with a plain system call, whatever the reactor knows about it (tokio would not
/// even try before its first report). The buffer's room is zeroed first: 4 KiB, cheaper than an event loop round.
pub fn read_now(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(buf.capacity().max(start + 1), 0);
    let read = (&*socket2::SockRef::from(stream)).read(&mut buf[start..]);
    buf.truncate(start + read.as_ref().map_or(0, |n| *n));
    read
}

fn poll_read_stream(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == buf.len() {
        // Callers give room; a full buffer must not read as the end of the stream.
        buf.reserve(4096);
    }
    loop {
        ready!(stream.poll_read_ready(cx))?;
        match try_read_into(stream, buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            outcome => return Poll::Ready(outcome),
        }
    }
}

/// Two ends of a loopback TCP connection, for tests.
#[cfg(test)]
pub(crate) async fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (far, _) = listener.accept().await.unwrap();
    (near, far)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn readable_now(stream: &TcpStream) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        stream.poll_read_ready(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_short_read_leaves_the_socket_not_readable_until_more_comes() {
        let (mut near, mut far) = loopback_pair().await;
        near.write_all(b"hello").await.unwrap();
        let mut buf = BytesMut::with_capacity(64);
        assert_eq!(read_into(&mut far, &mut buf).await.unwrap(), 5);
        assert!(!readable_now(&far), "emptied by a short read");
        near.write_all(b" world").await.unwrap();
        assert_eq!(read_into(&mut far, &mut buf).await.unwrap(), 6);
        assert_eq!(&buf[..], b"hello world");
    }

    #[tokio::test]
    async fn a_full_read_keeps_reading_and_the_close_is_seen() {
        let (mut near, mut far) = loopback_pair().await;
        near.write_all(&[7u8; 100]).await.unwrap();
        drop(near);
        let mut buf = BytesMut::with_capacity(60);
        let mut total = 0;
        loop {
            buf.clear();
            match read_into(&mut far, &mut buf).await.unwrap() {
                0 => break,
                n => total += n,
            }
        }
        assert_eq!(total, 100);
    }

    #[tokio::test]
    async fn the_close_after_a_short_read_is_still_seen() {
        let (mut near, mut far) = loopback_pair().await;
        near.write_all(b"last words").await.unwrap();
        let mut buf = BytesMut::with_capacity(64);
        assert_eq!(read_into(&mut far, &mut buf).await.unwrap(), 10);
        near.shutdown().await.unwrap();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            read_into(&mut far, &mut buf),
        );
        assert_eq!(ended.await.expect("the close wakes the reader").unwrap(), 0);
    }
}
