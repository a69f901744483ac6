//! The config file exactly as written: serde types with `deny_unknown_fields`, and the parser that turns a parse or
//! validation failure into one line naming the file, the line:column, the key path and the problem.
//!
//! Two forms. The spec's short form is a JSON array of backends; the full form is an object (JSON) or a table (TOML)
//! with `backends` plus optional listener, health check and timeout settings. JSON picks the form by its first
//! non-whitespace character instead of an untagged enum, because an untagged enum replaces every precise error with
//! "data did not match any variant".
//!
//! Values are validated *while* they are deserialized (ports, counts, statuses, paths, durations, duplicate ids and
//! addresses, host resolution): an error raised there is stamped by the parser with the position of the value and by
//! `serde_path_to_error` with its key path, which a check after parsing could no longer recover. Cross-field defaults
//! (e.g. the health timeout derived from the interval) are left to `super::load`.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub use super::duration::{FileDuration, PositiveDuration};

/// The full form. Only `backends` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<ListenHost>,
    pub port: Option<ListenPort>,
    pub workers: Option<AtLeastOne>,
    pub access_log: Option<bool>,
    pub backends: Backends,
    #[serde(default)]
    pub health_check: FileHealth,
    #[serde(default)]
    pub timeouts: FileTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub path: Option<HealthPath>,
    pub interval: Option<PositiveDuration>,
    pub timeout: Option<PositiveDuration>,
    pub rise: Option<AtLeastOne>,
    pub fall: Option<AtLeastOne>,
    pub statuses: Option<Statuses>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect: Option<PositiveDuration>,
    pub client_header: Option<PositiveDuration>,
    pub backend_response: Option<PositiveDuration>,
    pub idle: Option<PositiveDuration>,
    pub drain: Option<FileDuration>,
}

/// One backend, validated: its id and address are unique in the file and its host resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBackend {
    pub id: u64,
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

/// The file's syntax, chosen by extension: `.toml` is TOML, anything else JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    pub fn of(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Json,
        }
    }
}

/// Parses `text` (the contents of the file called `name`) in either form. The error is the whole user-facing line.
pub fn parse(name: &str, text: &str, format: Format) -> Result<FileConfig, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(format!("{name}: file is empty (expected a list of backends)"));
    }
    match format {
        Format::Toml => {
            let de = toml::Deserializer::new(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let at = e.inner().span().map(|span| line_col(text, span.start));
                located(name, at, &e.path().to_string(), e.inner().message())
            })
        }
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            let config = if text.trim_start().starts_with('[') {
                serde_path_to_error::deserialize(&mut *de).map(|ArrayForm(backends)| FileConfig {
                    host: None,
                    port: None,
                    workers: None,
                    access_log: None,
                    backends: Backends(backends),
                    health_check: FileHealth::default(),
                    timeouts: FileTimeouts::default(),
                })
            } else {
                serde_path_to_error::deserialize(&mut *de)
            };
            let config = config.map_err(|e| json_error(name, &e.path().to_string(), e.inner()))?;
            de.end().map_err(|e| json_error(name, "", &e))?;
            Ok(config)
        }
    }
}

fn json_error(name: &str, path: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.line() == 0 {
        return located(name, None, path, &message);
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    located(name, Some((e.line(), e.column().max(1))), path, message)
}

/// `<file>:<line>:<col>: <key path>: <problem>`, leaving out the parts that are unknown; always one line.
fn located(name: &str, at: Option<(usize, usize)>, path: &str, message: &str) -> String {
    let mut out = name.to_string();
    if let Some((line, col)) = at {
        out.push_str(&format!(":{line}:{col}"));
    }
    out.push_str(": ");
    if !path.is_empty() && path != "." {
        out.push_str(path);
        out.push_str(": ");
    }
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    out.push_str(&lines.join("; "));
    out
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// The backend list of the full form (`backends[i]` in messages).
#[derive(Debug)]
pub struct Backends(pub Vec<FileBackend>);

/// The spec's short form: the whole file is the backend list (`[i]` in messages).
struct ArrayForm(Vec<FileBackend>);

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
    type Value = Vec<FileBackend>;

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
    earlier: &'a [FileBackend],
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
    type Value = FileBackend;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FileBackend, D::Error> {
        deserializer.deserialize_struct("backend", &["id", "host", "port"], self)
    }
}

impl<'de> Visitor<'de> for BackendSeed<'_> {
    type Value = FileBackend;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend with id, host and port")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileBackend, A::Error> {
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
            if other.host == host && other.port == port {
                let msg = format!("duplicate backend {host}:{port} (also {})", self.name(i));
                return Err(de::Error::custom(msg));
            }
            if other.addr == addr {
                let (other_host, other_port) = (&other.host, other.port);
                let msg = format!(
                    "duplicate backend {host}:{port}: it resolves to {addr}, \
                     as does {other_host}:{other_port} ({})",
                    self.name(i)
                );
                return Err(de::Error::custom(msg));
            }
        }
        Ok(FileBackend {
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
            return Err(E::custom("host must not be empty"));
        }
        // Accept the URL spelling of an IPv6 literal too: `[::1]`.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match (bare, 0).to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => Ok((host.to_string(), addr.ip())),
            Ok(None) => Err(E::custom(format!("cannot resolve {host:?}: no addresses"))),
            Err(e) => Err(E::custom(format!("cannot resolve {host:?}: {e}"))),
        }
    }
}

/// An integer in `min..=max`, with a message that names the bounds.
struct Bounded {
    /// Prefix of the message ("port", "status"), or empty when the key path says enough.
    what: &'static str,
    min: u64,
    max: u64,
    /// Name both bounds in the message (for small, well-known ranges such as ports).
    show_range: bool,
}

impl Bounded {
    fn check<E: de::Error>(&self, v: i128) -> Result<u64, E> {
        if v >= i128::from(self.min) && v <= i128::from(self.max) {
            return Ok(v as u64);
        }
        let what = if self.what.is_empty() {
            String::new()
        } else {
            format!("{} ", self.what)
        };
        let (min, max) = (self.min, self.max);
        Err(E::custom(if self.show_range {
            format!("{what}must be between {min} and {max}, got {v}")
        } else if v < 0 && min == 0 {
            format!("{what}must not be negative, got {v}")
        } else if v < i128::from(min) {
            format!("{what}must be at least {min}, got {v}")
        } else {
            format!("{what}must be at most {max}, got {v}")
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

/// A backend port: 1..=65535.
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounded {
            what: "port",
            min: 1,
            max: 65535,
            show_range: true,
        };
        deserializer.deserialize_u64(bounds).map(|p| Port(p as u16))
    }
}

/// The listen port: 0 (any free port) to 65535.
#[derive(Debug, Clone, Copy)]
pub struct ListenPort(pub u16);

impl<'de> Deserialize<'de> for ListenPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounded {
            what: "port",
            min: 0,
            max: 65535,
            show_range: true,
        };
        deserializer
            .deserialize_u64(bounds)
            .map(|p| ListenPort(p as u16))
    }
}

/// A count that must be at least 1 (workers, rise, fall).
#[derive(Debug, Clone, Copy)]
pub struct AtLeastOne(pub u32);

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bounds = Bounded {
            what: "",
            min: 1,
            max: u64::from(u32::MAX),
            show_range: false,
        };
        deserializer
            .deserialize_u64(bounds)
            .map(|n| AtLeastOne(n as u32))
    }
}

/// The listen host: kept as written (the server resolves and binds it), only checked to be non-empty.
#[derive(Debug, Clone)]
pub struct ListenHost(pub String);

impl<'de> Deserialize<'de> for ListenHost {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor {
            expecting: "a host name or IP address",
            check: |s| match s.trim().is_empty() {
                true => Err("host must not be empty".to_string()),
                false => Ok(()),
            },
        })
        .map(ListenHost)
    }
}

/// The health check path: it goes verbatim into a request line, so it must be an absolute path without spaces.
#[derive(Debug, Clone)]
pub struct HealthPath(pub String);

impl<'de> Deserialize<'de> for HealthPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor {
            expecting: "a path such as \"/health\"",
            check: |s| {
                if !s.starts_with('/') {
                    Err(format!("path must start with '/', got {s:?}"))
                } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    Err(format!("path must not contain spaces or control characters, got {s:?}"))
                } else {
                    Ok(())
                }
            },
        })
        .map(HealthPath)
    }
}

struct StrVisitor {
    expecting: &'static str,
    check: fn(&str) -> Result<(), String>,
}

impl Visitor<'_> for StrVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
        (self.check)(s).map_err(E::custom)?;
        Ok(s.to_string())
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

const STATUS: Bounded = Bounded {
    what: "status",
    min: 100,
    max: 599,
    show_range: true,
};

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
        let status = STATUS.check(i128::from(v))? as u16;
        Ok(StatusRange(status..=status))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
        STATUS.check::<E>(i128::from(v))?;
        self.visit_u64(v as u64)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusRange, E> {
        let bad = |why: String| E::custom(format!("bad status range {s:?}: {why}"));
        let number = |part: &str| -> Result<u16, E> {
            let n: i128 = part.trim().parse().map_err(|_| {
                bad("expected a status such as 404 or a range such as \"200-399\"".to_string())
            })?;
            STATUS
                .check::<E>(n)
                .map(|n| n as u16)
                .map_err(|_| bad(format!("status must be between 100 and 599, got {n}")))
        };
        let (low, high) = match s.trim().split_once('-') {
            Some((low, high)) => (number(low)?, number(high)?),
            None => (number(s)?, number(s)?),
        };
        if low > high {
            return Err(bad(format!("{low} is above {high}")));
        }
        Ok(StatusRange(low..=high))
    }
}
