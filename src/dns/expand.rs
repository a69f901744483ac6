//! From the config as written to the config the routing follows: each backend given by host name at the addresses
//! its name last resolved to (see the module doc of `dns`), and which backends moved between two such configs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use super::Names;
use crate::config::{BackendConfig, Config, Resolve, UNRESOLVED};

/// The host names of `config`'s backends (those not written as IP addresses).
pub fn names_of(config: &Config) -> BTreeSet<String> {
    let named = config.backends().filter(|b| b.ip().is_none());
    named.map(|b| b.host.clone()).collect()
}

/// `config` with every backend given by name at what its name resolved to: the first address, or one member per
/// address (`resolve = "all"`, in address order, so that every balancer with the same answer has the same pool);
/// at [`UNRESOLVED`] when it never resolved. Backends written as IP addresses are kept as they are.
pub fn expand(config: &Config, names: &Names) -> Config {
    let mut expanded = config.clone();
    for cluster in &mut expanded.clusters {
        cluster.backends = cluster
            .backends
            .iter()
            .flat_map(|backend| members(backend, names))
            .collect();
    }
    expanded
}

fn members(backend: &BackendConfig, names: &Names) -> Vec<BackendConfig> {
    if backend.ip().is_some() {
        return vec![backend.clone()];
    }
    let at = |ip| BackendConfig {
        addr: SocketAddr::new(ip, backend.port),
        ..backend.clone()
    };
    let addrs = names.addrs(&backend.host);
    match (addrs, backend.resolve) {
        ([], _) => vec![BackendConfig {
            addr: UNRESOLVED,
            ..backend.clone()
        }],
        ([first, ..], Resolve::First) => vec![at(*first)],
        (all, Resolve::All) => {
            let mut sorted = all.to_vec();
            sorted.sort();
            sorted.into_iter().map(at).collect()
        }
    }
}

/// A backend given by name whose addresses changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub id: u64,
    /// `host:port` as written.
    pub authority: String,
    pub was: Vec<SocketAddr>,
    pub now: Vec<SocketAddr>,
}

impl fmt::Display for Moved {
    /// `backend 3 api.internal:8080 now resolves to 10.0.0.7:8080 (was 10.0.0.5:8080)`: the log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |addrs: &[SocketAddr]| match addrs {
            [] | [UNRESOLVED] => "unresolved".to_owned(),
            addrs => {
                let addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
                addrs.join(", ")
            }
        };
        write!(
            f,
            "backend {} {} now resolves to {} (was {})",
            self.id,
            self.authority,
            list(&self.now),
            list(&self.was)
        )
    }
}

/// The backends given by name whose addresses differ from `old` to `new` (two expansions of one config), by id.
pub fn moves(old: &Config, new: &Config) -> Vec<Moved> {
    let addrs = |config: &Config, id: u64| -> Vec<SocketAddr> {
        let members = config.backends().filter(|b| b.id == id);
        members.map(|b| b.addr).collect()
    };
    let mut ids: Vec<(u64, String)> = Vec::new();
    for backend in new.backends().filter(|b| b.ip().is_none()) {
        if !ids.iter().any(|(id, _)| *id == backend.id) {
            ids.push((backend.id, backend.authority()));
        }
    }
    let moved = ids.into_iter().map(|(id, authority)| Moved {
        id,
        authority,
        was: addrs(old, id),
        now: addrs(new, id),
    });
    moved
        .filter(|m| !m.was.is_empty() && m.was != m.now)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::config::{self, Overrides};
    use crate::dns::Answer;

    fn backend(id: u64, host: &str, resolve: Resolve) -> BackendConfig {
        BackendConfig {
            id,
            host: host.into(),
            port: 8080,
            addr: host
                .parse::<IpAddr>()
                .map_or(UNRESOLVED, |ip| SocketAddr::new(ip, 8080)),
            options: Default::default(),
            weight: 1,
            max_connections: None,
            resolve,
        }
    }

    fn config(backends: Vec<BackendConfig>) -> Config {
        config::from_backends(backends, &Overrides::default()).expect("a valid config")
    }

    fn resolved(names: &mut Names, host: &str, addrs: &[u8]) {
        let answer = Answer {
            addrs: addrs
                .iter()
                .map(|&n| IpAddr::from([127, 0, 0, n]))
                .collect(),
            ttl: None,
        };
        let (now, interval) = (Instant::now(), Duration::from_secs(30));
        names.record(host, Ok(answer), now, interval);
    }

    fn addrs(config: &Config) -> Vec<(u64, String)> {
        let all = config.backends().map(|b| (b.id, b.addr.to_string()));
        all.collect()
    }

    #[test]
    fn a_name_becomes_its_first_address_every_address_or_unresolved() {
        let written = config(vec![
            backend(1, "127.0.0.9", Resolve::First),
            backend(2, "api.test", Resolve::First),
            backend(3, "pods.test", Resolve::All),
            backend(4, "nowhere.test", Resolve::All),
        ]);
        assert_eq!(
            names_of(&written),
            BTreeSet::from(["api.test", "nowhere.test", "pods.test"].map(String::from))
        );
        let mut names = Names::default();
        resolved(&mut names, "api.test", &[3, 2]);
        resolved(&mut names, "pods.test", &[5, 4, 6]);

        let expanded = expand(&written, &names);
        let expected = [
            (1, "127.0.0.9:8080"),
            (2, "127.0.0.3:8080"),
            (3, "127.0.0.4:8080"),
            (3, "127.0.0.5:8080"),
            (3, "127.0.0.6:8080"),
            (4, "0.0.0.0:0"),
        ];
        let expected: Vec<(u64, String)> = expected
            .iter()
            .map(|(id, a)| (*id, a.to_string()))
            .collect();
        assert_eq!(addrs(&expanded), expected);
        assert!(expanded
            .backends()
            .all(|b| b.host != "pods.test" || b.id == 3));
    }

    #[test]
    fn moves_name_the_backends_whose_addresses_changed() {
        let written = config(vec![
            backend(1, "127.0.0.9", Resolve::First),
            backend(2, "api.test", Resolve::First),
            backend(3, "pods.test", Resolve::All),
            backend(4, "late.test", Resolve::First),
        ]);
        let mut names = Names::default();
        resolved(&mut names, "api.test", &[2]);
        resolved(&mut names, "pods.test", &[4, 5]);
        let before = expand(&written, &names);

        resolved(&mut names, "api.test", &[7]);
        resolved(&mut names, "pods.test", &[5, 6]);
        resolved(&mut names, "late.test", &[8]);
        let after = expand(&written, &names);

        let lines: Vec<String> = moves(&before, &after)
            .iter()
            .map(Moved::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "backend 2 api.test:8080 now resolves to 127.0.0.7:8080 (was 127.0.0.2:8080)",
                "backend 3 pods.test:8080 now resolves to 127.0.0.5:8080, 127.0.0.6:8080 (was 127.0.0.4:8080, 127.0.0.5:8080)",
                "backend 4 late.test:8080 now resolves to 127.0.0.8:8080 (was unresolved)",
            ]
        );
        assert!(moves(&after, &expand(&written, &names)).is_empty());
    }
}
