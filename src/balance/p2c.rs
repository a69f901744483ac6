//! Power of two random choices (P2C), shared by `least_request` and `peak_ewma`: draw two distinct eligible
//! backends by weight, send the request to the one of lower cost.
//!
//! Why two and not all: comparing two random backends avoids the worst ones almost as well as finding the best
//! (Mitzenmacher, "The Power of Two Choices"), reads two backends' state instead of every one, and does not send
//! a burst of requests from many workers to the same "best" backend on stale counts (the herd that a
//! least-of-all scan makes). Envoy, linkerd and Finagle balance so.
//!
//! How weights count: they decide how often a backend is drawn as a candidate, and each algorithm divides its cost
//! by the backend's effective weight. On a tie the first drawn wins, so at rest (nothing in flight: every cost 0)
//! a pick is exactly a weighted random one, and under load the in-flight requests spread in proportion to weight.
//!
//! When draws keep missing (few backends eligible: most down, full, or already tried), [`choose`] falls back to
//! a scan for the cheapest eligible backend.

use super::rng::Rng;
use super::weights::Weights;
use super::Candidates;

/// Draws per candidate before falling back to a scan.
const DRAWS: usize = 4;

/// The eligible backend of lower `cost` of two drawn by weight (ties: the first drawn); when draws miss, the scan
/// stands in for the draw that missed. `None` when no eligible backend has a weight above 0.
#[inline]
pub fn choose(
    candidates: &Candidates<'_>,
    weights: &Weights,
    rng: &Rng,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    let (backends, eligible) = (candidates.backends, candidates.eligible);
    let draw = |other: Option<usize>| {
        (0..DRAWS).find_map(|_| {
            weights
                .draw(rng, backends)
                .filter(|&i| Some(i) != other && eligible(i))
        })
    };
    let Some(first) = draw(None) else {
        return cheapest(candidates, None, rng, &cost);
    };
    // Without a second draw, the first is compared with the cheapest of the others (not forgotten: that would
    // take from the first drawn the ties it wins, and from the weights their say at rest).
    let Some(second) = draw(Some(first)).or_else(|| cheapest(candidates, Some(first), rng, &cost))
    else {
        return Some(first);
    };
    Some(if cost(second) < cost(first) {
        second
    } else {
        first
    })
}

/// The eligible backend of least cost but `except`, by a scan; among equally cheap ones, one chosen by weight.
fn cheapest(
    candidates: &Candidates<'_>,
    except: Option<usize>,
    rng: &Rng,
    cost: &impl Fn(usize) -> f64,
) -> Option<usize> {
    let mut chosen = None;
    let (mut least, mut tied_weight) = (f64::INFINITY, 0u64);
    for (index, backend) in candidates.backends.iter().enumerate() {
        let weight = u64::from(backend.effective_weight());
        if weight == 0 || Some(index) == except || !(candidates.eligible)(index) {
            continue;
        }
        let cost = cost(index);
        if cost < least || chosen.is_none() {
            (least, tied_weight, chosen) = (cost, weight, Some(index));
        } else if cost == least {
            tied_weight += weight;
            if rng.below(tied_weight) < weight {
                chosen = Some(index);
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;

    #[test]
    fn the_cheaper_of_two_wins() {
        let backends = backends(&[1, 1, 1]);
        let weights = Weights::new(&backends);
        let rng = Rng::seeded(3);
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible: &|_| true,
        };
        // Backend 2 is the cheapest: it wins every pair it is drawn into (2 of 3 pairs), never the most expensive.
        let costs = [5.0, 9.0, 1.0];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[choose(&candidates, &weights, &rng, |i| costs[i]).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!((1900..2100).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn a_scan_when_few_are_eligible() {
        let backends = backends(&[1; 50]);
        let weights = Weights::new(&backends);
        let rng = Rng::seeded(4);
        let only = |i: usize| i == 17 || i == 33;
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible: &only,
        };
        for _ in 0..100 {
            assert_eq!(choose(&candidates, &weights, &rng, |i| i as f64), Some(17));
        }
        let mut counts = [0; 50];
        for _ in 0..1000 {
            counts[choose(&candidates, &weights, &rng, |_| 0.0).unwrap()] += 1;
        }
        assert!(
            (400..600).contains(&counts[17]),
            "ties are shared: {}",
            counts[17]
        );
        let none = Candidates {
            backends: &backends,
            key: None,
            eligible: &|_| false,
        };
        assert_eq!(choose(&none, &weights, &rng, |_| 0.0), None);
    }
}
