//! The generic path's connections to backends: for each worker and backend, a few kept-alive HTTP/1.1 senders
//! (`hyper::client::conn::http1`), or one multiplexed HTTP/2 sender (`http2`) that every request clones.
//!
//! New connections come from `upstream::connector` (TCP, TLS when the backend asks, a PROXY header first when
//! given), so this file knows nothing of transports: an `h2` backend is the same code over the TLS stream the
//! connector returns (which must have negotiated ALPN `h2`). The connection's own task (hyper's `Connection`)
//! runs on the worker (`spawn_local`) and ends when the backend closes or when its last sender is dropped; it
//! counts itself in the backend's connection gauge while it runs.
//!
//! Where senders are kept ([`Clients`]): one set per worker thread (a thread-local, keyed by worker index and
//! backend identity: workers are threads, and nothing here is shared with another thread), except for backends
//! with `send_proxy`. A connection that began with a PROXY header speaks for one client only, so the senders of
//! such backends are kept in the client connection's own [`Clients`] and dropped with it: never lent to another
//! client's requests.
//!
//! Idle HTTP/1.1 senders are kept up to `pool.max_idle_per_backend` per backend, and one idle past
//! `pool.idle_timeout` is dropped (closing its connection) when the next request looks for one; the backend's own
//! keep-alive timeout closes the rest. An HTTP/2 sender is replaced when its connection is closed. The senders of
//! backends a reload removed are dropped the next time a connection is made.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::Instant;

use super::body::Paced;
use super::LocalExec;
use crate::config::PoolConfig;
use crate::upstream::connector;
use crate::upstream::{Backend, ConnectError};
use crate::worker::Worker;

/// What a request to a backend carries: the client's body as it streams in (held to its pace), or nothing (a
/// resent request).
pub type UpBody = Either<Paced, Empty<Bytes>>;

/// A way to send one request to a backend.
pub enum Sender {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

/// Which backend connection senders are for: the worker, the backend's identity.
type Key = (usize, u64, SocketAddr);

/// Senders kept for the next request (see the module docs for where each set lives).
#[derive(Default)]
pub struct Clients {
    kept: RefCell<HashMap<Key, Kept>>,
}

#[derive(Default)]
struct Kept {
    /// Idle HTTP/1.1 senders, the most recently used last, with when they were given back.
    idle: Vec<(http1::SendRequest<UpBody>, Instant)>,
    /// The HTTP/2 connection's sender, cloned per request.
    h2: Option<http2::SendRequest<UpBody>>,
}

thread_local! {
    /// The worker's own senders (one worker per thread).
    static WORKER: Clients = Clients::default();
}

/// Runs `f` with the senders of the worker on this thread.
pub fn of_worker<R>(f: impl FnOnce(&Clients) -> R) -> R {
    WORKER.with(f)
}

fn key(worker: &Worker, backend: &Backend) -> Key {
    (worker.index(), backend.id, backend.addr)
}

impl Clients {
    /// A kept sender for `backend`, if one is ready: an HTTP/1.1 one not idle past `pool.idle_timeout`, or a clone
    /// of the HTTP/2 one while its connection is open.
    pub fn take(&self, worker: &Worker, backend: &Backend, pool: &PoolConfig) -> Option<Sender> {
        let mut kept = self.kept.borrow_mut();
        let kept = kept.get_mut(&key(worker, backend))?;
        if backend.options.protocol.is_h2() {
            return match &kept.h2 {
                Some(sender) if !sender.is_closed() => Some(Sender::H2(sender.clone())),
                _ => {
                    kept.h2 = None;
                    None
                }
            };
        }
        let now = Instant::now();
        while let Some((sender, since)) = kept.idle.pop() {
            if sender.is_ready() && now.duration_since(since) < pool.idle_timeout {
                return Some(Sender::H1(sender));
            }
        }
        None
    }

    /// Drops the senders of `worker` for backends that `snapshot` no longer routes to (removed, or retired by a
    /// reload), closing their connections: called when a new connection is made, which is rare enough to pay for a
    /// look at every entry.
    pub fn forget_gone(&self, worker: &Worker, snapshot: &crate::upstream::Snapshot) {
        let routed = |&(index, id, addr): &Key| {
            index != worker.index()
                || snapshot.backends.iter().any(|b| {
                    b.id == id
                        && b.addr == addr
                        && !b.state.retired.load(std::sync::atomic::Ordering::Relaxed)
                })
        };
        self.kept.borrow_mut().retain(|key, _| routed(key));
    }

    /// Keeps a new HTTP/2 sender for the requests that follow.
    pub fn keep_h2(&self, worker: &Worker, backend: &Backend, sender: &http2::SendRequest<UpBody>) {
        let mut kept = self.kept.borrow_mut();
        kept.entry(key(worker, backend)).or_default().h2 = Some(sender.clone());
    }

    /// Gives an HTTP/1.1 sender back after a whole exchange (dropped, closing its connection, when the backend
    /// already keeps its share of idle ones, or was removed by a reload).
    pub fn give_back(
        &self,
        worker: &Worker,
        backend: &Backend,
        sender: http1::SendRequest<UpBody>,
        pool: &PoolConfig,
    ) {
        let retired = backend
            .state
            .retired
            .load(std::sync::atomic::Ordering::Relaxed);
        if retired || !sender.is_ready() {
            return;
        }
        let mut kept = self.kept.borrow_mut();
        let idle = &mut kept.entry(key(worker, backend)).or_default().idle;
        if idle.len() < pool.max_idle_per_backend {
            idle.push((sender, Instant::now()));
        }
    }
}

/// Opens a new connection to `backend` (its first bytes `prelude`, when given: a PROXY header) and makes it a
/// sender of the backend's protocol.
pub async fn connect(
    worker: &Worker,
    backend: &Backend,
    timeout: std::time::Duration,
    prelude: Option<&[u8]>,
) -> Result<Sender, ConnectError> {
    let io = TokioIo::new(connector::connect(backend, timeout, prelude).await?);
    let (index, state) = (worker.index(), backend.state.clone());
    state.stats.opened(index);
    let handshake = |error: hyper::Error| {
        state.stats.closed(index);
        ConnectError::Io(io::Error::other(error))
    };
    if backend.options.protocol.is_h2() {
        let (sender, connection) = http2::Builder::new(LocalExec)
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(handshake)?;
        tokio::task::spawn_local(async move {
            let _ = connection.await;
            state.stats.closed(index);
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(handshake)?;
        tokio::task::spawn_local(async move {
            let _ = connection.with_upgrades().await;
            state.stats.closed(index);
        });
        Ok(Sender::H1(sender))
    }
}
