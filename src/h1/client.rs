//! A client connection as the engine holds it: the stream, who is on the other end, bytes read but not used yet,
//! and the mechanics of ending it well (Nagle's algorithm switched off when it starts to cost, a lingering close).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::socket::{read_into, Unread};
use super::transport::{ClientWrite, Transport};

/// A client connection: the transport, the peer, and bytes read but not yet used (a body's start, or a pipelined
/// request).
pub struct Client<T> {
    pub stream: T,
    pub peer: SocketAddr,
    pub buf: BytesMut,
    /// Whether TCP_NODELAY is on (see [`no_delay`]).
    pub nodelay: bool,
}

impl<T: Transport> Client<T> {
    pub fn new(stream: T, peer: SocketAddr) -> Self {
        Client {
            stream,
            peer,
            buf: BytesMut::new(),
            nodelay: false,
        }
    }

    /// Turns Nagle's algorithm off, once (see [`no_delay`]).
    pub fn no_delay(&mut self) {
        if !self.nodelay {
            self.nodelay = true;
            self.stream.set_nodelay();
        }
    }

    /// Whether the client has sent nothing we have not read: no bytes left in the buffer, and none waiting in the
    /// transport. Closing such a connection ends it cleanly; closing one with unread input would reset it.
    pub fn nothing_unread(&self) -> bool {
        self.buf.is_empty() && self.stream.unread() != Unread::Pending
    }
}

/// Turns Nagle's algorithm off on a client connection, once, when it first matters: before an answer that takes
/// more than one write, and once a connection carries a second answer (a pipelined one could otherwise wait for
/// the acknowledgement of the first). An answer written in one piece with nothing unacknowledged before it is never
/// delayed, so a connection that makes one small request and closes never pays for the system call (nginx too sets
/// the option only on the way to keep-alive).
pub fn no_delay<W: ClientWrite + ?Sized>(stream: &W, set: &mut bool) {
    if !*set {
        *set = true;
        stream.set_nodelay();
    }
}

/// How long a closing connection keeps reading what the client still sends, and how long an answer of our own may
/// take to write.
pub const LINGER: Duration = Duration::from_secs(1);
/// How much it reads at most before closing anyway.
const LINGER_BYTES: usize = 256 * 1024;

/// Closes our side after a final answer, then reads (and drops) what the client still sends for a moment.
/// Closing a socket with unread input makes the kernel send a reset, which can destroy the answer before the
/// client reads it: nginx's "lingering close" avoids that, and so do we.
pub async fn linger_close<T: Transport>(stream: &mut T) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        // On the heap: an array here would sit in the future of every exchange that might linger.
        let mut sink = BytesMut::with_capacity(4096);
        let mut total = 0;
        while total < LINGER_BYTES {
            sink.clear();
            match read_into(stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
