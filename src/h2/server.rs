//! hyper's servers as `lb`'s front ends for what the fast path does not serve: HTTP/2 (h2c with prior knowledge
//! on a plain listener, h2 over TLS by ALPN), and HTTP/1.1 when some backend is not plain HTTP/1.1.
//!
//! Limits against the known HTTP/2 floods, each a setting of hyper's (h2's) server:
//! - too many streams: at most [`MAX_CONCURRENT_STREAMS`] open at once per connection; more are refused
//!   (`REFUSED_STREAM`).
//! - rapid reset (CVE-2023-44487): at most [`MAX_PENDING_ACCEPT_RESETS`] streams reset by the client before we
//!   accepted them, and [`MAX_LOCAL_ERROR_RESETS`] streams we had to reset for the client's errors; past either the
//!   connection is closed with `GOAWAY` (`ENHANCE_YOUR_CALM`).
//! - CONTINUATION flood (CVE-2024-27316 and kin): a header block may not grow past [`MAX_HEADER_LIST`] (64 KiB,
//!   the HTTP/1.1 head limit), whatever frames it comes in; past it the stream is refused.
//! - ping and settings floods: h2 answers each PING and SETTINGS with one frame and stops reading while its send
//!   buffer ([`MAX_SEND_BUFFER`] per stream) is full, so a peer that does not read cannot make it queue without
//!   bound; our own keep-alive pings (every `timeouts.idle`, answer within [`PING_TIMEOUT`]) close dead peers.
//! - frames and windows: frames up to [`MAX_FRAME`] (h2's default 16 KiB); windows of [`STREAM_WINDOW`] per
//!   stream and [`CONNECTION_WINDOW`] per connection, which bound what a client can make us buffer.
//! - slow heads and idle connections: an HTTP/1.1 head must arrive within `timeouts.client_header`; a connection
//!   with no request in progress for `timeouts.idle` is closed gracefully (`GOAWAY`, or a close between requests).
//!
//! WebSocket over HTTP/2: the server announces extended CONNECT (RFC 8441); such a request goes to the backend as
//! an HTTP/1.1 upgrade (`forward`).
//!
//! On shutdown (a drain), each connection is shut down gracefully: `GOAWAY` (HTTP/2) or `connection: close`
//! (HTTP/1.1), requests in progress finish, new ones go elsewhere.

use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::conn::{Conn, Ends};
use super::forward::Generic;
use super::LocalExec;
use crate::h1::request::MAX_HEAD;
use crate::worker::Open;

/// Streams one client may have open at once (nginx's default is 128; HAProxy's 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
/// The largest header list (decoded) a request may have: as the HTTP/1.1 head limit.
pub const MAX_HEADER_LIST: u32 = MAX_HEAD as u32;
/// Streams the client may reset before we accepted them, before the connection is closed.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams we may reset because of the client's errors, before the connection is closed.
pub const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// The largest frame we accept (h2's default, the minimum the protocol allows).
pub const MAX_FRAME: u32 = 16 * 1024;
/// The flow-control window of a stream, and of a connection.
pub const STREAM_WINDOW: u32 = 256 * 1024;
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// What one stream may have queued for sending: with [`MAX_CONCURRENT_STREAMS`], what a client that stops reading
/// can pin per connection (128 × 64 KiB = 8 MiB; at 256 × 400 KiB a review pinned 30 MiB a connection).
pub const MAX_SEND_BUFFER: usize = 64 * 1024;
/// How long a keep-alive ping may go unanswered.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves an HTTP/2 connection (`io`: after the TLS handshake, or a plain one whose preface was seen) from
/// `ends.peer` until it closes, is idle for `timeouts.idle`, or the worker drains. `open` counts it as open.
pub async fn serve<IO>(io: IO, ends: Ends, open: Open)
where
    IO: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let conn = Rc::new(Conn::new(open, ends));
    let idle = conn.worker().routing().load().timeouts.idle;
    let mut builder = http2::Builder::new(LocalExec);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_frame_size(MAX_FRAME)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(MAX_SEND_BUFFER)
        .keep_alive_interval(idle)
        .keep_alive_timeout(PING_TIMEOUT)
        .enable_connect_protocol();
    let connection = builder.serve_connection(TokioIo::new(io), Generic(conn.clone()));
    drive(pin!(connection), |c| c.graceful_shutdown(), &conn, idle).await;
}

/// Serves an HTTP/1.1 connection on the generic path (hyper's server; upgrades relayed), as [`serve`] does.
pub async fn serve_h1<IO>(io: IO, ends: Ends, open: Open)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Rc::new(Conn::new(open, ends));
    let timeouts = conn.worker().routing().load().timeouts.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_header)
        .max_buf_size(MAX_HEAD.max(8192));
    let connection = builder
        .serve_connection(TokioIo::new(io), Generic(conn.clone()))
        .with_upgrades();
    drive(
        pin!(connection),
        |c| c.graceful_shutdown(),
        &conn,
        timeouts.idle,
    )
    .await;
}

/// A wait longer than any drain: only a drain ends it (see `Timers::head_deadline`).
const UNTIL_DRAIN: Duration = Duration::from_millis(u32::MAX as u64);

/// Runs a connection until it ends; shuts it down gracefully (`shut`) when the worker drains or when it has had
/// no request in progress for `idle`, then lets what is in progress finish.
async fn drive<F: Future<Output = hyper::Result<()>>>(
    mut connection: Pin<&mut F>,
    shut: impl Fn(Pin<&mut F>),
    conn: &Conn,
    idle: Duration,
) {
    let worker = conn.worker();
    let mut drain = pin!(worker.timers().head_deadline(UNTIL_DRAIN));
    let mut check = Instant::now() + idle;
    loop {
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(peer = %conn.peer, %error, "client connection error");
                }
                return;
            }
            () = &mut drain => break,
            () = tokio::time::sleep_until(check) => match conn.idle_since() {
                Some(since) if since.elapsed() >= idle => break,
                Some(since) => check = since + idle,
                None => check = Instant::now() + idle,
            },
        }
    }
    shut(connection.as_mut());
    if let Err(error) = connection.await {
        tracing::debug!(peer = %conn.peer, %error, "client connection error");
    }
}
