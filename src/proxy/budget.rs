//! The retry budget: retries may add at most `budget_percent` % on top of recent requests, with a floor of
//! `RETRY_FLOOR_PER_SECOND` a second (as Envoy's and Finagle's retry budgets), so that when every backend fails a
//! retry storm does not multiply the load on them.
//!
//! *Recent* is the last [`WINDOW_SECONDS`] seconds, kept as one bucket per second (requests and retries). A retry is
//! allowed when the window's retries, this one included, stay within `budget_percent` % of its requests plus the
//! floor's reserve for the window (`RETRY_FLOOR_PER_SECOND` × [`WINDOW_SECONDS`]), as Finagle's budget does: a
//! quiet balancer can still retry a short burst of failures (30 within 10 s), and a storm is held to its share
//! plus that reserve.
//!
//! Requests are many and retries rare, so the two are counted differently. A request is counted on its worker's
//! own counter (one writer, a plain load and store, no line shared with another core: as `backend::stats`). The
//! counters are read, summed and put into the window only when a retry asks, under a lock: the requests since the
//! last look go into the current second, all of them when the last look was within the window, else the window's
//! share of them (taken as spread evenly since then).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::backend::clock;
use crate::backend::stats::bump;
use crate::config::RETRY_FLOOR_PER_SECOND;

/// How far back "recent requests" go.
pub const WINDOW_SECONDS: u64 = 10;

/// One worker's requests, on a line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counter(AtomicU64);

/// Recent requests and retries, shared by every worker and carried from snapshot to snapshot.
#[derive(Debug)]
pub struct RetryBudget {
    requests: Box<[Counter]>,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Bucket `s % WINDOW_SECONDS` holds second `s` (or an older one, which no longer counts).
    seconds: [Second; WINDOW_SECONDS as usize],
    /// The requests counted by the workers when the window last looked, and when that was ([`clock`] ms).
    seen_requests: u64,
    seen_at_ms: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Second {
    /// Which second since the clock's start this is.
    second: u64,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    /// A budget for `workers` workers, with no request seen yet.
    pub fn new(workers: usize) -> Self {
        RetryBudget {
            requests: (0..workers.max(1)).map(|_| Counter::default()).collect(),
            window: Mutex::default(),
        }
    }

    /// Counts one request (its first attempt), on `worker`'s own counter (only that worker may call this with its
    /// index).
    #[inline]
    pub fn request(&self, worker: usize) {
        let counter = &self.requests[worker.min(self.requests.len() - 1)];
        bump(&counter.0, 1);
    }

    /// Whether one more retry fits in the budget of `percent` %; if it does, it is counted.
    pub fn try_retry(&self, percent: u32) -> bool {
        let requests = self.requests();
        self.window().try_retry(percent, requests, clock::now_ms())
    }

    /// Requests counted so far, over every worker.
    fn requests(&self) -> u64 {
        self.requests
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Window {
    /// [`RetryBudget::try_retry`] at `now_ms`, when the workers have counted `requests` so far.
    fn try_retry(&mut self, percent: u32, requests: u64, now_ms: u64) -> bool {
        let window_ms = WINDOW_SECONDS * 1000;
        let new = requests.saturating_sub(self.seen_requests);
        let since = now_ms.saturating_sub(self.seen_at_ms);
        let recent = match since <= window_ms {
            true => new,
            false => (u128::from(new) * u128::from(window_ms) / u128::from(since)) as u64,
        };
        self.seen_requests = requests;
        self.seen_at_ms = now_ms;

        let second = now_ms / 1000;
        let bucket = (second % WINDOW_SECONDS) as usize;
        if self.seconds[bucket].second != second {
            self.seconds[bucket] = Second {
                second,
                ..Second::default()
            };
        }
        self.seconds[bucket].requests += recent;
        let (mut requests, mut retries) = (0u64, 0u64);
        for counted in &self.seconds {
            if second - counted.second < WINDOW_SECONDS {
                requests += counted.requests;
                retries += counted.retries;
            }
        }
        let reserve = u128::from(RETRY_FLOOR_PER_SECOND) * u128::from(WINDOW_SECONDS) * 100;
        let fits =
            u128::from(retries + 1) * 100 <= u128::from(requests) * u128::from(percent) + reserve;
        if fits {
            self.seconds[bucket].retries += 1;
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor's reserve for a window: 30.
    const RESERVE: usize = (RETRY_FLOOR_PER_SECOND as u64 * WINDOW_SECONDS) as usize;

    /// How many of `tries` retries at `now_ms` the window allows, with `requests` counted so far.
    fn allowed(
        window: &mut Window,
        percent: u32,
        requests: u64,
        now_ms: u64,
        tries: usize,
    ) -> usize {
        (0..tries)
            .filter(|_| window.try_retry(percent, requests, now_ms))
            .count()
    }

    #[test]
    fn a_fifth_of_recent_requests_plus_the_floor() {
        let mut window = Window::default();
        // 1000 requests by 0.5 s; then every one of them wants a retry: 200 + 30.
        assert_eq!(allowed(&mut window, 20, 1_000, 500, 1_000), 200 + RESERVE);
        // The window is spent: no more, this second or the next.
        assert_eq!(allowed(&mut window, 20, 1_000, 900, 10), 0);
        assert_eq!(allowed(&mut window, 20, 1_000, 1_500, 10), 0);
        // 50 more requests: 10 more retries.
        assert_eq!(allowed(&mut window, 20, 1_050, 2_500, 100), 10);
    }

    #[test]
    fn the_floor_lets_a_quiet_balancer_retry_a_burst() {
        let mut window = Window::default();
        assert_eq!(allowed(&mut window, 20, 1, 0, 100), RESERVE);
        assert_eq!(
            allowed(&mut window, 20, 1, 5_000, 10),
            0,
            "within the window"
        );
        let mut window = Window::default();
        assert_eq!(
            allowed(&mut window, 0, 10_000, 2_000, 100),
            RESERVE,
            "0 %: the floor only"
        );
    }

    #[test]
    fn old_requests_and_retries_leave_the_window() {
        let mut window = Window::default();
        assert_eq!(allowed(&mut window, 20, 1_000, 0, 300), 200 + RESERVE);
        // 9.9 s later, still in the window: nothing.
        assert_eq!(allowed(&mut window, 20, 1_000, 9_900, 10), 0);
        // 10 s later the first second's requests and retries are out: no request is recent, so the floor only.
        assert_eq!(allowed(&mut window, 20, 1_000, 10_000, 100), RESERVE);
        // Requests since a look long ago count for the window's share of them: 10 s of 100 s (the retries made at
        // 10 s are out of the window by 110 s).
        assert_eq!(allowed(&mut window, 20, 2_000, 110_000, 100), 20 + RESERVE);
    }

    #[test]
    fn requests_are_counted_per_worker_and_summed() {
        let budget = RetryBudget::new(3);
        for worker in [0, 1, 2, 2, 7] {
            budget.request(worker);
        }
        assert_eq!(budget.requests(), 5);
        assert!(budget.try_retry(20), "the floor");
    }
}
