//! A client connection over TLS as a [`Transport`]: rustls' `ServerConnection` driven over the `TcpStream` by hand.
//!
//! Why not tokio-rustls' stream: the engine's contract (see `h1::transport`) is about what is unread and when a
//! connection is readable, and about not paying a system call that only says "nothing more". Driving rustls here
//! keeps all three:
//!
//! - **Plaintext first.** Decrypted bytes rustls holds count as unread and make the connection readable, whatever
//!   the socket says; the socket is looked at only when there are none.
//! - **The short-read rule of `h1::socket`.** Records are read from the socket into rustls with one read; a read
//!   that returns less than the room rustls gave emptied the socket, and clears tokio's readiness at once.
//! - **A write is done when the kernel has it.** The engine never flushes a `TcpStream` (there is nothing to flush),
//!   so a TLS write reports its bytes written only once their records are all in the socket: if the socket is full,
//!   the write stays pending (the bytes already encrypted are not encrypted again: the next call, with the same
//!   bytes as `AsyncWrite` asks of callers, finishes pushing them and reports them). Nothing is ever left in rustls'
//!   output waiting for a flush that nobody calls.
//!
//! [`Transport::split`] shares the session between its halves through a `RefCell`: both halves live in one task
//! (the relay's futures are joined, never spawned), and each borrow lasts one poll.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use crate::h1::socket::{self, ReadInto, Unread};
use crate::h1::transport::{ClientWrite, Transport};
use crate::h1::write::Scheme;

/// The most plaintext one write takes in (four full records).
const MAX_WRITE: usize = 64 * 1024;

/// A client connection over TLS, its handshake done (or under way, in [`super::handshake`]).
pub struct TlsStream {
    session: RefCell<Session>,
}

/// The socket and rustls' state of the connection.
pub(super) struct Session {
    pub(super) tcp: TcpStream,
    pub(super) tls: ServerConnection,
    /// Decrypted bytes rustls holds for us (as of the last `process_new_packets`, less what was taken since).
    plaintext: usize,
    /// Bytes of the caller's last write already encrypted, not reported yet because their records are not all out.
    unreported: usize,
    /// The peer ended its side: `close_notify`, or the end of the TCP stream.
    closed: bool,
    /// The close is to be a reset ([`Transport::reset_on_close`]): no `close_notify` then.
    reset: bool,
}

impl TlsStream {
    pub(super) fn new(session: Session) -> Self {
        TlsStream {
            session: RefCell::new(session),
        }
    }

    /// Whether the client chose `protocol` by ALPN.
    pub fn alpn_is(&self, protocol: &[u8]) -> bool {
        self.session.borrow().tls.alpn_protocol() == Some(protocol)
    }
}

impl Session {
    pub(super) fn new(tcp: TcpStream, tls: ServerConnection) -> Self {
        Session {
            tcp,
            tls,
            plaintext: 0,
            unreported: 0,
            closed: false,
            reset: false,
        }
    }

    /// Pushes out every TLS record rustls has ready: `Ready(Ok)` once none is left.
    pub(super) fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            match self.write_tls_now() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// One write of TLS records to the socket, if tokio does not already know it is full.
    pub(super) fn write_tls_now(&mut self) -> io::Result<usize> {
        let Session { tcp, tls, .. } = self;
        tcp.try_io(Interest::WRITABLE, || tls.write_tls(&mut Socket(tcp)))
    }

    /// One read of TLS records from the socket into rustls, which decrypts them. `Ok(0)`: the peer closed (or sent
    /// `close_notify` earlier); `WouldBlock`: nothing there now (tokio's readiness is cleared). A protocol error
    /// sends its alert (if the socket takes it) and comes back as `InvalidData`.
    pub(super) fn read_tls_now(&mut self) -> io::Result<usize> {
        let Session { tcp, tls, .. } = self;
        let mut read = None;
        let outcome = tcp.try_io(Interest::READABLE, || {
            let mut socket = ShortRead { tcp, short: false };
            let n = tls.read_tls(&mut socket)?;
            read = Some(n);
            if n > 0 && socket.short {
                // The socket is empty: report `WouldBlock` so that tokio clears its readiness (see `h1::socket`).
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        let n = match (outcome, read) {
            (Err(error), Some(n)) if error.kind() == io::ErrorKind::WouldBlock => n,
            (outcome, _) => outcome?,
        };
        if n == 0 {
            self.closed = true;
        }
        self.process()?;
        if self.tls.wants_write() {
            // What rustls answers by itself to what it just read (a refused renegotiation's `no_renegotiation`
            // alert, a TLS 1.3 key update): out now, if the socket takes it, rather than with our next write, which
            // may never come while the peer waits for the answer (a renegotiating client hung until the idle
            // timeout). Records go out in order whoever pushes them.
            let _ = self.write_tls_now();
        }
        Ok(n)
    }

    fn process(&mut self) -> io::Result<()> {
        match self.tls.process_new_packets() {
            Ok(state) => {
                self.plaintext = state.plaintext_bytes_to_read();
                self.closed |= state.peer_has_closed();
                Ok(())
            }
            Err(error) => {
                // The alert rustls queued, if the socket takes it now: the connection is over either way.
                let _ = self.write_tls_now();
                Err(io::Error::new(io::ErrorKind::InvalidData, error))
            }
        }
    }

    /// Moves decrypted bytes into `buf`'s spare room. `Ok(0)`: the peer closed (cleanly or not: HTTP's own framing
    /// tells a cut message); `WouldBlock`: none is buffered.
    fn take_plaintext(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let want = self.plaintext.min(buf.capacity() - buf.len());
        if want == 0 {
            let mut probe = [0u8; 1];
            return match self.tls.reader().read(&mut probe) {
                Ok(0) => Ok(0),
                Ok(_) => {
                    // Not counted (cannot happen: the count is rustls' own): keep the byte all the same.
                    buf.extend_from_slice(&probe);
                    Ok(1)
                }
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                Err(error) => Err(error),
            };
        }
        let start = buf.len();
        buf.resize(start + want, 0);
        match self.tls.reader().read(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                self.plaintext -= n;
                Ok(n)
            }
            Err(error) => {
                buf.truncate(start);
                Err(error)
            }
        }
    }

    /// Whether a read would find something without waiting: plaintext, or the end.
    fn has_news(&self) -> bool {
        self.plaintext > 0 || self.closed
    }

    fn try_read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self.take_plaintext(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            taken => return taken,
        }
        // Whatever comes of it, a read makes the next step: new plaintext, the end, or nothing yet.
        self.read_tls_now()?;
        self.take_plaintext(buf)
    }

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.take_plaintext(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                taken => return Poll::Ready(taken),
            }
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.read_tls_now() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.has_news() {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    fn unread(&self) -> Unread {
        if self.plaintext > 0 {
            return Unread::Pending;
        }
        if self.closed {
            return Unread::Closed;
        }
        socket::unread(&self.tcp, false)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.unreported == 0 {
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(self.poll_flush_tls(cx))?;
            let take = data.len().min(MAX_WRITE);
            self.unreported = self.tls.writer().write(&data[..take])?;
            if self.unreported == 0 {
                return Poll::Ready(Ok(0));
            }
        }
        ready!(self.poll_flush_tls(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut self.unreported).min(data.len())))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unreported > 0 {
            // A write given up on: its bytes go out first, like any other.
            ready!(self.poll_flush_tls(cx))?;
            self.unreported = 0;
        }
        self.tls.send_close_notify();
        ready!(self.poll_flush_tls(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The socket under rustls' reads and writes: plain system calls (tokio's readiness is handled around them).
struct Socket<'a>(&'a TcpStream);

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*socket2::SockRef::from(self.0)).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*socket2::SockRef::from(self.0)).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read from the socket that notes whether it came back short (the socket is then empty).
struct ShortRead<'a> {
    tcp: &'a TcpStream,
    short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&*socket2::SockRef::from(self.tcp)).read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl ReadInto for TlsStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.session.get_mut().poll_read_into(cx, buf)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.session.get_mut().poll_ready(cx)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().session.get_mut().poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().session.get_mut().poll_flush_tls(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().session.get_mut().poll_shutdown(cx)
    }
}

impl Transport for TlsStream {
    const SCHEME: Scheme = Scheme::Https;

    type Reader<'a> = Half<'a>;
    type Writer<'a> = Half<'a>;

    fn split(&mut self) -> (Half<'_>, Half<'_>) {
        (Half(&self.session), Half(&self.session))
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.session.borrow_mut().poll_ready(cx)
    }

    fn try_read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.session.get_mut().try_read_into(buf)
    }

    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // A new connection's first request usually came with the end of the handshake and is decrypted already;
        // otherwise tokio's readiness is fresh from the handshake, so this costs no useless system call either.
        self.session.get_mut().try_read_into(buf)
    }

    fn unread(&self) -> Unread {
        self.session.borrow().unread()
    }

    fn set_nodelay(&self) {
        let _ = self.session.borrow().tcp.set_nodelay(true);
    }

    fn acknowledge_now(&self) {
        socket::acknowledge_now(&self.session.borrow().tcp);
    }

    fn reset_on_close(&self) {
        let mut session = self.session.borrow_mut();
        session.reset = true;
        let _ = socket2::SockRef::from(&session.tcp).set_linger(Some(std::time::Duration::ZERO));
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.session.borrow().tcp.local_addr().ok()
    }

    fn close_cleanly(&mut self) {
        let session = self.session.get_mut();
        if session.reset {
            return;
        }
        // One try: the alert is 24 bytes, which a socket whose answer went out takes; a client that does not read
        // gets the close without it, as it would have got it late.
        session.tls.send_close_notify();
        let _ = session.write_tls_now();
    }
}

/// Either half of a split [`TlsStream`] (both can read and write; the relay uses one for each).
pub struct Half<'a>(&'a RefCell<Session>);

impl ReadInto for Half<'_> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().poll_read_into(cx, buf)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.borrow_mut().poll_ready(cx)
    }
}

impl AsyncWrite for Half<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.borrow_mut().poll_flush_tls(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.borrow_mut().poll_shutdown(cx)
    }
}

impl ClientWrite for Half<'_> {
    fn unread(&self) -> Unread {
        self.0.borrow().unread()
    }

    fn set_nodelay(&self) {
        let _ = self.0.borrow().tcp.set_nodelay(true);
    }
}
