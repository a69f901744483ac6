//! The running balancer: listeners, worker threads, the health checkers, and a graceful drain.
//!
//! Thread-per-core: each worker thread runs its own current-thread tokio runtime, accepts on its own `SO_REUSEPORT`
//! socket (the kernel spreads new connections over them) and owns its backend connection pool, so nothing on the
//! request path takes a lock; what workers share is the routing snapshot and the atomics of each backend's state.
//! The control plane (the routing snapshot and one health checker per backend, see `control`; signals) runs on the
//! runtime that called [`Server::start`].
//!
//! [`Server::start_local`] runs the same server as one worker on the caller's own runtime instead (a `spawn_local`
//! task: the caller is inside a `tokio::task::LocalSet`), for tests in-process: one thread for the tests' clients,
//! backends and the balancer, so that a paused clock (`tokio::time::pause`) covers every timeout, and nothing
//! process-wide is changed (the open-files limit is read, not raised). Everything else is the same code.
//!
//! Shutdown: one cancellation token. Workers take the connections the kernel had already queued, close their
//! listeners (new connections are refused), let the exchanges in flight finish (every answer from then on says
//! `connection: close`), give connections waiting for their next request a short grace ([`DRAIN_GRACE`]: a request
//! on its way is still answered) and report back once their last connection has closed; [`Server::shutdown`]
//! waits for that, or for the drain deadline, and then says how many requests the deadline cut.
//!
//! Bounds: at most `max_connections` client connections at once (see `admission`); at the limit, workers stop
//! accepting and the kernel queues new connections. A failed `accept` (out of file descriptors) backs off and is
//! logged at most once a second.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access_log;
use crate::admin::{Command, Plane, Reloads, Token};
use crate::admission::{self, ConnectionLimit};
use crate::config::{Config, ListenerKind};
use crate::control::Control;
pub use crate::control::Reloaded;
use crate::failure::{describe_io_static, is_local_shortage};
use crate::front::Front;
use crate::log_limit::{self, Subject};
use crate::tls::{self, CertificateError};
use crate::upstream::Routing;
use crate::worker::{Worker, WorkerCounts};

/// How long, once shutdown begins, a connection waiting for its next request may still send one.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Why a reload was refused (nothing changed). The `Display` form is the log line.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the listeners cannot change without a restart ({0})")]
    Listener(String),
}

/// Why the balancer could not start. The `Display` form is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot resolve listen host {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: io::Error },
    #[error("cannot start worker thread: {0}")]
    Thread(io::Error),
    #[error("{0}")]
    Certificate(#[from] CertificateError),
}

/// A running balancer.
pub struct Server {
    local_addr: SocketAddr,
    /// Every listener's address, in the config's order (the main one first).
    addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    workers: Vec<oneshot::Receiver<()>>,
    counts: Vec<Arc<WorkerCounts>>,
    /// The routing and the health checkers: what a reload, or a backend name's move (`reresolve`), changes.
    control: Arc<tokio::sync::Mutex<Control>>,
    routing: Arc<Routing>,
    /// The config the server started with: a reload may not change its listener.
    started: Config,
    /// The TLS listeners' config and certificates (re-read on reload).
    tls: Option<tls::Acceptor>,
    /// Sums up rate-limited log lines every second.
    log_flusher: JoinHandle<()>,
    drain: Duration,
}

/// Where the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// `config.workers` threads, each with its own runtime.
    Threads,
    /// One worker, a task on the caller's runtime and `LocalSet`.
    Local,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still in flight when the drain deadline passed, tunnels not counted (0: a clean drain).
    pub cut: usize,
    /// Tunnels (upgraded connections) still open when the drain deadline passed: they close with the process, as
    /// expected of a long-lived tunnel, so they do not make the drain unclean.
    pub tunnels: usize,
}

impl Server {
    /// Binds the listeners, checks every backend once, then starts serving on `config.workers` threads. Must be called
    /// inside a tokio runtime, which then runs the health checks.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Server::start_on(config, Placement::Threads).await
    }

    /// Like [`Server::start`], but serves with a single worker, a task on the caller's runtime (`config.workers` is
    /// not used), and leaves the process's open-files limit as it is. Must be called inside a
    /// `tokio::task::LocalSet`, on a current-thread runtime: everything then runs on the caller's thread, under the
    /// caller's clock (a paused one too), which is what in-process tests want.
    pub async fn start_local(config: Config) -> Result<Server, StartError> {
        Server::start_on(config, Placement::Local).await
    }

    async fn start_on(config: Config, placement: Placement) -> Result<Server, StartError> {
        let workers = match placement {
            Placement::Threads => config.workers,
            Placement::Local => 1,
        };
        // Certificates first: a bad one stops the start before anything listens.
        let tls = config.tls.as_ref().map(tls::Acceptor::new).transpose()?;
        // One socket per worker for each listener; then each worker's share.
        let mut per_worker: Vec<Vec<Bound>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
        let mut addrs = Vec::with_capacity(config.listeners.len());
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let listen = resolve(&listener.host, listener.port).await?;
            let sockets = bind(listen, workers)?;
            let local = sockets[0].local_addr().map_err(|error| StartError::Bind {
                addr: listen,
                error,
            })?;
            addrs.push(local);
            bound.push(sockets);
        }
        // Where a redirect listener sends clients: the first TLS listener (the main one when `[tls]` is set).
        let https_port = config
            .listeners
            .iter()
            .zip(&addrs)
            .find(|(listener, _)| listener.kind == ListenerKind::Tls)
            .map_or(443, |(_, addr)| addr.port());
        for (listener, sockets) in config.listeners.iter().zip(bound) {
            let front = Front::new(listener.clone())
                .with_tls(tls.clone().filter(|_| listener.kind == ListenerKind::Tls))
                .with_https_port(https_port);
            let front = Arc::new(front);
            for (worker, socket) in per_worker.iter_mut().zip(sockets) {
                worker.push(Bound {
                    socket,
                    front: front.clone(),
                });
            }
        }
        let local_addr = addrs[0];

        let files = match placement {
            Placement::Threads => admission::raise_open_files_limit(),
            Placement::Local => admission::open_files_limit(),
        };
        let derived = files.map(|files| admission::derived_max_connections(files, &config));
        let max_connections = match (config.max_connections, derived) {
            (Some(max), Some(fits)) if max > fits => {
                let files = files.unwrap_or_default();
                tracing::warn!("max_connections {max} is more than the open-files limit ({files}) allows ({fits}): clients may find lb out of file descriptors");
                max
            }
            (Some(max), _) => max,
            (None, Some(derived)) => derived,
            (None, None) => 10_000,
        };
        let limit = ConnectionLimit::new(max_connections);

        let shutdown = CancellationToken::new();
        let mut control = Control::new(&config, &shutdown);
        control.apply(&config).await;
        let started = config.clone();
        let routing = control.routing().clone();
        let control = Arc::new(tokio::sync::Mutex::new(control));
        crate::reresolve::spawn(control.clone(), shutdown.clone());
        let snapshot = routing.load_full();
        let log_flusher = tokio::spawn(log_limit::flush_every_window());

        let mut workers = Vec::with_capacity(per_worker.len());
        let mut counts = Vec::with_capacity(per_worker.len());
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let (done, finished) = oneshot::channel();
            let worker_counts = Arc::new(WorkerCounts::default());
            let context = WorkerContext {
                index,
                routing: routing.clone(),
                counts: worker_counts.clone(),
                limit: limit.clone(),
                shutdown: shutdown.clone(),
            };
            match placement {
                Placement::Threads => {
                    std::thread::Builder::new()
                        .name(format!("lb-worker-{index}"))
                        .spawn(move || worker(listeners, context, done))
                        .map_err(StartError::Thread)?;
                }
                Placement::Local => {
                    tokio::task::spawn_local(async move {
                        serve(listeners, context).await;
                        let _ = done.send(());
                    });
                }
            }
            workers.push(finished);
            counts.push(worker_counts);
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
        let limit_source = match (config.max_connections, files) {
            (Some(_), _) => "configured".to_owned(),
            (None, Some(files)) => format!("from the open-files limit {files}"),
            (None, None) => "the open-files limit is unknown".to_owned(),
        };
        let workers_text = match workers.len() {
            1 => "1 worker".to_owned(),
            n => format!("{n} workers"),
        };
        tracing::info!(
            "listening on {local_addr} with {workers_text}, max_connections {max_connections} ({limit_source}), backends: {}",
            backends.join(", ")
        );
        for (listener, addr) in config.listeners.iter().zip(&addrs).skip(1) {
            tracing::info!("also listening on {addr} ({})", Front::describe(listener));
        }
        Ok(Server {
            local_addr,
            addrs,
            shutdown,
            workers,
            counts,
            control,
            routing: routing.clone(),
            started,
            tls,
            log_flusher,
            drain: config.timeouts.drain,
        })
    }

    /// Loads the certificates `config` names, as [`Server::start`] would, without starting anything: what `lb
    /// check` adds to the config's own validation.
    pub fn check_certificates(config: &Config) -> Result<(), StartError> {
        config.tls.as_ref().map(tls::Acceptor::new).transpose()?;
        Ok(())
    }

    /// Applies a new config without dropping anything: requests in flight finish on the routing they started with,
    /// client connections stay open, backends kept (same id and address) keep their health, counters and pooled
    /// connections, added backends are checked once before they get traffic, removed ones get no new request. The
    /// listeners (host, port, workers, max_connections, the admin address) cannot change without a restart: such a
    /// config is refused whole, and nothing changes.
    pub async fn reload(&mut self, config: Config) -> Result<Reloaded, ReloadError> {
        let (was, now) = (&self.started, &config);
        let mut changes = Vec::new();
        if was.host != now.host {
            changes.push(format!("host {:?} → {:?}", was.host, now.host));
        }
        if was.port != now.port {
            changes.push(format!("port {} → {}", was.port, now.port));
        }
        if was.workers != now.workers {
            changes.push(format!("workers {} → {}", was.workers, now.workers));
        }
        if was.max_connections != now.max_connections {
            let show =
                |max: Option<usize>| max.map_or_else(|| "derived".to_owned(), |m| m.to_string());
            changes.push(format!(
                "max_connections {} → {}",
                show(was.max_connections),
                show(now.max_connections)
            ));
        }
        let shape = |c: &Config| {
            c.listeners
                .iter()
                .skip(1)
                .map(Front::describe_with_address)
                .collect::<Vec<_>>()
        };
        if shape(was) != shape(now) || was.listeners[0].kind != now.listeners[0].kind {
            changes.push("listeners".to_owned());
        }
        if was.listeners[0].mode != now.listeners[0].mode {
            changes.push(format!(
                "mode {:?} → {:?}",
                was.listeners[0].mode, now.listeners[0].mode
            ));
        }
        if was.listeners[0].accept_proxy != now.listeners[0].accept_proxy {
            changes.push("accept_proxy".to_owned());
        }
        let admin = |c: &Config| c.admin.as_ref().map(|a| a.addr);
        if admin(was) != admin(now) {
            let show =
                |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
            changes.push(format!("admin {} → {}", show(admin(was)), show(admin(now))));
        }
        if !changes.is_empty() {
            return Err(ReloadError::Listener(changes.join(", ")));
        }
        // Certificates that fail keep their previous version (logged there); the rest of the reload goes on.
        let certificates = match (&self.tls, &config.tls) {
            (Some(acceptor), Some(tls)) => acceptor.reload(tls),
            _ => Vec::new(),
        };
        let mut reloaded = self.control.lock().await.reload(&config).await;
        reloaded.certificate_errors = certificates.into_iter().map(|e| e.0).collect();
        Ok(reloaded)
    }

    /// What the admin plane reads (the routing, the workers' counts) and whom it asks (`commands`, which the caller
    /// serves: it owns the server, so it does the reloads).
    pub fn admin_plane(
        &self,
        token: Arc<Token>,
        config_path: Option<String>,
        reloads: Arc<Reloads>,
        commands: mpsc::Sender<Command>,
    ) -> Plane {
        Plane {
            routing: self.routing.clone(),
            workers: self.counts.clone(),
            reloads,
            config_path,
            token,
            commands,
        }
    }

    /// The address clients connect to (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every listener's address, in the config's order (the main one first).
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets requests in flight finish (until the drain deadline), stops the health checks.
    /// Answers how many requests the deadline cut.
    pub async fn shutdown(mut self) -> Drained {
        self.shutdown.cancel();
        let all_done = async {
            for worker in &mut self.workers {
                let _ = worker.await;
            }
        };
        let drained = tokio::time::timeout(self.drain, all_done).await.is_ok();
        let (in_flight, tunnels) = match drained {
            true => (0, 0),
            false => self
                .counts
                .iter()
                .fold((0, 0), |(requests, tunnels), counts| {
                    (requests + counts.in_flight(), tunnels + counts.tunnels())
                }),
        };
        self.control.lock().await.shutdown().await;
        self.log_flusher.abort();
        let _ = self.log_flusher.await;
        log_limit::flush();
        // The last requests' access lines, unless stdout is stuck.
        access_log::flush(Duration::from_secs(2));
        Drained {
            cut: in_flight.saturating_sub(tunnels),
            tunnels,
        }
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

/// What a worker thread is given.
struct WorkerContext {
    /// Which worker this is (0..workers): the slot it writes in per-backend counters.
    index: usize,
    routing: Arc<Routing>,
    counts: Arc<WorkerCounts>,
    limit: Arc<ConnectionLimit>,
    shutdown: CancellationToken,
}

/// A worker's socket of one listener, and what the listener does with a connection.
struct Bound {
    socket: std::net::TcpListener,
    front: Arc<Front>,
}

/// One worker thread: its own runtime, serving until shutdown and the drain are over.
fn worker(listeners: Vec<Bound>, context: WorkerContext, done: oneshot::Sender<()>) {
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
    local.block_on(&runtime, serve(listeners, context));
    let _ = done.send(());
}

/// One worker's work: accepts and serves connections on each of its listeners until shutdown, then drains. Runs
/// inside a `LocalSet`.
fn serve(listeners: Vec<Bound>, context: WorkerContext) -> impl Future<Output = ()> {
    let WorkerContext {
        index,
        routing,
        counts,
        limit,
        shutdown,
    } = context;
    async move {
        let worker = Rc::new(Worker::new(index, routing, counts, limit.clone()));
        let sweeper = worker.clone();
        tokio::task::spawn_local(async move { sweeper.sweep().await });
        let accepting = listeners
            .into_iter()
            .map(|bound| accept(bound, &worker, &limit, &shutdown));
        futures_util::future::join_all(accepting).await;
        worker.drain(DRAIN_GRACE).await;
    }
}

/// Accepts on one listener until shutdown, handing each connection to the listener's front end.
async fn accept(
    bound: Bound,
    worker: &Rc<Worker>,
    limit: &ConnectionLimit,
    shutdown: &CancellationToken,
) {
    let Bound { socket, front } = bound;
    let listener = match tokio::net::TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register listener");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(&error).await;
                continue;
            }
        };
        // At the limit this connection waits (unread) for another to close, and the loop accepts no more
        // meanwhile: the kernel queues them. Accepting first keeps a worker from holding a permit while the
        // waiting connection sits in another worker's queue.
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => {
                limit.force();
                true
            }
            () = limit.acquire() => false,
        };
        front.accept(stream, peer, worker);
        if stopping {
            break;
        }
    }
    // Connections the kernel already completed would be reset when the listener closes: serve them too.
    match listener.into_std() {
        Ok(listener) => {
            while let Ok((stream, peer)) = listener.accept() {
                let Ok(stream) = stream
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpStream::from_std(stream))
                else {
                    continue;
                };
                limit.force();
                front.accept(stream, peer, worker);
            }
        }
        Err(error) => tracing::debug!(%error, "cannot take the listen queue"),
    }
}

/// A failed `accept`: out of file descriptors and the like back off instead of spinning (the connection waits in
/// the kernel's queue), and are logged at most once a second; a connection reset before it was taken is nothing.
async fn accept_failed(error: &io::Error) {
    if !is_local_shortage(error) {
        tracing::debug!(%error, "accept failed");
        return;
    }
    let key = log_limit::Key {
        subject: Subject::Accept,
        what: "accepts failed",
        reason: describe_io_static(error),
    };
    if log_limit::first(key) {
        tracing::warn!(
            "accept: {}: new connections wait until descriptors are free",
            describe_io_static(error)
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}
