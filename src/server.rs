//! The running balancer: listeners, worker threads, the health checkers, and a graceful drain.
//!
//! Thread-per-core: each worker thread runs its own current-thread tokio runtime, accepts on its own `SO_REUSEPORT`
//! socket (the kernel spreads new connections over them) and owns its backend connection pool, so nothing on the
//! request path takes a lock; what workers share is the routing snapshot and the atomics of each backend's state.
//! The control plane (health checks, signals) runs on the runtime that called [`Server::start`].
//!
//! Shutdown: one cancellation token. Workers close their listeners (new connections are refused), let the exchanges
//! in flight finish (their answers say `connection: close`), then close the connections left, which are idle, and
//! report back; [`Server::shutdown`] waits for that, or for the drain deadline.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connection;
use crate::health;
use crate::proxy::Proxy;
use crate::upstream::{Routing, Snapshot};

/// Why the balancer could not start. The `Display` form is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot resolve listen host {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: io::Error },
    #[error("cannot start worker thread: {0}")]
    Thread(io::Error),
}

/// A running balancer.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    workers: Vec<oneshot::Receiver<()>>,
    health: JoinSet<()>,
    drain: Duration,
}

impl Server {
    /// Binds the listeners, checks every backend once, then starts serving. Must be called inside a tokio runtime,
    /// which then runs the health checks.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let listen = resolve(&config.host, config.port).await?;
        let listeners = bind(listen, config.workers)?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|error| StartError::Bind {
                addr: listen,
                error,
            })?;

        let routing = Arc::new(Routing::new(Snapshot::build(&config)));
        let snapshot = routing.load_full();
        health::check_once(&snapshot.backends, &config.health).await;

        let shutdown = CancellationToken::new();
        let mut health = JoinSet::new();
        for backend in &snapshot.backends {
            health.spawn(health::watch(
                backend.clone(),
                config.health.clone(),
                shutdown.clone(),
            ));
        }

        let mut workers = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let (done, finished) = oneshot::channel();
            let routing = routing.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("lb-worker-{index}"))
                .spawn(move || worker(listener, routing, shutdown, done))
                .map_err(StartError::Thread)?;
            workers.push(finished);
        }

        let backends: Vec<String> = snapshot
            .backends
            .iter()
            .map(|b| {
                format!(
                    "{} {} {}",
                    b.id,
                    b.authority,
                    if b.is_healthy() { "up" } else { "down" }
                )
            })
            .collect();
        tracing::info!(
            "listening on {local_addr} with {} workers, backends: {}",
            workers.len(),
            backends.join(", ")
        );
        Ok(Server {
            local_addr,
            shutdown,
            workers,
            health,
            drain: config.timeouts.drain,
        })
    }

    /// The address clients connect to (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (until the drain deadline), stops the health checks.
    /// Returns true when every connection finished before the deadline.
    pub async fn shutdown(mut self) -> bool {
        self.shutdown.cancel();
        let all_done = async {
            for worker in &mut self.workers {
                let _ = worker.await;
            }
        };
        let drained = tokio::time::timeout(self.drain, all_done).await.is_ok();
        if !drained {
            tracing::warn!(deadline = ?self.drain, "drain deadline passed with requests still in flight");
        }
        self.health.shutdown().await;
        drained
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, StartError> {
    let resolve_error = |reason: String| StartError::Resolve {
        host: host.to_owned(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| resolve_error(error.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| resolve_error("no address".to_owned()))
}

/// One listening socket per worker, all on the same address with `SO_REUSEPORT`.
fn bind(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let bind_error = |error| StartError::Bind { addr, error };
    if addr.port() != 0 {
        // SO_REUSEPORT would let us share the port with another process that also sets it (another `lb`): a probe
        // without it fails if anyone listens there, so "address in use" is reported as it should be.
        probe(addr).map_err(bind_error)?;
    }
    let first = reuseport_listener(addr).map_err(bind_error)?;
    let actual = first.local_addr().map_err(bind_error)?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(
            reuseport_listener(actual).map_err(|error| StartError::Bind {
                addr: actual,
                error,
            })?,
        );
    }
    Ok(listeners)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.listen(1)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    // Accepted connections inherit this (set after `listen`, which resets it): the kernel then does not
    // acknowledge a request at once but lets the answer carry the acknowledgement, one packet less per new
    // connection (HAProxy does the same).
    let _ = socket.set_quickack(false);
    Ok(socket.into())
}

/// One worker thread: accepts and serves connections until shutdown, then drains.
fn worker(
    listener: std::net::TcpListener,
    routing: Arc<Routing>,
    shutdown: CancellationToken,
    done: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start a worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot register listener");
                return;
            }
        };
        let shared = Rc::new(connection::Shared::new(Proxy::new(routing)));
        let sweeper = shared.clone();
        tokio::task::spawn_local(async move {
            let proxy = sweeper.proxy();
            proxy.timers().sweep(|| proxy.timer_tick()).await
        });
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let client = connection::Client::new(stream, peer);
                    tokio::task::spawn_local(connection::serve(client, shared.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        shared.drain().await;
        // Leaving drops the connections still open: all of them are idle (or still sending a head), and closing
        // them is the last step of the drain.
    });
    let _ = done.send(());
}
