//! `GET /metrics`: the balancer's figures in the Prometheus exposition formats, written with `prometheus-client`.
//!
//! Nothing is counted here: every figure is read at scrape time from where the data plane keeps it (each backend's
//! per-worker stats and live state, each worker's counts, the reload counters) and summed over the workers, so a
//! scrape costs the workers nothing. The figures are read first ([`Figures`]), then written by a collector the
//! crate drives.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `lb_requests_total` | counter | `backend`, `code` | answers by status class (`1xx`..`5xx`); `backend=""`: `lb`'s own |
//! | `lb_request_duration_seconds` | histogram | `backend` | time to the response head (0.5 ms .. 30 s) |
//! | `lb_backend_up` | gauge | `backend` | 1 while health checks say up |
//! | `lb_backend_in_flight` | gauge | `backend` | requests being attempted on it |
//! | `lb_health_checks_total` | counter | `backend`, `result` | checks by result (`pass`, `fail`) |
//! | `lb_backend_ejections_total` | counter | `backend` | times passive health ejected it |
//! | `lb_retries_total` | counter | | attempts after a request's first |
//! | `lb_client_connections` | gauge | | client connections open |
//! | `lb_backend_connections` | gauge | `backend` | connections open to it (pooled and in use) |
//! | `lb_config_reloads_total` | counter | `result` | reloads by result (`ok`, `error`) |
//! | `lb_build_info` | gauge | `version` | 1 |
//!
//! Every request is counted once in `lb_requests_total`: on the backend whose answer reached the client (delivered
//! whole, or a `101` and its tunnel), or under `backend=""` with the status its access log line shows (a refused
//! head, 408, 502/503/504, and an exchange that broke or whose client left: 499). The series of all five classes
//! are written for every backend and for `""`, zeros too, so that a rate never starts from a missing series. A
//! backend removed by a reload takes its series with it.
//!
//! The format: OpenMetrics when the scraper asks for it (Prometheus does, in `Accept`), else the Prometheus text
//! format 0.0.4 (what `curl` and older scrapers get). Both come from the same collector.

use std::sync::atomic::Ordering;

use http::{header, HeaderMap, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, text, DescriptorEncoder, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::answer::{self, Answer};
use super::Plane;
use crate::backend::stats::{StatusClass, Totals, BUCKETS};

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn render(plane: &Plane, headers: &HeaderMap) -> Answer {
    let figures = Figures::read(plane);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(figures));
    let mut body = String::with_capacity(16 * 1024);
    let (encoded, content_type) = match asks_for_openmetrics(headers) {
        true => (text::encode(&mut body, &registry), OPENMETRICS),
        false => (
            prometheus_text::encode(&mut body, &registry),
            prometheus_text::CONTENT_TYPE,
        ),
    };
    match encoded {
        Ok(()) => answer::with(StatusCode::OK, content_type, body),
        Err(_) => answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be written",
        ),
    }
}

/// Whether the scraper accepts OpenMetrics (Prometheus lists it first; `curl` sends `*/*`).
fn asks_for_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let kind = params.next().unwrap_or("");
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim_end_matches(['0', '.']).is_empty())
            });
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// Everything a scrape shows, read at once.
#[derive(Debug)]
struct Figures {
    backends: Vec<BackendFigures>,
    /// `lb`'s own answers by class.
    own: [u64; 5],
    retries: u64,
    clients: usize,
    reloads_ok: u64,
    reloads_error: u64,
}

#[derive(Debug)]
struct BackendFigures {
    id: String,
    totals: Totals,
    up: bool,
    in_flight: usize,
    checks_passed: u64,
    checks_failed: u64,
    ejections: u64,
    ejected: bool,
}

impl Figures {
    fn read(plane: &Plane) -> Figures {
        let snapshot = plane.routing.load();
        // The members of a `resolve = "all"` backend share its id: each is labelled `ID@ADDRESS` so that no two
        // series are the same (a backend with one address keeps its plain id).
        let shared = |id: u64| snapshot.backends.iter().filter(|b| b.id == id).count() > 1;
        let backends = snapshot
            .backends
            .iter()
            .map(|backend| {
                let state = &backend.state;
                BackendFigures {
                    id: match shared(backend.id) {
                        true => format!("{}@{}", backend.id, backend.addr),
                        false => backend.id.to_string(),
                    },
                    totals: state.stats.totals(),
                    up: backend.is_healthy(),
                    in_flight: state.in_flight.load(Ordering::Relaxed),
                    checks_passed: state.checks_passed.load(Ordering::Relaxed),
                    checks_failed: state.checks_failed.load(Ordering::Relaxed),
                    ejections: state.outlier.ejections(),
                    ejected: backend.is_ejected(),
                }
            })
            .collect();
        let mut own = [0; 5];
        let (mut retries, mut clients) = (0, 0);
        for counts in &plane.workers {
            for (sum, count) in own.iter_mut().zip(counts.own()) {
                *sum += count;
            }
            retries += counts.retries();
            clients += counts.open();
        }
        Figures {
            backends,
            own,
            retries,
            clients,
            reloads_ok: plane.reloads.ok(),
            reloads_error: plane.reloads.error(),
        }
    }
}

/// The histogram's buckets as the encoder takes them: per bound, not cumulative, ending with `+Inf`. The count is
/// at least the buckets' sum (a scrape may read a worker's bucket before its count), so `+Inf` never goes below
/// the last bound.
fn histogram(totals: &Totals) -> (u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(totals.buckets).collect();
    let bounded: u64 = totals.buckets.iter().sum();
    let count = totals.timed.max(bounded);
    buckets.push((f64::INFINITY, count - bounded));
    (count, buckets)
}

type Result = std::result::Result<(), std::fmt::Error>;

/// A gauge's value, read from a backend's figures.
type Gauge = fn(&BackendFigures) -> i64;

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;

        let help = "Answers by status class; backend=\"\": lb's own (refused, timed out, failed, broken, 499)";
        let mut family = encoder.encode_descriptor("lb_requests", help, None, counter)?;
        let own = self
            .backends
            .iter()
            .map(|b| (b.id.as_str(), b.totals.by_class));
        for (backend, by_class) in own.chain([("", self.own)]) {
            for class in StatusClass::ALL {
                let labels = [("backend", backend), ("code", class.label())];
                ConstCounter::new(by_class[class.index()])
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let help =
            "Time from the start of the attempt that got the answer to the backend's response head";
        let seconds = Unit::Seconds;
        let kind = MetricType::Histogram;
        let mut family =
            encoder.encode_descriptor("lb_request_duration", help, Some(&seconds), kind)?;
        for backend in &self.backends {
            let (count, buckets) = histogram(&backend.totals);
            let sum = backend.totals.sum_ns as f64 / 1e9;
            let labels = [("backend", backend.id.as_str())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let per_backend: [(&str, &str, Gauge); 4] = [
            (
                "lb_backend_up",
                "1 while the backend's health checks say it is up",
                |b| i64::from(b.up),
            ),
            (
                "lb_backend_ejected",
                "1 while passive health has the backend ejected (it takes no new requests, though up)",
                |b| i64::from(b.ejected),
            ),
            (
                "lb_backend_in_flight",
                "Requests being attempted on the backend",
                |b| b.in_flight as i64,
            ),
            (
                "lb_backend_connections",
                "Connections open to the backend, pooled and in use",
                |b| b.totals.connections as i64,
            ),
        ];
        for (name, help, value) in per_backend {
            let mut family = encoder.encode_descriptor(name, help, None, gauge)?;
            for backend in &self.backends {
                let labels = [("backend", backend.id.as_str())];
                ConstGauge::new(value(backend)).encode(family.encode_family(&labels)?)?;
            }
        }

        let help = "Health checks of the backend, by result";
        let mut family = encoder.encode_descriptor("lb_health_checks", help, None, counter)?;
        for backend in &self.backends {
            for (result, count) in [
                ("pass", backend.checks_passed),
                ("fail", backend.checks_failed),
            ] {
                let labels = [("backend", backend.id.as_str()), ("result", result)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let help = "Times passive health ejected the backend";
        let mut family = encoder.encode_descriptor("lb_backend_ejections", help, None, counter)?;
        for backend in &self.backends {
            let labels = [("backend", backend.id.as_str())];
            ConstCounter::new(backend.ejections).encode(family.encode_family(&labels)?)?;
        }

        let help = "Attempts after a request's first (another backend, or a new connection after a kept-alive one failed)";
        ConstCounter::new(self.retries).encode(encoder.encode_descriptor(
            "lb_retries",
            help,
            None,
            counter,
        )?)?;
        let help = "Client connections open";
        ConstGauge::new(self.clients as i64).encode(encoder.encode_descriptor(
            "lb_client_connections",
            help,
            None,
            gauge,
        )?)?;

        let help = "Config reloads (SIGHUP, /api/reload), by result";
        let mut family = encoder.encode_descriptor("lb_config_reloads", help, None, counter)?;
        for (result, count) in [("ok", self.reloads_ok), ("error", self.reloads_error)] {
            ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
        }

        let help = "The running lb's version (always 1)";
        let mut family = encoder.encode_descriptor("lb_build_info", help, None, gauge)?;
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        ConstGauge::new(1).encode(family.encode_family(&labels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(asks_for_openmetrics(&accept(prometheus)));
        assert!(!asks_for_openmetrics(&accept("*/*")));
        assert!(!asks_for_openmetrics(&HeaderMap::new()));
        assert!(!asks_for_openmetrics(&accept(
            "application/openmetrics-text;q=0, text/plain"
        )));
    }

    #[test]
    fn infinity_holds_what_is_above_the_last_bound() {
        let mut totals = Totals {
            timed: 3,
            ..Totals::default()
        };
        totals.buckets[0] = 2;
        let (count, buckets) = histogram(&totals);
        assert_eq!(count, 3);
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        assert_eq!(buckets[BUCKETS.len()], (f64::INFINITY, 1));
        // A worker's bucket read before its count: +Inf is not below the bounds.
        totals.timed = 1;
        assert_eq!(histogram(&totals).0, 2);
    }
}
