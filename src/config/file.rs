//! What a config file may contain: serde types that mirror it exactly (`deny_unknown_fields` everywhere), each value
//! checked as it is read.
//!
//! Two forms. The spec's short form is a JSON array of backends ([`ArrayForm`]); the full form is an object (JSON) or
//! a table (TOML): [`FileConfig`], with `backends` plus optional listener, health check, timeout and balancing
//! settings, and named pools with the routes to them.
//!
//! Values are validated *while* they are deserialized (ports, counts, statuses, paths, durations, duplicate ids and
//! addresses, host resolution) rather than in a pass afterwards: an error raised inside deserialization is stamped by
//! the parser with the value's line and column and by `serde_path_to_error` with its key path (`backends[2].id`),
//! which a later pass could no longer recover. So the backend list is read by hand-written visitors that see the
//! entries before the current one. What needs several sources (defaults, CLI overrides) is left to `super::load`.

use serde::Deserialize;

pub use super::backends::{ArrayForm, Backends};
pub use super::balance_file::{
    FileHashKey, FilePassiveHealth, FileRetries, FileSlowStart, HashBound,
};
pub use super::duration::{FileDuration, PositiveDuration};
pub use super::health_file::FileHealth;
use super::listeners::{Cidr, FileListener, FileTls, Mode};
use super::numbers::{AtLeastOne, IdleCount, ListenPort};
pub use super::pools::{FileRoute, Pools};
use super::Algorithm;

/// The full form. `backends` is required unless `[pools.NAME]` tables and `[[routes]]` to them are given (checked
/// in `super::resolve`, which sees both).
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a list of backends, or a config object with `backends`"
)]
pub struct FileConfig {
    pub host: Option<ListenHost>,
    pub port: Option<ListenPort>,
    pub workers: Option<AtLeastOne>,
    pub access_log: Option<bool>,
    pub access_log_format: Option<AccessLogFormat>,
    pub max_connections: Option<AtLeastOne>,
    /// The default pool; an empty list is refused as it is read.
    pub backends: Option<Backends>,
    /// The DNS server backend names are asked of (`IP:PORT`); without it, the system's resolver.
    pub resolver: Option<ResolverAddr>,
    #[serde(default)]
    pub health_check: FileHealth,
    /// How the default pool balances, and what a pool's own keys default to.
    pub balance: Option<Algorithm>,
    pub hash_key: Option<FileHashKey>,
    pub hash_bound: Option<HashBound>,
    pub passive_health: Option<FilePassiveHealth>,
    pub slow_start: Option<FileSlowStart>,
    #[serde(default)]
    pub retries: FileRetries,
    /// How often backend host names are resolved again (a shorter TTL of a `resolver`'s answer wins).
    pub resolve_interval: Option<PositiveDuration>,
    /// Named pools of backends (`[pools.NAME]`), in the file's order.
    #[serde(default)]
    pub pools: Pools,
    /// Which requests go to which pool.
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub pool: FilePool,
    /// Where the admin plane listens (off when absent).
    pub admin: Option<AdminAddr>,
    /// The bearer token every admin request must carry; required for an admin address off loopback.
    pub admin_token: Option<AdminToken>,
    /// How the main listener serves connections (`http`, or `tcp`: L4).
    pub mode: Option<Mode>,
    /// Certificates: the main listener speaks TLS when this table is given.
    pub tls: Option<FileTls>,
    /// Listeners beside the main one.
    pub listeners: Option<Vec<FileListener>>,
    /// Sources trusted to send a PROXY protocol header on the main listener (and the listeners without their own).
    pub accept_proxy: Option<Vec<Cidr>>,
}

/// How access log lines are written: the Apache/nginx `common` and `combined` formats (`combined` with `lb`'s own
/// fields after it), or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Common,
    #[default]
    Combined,
    Json,
}

impl std::str::FromStr for AccessLogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "common" => Ok(AccessLogFormat::Common),
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err("expected common, combined or json".to_owned()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of timeouts")]
pub struct FileTimeouts {
    pub connect: Option<PositiveDuration>,
    pub client_header: Option<PositiveDuration>,
    pub backend_response: Option<PositiveDuration>,
    pub idle: Option<PositiveDuration>,
    pub request_body: Option<PositiveDuration>,
    pub tunnel_idle: Option<PositiveDuration>,
    pub drain: Option<FileDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of backend connection pool settings"
)]
pub struct FilePool {
    pub max_idle_per_backend: Option<IdleCount>,
    pub idle_timeout: Option<PositiveDuration>,
}

impl From<ArrayForm> for FileConfig {
    fn from(ArrayForm(backends): ArrayForm) -> FileConfig {
        FileConfig {
            backends: Some(Backends(backends)),
            ..FileConfig::default()
        }
    }
}

/// The listen host: kept as written (the server resolves and binds it), only checked to be non-empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenHost(pub String);

impl TryFrom<String> for ListenHost {
    type Error = &'static str;

    fn try_from(host: String) -> Result<Self, Self::Error> {
        match host.trim().is_empty() {
            true => Err("must not be empty"),
            false => Ok(ListenHost(host)),
        }
    }
}

/// The admin listener's address: `IP:PORT` (`[::1]:9000` for IPv6) or `localhost:PORT`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct AdminAddr(pub std::net::SocketAddr);

impl TryFrom<String> for AdminAddr {
    type Error = String;

    fn try_from(addr: String) -> Result<Self, String> {
        super::parse_admin_addr(&addr).map(AdminAddr)
    }
}

/// The DNS server of `resolver`: `IP:PORT`, or an IP address alone for port 53.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct ResolverAddr(pub std::net::SocketAddr);

impl TryFrom<String> for ResolverAddr {
    type Error = String;

    fn try_from(addr: String) -> Result<Self, String> {
        if let Ok(addr) = addr.parse() {
            return Ok(ResolverAddr(addr));
        }
        match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(ResolverAddr((ip, 53).into())),
            Err(_) => Err(format!(
                "expected the DNS server's IP:PORT (e.g. 127.0.0.1:53, [::1]:5353) or IP, got {addr:?}"
            )),
        }
    }
}

/// The admin bearer token: printable ASCII without spaces (it travels in an HTTP header), at least 16 characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct AdminToken(pub String);

impl TryFrom<String> for AdminToken {
    type Error = &'static str;

    fn try_from(token: String) -> Result<Self, Self::Error> {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces");
        }
        if token.len() < 16 {
            return Err("must be at least 16 characters (it guards control of the balancer)");
        }
        Ok(AdminToken(token))
    }
}
