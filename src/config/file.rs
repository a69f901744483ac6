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

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

pub use super::balance_file::{
    FileHashKey, FilePassiveHealth, FileRetries, FileSlowStart, HashBound,
};
pub use super::duration::{FileDuration, PositiveDuration};
use super::listeners::{Cidr, FileListener, FileTls, Mode};
pub use super::pools::{FileRoute, Pools};
use super::HealthKind;
use super::{Algorithm, BackendConfig};

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
#[serde(deny_unknown_fields, expecting = "a table of health check settings")]
pub struct FileHealth {
    pub path: Option<HealthPath>,
    pub interval: Option<PositiveDuration>,
    pub timeout: Option<PositiveDuration>,
    pub rise: Option<AtLeastOne>,
    pub fall: Option<AtLeastOne>,
    pub statuses: Option<Statuses>,
    /// `http` (a GET) or `tcp` (a connect); the default is `tcp` in TCP mode, else `http`.
    #[serde(rename = "type")]
    pub kind: Option<HealthKind>,
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

/// The backend list of the full form (`backends[i]` in messages).
#[derive(Debug)]
pub struct Backends(pub Vec<BackendConfig>);

/// The spec's short form: the whole file is the backend list (`[i]` in messages).
pub struct ArrayForm(pub Vec<BackendConfig>);

impl From<ArrayForm> for FileConfig {
    fn from(ArrayForm(backends): ArrayForm) -> FileConfig {
        FileConfig {
            backends: Some(Backends(backends)),
            ..FileConfig::default()
        }
    }
}

/// An integer in `min..=max`, with a message that names the bounds.
struct Bounded {
    /// What the message calls the value ("port", "status"); empty when the key path says enough ("rise").
    what: &'static str,
    min: u64,
    max: u64,
}

impl Bounded {
    fn check<E: de::Error>(&self, v: i128) -> Result<u64, E> {
        let (what, min, max) = (self.what, self.min, self.max);
        if v >= i128::from(min) && v <= i128::from(max) {
            return Ok(v as u64);
        }
        Err(E::custom(if !what.is_empty() {
            format!("{what} must be between {min} and {max}, got {v}")
        } else if v < i128::from(min) {
            format!("must be at least {min}, got {v}")
        } else {
            format!("must be at most {max}, got {v}")
        }))
    }
}

impl Visitor<'_> for Bounded {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer from {} to {}", self.min, self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        self.check(i128::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        self.check(i128::from(v))
    }
}

/// An integer newtype checked by [`Bounded`] inside deserialization.
macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident($ty:ty): $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let (what, min, max) = ($what, $min, $max);
                let n = deserializer.deserialize_u64(Bounded { what, min, max })?;
                Ok($name(n as $ty))
            }
        }
    };
}

bounded_int!(
    /// A backend port.
    Port(u16): "port", 1, 65535
);
bounded_int!(
    /// The listen port; 0 asks for any free port.
    ListenPort(u16): "port", 0, 65535
);
bounded_int!(
    /// A count that must be at least 1 (workers, rise, fall, max_connections).
    AtLeastOne(u32): "", 1, u64::from(u32::MAX)
);
bounded_int!(
    /// Idle connections kept per backend per worker; 0 keeps none (a new connection for every request).
    IdleCount(u32): "", 0, 1_000_000
);
bounded_int!(
    /// A backend's share of new requests relative to the others of its pool; 0 gets none (still checked).
    Weight(u32): "weight", 0, 1000
);
bounded_int!(
    /// A percentage (`max_ejected_percent`).
    Percent(u8): "", 0, 100
);
bounded_int!(
    /// `[retries] budget_percent`: at most 1000 (ten retries for every request is no budget at all, and a larger
    /// number is more likely a typo than a wish).
    BudgetPercent(u32): "", 0, 1000
);

const STATUS: Bounded = Bounded {
    what: "status",
    min: 100,
    max: 599,
};

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

/// The health check path: it goes verbatim into a request line, so it must be an absolute path without spaces.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct HealthPath(pub String);

impl TryFrom<String> for HealthPath {
    type Error = String;

    fn try_from(path: String) -> Result<Self, String> {
        if !path.starts_with('/') {
            Err(format!("must start with '/', got {path:?}"))
        } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!(
                "must not contain spaces or control characters, got {path:?}"
            ))
        } else {
            Ok(HealthPath(path))
        }
    }
}

/// The statuses that pass a health check: a non-empty list of statuses (`404`) and ranges (`"200-399"`).
#[derive(Debug, Clone)]
pub struct Statuses(pub Vec<RangeInclusive<u16>>);

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(StatusesVisitor).map(Statuses)
    }
}

struct StatusesVisitor;

impl<'de> Visitor<'de> for StatusesVisitor {
    type Value = Vec<RangeInclusive<u16>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of statuses and ranges, such as [\"200-399\", 404]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ranges = Vec::new();
        while let Some(StatusRange(range)) = seq.next_element()? {
            ranges.push(range);
        }
        if ranges.is_empty() {
            return Err(de::Error::custom("no statuses: no check could ever pass"));
        }
        Ok(ranges)
    }
}

struct StatusRange(RangeInclusive<u16>);

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusRangeVisitor)
    }
}

struct StatusRangeVisitor;

impl Visitor<'_> for StatusRangeVisitor {
    type Value = StatusRange;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a status such as 404 or a range such as \"200-399\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
        let status = STATUS.check(i128::from(v))? as u16;
        Ok(StatusRange(status..=status))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusRange, E> {
        let bad = |why: String| E::custom(format!("bad status range {s:?}: {why}"));
        let number = |part: &str| -> Result<u16, E> {
            let n: i128 = part.trim().parse().map_err(|_| {
                bad("expected a status such as 404 or a range such as \"200-399\"".to_string())
            })?;
            let status = STATUS.check::<serde::de::value::Error>(n);
            status.map(|n| n as u16).map_err(|e| bad(e.to_string()))
        };
        let (low, high) = match s.split_once('-') {
            Some((low, high)) => (number(low)?, number(high)?),
            None => (number(s)?, number(s)?),
        };
        if low > high {
            return Err(bad(format!("{low} is above {high}")));
        }
        Ok(StatusRange(low..=high))
    }
}
