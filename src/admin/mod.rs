//! The admin plane: what a person running `lb` uses to see and steer it (metrics, status, runtime control, reload,
//! the dashboard), served on its own address and its own thread.
//!
//! Why apart from the data plane: an admin request must never wait behind client traffic, and client traffic must
//! never pay for the admin plane. So it has one thread with a small current-thread runtime of its own (started only
//! when an admin address is configured), serves with hyper (nothing here is a hot path: a well-kept server is
//! better than ours for it), and only *reads* what the data plane already keeps: the routing snapshot, each
//! backend's live state and counters (per worker, summed here at read time), and each worker's counts; for the
//! dashboard's charts, one task of this runtime reads the counters every second and keeps the last minutes
//! (`history`). What it changes, it changes the way the control plane does: a backend's admin state is one atomic
//! store; a reload is asked of the main task (which owns the server) over a channel, so SIGHUP and `/api/reload` are
//! the same code.
//!
//! Who may ask: anyone who can reach the address when it is loopback and no token is set (the default); with
//! `admin_token`, every request must carry it (`auth`). Requests that change something are refused when a browser
//! sends them from another origin (a web page cannot steer a balancer on the same machine).

mod answer;
mod auth;
mod backends;
pub mod client;
mod dashboard;
mod history;
mod metrics;
mod peers;
mod reload;
mod routes;
mod status;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::AdminConfig;
use crate::control::Reloaded;
use crate::upstream::Routing;
use crate::worker::WorkerCounts;

/// Admin connections served at once; more are closed at once (an admin plane is for a few people and scrapers), and
/// one client address may hold only `peers::PER_PEER` of them.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin plane reads and whom it asks to change things.
pub struct Plane {
    /// The routing the workers use: backends, their live state and counters.
    pub(crate) routing: Arc<Routing>,
    /// Each worker's counts (open connections, requests in flight, …).
    pub(crate) workers: Vec<Arc<WorkerCounts>>,
    /// Reloads done and failed.
    pub(crate) reloads: Arc<Reloads>,
    /// The config file reloads re-read, as given (`None`: the demo, which has none).
    pub(crate) config_path: Option<String>,
    /// The bearer token requests must carry, if any.
    pub(crate) token: Arc<Token>,
    /// Asks the main task to do what only it can.
    pub(crate) commands: mpsc::Sender<Command>,
}

/// What the admin plane asks of the main task.
#[derive(Debug)]
pub enum Command {
    /// Re-read the config file and apply it; the answer is the diff, or the one-line error.
    Reload(oneshot::Sender<Result<Reloaded, String>>),
}

/// The bearer token admin requests must carry (`None`: a loopback address without one). A reload may replace it
/// (the address cannot change without a restart; the token can, so that it can be rotated).
#[derive(Debug, Default)]
pub struct Token(std::sync::RwLock<Option<String>>);

impl Token {
    pub fn new(token: Option<String>) -> Self {
        Token(std::sync::RwLock::new(token))
    }

    pub fn set(&self, token: Option<String>) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = token;
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Config reloads by result, whatever asked for them (SIGHUP, `/api/reload`, `lb reload`).
#[derive(Debug, Default)]
pub struct Reloads {
    ok: AtomicU64,
    error: AtomicU64,
}

impl Reloads {
    pub fn record(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.error };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn error(&self) -> u64 {
        self.error.load(Ordering::Relaxed)
    }
}

/// The running admin plane. Dropping it stops it too; [`Admin::stop`] waits until it has.
pub struct Admin {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Admin {
    /// Binds `config.addr` (so that a bad address fails the start) and serves `plane` on a thread of its own.
    pub fn start(config: &AdminConfig, plane: Plane) -> io::Result<Admin> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("lb-admin".into())
            .spawn(move || runtime.block_on(serve(listener, Arc::new(plane), stopped)))?;
        Ok(Admin {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving (requests in progress are dropped: a drain answer waiting would wait for nothing) and waits.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    plane: Arc<Plane>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => return tracing::error!(%error, "admin: cannot register the listener"),
    };
    let history = Arc::new(history::History::default());
    tokio::spawn(history::run(plane.routing.clone(), history.clone()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(peers::Peers::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(peer_slot) = peers.enter(peer.ip()) else {
            tracing::debug!(%peer, "admin: too many connections from this address, closing one");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin: too many connections, closing one");
            continue;
        };
        let (plane, history) = (plane.clone(), history.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (plane, history) = (plane.clone(), history.clone());
                async move { Ok::<_, Infallible>(routes::route(&plane, &history, request).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "admin connection ended");
            }
            drop((slot, peer_slot));
        });
    }
}
