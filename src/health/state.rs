//! The rise/fall state machine of one backend: pure, so it is tested without sockets or clocks.
//!
//! Hysteresis as in HAProxy: an up backend goes down after `fall` consecutive failed checks, a down backend comes
//! back after `rise` consecutive passed checks. Only flips are reported, so only flips are logged.

/// What one check result did to the backend's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    /// The backend just went down after this many consecutive failures.
    Down(u32),
    /// The backend just came back after this many consecutive passes.
    Up(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl HealthState {
    /// Starts in the state the first check found (so no hysteresis delays the first verdict).
    pub fn new(up: bool, rise: u32, fall: u32) -> Self {
        HealthState {
            up,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    #[cfg(test)]
    fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check result; returns the flip it caused, if any.
    pub fn record(&mut self, passed: bool) -> Option<Flip> {
        if passed == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = passed;
        self.streak = 0;
        Some(if passed {
            Flip::Up(needed)
        } else {
            Flip::Down(needed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_fall_consecutive_failures() {
        let mut state = HealthState::new(true, 2, 3);
        assert_eq!(state.record(false), None);
        assert_eq!(state.record(false), None);
        assert_eq!(state.record(false), Some(Flip::Down(3)));
        assert!(!state.is_up());
        assert_eq!(state.record(false), None, "only the flip is reported");
    }

    #[test]
    fn a_pass_resets_the_failure_streak() {
        let mut state = HealthState::new(true, 2, 3);
        state.record(false);
        state.record(false);
        assert_eq!(state.record(true), None);
        assert_eq!(state.record(false), None);
        assert_eq!(state.record(false), None);
        assert!(state.is_up());
        assert_eq!(state.record(false), Some(Flip::Down(3)));
    }

    #[test]
    fn comes_back_after_rise_consecutive_passes() {
        let mut state = HealthState::new(false, 2, 3);
        assert_eq!(state.record(true), None);
        assert_eq!(
            state.record(false),
            None,
            "a failure resets the pass streak"
        );
        assert_eq!(state.record(true), None);
        assert_eq!(state.record(true), Some(Flip::Up(2)));
        assert!(state.is_up());
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut state = HealthState::new(true, 1, 1);
        assert_eq!(state.record(false), Some(Flip::Down(1)));
        assert_eq!(state.record(true), Some(Flip::Up(1)));
    }
}
