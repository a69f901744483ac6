//! Consistent hashing: Maglev (Eisenbud et al., NSDI 2016), weighted, with an optional bound on load.
//!
//! A lookup table of `M` entries (a prime: [`table_size`]) is filled once per snapshot, each backend taking
//! entries in the order of its own permutation of `0..M` (`offset + j × skip mod M`) until the table is full; a
//! request goes to `table[hash(key) mod M]`. Every backend ends up with an almost equal share of the entries (or
//! one in proportion to its weight), and removing one of N backends moves little more than the 1/N of the keys it
//! had: with `M ≥ 100 × N` the other backends keep nearly all of theirs.
//!
//! - **The same everywhere**: a backend's permutation comes from hashing `"{id}@{addr}"` (its identity, e.g.
//!   `2@10.0.0.7:8080`) with FNV-1a 64 ([`super::key_hash`]) mixed by splitmix64's finaliser ([`mix64`]), and the
//!   request key is mixed the same way: fixed, specified functions with no per-process seed. So every `lb` process
//!   with the same backends builds the same table, and a key goes to the same backend whichever process serves it.
//! - **Weights**: backends fill the table in rounds; in round `r` a backend takes a turn while `r × weight` has not
//!   fallen behind the turns it took × the highest weight (Envoy's weighted Maglev), so it fills entries in
//!   proportion to its weight. Weight 0: no entries.
//! - **An ineligible backend** (down, full, already tried): its keys go to the next entries of the table (`i+1`,
//!   `i+2`, …), which spread them over the others by the table's own shares; every other key stays where it was.
//! - **Slow start**: a ramping backend keeps the share `effective / configured weight` of its keys (chosen by a
//!   second hash of the key, so the same keys come back first) and passes the others on as if it were ineligible
//!   (when every eligible backend ramps and passes a key on, the first of them takes it).
//! - **Bounded load** (`hash_bound = c`, Google's "consistent hashing with bounded loads"): a backend with
//!   `in flight + 1 > ceil(c × (in flight of the eligible + 1) / eligible count)` is passed over like an ineligible
//!   one. The ceiling makes room for at least one backend, so a pick always finds one.
//! - **No key** (a request without one): a random entry of the table, so a weighted random pick.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::rng::{mix64, Rng};
use super::{key_hash, Balance, Candidates};
use crate::backend::Backend;

/// Mixed into a backend's name hash for its skip, so offset and skip are independent.
const SKIP_SEED: u64 = 0x5bd1_e995_7f4a_7c15;
/// Mixed into a key's hash for slow start's choice of the keys a ramping backend keeps.
const RAMP_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// The table's size for `backends` members: 65,537 (Envoy's default, a prime) while that is at least 100 per
/// backend, else the smallest prime ≥ 100 × backends.
pub fn table_size(backends: usize) -> usize {
    const DEFAULT: usize = 65_537;
    let least = 100 * backends.max(1);
    if least <= DEFAULT {
        return DEFAULT;
    }
    (least..)
        .find(|&n| is_prime(n))
        .expect("primes do not run out")
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[derive(Debug)]
pub struct Maglev {
    /// Backend indexes; empty when no backend has a weight.
    table: Vec<u32>,
    /// How many backends have entries (those of weight above 0).
    members: usize,
    /// `hash_bound`.
    bound: Option<f64>,
    /// For requests without a key.
    rng: Rng,
}

impl Maglev {
    pub fn new(backends: &[Arc<Backend>], bound: Option<f64>, rng: Rng) -> Self {
        Maglev {
            table: fill(backends),
            members: backends.iter().filter(|b| b.weight > 0).count(),
            bound,
            rng,
        }
    }
}

/// One backend filling the table: where its permutation starts, its step, how far along it is.
struct Filler {
    index: u32,
    weight: u64,
    offset: u64,
    skip: u64,
    next: u64,
    /// The rounds × highest weight it has taken turns for.
    owed: u64,
}

fn fill(backends: &[Arc<Backend>]) -> Vec<u32> {
    let mut fillers: Vec<Filler> = backends
        .iter()
        .enumerate()
        .filter(|(_, backend)| backend.weight > 0)
        .map(|(index, backend)| {
            let name = key_hash(format!("{}@{}", backend.id, backend.addr).as_bytes());
            Filler {
                index: index as u32,
                weight: u64::from(backend.weight),
                offset: mix64(name),
                skip: mix64(name ^ SKIP_SEED),
                next: 0,
                owed: 0,
            }
        })
        .collect();
    if fillers.is_empty() {
        return Vec::new();
    }
    let size = table_size(fillers.len());
    let modulus = size as u64;
    for filler in &mut fillers {
        filler.offset %= modulus;
        filler.skip = filler.skip % (modulus - 1) + 1;
    }
    let highest = fillers.iter().map(|f| f.weight).max().unwrap_or(1);
    let mut table = vec![u32::MAX; size];
    let mut filled = 0;
    'rounds: for round in 1u64.. {
        for filler in &mut fillers {
            if round * filler.weight < filler.owed {
                continue;
            }
            filler.owed += highest;
            let mut entry;
            loop {
                entry = ((filler.offset + filler.next * filler.skip) % modulus) as usize;
                filler.next += 1;
                if table[entry] == u32::MAX {
                    break;
                }
            }
            table[entry] = filler.index;
            filled += 1;
            if filled == size {
                break 'rounds;
            }
        }
    }
    table
}

impl Balance for Maglev {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let size = self.table.len();
        if size == 0 {
            return None;
        }
        let (backends, eligible) = (candidates.backends, candidates.eligible);
        let key = candidates.key.unwrap_or_else(|| self.rng.next_u64());
        let cap = self.bound.map(|bound| load_cap(candidates, bound));
        let ramp = mix64(key ^ RAMP_SEED) >> 32;
        let keeps = |index: usize| {
            let backend = &backends[index];
            if backend.slow_start.is_none() {
                return true;
            }
            let (effective, weight) = (backend.effective_weight(), backend.full_weight());
            effective >= weight
                || u128::from(ramp) * u128::from(weight) < u128::from(effective) << 32
        };
        // Each backend is looked at once however often it comes up; the probe stops when every one has been.
        let mut seen = Seen::new(backends.len(), self.members);
        let mut passed_over = None;
        let start = (mix64(key) % size as u64) as usize;
        for step in 0..size {
            let index = self.table[(start + step) % size] as usize;
            if index >= backends.len() || !seen.first_time(index) {
                continue;
            }
            if eligible(index) {
                let in_flight = backends[index].state.in_flight.load(Ordering::Relaxed);
                if keeps(index) && cap.is_none_or(|cap| in_flight < cap) {
                    return Some(index);
                }
                passed_over.get_or_insert(index);
            }
            if seen.all() {
                break;
            }
        }
        // Every eligible backend was passed over: all ramping up and this key not among those they keep yet, or
        // all over the cap (only when counts move during the pick). A ramp or a bound spreads requests; it never
        // refuses one: the first of them.
        passed_over
    }
}

/// The most requests in flight a backend may have after taking this one.
fn load_cap(candidates: &Candidates<'_>, bound: f64) -> usize {
    let (mut total, mut count) = (0usize, 0usize);
    for (index, backend) in candidates.backends.iter().enumerate() {
        if (candidates.eligible)(index) {
            total += backend.state.in_flight.load(Ordering::Relaxed);
            count += 1;
        }
    }
    (bound * (total + 1) as f64 / count.max(1) as f64).ceil() as usize
}

/// Which backends a probe has looked at, on the stack for pools of up to 1,024 backends (larger pools probe
/// without stopping early: the table's size bounds the probe).
struct Seen {
    bits: [u64; 16],
    tracked: bool,
    remaining: usize,
}

impl Seen {
    /// For a probe of a table of `members` of `backends`.
    fn new(backends: usize, members: usize) -> Self {
        Seen {
            bits: [0; 16],
            tracked: backends <= 16 * 64,
            remaining: members,
        }
    }

    fn first_time(&mut self, index: usize) -> bool {
        if !self.tracked {
            return true;
        }
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.remaining -= 1;
        true
    }

    fn all(&self) -> bool {
        self.tracked && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::balance::testing::{backends, equal_backends, set_in_flight};

    /// The id of the backend each of `keys` goes to.
    fn placement(
        maglev: &Maglev,
        backends: &[Arc<Backend>],
        keys: &[u64],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<u64> {
        keys.iter()
            .map(|&key| {
                let candidates = Candidates {
                    backends,
                    key: Some(key),
                    eligible,
                };
                backends[maglev.pick(&candidates).expect("a backend")].id
            })
            .collect()
    }

    fn keys(count: usize) -> Vec<u64> {
        let rng = Rng::seeded(30);
        (0..count).map(|_| rng.next_u64()).collect()
    }

    fn entries(maglev: &Maglev, backends: usize) -> Vec<usize> {
        let mut counts = vec![0; backends];
        for &index in &maglev.table {
            counts[index as usize] += 1;
        }
        counts
    }

    #[test]
    fn table_sizes_are_primes_of_at_least_100_per_backend() {
        assert_eq!(table_size(1), 65_537);
        assert_eq!(table_size(655), 65_537);
        assert_eq!(table_size(656), 65_609);
        assert_eq!(table_size(1000), 100_003);
        assert!(is_prime(65_537) && is_prime(65_609) && !is_prime(65_600));
    }

    #[test]
    fn every_backend_gets_its_weighted_share_of_the_table() {
        let equal = Maglev::new(&equal_backends(7), None, Rng::seeded(1));
        let counts = entries(&equal, 7);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");

        let weighted = Maglev::new(&backends(&[3, 1, 1, 0]), None, Rng::seeded(1));
        let counts = entries(&weighted, 4);
        let size = weighted.table.len() as f64;
        for (count, share) in counts.iter().zip([0.6, 0.2, 0.2, 0.0]) {
            assert!((*count as f64 / size - share).abs() < 0.001, "{counts:?}");
        }
    }

    #[test]
    fn two_builds_give_the_same_table_in_every_build_of_lb() {
        let first = Maglev::new(&equal_backends(5), None, Rng::seeded(1));
        let second = Maglev::new(&equal_backends(5), None, Rng::seeded(2));
        assert_eq!(first.table, second.table);
        // Pinned: a change here moves every user's keys to other backends on upgrade (and splits a fleet running
        // two versions). Backends 1..=5 at 127.0.0.1:8001..8005.
        assert_eq!(&first.table[..12], [1, 2, 3, 0, 0, 3, 2, 1, 2, 2, 4, 1]);
        let sum: u64 = first
            .table
            .iter()
            .enumerate()
            .map(|(i, &b)| i as u64 * u64::from(b))
            .sum();
        assert_eq!(sum, 4_295_767_394, "pinned");
    }

    #[test]
    fn removing_one_of_n_moves_about_its_share_of_the_keys() {
        let keys = keys(100_000);
        for n in [5usize, 10, 30] {
            let all = equal_backends(n);
            let before = placement(
                &Maglev::new(&all, None, Rng::seeded(1)),
                &all,
                &keys,
                &|_| true,
            );
            let removed = all[n / 2].id;
            let rest: Vec<_> = all.iter().filter(|b| b.id != removed).cloned().collect();
            let after = placement(
                &Maglev::new(&rest, None, Rng::seeded(1)),
                &rest,
                &keys,
                &|_| true,
            );
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            let moved_elsewhere = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b != a && **b != removed)
                .count();
            let share = moved as f64 / keys.len() as f64;
            assert!(share <= 1.2 / n as f64, "{n} backends: {share}");
            // Maglev moves a few keys between the others too (the price of its even spread): very few here.
            assert!(
                (moved_elsewhere as f64 / keys.len() as f64) < 0.2 / n as f64,
                "{n} backends: {moved_elsewhere}"
            );
        }
    }

    #[test]
    fn an_ineligible_backends_keys_spread_over_the_others_and_no_other_key_moves() {
        let keys = keys(60_000);
        let backends = equal_backends(4);
        let maglev = Maglev::new(&backends, None, Rng::seeded(1));
        let before = placement(&maglev, &backends, &keys, &|_| true);
        let after = placement(&maglev, &backends, &keys, &|i| i != 1);
        let mut went_to: HashMap<u64, usize> = HashMap::new();
        for (b, a) in before.iter().zip(&after) {
            if *b == 2 {
                *went_to.entry(*a).or_default() += 1;
            } else {
                assert_eq!(b, a, "only the ineligible backend's keys move");
            }
        }
        assert_eq!(went_to.get(&2), None);
        let moved: usize = went_to.values().sum();
        // Each other backend takes a part (how large depends on which entries follow the ineligible one's).
        for id in [1, 3, 4] {
            let share = went_to[&id] as f64 / moved as f64;
            assert!(share > 0.5 / 3.0, "{went_to:?}");
        }
    }

    #[test]
    fn bounded_load_passes_a_hot_key_on() {
        let backends = equal_backends(4);
        let maglev = Maglev::new(&backends, Some(1.25), Rng::seeded(1));
        let hot = Candidates {
            backends: &backends,
            key: Some(42),
            eligible: &|_| true,
        };
        let home = maglev.pick(&hot).unwrap();
        // Every request of one key, each staying in flight: its backend takes them until it holds 1.25 × the
        // average, then the next in the table's order do.
        let guards: Vec<_> = (0..200)
            .map(|_| backends[maglev.pick(&hot).unwrap()].state.enter())
            .collect();
        let loads: Vec<usize> = backends
            .iter()
            .map(|b| b.state.in_flight.load(Ordering::Relaxed))
            .collect();
        let cap = (1.25f64 * 200.0 / 4.0).ceil() as usize;
        assert!(loads.iter().all(|&l| l <= cap), "{loads:?}");
        assert!(loads[home] >= cap - 1, "{loads:?}");
        drop(guards);
        // Without the bound, the key stays home.
        let unbounded = Maglev::new(&backends, None, Rng::seeded(1));
        set_in_flight(&backends[home], 1000);
        assert_eq!(unbounded.pick(&hot), Some(home));
        assert_ne!(maglev.pick(&hot), Some(home));
    }

    #[test]
    fn without_a_key_picks_are_weighted_random() {
        let backends = backends(&[3, 1, 1]);
        let maglev = Maglev::new(&backends, None, Rng::seeded(3));
        let candidates = Candidates {
            backends: &backends,
            key: None,
            eligible: &|_| true,
        };
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[maglev.pick(&candidates).unwrap()] += 1;
        }
        for (count, expected) in counts.iter().zip([6000, 2000, 2000]) {
            assert!(count.abs_diff(expected) < 200, "{counts:?}");
        }
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let backends = equal_backends(3);
        for bound in [None, Some(1.25)] {
            let maglev = Maglev::new(&backends, bound, Rng::seeded(1));
            let none = Candidates {
                backends: &backends,
                key: Some(7),
                eligible: &|_| false,
            };
            assert_eq!(maglev.pick(&none), None);
        }
        let zero = super::super::testing::backends(&[0, 0]);
        let maglev = Maglev::new(&zero, None, Rng::seeded(1));
        assert!(maglev.table.is_empty());
        let all = Candidates {
            backends: &zero,
            key: Some(7),
            eligible: &|_| true,
        };
        assert_eq!(maglev.pick(&all), None);
    }
}
