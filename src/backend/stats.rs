//! What a backend's requests added up to, counted by each worker on its own and summed when someone asks (a metrics
//! scrape, the status page): answers by status class, a histogram of the time to the response head, and the
//! connections open to it (a gauge: pooled and in use).
//!
//! Why per worker: a counter every worker bumps on each request would be one cache line bouncing between cores, a
//! cost paid per request for a figure read once every few seconds. Each worker here has its own slot (aligned so that
//! no two slots share a line) and is its only writer, so recording is a plain load and store; a reader sums the
//! slots. A reader may see one worker's request counted before its duration, never a count that goes down (the
//! connection gauge goes down when connections close, never below zero: a worker closes only what it opened).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (inclusive) of the duration histogram's buckets, in seconds: 0.5 ms to 30 s, about three a decade.
/// A time above the last bound counts only in `+Inf` (the total).
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// The same bounds in nanoseconds, for recording without floating point.
const BUCKETS_NS: [u64; 16] = {
    let mut ns = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        // Exact for these values: every bound is a whole number of microseconds.
        ns[i] = (BUCKETS[i] * 1_000_000.0) as u64 * 1_000;
        i += 1;
    }
    ns
};

/// An answer's status class: 1xx to 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusClass(u8);

impl StatusClass {
    /// The class of `status` (anything outside 100..=599 counts as 5xx: it is not a valid answer).
    pub fn of(status: u16) -> StatusClass {
        match status / 100 {
            class @ 1..=5 => StatusClass(class as u8 - 1),
            _ => StatusClass(4),
        }
    }

    /// Its place in a list of the five classes (0 = 1xx).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// `1xx` … `5xx`.
    pub fn label(self) -> &'static str {
        ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from(self.0)]
    }

    pub const ALL: [StatusClass; 5] = [
        StatusClass(0),
        StatusClass(1),
        StatusClass(2),
        StatusClass(3),
        StatusClass(4),
    ];
}

/// One worker's counts for one backend. Aligned to 128 bytes (two cache lines, as adjacent-line prefetch pairs
/// them) so that two workers' slots never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    by_class: [AtomicU64; 5],
    /// Non-cumulative: `buckets[i]` counts durations in `(BUCKETS[i-1], BUCKETS[i]]`.
    buckets: [AtomicU64; 16],
    /// Durations recorded (the histogram's count; answers without a backend's head are not timed).
    timed: AtomicU64,
    sum_ns: AtomicU64,
    /// Connections to the backend this worker has open (pooled or in use).
    connections: AtomicU64,
}

/// Adds `by` (wrapping: `u64::MAX` takes one off) to a counter only this thread writes: a plain load and store, no
/// atomic read-modify-write (the per-worker counters of `worker` use it too).
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A backend's counts, one slot per worker.
#[derive(Debug)]
pub struct BackendStats {
    slots: Box<[Slot]>,
}

impl BackendStats {
    /// Counts for `workers` workers (at least one slot).
    pub fn new(workers: usize) -> Self {
        BackendStats {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    /// Counts one answer of `class` on `worker`'s slot (only that worker may call this with its index).
    pub fn count(&self, worker: usize, class: StatusClass) {
        bump(&self.slot(worker).by_class[usize::from(class.0)], 1);
    }

    /// Records the time `worker` waited for this backend's response head.
    pub fn time(&self, worker: usize, waited: Duration) {
        let slot = self.slot(worker);
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = BUCKETS_NS.iter().position(|&bound| ns <= bound) {
            bump(&slot.buckets[bucket], 1);
        }
        bump(&slot.timed, 1);
        bump(&slot.sum_ns, ns);
    }

    /// Counts a connection `worker` opened to this backend, until [`BackendStats::closed`].
    pub fn opened(&self, worker: usize) {
        bump(&self.slot(worker).connections, 1);
    }

    /// Takes off a connection `worker` had opened (see [`BackendStats::opened`]).
    pub fn closed(&self, worker: usize) {
        bump(&self.slot(worker).connections, u64::MAX);
    }

    fn slot(&self, worker: usize) -> &Slot {
        // A worker index past the slots (cannot happen: the workers are fixed at start) shares the last one.
        &self.slots[worker.min(self.slots.len() - 1)]
    }

    /// The sum over every worker, as of now.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for slot in self.slots.iter() {
            for (sum, count) in totals.by_class.iter_mut().zip(&slot.by_class) {
                *sum += count.load(Ordering::Relaxed);
            }
            for (sum, count) in totals.buckets.iter_mut().zip(&slot.buckets) {
                *sum += count.load(Ordering::Relaxed);
            }
            totals.timed += slot.timed.load(Ordering::Relaxed);
            totals.sum_ns = totals
                .sum_ns
                .wrapping_add(slot.sum_ns.load(Ordering::Relaxed));
            totals.connections += slot.connections.load(Ordering::Relaxed);
        }
        totals
    }
}

/// A backend's counts summed over the workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Answers by [`StatusClass`] (index 0 = 1xx).
    pub by_class: [u64; 5],
    /// Non-cumulative bucket counts (see [`BUCKETS`]); what is above the last bound is `timed` minus their sum.
    pub buckets: [u64; 16],
    pub timed: u64,
    pub sum_ns: u64,
    /// Connections open to the backend now.
    pub connections: u64,
}

impl Totals {
    /// Answers of every class.
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Cumulative counts per bound, as Prometheus wants them (`le` = bound), without `+Inf`.
    pub fn cumulative(&self) -> [(f64, u64); 16] {
        let mut running = 0;
        std::array::from_fn(|i| {
            running += self.buckets[i];
            (BUCKETS[i], running)
        })
    }

    /// The `q` quantile (0..=1) of the recorded durations, in seconds, estimated as the upper bound of the bucket
    /// it falls in (`None` when nothing was timed; the last bound when it lies above it).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.timed == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.timed as f64).ceil().max(1.0) as u64;
        let found = self.cumulative().into_iter().find(|&(_, n)| n >= rank);
        Some(found.map_or(BUCKETS[15], |(bound, _)| bound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_nanoseconds_are_exact() {
        assert_eq!(BUCKETS_NS[0], 500_000);
        assert_eq!(BUCKETS_NS[1], 1_000_000);
        assert_eq!(BUCKETS_NS[15], 30_000_000_000);
    }

    #[test]
    fn workers_counts_add_up() {
        let stats = BackendStats::new(2);
        stats.count(0, StatusClass::of(200));
        stats.count(1, StatusClass::of(204));
        stats.count(1, StatusClass::of(503));
        stats.count(0, StatusClass::of(101));
        let totals = stats.totals();
        assert_eq!(totals.by_class, [1, 2, 0, 0, 1]);
        assert_eq!(totals.requests(), 4);
    }

    #[test]
    fn durations_land_in_their_bucket() {
        let stats = BackendStats::new(1);
        stats.time(0, Duration::from_micros(500)); // on the first bound: in it
        stats.time(0, Duration::from_micros(501));
        stats.time(0, Duration::from_secs(31)); // above every bound: only in +Inf
        let totals = stats.totals();
        assert_eq!(totals.buckets[0], 1);
        assert_eq!(totals.buckets[1], 1);
        assert_eq!(totals.timed, 3);
        assert_eq!(totals.cumulative()[15], (30.0, 2));
        assert_eq!(totals.sum_ns, 500_000 + 501_000 + 31_000_000_000);
    }

    #[test]
    fn connections_are_a_gauge() {
        let stats = BackendStats::new(2);
        stats.opened(0);
        stats.opened(0);
        stats.opened(1);
        stats.closed(0);
        assert_eq!(stats.totals().connections, 2);
        stats.closed(0);
        stats.closed(1);
        assert_eq!(stats.totals().connections, 0);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let stats = BackendStats::new(1);
        assert_eq!(stats.totals().quantile(0.5), None);
        for _ in 0..98 {
            stats.time(0, Duration::from_micros(800));
        }
        stats.time(0, Duration::from_millis(40));
        stats.time(0, Duration::from_millis(40));
        let totals = stats.totals();
        assert_eq!(totals.quantile(0.5), Some(0.001));
        assert_eq!(totals.quantile(0.99), Some(0.05));
    }

    #[test]
    fn classes_have_labels() {
        assert_eq!(StatusClass::of(101).label(), "1xx");
        assert_eq!(StatusClass::of(499).label(), "4xx");
        assert_eq!(StatusClass::of(999).label(), "5xx");
        assert_eq!(StatusClass::ALL.len(), 5);
    }
}
