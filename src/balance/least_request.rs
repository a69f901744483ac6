//! Least request: power of two random choices (`p2c.rs`) over the requests in flight, weighted.
//!
//! A backend's cost is its requests in flight divided by its effective weight (nginx's `least_conn` compares
//! `conns / weight` the same way), so under load in-flight requests spread in proportion to weight: a backend of
//! weight 2 is as busy as one of weight 1 with half its requests. The count is the backend's RAII in-flight count
//! (`crate::backend::InFlight`): it covers a request until its response ends, however it ends, and is shared by
//! every worker. A slow backend keeps its requests longer, so it shows more in flight and gets fewer new ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::p2c;
use super::rng::Rng;
use super::weights::Weights;
use super::{Balance, Candidates};
use crate::backend::Backend;

#[derive(Debug)]
pub struct LeastRequest {
    weights: Weights,
    rng: Rng,
}

impl LeastRequest {
    pub fn new(backends: &[Arc<Backend>], rng: Rng) -> Self {
        LeastRequest {
            weights: Weights::new(backends),
            rng,
        }
    }
}

impl Balance for LeastRequest {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let backends = candidates.backends;
        p2c::choose(candidates, &self.weights, &self.rng, |i| {
            let backend = &backends[i];
            let in_flight = backend.state.in_flight.load(Ordering::Relaxed) as f64;
            in_flight / f64::from(backend.effective_weight().max(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, counts, equal_backends, set_in_flight};

    #[test]
    fn prefers_the_backend_with_fewer_in_flight() {
        let backends = equal_backends(3);
        let balancer = LeastRequest::new(&backends, Rng::seeded(5));
        set_in_flight(&backends[0], 10);
        set_in_flight(&backends[1], 3);
        set_in_flight(&backends[2], 0);
        let picked = counts(&balancer, &backends, 3000);
        // The busiest loses every pair; the idlest wins both of its pairs.
        assert_eq!(picked[0], 0, "{picked:?}");
        assert!((1900..2100).contains(&picked[2]), "{picked:?}");
    }

    #[test]
    fn in_flight_is_compared_relative_to_weight() {
        let backends = backends(&[4, 1]);
        let balancer = LeastRequest::new(&backends, Rng::seeded(6));
        // 6 in flight on weight 4 (1.5 each) is less loaded than 2 on weight 1.
        set_in_flight(&backends[0], 6);
        set_in_flight(&backends[1], 2);
        assert_eq!(counts(&balancer, &backends, 100), [100, 0]);
    }

    #[test]
    fn at_rest_picks_follow_the_weights() {
        let backends = backends(&[3, 1, 1]);
        let balancer = LeastRequest::new(&backends, Rng::seeded(7));
        let picked = counts(&balancer, &backends, 10_000);
        for (count, expected) in picked.iter().zip([6000, 2000, 2000]) {
            assert!(count.abs_diff(expected) < 200, "{picked:?}");
        }
    }

    #[test]
    fn spreads_load_evenly_when_requests_stay() {
        // Every pick stays in flight: the counts stay within a few of each other.
        let backends = equal_backends(4);
        let balancer = LeastRequest::new(&backends, Rng::seeded(8));
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible: &|_| true,
        };
        let guards: Vec<_> = (0..400)
            .map(|_| backends[balancer.pick(&candidates).unwrap()].state.enter())
            .collect();
        let loads: Vec<usize> = backends
            .iter()
            .map(|b| b.state.in_flight.load(Ordering::Relaxed))
            .collect();
        assert!(loads.iter().all(|&l| l.abs_diff(100) <= 3), "{loads:?}");
        drop(guards);
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let backends = equal_backends(3);
        let balancer = LeastRequest::new(&backends, Rng::seeded(9));
        let none = Candidates {
            backends: &backends,
            key: None,
            eligible: &|_| false,
        };
        assert_eq!(balancer.pick(&none), None);
        let zero = super::super::testing::backends(&[0, 0]);
        let all = Candidates {
            backends: &zero,
            key: None,
            eligible: &|_| true,
        };
        assert_eq!(LeastRequest::new(&zero, Rng::seeded(9)).pick(&all), None);
    }
}
