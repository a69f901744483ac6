//! The byte stream under a client connection: plain TCP (here) or TLS (`tls::transport`), each behind one trait.
//!
//! Everything above the listener (the connection loop, head reading, the relay, tunnels) is generic over
//! [`Transport`] and compiled once per transport, so plain TCP pays nothing for the abstraction. What a transport
//! must answer for itself is what differs between them:
//!
//! - **What is unread** ([`Transport::unread`], [`ClientWrite::unread`]). On plain TCP a read that came back short
//!   emptied the socket (see `socket`), so "nothing unread" is mostly known without a system call. A TLS transport
//!   buffers decrypted bytes of its own: it must look at that buffer first, and only then at the socket, which is why
//!   no code outside a transport may look at the socket under it.
//! - **Readiness** ([`Transport::poll_readable`]): the wait for a next request. TLS is readable when plaintext is
//!   buffered, even if the socket is not.
//! - **Socket options** that only make sense on TCP (Nagle's algorithm, quick acknowledgements, a reset on close):
//!   a transport over TCP passes them down, others may ignore them.
//!
//! The two halves of [`Transport::split`] let a request body go up while the response comes down.

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::socket::{self, ReadInto, Unread};
use super::write::Scheme;

/// A client connection's byte stream.
pub trait Transport: ReadInto + AsyncWrite + Unpin {
    /// The scheme clients reach us by over this transport (the backend learns it from `X-Forwarded-Proto` and
    /// `Forwarded: proto=`).
    const SCHEME: Scheme;

    /// The read side while the stream is split.
    type Reader<'a>: ReadInto + Unpin
    where
        Self: 'a;
    /// The write side while the stream is split.
    type Writer<'a>: ClientWrite
    where
        Self: 'a;

    /// Both halves, usable at the same time.
    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// Ready when there may be something to read (bytes, the peer's close, or an error to report).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is there now into `buf`'s spare room: `WouldBlock` when nothing is.
    fn try_read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize>;

    /// Reads what is there now even before the reactor has reported anything (a new connection's request usually
    /// arrived with it). `WouldBlock` when nothing is.
    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize>;

    /// What the peer sent that we have not read, without taking it.
    fn unread(&self) -> Unread;

    /// Turns Nagle's algorithm off (once is enough).
    fn set_nodelay(&self);

    /// Acknowledges what arrived at once (see `socket::acknowledge_now`).
    fn acknowledge_now(&self);

    /// Makes the close that follows a reset rather than a clean end: for an answer cut in the middle, so that no
    /// client takes a truncated body for a complete one.
    fn reset_on_close(&self);

    /// The address the client reached (the destination of a PROXY header sent to a backend).
    fn local_addr(&self) -> Option<std::net::SocketAddr>;

    /// Ends our side cleanly, as far as that is possible without waiting, before a close that is not a reset: TLS
    /// sends its `close_notify` (unless [`Transport::reset_on_close`] was asked for), without which a client
    /// cannot tell the end of a body delimited by the close from a cut (and strict clients report an error). Plain
    /// TCP has nothing to do: the close itself is the end.
    fn close_cleanly(&mut self) {}
}

/// The write side of a split client connection, with what the relay asks of it.
pub trait ClientWrite: AsyncWrite + Unpin {
    /// What the client sent that we have not read (see [`Transport::unread`]).
    fn unread(&self) -> Unread;

    /// See [`Transport::set_nodelay`].
    fn set_nodelay(&self);
}

impl Transport for TcpStream {
    const SCHEME: Scheme = Scheme::Http;

    type Reader<'a> = ReadHalf<'a>;
    type Writer<'a> = WriteHalf<'a>;

    fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        TcpStream::split(self)
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn try_read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        socket::try_read_into(self, buf)
    }

    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        socket::read_now(self, buf)
    }

    fn unread(&self) -> Unread {
        // Readiness can be stale (a new connection's first report comes after its request was read): a peek then
        // tells.
        socket::unread(self, false)
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }

    fn acknowledge_now(&self) {
        socket::acknowledge_now(self);
    }

    fn reset_on_close(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(std::time::Duration::ZERO));
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        TcpStream::local_addr(self).ok()
    }
}

impl ClientWrite for WriteHalf<'_> {
    fn unread(&self) -> Unread {
        socket::unread(self.as_ref(), false)
    }

    fn set_nodelay(&self) {
        let _ = self.as_ref().set_nodelay(true);
    }
}
