//! One client connection on the generic path, as its requests share it: who is on either end, the senders that
//! speak for this client only (`send_proxy` backends), and how long it has been idle.

use std::cell::Cell;
use std::net::SocketAddr;

use tokio::time::Instant;

use super::clients::{self, Clients};
use crate::upstream::Backend;
use crate::worker::{Open, Worker};

/// One client connection on the generic path, shared by its requests.
pub struct Conn {
    /// Counts the connection as open (and against `max_connections`) until its last request is done.
    open: Open,
    pub peer: SocketAddr,
    /// The address the client reached (see [`Ends::local`]).
    pub(super) local: Option<SocketAddr>,
    /// The client reached us over TLS (`X-Forwarded-Proto: https`).
    pub(super) https: bool,
    /// Senders to `send_proxy` backends: their connections speak for this client only.
    own: Clients,
    /// Requests in progress, and when the last one ended: what the idle timeout looks at.
    active: Cell<usize>,
    last: Cell<Instant>,
}

/// Who is on either end of a client connection, and how it came.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    pub peer: SocketAddr,
    /// The address the client reached: the destination of a PROXY header sent to a `send_proxy` backend.
    pub local: Option<SocketAddr>,
    /// The client reached us over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

impl Conn {
    pub fn new(open: Open, ends: Ends) -> Self {
        Conn {
            open,
            peer: ends.peer,
            local: ends.local,
            https: ends.https,
            own: Clients::default(),
            active: Cell::new(0),
            last: Cell::new(Instant::now()),
        }
    }

    pub fn worker(&self) -> &Worker {
        self.open.worker()
    }

    /// Since when the connection has had no request in progress (`None`: it has one now).
    pub fn idle_since(&self) -> Option<Instant> {
        (self.active.get() == 0).then(|| self.last.get())
    }

    /// The senders `backend` is reached through from this connection: its own (a `send_proxy` backend), or the
    /// worker's.
    pub(super) fn clients<R>(&self, backend: &Backend, f: impl FnOnce(&Clients) -> R) -> R {
        match backend.options.send_proxy {
            Some(_) => f(&self.own),
            None => clients::of_worker(f),
        }
    }
}

/// A request in progress on its connection (see [`Conn::idle_since`]).
pub(super) struct Active<'a>(&'a Conn);

impl<'a> Active<'a> {
    pub(super) fn new(conn: &'a Conn) -> Self {
        conn.active.set(conn.active.get() + 1);
        Active(conn)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0.last.set(Instant::now());
    }
}
