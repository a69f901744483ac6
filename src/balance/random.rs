//! Weighted random: each request goes to a backend drawn with probability proportional to its effective weight.
//!
//! No shared position to advance and nothing to compare, so it spreads evenly without any coordination between
//! workers (or between several `lb` processes, where round robins started together would move in step). A drawn
//! backend that is not eligible is drawn again, a few times; then a scan chooses by weight among the eligible.

use std::sync::Arc;

use super::rng::Rng;
use super::weights::{self, Weights};
use super::{Balance, Candidates};
use crate::backend::Backend;

/// Draws before falling back to a scan.
const DRAWS: usize = 4;

#[derive(Debug)]
pub struct Random {
    weights: Weights,
    rng: Rng,
}

impl Random {
    pub fn new(backends: &[Arc<Backend>], rng: Rng) -> Self {
        Random {
            weights: Weights::new(backends),
            rng,
        }
    }
}

impl Balance for Random {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let (backends, eligible) = (candidates.backends, candidates.eligible);
        (0..DRAWS)
            .find_map(|_| {
                self.weights
                    .draw(&self.rng, backends)
                    .filter(|&i| eligible(i))
            })
            .or_else(|| weights::scan(backends, eligible, &self.rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;

    fn counts(weights: &[u32], picks: usize, eligible: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let backends = backends(weights);
        let random = Random::new(&backends, Rng::seeded(20));
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible,
        };
        let mut counts = vec![0; backends.len()];
        for _ in 0..picks {
            counts[random.pick(&candidates).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn shares_follow_the_weights() {
        let picked = counts(&[3, 1, 1], 20_000, &|_| true);
        for (count, expected) in picked.iter().zip([12_000, 4_000, 4_000]) {
            assert!(count.abs_diff(expected) < 300, "{picked:?}");
        }
    }

    #[test]
    fn an_ineligible_backend_shares_out_by_weight() {
        let picked = counts(&[2, 1, 1], 20_000, &|i| i != 0);
        assert_eq!(picked[0], 0);
        assert!(picked[1].abs_diff(10_000) < 300, "{picked:?}");
        // One eligible among many: found by the scan when draws miss.
        let picked = counts(&[1; 40], 100, &|i| i == 39);
        assert_eq!(picked[39], 100);
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let backends = backends(&[1, 1, 0]);
        let random = Random::new(&backends, Rng::seeded(21));
        let pick = |eligible: &dyn Fn(usize) -> bool| {
            random.pick(&Candidates {
                backends: &backends,
                key: None,
                eligible,
            })
        };
        assert_eq!(pick(&|_| false), None);
        assert_eq!(pick(&|i| i == 2), None, "weight 0 takes no new requests");
    }
}
