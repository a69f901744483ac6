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
//! - `latency_ns`: the slot for a latency estimate (an EWMA of response times, in nanoseconds; 0 until measured).
//!   Latency-aware balancing will write it from the responses it sees; nothing writes it yet, so the request path
//!   pays nothing for it.
//! - counters: answers by status class and the time to the response head, per worker (`stats.rs`); health checks
//!   passed and failed; connections that failed. They live here, next to what they count, so that metrics are a view
//!   of this rather than a second bookkeeping.
//!
//! Nothing here is ordered with anything else: every access is `Relaxed` (a balancer's view of another thread's
//! count may be a moment old, which is all an estimate needs).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use super::history::{Check, History};
use super::stats::BackendStats;

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
    /// Estimated response latency in nanoseconds (an EWMA), 0 while unknown: filled by latency-aware balancing.
    #[expect(
        dead_code,
        reason = "written and read by latency-aware balancing (a later issue)"
    )]
    pub latency_ns: AtomicU64,
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
            latency_ns: AtomicU64::new(0),
            stats: BackendStats::new(workers),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            history: History::default(),
            connect_failures: AtomicU64::new(0),
            retired: AtomicBool::new(false),
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
        self.healthy.store(up, Ordering::Relaxed);
        let counter = match check.ok {
            true => &self.checks_passed,
            false => &self.checks_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.history.record(check, up);
    }

    /// Counts one request in flight on this backend until the guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
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
