//! The last minutes of each backend's traffic, for the dashboard's charts: `GET /api/history`.
//!
//! The data plane keeps only running totals (`backend::stats`: answers by class and a histogram of the time to the
//! response head, per worker). A rate or a latency quantile over time needs the difference between two readings, so
//! a sampler task on the admin plane's runtime reads every backend's totals every [`EVERY`] and keeps, per backend,
//! the last [`KEEP`] points computed from the deltas: what the workers pay for the charts is nothing, and what the
//! admin plane keeps is bounded (a ring per backend of the routed snapshot).
//!
//! A point's quantiles come from the window's delta histogram ([`Totals::quantile`] of `now − before`), so they are
//! bucket upper bounds (0.5 ms, 1 ms, 2.5 ms, …): the same resolution as `/metrics`, honestly coarse.
//!
//! Series are keyed by backend id. A backend a reload removed loses its series at the next sample; one whose live
//! state was replaced (same id, new address: another backend for everything known about it) starts a new one.
//!
//! The answer:
//!
//! ```json
//! {"every_ms": 1000,
//!  "backends": [{"id": 1, "points": [{"t": 1767225600000, "rps": 12.5, "p50_ms": 1.0, "p99_ms": 2.5}, …]}]}
//! ```
//!
//! oldest point first; `t` is the end of the point's window in Unix milliseconds; `p50_ms`/`p99_ms` are `null` when
//! no answer of that backend was timed in the window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::Serialize;

use super::answer::{self, Answer};
use crate::backend::stats::Totals;
use crate::backend::BackendState;
use crate::upstream::Routing;

/// How often the sampler reads the totals (one chart point per reading).
pub const EVERY: Duration = Duration::from_secs(1);
/// Points kept per backend: five minutes at one a second.
pub const KEEP: usize = 300;

/// One chart point: a window's request rate and latency quantiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The window's end, Unix milliseconds.
    pub t: u64,
    /// Answers per second over the window.
    pub rps: f64,
    /// Median time to the response head, in milliseconds (a bucket bound), when anything was timed.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One backend's series and the reading its next point starts from.
#[derive(Debug)]
struct Series {
    /// The live state read, to notice when a reload replaced it (counters start again from zero).
    state: Arc<BackendState>,
    last: Totals,
    read_at: Instant,
    points: VecDeque<Point>,
}

/// Every backend's series, shared by the sampler (writer) and `GET /api/history` (reader).
#[derive(Debug, Default)]
pub struct History {
    series: Mutex<BTreeMap<u64, Series>>,
}

impl History {
    /// Reads every backend of the routed snapshot once: a point for each that has a previous reading, a first reading
    /// for the others; series of backends no longer routed are dropped.
    pub fn sample(&self, routing: &Routing) {
        let snapshot = routing.load();
        let (now, t) = (Instant::now(), unix_ms(SystemTime::now()));
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.retain(|id, _| snapshot.backends.iter().any(|b| b.id == *id));
        for backend in &snapshot.backends {
            let totals = backend.state.stats.totals();
            match series.get_mut(&backend.id) {
                Some(kept) if Arc::ptr_eq(&kept.state, &backend.state) => {
                    let point = point(&kept.last, &totals, now - kept.read_at, t);
                    if kept.points.len() == KEEP {
                        kept.points.pop_front();
                    }
                    kept.points.push_back(point);
                    kept.last = totals;
                    kept.read_at = now;
                }
                _ => {
                    let fresh = Series {
                        state: backend.state.clone(),
                        last: totals,
                        read_at: now,
                        points: VecDeque::with_capacity(KEEP),
                    };
                    series.insert(backend.id, fresh);
                }
            }
        }
    }

    /// `GET /api/history`.
    pub fn render(&self) -> Answer {
        #[derive(Serialize)]
        struct Backend<'a> {
            id: u64,
            points: &'a VecDeque<Point>,
        }
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let backends: Vec<Backend> = series
            .iter()
            .map(|(&id, series)| Backend {
                id,
                points: &series.points,
            })
            .collect();
        let every_ms = EVERY.as_millis() as u64;
        answer::json(
            StatusCode::OK,
            &serde_json::json!({ "every_ms": every_ms, "backends": backends }),
        )
    }
}

/// Samples `routing` into `history` every [`EVERY`], for as long as the admin plane's runtime runs.
pub async fn run(routing: Arc<Routing>, history: Arc<History>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        history.sample(&routing);
    }
}

/// The point for the window from reading `before` to reading `now`, `elapsed` apart, ending at `t`.
fn point(before: &Totals, now: &Totals, elapsed: Duration, t: u64) -> Point {
    let window = delta(before, now);
    let seconds = elapsed.as_secs_f64();
    let rps = if seconds > 0.0 {
        window.requests() as f64 / seconds
    } else {
        0.0
    };
    let ms = |q| window.quantile(q).map(|s| s * 1000.0);
    Point {
        t,
        rps,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    }
}

/// What was counted between two readings of the same counters (gauges, such as connections, as of `now`).
/// Saturating: a reader may see one worker's count before another's earlier one, never a total that goes down, but a
/// wrong negative would be worse than a zero.
fn delta(before: &Totals, now: &Totals) -> Totals {
    Totals {
        by_class: std::array::from_fn(|i| now.by_class[i].saturating_sub(before.by_class[i])),
        buckets: std::array::from_fn(|i| now.buckets[i].saturating_sub(before.buckets[i])),
        timed: now.timed.saturating_sub(before.timed),
        sum_ns: now.sum_ns.wrapping_sub(before.sum_ns),
        connections: now.connections,
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::stats::{BackendStats, StatusClass};
    use crate::config::{self, BackendConfig, Config, Overrides};
    use crate::upstream::Snapshot;

    fn answered(stats: &BackendStats, count: usize, took: Duration) {
        for _ in 0..count {
            stats.count(0, StatusClass::of(200));
            stats.time(0, took);
        }
    }

    #[test]
    fn a_point_is_the_rate_and_quantiles_of_the_window_only() {
        let stats = BackendStats::new(1);
        // Before the window: slow answers that must not weigh on its quantiles.
        answered(&stats, 50, Duration::from_millis(400));
        let before = stats.totals();
        answered(&stats, 98, Duration::from_micros(800));
        answered(&stats, 2, Duration::from_millis(40));
        let point = point(&before, &stats.totals(), Duration::from_secs(2), 7);
        assert_eq!(point.t, 7);
        assert_eq!(point.rps, 50.0, "100 answers in 2 s");
        assert_eq!(point.p50_ms, Some(1.0), "800 µs falls in the ≤ 1 ms bucket");
        assert_eq!(point.p99_ms, Some(50.0), "the 99th of 100 is a 40 ms one");
    }

    #[test]
    fn a_quiet_window_has_no_quantiles() {
        let stats = BackendStats::new(1);
        answered(&stats, 10, Duration::from_millis(3));
        let totals = stats.totals();
        let point = point(&totals, &totals, Duration::from_secs(1), 0);
        assert_eq!(point.rps, 0.0);
        assert_eq!((point.p50_ms, point.p99_ms), (None, None));
    }

    #[test]
    fn answers_without_a_backend_head_count_in_the_rate_not_the_quantiles() {
        let stats = BackendStats::new(2);
        let before = stats.totals();
        stats.count(1, StatusClass::of(502));
        stats.count(0, StatusClass::of(200));
        stats.time(0, Duration::from_millis(7));
        let point = point(&before, &stats.totals(), Duration::from_millis(500), 0);
        assert_eq!(point.rps, 4.0);
        assert_eq!(point.p50_ms, Some(10.0));
        assert_eq!(point.p99_ms, Some(10.0));
    }

    #[test]
    fn a_delta_never_goes_below_zero() {
        let mut now = Totals::default();
        let mut before = Totals::default();
        before.by_class[1] = 5;
        before.buckets[3] = 2;
        before.timed = 2;
        now.by_class[1] = 3;
        assert_eq!(delta(&before, &now), Totals::default());
    }

    fn config(backends: &[(u64, u16)]) -> Config {
        let backends = backends
            .iter()
            .map(|&(id, port)| BackendConfig {
                id,
                host: "127.0.0.1".into(),
                port,
                addr: ([127, 0, 0, 1], port).into(),
                options: Default::default(),
                weight: 1,
                max_connections: None,
                resolve: Default::default(),
            })
            .collect();
        config::from_backends(backends, &Overrides::default()).expect("a valid config")
    }

    fn ids_and_lengths(history: &History) -> Vec<(u64, usize)> {
        let series = history.series.lock().unwrap();
        series.iter().map(|(&id, s)| (id, s.points.len())).collect()
    }

    #[test]
    fn series_follow_the_routed_backends_and_stay_bounded() {
        let routing = Routing::new(Snapshot::build(&config(&[(1, 8001), (2, 8002)]), None));
        let history = History::default();
        history.sample(&routing);
        assert_eq!(
            ids_and_lengths(&history),
            [(1, 0), (2, 0)],
            "first readings"
        );
        history.sample(&routing);
        assert_eq!(ids_and_lengths(&history), [(1, 1), (2, 1)]);

        // A reload: 2 removed, 3 added, 1 kept (its state carried over), 1's series goes on.
        let next = Snapshot::build(&config(&[(1, 8001), (3, 8003)]), Some(&routing.load()));
        routing.publish(next);
        history.sample(&routing);
        assert_eq!(ids_and_lengths(&history), [(1, 2), (3, 0)]);

        // 1 moves to another address: another backend, a new series.
        let next = Snapshot::build(&config(&[(1, 9001), (3, 8003)]), Some(&routing.load()));
        routing.publish(next);
        history.sample(&routing);
        assert_eq!(ids_and_lengths(&history), [(1, 0), (3, 1)]);

        for _ in 0..KEEP + 5 {
            history.sample(&routing);
        }
        assert_eq!(ids_and_lengths(&history), [(1, KEEP), (3, KEEP)]);
    }
}
