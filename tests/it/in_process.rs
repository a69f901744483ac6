//! `lb` in-process (`lb::Server::start_local`) on a paused clock: the tests' backends, their clients and one `lb`
//! worker share one thread, so timeouts of seconds or a minute pass in no real time and fire when the clock says.
//!
//! Each test runs on a current-thread runtime whose clock starts paused, inside a `LocalSet` (the worker is a
//! `spawn_local` task). The runtime moves the clock only when every task waits, straight to the next timer, and
//! looks at the sockets first: bytes written on loopback are there at once, so they are always seen before time
//! moves. Log lines are caught by a subscriber set for this thread only ([`Logs`]): other tests, and the process,
//! keep theirs (none). Lines that `lb` rate-limits (failures, one a second per kind) are counted in one map for
//! the whole process, which every in-process server shares: tests assert only on lines that are never limited
//! (health flips).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb::config::{self, Overrides};
use lb::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::LocalSet;
use tokio::time::Instant;

use crate::harness::{backend_of, RawConn, RawResponse, TestBackend, HEALTH_PATH};

/// How late `lb`'s sweeper may fire a deadline with the default timeouts (it ticks at an eighth of the shortest,
/// at most every second).
const TICK: Duration = Duration::from_secs(1);
/// How often a wait for a log line looks.
const POLL: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn half_a_request_head_gets_408_once_client_header_has_passed() {
    in_process(async {
        let backend = TestBackend::start(1).await;
        let lb = start(&[&backend], json!({})).await;
        let real = std::time::Instant::now();

        let mut client = RawConn::connect(lb.local_addr()).await;
        client.send(b"GET / HTTP/1.1\r\nHost: lb\r\n").await;
        let sent = Instant::now();
        let response = client.response_within(Duration::from_secs(60)).await;

        assert_eq!(response.status, 408);
        let waited = sent.elapsed();
        let client_header = Duration::from_secs(10); // the default
        assert!(
            waited >= client_header && waited <= client_header + TICK,
            "408 after {waited:?}"
        );
        assert!(real.elapsed() < Duration::from_secs(5), "no real wait");
        assert_eq!(backend.hits(), 0);
        lb.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_backend_that_never_answers_gets_504_once_backend_response_has_passed() {
    in_process(async {
        let backend = TestBackend::start(1).await;
        let lb = start(&[&backend], json!({})).await;

        let mut client = RawConn::connect(lb.local_addr()).await;
        let sent = Instant::now();
        // An hour, on the paused clock: the backend takes the request and says nothing.
        let response = get_within(&mut client, "/slow?ms=3600000", Duration::from_secs(120)).await;

        assert_eq!(response.status, 504);
        let waited = sent.elapsed();
        let backend_response = Duration::from_secs(60); // the default
        assert!(
            waited >= backend_response && waited <= backend_response + TICK,
            "504 after {waited:?}"
        );
        assert_eq!(backend.hits(), 1, "a request that timed out is not resent");
        lb.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_backend_that_goes_away_is_marked_down_after_fall_checks_and_skipped_until_it_rises() {
    let logs = Logs::capture();
    in_process(async {
        let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
        let health =
            json!({"health_check": {"interval": "1s", "timeout": "500ms", "fall": 3, "rise": 3}});
        let lb = start(&[&b1, &b2], health).await;
        let mut client = RawConn::connect(lb.local_addr()).await;
        assert_eq!(answers(&mut client, 4).await, [1, 2, 1, 2]);

        b2.stop().await;
        let stopped = Instant::now();
        let down = format!(
            "backend 2 {} down: 3 checks failed, last: connection refused",
            b2.addr()
        );
        logs.wait_for(&down, Duration::from_secs(10)).await;
        // Checks every second: the first to fail comes within a second of the stop, the third 2 s after it (seen
        // within a poll).
        let took = stopped.elapsed();
        assert!(
            took > Duration::from_secs(2) && took <= Duration::from_secs(3) + POLL,
            "marked down {took:?} after it went away"
        );

        // Back, but down until 3 checks pass (3 s): it could answer now, yet gets nothing.
        b2.restart().await;
        assert_eq!(answers(&mut client, 6).await, [1; 6]);
        assert_eq!(b2.hits(), 2, "only the requests from before it went away");

        let up = format!("backend 2 {} up: 3 checks passed", b2.addr());
        logs.wait_for(&up, Duration::from_secs(10)).await;
        let next = answers(&mut client, 4).await;
        assert!(next == [1, 2, 1, 2] || next == [2, 1, 2, 1], "{next:?}");
        lb.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn round_robin_takes_turns_over_two_backends() {
    in_process(async {
        let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
        let lb = start(&[&b1, &b2], json!({})).await;

        let mut first = RawConn::connect(lb.local_addr()).await;
        let mut second = RawConn::connect(lb.local_addr()).await;
        let mut order = answers(&mut first, 5).await;
        order.extend(answers(&mut second, 5).await);

        assert_eq!(order, [1, 2, 1, 2, 1, 2, 1, 2, 1, 2]);
        assert_eq!((b1.hits(), b2.hits()), (5, 5), "no request sent twice");
        lb.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_silent_tunnel_lasts_the_default_hour_and_is_closed_then() {
    in_process(async {
        let backend = upgrade_backend().await;
        let lb = start_with(&[(1, backend)], json!({})).await;

        let mut client = RawConn::connect(lb.local_addr()).await;
        client
            .send(
                b"GET /chat HTTP/1.1\r\nHost: lb\r\nConnection: upgrade\r\nUpgrade: x-echo\r\n\r\n",
            )
            .await;
        let response = client.response_within(Duration::from_secs(5)).await;
        assert_eq!(response.status, 101, "{}", response.text());
        client.send(b"ping").await;
        assert_eq!(client.read_exactly(4).await, b"PING");
        let quiet_since = Instant::now();

        // Nothing either way: the ordinary timeouts (idle 60 s, backend_response 60 s) do not apply; the
        // tunnel's own `tunnel_idle` (1 h by default) does.
        let closed = client
            .read_until_closed(Duration::from_secs(2 * 3600))
            .await;
        assert!(closed.is_empty());
        let quiet = quiet_since.elapsed();
        let hour = Duration::from_secs(3600);
        assert!(
            quiet >= hour && quiet <= hour + TICK,
            "closed after {quiet:?} of silence"
        );
        lb.shutdown().await;
    })
    .await;
}

/// A backend that answers health checks with 200 and an `Upgrade: x-echo` request with `101`, after which it sends
/// back in capitals what it gets, until the end of the stream.
async fn upgrade_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::task::spawn_local(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::task::spawn_local(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                if !String::from_utf8_lossy(&head)
                    .to_ascii_lowercase()
                    .contains("upgrade: x-echo")
                {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                    let _ = stream.write_all(ok).await;
                    return;
                }
                let switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x-echo\r\n\r\n";
                let _ = stream.write_all(switching).await;
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let _ = stream.write_all(&buf[..n].to_ascii_uppercase()).await;
                }
            });
        }
    });
    addr
}

/// Runs `test` inside a `LocalSet`, where `Server::start_local` can put its worker.
async fn in_process<F: Future>(test: F) -> F::Output {
    LocalSet::new().run_until(test).await
}

/// `lb` in-process in front of `backends` (checked on [`HEALTH_PATH`], everything else at its default), on
/// 127.0.0.1 with an ephemeral port; `extra` is merged into its config file's JSON, key by key.
async fn start(backends: &[&TestBackend], extra: Value) -> Server {
    let backends: Vec<(u64, SocketAddr)> = backends.iter().map(|b| (b.id, b.addr())).collect();
    start_with(&backends, extra).await
}

/// [`start`] in front of backends given by id and address.
async fn start_with(backends: &[(u64, SocketAddr)], extra: Value) -> Server {
    let backends: Vec<Value> = backends
        .iter()
        .map(|(id, addr)| json!({"id": id, "host": "127.0.0.1", "port": addr.port()}))
        .collect();
    let mut file = json!({"backends": backends, "health_check": {"path": HEALTH_PATH}});
    merge(&mut file, extra);
    let overrides = Overrides {
        host: Some("127.0.0.1".to_owned()),
        port: Some(0),
        ..Overrides::default()
    };
    let config = config::from_text("in-process.json", &file.to_string(), false, &overrides)
        .expect("a valid config");
    Server::start_local(config).await.expect("lb starts")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

async fn get_within(client: &mut RawConn, path: &str, patience: Duration) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n");
    client.send(request.as_bytes()).await;
    client.response_within(patience).await
}

/// Sends `count` GETs of `/` on `client`, one after the other; each must be a backend's 200. Answers who answered.
async fn answers(client: &mut RawConn, count: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let response = get_within(client, "/", Duration::from_secs(5)).await;
        assert_eq!(response.status, 200, "{}", response.text());
        ids.push(backend_of(&response.text()).expect("a backend's greeting"));
    }
    ids
}

/// The log lines written on this thread while the guard of [`Logs::capture`] lives.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Catches what `lb` logs on this thread (the in-process server's only thread) from now until the returned
    /// value is dropped. Nothing is installed for the process.
    fn capture() -> CapturedLogs {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        CapturedLogs {
            logs,
            _guard: guard,
        }
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct CapturedLogs {
    logs: Logs,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.logs.0.lock().unwrap()).into_owned()
    }

    /// Waits (on the test's clock) until a line contains `needle`, checking every [`POLL`]; panics after `patience`.
    async fn wait_for(&self, needle: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {patience:?}:\n{}",
                self.text()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
