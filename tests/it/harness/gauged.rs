//! A backend that measures the load `lb` puts on it, for the balancing tests: [`GaugedBackend`] counts the requests
//! it is answering at this moment and the most it ever answered at once, and can be slow (a fixed delay per answer)
//! or held (every answer waits until the test opens its gate), so a test can freeze requests in flight and look at
//! where they landed.
//!
//! Also [`BalancingConfig`], the TOML a balancing test starts `lb` with: top-level keys, `[[backends]]`, named pools
//! (`[pools.NAME]`) and `[[routes]]`, in the order TOML requires (keys before tables).
//!
//! Routes of a `GaugedBackend`: `/health` answers 200 (not counted); anything else answers
//! `hello from backend <id>` with an `x-backend-id` header, after the delay and once the gate is open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{wait_until, HEALTH_PATH, PATIENCE};

struct Gauge {
    id: u64,
    delay: Duration,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// `true` while answers may go; a held request waits for it.
    open: watch::Sender<bool>,
}

/// One request being answered: counted in flight from its arrival until its answer is made, or until `lb` gives up
/// on it (the future is dropped).
struct Answering<'a>(&'a Gauge);

impl<'a> Answering<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.hits.fetch_add(1, Ordering::SeqCst);
        let now = gauge.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(now, Ordering::SeqCst);
        Answering(gauge)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP/1 backend on 127.0.0.1 that counts its requests in flight.
pub struct GaugedBackend {
    pub id: u64,
    addr: SocketAddr,
    gauge: Arc<Gauge>,
    server: JoinHandle<()>,
}

impl GaugedBackend {
    /// Answers at once.
    pub async fn start(id: u64) -> Self {
        GaugedBackend::slow(id, Duration::ZERO).await
    }

    /// Waits `delay` before each answer.
    pub async fn slow(id: u64, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("backend address");
        let gauge = Arc::new(Gauge {
            id,
            delay,
            hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            open: watch::Sender::new(true),
        });
        let shared = gauge.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let gauge = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(gauge.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GaugedBackend {
            id,
            addr,
            gauge,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received (health checks not counted).
    pub fn hits(&self) -> usize {
        self.gauge.hits.load(Ordering::SeqCst)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.gauge.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests it was ever answering at once.
    pub fn peak(&self) -> usize {
        self.gauge.peak.load(Ordering::SeqCst)
    }

    /// From now on, requests wait (in flight) until [`GaugedBackend::release`].
    pub fn hold(&self) {
        self.gauge.open.send_replace(false);
    }

    /// Lets every held request, and every later one, be answered.
    pub fn release(&self) {
        self.gauge.open.send_replace(true);
    }
}

impl Drop for GaugedBackend {
    fn drop(&mut self) {
        self.server.abort();
        self.release();
    }
}

async fn answer(
    gauge: Arc<Gauge>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == HEALTH_PATH {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    let _answering = Answering::new(&gauge);
    if !gauge.delay.is_zero() {
        tokio::time::sleep(gauge.delay).await;
    }
    let mut open = gauge.open.subscribe();
    // Bounded: a test that forgets to release still ends.
    let _ = tokio::time::timeout(PATIENCE, open.wait_for(|open| *open)).await;
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "hello from backend {}",
        gauge.id
    ))));
    response
        .headers_mut()
        .insert("x-backend-id", gauge.id.into());
    Ok(response)
}

/// Waits until `backends` together have `count` requests in flight.
pub async fn wait_in_flight(backends: &[&GaugedBackend], count: usize) {
    wait_until(
        &format!("{count} requests in flight"),
        PATIENCE,
        async || backends.iter().map(|b| b.in_flight()).sum::<usize>() == count,
    )
    .await;
}

/// The TOML config of a balancing test: two workers, checks of [`HEALTH_PATH`] every 100 ms that flip
/// at the first pass or failure, then whatever the test adds.
pub struct BalancingConfig {
    keys: Vec<String>,
    health: Vec<(String, String)>,
    tables: Vec<String>,
}

impl BalancingConfig {
    pub fn new() -> Self {
        let health = [
            ("path", format!("{HEALTH_PATH:?}")),
            ("interval", "\"100ms\"".to_owned()),
            ("timeout", "\"1s\"".to_owned()),
            ("rise", "1".to_owned()),
            ("fall", "1".to_owned()),
        ];
        BalancingConfig {
            keys: Vec::new(),
            health: health.map(|(k, v)| (k.to_owned(), v)).to_vec(),
            tables: Vec::new(),
        }
    }

    /// Sets a key of the top-level `[health_check]` to a TOML value, e.g. `health("interval", "\"1h\"")`.
    pub fn health(mut self, key: &str, value: &str) -> Self {
        self.health.retain(|(k, _)| k != key);
        self.health.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A top-level line, e.g. `key("balance = \"least_request\"")`.
    pub fn key(mut self, line: &str) -> Self {
        self.keys.push(line.to_owned());
        self
    }

    /// A table or array-of-tables entry, written out whole (header line and keys).
    pub fn table(mut self, text: &str) -> Self {
        self.tables.push(text.to_owned());
        self
    }

    /// A `[[backends]]` entry (the default pool), with `extra` lines (`weight = 3`).
    pub fn backend(self, id: u64, addr: SocketAddr, extra: &str) -> Self {
        let entry = backend_entry("backends", id, addr, extra);
        self.table(&entry)
    }

    /// A `[[pools.NAME.backends]]` entry.
    pub fn pool_backend(self, pool: &str, id: u64, addr: SocketAddr, extra: &str) -> Self {
        let entry = backend_entry(&format!("pools.{pool}.backends"), id, addr, extra);
        self.table(&entry)
    }

    /// A `[[routes]]` entry taking requests to `pool`; `matches` is its `host` and/or `path_prefix` lines.
    pub fn route(self, matches: &str, pool: &str) -> Self {
        self.table(&format!("[[routes]]\n{matches}\npool = {pool:?}\n"))
    }

    pub fn render(&self) -> String {
        let mut text = String::from("workers = 2\n");
        for line in &self.keys {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[health_check]\n");
        for (key, value) in &self.health {
            text.push_str(&format!("{key} = {value}\n"));
        }
        text.push_str(
            "\n[timeouts]\nconnect = \"1s\"\nbackend_response = \"5s\"\ndrain = \"5s\"\n\n",
        );
        for table in &self.tables {
            text.push_str(table);
            text.push('\n');
        }
        text
    }

    pub async fn start(&self) -> super::TestLb {
        super::TestLb::from_file("lb.toml", &self.render()).await
    }
}

impl Default for BalancingConfig {
    fn default() -> Self {
        BalancingConfig::new()
    }
}

fn backend_entry(array: &str, id: u64, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[{array}]]\nid = {id}\nhost = \"{}\"\nport = {}\n{extra}\n",
        addr.ip(),
        addr.port()
    )
}
