//! `lb check`: what lb would run with a config, in a few lines a person reads before a start or a reload; the same
//! lines are the effective config that `--log-level debug` logs at startup, so the two can never disagree.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use lb::config::{
    self, Algorithm, BalanceConfig, ClusterConfig, Config, HashKey, HealthConfig, HealthKind,
    HostMatch, RouteConfig,
};

/// The plan of `config` (read from `file`), one fact a line.
pub fn describe(file: &Path, config: &Config) -> String {
    format!("{}: valid\n{}", file.display(), settings(config))
}

/// What `config` sets, one fact a line: the plan without the file (also logged at startup with `--log-level debug`).
pub fn settings(config: &Config) -> String {
    let mut out = String::new();
    let workers = match config.workers {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    let connections = match config.max_connections {
        Some(max) => format!("max_connections {max}"),
        None => "max_connections from the open-files limit".to_owned(),
    };
    let listen = config::host_port(&config.host, config.port);
    let _ = writeln!(out, "listen: {listen} ({workers}, {connections})");
    for (index, cluster) in config.clusters.iter().enumerate() {
        describe_cluster(&mut out, config, index, cluster);
    }
    for route in &config.routes {
        let _ = writeln!(out, "{}", describe_route(config, route));
    }
    if let Some(resolver) = config.resolver {
        let _ = writeln!(out, "resolver: {resolver}");
    }
    let retries = &config.retries;
    let _ = writeln!(
        out,
        "retries: at most {} attempts per request, budget {}% of recent requests (at least {}/s)",
        retries.max_attempts,
        retries.budget_percent,
        config::RETRY_FLOOR_PER_SECOND
    );
    let _ = writeln!(out, "health: {}", describe_health(&config.health));
    let t = &config.timeouts;
    let _ = writeln!(
        out,
        "timeouts: connect {}, client_header {}, backend_response {}, idle {}, request_body {}, tunnel_idle {}, drain {}",
        human(t.connect),
        human(t.client_header),
        human(t.backend_response),
        human(t.idle),
        human(t.request_body),
        human(t.tunnel_idle),
        human(t.drain)
    );
    let _ = writeln!(
        out,
        "pool: {} idle connections per backend per worker, idle_timeout {}",
        config.pool.max_idle_per_backend,
        human(config.pool.idle_timeout)
    );
    out
}

/// A pool's lines: a head with its balancing, its backends one a line, and its health check when it is not the
/// top level's. The default pool keeps the head `backends (N), round robin:` it had before pools existed.
fn describe_cluster(out: &mut String, config: &Config, index: usize, cluster: &ClusterConfig) {
    let mut head = match cluster.name.as_str() {
        "" if cluster.backends.is_empty() => {
            let _ = writeln!(out, "backends: none (a request no route takes gets 404)");
            return;
        }
        "" => format!("backends ({})", cluster.backends.len()),
        name => format!("pool {name} ({})", cluster.backends.len()),
    };
    head.push_str(&format!(", {}", describe_balance(&cluster.balance)));
    if let Some(passive) = &cluster.passive_health {
        head.push_str(&format!(
            ", passive health: out after {} failures in a row for {} (longer each time), at most {}% of the pool",
            passive.consecutive_failures,
            human(passive.base_ejection),
            passive.max_ejected_percent
        ));
    }
    if let Some(window) = cluster.slow_start {
        head.push_str(&format!(", slow start {}", human(window)));
    }
    if index > 0 && !config.routes.iter().any(|r| r.cluster == index) {
        head.push_str(", no route leads here");
    }
    let _ = writeln!(out, "{head}:");
    for backend in &cluster.backends {
        let written = backend.authority();
        let mut line = match backend.ip() {
            Some(_) if backend.addr.to_string() == written => {
                format!("  {}  {written}", backend.id)
            }
            Some(_) => format!("  {}  {written} ({})", backend.id, backend.addr),
            None => format!(
                "  {}  {written} (a host name: {} resolved at start and every {})",
                backend.id,
                match backend.resolve {
                    config::Resolve::First => "its first address",
                    config::Resolve::All => "every address",
                },
                human(config.resolve_interval)
            ),
        };
        let mut extras = Vec::new();
        if backend.weight != 1 {
            extras.push(format!("weight {}", backend.weight));
        }
        if let Some(max) = backend.max_connections {
            extras.push(format!("max_connections {max}"));
        }
        if !extras.is_empty() {
            line.push_str(&format!("  {}", extras.join(", ")));
        }
        let _ = writeln!(out, "{line}");
    }
    if cluster.health != config.health {
        let _ = writeln!(out, "  health: {}", describe_health(&cluster.health));
    }
}

/// `round robin`, `consistent hash of header x-user, load bound 1.25`...
fn describe_balance(balance: &BalanceConfig) -> String {
    let key = match &balance.hash_key {
        HashKey::ClientIp => "the client's IP".to_owned(),
        HashKey::Header(name) => format!("header {name}"),
        HashKey::Cookie(name) => format!("cookie {name}"),
        HashKey::Path => "the path".to_owned(),
    };
    match balance.algorithm {
        Algorithm::RoundRobin => "round robin".to_owned(),
        Algorithm::LeastRequest => "least request".to_owned(),
        Algorithm::PeakEwma => "peak EWMA".to_owned(),
        Algorithm::Random => "random".to_owned(),
        Algorithm::ConsistentHash => match balance.hash_bound {
            Some(bound) => format!("consistent hash of {key}, load bound {bound}"),
            None => format!("consistent hash of {key}"),
        },
    }
}

/// `route: host *.example.com, path /static/ → pool static`.
fn describe_route(config: &Config, route: &RouteConfig) -> String {
    let mut parts = Vec::new();
    match &route.host {
        Some(HostMatch::Exact(name)) => parts.push(format!("host {name}")),
        Some(HostMatch::Suffix(suffix)) => parts.push(format!("host *{suffix}")),
        None => {}
    }
    if let Some(prefix) = &route.path_prefix {
        parts.push(format!("path {prefix}"));
    }
    let to = match config.clusters[route.cluster].name.as_str() {
        "" => "the top-level backends".to_owned(),
        name => format!("pool {name}"),
    };
    format!("route: {} → {to}", parts.join(", "))
}

fn describe_health(health: &HealthConfig) -> String {
    let statuses: Vec<String> = health
        .statuses
        .iter()
        .map(|r| match r.start() == r.end() {
            true => r.start().to_string(),
            false => format!("{}-{}", r.start(), r.end()),
        })
        .collect();
    let check = match health.kind {
        HealthKind::Http => format!("GET {}", health.path),
        HealthKind::Tcp => "connect".to_owned(),
    };
    let passes = match health.kind {
        HealthKind::Http => format!(", pass: {}", statuses.join(", ")),
        HealthKind::Tcp => String::new(),
    };
    format!(
        "{check} every {}, timeout {}, down after {} failures, up after {} passes{passes}",
        human(health.interval),
        human(health.timeout),
        health.fall,
        health.rise,
    )
}

/// `500ms`, `2s`, `1m30s`, `1h`: the form durations are written in.
fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let seconds = ms / 1000;
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_they_are_written() {
        let cases = [(500, "500ms"), (1500, "1500ms"), (0, "0s"), (2000, "2s")];
        for (ms, text) in cases {
            assert_eq!(human(Duration::from_millis(ms)), text);
        }
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(3661)), "1h1m1s");
    }
}
