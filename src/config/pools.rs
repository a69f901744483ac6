//! Several pools behind one listener: the `[pools.NAME]` tables and the `[[routes]]` to them as a file writes them,
//! and the step that turns them, with the top-level backends (the default pool), into the validated
//! [`ClusterConfig`]s and [`RouteConfig`]s.
//!
//! What one value says is checked as it is read (a pool's name, a route's host and path prefix, every key of a
//! pool's backends), so its error has a line and column. What needs the whole file is checked by [`clusters`] and
//! [`routes`], with the key path alone: a backend id used in two pools (tables may come in any order), a route to a
//! pool that does not exist, what a pool inherits from the top level.
//!
//! The name `default` is reserved: `pool = "default"` in a route means the top-level backends (so that a route can
//! carve an exception out of another one: `/api` to a pool, `/api/public` back to the default pool).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::backends::PoolBackends;
use super::balance_file::{Balancing, Resolved};
use super::health_file::FileHealth;
use super::{
    BackendConfig, ClusterConfig, HealthConfig, HostMatch, RouteConfig, MAX_DEFAULT_HEALTH_TIMEOUT,
};

/// The name a route gives to send requests to the top-level backends.
pub const DEFAULT_POOL: &str = "default";

/// The `[pools.NAME]` tables, in the file's order.
#[derive(Debug, Default)]
pub struct Pools(pub Vec<FilePool>);

/// One `[pools.NAME]` table as written.
#[derive(Debug)]
pub struct FilePool {
    pub name: String,
    pub backends: Vec<BackendConfig>,
    pub health_check: FileHealth,
    pub balancing: Balancing,
}

impl<'de> Deserialize<'de> for Pools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PoolsVisitor).map(Pools)
    }
}

struct PoolsVisitor;

impl<'de> Visitor<'de> for PoolsVisitor {
    type Value = Vec<FilePool>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of pools, each with its backends")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pools: Vec<FilePool> = Vec::new();
        while let Some(PoolName(name)) = map.next_key()? {
            // TOML refuses a table defined twice itself; JSON allows a repeated key.
            if pools.iter().any(|p| p.name == name) {
                return Err(de::Error::custom(format!("duplicate pool {name:?}")));
            }
            pools.push(map.next_value_seed(PoolSeed(&name))?);
        }
        Ok(pools)
    }
}

/// A pool's name: letters, digits, `_` and `-`, not `default`.
struct PoolName(String);

impl<'de> Deserialize<'de> for PoolName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if name.is_empty() || !name.chars().all(allowed) {
            let msg = format!("pool name {name:?}: use letters, digits, '_' and '-' only");
            return Err(de::Error::custom(msg));
        }
        if name == DEFAULT_POOL {
            let msg =
                "pool name \"default\" is reserved: it names the top-level backends in routes";
            return Err(de::Error::custom(msg));
        }
        Ok(PoolName(name))
    }
}

/// Reads one pool's table, knowing its name (for the messages of its backend list).
struct PoolSeed<'a>(&'a str);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum PoolField {
    Backends,
    Balance,
    HashKey,
    HashBound,
    HealthCheck,
    PassiveHealth,
    SlowStart,
}

const POOL_FIELDS: &[&str] = &[
    "backends",
    "balance",
    "hash_key",
    "hash_bound",
    "health_check",
    "passive_health",
    "slow_start",
];

impl<'de> DeserializeSeed<'de> for PoolSeed<'_> {
    type Value = FilePool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FilePool, D::Error> {
        deserializer.deserialize_struct("pool", POOL_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for PoolSeed<'_> {
    type Value = FilePool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pool: a table with backends")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FilePool, A::Error> {
        let name = self.0;
        let mut backends = None;
        let mut health_check = None;
        let mut b = Balancing::default();
        while let Some(field) = map.next_key()? {
            match field {
                PoolField::Backends => match backends {
                    Some(_) => return Err(de::Error::duplicate_field("backends")),
                    None => backends = Some(map.next_value_seed(PoolBackends(name))?),
                },
                PoolField::Balance => once(&mut b.balance, "balance", &mut map)?,
                PoolField::HashKey => once(&mut b.hash_key, "hash_key", &mut map)?,
                PoolField::HashBound => once(&mut b.hash_bound, "hash_bound", &mut map)?,
                PoolField::HealthCheck => once(&mut health_check, "health_check", &mut map)?,
                PoolField::PassiveHealth => {
                    once(&mut b.passive_health, "passive_health", &mut map)?
                }
                PoolField::SlowStart => once(&mut b.slow_start, "slow_start", &mut map)?,
            }
        }
        let backends =
            backends.ok_or_else(|| de::Error::custom(format!("pool {name} has no backends")))?;
        Ok(FilePool {
            name: name.to_owned(),
            backends,
            health_check: health_check.unwrap_or_default(),
            balancing: b,
        })
    }
}

/// Stores a field's value, refusing a second one.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// One `[[routes]]` entry as written: at least one of `host` and `path_prefix`, and the pool.
#[derive(Debug, Deserialize)]
#[serde(try_from = "WrittenRoute")]
pub struct FileRoute {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub pool: String,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route: host and/or path_prefix, and pool"
)]
struct WrittenRoute {
    host: Option<RouteHost>,
    path_prefix: Option<PathPrefix>,
    pool: String,
}

impl TryFrom<WrittenRoute> for FileRoute {
    type Error = &'static str;

    fn try_from(route: WrittenRoute) -> Result<Self, Self::Error> {
        if route.host.is_none() && route.path_prefix.is_none() {
            return Err("a route needs host or path_prefix (requests no route takes go to the top-level backends)");
        }
        Ok(FileRoute {
            host: route.host.map(|h| h.0),
            path_prefix: route.path_prefix.map(|p| p.0),
            pool: route.pool,
        })
    }
}

/// A route's `host`: a name (`api.example.com`), a wildcard (`*.example.com`) or an IP address (`[::1]` for IPv6),
/// without a port; stored lowercase, without a trailing dot, as requests are compared.
struct RouteHost(HostMatch);

impl<'de> Deserialize<'de> for RouteHost {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        route_host(&text).map(RouteHost).map_err(de::Error::custom)
    }
}

fn route_host(text: &str) -> Result<HostMatch, String> {
    let host = text.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.starts_with('[') {
        let ip = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        return match ip.map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(HostMatch::Exact(host.to_owned())),
            _ => Err(format!(
                "{text:?} is not an IPv6 address in brackets (a route's host has no port)"
            )),
        };
    }
    if host.contains(':') {
        return Err(format!(
            "{text:?}: a route's host has no port (requests are compared without theirs)"
        ));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(format!(
            "{text:?} is not a host name: expected e.g. api.example.com or *.example.com"
        ));
    }
    Ok(match wildcard {
        true => HostMatch::Suffix(format!(".{name}")),
        false => HostMatch::Exact(name.to_owned()),
    })
}

/// A route's `path_prefix`: starts with `/`; no query, fragment, space or control character (it is compared with
/// the request's path as bytes).
struct PathPrefix(String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let prefix = String::deserialize(deserializer)?;
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#';
        if !prefix.starts_with('/') {
            Err(de::Error::custom(format!(
                "must start with '/', got {prefix:?}"
            )))
        } else if prefix.contains(bad) {
            Err(de::Error::custom(format!(
                "must be a path without spaces, control characters, '?' or '#', got {prefix:?}"
            )))
        } else {
            Ok(PathPrefix(prefix))
        }
    }
}

/// The top level's settings that pools start from.
pub(super) struct TopLevel<'a> {
    /// The default pool's backends (`None`: not written).
    pub backends: Option<Vec<BackendConfig>>,
    pub balancing: &'a Balancing,
    /// The top-level health check with the flags applied.
    pub health: &'a HealthConfig,
    /// Whether the top-level `health_check` wrote `timeout`: a pool then inherits it, else its timeout defaults
    /// from its own interval.
    pub timeout_written: bool,
}

/// The pools: the default pool first (possibly without backends), then the named ones in the file's order. Backend
/// ids must be unique across all of them; the same address may serve two pools (as two backends, each with its
/// own state).
pub(super) fn clusters(top: TopLevel, pools: Pools) -> Result<Vec<ClusterConfig>, String> {
    let inherited = top.balancing.resolve("", None)?;
    let mut clusters = vec![cluster(
        String::new(),
        top.backends.unwrap_or_default(),
        top.health.clone(),
        inherited.clone(),
    )];
    for pool in pools.0 {
        let place = format!("pools.{}.", pool.name);
        let own = pool.balancing.resolve(&place, Some(&inherited))?;
        let health = pool_health(&pool.health_check, top.health, top.timeout_written);
        clusters.push(cluster(pool.name, pool.backends, health, own));
    }
    unique_ids(&clusters)?;
    Ok(clusters)
}

fn cluster(
    name: String,
    backends: Vec<BackendConfig>,
    health: HealthConfig,
    balancing: Resolved,
) -> ClusterConfig {
    ClusterConfig {
        name,
        backends,
        balance: balancing.balance,
        health,
        passive_health: balancing.passive_health,
        slow_start: balancing.slow_start,
    }
}

/// A pool's health check: each key it writes, else the top level's value (`timeout`: the top level's if written
/// there, else the smaller of the pool's interval and 2 s, as at the top level).
fn pool_health(own: &FileHealth, top: &HealthConfig, top_timeout_written: bool) -> HealthConfig {
    let interval = own.interval.map_or(top.interval, |d| d.0);
    let timeout = match own.timeout {
        Some(timeout) => timeout.0,
        None if top_timeout_written => top.timeout,
        None => interval.min(MAX_DEFAULT_HEALTH_TIMEOUT),
    };
    HealthConfig {
        path: own
            .path
            .as_ref()
            .map_or_else(|| top.path.clone(), |p| p.0.clone()),
        interval,
        timeout,
        rise: own.rise.map_or(top.rise, |n| n.0),
        fall: own.fall.map_or(top.fall, |n| n.0),
        statuses: own
            .statuses
            .as_ref()
            .map_or_else(|| top.statuses.clone(), |s| s.0.clone()),
        kind: own.kind.unwrap_or(top.kind),
    }
}

/// `backends[0]` or `pools.api.backends[1]`: how messages name a backend.
fn place(cluster: &ClusterConfig, index: usize) -> String {
    match cluster.name.as_str() {
        "" => format!("backends[{index}]"),
        name => format!("pools.{name}.backends[{index}]"),
    }
}

/// Refuses a backend id used in two pools (within one, the list's own reader refused it with its position).
fn unique_ids(clusters: &[ClusterConfig]) -> Result<(), String> {
    let mut seen: Vec<(u64, String)> = Vec::new();
    for cluster in clusters {
        for (i, backend) in cluster.backends.iter().enumerate() {
            if let Some((_, first)) = seen.iter().find(|(id, _)| *id == backend.id) {
                return Err(format!(
                    "{}.id: duplicate id {} (also {first}): ids are unique across pools",
                    place(cluster, i),
                    backend.id
                ));
            }
            seen.push((backend.id, place(cluster, i)));
        }
    }
    Ok(())
}

/// The routes, each naming its pool by index into `clusters`. Two routes that take the same requests are refused:
/// the second could never be used.
pub(super) fn routes(
    written: Vec<FileRoute>,
    clusters: &[ClusterConfig],
) -> Result<Vec<RouteConfig>, String> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (i, route) in written.into_iter().enumerate() {
        let cluster = match route.pool.as_str() {
            DEFAULT_POOL if clusters[0].backends.is_empty() => {
                return Err(format!(
                    "routes[{i}].pool: \"default\" is the top-level backends, and there are none"
                ))
            }
            DEFAULT_POOL => 0,
            name => match clusters.iter().skip(1).position(|c| c.name == name) {
                Some(index) => index + 1,
                None => return Err(unknown_pool(i, name, clusters)),
            },
        };
        let same = |r: &RouteConfig| r.host == route.host && r.path_prefix == route.path_prefix;
        if let Some(earlier) = routes.iter().position(same) {
            return Err(format!(
                "routes[{i}]: same host and path_prefix as routes[{earlier}], which takes its requests"
            ));
        }
        routes.push(RouteConfig {
            host: route.host,
            path_prefix: route.path_prefix,
            cluster,
        });
    }
    Ok(routes)
}

fn unknown_pool(route: usize, name: &str, clusters: &[ClusterConfig]) -> String {
    let mut known: Vec<String> = clusters[1..]
        .iter()
        .map(|c| format!("{:?}", c.name))
        .collect();
    if !clusters[0].backends.is_empty() {
        known.push(format!("{DEFAULT_POOL:?} (the top-level backends)"));
    }
    let known = match known.is_empty() {
        true => "there are no [pools.NAME] tables".to_owned(),
        false => format!("known: {}", known.join(", ")),
    };
    format!("routes[{route}].pool: unknown pool {name:?} ({known})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_hosts_are_names_wildcards_or_addresses_without_ports() {
        let exact = |h: &str| Ok(HostMatch::Exact(h.to_owned()));
        assert_eq!(route_host("API.Example.com."), exact("api.example.com"));
        assert_eq!(
            route_host("*.Example.com"),
            Ok(HostMatch::Suffix(".example.com".to_owned()))
        );
        assert_eq!(route_host("localhost"), exact("localhost"));
        assert_eq!(route_host("10.0.0.1"), exact("10.0.0.1"));
        assert_eq!(route_host("[::1]"), exact("[::1]"));
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "api.example.com:8080",
            "a*.example.com",
            "api example",
            "[::1]:80",
            "::1",
            "[x]",
        ] {
            assert!(route_host(bad).is_err(), "{bad:?} was taken");
        }
    }
}
