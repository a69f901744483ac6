//! What a config file may contain: serde types that mirror it exactly (`deny_unknown_fields` everywhere), each value
//! checked as it is read.
//!
//! Two forms. The spec's short form is a JSON array of backends ([`ArrayForm`]); the full form is an object (JSON) or
//! a table (TOML): [`FileConfig`], with `backends` plus optional listener, health check and timeout settings.
//!
//! Values are validated *while* they are deserialized (ports, counts, statuses, paths, durations, duplicate ids and
//! addresses, host resolution) rather than in a pass afterwards: an error raised inside deserialization is stamped by
//! the parser with the value's line and column and by `serde_path_to_error` with its key path (`backends[2].id`),
//! which a later pass could no longer recover. So the backend list is read by hand-written visitors that see the
//! entries before the current one. What needs several sources (defaults, CLI overrides) is left to `super::load`.

use std::cell::Cell;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub use super::duration::{FileDuration, PositiveDuration};
use super::{host_port, BackendConfig};

/// The full form. Only `backends` is required.
#[derive(Debug, Deserialize)]
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
    pub backends: Backends,
    #[serde(default)]
    pub health_check: FileHealth,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub pool: FilePool,
    /// Where the admin plane listens (off when absent).
    pub admin: Option<AdminAddr>,
    /// The bearer token every admin request must carry; required for an admin address off loopback.
    pub admin_token: Option<AdminToken>,
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
            host: None,
            port: None,
            workers: None,
            access_log: None,
            access_log_format: None,
            max_connections: None,
            backends: Backends(backends),
            health_check: FileHealth::default(),
            timeouts: FileTimeouts::default(),
            pool: FilePool::default(),
            admin: None,
            admin_token: None,
        }
    }
}

impl<'de> Deserialize<'de> for Backends {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = BackendsVisitor { prefix: "backends" };
        deserializer.deserialize_seq(visitor).map(Backends)
    }
}

impl<'de> Deserialize<'de> for ArrayForm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = BackendsVisitor { prefix: "" };
        deserializer.deserialize_seq(visitor).map(ArrayForm)
    }
}

struct BackendsVisitor {
    /// How messages name the list, to point at the earlier entry of a duplicate.
    prefix: &'static str,
}

impl<'de> Visitor<'de> for BackendsVisitor {
    type Value = Vec<BackendConfig>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of backends")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut backends = Vec::new();
        while let Some(backend) = seq.next_element_seed(BackendSeed {
            prefix: self.prefix,
            earlier: &backends,
        })? {
            backends.push(backend);
        }
        if backends.is_empty() {
            return Err(de::Error::custom("no backends"));
        }
        Ok(backends)
    }
}

/// Deserializes one backend, checking it against the ones before it.
struct BackendSeed<'a> {
    prefix: &'static str,
    earlier: &'a [BackendConfig],
}

impl BackendSeed<'_> {
    fn name(&self, index: usize) -> String {
        format!("{}[{index}]", self.prefix)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum BackendField {
    Id,
    Host,
    Port,
}

impl<'de> DeserializeSeed<'de> for BackendSeed<'_> {
    type Value = BackendConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<BackendConfig, D::Error> {
        deserializer.deserialize_struct("backend", &["id", "host", "port"], self)
    }
}

impl<'de> Visitor<'de> for BackendSeed<'_> {
    type Value = BackendConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend with id, host and port")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BackendConfig, A::Error> {
        let (mut id, mut host, mut port) = (None, None, None);
        while let Some(field) = map.next_key()? {
            match field {
                BackendField::Id if id.is_some() => return Err(de::Error::duplicate_field("id")),
                BackendField::Host if host.is_some() => {
                    return Err(de::Error::duplicate_field("host"))
                }
                BackendField::Port if port.is_some() => {
                    return Err(de::Error::duplicate_field("port"))
                }
                BackendField::Id => id = Some(map.next_value_seed(IdSeed(&self))?),
                BackendField::Host => host = Some(map.next_value_seed(HostSeed)?),
                BackendField::Port => port = Some(map.next_value::<Port>()?.0),
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let (host, ip) = host.ok_or_else(|| de::Error::missing_field("host"))?;
        let port = port.ok_or_else(|| de::Error::missing_field("port"))?;
        let addr = SocketAddr::new(ip, port);
        for (i, other) in self.earlier.iter().enumerate() {
            let (this, that) = (host_port(&host, port), host_port(&other.host, other.port));
            if this == that {
                let msg = format!("duplicate backend {this} (also {})", self.name(i));
                return Err(de::Error::custom(msg));
            }
            if other.addr == addr {
                let name = self.name(i);
                let msg =
                    format!("duplicate backend {this}: same address {addr} as {name} ({that})");
                return Err(de::Error::custom(msg));
            }
        }
        Ok(BackendConfig {
            id,
            host,
            port,
            addr,
        })
    }
}

/// A backend id, unique within the list.
struct IdSeed<'a, 'b>(&'a BackendSeed<'b>);

impl<'de> DeserializeSeed<'de> for IdSeed<'_, '_> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_u64(self)
    }
}

impl Visitor<'_> for IdSeed<'_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend id (a non-negative integer)")
    }

    fn visit_u64<E: de::Error>(self, id: u64) -> Result<u64, E> {
        match self.0.earlier.iter().position(|b| b.id == id) {
            Some(i) => Err(E::custom(format!(
                "duplicate id {id} (also {})",
                self.0.name(i)
            ))),
            None => Ok(id),
        }
    }

    fn visit_i64<E: de::Error>(self, id: i64) -> Result<u64, E> {
        match u64::try_from(id) {
            Ok(id) => self.visit_u64(id),
            Err(_) => Err(E::custom(format!("id must not be negative, got {id}"))),
        }
    }
}

/// A backend host, resolved to its first address now so that a typo fails at startup, not at the first request.
struct HostSeed;

impl<'de> DeserializeSeed<'de> for HostSeed {
    type Value = (String, IpAddr);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for HostSeed {
    type Value = (String, IpAddr);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a host name or IP address")
    }

    fn visit_str<E: de::Error>(self, host: &str) -> Result<Self::Value, E> {
        if host.trim().is_empty() {
            return Err(E::custom("must not be empty"));
        }
        // Accept the URL spelling of an IPv6 literal too: `[::1]`.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match resolve(bare) {
            Ok(Some(ip)) => Ok((host.to_string(), ip)),
            Ok(None) => Err(E::custom(format!("cannot resolve {host:?}: no addresses"))),
            Err(e) => Err(E::custom(format!("cannot resolve {host:?}: {e}"))),
        }
    }
}

thread_local! {
    /// Set while [`offline`] runs: host names are not resolved.
    static OFFLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with backend hosts resolved without the network: an IP address or `localhost` resolves, any other name
/// fails as the resolver would fail it. The fuzzer loads configs this way, so that it never sends a DNS query.
pub(crate) fn offline<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            OFFLINE.with(|offline| offline.set(self.0));
        }
    }
    let _reset = Reset(OFFLINE.with(|offline| offline.replace(true)));
    f()
}

/// The first address of `host` (the system's resolver; see [`offline`]).
fn resolve(host: &str) -> std::io::Result<Option<IpAddr>> {
    if !OFFLINE.with(Cell::get) {
        return (host, 0)
            .to_socket_addrs()
            .map(|mut addrs| addrs.next().map(|a| a.ip()));
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(ip)),
        Err(_) if host.eq_ignore_ascii_case("localhost") => Ok(Some(IpAddr::from([127, 0, 0, 1]))),
        Err(_) => Err(std::io::Error::other("not resolved (offline)")),
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
