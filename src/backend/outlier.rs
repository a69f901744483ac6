//! Passive health: what real traffic says about a backend, between (and beside) its health checks.
//!
//! Every path that tries a backend (the HTTP/1 fast path, the generic path, TCP mode) reports once per attempt what
//! it came to ([`observe`]). Two rules read those reports:
//!
//! - **Connect failures, always** (with or without `[passive_health]`): [`CONNECT_FAILURES_TO_EXCLUDE`] failed
//!   connects in a row take the backend out until its next *passed* health check (it is marked down, with that
//!   reason in its history; see `BackendState::take_out_until_checked`). A backend whose connects time out would
//!   otherwise cost every request sent to it the whole connect timeout until its checks noticed (`fall` ×
//!   `interval`). Any connection made (an answer, a failure after connecting, a TCP-mode connect) ends the run.
//!   Nothing caps how many backends this takes out: a backend that cannot be connected to serves nobody.
//! - **Outlier ejection, with `[passive_health]`**: `consecutive_failures` 5xx answers or failures (connect, reset,
//!   timeout) in a row eject the backend for `base_ejection` × (the ejections it has not lived down + 1), at most
//!   [`MAX_EJECTION`]. Any answer below 500 ends the run. An ejection is a deadline apart from health: a passed
//!   health check does not shorten it, and the backend comes back when it is over (noticed at the next eligibility
//!   check: [`Backend::is_eligible`], the status page), logged once, ramping up again if its pool has a slow start.
//!   No ejection may leave more than `max_ejected_percent` of the pool ejected at once (counted when it would
//!   happen; a spared backend's run goes on, so it is ejected at its next failure once there is room). Ejections
//!   are decided one at a time (a process-wide lock, taken only when a run reaches its threshold), so two workers
//!   cannot both take the last place.
//!
//! **The multiplier decays** (as Envoy's does while a host stays healthy): each `base_ejection` a backend spends
//! back in service since its last ejection ended forgives one earlier ejection. A backend that fails again right
//! after coming back is ejected for longer each time (30 s, 60 s, 90 s… up to 300 s); one that served well for a
//! while starts again from `base_ejection`.
//!
//! **Cost on the hot path**: an answer below 500 is one relaxed load of each run counter (stored to only when it
//! was not zero already), and the ejection deadline is one relaxed load in `is_eligible` (0: not ejected; the clock
//! is read only when it is set). Failures pay an atomic add, and the threshold a lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{clock, Backend};
use crate::config::{PassiveHealth, CONNECT_FAILURES_TO_EXCLUDE, MAX_EJECTION};
use crate::log_limit::{self, Subject};

/// What one attempt on a backend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// It answered with this status, this long after the attempt started.
    Answered { status: u16, took: Duration },
    /// The connection could not be made (refused, unreachable, timed out).
    ConnectFailed,
    /// It was connected but failed before a whole answer: reset, closed, timed out.
    Failed,
    /// It was connected, and what follows is not an answer lb can judge (TCP mode: a tunnel of bytes).
    Connected,
}

/// A run's length is in the low bits, and which kinds of failure it holds in the high ones (for the log line).
const COUNT: u32 = 0x00ff_ffff;
const FIVE_XX: u32 = 1 << 24;
const CONNECT: u32 = 1 << 25;
const OTHER: u32 = 1 << 26;

/// One backend's passive-health bookkeeping (a part of its `BackendState`, so a reload that keeps the backend keeps
/// its runs, its ejection and its count).
#[derive(Debug, Default)]
pub struct Outlier {
    /// The current run of 5xx answers and failures (see [`COUNT`]); counted only with `[passive_health]`.
    run: AtomicU32,
    /// Failed connects in a row.
    connect_run: AtomicU32,
    /// When the current ejection ends, in [`clock`] milliseconds; 0: not ejected.
    ejected_until_ms: AtomicU64,
    /// Times ejected since the backend appeared.
    ejections: AtomicU64,
    streak: Mutex<Streak>,
}

/// What the next ejection's length depends on.
#[derive(Debug, Default)]
struct Streak {
    /// Ejections not lived down yet.
    unforgiven: u32,
    /// When the last ejection ended (or will), in [`clock`] milliseconds.
    last_end_ms: u64,
}

impl Streak {
    /// The length of an ejection starting `now`, recorded as the latest.
    fn next(&mut self, base: Duration, now: u64) -> Duration {
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
        let max_ms = MAX_EJECTION.as_millis() as u64;
        let forgiven = now.saturating_sub(self.last_end_ms) / base_ms;
        let before = u64::from(self.unforgiven).saturating_sub(forgiven);
        let ms = base_ms.saturating_mul(before + 1).min(max_ms);
        self.unforgiven = u32::try_from(before + 1).unwrap_or(u32::MAX);
        self.last_end_ms = now.saturating_add(ms);
        Duration::from_millis(ms)
    }
}

impl Outlier {
    /// Times the backend was ejected since it appeared.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// When the current ejection ends, in [`clock`] milliseconds; 0 when not ejected (an ejection that is over may
    /// still show until it is noticed: see [`Backend::is_eligible`]).
    #[inline]
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed)
    }

    fn is_ejected_at(&self, now: u64) -> bool {
        now < self.ejected_until_ms()
    }

    /// A connection was made: the run of connect failures is over.
    #[inline]
    fn connected(&self) {
        clear(&self.connect_run);
    }

    fn streak(&self) -> MutexGuard<'_, Streak> {
        self.streak.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Zeroes a run counter, writing only when it is not zero already (a success must not write a shared line).
#[inline]
fn clear(run: &AtomicU32) {
    if run.load(Ordering::Relaxed) != 0 {
        run.store(0, Ordering::Relaxed);
    }
}

/// Records what an attempt on `backend` (a member of `pool`) came to: with `passive` set, a run of failures ejects
/// it; with or without, a run of connect failures takes it out until its next passed health check.
#[inline]
pub fn observe(
    backend: &Backend,
    observed: Observed,
    passive: Option<&PassiveHealth>,
    pool: &[Arc<Backend>],
) {
    observe_at(backend, observed, passive, pool, &clock::now_ms);
}

/// [`observe`] on the clock `now` (read only when a run reaches its threshold).
fn observe_at(
    backend: &Backend,
    observed: Observed,
    passive: Option<&PassiveHealth>,
    pool: &[Arc<Backend>],
    now: &dyn Fn() -> u64,
) {
    let outlier = &backend.state.outlier;
    let kind = match observed {
        Observed::Answered { status, .. } if status < 500 => {
            outlier.connected();
            if passive.is_some() {
                clear(&outlier.run);
            }
            return;
        }
        Observed::Connected => {
            outlier.connected();
            if passive.is_some() {
                clear(&outlier.run);
            }
            return;
        }
        Observed::Answered { .. } => {
            outlier.connected();
            FIVE_XX
        }
        Observed::Failed => {
            outlier.connected();
            OTHER
        }
        Observed::ConnectFailed => {
            connect_failed(backend, pool);
            CONNECT
        }
    };
    let Some(passive) = passive else { return };
    let counted = |run: u32| Some((run & !COUNT) | kind | ((run & COUNT) + 1).min(COUNT));
    let Ok(before) = outlier
        .run
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, counted)
    else {
        return; // cannot happen: the closure always answers
    };
    let run = counted(before).unwrap_or(before);
    if run & COUNT < passive.consecutive_failures {
        return;
    }
    let (count, what) = (run & COUNT, describe(run));
    match eject(backend, passive, pool, now()) {
        Ejection::Ejected(ejected_for) => {
            let ejected_for = humantime::format_duration(ejected_for);
            tracing::warn!("{backend} ejected for {ejected_for}: {count} consecutive {what}");
        }
        Ejection::Already => {}
        Ejection::Spared { ejected } => {
            let key = log_limit::Key {
                subject: Subject::Backend(backend.id),
                what: "ejections spared",
                reason: "max_ejected_percent reached",
            };
            if log_limit::first(key) {
                let (len, max) = (pool.len(), passive.max_ejected_percent);
                tracing::warn!("{backend} not ejected after {count} consecutive {what}: {ejected} of the {len} backends of its pool are ejected already (max_ejected_percent = {max})");
            }
        }
    }
}

/// What a run's failures were, for the log line: `5xx`, `connect failures`, or `failures` when mixed or other.
fn describe(run: u32) -> &'static str {
    match run & !COUNT {
        FIVE_XX => "5xx",
        CONNECT => "connect failures",
        _ => "failures",
    }
}

/// Counts a failed connect, and takes the backend out at the end of a run long enough.
fn connect_failed(backend: &Backend, pool: &[Arc<Backend>]) {
    let outlier = &backend.state.outlier;
    let run = outlier.connect_run.fetch_add(1, Ordering::Relaxed) + 1;
    if run < CONNECT_FAILURES_TO_EXCLUDE {
        return;
    }
    outlier.connect_run.store(0, Ordering::Relaxed);
    // Never the last one the pool could send to (Envoy's panic threshold in small): taken out, a backend that is
    // back a moment later would wait for its next check, and its clients would get 503 instead of its answers.
    let others = pool
        .iter()
        .any(|other| !std::ptr::eq(&**other, backend) && other.is_eligible());
    if !others {
        tracing::debug!("{backend}: {run} consecutive connect failures, but the last eligible backend of its pool: kept in");
        return;
    }
    let reason = format!("{run} consecutive connect failures");
    if backend.state.take_out_until_checked(&reason) {
        tracing::warn!("{backend} taken out until its next passed health check: {reason}");
    }
}

/// What an attempt to eject came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ejection {
    Ejected(Duration),
    /// It is ejected already (a report from a request that was on its way when it was).
    Already,
    /// Ejecting it would leave more than `max_ejected_percent` of the pool ejected; `ejected` are.
    Spared {
        ejected: usize,
    },
}

/// Ejects `backend` at `now` unless it is already or the pool's cap forbids it.
fn eject(backend: &Backend, passive: &PassiveHealth, pool: &[Arc<Backend>], now: u64) -> Ejection {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _deciding = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let outlier = &backend.state.outlier;
    if outlier.is_ejected_at(now) {
        return Ejection::Already;
    }
    let ejected = pool
        .iter()
        .filter(|b| b.state.outlier.is_ejected_at(now))
        .count();
    if (ejected + 1) * 100 > usize::from(passive.max_ejected_percent) * pool.len() {
        return Ejection::Spared { ejected };
    }
    let ejected_for = outlier.streak().next(passive.base_ejection, now);
    let until = now.saturating_add(ejected_for.as_millis() as u64).max(1);
    outlier.ejected_until_ms.store(until, Ordering::Relaxed);
    outlier.ejections.fetch_add(1, Ordering::Relaxed);
    outlier.run.store(0, Ordering::Relaxed);
    Ejection::Ejected(ejected_for)
}

/// Whether `backend`, ejected until `until` (not 0), still is at `now`; when the ejection is over, ends it (once,
/// whoever notices first): logged, and its slow start begins.
#[cold]
pub(super) fn still_ejected(backend: &Backend, until: u64, now: u64) -> bool {
    if now < until {
        return true;
    }
    let ended = backend.state.outlier.ejected_until_ms.compare_exchange(
        until,
        0,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    if ended.is_ok() {
        backend.state.came_up_at(now);
        tracing::info!("{backend} back after ejection");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::history::Check;
    use std::cell::Cell;
    use std::time::SystemTime;

    fn check(ok: bool, at: SystemTime) -> Check {
        Check {
            at,
            ok,
            status: ok.then_some(200),
            error: (!ok).then(|| "connection refused".to_owned()),
            took: Duration::from_micros(300),
        }
    }

    fn pool(size: u64) -> Vec<Arc<Backend>> {
        crate::balance::testing::equal_backends(size as usize)
    }

    const S: u64 = 1000;

    fn passive() -> PassiveHealth {
        PassiveHealth {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        }
    }

    fn answered(status: u16) -> Observed {
        Observed::Answered {
            status,
            took: Duration::from_millis(1),
        }
    }

    /// Reports `observed` `times` times on `pool[index]` at `now` seconds.
    fn report(pool: &[Arc<Backend>], index: usize, observed: Observed, times: u32, now: u64) {
        let passive = passive();
        for _ in 0..times {
            observe_at(&pool[index], observed, Some(&passive), pool, &|| now * S);
        }
    }

    fn ejected(backend: &Backend, now: u64) -> bool {
        let until = backend.state.outlier.ejected_until_ms();
        until != 0 && still_ejected(backend, until, now * S)
    }

    #[test]
    fn five_5xx_in_a_row_eject_and_a_success_resets_the_run() {
        let pool = pool(4);
        report(&pool, 0, answered(500), 4, 0);
        report(&pool, 0, answered(404), 1, 0);
        report(&pool, 0, answered(503), 4, 0);
        assert!(!ejected(&pool[0], 0), "a 404 broke the run");
        report(&pool, 0, answered(502), 1, 0);
        assert!(ejected(&pool[0], 0));
        assert_eq!(pool[0].state.outlier.ejections(), 1);
        assert!(!pool[0].is_eligible());
        assert!(pool[0].is_healthy(), "ejection is not health");
    }

    #[test]
    fn failures_of_every_kind_count_and_are_named() {
        assert_eq!(describe(5 | FIVE_XX), "5xx");
        assert_eq!(describe(3 | CONNECT), "connect failures");
        assert_eq!(describe(5 | CONNECT | FIVE_XX), "failures");
        assert_eq!(describe(5 | OTHER), "failures");

        let pool = pool(2);
        report(&pool, 1, Observed::Failed, 3, 0);
        report(&pool, 1, answered(500), 2, 0);
        assert!(ejected(&pool[1], 0));
    }

    #[test]
    fn an_ejection_ends_on_time_and_a_passed_check_does_not_shorten_it() {
        let pool = pool(2);
        report(&pool, 0, answered(500), 5, 100);
        pool[0].state.checked(check(true, SystemTime::now()), true);
        assert!(ejected(&pool[0], 100));
        assert!(ejected(&pool[0], 129));
        assert!(!ejected(&pool[0], 130), "30 s later it is back");
        assert_eq!(pool[0].state.outlier.ejected_until_ms(), 0, "noticed once");
    }

    #[test]
    fn the_multiplier_grows_and_decays() {
        let base = Duration::from_secs(30);
        let mut streak = Streak::default();
        assert_eq!(streak.next(base, 1_000 * S), Duration::from_secs(30));
        // Failing again 10 s after coming back (at 1030 s): twice as long, then three times.
        assert_eq!(streak.next(base, 1_040 * S), Duration::from_secs(60));
        assert_eq!(streak.next(base, 1_100 * S), Duration::from_secs(90));
        // Capped at 300 s.
        for _ in 0..20 {
            streak.next(base, 0);
        }
        assert_eq!(streak.next(base, 0), MAX_EJECTION);
        // Back for a long while: forgiven, one base period at a time.
        let mut streak = Streak::default();
        streak.next(base, 0); // ends at 30
        streak.next(base, 40 * S); // 60 s, ends at 100
        assert_eq!(
            streak.next(base, 130 * S),
            Duration::from_secs(60),
            "one forgiven"
        );
        let mut streak = Streak::default();
        streak.next(base, 0);
        streak.next(base, 40 * S);
        assert_eq!(streak.next(base, 1_000 * S), base, "all forgiven");
    }

    #[test]
    fn never_more_than_max_ejected_percent_of_the_pool() {
        let pool = pool(4);
        report(&pool, 0, answered(500), 5, 0);
        report(&pool, 1, answered(500), 5, 0);
        report(&pool, 2, answered(500), 5, 0);
        let out: Vec<bool> = pool.iter().map(|b| ejected(b, 0)).collect();
        assert_eq!(out, [true, true, false, false], "two of four is 50%");
        // The spared one's run goes on: once the first is back, its next failure ejects it.
        assert!(!ejected(&pool[0], 30));
        report(&pool, 2, answered(500), 1, 30);
        assert!(ejected(&pool[2], 30));
        assert_eq!(pool[2].state.outlier.ejections(), 1);
    }

    #[test]
    fn no_ejection_of_a_pool_of_one_at_50_percent() {
        let pool = pool(1);
        report(&pool, 0, answered(500), 10, 0);
        assert!(!ejected(&pool[0], 0));
    }

    #[test]
    fn without_the_table_5xx_eject_nothing() {
        let pool = pool(2);
        for _ in 0..10 {
            observe_at(&pool[0], answered(500), None, &pool, &|| 0);
            observe_at(&pool[0], Observed::Failed, None, &pool, &|| 0);
        }
        assert!(pool[0].is_eligible());
    }

    #[test]
    fn three_connect_failures_in_a_row_take_it_out_until_a_passed_check() {
        let pool = pool(2);
        let now = Cell::new(0);
        let clock = || now.get();
        let failed = |times| {
            for _ in 0..times {
                observe_at(&pool[0], Observed::ConnectFailed, None, &pool, &clock);
            }
        };
        failed(2);
        observe_at(&pool[0], answered(503), None, &pool, &clock);
        failed(2);
        assert!(
            pool[0].is_eligible(),
            "an answer (even a 503) broke the run"
        );
        failed(1);
        assert!(!pool[0].is_eligible());
        let view = pool[0].state.history.view();
        assert_eq!(
            view.reason.as_deref(),
            Some("taken out: 3 consecutive connect failures")
        );

        // A failed check (one that would not flip it down by itself) keeps it out; the next pass brings it back.
        let later = SystemTime::now() + Duration::from_secs(1);
        pool[0].state.checked(check(false, later), true);
        assert!(!pool[0].is_eligible());
        pool[0].state.checked(check(true, later), true);
        assert!(pool[0].is_eligible());
        assert_eq!(pool[0].state.outlier.connect_run.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn tcp_connects_end_the_connect_run() {
        let pool = pool(2);
        for _ in 0..5 {
            observe_at(&pool[0], Observed::ConnectFailed, None, &pool, &|| 0);
            observe_at(&pool[0], Observed::ConnectFailed, None, &pool, &|| 0);
            observe_at(&pool[0], Observed::Connected, None, &pool, &|| 0);
        }
        assert!(pool[0].is_eligible());
    }
}
