//! A cheap monotonic clock for a backend's live state: milliseconds since the process first asked.
//!
//! An `Instant` does not fit in an atomic; a count of milliseconds does, so the deadlines and starts kept beside a
//! backend's health (when its ejection ends, when its slow start began) are single `AtomicU64`s that the data plane
//! reads with one relaxed load, and compares with this clock only when one is set. Milliseconds are fine enough for
//! ejections of seconds and ramps of tens of seconds.
//!
//! The logic that uses it takes "now" as a parameter, so that its tests run on a clock of their own.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call (monotonic, never goes back).
pub fn now_ms() -> u64 {
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_back() {
        let first = now_ms();
        let second = now_ms();
        assert!(second >= first);
    }
}
