//! Drawing a backend by weight, shared by `random` and the two choices of P2C (`least_request`, `peak_ewma`).
//!
//! The configured weights are fixed for a snapshot, so their running sums are computed once when the balancer is
//! built and a draw is a binary search (or one multiplication when every weight is equal: the common case costs no
//! search). Slow start lowers a backend's weight while it ramps up ([`Backend::effective_weight`]); rather than
//! rebuild the sums as it moves, a drawn backend is kept with probability `effective / configured` (rejection
//! sampling), which gives exactly the effective weights and costs nothing when no backend ramps.
//!
//! When few backends are eligible, draws mostly miss; then [`scan`] chooses among the eligible ones in one pass.

use std::sync::Arc;

use super::rng::Rng;
use crate::backend::Backend;

/// The running sums of the configured weights of a backend list.
#[derive(Debug)]
pub struct Weights {
    /// `cumulative[i]`: the sum of the weights of backends `0..=i`.
    cumulative: Vec<u64>,
    /// Every weight is the same (and not 0): a draw is uniform.
    uniform: bool,
}

impl Weights {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let cumulative = backends
            .iter()
            .scan(0u64, |sum, backend| {
                *sum += u64::from(backend.weight);
                Some(*sum)
            })
            .collect();
        let uniform = backends.first().is_some_and(|first| {
            first.weight > 0 && backends.iter().all(|b| b.weight == first.weight)
        });
        Weights {
            cumulative,
            uniform,
        }
    }

    /// An index drawn with probability `effective weight / sum of weights` (so a backend of weight 0 is never
    /// drawn); `None` when the draw fell on a share that slow start holds back, or every weight is 0. Eligibility
    /// is the caller's to check.
    #[inline]
    pub fn draw(&self, rng: &Rng, backends: &[Arc<Backend>]) -> Option<usize> {
        let index = if self.uniform {
            rng.below(backends.len() as u64) as usize
        } else {
            let total = *self.cumulative.last()?;
            if total == 0 {
                return None;
            }
            let point = rng.below(total);
            self.cumulative.partition_point(|&sum| sum <= point)
        };
        let backend = &backends[index];
        if backend.slow_start.is_some() {
            let (effective, full) = (backend.effective_weight(), backend.full_weight());
            if effective < full && rng.below(u64::from(full)) >= u64::from(effective) {
                return None;
            }
        }
        Some(index)
    }
}

/// An eligible backend chosen by effective weight in one pass over the list (weighted reservoir sampling: the
/// i-th eligible backend replaces the choice so far with probability `its weight / the weights seen so far`);
/// `None` when no eligible backend has a weight above 0.
pub fn scan(
    backends: &[Arc<Backend>],
    eligible: &dyn Fn(usize) -> bool,
    rng: &Rng,
) -> Option<usize> {
    let mut seen = 0u64;
    let mut chosen = None;
    for (index, backend) in backends.iter().enumerate() {
        let weight = u64::from(backend.effective_weight());
        if weight == 0 || !eligible(index) {
            continue;
        }
        seen += weight;
        if rng.below(seen) < weight {
            chosen = Some(index);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;

    fn shares(
        weights: &[u32],
        draws: usize,
        mut pick: impl FnMut(&[Arc<Backend>]) -> Option<usize>,
    ) -> Vec<f64> {
        let backends = backends(weights);
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..draws {
            if let Some(index) = pick(&backends) {
                counts[index] += 1;
            }
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn close(shares: &[f64], expected: &[f64], tolerance: f64) -> bool {
        shares
            .iter()
            .zip(expected)
            .all(|(s, e)| (s - e).abs() <= tolerance)
    }

    #[test]
    fn draws_follow_the_weights() {
        let rng = Rng::seeded(1);
        let weights = Weights::new(&backends(&[3, 1, 1, 0]));
        let drawn = shares(&[3, 1, 1, 0], 50_000, |b| weights.draw(&rng, b));
        assert!(close(&drawn, &[0.6, 0.2, 0.2, 0.0], 0.01), "{drawn:?}");
        assert_eq!(drawn[3], 0.0, "weight 0 is never drawn");

        let uniform = Weights::new(&backends(&[2, 2]));
        assert!(uniform.uniform);
        let drawn = shares(&[2, 2], 20_000, |b| uniform.draw(&rng, b));
        assert!(close(&drawn, &[0.5, 0.5], 0.01), "{drawn:?}");

        let nothing = Weights::new(&backends(&[0, 0]));
        assert_eq!(nothing.draw(&rng, &backends(&[0, 0])), None);
        assert_eq!(Weights::new(&[]).draw(&rng, &[]), None);
    }

    #[test]
    fn the_scan_follows_the_weights_of_the_eligible() {
        let rng = Rng::seeded(2);
        let drawn = shares(&[3, 1, 1], 50_000, |b| scan(b, &|i| i != 1, &rng));
        assert!(close(&drawn, &[0.75, 0.0, 0.25], 0.01), "{drawn:?}");
        assert_eq!(scan(&backends(&[1, 1]), &|_| false, &rng), None);
        assert_eq!(scan(&backends(&[0, 0]), &|_| true, &rng), None);
    }
}
