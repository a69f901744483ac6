//! One client connection: read a request head, hand it to the proxy, repeat while keep-alive allows.
//!
//! The connection has three phases with their own deadline: waiting for a request (`idle`, closed silently when
//! it runs out; a new connection waits `client_header`), reading a head (`client_header` from its first byte: a
//! slowloris gets `408` and a close), and proxying (bounded by the proxy's own timeouts). While waiting, the
//! connection holds no buffer, no timer of its own (a slot in the worker's `Timers`) and no shutdown waiter,
//! only its socket's readiness: a buffer is taken when bytes arrive and given back when the exchange is over, so
//! an idle keep-alive client costs its 256-byte task, its socket registration and a timer slot.
//! On shutdown, exchanges in flight finish and every answer written from then on says `connection: close`; a
//! connection waiting for its next request gets a short grace (a request already on its way is answered, and
//! closed), then closes; the worker is done when its last connection is.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::admission::ConnectionLimit;
use crate::h1::buffers::Buffers;
use crate::h1::request::{self, RequestHead};
use crate::h1::write;
use crate::h1::{body, socket, HeadScan};
use crate::proxy::Proxy;
use crate::timers::Elapsed;

/// The first allocation for a request head; it grows up to the head limit.
const HEAD_BUFFER: usize = 2 * 1024;

/// A client connection as the proxy sees it: the socket, who is on the other end, and bytes read but not yet
/// used (a body's start, or a pipelined request).
pub struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub buf: BytesMut,
    /// Whether TCP_NODELAY is on (see [`no_delay`]).
    pub nodelay: bool,
}

/// What every connection of a worker shares.
pub struct Shared {
    proxy: Proxy,
    counts: Arc<WorkerCounts>,
    limit: Arc<ConnectionLimit>,
    /// Raised when the last connection (during a drain) or the last exchange closes.
    quiet: Notify,
}

/// A worker's connections and exchanges in flight, readable by other threads (the drain deadline counts the
/// requests it cuts; later the metrics). Written only by the worker: a plain store, no shared atomic write.
#[derive(Debug, Default)]
pub struct WorkerCounts {
    /// Client connections open.
    open: AtomicUsize,
    /// Requests being proxied (from a whole head to the end of the answer).
    in_flight: AtomicUsize,
}

impl WorkerCounts {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Adds `delta` to a counter only this thread writes, and answers the new value.
fn bump(counter: &AtomicUsize, delta: isize) -> usize {
    let value = counter.load(Ordering::Relaxed).wrapping_add_signed(delta);
    counter.store(value, Ordering::Relaxed);
    value
}

impl Shared {
    pub fn new(proxy: Proxy, counts: Arc<WorkerCounts>, limit: Arc<ConnectionLimit>) -> Self {
        Shared {
            proxy,
            counts,
            limit,
            quiet: Notify::new(),
        }
    }

    /// The worker's proxy (its pool, buffers and timers).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Whether no request is being proxied.
    pub fn is_quiet(&self) -> bool {
        self.counts.in_flight() == 0
    }

    /// Starts the drain: from now on answers close their connections, and a connection waiting for its next
    /// request waits at most `grace` (a request already on its way is still answered). Returns when every
    /// connection of this worker has closed.
    pub async fn drain(&self, grace: Duration) {
        self.proxy.start_draining();
        self.proxy.timers().drain(grace);
        while self.counts.open() > 0 {
            self.quiet.notified().await;
        }
    }
}

/// Counts one exchange in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        bump(&shared.counts.in_flight, 1);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if bump(&self.0.counts.in_flight, -1) == 0 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// One open client connection, counted (for this worker, and against `max_connections`) from the moment it was
/// accepted ([`spawn`]) until its task ends.
struct Open<'a>(&'a Shared);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.limit.release();
        if bump(&self.0.counts.open, -1) == 0 {
            self.0.quiet.notify_waiters();
        }
    }
}

impl Client {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Client {
            stream,
            peer,
            buf: BytesMut::new(),
            nodelay: false,
        }
    }
}

/// Turns Nagle's algorithm off on a client connection, once, when it first matters: before an answer that takes
/// more than one write, and once a connection carries a second answer (a pipelined one could otherwise wait for
/// the acknowledgement of the first). An answer written in one piece with nothing unacknowledged before it is never
/// delayed, so a connection that makes one small request and closes never pays for the system call (nginx too sets
/// the option only on the way to keep-alive).
pub fn no_delay(stream: &TcpStream, set: &mut bool) {
    if !*set {
        *set = true;
        let _ = stream.set_nodelay(true);
    }
}

/// Starts serving a connection just accepted (and counted against `max_connections`) on this worker. It counts as
/// open from now on, not from when its task first runs: a drain that starts in between still waits for it.
pub fn spawn(client: Client, shared: &Rc<Shared>) {
    bump(&shared.counts.open, 1);
    tokio::task::spawn_local(serve(client, shared.clone()));
}

/// Serves one client connection until it closes or times out (during a drain, its wait for another request is
/// cut short: see [`Shared::drain`]). Releases its place (`max_connections`, and this worker's open count) when it
/// ends.
/// (Not an `async fn`: those store their arguments twice, and this future is what every idle connection costs.)
#[allow(clippy::manual_async_fn)]
fn serve(mut client: Client, shared: Rc<Shared>) -> impl Future<Output = ()> {
    async move {
        let _open = Open(&shared);
        let mut first = true;
        loop {
            let buffers = shared.proxy.buffers();
            if first && client.buf.is_empty() {
                // A new connection's request has usually arrived with it: read it at once rather than after the
                // reactor's first report, one round of the event loop later (HAProxy reads speculatively too).
                client.buf = buffers.bytes();
                match socket::read_now(&client.stream, &mut client.buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        buffers.recycle_bytes(std::mem::take(&mut client.buf));
                    }
                    Err(error) => {
                        return tracing::debug!(peer = %client.peer, %error, "client connection error")
                    }
                }
            }
            if client.buf.is_empty() {
                let wait = {
                    let timeouts = shared.proxy.timeouts();
                    if first {
                        timeouts.client_header
                    } else {
                        timeouts.idle
                    }
                };
                if shared
                    .proxy
                    .timers()
                    .readable(&client.stream, wait)
                    .await
                    .is_err()
                {
                    return tracing::trace!(peer = %client.peer, "idle client connection closed");
                }
                // Readiness can be reported with nothing to read (a new connection is, at first): only bytes that
                // arrived make the connection take a buffer and start an exchange.
                client.buf = buffers.bytes();
                match socket::try_read_into(&client.stream, &mut client.buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        buffers.recycle_bytes(std::mem::take(&mut client.buf));
                        continue;
                    }
                    Err(error) => {
                        return tracing::debug!(peer = %client.peer, %error, "client connection error")
                    }
                }
            }
            first = false;
            // A box keeps the connection's own future small while it waits: the exchange's state lives only while
            // there is an exchange.
            let keep_alive = Box::pin(exchange(&mut client, &shared)).await;
            if client.buf.is_empty() || !keep_alive {
                buffers.recycle_bytes(std::mem::take(&mut client.buf));
            }
            if !keep_alive {
                return;
            }
            no_delay(&client.stream, &mut client.nodelay);
        }
    }
}

/// Reads one request head and proxies the request. Returns whether the connection may carry another request.
async fn exchange(client: &mut Client, shared: &Shared) -> bool {
    let proxy = &shared.proxy;
    let buffers = proxy.buffers();
    let mut scan = HeadScan::default();
    // Most heads arrive whole in their first read: those need no timer. The others have `client_header` (cut
    // short by a drain, as a wait for a request is).
    let read = match take_head(client, buffers, &mut scan) {
        Ok(Some(head)) => Ok(Ok(Some(head))),
        Ok(None) => {
            let read = read_head(client, buffers, &mut scan);
            let deadline = proxy.timers().head_deadline(proxy.timeouts().client_header);
            tokio::select! {
                biased;
                read = read => Ok(read),
                () = deadline => Err(Elapsed),
            }
        }
        Err(refusal) => Ok(Err(HeadError::Refused(refusal))),
    };
    let (head, raw) = match read {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return false,
        Ok(Err(HeadError::Io(error))) => {
            tracing::debug!(peer = %client.peer, %error, "client connection error");
            return false;
        }
        Ok(Err(HeadError::Refused(refusal))) => {
            tracing::debug!(peer = %client.peer, status = refusal.status.as_u16(), reason = refusal.reason, "request refused");
            refuse(client, refusal.status).await;
            return false;
        }
        Err(_) => {
            if !client.buf.is_empty() {
                tracing::debug!(peer = %client.peer, "client sent no complete request head in time: 408");
                refuse(client, StatusCode::REQUEST_TIMEOUT).await;
            }
            return false;
        }
    };
    if body::small_rest_to_come(head.body, client.buf.len()) {
        socket::acknowledge_now(&client.stream);
    }
    let in_flight = InFlight::enter(shared);
    let keep_alive = proxy.handle(client, &head, &raw).await;
    drop(in_flight);
    buffers.recycle_vec(raw);
    keep_alive
}

enum HeadError {
    Io(io::Error),
    Refused(request::Refusal),
}

/// Reads until a whole request head is in the buffer, and takes it out. `None`: the client closed cleanly.
async fn read_head(
    client: &mut Client,
    buffers: &Buffers,
    scan: &mut HeadScan,
) -> Result<Option<(RequestHead, Vec<u8>)>, HeadError> {
    loop {
        if let Some(head) = take_head(client, buffers, scan).map_err(HeadError::Refused)? {
            return Ok(Some(head));
        }
        if client.buf.capacity() - client.buf.len() < 512 {
            let grow = client.buf.capacity().clamp(HEAD_BUFFER, request::MAX_HEAD);
            client.buf.reserve(grow);
        }
        match socket::read_into(&mut client.stream, &mut client.buf).await {
            Ok(0) if client.buf.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(HeadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed in the middle of a request head",
                )))
            }
            Ok(_) => {}
            Err(error) => return Err(HeadError::Io(error)),
        }
    }
}

/// Takes a whole request head out of the buffer if it is there (copied into a buffer of its own, so the read buffer
/// stays unshared and reusable). The buffer is parsed only when `scan` finds it worth it, or when it has grown past
/// a limit (which the parser then refuses).
fn take_head(
    client: &mut Client,
    buffers: &Buffers,
    scan: &mut HeadScan,
) -> Result<Option<(RequestHead, Vec<u8>)>, request::Refusal> {
    let buf = &client.buf;
    if buf.is_empty() {
        return Ok(None);
    }
    let past_limit = buf.len() >= request::MAX_HEAD
        || (!scan.line_seen() && buf.len() > request::MAX_TARGET + 1024);
    if !scan.ready(buf) && !past_limit {
        return Ok(None);
    }
    let Some((head, length)) = request::parse(buf)? else {
        return Ok(None);
    };
    let mut raw = buffers.vec();
    raw.extend_from_slice(&client.buf[..length]);
    client.buf.advance(length);
    Ok(Some((head, raw)))
}

/// Answers a request we will not forward, and closes.
async fn refuse(client: &mut Client, status: StatusCode) {
    let mut out = Vec::with_capacity(192);
    write::error_response(&mut out, status, true);
    if tokio::time::timeout(LINGER, client.stream.write_all(&out))
        .await
        .is_ok()
    {
        linger_close(&mut client.stream).await;
    }
}

/// Whether the client has sent nothing we have not read: no bytes left in the buffer, and none waiting in the socket
/// (reads that empty the socket clear its readiness, see `h1::socket`, so mostly this costs no system call).
/// Closing such a connection ends it cleanly; closing one with unread input would reset it.
pub fn nothing_unread(client: &Client) -> bool {
    client.buf.is_empty() && nothing_unread_on(&client.stream)
}

/// Whether the client socket holds no bytes we have not read (see [`nothing_unread`]). Readiness can be stale (a
/// new connection's first report comes after its request was read): a peek then tells.
pub fn nothing_unread_on(stream: &TcpStream) -> bool {
    socket::unread(stream, false) != socket::Unread::Pending
}

/// How long a closing connection keeps reading what the client still sends.
pub const LINGER: Duration = Duration::from_secs(1);
/// How much it reads at most before closing anyway.
const LINGER_BYTES: usize = 256 * 1024;

/// Closes our side after a final answer, then reads (and drops) what the client still sends for a moment.
/// Closing a socket with unread input makes the kernel send a reset, which can destroy the answer before the
/// client reads it: nginx's "lingering close" avoids that, and so do we.
pub async fn linger_close(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        // On the heap: an array here would sit in the future of every exchange that might linger (4 KiB each).
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
