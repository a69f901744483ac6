//! The validated runtime configuration, and loading it from a file plus CLI overrides.
//!
//! Two layers (as sozu does): `file.rs` mirrors the JSON/TOML exactly with `deny_unknown_fields`; `load` turns that
//! into a [`Config`] in one validation step. Every error names the file, the place (line:column when the parser
//! knows it, and the key path) and the problem, in one line:
//!
//! ```text
//! servers.json:3:46: [1].port: port must be between 1 and 65535, got 70000
//! lb.toml:9:6: backends[1].id: duplicate id 1 (also backends[0])
//! lb.toml:4:8: backends[0].port: port must be between 1 and 65535, got 70000
//! lb.json: cannot read: No such file or directory (os error 2)
//! ```
//!
//! The pieces: `file.rs` says what a file may contain and checks each value *while* it is read (ranges, duplicate
//! ids and addresses, backend host resolution), because only then can the parser stamp the value's position;
//! `backends.rs` reads a backend list, `balance_file.rs` the balancing keys, `pools.rs` the `[pools.NAME]` tables
//! and `[[routes]]` (and checks what needs the whole file: a route to an unknown pool, an id used in two pools, with
//! the key path but no position, which no longer exists once the file is read); `duration.rs` parses durations for
//! the file and the flags alike; `sniff.rs` tells a file refused for being in another format than its extension says
//! (a TOML body in `lb.json`); `parse.rs` reads the text as TOML or JSON and renders the parser's errors as one line;
//! this module picks the format (`.toml` is TOML, anything else JSON) and merges the sources: a flag wins over the
//! file, the file over the defaults, and a pool's keys over the top level's. The health timeout defaults to
//! `min(interval, 2s)` computed *after* `--interval` is applied, so a short interval from the command line never
//! inherits a longer default timeout; a timeout written in the file is kept even when it exceeds the interval.
//! `--interval` sets the top level's interval; a pool that writes its own keeps it.
//!
//! Backend hosts written as IP addresses are read as such; host names are not resolved here but by the control plane
//! (`dns`), at start and again every `resolve_interval`, so a name that does not resolve yet is a backend that starts
//! down, not a config error, and the proxy never waits on DNS. The listen host is kept as written; the server
//! resolves and binds it.

mod backends;
pub(crate) use backends::offline;
mod balance_file;
mod balancing;
pub mod duration;
pub mod file;
mod health_file;
mod listeners;
mod numbers;
mod parse;
mod paths;
pub mod pem;
mod pools;
mod sniff;
mod transport;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

pub use balancing::{
    Algorithm, BalanceConfig, ClusterConfig, HashKey, HostMatch, PassiveHealth, Resolve, Retries,
    RouteConfig, CONNECT_FAILURES_TO_EXCLUDE, MAX_EJECTION, RETRY_FLOOR_PER_SECOND,
};
pub use file::AccessLogFormat;
use file::FileConfig;
pub use listeners::{CertificatePaths, Cidr, ListenerConfig, ListenerKind, Mode, TlsConfig};
pub use transport::{BackendOptions, ClientCertificate, Protocol, ProxyVersion, UpstreamTls};

/// Everything `lb` needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect: host as given (IP or name) and port (0 = any free port).
    pub host: String,
    pub port: u16,
    /// Event-loop threads serving clients; at least 1.
    pub workers: usize,
    /// One line per answer on stdout (`--access-log`, `--access-log-format`, or the file's keys).
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    /// Client connections open at once, over all workers; `None`: derived from the open-files limit at startup.
    pub max_connections: Option<usize>,
    /// The pools of backends: the first is the default pool (the top-level `backends`, possibly none when
    /// `[pools.NAME]` tables are given), then the named pools in the file's order.
    pub clusters: Vec<ClusterConfig>,
    /// `[[routes]]`: which requests go to which pool (none: every request goes to the default pool).
    pub routes: Vec<RouteConfig>,
    /// `[retries]`: how much retrying is allowed.
    pub retries: Retries,
    /// How often backend host names are resolved again (`resolve_interval`; an answer's shorter TTL wins).
    pub resolve_interval: Duration,
    /// The DNS server backend names are asked of (`resolver`); `None`: the system's resolver (getaddrinfo).
    pub resolver: Option<SocketAddr>,
    /// The top-level `health_check`, with the flags applied: the default pool's, and what a pool's own
    /// `health_check` starts from.
    pub health: HealthConfig,
    pub timeouts: Timeouts,
    pub pool: PoolConfig,
    /// The admin plane's listener, when it is on.
    pub admin: Option<AdminConfig>,
    /// Every listener: the first is the main one (`host`, `port`, TLS when `tls` is set, `mode`, `accept_proxy`),
    /// then the `[[listeners]]` of the file.
    pub listeners: Vec<ListenerConfig>,
    /// The certificates of TLS listeners (`[tls]`, `--tls-cert`/`--tls-key`).
    pub tls: Option<TlsConfig>,
}

/// Where the admin plane listens and what it asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Every admin request must say `Authorization: Bearer <token>` (required off loopback).
    pub token: Option<String>,
}

/// How idle keep-alive connections to backends are kept.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Idle connections kept per backend per worker; more are closed when they come back.
    pub max_idle_per_backend: usize,
    /// An idle connection unused for this long is closed (by the worker's sweeper, with or without traffic).
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub id: u64,
    /// The host as written (for logs and the Host header of health checks).
    pub host: String,
    pub port: u16,
    /// Where connections go: the host itself when it is an IP address; for a host name, [`UNRESOLVED`] as the file
    /// is read, then one of its addresses once the control plane has resolved it (see `dns`).
    pub addr: SocketAddr,
    /// How it is reached beyond its address (protocol, TLS, PROXY header).
    pub options: BackendOptions,
    /// Its share of new requests relative to the other backends of its pool (`weight`, 0–1000; 0: none).
    pub weight: u32,
    /// Requests in flight to it at once (`max_connections`); `None`: no limit.
    pub max_connections: Option<usize>,
    /// Which addresses of its host name are members (`resolve`): the first, or every one.
    pub resolve: Resolve,
}

/// The address of a backend whose host name has no address (yet): port 0, which no backend can be given and no
/// connection can reach. Such a backend is never eligible and its checks fail without connecting (`health`).
pub const UNRESOLVED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl Config {
    /// Every backend of every pool.
    pub fn backends(&self) -> impl Iterator<Item = &BackendConfig> {
        self.clusters.iter().flat_map(|c| c.backends.iter())
    }

    /// The default pool (top-level `backends`).
    pub fn default_cluster(&self) -> &ClusterConfig {
        &self.clusters[0]
    }
}

impl BackendConfig {
    /// `host:port` as written, an IPv6 address in brackets as in a URL or a Host header (`[::1]:8001`): the Host of
    /// health checks, and the form of logs.
    pub fn authority(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The host as an IP address, when it is written as one (`[::1]` too); `None`: a host name, which the control
    /// plane resolves (`dns`).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        let host = self.host.as_str();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        bare.parse().ok()
    }
}

/// `host:port`, an IPv6 address put in brackets unless it was written in them (`[::1]:8001`).
pub fn host_port(host: &str, port: u16) -> String {
    match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub statuses: Vec<RangeInclusive<u16>>,
    /// A GET of `path` (HTTP) or only a connect (TCP).
    pub kind: HealthKind,
}

/// What a health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// `GET path`, passing on one of `statuses`.
    #[default]
    Http,
    /// A TCP connect (and a TLS handshake for a TLS backend).
    Tcp,
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
    /// A request body must arrive within this, plus one second for every [`MIN_BODY_RATE`] bytes it carries.
    pub request_body: Duration,
    /// A tunnel (an upgraded connection: WebSocket...) with no bytes either way for this long is closed.
    pub tunnel_idle: Duration,
    pub drain: Duration,
}

/// The slowest average rate at which a request body may arrive once `timeouts.request_body` has passed (bytes per
/// second): as Apache's `mod_reqtimeout`, a long upload earns time as it moves, a trickle does not.
pub const MIN_BODY_RATE: u64 = 1024;

/// Values given on the command line; `None` means "not given": the file's value, else the default, applies.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Duration>,
    pub workers: Option<usize>,
    pub drain: Option<Duration>,
    pub access_log: bool,
    /// `--access-log-format`: also turns the access log on.
    pub access_log_format: Option<AccessLogFormat>,
    /// `--admin ADDR`.
    pub admin: Option<SocketAddr>,
    /// `--tls-cert` and `--tls-key`: the main listener's default certificate (replaces `[tls]`'s `cert`/`key`).
    pub tls_cert: Option<CertificatePaths>,
}

/// A config that cannot be used. `Display` is the one line shown to the user (without the leading `error: `).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads, parses and validates `path`, then applies `overrides`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        // A relative path that is not there is most often a start from another directory: say which.
        let hint = match (e.kind(), path.is_relative(), std::env::current_dir()) {
            (std::io::ErrorKind::NotFound, true, Ok(dir)) => {
                format!(
                    " (looked in {}; give the file with --config FILE)",
                    dir.display()
                )
            }
            _ => String::new(),
        };
        ConfigError(format!("{name}: cannot read: {e}{hint}"))
    })?;
    let toml = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
    from_text(&name, &text, toml, overrides)
}

/// Parses and validates `text`, the contents of the file called `name` (which errors name), as TOML or JSON, then
/// applies `overrides`: what [`load`] does once it has read the file.
pub fn from_text(
    name: &str,
    text: &str,
    toml: bool,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let file =
        parse::parse(name, text, toml).map_err(|line| match sniff::hint(name, text, toml) {
            Some(hint) => ConfigError(format!("{line}; {hint}")),
            None => ConfigError(line),
        })?;
    // What is wrong with the file is named after it; what is wrong with a flag names the flag (`--workers: ...`).
    resolve(file, overrides).map_err(|e| match e.0.starts_with("--") {
        true => e,
        false => ConfigError(format!("{name}: {}", e.0)),
    })
}

/// A config of the given backends with every other setting at its default, then `overrides` (the demo uses this).
pub fn from_backends(
    backends: Vec<BackendConfig>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let file = file::FileConfig {
        backends: Some(file::Backends(backends)),
        ..file::FileConfig::default()
    };
    resolve(file, overrides)
}

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8000;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// nginx re-resolves at the answer's TTL, Envoy every 5 s; 30 s follows a moved service soon enough without a query
/// storm from many balancers (and a `resolver`'s shorter TTL wins).
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const MAX_DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// nginx's `keepalive 64` in a typical upstream block; enough for a steady load, a bound after a burst.
const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 64;
/// HAProxy purges idle server connections every 5 s; most backends close their own idle ones after about that
/// (Node.js, Apache 5 s): longer would keep sockets that nobody uses, or that the backend is about to close.
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Merges the parsed file with the overrides and the defaults. Overrides are checked here too, because `load` is
/// public and its callers (tests, the demo) build [`Overrides`] without going through the CLI's parsers.
fn resolve(file: FileConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
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

    let mode = file.mode.unwrap_or_default();
    let health = file.health_check;
    let timeout_written = health.timeout.is_some();
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
        kind: health.kind.unwrap_or(match mode {
            Mode::Tcp => HealthKind::Tcp,
            Mode::Http => HealthKind::Http,
        }),
    };

    let tls = match (file.tls, overrides.tls_cert.clone()) {
        (None, None) => None,
        (Some(tls), None) => Some(tls.resolve().map_err(ConfigError)?),
        (tls, Some(cert)) => {
            let mut certificates = vec![cert];
            if let Some(tls) = tls {
                // The flags replace the table's default certificate; its SNI certificates stay.
                let rest = listeners::FileTls {
                    cert: None,
                    key: None,
                    ..tls
                };
                if !rest.certificates.is_empty() {
                    certificates.extend(rest.resolve().map_err(ConfigError)?.certificates);
                }
            }
            Some(TlsConfig { certificates })
        }
    };
    let accept_proxy = file.accept_proxy.unwrap_or_default();
    let host = overrides
        .host
        .clone()
        .or(file.host.map(|h| h.0))
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let port = overrides
        .port
        .or(file.port.map(|p| p.0))
        .unwrap_or(DEFAULT_PORT);
    let mut listeners = vec![ListenerConfig {
        host: host.clone(),
        port,
        kind: match tls {
            Some(_) => ListenerKind::Tls,
            None => ListenerKind::Plain,
        },
        mode,
        accept_proxy: accept_proxy.clone(),
    }];
    if let Some(problem) = listeners[0].unsupported() {
        return Err(ConfigError(format!("mode: {problem}")));
    }
    for (i, listener) in file.listeners.unwrap_or_default().into_iter().enumerate() {
        let listener = listener
            .resolve(mode, &accept_proxy, tls.is_some())
            .and_then(|l| match l.unsupported() {
                Some(problem) => Err(problem.to_owned()),
                None => Ok(l),
            })
            .map_err(|problem| ConfigError(format!("listeners[{i}]: {problem}")))?;
        listeners.push(listener);
    }

    let t = file.timeouts;
    let secs = |d: Option<file::PositiveDuration>, default: u64| {
        d.map_or(Duration::from_secs(default), |d| d.0)
    };
    let timeouts = Timeouts {
        connect: secs(t.connect, 3),
        client_header: secs(t.client_header, 10),
        backend_response: secs(t.backend_response, 60),
        idle: secs(t.idle, 60),
        request_body: secs(t.request_body, 30),
        tunnel_idle: secs(t.tunnel_idle, 3600),
        drain: overrides
            .drain
            .or(t.drain.map(|d| d.0))
            .unwrap_or(Duration::from_secs(10)),
    };

    let admin = match (overrides.admin, file.admin) {
        (Some(addr), _) => Some((addr, "--admin")),
        (None, Some(addr)) => Some((addr.0, "admin")),
        (None, None) => None,
    };
    let token = file.admin_token.map(|t| t.0);
    if let Some((addr, source)) = admin {
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(ConfigError(format!(
                "{source}: {addr} is not a loopback address: set admin_token in the config (every admin request must then carry it), or listen on 127.0.0.1"
            )));
        }
    }
    let admin = admin.map(|(addr, _)| AdminConfig { addr, token });

    let written_backends = file.backends.is_some();
    let balancing = balance_file::Balancing {
        balance: file.balance,
        hash_key: file.hash_key,
        hash_bound: file.hash_bound,
        passive_health: file.passive_health,
        slow_start: file.slow_start,
    };
    let top = pools::TopLevel {
        backends: file.backends.map(|b| b.0),
        balancing: &balancing,
        health: &health,
        timeout_written,
    };
    let clusters = pools::clusters(top, file.pools).map_err(ConfigError)?;
    let routes = pools::routes(file.routes, &clusters).map_err(ConfigError)?;
    check_reachable(written_backends, &clusters, &routes, &listeners)?;

    Ok(Config {
        admin,
        host,
        port,
        listeners,
        tls,
        workers: overrides
            .workers
            .or(file.workers.map(|n| n.0 as usize))
            .unwrap_or_else(default_workers),
        // A format asks for the log: given as a flag, it turns the log on; in the file, unless the file also says
        // `access_log = false`.
        access_log: overrides.access_log
            || overrides.access_log_format.is_some()
            || file.access_log.unwrap_or(file.access_log_format.is_some()),
        access_log_format: overrides
            .access_log_format
            .or(file.access_log_format)
            .unwrap_or_default(),
        max_connections: file.max_connections.map(|n| n.0 as usize),
        clusters,
        routes,
        retries: file.retries.resolve(),
        resolve_interval: file
            .resolve_interval
            .map_or(DEFAULT_RESOLVE_INTERVAL, |d| d.0),
        resolver: file.resolver.map(|r| r.0),
        health,
        timeouts,
        pool: PoolConfig {
            max_idle_per_backend: file
                .pool
                .max_idle_per_backend
                .map_or(DEFAULT_MAX_IDLE_PER_BACKEND, |n| n.0 as usize),
            idle_timeout: file
                .pool
                .idle_timeout
                .map_or(DEFAULT_POOL_IDLE_TIMEOUT, |d| d.0),
        },
    })
}

/// Refuses a config whose backends no request could reach: no top-level backends and no route to a pool, routes
/// without a listener that speaks HTTP, or a TCP listener without the top-level backends it sends everything to.
/// (`written_backends`: the file has the `backends` key, which its reader refuses empty; only [`from_backends`]
/// passes an empty list, for tests that want none.)
fn check_reachable(
    written_backends: bool,
    clusters: &[ClusterConfig],
    routes: &[RouteConfig],
    listeners: &[ListenerConfig],
) -> Result<(), ConfigError> {
    let problem = |p: &str| Err(ConfigError(p.to_owned()));
    if !written_backends && routes.is_empty() {
        return match clusters.len() {
            1 => problem("missing field `backends`"),
            _ => problem("missing field `backends`: without the top-level backends, [[routes]] must send requests to the pools (else every request would get 404)"),
        };
    }
    if !routes.is_empty() && listeners.iter().all(|l| l.mode == Mode::Tcp) {
        return problem(
            "routes: routes choose by host and path, and no listener speaks HTTP (mode = \"tcp\")",
        );
    }
    let tcp = listeners.iter().position(|l| l.mode == Mode::Tcp);
    let place = match tcp {
        Some(_) if written_backends => return Ok(()),
        None => return Ok(()),
        Some(0) => "mode".to_owned(),
        Some(i) => format!("listeners[{}]", i - 1),
    };
    problem(&format!("{place}: TCP mode sends every connection to the top-level backends, and there are none (pools and routes are HTTP)"))
}

/// An admin address as the config and `--admin` write it: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (127.0.0.1).
pub fn parse_admin_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(format!(
        "expected IP:PORT (e.g. 127.0.0.1:9000, [::1]:9000) or localhost:PORT, got {text:?}"
    ))
}

/// The cores this process may use (respecting affinity and cgroup quotas), or 1 if that cannot be known.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests;
