//! The validated runtime configuration, and loading it from a file plus CLI overrides.
//!
//! Two layers (as sozu does): `file.rs` mirrors the JSON/TOML exactly with `deny_unknown_fields`; `load` turns that
//! into a [`Config`] in one validation step. Every error names the file, the place (line:column when the parser
//! knows it, and the key path) and the problem, in one line:
//!
//! ```text
//! servers.json:3:46: [1].port: port must be between 1 and 65535, got 70000
//! lb.toml:9:6: backends[2].id: duplicate id 1 (also backends[0])
//! lb.toml: cannot read: No such file or directory (os error 2)
//! ```
//!
//! Per-value checks (ranges, duplicates, host resolution) run inside deserialization so the parser can stamp the
//! position; only what depends on several sources runs here: the command line wins over the file, the file over the
//! defaults, and the health timeout defaults to `min(interval, 2s)` *after* `--interval` is applied, so a short
//! interval from the command line never leaves a longer timeout behind. A file's explicit timeout may exceed the
//! interval (checks then simply never overlap less than the timeout allows); that is the user's call.
//!
//! Backend hosts are resolved once, here, to their first address: a typo fails at startup, and the proxy's hot path
//! never waits on DNS. The listen host is kept as written; the server resolves and binds it.

pub mod duration;
pub mod file;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

/// Everything `lb` needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect: host as given (IP or name) and port (0 = any free port).
    pub host: String,
    pub port: u16,
    /// Event-loop threads serving clients; at least 1.
    pub workers: usize,
    pub access_log: bool,
    pub backends: Vec<BackendConfig>,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub id: u64,
    /// The host as written (for logs and the Host header of health checks).
    pub host: String,
    pub port: u16,
    /// Resolved at load time.
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub statuses: Vec<RangeInclusive<u16>>,
}

impl HealthConfig {
    pub fn passes(&self, status: u16) -> bool {
        self.statuses.iter().any(|r| r.contains(&status))
    }
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub client_header: Duration,
    pub backend_response: Duration,
    pub idle: Duration,
    pub drain: Duration,
}

/// Values given on the command line; `None` means "not given": the file's value, else the default, applies.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Duration>,
    pub workers: Option<usize>,
    pub drain: Option<Duration>,
    pub access_log: bool,
}

/// A config that cannot be used. `Display` is the one line shown to the user (without the leading `error: `).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads, parses and validates `path`, then applies `overrides`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{name}: cannot read: {e}")))?;
    let file = file::parse(&name, &text, file::Format::of(path)).map_err(ConfigError)?;
    resolve(file, overrides)
}

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8000;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const MAX_DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Merges the parsed file with the overrides and the defaults. Overrides are checked here too, because `load` is
/// public and its callers (tests, the demo) build [`Overrides`] without going through the CLI's parsers.
fn resolve(file: file::FileConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
    let flag = |flag: &str, problem: String| ConfigError(format!("{flag}: {problem}"));
    if let Some(host) = overrides.host.as_deref().filter(|h| h.trim().is_empty()) {
        return Err(flag("--host", format!("must not be empty, got {host:?}")));
    }
    if overrides.workers == Some(0) {
        return Err(flag("--workers", "must be at least 1, got 0".to_string()));
    }
    if overrides.interval.is_some_and(|i| i.is_zero()) {
        return Err(flag("--interval", "must be greater than 0".to_string()));
    }

    let health = file.health_check;
    let interval = overrides
        .interval
        .or(health.interval.map(|d| d.0))
        .unwrap_or(DEFAULT_INTERVAL);
    let health = HealthConfig {
        path: health.path.map_or_else(|| "/".to_string(), |p| p.0),
        interval,
        timeout: health
            .timeout
            .map_or(interval.min(MAX_DEFAULT_HEALTH_TIMEOUT), |d| d.0),
        rise: health.rise.map_or(2, |n| n.0),
        fall: health.fall.map_or(3, |n| n.0),
        statuses: health.statuses.map_or_else(|| vec![200..=399], |s| s.0),
    };

    let t = file.timeouts;
    let secs = |d: Option<file::PositiveDuration>, default: u64| {
        d.map_or(Duration::from_secs(default), |d| d.0)
    };
    let timeouts = Timeouts {
        connect: secs(t.connect, 3),
        client_header: secs(t.client_header, 10),
        backend_response: secs(t.backend_response, 60),
        idle: secs(t.idle, 60),
        drain: overrides
            .drain
            .or(t.drain.map(|d| d.0))
            .unwrap_or(Duration::from_secs(10)),
    };

    let backends = file
        .backends
        .0
        .into_iter()
        .map(|b| BackendConfig {
            id: b.id,
            host: b.host,
            port: b.port,
            addr: b.addr,
        })
        .collect();

    Ok(Config {
        host: overrides
            .host
            .clone()
            .or(file.host.map(|h| h.0))
            .unwrap_or_else(|| DEFAULT_HOST.to_string()),
        port: overrides
            .port
            .or(file.port.map(|p| p.0))
            .unwrap_or(DEFAULT_PORT),
        workers: overrides
            .workers
            .or(file.workers.map(|n| n.0 as usize))
            .unwrap_or_else(default_workers),
        access_log: overrides.access_log || file.access_log.unwrap_or(false),
        backends,
        health,
        timeouts,
    })
}

/// The cores this process may use (respecting affinity and cgroup quotas), or 1 if that cannot be known.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
