//! One client connection: read a request head, hand it to the proxy, act on how the exchange ended, repeat while
//! keep-alive allows.
//!
//! The connection has three phases with their own deadline: waiting for a request (`idle`, closed silently when
//! it runs out; a new connection waits `client_header`), reading a head (`client_header` from its first byte: a
//! slowloris gets `408` and a close), and proxying (bounded by the proxy's own timeouts). While waiting, the
//! connection holds no buffer, no timer of its own (a slot in the worker's `Timers`) and no shutdown waiter,
//! only its transport's readiness: a buffer is taken when bytes arrive and given back when the exchange is over, so
//! an idle keep-alive client costs its task, its socket registration and a timer slot.
//!
//! The connection is the only one that answers on its own (a refused head, 408, and the 502/503/504 of a failed
//! exchange) and the only one that ends a connection: cleanly, with a lingering close when the client may still
//! be sending, or with a reset when an answer broke off.
//!
//! On shutdown, exchanges in flight finish and every answer written from then on says `connection: close`; a
//! connection waiting for its next request gets a short grace (a request already on its way is answered, and
//! closed), then closes; the worker is done when its last connection is.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::access_log::{self, Line, Request};
use crate::backend::stats::StatusClass;
use crate::failure::{Failure, CLIENT_CLOSED_REQUEST};
use crate::h1::buffers::Buffers;
use crate::h1::client::{linger_close, Client, LINGER};
use crate::h1::request::{self, RequestHead};
use crate::h1::socket::read_into;
use crate::h1::transport::Transport;
use crate::h1::write::Scheme;
use crate::h1::{body, write, BodyLength, HeadScan};
use crate::h2;
use crate::proxy::{self, Outcome, Record};
use crate::timers::Elapsed;
use crate::worker::{Open, Worker};

/// The first allocation for a request head; it grows up to the head limit.
const HEAD_BUFFER: usize = 2 * 1024;

/// Starts serving a connection just accepted (and counted against `max_connections`) on this worker. It counts as
/// open from now on, not from when its task first runs: a drain that starts in between still waits for it.
pub fn spawn<T: Transport + Send + 'static>(client: Client<T>, worker: &Rc<Worker>) {
    tokio::task::spawn_local(serve(client, worker.open()));
}

/// Serves one client connection until it closes or times out (during a drain, its wait for another request is
/// cut short: see [`Worker::drain`]). Releases its place (`max_connections`, and this worker's open count) when it
/// ends.
/// (Not an `async fn`: those store their arguments twice, and this future is what every idle connection costs.)
#[allow(clippy::manual_async_fn)]
pub fn serve<T: Transport + Send + 'static>(
    mut client: Client<T>,
    open: Open,
) -> impl Future<Output = ()> {
    async move {
        let worker = open.worker();
        let mut first = true;
        loop {
            let buffers = worker.buffers();
            if first && client.buf.is_empty() {
                // A new connection's request has usually arrived with it: read it at once rather than after the
                // reactor's first report, one round of the event loop later (HAProxy reads speculatively too).
                client.buf = buffers.bytes();
                match client.stream.read_now(&mut client.buf) {
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
                    let timeouts = &worker.routing().load().timeouts;
                    if first {
                        timeouts.client_header
                    } else {
                        timeouts.idle
                    }
                };
                if worker
                    .timers()
                    .readable(&client.stream, wait)
                    .await
                    .is_err()
                {
                    client.stream.close_cleanly();
                    return tracing::trace!(peer = %client.peer, "idle client connection closed");
                }
                // Readiness can be reported with nothing to read (a new connection is, at first): only bytes that
                // arrived make the connection take a buffer and start an exchange.
                client.buf = buffers.bytes();
                match client.stream.try_read_into(&mut client.buf) {
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
            // HTTP/2 with prior knowledge: its preface, in the connection's first bytes, hands it to hyper.
            if first && h2::is_preface(&client.buf) {
                return hand_over(client, open, Handover::Http2);
            }
            first = false;
            // A box keeps the connection's own future small while it waits: the exchange's state lives only while
            // there is an exchange.
            let keep_alive = match Box::pin(exchange(&mut client, worker)).await {
                Next::KeepAlive => true,
                Next::Close => false,
                Next::Generic(head) => {
                    let read = std::mem::take(&mut client.buf);
                    client.buf = BytesMut::from(&head[..]);
                    client.buf.extend_from_slice(&read);
                    return hand_over(client, open, Handover::Http1);
                }
            };
            if client.buf.is_empty() || !keep_alive {
                buffers.recycle_bytes(std::mem::take(&mut client.buf));
            }
            if !keep_alive {
                // After a lingering close this is nothing more; after a reset asked for, nothing at all.
                client.stream.close_cleanly();
                return;
            }
            client.no_delay();
        }
    }
}

/// What a connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// Some backend is not plain HTTP/1.1: the connection goes to the generic path (`h2::serve_h1`), with this
    /// request's head (as read) to be read again there.
    Generic(Vec<u8>),
}

/// What a connection handed over to hyper speaks.
enum Handover {
    /// Its first bytes were the HTTP/2 preface: `h2::serve`.
    Http2,
    /// HTTP/1.1 for the generic path: `h2::serve_h1`.
    Http1,
}

impl From<bool> for Next {
    fn from(keep_alive: bool) -> Self {
        match keep_alive {
            true => Next::KeepAlive,
            false => Next::Close,
        }
    }
}

/// Hands a connection over to hyper (the generic path), with what was read of it so far; its open count goes with
/// it.
fn hand_over<T: Transport + Send + 'static>(client: Client<T>, open: Open, to: Handover) {
    let ends = h2::Ends {
        peer: client.peer,
        local: client.stream.local_addr(),
        https: T::SCHEME == Scheme::Https,
    };
    let io = h2::Rewind::new(client.stream, client.buf);
    match to {
        Handover::Http2 => drop(tokio::task::spawn_local(h2::serve(io, ends, open))),
        Handover::Http1 => drop(tokio::task::spawn_local(h2::serve_h1(io, ends, open))),
    }
}

/// Reads one request head and proxies the request. Returns whether the connection may carry another request, or
/// goes to the generic path.
///
/// Every answer is counted once (`lb_requests_total`): a backend's by the proxy, on that backend; `lb`'s own here
/// (a refused head, 408, a failed exchange, and one that broke or whose client left: with the status the access log
/// line shows). Every answer gets an access log line when the log is on.
async fn exchange<T: Transport>(client: &mut Client<T>, worker: &Worker) -> Next {
    let buffers = worker.buffers();
    let mut scan = HeadScan::default();
    // When a head that did not come whole began to arrive: the access log's duration counts from there (a head that
    // came whole takes no time worth a clock read).
    let mut began = None;
    // Most heads arrive whole in their first read: those need no timer. The others have `client_header` (cut
    // short by a drain, as a wait for a request is).
    let read = match take_head(client, buffers, &mut scan) {
        Ok(Some(head)) => Ok(Ok(Some(head))),
        Ok(None) => {
            began = Some(Instant::now());
            let read = read_head(client, buffers, &mut scan);
            let deadline = worker
                .timers()
                .head_deadline(worker.routing().load().timeouts.client_header);
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
        Ok(Ok(None)) => return Next::Close,
        Ok(Err(HeadError::Io(error))) => {
            tracing::debug!(peer = %client.peer, %error, "client connection error");
            return Next::Close;
        }
        Ok(Err(HeadError::Refused(refusal))) => {
            tracing::debug!(peer = %client.peer, status = refusal.status.as_u16(), reason = refusal.reason, "request refused");
            refuse(client, worker, refusal.status, began).await;
            return Next::Close;
        }
        Err(_) => {
            if !client.buf.is_empty() {
                tracing::debug!(peer = %client.peer, "client sent no complete request head in time: 408");
                refuse(client, worker, StatusCode::REQUEST_TIMEOUT, began).await;
            }
            return Next::Close;
        }
    };
    if body::small_rest_to_come(head.body, client.buf.len()) {
        client.stream.acknowledge_now();
    }
    // One view of the routing for the whole exchange (a reload in between changes nothing for it).
    let snapshot = worker.routing().load_full();
    if !snapshot.plain {
        return Next::Generic(raw);
    }
    let in_flight = worker.exchange();
    let started = Instant::now();
    let mut record = Record::default();
    let outcome = proxy::handle(
        worker,
        &snapshot,
        client,
        (&head, &raw),
        started,
        &mut record,
    )
    .await;
    let request = Request {
        peer: client.peer,
        head: &head,
        raw: &raw,
    };
    // `own`: the answer is `lb`'s (the proxy counted a backend's).
    let (status, backend, keep_alive, own) = match outcome {
        Outcome::Delivered {
            status,
            backend,
            keep_alive,
            request_read,
        } => {
            // Only a connection that ends is looked at (a look may cost a system call). One with the client's
            // bytes still coming (the rest of a body, another request) is read away for a moment, so that the
            // close does not reset it under the answer just sent.
            let ends_cleanly = || request_read && client.nothing_unread();
            if !keep_alive && !ends_cleanly() {
                linger_close(&mut client.stream).await;
            }
            (status, Some(backend), keep_alive, false)
        }
        Outcome::Tunneled { backend, failed } => {
            // Both sides of the tunnel are done, or one failed: nothing to linger for; a failure is passed on.
            if failed {
                client.stream.reset_on_close();
            }
            (StatusCode::SWITCHING_PROTOCOLS, Some(backend), false, false)
        }
        Outcome::Failed(error) => {
            access_log::failure(&request, &error);
            let status = error.status();
            if error.failure == Failure::ClientGone {
                (CLIENT_CLOSED_REQUEST, error.backend, false, true)
            } else {
                let clean = head.body == BodyLength::Empty && head.keep_alive && !worker.draining();
                let (kept, body_bytes) = answer(client, status, clean).await;
                record.body_bytes = body_bytes;
                (status, error.backend, kept, true)
            }
        }
        Outcome::Broken(error) => {
            access_log::failure(&request, &error);
            // The answer was cut (by the backend, or because the client stopped reading): a reset, not a clean
            // end, so that no client takes a truncated body for a complete one.
            client.stream.reset_on_close();
            let status = match error.failure {
                Failure::ClientGone | Failure::ClientTooSlow => CLIENT_CLOSED_REQUEST,
                _ => error.status(),
            };
            (status, error.backend, false, true)
        }
    };
    if own {
        worker.count_own(StatusClass::of(status.as_u16()));
    }
    if let Some(format) = snapshot.access_log {
        let line = Line {
            peer: client.peer,
            request: Some((&head, &raw)),
            status,
            backend,
            record,
            took: began.unwrap_or(started).elapsed(),
        };
        access_log::write(format, &line);
    }
    drop(in_flight);
    buffers.recycle_vec(raw);
    keep_alive.into()
}

enum HeadError {
    Io(io::Error),
    Refused(request::Refusal),
}

/// Reads until a whole request head is in the buffer, and takes it out. `None`: the client closed cleanly.
async fn read_head<T: Transport>(
    client: &mut Client<T>,
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
        match read_into(&mut client.stream, &mut client.buf).await {
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
fn take_head<T: Transport>(
    client: &mut Client<T>,
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

/// Answers a request whose head could not be read (refused, or not whole in time), closes, counts the answer as
/// `lb`'s own and logs it (`began`: when its head began to arrive, if it did not come whole).
async fn refuse<T: Transport>(
    client: &mut Client<T>,
    worker: &Worker,
    status: StatusCode,
    began: Option<Instant>,
) {
    let (_, body_bytes) = answer(client, status, false).await;
    worker.count_own(StatusClass::of(status.as_u16()));
    if let Some(format) = worker.routing().load().access_log {
        let line = Line {
            peer: client.peer,
            request: None,
            status,
            backend: None,
            record: Record {
                body_bytes,
                ..Record::default()
            },
            took: began.map_or(Duration::ZERO, |began| began.elapsed()),
        };
        access_log::write(format, &line);
    }
}

/// Writes an answer of our own; unless `keep`, says `connection: close` and closes (lingering). Returns whether the
/// connection can carry another request, and the body bytes written.
async fn answer<T: Transport>(
    client: &mut Client<T>,
    status: StatusCode,
    keep: bool,
) -> (bool, u64) {
    let mut out = Vec::with_capacity(192);
    let body = write::error_response(&mut out, status, !keep);
    let written = matches!(
        tokio::time::timeout(LINGER, client.stream.write_all(&out)).await,
        Ok(Ok(()))
    );
    if written && !keep {
        linger_close(&mut client.stream).await;
    }
    (written && keep, if written { body as u64 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::ConnectionLimit;
    use crate::config::{from_backends, Overrides};
    use crate::upstream::{Routing, Snapshot};
    use std::sync::Arc;

    /// What an idle keep-alive connection costs is mostly its task: the future of `serve`, which tokio allocates
    /// with its header in steps of 128 bytes (`bench/README.md`, Design figures). 168 bytes when this was written
    /// (as before the transport and worker split): a change that makes it grow shows here first.
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_future_stays_small() {
        let config = from_backends(Vec::new(), &Overrides::default()).unwrap();
        let routing = Arc::new(Routing::new(Snapshot::build(&config, None)));
        let limit = ConnectionLimit::new(1);
        let worker = Rc::new(Worker::new(0, routing, Arc::default(), limit));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = stream.local_addr().unwrap();
        let future = serve(Client::new(stream, peer), worker.open());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 168, "serve's future grew to {size} bytes");
    }
}
