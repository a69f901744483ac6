//! `POST /api/backends/{id}/disable|enable|drain`: an operator steers one backend at run time.
//!
//! - `disable`: no new request goes to it from now on (the next pick skips it); requests in flight finish.
//!   Answers at once: `{"id":2,"state":"disabled","was":"enabled",…}`.
//! - `enable`: it takes requests again when healthy (this also ends a drain).
//! - `drain`: no new request goes to it from now on, and the answer waits until its requests in flight are done:
//!   `{"id":2,"in_flight":0,"drained":true,…}`, or after `?timeout=` (a duration as the config writes them; 30s
//!   by default) with `"drained":false` and what is still in flight. Afterwards the backend *stays* draining (no
//!   traffic) until `enable`, as HAProxy's `drain` stays until `ready`: a drain is what comes before maintenance,
//!   and a backend that came back by itself in the middle of it would defeat it. If it is enabled or disabled while
//!   the drain waits, the drain answers at once with `"drained":false` and the new `state`.
//!
//! Health checks go on whatever the operator's state, so `/api/status` shows health beside it. The operator's state
//! lives in the backend's live state, which a reload carries over when the backend keeps its id and address: a
//! disabled backend stays disabled across a reload.
//!
//! Each change is one audit log line at info, `admin: backend 2 127.0.0.1:8002 disabled (was enabled)`; a drain's
//! line comes when it ends, with how long it took. The drain's wait runs as a task of its own, so that its line is
//! written even when the one who asked hangs up first.
//!
//! A backend given by a host name with `resolve = "all"` is one member per address, all with its id: an action is
//! for every member (and for the members its name comes to have later: a new member takes the operator's state of
//! the others); the answer, and a drain's wait, are the first member's.
//!
//! An unknown id is 404, and so is an id that is not a number (no backend can have it: the path names nothing).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use super::answer::{self, Answer};
use super::Plane;
use crate::backend::{AdminState, Backend};
use crate::config::duration::parse_duration;

pub const ACTIONS: [&str; 3] = ["disable", "enable", "drain"];

/// How long a drain waits for the requests in flight by default.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a drain looks at the count in flight.
const POLL: Duration = Duration::from_millis(10);

pub async fn act(plane: &Plane, id: &str, action: &str, query: Option<&str>) -> Answer {
    let snapshot = plane.routing.load_full();
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| snapshot.backends.iter().find(|b| b.id == id));
    let Some(backend) = found else {
        return answer::error(StatusCode::NOT_FOUND, &format!("no backend with id {id}"));
    };
    // A `resolve = "all"` backend is one member per address, all with its id: an action is for every one of them
    // (the answer, and a drain's wait, are the first member's).
    let others = snapshot
        .backends
        .iter()
        .filter(|b| b.id == backend.id)
        .skip(1);
    let also = |admin: AdminState| {
        for other in others {
            other.state.set_admin(admin);
        }
    };
    match action {
        "disable" => {
            also(AdminState::Disabled);
            set(backend, AdminState::Disabled)
        }
        "enable" => {
            also(AdminState::Enabled);
            set(backend, AdminState::Enabled)
        }
        _ => {
            let timeout = match timeout(query) {
                Ok(timeout) => timeout,
                Err(error) => return answer::error(StatusCode::BAD_REQUEST, &error),
            };
            also(AdminState::Draining);
            drain(backend.clone(), timeout).await
        }
    }
}

fn set(backend: &Backend, admin: AdminState) -> Answer {
    let was = backend.state.set_admin(admin);
    tracing::info!("admin: {backend} {} (was {})", admin.as_str(), was.as_str());
    answer::json(
        StatusCode::OK,
        &json!({
            "id": backend.id,
            "address": backend.authority,
            "state": super::status::state_word(admin, backend.is_healthy()),
            "admin": admin.as_str(),
            "was": was.as_str(),
            "in_flight": backend.state.in_flight.load(Ordering::Relaxed),
        }),
    )
}

/// The `timeout` of a query string (`timeout=10s`), or the default.
fn timeout(query: Option<&str>) -> Result<Duration, String> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "timeout");
    match given {
        None => Ok(DRAIN_TIMEOUT),
        Some((_, value)) => parse_duration(value).map_err(|error| format!("timeout: {error}")),
    }
}

async fn drain(backend: Arc<Backend>, timeout: Duration) -> Answer {
    let was = backend.state.set_admin(AdminState::Draining);
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let end = wait(&backend, started + timeout).await;
        let in_flight = backend.state.in_flight.load(Ordering::Relaxed);
        let took = started.elapsed();
        let (was, waited) = (was.as_str(), humantime::format_duration(round(took)));
        match end {
            End::Drained => {
                tracing::info!("admin: {backend} drained in {waited} (was {was})")
            }
            End::TimedOut => tracing::info!(
                "admin: {backend} draining (was {was}): {in_flight} in flight still after {waited}"
            ),
            End::Changed(now) => tracing::info!(
                "admin: {backend} drain ended after {waited} ({} meanwhile, {in_flight} in flight)",
                now.as_str()
            ),
        }
        let state = backend.state.admin();
        json!({
            "id": backend.id,
            "address": backend.authority,
            "in_flight": in_flight,
            "drained": end == End::Drained,
            "state": super::status::state_word(state, backend.is_healthy()),
            "was": was,
            "waited_ms": took.as_millis() as u64,
        })
    });
    match waiting.await {
        Ok(body) => answer::json(StatusCode::OK, &body),
        Err(error) => answer::error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Drained,
    TimedOut,
    /// Someone enabled or disabled it meanwhile.
    Changed(AdminState),
}

/// Waits until `backend` has no request in flight, or `deadline`, or its admin state is no longer draining.
async fn wait(backend: &Backend, deadline: Instant) -> End {
    loop {
        // Looked at after a pause, not at once: a worker that picked the backend just before the drain began
        // counts its request a moment later (between the pick and the count there is no await, but there are other
        // threads), and must be waited for.
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        let admin = backend.state.admin();
        if admin != AdminState::Draining {
            return End::Changed(admin);
        }
        if backend.state.in_flight.load(Ordering::Relaxed) == 0 {
            return End::Drained;
        }
        if Instant::now() >= deadline {
            return End::TimedOut;
        }
    }
}

/// To the millisecond, for a log line.
fn round(took: Duration) -> Duration {
    Duration::from_millis(took.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_comes_from_the_query() {
        assert_eq!(timeout(None), Ok(DRAIN_TIMEOUT));
        assert_eq!(timeout(Some("x=1")), Ok(DRAIN_TIMEOUT));
        assert_eq!(
            timeout(Some("x=1&timeout=500ms")),
            Ok(Duration::from_millis(500))
        );
        assert!(timeout(Some("timeout=soon"))
            .unwrap_err()
            .starts_with("timeout: "));
    }
}
