//! `GET /api/status`: the running config and every backend's state, since when, and why — the first thing a person
//! asks of a balancer ("why is backend 2 down?"). `lb status` prints it as a table; the dashboard draws it.
//!
//! ```json
//! {"generation":3,"config":"servers/servers.json","loaded_at":"2026-01-02T03:04:05.678Z",
//!  "backends":[{"id":2,"address":"127.0.0.1:8002","state":"down","health":"down","admin":"enabled",
//!    "since":"2026-…Z","reason":"3 checks failed, last: connection refused","in_flight":0,"requests":118,
//!    "checks":[{"at":"2026-…Z","ok":false,"status":null,"error":"connection refused","ms":0.3}, …], …}], …}
//! ```
//!
//! - `state`: `disabled` or `draining` when the operator said so (that decides whether it gets traffic), else the
//!   health checks' `up` or `down`. Since a disabled or draining backend is still checked, `health` (`up`/`down`)
//!   and `admin` (`enabled`/`disabled`/`draining`) are both shown beside it.
//! - `since`: when the shown state began (the admin change for `disabled`/`draining`, else the health flip or the
//!   first check); `health_since` is the health state's, whatever `state` shows.
//! - `reason`: why the health checks say down (`3 checks failed, last: status 500`), whatever the admin state;
//!   null when health is up.
//! - `checks`: the last 10, newest first; `ms` is how long the check took.
//! - `requests`: answers from the backend so far (every status class), summed over the workers.
//! - `ejected`: whether passive health ejected it (it gets no new requests whatever `state` says), `ejected_until`
//!   when that ends (null when not ejected), `ejections`: how often it was since it appeared.
//!
//! Times are RFC 3339 in UTC with milliseconds (`Z`). `config` is the file reloads re-read, as given on the command
//! line (null for `lb demo`, which has none).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use http::StatusCode;
use serde::Serialize;

use super::answer::{self, Answer};
use super::Plane;
use crate::backend::history::Check;
use crate::backend::{clock, AdminState, Backend};
use crate::upstream::Snapshot;

#[derive(Serialize)]
struct Status<'a> {
    generation: u64,
    config: Option<&'a str>,
    loaded_at: String,
    backends: Vec<BackendStatus<'a>>,
    version: &'static str,
    workers: usize,
    /// Client connections open now, over every worker.
    client_connections: usize,
    /// Requests being proxied now, over every worker.
    in_flight: usize,
    reloads: Reloads,
}

#[derive(Serialize)]
struct Reloads {
    ok: u64,
    error: u64,
}

#[derive(Serialize)]
struct BackendStatus<'a> {
    id: u64,
    address: &'a str,
    /// Where connections go: the address itself, or what its host name resolved to (`null` while it does not).
    resolved: Option<String>,
    /// Its pool: `""` for the top-level backends, else the `[pools.NAME]` name.
    pool: &'a str,
    state: &'static str,
    health: &'static str,
    admin: &'static str,
    since: String,
    health_since: String,
    reason: Option<String>,
    in_flight: usize,
    requests: u64,
    checks: Vec<CheckStatus>,
    checks_passed: u64,
    checks_failed: u64,
    connect_failures: u64,
    ejected: bool,
    ejected_until: Option<String>,
    ejections: u64,
}

#[derive(Serialize)]
struct CheckStatus {
    at: String,
    ok: bool,
    status: Option<u16>,
    error: Option<String>,
    ms: f64,
}

pub fn render(plane: &Plane) -> Answer {
    let snapshot = plane.routing.load_full();
    let status = Status {
        generation: snapshot.generation,
        config: plane.config_path.as_deref(),
        loaded_at: timestamp(snapshot.loaded_at),
        backends: snapshot
            .backends
            .iter()
            .map(|b| backend(b, &snapshot))
            .collect(),
        version: env!("CARGO_PKG_VERSION"),
        workers: plane.workers.len(),
        client_connections: plane.workers.iter().map(|w| w.open()).sum(),
        in_flight: plane.workers.iter().map(|w| w.in_flight()).sum(),
        reloads: Reloads {
            ok: plane.reloads.ok(),
            error: plane.reloads.error(),
        },
    };
    answer::json(StatusCode::OK, &status)
}

/// The word for what a backend is doing: the operator's state when it keeps traffic away, else its health.
pub fn state_word(admin: AdminState, healthy: bool) -> &'static str {
    match (admin, healthy) {
        (AdminState::Enabled, true) => "up",
        (AdminState::Enabled, false) => "down",
        (admin, _) => admin.as_str(),
    }
}

fn backend<'a>(backend: &'a Backend, snapshot: &'a Snapshot) -> BackendStatus<'a> {
    let state = &backend.state;
    let (admin, healthy) = (state.admin(), backend.is_healthy());
    let history = state.history.view();
    let ejected = backend.is_ejected();
    let since = match admin {
        AdminState::Enabled => history.since,
        _ => history.admin_since,
    };
    BackendStatus {
        id: backend.id,
        address: &backend.authority,
        resolved: backend.is_resolved().then(|| backend.addr.to_string()),
        pool: &snapshot.clusters[backend.cluster].name,
        // An up backend that passive health ejected takes no requests: say so where an operator looks first.
        state: match ejected && healthy && admin == AdminState::Enabled {
            true => "ejected",
            false => state_word(admin, healthy),
        },
        health: if healthy { "up" } else { "down" },
        admin: admin.as_str(),
        since: timestamp(since),
        health_since: timestamp(history.since),
        reason: if healthy { None } else { history.reason },
        in_flight: state.in_flight.load(Ordering::Relaxed),
        requests: state.stats.totals().requests(),
        checks: history.checks.iter().map(check).collect(),
        checks_passed: state.checks_passed.load(Ordering::Relaxed),
        checks_failed: state.checks_failed.load(Ordering::Relaxed),
        connect_failures: state.connect_failures.load(Ordering::Relaxed),
        ejected,
        ejected_until: ejected.then(|| timestamp(ejection_end(state.outlier.ejected_until_ms()))),
        ejections: state.outlier.ejections(),
    }
}

fn check(check: &Check) -> CheckStatus {
    CheckStatus {
        at: timestamp(check.at),
        ok: check.ok,
        status: check.status,
        error: check.error.clone(),
        // To the hundredth of a millisecond: finer says nothing on a loopback check's jitter.
        ms: (check.took.as_secs_f64() * 100_000.0).round() / 100.0,
    }
}

/// The wall-clock time of `until`, a deadline of the backend clock.
fn ejection_end(until: u64) -> SystemTime {
    let left = until.saturating_sub(clock::now_ms());
    SystemTime::now() + std::time::Duration::from_millis(left)
}

/// `2026-01-02T03:04:05.678Z`.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_323_045_678);
        assert_eq!(timestamp(time), "2026-01-02T03:04:05.678Z");
    }

    #[test]
    fn the_operators_state_wins_the_name() {
        assert_eq!(state_word(AdminState::Enabled, true), "up");
        assert_eq!(state_word(AdminState::Enabled, false), "down");
        assert_eq!(state_word(AdminState::Disabled, true), "disabled");
        assert_eq!(state_word(AdminState::Draining, false), "draining");
    }

    #[test]
    fn a_check_in_milliseconds() {
        let at = SystemTime::UNIX_EPOCH;
        let made = Check {
            at,
            ok: false,
            status: None,
            error: Some("connection refused".into()),
            took: Duration::from_micros(312),
        };
        let json = serde_json::to_value(check(&made)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"at": "1970-01-01T00:00:00.000Z", "ok": false, "status": null,
                "error": "connection refused", "ms": 0.31})
        );
    }
}
