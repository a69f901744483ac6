//! Round robin over the eligible backends, in config order (weights and request keys play no part).
//!
//! One shared counter, advanced with `fetch_add` for every position looked at. Skipping an ineligible backend also
//! advances the counter, so the turn of a down backend passes to the next one *once* rather than the next backend
//! taking two turns: with N eligible backends, k×N picks give each exactly k when sequential, and k ±1 under
//! concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balance, Candidates};

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balance for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let (len, eligible) = (candidates.len(), candidates.eligible);
        if len == 0 {
            return None;
        }
        // At most one full turn: after `len` positions every backend has been looked at once, unless other
        // threads took turns in between; then a scan from the last position looked at, which does not move the
        // counter, still finds an eligible backend if there is one.
        let mut index = 0;
        for _ in 0..len {
            index = self.next.fetch_add(1, Ordering::Relaxed) % len;
            if eligible(index) {
                return Some(index);
            }
        }
        (1..len)
            .map(|step| (index + step) % len)
            .find(|&i| eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::Backend;

    /// Picks one of `len` backends (numbered 0..len) with `eligible` as the filter.
    fn pick(rr: &RoundRobin, len: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let backends = backends(len);
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible,
        };
        rr.pick(&candidates)
    }

    fn backends(len: usize) -> Vec<Arc<Backend>> {
        let config = |id: usize| crate::config::BackendConfig {
            id: id as u64,
            host: "127.0.0.1".into(),
            port: 8000 + id as u16,
            addr: ([127, 0, 0, 1], 8000 + id as u16).into(),
            options: Default::default(),
            weight: 1,
            max_connections: None,
            resolve: Default::default(),
        };
        (0..len)
            .map(|id| Arc::new(Backend::new(&config(id), None, 1)))
            .collect()
    }

    fn counts(
        rr: &RoundRobin,
        len: usize,
        picks: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let backends = backends(len);
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible,
        };
        let mut counts = vec![0; len];
        for _ in 0..picks {
            counts[rr.pick(&candidates).expect("an eligible backend")] += 1;
        }
        counts
    }

    #[test]
    fn rotates_in_config_order() {
        let rr = RoundRobin::default();
        let order: Vec<_> = (0..7).map(|_| pick(&rr, 3, &|_| true).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn an_eligible_backend_is_found_while_other_threads_take_turns() {
        let rr = RoundRobin::default();
        // Every look at a position, another thread takes a turn: the shared counter alone would only ever show
        // this request positions 0 and 2 of 4.
        let only_one = |i: usize| {
            rr.next.fetch_add(1, Ordering::Relaxed);
            i == 1
        };
        for _ in 0..10 {
            assert_eq!(pick(&rr, 4, &only_one), Some(1));
        }
        assert_eq!(pick(&rr, 4, &|_| false), None);
    }

    #[test]
    fn a_down_backend_does_not_give_its_neighbour_a_double_turn() {
        let rr = RoundRobin::default();
        assert_eq!(counts(&rr, 3, 300, &|i| i != 1), [150, 0, 150]);
        let rr = RoundRobin::default();
        assert_eq!(counts(&rr, 4, 300, &|i| i != 0), [0, 100, 100, 100]);
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let rr = RoundRobin::default();
        assert_eq!(pick(&rr, 3, &|_| false), None);
        assert_eq!(pick(&rr, 0, &|_| true), None);
    }

    #[test]
    fn fair_under_concurrency() {
        let rr = std::sync::Arc::new(RoundRobin::default());
        let per_thread: Vec<Vec<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| counts(&rr, 3, 3000, &|_| true)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: Vec<usize> = (0..3)
            .map(|i| per_thread.iter().map(|c| c[i]).sum())
            .collect();
        assert_eq!(total, [4000, 4000, 4000]);
    }
}
