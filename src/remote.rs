//! The subcommands that talk to a running balancer over its admin plane: `lb reload`, `lb status` and the diff of
//! `lb check --admin`. Each is one request; the answer is printed for a person, and the exit code says whether it
//! worked (0), or not (1, with one line on stderr).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use lb::admin::client::{self, Reply};
use lb::cli::Cli;
use lb::config::{self, Config};

/// Where the running balancer's admin plane is and its token: `--admin`, else the config's `admin`, else
/// 127.0.0.1:9000; the token from `LB_ADMIN_TOKEN`, else the config's `admin_token`.
pub struct Target {
    pub addr: SocketAddr,
    pub token: Option<String>,
    /// Where the token came from (`LB_ADMIN_TOKEN`, `lb.toml's admin_token`), to say so when it is refused.
    token_from: String,
}

impl Target {
    pub fn of(cli: &Cli) -> Target {
        // The file for its admin settings only: --admin here names the balancer to ask, not a listener to check.
        let overrides = config::Overrides {
            admin: None,
            ..cli.overrides()
        };
        let config = config::load(&cli.config, &overrides).ok();
        let admin = config.as_ref().and_then(|c| c.admin.clone());
        let addr = cli
            .admin
            .or(admin.as_ref().map(|a| a.addr))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9000)));
        let from_env = std::env::var("LB_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let token_from = match from_env {
            Some(_) => "LB_ADMIN_TOKEN".to_owned(),
            None => format!("{}'s admin_token", cli.config.display()),
        };
        let token = from_env.or(admin.and_then(|a| a.token));
        Target {
            addr,
            token,
            token_from,
        }
    }

    fn call(&self, method: &str, path: &str) -> Result<Reply, String> {
        client::call(self.addr, method, path, self.token.as_deref())
    }

    /// That whatever answered is not lb's admin plane (its answer is not lb's JSON).
    fn not_lb(&self, reply: &Reply) -> String {
        format!(
            "{} answered {} {}, not as lb's admin plane does: is it lb's admin address?",
            self.addr, reply.status, reply.reason
        )
    }

    /// Why `reply` is not the answer asked for, in one line: lb's own error (with what to do about a refused
    /// token), or that whatever answered is not lb's admin plane.
    fn refusal(&self, reply: &Reply) -> String {
        let Some(error) = reply.error() else {
            return self.not_lb(reply);
        };
        if reply.status != 401 {
            return error;
        }
        match &self.token {
            None => format!(
                "{error} (none given: set LB_ADMIN_TOKEN, or give the config file with admin_token in --config)"
            ),
            Some(_) => format!(
                "{error} (the one from {} was refused; after a change of admin_token in the file, the running lb \
                 has the old one until it reloads: give that one in LB_ADMIN_TOKEN)",
                self.token_from
            ),
        }
    }
}

fn fail(line: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {line}");
    ExitCode::FAILURE
}

/// `lb reload`: prints the diff (`generation 4: added [5], removed [2], changed [3]`) or the error.
pub fn reload(target: &Target) -> ExitCode {
    let reply = match target.call("POST", "/api/reload") {
        Ok(reply) => reply,
        Err(error) => return fail(error),
    };
    if reply.status != 200 {
        let refusal = target.refusal(&reply);
        return match reply.error() {
            Some(_) => fail(format!(
                "reload failed, the running config stays: {refusal}"
            )),
            None => fail(refusal),
        };
    }
    let Ok(diff) = serde_json::from_str::<serde_json::Value>(&reply.body) else {
        return fail(target.not_lb(&reply));
    };
    let ids = |key: &str| {
        diff[key].as_array().map_or_else(Vec::new, |a| {
            a.iter().filter_map(|v| v.as_u64()).collect::<Vec<_>>()
        })
    };
    println!(
        "reloaded: generation {}: added {:?}, removed {:?}, changed {:?}",
        diff["generation"],
        ids("added"),
        ids("removed"),
        ids("changed")
    );
    ExitCode::SUCCESS
}

/// `lb status`: the running balancer's backends as a table, one line each, with why a backend is down.
pub fn status(target: &Target) -> ExitCode {
    let reply = match target.call("GET", "/api/status") {
        Ok(reply) => reply,
        Err(error) => return fail(error),
    };
    if reply.status != 200 {
        return fail(format!("status: {}", target.refusal(&reply)));
    }
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&reply.body) else {
        return fail(target.not_lb(&reply));
    };
    print!("{}", table(&status, target.addr, SystemTime::now()));
    ExitCode::SUCCESS
}

/// The status as a person reads it: a line about the running config, then a table of the backends.
///
/// ```text
/// lb at 127.0.0.1:9000: generation 3, servers/servers.json, loaded 2h05m ago
/// ID  ADDRESS         STATE  SINCE     REQUESTS  IN FLIGHT  REASON
/// 1   127.0.0.1:8001  up     2h05m ago      118          0  -
/// 2   127.0.0.1:8002  down   3m12s ago       40          0  3 checks failed, last: connection refused
/// ```
fn table(status: &serde_json::Value, addr: SocketAddr, now: SystemTime) -> String {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let ago = |value: &serde_json::Value| {
        let Some(time) = value.as_str() else {
            return "-".to_owned();
        };
        match humantime::parse_rfc3339(time) {
            Ok(then) => ago(now.duration_since(then).unwrap_or_default()),
            Err(_) => time.to_owned(),
        }
    };
    let config = match status["config"].as_str() {
        Some(path) => path.to_owned(),
        None => "no config file".to_owned(),
    };
    let mut out = format!(
        "lb at {addr}: generation {}, {config}, loaded {}\n",
        text(&status["generation"]),
        ago(&status["loaded_at"])
    );
    let mut rows = vec![[
        "ID",
        "ADDRESS",
        "STATE",
        "SINCE",
        "REQUESTS",
        "IN FLIGHT",
        "REASON",
    ]
    .map(str::to_owned)];
    let backends = status["backends"].as_array().cloned().unwrap_or_default();
    for backend in &backends {
        let mut state = text(&backend["state"]);
        // A disabled or draining backend is still checked: say so when the checks find it down.
        if backend["health"] == "down" && state != "down" {
            state.push_str(" (down)");
        }
        rows.push([
            text(&backend["id"]),
            text(&backend["address"]),
            state,
            ago(&backend["since"]),
            text(&backend["requests"]),
            text(&backend["in_flight"]),
            text(&backend["reason"]),
        ]);
    }
    let mut widths = [0; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            match column {
                6 => line.push_str(cell),
                // Counts line up on the right.
                4 | 5 => line.push_str(&format!("{cell:>width$}  ")),
                _ => line.push_str(&format!("{cell:<width$}  ")),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if backends.is_empty() {
        out.push_str("(no backends)\n");
    }
    out
}

/// `45s ago`, `3m12s ago`, `2h05m ago`, `3d04h ago`: two units at most, enough to see how long ago.
fn ago(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match s {
        0 => "just now".to_owned(),
        1..60 => format!("{s}s ago"),
        60..3600 => format!("{m}m{:02}s ago", s % 60),
        3600..86_400 => format!("{}h{m:02}m ago", s / 3600),
        _ => format!("{d}d{h:02}h ago"),
    }
}

/// `lb check --admin`: what a reload of `config` would change in the running balancer, by backend id (the same
/// words as the reload's answer). Backends are the same when id and address match.
pub fn diff(target: &Target, config: &Config) -> Result<String, String> {
    let reply = target.call("GET", "/api/status")?;
    if reply.status != 200 {
        return Err(format!("status: {}", target.refusal(&reply)));
    }
    let status: serde_json::Value =
        serde_json::from_str(&reply.body).map_err(|_| target.not_lb(&reply))?;
    let running: Vec<(u64, String)> = status["backends"]
        .as_array()
        .map(|backends| {
            backends
                .iter()
                .filter_map(|b| Some((b["id"].as_u64()?, b["address"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    for backend in config.backends() {
        match running.iter().find(|(id, _)| *id == backend.id) {
            None => added.push(backend.id),
            Some((_, address)) if *address != backend.authority() => changed.push(backend.id),
            Some(_) => {}
        }
    }
    for (id, _) in &running {
        if !config.backends().any(|b| b.id == *id) {
            removed.push(*id);
        }
    }
    let generation = status["generation"].as_u64().unwrap_or(0);
    Ok(format!(
        "against the running lb at {} (generation {generation}): a reload would add {added:?}, remove {removed:?}, change {changed:?}\n",
        target.addr
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_says_how_long_in_two_units() {
        let ago = |s| ago(Duration::from_secs(s));
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(45), "45s ago");
        assert_eq!(ago(192), "3m12s ago");
        assert_eq!(ago(7500), "2h05m ago");
        assert_eq!(ago(3 * 86_400 + 4 * 3600 + 59), "3d04h ago");
    }

    #[test]
    fn the_table_says_why_a_backend_is_down() {
        let status = serde_json::json!({
            "generation": 3, "config": "servers/servers.json", "loaded_at": "2026-01-02T01:00:00.000Z",
            "backends": [
                {"id": 1, "address": "127.0.0.1:8001", "state": "up", "health": "up",
                 "since": "2026-01-02T01:00:00.000Z", "reason": null, "requests": 118, "in_flight": 2},
                {"id": 2, "address": "[::1]:8002", "state": "down", "health": "down",
                 "since": "2026-01-02T02:56:48.000Z", "reason": "3 checks failed, last: connection refused",
                 "requests": 40, "in_flight": 0},
                {"id": 12, "address": "127.0.0.1:8003", "state": "disabled", "health": "down",
                 "since": "2026-01-02T02:59:59.500Z", "reason": "1 check failed, last: status 500",
                 "requests": 0, "in_flight": 0},
            ]
        });
        let now = humantime::parse_rfc3339("2026-01-02T03:00:00Z").unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
        let expected = "\
lb at 127.0.0.1:9000: generation 3, servers/servers.json, loaded 2h00m ago
ID  ADDRESS         STATE            SINCE      REQUESTS  IN FLIGHT  REASON
1   127.0.0.1:8001  up               2h00m ago       118          2  -
2   [::1]:8002      down             3m12s ago        40          0  3 checks failed, last: connection refused
12  127.0.0.1:8003  disabled (down)  just now          0          0  1 check failed, last: status 500
";
        assert_eq!(table(&status, addr, now), expected);
    }
}
