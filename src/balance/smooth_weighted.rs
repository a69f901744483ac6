//! Smooth weighted round robin (nginx's): backends take turns in proportion to their weights, interleaved rather
//! than in runs. Weights 5, 1, 1 give `a a b a c a a`, never five `a` in a row.
//!
//! Every backend has a running score. Each pick adds every eligible backend's effective weight to its score, takes
//! the backend of the highest score (the first in config order on a tie) and takes the total added off the winner.
//! Over a cycle of `sum of weights` picks each backend wins exactly its weight's turns. An ineligible backend is
//! left out of the round: its score stands still (it neither gains turns while down nor owes any when back), and
//! the others share its turns by weight. The effective weight is read at every pick, so slow start's ramp shows at
//! once.
//!
//! The scores are behind a mutex, as nginx keeps them per worker: a pick is one short, uncontended-in-the-common-case
//! critical section of `O(backends)` additions, with no allocation. Round robin's lock-free counter
//! (`round_robin.rs`) serves the pools whose weights are all equal and that do not ramp.

use std::sync::Mutex;

use super::{Balance, Candidates};

#[derive(Debug)]
pub struct SmoothWeighted {
    scores: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    /// For a pool of `len` backends.
    pub fn new(len: usize) -> Self {
        SmoothWeighted {
            scores: Mutex::new(vec![0; len]),
        }
    }
}

impl Balance for SmoothWeighted {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        // A panic while the lock was held (in a filter) leaves scores that are still valid numbers.
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        for (index, backend) in candidates.backends.iter().enumerate().take(scores.len()) {
            let weight = i64::from(backend.effective_weight());
            if weight == 0 || !(candidates.eligible)(index) {
                continue;
            }
            scores[index] += weight;
            total += weight;
            if best.is_none_or(|b| scores[index] > scores[b]) {
                best = Some(index);
            }
        }
        let best = best?;
        scores[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;

    fn sequence(weights: &[u32], picks: usize, eligible: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let backends = backends(weights);
        let swrr = SmoothWeighted::new(backends.len());
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible,
        };
        (0..picks)
            .map(|_| swrr.pick(&candidates).unwrap())
            .collect()
    }

    fn counts(sequence: &[usize], len: usize) -> Vec<usize> {
        let mut counts = vec![0; len];
        for &index in sequence {
            counts[index] += 1;
        }
        counts
    }

    #[test]
    fn weights_5_1_1_interleave_as_nginx_does() {
        let order = sequence(&[5, 1, 1], 14, &|_| true);
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
        let longest_run = order.chunk_by(|a, b| a == b).map(<[usize]>::len).max();
        assert!(longest_run < Some(5));
    }

    #[test]
    fn shares_are_exact_over_each_cycle() {
        assert_eq!(
            counts(&sequence(&[3, 1, 1], 1000, &|_| true), 3),
            [600, 200, 200]
        );
        assert_eq!(
            counts(&sequence(&[2, 0, 1], 300, &|_| true), 3),
            [200, 0, 100]
        );
    }

    #[test]
    fn an_ineligible_backend_is_left_out_without_giving_extra_turns() {
        // Backend 0 down: the others share by weight, 1:1.
        assert_eq!(
            counts(&sequence(&[3, 1, 1], 100, &|i| i != 0), 3),
            [0, 50, 50]
        );
        // Backend 1 down: 3:1 between the others.
        assert_eq!(
            counts(&sequence(&[3, 1, 1], 400, &|i| i != 1), 3),
            [300, 0, 100]
        );
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let backends = backends(&[1, 2]);
        let swrr = SmoothWeighted::new(2);
        let pick = |eligible: &dyn Fn(usize) -> bool| {
            swrr.pick(&Candidates {
                backends: &backends,
                key: None,
                eligible,
            })
        };
        assert_eq!(pick(&|_| false), None);
        let zero = super::super::testing::backends(&[0, 0]);
        let all_zero = SmoothWeighted::new(2).pick(&Candidates {
            backends: &zero,
            key: None,
            eligible: &|_| true,
        });
        assert_eq!(all_zero, None);
    }
}
