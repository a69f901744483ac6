//! TCP mode (L4): each client connection goes whole to one backend, bytes copied both ways.
//!
//! A connection is balanced as a request is: the snapshot's balancer picks among the eligible backends (healthy,
//! enabled, not yet tried for this connection), and a failed connect (refused, unreachable, `timeouts.connect`)
//! goes on to the next backend at once, never to the same one twice. The chosen backend counts the connection as
//! in flight for its whole life (`lb_backend_in_flight`, an admin drain waits for it) and as an open connection
//! (`backend::stats`); a connect after the first counts as a retry. With no backend left, the connection is closed
//! (there is no 503 to send in TCP), logged once a second at most.
//!
//! A backend with `send_proxy` gets a PROXY header first, with the client's address and the address it reached
//! (the listener's, or what a trusted PROXY header said). Then the bytes are copied both ways with half-close and
//! an idle timeout (`timeouts.tunnel_idle`): by `splice(2)` between two plain sockets (`splice`, measured faster),
//! through buffers otherwise (`relay`).
//!
//! For the worker, a TCP connection is an exchange in flight and a tunnel: a drain does not cut it, it lives until
//! it ends or the drain deadline ends the process, which does not make the drain unclean (as an upgraded
//! connection). Each connection that reached a backend ends with one debug line (client, backend, bytes each way,
//! duration, how it ended), and a line in the access log when it is on.

mod relay;
mod splice;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

pub use relay::FirstBytes;

use relay::Relayed;

use crate::backend::outlier::Observed;
use crate::failure::Failure;
use crate::log_limit::{self, Subject};
use crate::proxy::Tried;
use crate::proxy_protocol;
use crate::upstream::connector::{self, Upstream};
use crate::upstream::{Backend, Snapshot};
use crate::worker::Open;

/// Who is on each end of a client connection, as far as the backend should know.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    /// The client (its socket's peer, or the source a trusted PROXY header named).
    pub peer: SocketAddr,
    /// The address it reached (the listener's, or the destination a trusted PROXY header named).
    pub local: SocketAddr,
}

/// A client connection's byte stream in TCP mode: plain TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin {
    /// The socket itself when the stream is plain TCP (then bytes can be spliced, see `splice`).
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Stream for TcpStream {
    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// Serves one TCP-mode client connection to its end; `leftover` holds bytes already read from the client (past a
/// PROXY header), which go to the backend first.
pub async fn serve<S>(mut client: S, ends: Ends, leftover: BytesMut, first: FirstBytes, open: Open)
where
    S: Stream,
{
    let worker = open.worker();
    let started = Instant::now();
    let snapshot = worker.routing().load_full();
    let _exchange = worker.exchange();
    let _tunnel = worker.tunnel();
    let cluster = snapshot.default_cluster();
    let mut tried = Tried::new(&snapshot, cluster, None, worker.index());
    loop {
        let Some(index) = tried.pick_next() else {
            return no_backend(ends.peer, tried.len());
        };
        if tried.len() > 1 {
            worker.count_retry();
        }
        let backend = &cluster.backends[index];
        let _in_flight = backend.state.enter();
        let Some(mut upstream) = connect(&snapshot, backend, ends).await else {
            cluster.observe(index, Observed::ConnectFailed);
            continue;
        };
        cluster.observe(index, Observed::Connected);
        backend.state.stats.opened(worker.index());
        let idle = snapshot.timeouts.tunnel_idle;
        let relayed = copy_both_ways(&mut client, &mut upstream, &leftover, first, idle).await;
        backend.state.stats.closed(worker.index());
        tracing::debug!(
            client = %ends.peer,
            backend = backend.id,
            up = relayed.up,
            down = relayed.down,
            duration_ms = started.elapsed().as_millis() as u64,
            ended = ?relayed.ended,
            "tcp connection ended"
        );
        return;
    }
}

/// Copies both ways: spliced between two plain sockets (unless the client's first bytes are checked, or no pipe
/// can be made), else through buffers (`relay`).
async fn copy_both_ways<S: Stream>(
    client: &mut S,
    upstream: &mut Upstream,
    leftover: &[u8],
    first: FirstBytes,
    idle: Duration,
) -> Relayed {
    if let (Some(client), Upstream::Plain(backend), FirstBytes::Unchecked) =
        (client.as_tcp(), &*upstream, first)
    {
        match splice::Pipes::new() {
            Ok(pipes) => return splice::run(client, backend, leftover, pipes, idle).await,
            Err(error) => tracing::debug!(%error, "no pipe for splice: copying through buffers"),
        }
    }
    relay::run(client, upstream, leftover, first, idle).await
}

/// A connection to `backend` (with its PROXY header when it wants one), or `None` when it failed (counted and
/// logged: the caller tries the next backend).
async fn connect(snapshot: &Snapshot, backend: &Backend, ends: Ends) -> Option<Upstream> {
    let prelude = backend
        .options
        .send_proxy
        .map(|version| proxy_protocol::header(version, ends.peer, ends.local));
    let timeout = snapshot.timeouts.connect;
    let error = match connector::connect(backend, timeout, prelude.as_deref()).await {
        Ok(upstream) => return Some(upstream),
        Err(error) => error,
    };
    let failure = error.failure();
    if failure != Failure::LocalShortage {
        backend
            .state
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
    }
    let key = log_limit::Key {
        subject: Subject::Backend(backend.id),
        what: "tcp connections sent elsewhere",
        reason: failure.as_str(),
    };
    if log_limit::first(key) {
        tracing::warn!("{backend} unreachable ({error}): tcp connection sent to the next backend");
    }
    None
}

/// No backend could take the connection: it is closed (logged at most once a second).
fn no_backend(peer: SocketAddr, tried: usize) {
    let key = log_limit::Key {
        subject: Subject::Backends,
        what: "tcp connections closed",
        reason: "no backend available",
    };
    if log_limit::first(key) {
        tracing::warn!(client = %peer, tried, "tcp connection closed: no backend available");
    }
}
