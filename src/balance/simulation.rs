//! A deterministic discrete-event simulation of balancing in front of backends of uneven speed, run through the
//! real balancers (their `pick` and `observe`, with real in-flight guards held in virtual time).
//!
//! Three backends, each serving 4 requests at once and queueing the rest in order; service times average 5 ms,
//! 5 ms and 55 ms (the third is 50 ms slower), half fixed and half exponential. 30 clients in a closed loop: each
//! sends a request, waits for its answer, thinks for an exponential 20 ms on average, and sends the next; about
//! 70% of the three backends' capacity when they are used well. Every random number comes from seeded generators,
//! so a run gives the same table every time.
//!
//! `cargo test --lib balance::simulation -- --nocapture` prints the table (the README's).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::least_request::LeastRequest;
use super::peak_ewma::{Clock, PeakEwma};
use super::rng::Rng;
use super::round_robin::RoundRobin;
use super::testing::equal_backends;
use super::{Balance, Candidates};
use crate::backend::{Backend, InFlight};

const MS: u64 = 1_000_000;
/// Mean service time of each backend.
const SERVICE_NS: [u64; 3] = [5 * MS, 5 * MS, 55 * MS];
/// Requests a backend serves at once; the rest wait in its queue.
const CONCURRENCY: usize = 4;
const CLIENTS: usize = 30;
const THINK_NS: u64 = 20 * MS;
const RUN_NS: u64 = 60_000 * MS;
/// Answers before this are not counted (the start, before latency-aware balancers have samples).
const WARM_UP_NS: u64 = 1_000 * MS;

/// The virtual time, shared with the peak EWMA balancer.
#[derive(Debug, Clone, Default)]
struct VirtualClock(Arc<AtomicU64>);

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The client sends its next request.
    Send { client: usize },
    /// The backend finishes serving the request.
    Done { request: usize },
}

/// One request on its way: where it went, when it was sent, its in-flight guard.
struct Request<'a> {
    client: usize,
    backend: usize,
    sent_ns: u64,
    in_flight: Option<InFlight<'a>>,
}

/// What one run measured.
#[derive(Debug)]
struct Outcome {
    slow_share: f64,
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

/// `mean`, half fixed and half exponentially distributed.
fn service(rng: &Rng, mean: u64) -> u64 {
    mean / 2 + exponential(rng, mean / 2)
}

fn exponential(rng: &Rng, mean: u64) -> u64 {
    // A uniform in (0, 1]: never ln(0).
    let uniform = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-(1.0 - uniform).ln() * mean as f64) as u64
}

fn simulate(balancer: &dyn Balance, backends: &[Arc<Backend>], clock: &VirtualClock) -> Outcome {
    let rng = Rng::seeded(2024);
    let mut events = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut schedule = |events: &mut BinaryHeap<_>, at: u64, event: Event| {
        sequence += 1;
        events.push(Reverse((at, sequence, event)));
    };
    for client in 0..CLIENTS {
        schedule(
            &mut events,
            exponential(&rng, THINK_NS),
            Event::Send { client },
        );
    }
    let mut requests: Vec<Request<'_>> = Vec::new();
    let mut busy = [0usize; 3];
    let mut queues: [VecDeque<usize>; 3] = Default::default();
    let mut latencies = Vec::new();
    let mut answered = [0usize; 3];
    let candidates = Candidates {
        backends,
        key: None,
        eligible: &|_| true,
    };
    while let Some(Reverse((now, _, event))) = events.pop() {
        if now > RUN_NS {
            break;
        }
        clock.0.store(now, Ordering::Relaxed);
        match event {
            Event::Send { client } => {
                let backend = balancer.pick(&candidates).expect("a backend");
                let request = requests.len();
                requests.push(Request {
                    client,
                    backend,
                    sent_ns: now,
                    in_flight: Some(backends[backend].state.enter()),
                });
                if busy[backend] < CONCURRENCY {
                    busy[backend] += 1;
                    let done = now + service(&rng, SERVICE_NS[backend]);
                    schedule(&mut events, done, Event::Done { request });
                } else {
                    queues[backend].push_back(request);
                }
            }
            Event::Done { request } => {
                let Request {
                    client,
                    backend,
                    sent_ns,
                    ref mut in_flight,
                } = requests[request];
                let took = now - sent_ns;
                balancer.observe(backend, Duration::from_nanos(took));
                drop(in_flight.take());
                if now >= WARM_UP_NS {
                    latencies.push(took);
                    answered[backend] += 1;
                }
                match queues[backend].pop_front() {
                    Some(next) => {
                        let done = now + service(&rng, SERVICE_NS[backend]);
                        schedule(&mut events, done, Event::Done { request: next });
                    }
                    None => busy[backend] -= 1,
                }
                let next = now + exponential(&rng, THINK_NS);
                schedule(&mut events, next, Event::Send { client });
            }
        }
    }
    latencies.sort_unstable();
    let percentile = |p: usize| Duration::from_nanos(latencies[latencies.len() * p / 100]);
    Outcome {
        slow_share: answered[2] as f64 / latencies.len() as f64,
        p50: percentile(50),
        p99: percentile(99),
        per_second: latencies.len() as f64 / ((RUN_NS - WARM_UP_NS) as f64 / 1e9),
    }
}

fn run(name: &str) -> Outcome {
    let backends = equal_backends(3);
    let clock = VirtualClock::default();
    let balancer: Box<dyn Balance> = match name {
        "round_robin" => Box::new(RoundRobin::default()),
        "least_request" => Box::new(LeastRequest::new(&backends, Rng::seeded(1))),
        "peak_ewma" => Box::new(PeakEwma::with_clock(
            &backends,
            Rng::seeded(1),
            clock.clone(),
        )),
        _ => unreachable!("{name}"),
    };
    simulate(balancer.as_ref(), &backends, &clock)
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

#[test]
fn latency_aware_balancing_avoids_the_slow_backend() {
    let names = ["round_robin", "least_request", "peak_ewma"];
    let outcomes: Vec<Outcome> = names.iter().map(|name| run(name)).collect();
    println!("| balance | slow backend's share | p50 | p99 | answers/s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, outcome) in names.iter().zip(&outcomes) {
        println!(
            "| `{name}` | {:.1}% | {} | {} | {:.0} |",
            outcome.slow_share * 100.0,
            ms(outcome.p50),
            ms(outcome.p99),
            outcome.per_second
        );
    }
    let [round_robin, least_request, peak_ewma] = &outcomes[..] else {
        unreachable!()
    };
    assert!(
        (round_robin.slow_share - 1.0 / 3.0).abs() < 0.01,
        "{round_robin:?}"
    );
    for better in [least_request, peak_ewma] {
        assert!(
            better.slow_share < round_robin.slow_share / 2.0,
            "{better:?}"
        );
        assert!(better.p99 < round_robin.p99 / 2, "{better:?}");
        assert!(better.per_second > round_robin.per_second, "{better:?}");
    }
    assert!(
        peak_ewma.slow_share < least_request.slow_share,
        "{peak_ewma:?}"
    );
}
