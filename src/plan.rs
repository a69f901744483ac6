//! `lb check`: what lb would run with a config, in a few lines a person reads before a start or a reload; the same
//! lines are the effective config that `--log-level debug` logs at startup, so the two can never disagree.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use lb::config::{self, Config};

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
    let _ = writeln!(
        out,
        "backends ({}), round robin:",
        config.backends().count()
    );
    for backend in config.backends() {
        let written = backend.authority();
        let _ = match (backend.ip(), backend.resolve) {
            (Some(_), _) if backend.addr.to_string() == written => {
                writeln!(out, "  {}  {written}", backend.id)
            }
            (Some(_), _) => writeln!(out, "  {}  {written} ({})", backend.id, backend.addr),
            (None, resolve) => writeln!(
                out,
                "  {}  {written} (a host name: {} resolved at start and every {})",
                backend.id,
                match resolve {
                    config::Resolve::First => "its first address",
                    config::Resolve::All => "every address",
                },
                human(config.resolve_interval)
            ),
        };
    }
    if let Some(resolver) = config.resolver {
        let _ = writeln!(out, "resolver: {resolver}");
    }
    let health = &config.health;
    let statuses: Vec<String> = health
        .statuses
        .iter()
        .map(|r| match r.start() == r.end() {
            true => r.start().to_string(),
            false => format!("{}-{}", r.start(), r.end()),
        })
        .collect();
    let _ = writeln!(
        out,
        "health: GET {} every {}, timeout {}, down after {} failures, up after {} passes, pass: {}",
        health.path,
        human(health.interval),
        human(health.timeout),
        health.fall,
        health.rise,
        statuses.join(", ")
    );
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
