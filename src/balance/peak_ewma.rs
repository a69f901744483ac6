//! Peak EWMA: power of two random choices (`p2c.rs`) on a latency-aware cost, as linkerd and Finagle balance.
//!
//! A backend's cost is `estimate × (in flight + 1) / effective weight`, where the estimate is a moving average of
//! the time to its response heads ([`Balance::observe`], once per answered head):
//! - **peak-sensitive**: a sample above the current estimate replaces it at once, so a backend that turns slow is
//!   avoided from its first slow answer, while one that turns fast again earns its way back sample by sample;
//! - **time-weighted**: a sample Δt after the previous one counts for `1 − exp(−Δt/τ)` (τ = [`DECAY`], 10 s), so
//!   the average covers the last ~10 s whatever the request rate;
//! - **decaying**: a pick sees an estimate last updated Δt ago faded towards 0 by the same `exp(−Δt/τ)`, so a
//!   backend avoided for being slow is tried again after a while, and its next answer (which, after such a gap,
//!   outweighs the old average) says whether it still is. The fade is only how a stale estimate is seen: the
//!   average itself stays an unbiased average of the answers.
//!
//! A backend without a sample yet (new, or just back) costs 0 while nothing is in flight to it, so it is probed
//! with one request at a time; while that probe is out, it costs as if its answers took [`UNMEASURED`] (1 s), so
//! it gets no more until it answers (Finagle's rule: what is not known is tried, once). The multiplication by
//! `in flight + 1` keeps a fast backend from taking every request until it queues them.
//!
//! State is per balancer (a reload starts the averages afresh) and per backend index: two atomics, the estimate and
//! when it was last updated. An update reads both and writes both without a lock; two answers recorded at the same
//! moment may lose one of them, which an average can afford.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::p2c;
use super::rng::Rng;
use super::weights::Weights;
use super::{Balance, Candidates};
use crate::backend::Backend;

/// The time constant of the average and of its fading between samples (linkerd's and Finagle's default).
pub const DECAY: Duration = Duration::from_secs(10);

/// The latency a backend without a sample is taken to have while a request to it is in flight.
pub const UNMEASURED: Duration = Duration::from_secs(1);

/// Where the time comes from: the monotonic clock in `lb`, a virtual one in the simulation.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since some fixed start.
    fn now_ns(&self) -> u64;
}

/// Time since the balancer was built.
#[derive(Debug)]
pub struct Monotonic(Instant);

impl Default for Monotonic {
    fn default() -> Self {
        Monotonic(Instant::now())
    }
}

impl Clock for Monotonic {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

#[derive(Debug)]
pub struct PeakEwma<C: Clock = Monotonic> {
    weights: Weights,
    rng: Rng,
    clock: C,
    /// One per backend, by index.
    estimates: Vec<Estimate>,
}

/// The latency estimate of one backend.
#[derive(Debug, Default)]
struct Estimate {
    /// Nanoseconds as of `updated_ns`; 0: no sample yet.
    latency_ns: AtomicU64,
    updated_ns: AtomicU64,
}

/// `exp(−elapsed/τ)`: how much of the past is left after `elapsed` nanoseconds. A busy backend's estimate is at
/// most milliseconds old, where three terms of the series are exact to 10⁻⁶ and cost a fraction of `exp`.
#[inline]
fn remaining(elapsed_ns: u64) -> f64 {
    let x = elapsed_ns as f64 / DECAY.as_nanos() as f64;
    if x < 0.01 {
        1.0 - x + x * x / 2.0
    } else {
        (-x).exp()
    }
}

impl Estimate {
    /// The estimate at `now`, faded since its last update; `None` without a sample.
    #[inline]
    fn at(&self, now: u64) -> Option<f64> {
        let latency = self.latency_ns.load(Ordering::Relaxed);
        if latency == 0 {
            return None;
        }
        let updated = self.updated_ns.load(Ordering::Relaxed);
        Some(latency as f64 * remaining(now.saturating_sub(updated)))
    }

    fn record(&self, sample_ns: f64, now: u64) {
        let latency = self.latency_ns.load(Ordering::Relaxed) as f64;
        let next = if latency == 0.0 || sample_ns > latency {
            // The first sample, or a peak: taken as it is.
            sample_ns
        } else {
            let updated = self.updated_ns.load(Ordering::Relaxed);
            let keep = remaining(now.saturating_sub(updated));
            latency * keep + sample_ns * (1.0 - keep)
        };
        // 0 means "no sample": a measured latency is at least 1 ns.
        self.latency_ns
            .store((next as u64).max(1), Ordering::Relaxed);
        self.updated_ns.store(now, Ordering::Relaxed);
    }
}

impl PeakEwma {
    pub fn new(backends: &[Arc<Backend>], rng: Rng) -> Self {
        PeakEwma::with_clock(backends, rng, Monotonic::default())
    }
}

impl<C: Clock> PeakEwma<C> {
    pub fn with_clock(backends: &[Arc<Backend>], rng: Rng, clock: C) -> Self {
        PeakEwma {
            weights: Weights::new(backends),
            rng,
            clock,
            estimates: backends.iter().map(|_| Estimate::default()).collect(),
        }
    }

    /// The cost of sending one more request to `backend` (at `index`), at `now`.
    #[inline]
    fn cost(&self, index: usize, backend: &Backend, now: u64) -> f64 {
        let in_flight = backend.state.in_flight.load(Ordering::Relaxed);
        let latency = match self.estimates.get(index).and_then(|e| e.at(now)) {
            Some(latency) => latency,
            None if in_flight == 0 => return 0.0,
            None => UNMEASURED.as_nanos() as f64,
        };
        latency * (in_flight + 1) as f64 / f64::from(backend.effective_weight().max(1))
    }
}

impl<C: Clock> Balance for PeakEwma<C> {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let now = self.clock.now_ns();
        let backends = candidates.backends;
        p2c::choose(candidates, &self.weights, &self.rng, |i| {
            self.cost(i, &backends[i], now)
        })
    }

    fn observe(&self, index: usize, took: Duration) {
        if let Some(estimate) = self.estimates.get(index) {
            estimate.record(took.as_nanos() as f64, self.clock.now_ns());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{counts, equal_backends, set_in_flight};

    /// A clock the test moves by hand.
    #[derive(Debug, Default)]
    struct Manual(AtomicU64);

    impl Clock for Manual {
        fn now_ns(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    impl Manual {
        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn balancer(backends: &[Arc<Backend>], seed: u64) -> PeakEwma<Manual> {
        PeakEwma::with_clock(backends, Rng::seeded(seed), Manual::default())
    }

    fn latency_ms(balancer: &PeakEwma<Manual>, index: usize) -> f64 {
        balancer.estimates[index]
            .at(balancer.clock.now_ns())
            .unwrap_or(0.0)
            / 1e6
    }

    #[test]
    fn prefers_the_faster_after_observing_both() {
        let backends = equal_backends(3);
        let balancer = balancer(&backends, 10);
        for _ in 0..5 {
            balancer.observe(0, ms(5));
            balancer.observe(1, ms(5));
            balancer.observe(2, ms(55));
            balancer.clock.advance(ms(10));
        }
        let picked = counts(&balancer, &backends, 3000);
        assert_eq!(picked[2], 0, "the slow one loses every pair: {picked:?}");
        // In flight weighs in: 12 waiting on a 5 ms backend cost more than one 55 ms answer.
        set_in_flight(&backends[0], 12);
        set_in_flight(&backends[1], 12);
        let picked = counts(&balancer, &backends, 300);
        assert!(
            (170..230).contains(&picked[2]),
            "it wins every pair it is in: {picked:?}"
        );
    }

    #[test]
    fn a_peak_counts_at_once_and_a_recovery_slowly() {
        let backends = equal_backends(1);
        let balancer = balancer(&backends, 11);
        balancer.observe(0, ms(10));
        balancer.clock.advance(ms(100));
        balancer.observe(0, ms(200));
        assert!((latency_ms(&balancer, 0) - 200.0).abs() < 1e-6);
        // One fast answer 100 ms later moves a 10 s average by about 1%.
        balancer.clock.advance(ms(100));
        balancer.observe(0, ms(10));
        let after = latency_ms(&balancer, 0);
        assert!((190.0..199.0).contains(&after), "{after}");
        // Thirty seconds of 10 ms answers bring it most of the way down.
        for _ in 0..300 {
            balancer.clock.advance(ms(100));
            balancer.observe(0, ms(10));
        }
        let later = latency_ms(&balancer, 0);
        assert!(later < 25.0, "{later}");
    }

    #[test]
    fn an_avoided_backend_is_tried_again_as_its_estimate_fades() {
        let backends = equal_backends(2);
        let balancer = balancer(&backends, 12);
        balancer.observe(0, ms(5));
        balancer.observe(1, ms(100));
        assert_eq!(counts(&balancer, &backends, 100), [100, 0]);
        // 40 s on: the fast one keeps answering in 5 ms, the slow one, avoided, has faded below it.
        for _ in 0..400 {
            balancer.clock.advance(ms(100));
            balancer.observe(0, ms(5));
        }
        assert!(
            latency_ms(&balancer, 1) < 5.0,
            "{}",
            latency_ms(&balancer, 1)
        );
        assert_eq!(counts(&balancer, &backends, 100), [0, 100]);
    }

    #[test]
    fn an_unmeasured_backend_is_probed_once_then_penalised() {
        let backends = equal_backends(2);
        let balancer = balancer(&backends, 13);
        balancer.observe(0, ms(20));
        // Nothing known about backend 1 and nothing in flight to it: it is tried.
        assert_eq!(counts(&balancer, &backends, 50), [0, 50]);
        // With its probe in flight and no answer yet, it costs as if it took a second.
        set_in_flight(&backends[1], 1);
        assert_eq!(counts(&balancer, &backends, 50), [50, 0]);
        set_in_flight(&backends[0], 120);
        assert_eq!(
            counts(&balancer, &backends, 50),
            [0, 50],
            "until the known one is that busy"
        );
    }

    #[test]
    fn the_short_form_of_the_fade_matches_exp() {
        for elapsed in [
            0,
            1,
            1_000,
            1_000_000,
            50_000_000,
            99_999_999,
            100_000_000,
            10_000_000_000,
        ] {
            let exact = (-(elapsed as f64) / DECAY.as_nanos() as f64).exp();
            assert!((remaining(elapsed) - exact).abs() < 1e-6, "{elapsed}");
        }
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let backends = equal_backends(3);
        let balancer = balancer(&backends, 14);
        let none = Candidates {
            backends: &backends,
            key: None,
            eligible: &|_| false,
        };
        assert_eq!(balancer.pick(&none), None);
        balancer.observe(7, ms(1)); // an index out of range is ignored
    }
}
