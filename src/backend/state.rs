//! The live state of one backend, shared by the health checker, the operator (the admin plane) and every worker:
//! what the data plane reads or counts is an atomic, so it does so without a lock.
//!
//! - `healthy`: written by the health checker after each check (it changes on a flip), read per request.
//! - `admin`: what the operator wants ([`AdminState`]); only an enabled backend gets new requests.
//! - `history`: the last checks, since when the backend is up or down and why (`history.rs`); behind a mutex,
//!   written once per check and read by the admin plane, never by the data plane.
//! - `in_flight`: requests being attempted on it right now, counted by an RAII guard ([`InFlight`]) that a request
//!   takes when the balancer picks the backend and drops when the attempt ends, however it ends: an answer, a
//!   failure, or the request's future being dropped (the client went away, the server stopped). A count that only
//!   goes up on one path and down on another would leak; a guard cannot. Least-request balancing reads it, and so
//!   does a drain (a draining backend is done when it reaches 0).
//! - `outlier`: what real traffic says (`outlier.rs`): runs of failures, the ejection deadline, ejections counted.
//!   A run of connect failures takes the backend out until its next passed health check
//!   ([`BackendState::take_out_until_checked`]): it is marked down, and [`BackendState::checked`] keeps it down
//!   until a check that started after that passes (a failed check does not bring it back, even one the rise/fall
//!   machine would not yet flip down on).
//! - `up_since_ms`: when it last came up (appeared, a health flip to up, the end of an ejection), for slow start
//!   ([`BackendState::ramped`]).
//! - counters: answers by status class and the time to the response head, per worker (`stats.rs`); health checks
//!   passed and failed; connections that failed. They live here, next to what they count, so that metrics are a view
//!   of this rather than a second bookkeeping.
//!
//! Nothing here is ordered with anything else: every access is `Relaxed` (a balancer's view of another thread's
//! count may be a moment old, which is all an estimate needs).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::clock;
use super::history::{Check, History};
use super::outlier::Outlier;
use super::stats::BackendStats;

/// `up_since_ms` once a slow start is over: the weight is full without reading the clock.
const RAMPED: u64 = u64::MAX;

/// A ramp starts at this share of the full weight, in thousandths (10%).
const RAMP_FLOOR: u64 = 100;

/// What the operator wants of a backend. Health is the checker's verdict; this is a person's, and both must agree
/// before a backend gets new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum AdminState {
    /// Takes requests when healthy.
    #[default]
    Enabled = 0,
    /// Takes no new requests; requests in flight finish.
    Disabled = 1,
    /// Takes no new requests while the ones in flight finish, on its way out (removed, or about to be disabled).
    Draining = 2,
}

impl AdminState {
    /// `enabled`, `disabled`, `draining`: the word the admin plane and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Disabled => "disabled",
            AdminState::Draining => "draining",
        }
    }

    fn from_u8(value: u8) -> AdminState {
        match value {
            1 => AdminState::Disabled,
            2 => AdminState::Draining,
            _ => AdminState::Enabled,
        }
    }
}

/// Live state of one backend, shared by the health checker and every worker.
#[derive(Debug)]
pub struct BackendState {
    pub healthy: AtomicBool,
    /// An [`AdminState`]; read and written through [`BackendState::admin`] and [`BackendState::set_admin`].
    admin: AtomicU8,
    /// Requests being attempted on this backend now; see [`InFlight`].
    pub in_flight: AtomicUsize,
    /// Answers from this backend and their timing, counted per worker.
    pub stats: BackendStats,
    /// Health checks that passed and failed (written by its checker only).
    pub checks_passed: AtomicU64,
    pub checks_failed: AtomicU64,
    /// The last checks, and since when and why it is up or down.
    pub history: History,
    /// Connection attempts that failed (refused, unreachable, timed out).
    pub connect_failures: AtomicU64,
    /// A reload removed this backend: requests still on it finish, and its connections are not kept for others.
    pub retired: AtomicBool,
    /// Passive health: runs of failures, ejection.
    pub outlier: Outlier,
    /// When a run of connect failures took it out until its next passed check, in milliseconds since the UNIX
    /// epoch (the clock health checks are stamped with); 0: it is not out for that.
    taken_out_at_ms: AtomicU64,
    /// When it last came up, in [`clock`] milliseconds; [`RAMPED`] once its slow start is over.
    up_since_ms: AtomicU64,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState::new(1)
    }
}

impl BackendState {
    /// A fresh state, with counters for `workers` workers.
    pub fn new(workers: usize) -> Self {
        BackendState {
            // Until the first check says otherwise: a new backend is checked before it gets traffic.
            healthy: AtomicBool::new(true),
            admin: AtomicU8::new(AdminState::Enabled as u8),
            in_flight: AtomicUsize::new(0),
            stats: BackendStats::new(workers),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            history: History::default(),
            connect_failures: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            outlier: Outlier::default(),
            taken_out_at_ms: AtomicU64::new(0),
            // Every backend is new at the start: they ramp together, which leaves their shares as they are.
            up_since_ms: AtomicU64::new(clock::now_ms()),
        }
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Sets what the operator wants; answers what it was. Takes effect for the next request picked.
    pub fn set_admin(&self, admin: AdminState) -> AdminState {
        let was = AdminState::from_u8(self.admin.swap(admin as u8, Ordering::Relaxed));
        if was != admin {
            self.history.admin_changed();
        }
        was
    }

    /// Records one health check, after which the backend is `up` (the rise/fall verdict): its health for the data
    /// plane, the counters and the history.
    pub fn checked(&self, check: Check, up: bool) {
        let up = up && !self.kept_out_by(&check);
        let was = self.healthy.swap(up, Ordering::Relaxed);
        if up && !was {
            self.came_up_at(clock::now_ms());
        }
        let counter = match check.ok {
            true => &self.checks_passed,
            false => &self.checks_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.history.record(check, up);
    }

    /// Takes the backend out until its next passed health check, for `reason` (`3 consecutive connect failures`):
    /// answers whether it was in (then the history says why it is out).
    ///
    /// A check already under way when this happens does not count: it may have connected just before.
    pub fn take_out_until_checked(&self, reason: &str) -> bool {
        self.taken_out_at_ms
            .store(unix_ms(SystemTime::now()).max(1), Ordering::Relaxed);
        let was = self.healthy.swap(false, Ordering::Relaxed);
        if was {
            self.history.taken_out(reason);
        }
        was
    }

    /// Whether `check` leaves the backend out, where a run of connect failures put it: unless it passed, and
    /// started after that.
    fn kept_out_by(&self, check: &Check) -> bool {
        let since = self.taken_out_at_ms.load(Ordering::Relaxed);
        if since == 0 {
            return false;
        }
        if check.ok && unix_ms(check.at) >= since {
            // Lost only to a newer take-out, which stands.
            let _ = self.taken_out_at_ms.compare_exchange(
                since,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return false;
        }
        true
    }

    /// Notes that the backend came up at `now` ([`clock`] milliseconds): its slow start begins.
    pub fn came_up_at(&self, now: u64) {
        self.up_since_ms.store(now, Ordering::Relaxed);
    }

    /// `full` (a weight at full scale) as it is at `now` ([`clock`] milliseconds) for a backend whose weight ramps
    /// linearly from 10% to full over `window` after it came up.
    pub fn ramped(&self, full: u32, window: Duration, now: u64) -> u32 {
        let since = self.up_since_ms.load(Ordering::Relaxed);
        if since == RAMPED {
            return full;
        }
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let elapsed = now.saturating_sub(since);
        if elapsed >= window {
            // Lost only to a backend that came up again meanwhile, which ramps anew.
            let _ = self.up_since_ms.compare_exchange(
                since,
                RAMPED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return full;
        }
        let thousandths = RAMP_FLOOR + (1000 - RAMP_FLOOR) * elapsed / window;
        (u64::from(full) * thousandths / 1000) as u32
    }

    /// Counts one request in flight on this backend until the guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// One request in flight on a backend, from the moment it was picked until its attempt ends; dropping it (on every
/// path, cancellation included) takes the request off the count.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight<'a>(&'a BackendState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    fn in_flight(state: &BackendState) -> usize {
        state.in_flight.load(Ordering::Relaxed)
    }

    #[test]
    fn a_guard_counts_while_it_lives() {
        let state = BackendState::default();
        let first = state.enter();
        let second = state.enter();
        assert_eq!(in_flight(&state), 2);
        drop(first);
        assert_eq!(in_flight(&state), 1);
        drop(second);
        assert_eq!(in_flight(&state), 0);
    }

    #[test]
    fn a_cancelled_request_is_not_counted_any_more() {
        let state = BackendState::default();
        let (_hold, never) = tokio::sync::oneshot::channel::<()>();
        let request = async {
            let _in_flight = state.enter();
            let _ = never.await;
        };
        // Polled once (the guard is taken), then dropped while it waits: a client that went away.
        let mut request = Box::pin(request);
        let mut context = Context::from_waker(Waker::noop());
        assert!(request.as_mut().poll(&mut context).is_pending());
        assert_eq!(in_flight(&state), 1);
        drop(request);
        assert_eq!(in_flight(&state), 0);
    }

    #[test]
    fn a_weight_ramps_from_a_tenth_to_full_over_the_window() {
        let state = BackendState::default();
        let window = Duration::from_secs(10);
        state.came_up_at(5_000);
        let at = |seconds: u64| state.ramped(3_000, window, 5_000 + seconds * 1000);
        assert_eq!(at(0), 300);
        assert_eq!(at(5), 1_650);
        assert_eq!(at(9), 2_730);
        assert_eq!(at(10), 3_000);
        assert_eq!(
            state.ramped(3_000, window, 0),
            3_000,
            "over, whatever the clock says after"
        );
        state.came_up_at(100_000);
        assert_eq!(
            state.ramped(1_000, window, 100_000),
            100,
            "again after coming up"
        );
        assert_eq!(state.ramped(0, window, 100_000), 0, "weight 0 stays 0");
    }

    #[test]
    fn a_flip_to_up_starts_the_ramp() {
        use super::super::history::Check;
        let state = BackendState::default();
        let check = |ok| Check {
            at: SystemTime::now(),
            ok,
            status: None,
            error: None,
            took: Duration::ZERO,
        };
        let window = Duration::from_secs(60);
        let far = clock::now_ms() + 120_000;
        assert_eq!(state.ramped(1_000, window, far), 1_000);
        state.checked(check(false), false);
        state.checked(check(true), true);
        assert!(state.ramped(1_000, window, clock::now_ms()) < 1_000);
    }

    #[test]
    fn admin_state_round_trips_and_defaults_to_enabled() {
        let state = BackendState::default();
        assert_eq!(state.admin(), AdminState::Enabled);
        for admin in [
            AdminState::Disabled,
            AdminState::Draining,
            AdminState::Enabled,
        ] {
            state.set_admin(admin);
            assert_eq!(state.admin(), admin);
        }
    }
}
