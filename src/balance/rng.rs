//! The randomness of the balancers that draw (random, the two choices of P2C, a keyless consistent-hash pick):
//! splitmix64 over one `AtomicU64` per balancer.
//!
//! A draw is one `fetch_add` and a few multiplications: no lock, no allocation, no thread-local, and shared by every
//! worker like round robin's counter. Splitmix64 is built for exactly this (its state only ever advances by a
//! fixed odd constant, so a concurrent `fetch_add` never loses or repeats a state). A balancer built for a snapshot
//! seeds it from the process's randomness ([`Rng::from_entropy`]); unit tests and the simulation seed it with a
//! fixed number ([`Rng::seeded`]), so their draws are the same on every run.
//!
//! Not for anything secret: the point is spreading requests, not unpredictability.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Splitmix64's increment (the golden ratio, odd).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug)]
pub struct Rng {
    state: AtomicU64,
}

impl Rng {
    /// The same draws on every run, for tests.
    pub fn seeded(seed: u64) -> Self {
        Rng {
            state: AtomicU64::new(seed),
        }
    }

    /// Seeded from the process's randomness (std's per-process `RandomState` keys), so two balancers, or two `lb`
    /// processes, do not draw in lockstep.
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(GAMMA);
        Rng::seeded(hasher.finish())
    }

    pub fn next_u64(&self) -> u64 {
        let state = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        mix64(state)
    }

    /// A number in `0..bound` (0 when `bound` is 0), by multiply-and-shift rather than `%` (no division; the bias
    /// is below 2⁻³² for any bound a balancer uses).
    pub fn below(&self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Splitmix64's finaliser: every input bit moves every output bit. A fixed function (no seed), so what it mixes
/// for consistent hashing is the same in every process.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_spread() {
        let (a, b) = (Rng::seeded(42), Rng::seeded(42));
        let draws: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(draws, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[a.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn the_mixer_is_a_fixed_function() {
        // Consistent hashing relies on this value never changing between builds.
        assert_eq!(mix64(0), 0);
        // Splitmix64's first output from state 0, as published with the algorithm.
        assert_eq!(mix64(GAMMA), 0xe220_a839_7b1d_cdaf);
    }
}
