//! What a backend's health checks found lately, and why it is in the state it is in: the answer to "why is it
//! down?", kept for the admin plane (`/api/status`, the dashboard, `lb status`).
//!
//! - `since`: when the current health state began (the first check counts: a backend down at its first check is
//!   down since then); likewise `admin_since` for the operator's state.
//! - `reason`: while down, `3 checks failed, last: connection refused` (consecutive failures so far and the latest
//!   error, so it says what is wrong *now*), or `taken out: 3 consecutive connect failures` when requests took it
//!   out before its checks did (until the next check says more); none while up.
//! - the last [`KEPT`] checks, newest first.
//!
//! It lives in the backend's live state, so a reload that keeps the backend keeps its history. Written by the
//! health checker once per check and read by the admin plane: a mutex is fine here, nothing on the data path
//! touches it (the data plane reads the `healthy` atomic beside it).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How many checks are kept.
pub const KEPT: usize = 10;

/// One health check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// When it started.
    pub at: SystemTime,
    /// Whether it passed.
    pub ok: bool,
    /// The status the backend answered, if it answered.
    pub status: Option<u16>,
    /// Why it failed (`connection refused`, `status 500`, `timed out after 2s`); none when it passed.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// A copy of a backend's history, as of now.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthView {
    /// When the current health state (up or down) began.
    pub since: SystemTime,
    /// Why it is down; none when up.
    pub reason: Option<String>,
    /// The last checks, newest first.
    pub checks: Vec<Check>,
    /// When the operator's state (enabled, disabled, draining) last changed (or the backend appeared).
    pub admin_since: SystemTime,
}

#[derive(Debug)]
struct Inner {
    /// The health state as of the last check (`None`: not checked yet).
    up: Option<bool>,
    since: SystemTime,
    reason: Option<String>,
    /// Failed checks in a row, up to the latest.
    failed_in_a_row: u32,
    checks: VecDeque<Check>,
    admin_since: SystemTime,
}

/// A backend's recent health checks and state changes.
#[derive(Debug)]
pub struct History(Mutex<Inner>);

impl Default for History {
    fn default() -> Self {
        let now = SystemTime::now();
        History(Mutex::new(Inner {
            up: None,
            since: now,
            reason: None,
            failed_in_a_row: 0,
            checks: VecDeque::with_capacity(KEPT),
            admin_since: now,
        }))
    }
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; if something did, the data is still a valid history.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `check`, after which the backend's health is `up` (the rise/fall machine's verdict, which may differ
    /// from the check's own: one failure does not take an up backend down).
    pub fn record(&self, check: Check, up: bool) {
        let mut inner = self.lock();
        if inner.up != Some(up) {
            inner.up = Some(up);
            inner.since = check.at;
        }
        match (check.ok, &check.error) {
            (true, _) => inner.failed_in_a_row = 0,
            (false, error) => {
                inner.failed_in_a_row += 1;
                if !up {
                    let failed = inner.failed_in_a_row;
                    let checks = if failed == 1 { "check" } else { "checks" };
                    let last = error.as_deref().unwrap_or("unknown");
                    inner.reason = Some(format!("{failed} {checks} failed, last: {last}"));
                }
            }
        }
        if up {
            inner.reason = None;
        }
        if inner.checks.len() == KEPT {
            inner.checks.pop_back();
        }
        inner.checks.push_front(check);
    }

    /// Notes that requests took the backend out now, for `reason`, until its next passed check.
    pub fn taken_out(&self, reason: &str) {
        let mut inner = self.lock();
        inner.up = Some(false);
        inner.since = SystemTime::now();
        inner.reason = Some(format!("taken out: {reason}"));
    }

    /// Notes that the operator's state changed now.
    pub fn admin_changed(&self) {
        self.lock().admin_since = SystemTime::now();
    }

    pub fn view(&self) -> HealthView {
        let inner = self.lock();
        HealthView {
            since: inner.since,
            reason: inner.reason.clone(),
            checks: inner.checks.iter().cloned().collect(),
            admin_since: inner.admin_since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(second)
    }

    fn pass(second: u64) -> Check {
        Check {
            at: at(second),
            ok: true,
            status: Some(200),
            error: None,
            took: Duration::from_micros(300),
        }
    }

    fn fail(second: u64, error: &str) -> Check {
        Check {
            at: at(second),
            ok: false,
            status: None,
            error: Some(error.into()),
            took: Duration::from_micros(300),
        }
    }

    #[test]
    fn the_first_check_starts_the_state_and_a_flip_restarts_it() {
        let history = History::default();
        history.record(pass(1), true);
        assert_eq!(history.view().since, at(1));
        history.record(pass(2), true);
        history.record(fail(3, "connection refused"), true);
        let view = history.view();
        assert_eq!(view.since, at(1), "up since the first check");
        assert_eq!(view.reason, None, "still up: no reason");

        history.record(fail(4, "connection refused"), true);
        history.record(fail(5, "status 500"), false);
        let view = history.view();
        assert_eq!(view.since, at(5));
        assert_eq!(
            view.reason.as_deref(),
            Some("3 checks failed, last: status 500")
        );

        history.record(fail(6, "timed out after 2s"), false);
        assert_eq!(
            history.view().reason.as_deref(),
            Some("4 checks failed, last: timed out after 2s"),
            "the reason follows what is wrong now"
        );
        history.record(pass(7), false);
        assert_eq!(history.view().since, at(5), "one pass does not bring it up");
        history.record(pass(8), true);
        let view = history.view();
        assert_eq!((view.since, view.reason), (at(8), None));
    }

    #[test]
    fn down_at_the_first_check() {
        let history = History::default();
        history.record(fail(1, "connection refused"), false);
        let view = history.view();
        assert_eq!(view.since, at(1));
        assert_eq!(
            view.reason.as_deref(),
            Some("1 check failed, last: connection refused")
        );
    }

    #[test]
    fn keeps_the_last_ten_newest_first() {
        let history = History::default();
        for second in 0..25 {
            history.record(pass(second), true);
        }
        let checks = history.view().checks;
        assert_eq!(checks.len(), KEPT);
        let seconds: Vec<SystemTime> = checks.iter().map(|c| c.at).collect();
        let expected: Vec<SystemTime> = (15..25).rev().map(at).collect();
        assert_eq!(seconds, expected);
    }
}
