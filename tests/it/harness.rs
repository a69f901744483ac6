//! The test harness: backends ([`TestBackend`], [`RawBackend`], [`ScriptedBackend`], [`HandoffBackend`],
//! [`WsEchoBackend`]), the real `lb` binary in front of them ([`TestLb`]),
//! a raw HTTP/1 client for what `reqwest` will not send ([`RawConn`], in `raw`), and waiting on conditions
//! ([`wait_until`]).
//!
//! Everything listens on 127.0.0.1 with an ephemeral port, and every wait has a deadline.

mod admin;
mod backend;
mod browser;
mod dns;
pub mod gauged;
mod h2;
mod handoff;
mod raw;
mod scripted;
mod tcp;
pub mod tls;
mod tls_backend;
mod websocket;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use backend::{pattern_chunks, pattern_sha256, RawBackend, TestBackend, HEALTH_PATH};
pub use browser::{Browser, Page};
pub use dns::TestDns;
pub use h2::{
    grpc_client, h2_fetch, h2_request, h2c_client, GrpcBackend, H2Backend, RawCodec, RawH2, CANCEL,
    ENHANCE_YOUR_CALM, GOAWAY, REFUSED_STREAM, RST_STREAM,
};
pub use handoff::{assert_not_asked_to_upgrade, tokens, Handed, HandoffBackend, Head};
pub use raw::{RawConn, RawResponse};
pub use scripted::{ScriptedBackend, Step};
pub use tcp::{goodbye, greeting, is_local, read_proxy_header, v1_header, v2_header, TcpBackend};
pub use tls_backend::{backend_entry, path_line, toml_config, wait_health, TestCa, TlsBackend};
pub use websocket::{WsEchoBackend, BYE, BYE_CODE, BYE_REASON};

/// Long enough for anything that should happen on loopback; only reached when something is wrong.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the first header called `name` (any case) in a list of name-value pairs.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let found = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    found.map(|(_, v)| v.as_str())
}

/// An HTTP client for tests: no proxy from the environment, and no request may hang.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("build a reqwest client")
}

/// The backend id in a `hello from backend <id>` body.
pub fn backend_of(body: &str) -> Option<u64> {
    body.strip_prefix("hello from backend ")?.parse().ok()
}

/// How many times each backend id occurs.
pub fn tally(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, usize> {
    let mut tally = BTreeMap::new();
    for id in ids {
        *tally.entry(id).or_default() += 1;
    }
    tally
}

/// Asserts that every one of `ids`, and no other, got `each` requests, give or take one.
pub fn assert_fair(tally: &BTreeMap<u64, usize>, ids: &[u64], each: usize) {
    let got: Vec<u64> = tally.keys().copied().collect();
    assert_eq!(got, ids, "backends that answered: {tally:?}");
    for (id, count) in tally {
        assert!(
            count.abs_diff(each) <= 1,
            "backend {id} got {count}, not {each} ± 1: {tally:?}"
        );
    }
}

/// A config for `lb` plus extra flags. Defaults suit tests: checks every 100 ms on [`HEALTH_PATH`], rise 2, fall 3,
/// 2 workers, timeouts of a few seconds.
pub struct LbBuilder {
    backends: Vec<Value>,
    health: Map<String, Value>,
    timeouts: Map<String, Value>,
    pool: Map<String, Value>,
    top: Map<String, Value>,
    args: Vec<String>,
    open_files: Option<u64>,
}

impl LbBuilder {
    pub fn backend(self, backend: &TestBackend) -> Self {
        self.backend_at(backend.id, backend.addr())
    }

    pub fn backends(self, backends: &[&TestBackend]) -> Self {
        backends
            .iter()
            .fold(self, |lb, backend| lb.backend(backend))
    }

    pub fn backend_at(mut self, id: u64, addr: SocketAddr) -> Self {
        let ip = addr.ip().to_string();
        self.backends
            .push(json!({"id": id, "host": ip, "port": addr.port()}));
        self
    }

    /// Sets a `health_check` key, e.g. `health("interval", "50ms")`.
    pub fn health(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.health.insert(key.to_owned(), value.into());
        self
    }

    /// Sets a `timeouts` key, e.g. `timeout("backend_response", "300ms")`.
    pub fn timeout(mut self, key: &str, value: &str) -> Self {
        self.timeouts.insert(key.to_owned(), value.into());
        self
    }

    /// Sets a `pool` key, e.g. `pool("max_idle_per_backend", 4)`.
    pub fn pool(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.pool.insert(key.to_owned(), value.into());
        self
    }

    /// Sets a top-level config key, e.g. `set("max_connections", 2)`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.top.insert(key.to_owned(), value.into());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Runs `lb` with this open-files limit (soft and hard, as `ulimit -n` sets them).
    pub fn open_files(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    pub async fn start(self) -> TestLb {
        let mut config = json!({
            "backends": self.backends,
            "health_check": self.health,
            "timeouts": self.timeouts,
            "workers": 2,
            "access_log": false,
        });
        if !self.pool.is_empty() {
            config["pool"] = self.pool.into();
        }
        config.as_object_mut().unwrap().extend(self.top);
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("lb.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap())
            .expect("write the config");
        TestLb::spawn_limited(dir, &path, &self.args, self.open_files).await
    }
}

/// The real `lb` binary, listening on 127.0.0.1 with an ephemeral port; killed when dropped.
pub struct TestLb {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
    /// The config file lb was started with (what a reload re-reads).
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestLb {
    pub fn builder() -> LbBuilder {
        let health = json!({"path": HEALTH_PATH, "interval": "100ms", "timeout": "100ms", "rise": 2, "fall": 3});
        let timeouts = json!({
            "connect": "1s", "client_header": "5s", "backend_response": "5s", "idle": "60s", "drain": "5s"
        });
        LbBuilder {
            backends: Vec::new(),
            health: health.as_object().unwrap().clone(),
            timeouts: timeouts.as_object().unwrap().clone(),
            pool: Map::new(),
            top: Map::new(),
            args: Vec::new(),
            open_files: None,
        }
    }

    /// Starts `lb` on a config file called `name` with exactly `contents`.
    pub async fn from_file(name: &str, contents: &str) -> TestLb {
        let (dir, path) = config_file(name, contents);
        TestLb::spawn(dir, Path::new(&path), &[]).await
    }

    async fn spawn(dir: tempfile::TempDir, config: &Path, args: &[String]) -> TestLb {
        TestLb::spawn_limited(dir, config, args, None).await
    }

    async fn spawn_limited(
        dir: tempfile::TempDir,
        config: &Path,
        args: &[String],
        open_files: Option<u64>,
    ) -> TestLb {
        let mut command = match open_files {
            None => lb_command(),
            Some(limit) => {
                // The shell sets the limit and becomes lb (same pid).
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_lb"))
                    .env_remove("RUST_LOG")
                    .env("NO_COLOR", "1")
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                command
            }
        };
        let mut child = command
            .args(["--host", "127.0.0.1", "--port", "0", "--config"])
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb");
        let pid = child.id().expect("lb pid");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(strip_ansi(&line));
            }
        });
        // The access log (stdout) joins the same lines.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let listening = logs
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| listening_addr(line));
            if let Some(addr) = listening {
                break addr;
            }
            let exited = child.try_wait().expect("poll lb");
            let logs = logs.lock().unwrap().join("\n");
            assert!(
                exited.is_none(),
                "lb exited with {exited:?} before listening:\n{logs}"
            );
            assert!(
                Instant::now() < deadline,
                "lb did not say it was listening:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        TestLb {
            child,
            pid,
            addr,
            logs,
            client: client(),
            config: config.to_path_buf(),
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the config file lb was started with (for a reload to find).
    /// The address of `[[listeners]]` entry `index` (0: the first extra listener), from its `also listening on`
    /// line.
    #[allow(dead_code)] // used by the listener tests (issue 10, in progress)
    pub async fn listener(&self, index: usize) -> SocketAddr {
        let mut found = Vec::new();
        wait_until(
            "the extra listeners' lines",
            Duration::from_secs(5),
            async || {
                found = self
                    .logs()
                    .iter()
                    .filter_map(|line| {
                        let rest =
                            &line[line.find("also listening on ")? + "also listening on ".len()..];
                        rest.split_whitespace().next()?.parse().ok()
                    })
                    .collect::<Vec<SocketAddr>>();
                found.len() > index
            },
        )
        .await;
        found[index]
    }

    pub fn rewrite_config(&self, contents: &str) {
        std::fs::write(&self.config, contents).expect("rewrite the config");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// GETs `path` on a kept-alive connection; answers the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await;
        let response = response.unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path} body: {e:?}"));
        (status, body)
    }

    /// Sends `count` GETs of `/` one after the other; each must be a 200 from a backend. Answers the backend ids in
    /// the order they answered.
    pub async fn answers(&self, count: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let (status, body) = self.get("/").await;
            assert_eq!(status, 200, "{body}");
            ids.push(backend_of(&body).unwrap_or_else(|| panic!("not a backend's answer: {body}")));
        }
        ids
    }

    /// Like [`TestLb::answers`], counted per backend id.
    pub async fn spread(&self, count: usize) -> BTreeMap<u64, usize> {
        tally(self.answers(count).await)
    }

    /// Waits until every one of `ids` has answered (other answers are ignored), so all of them are in the rotation.
    pub async fn wait_serving(&self, ids: &[u64]) {
        let mut answered = Vec::new();
        wait_until(
            &format!("backends {ids:?} all answer"),
            PATIENCE,
            async || {
                answered.extend(backend_of(&self.get("/").await.1));
                ids.iter().all(|id| answered.contains(id))
            },
        )
        .await;
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn count_logs(&self, needle: &str) -> usize {
        self.logs()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits for a log line containing `needle` and answers it.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().into_iter().find(|line| line.contains(needle)) {
                return line;
            }
            let logs = self.logs().join("\n");
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} after {timeout:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`INT`, `TERM`) with the `kill` command.
    pub async fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for lb"),
            Err(_) => panic!(
                "lb still running after {timeout:?}:\n{}",
                self.logs().join("\n")
            ),
        }
    }
}

/// The peak resident memory (VmHWM) of the process `pid`, in KiB.
pub fn peak_memory_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim();
    kib.parse().expect("VmHWM in kB")
}

impl Drop for TestLb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- lb logs ---\n{}\n---", self.logs().join("\n"));
        }
    }
}

fn lb_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
    command
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// How a run of `lb` that was expected to stop by itself ended.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The last non-empty line of stderr.
    pub fn last_error_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

/// Runs `lb` with exactly `args`; it must exit by itself within [`PATIENCE`].
pub async fn run_lb(args: &[&str]) -> Finished {
    run_lb_with_env(args, &[]).await
}

/// [`run_lb`] with these environment variables set.
pub async fn run_lb_with_env(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let child = lb_command()
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lb");
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("lb {args:?} did not exit"))
        .expect("lb output");
    Finished {
        code: output.status.code(),
        stdout: strip_ansi(&String::from_utf8_lossy(&output.stdout)),
        stderr: strip_ansi(&String::from_utf8_lossy(&output.stderr)),
    }
}

/// A config file in the full form over `backends` (id, backend), health checks every 100 ms (rise and fall 1), two
/// workers, plus the `extra` top-level keys.
pub fn full_config(backends: &[(u64, &TestBackend)], extra: Value) -> String {
    let backends: Vec<_> = backends
        .iter()
        .map(|(id, b)| json!({"id": id, "host": "127.0.0.1", "port": b.addr().port()}))
        .collect();
    let mut file = json!({
        "backends": backends,
        "health_check": {"path": HEALTH_PATH, "interval": "100ms", "fall": 1, "rise": 1},
        "workers": 2,
    });
    if let (Some(file), Some(extra)) = (file.as_object_mut(), extra.as_object()) {
        file.extend(extra.clone());
    }
    file.to_string()
}

/// Writes `contents` to `name` in a fresh temp dir; keep the dir alive while the file is used.
pub fn config_file(name: &str, contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write the config");
    (dir, path.to_str().expect("a UTF-8 temp path").to_owned())
}

/// Compares byte strings without printing a megabyte when they differ.
pub fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert_eq!(first, None, "{what}: first difference at this offset");
}

/// `len` bytes of a pattern that does not repeat every 256 bytes (a shifted or dropped chunk shows).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 10) as u8)
        .collect()
}
