//! Passive health: what real traffic says about a backend (outlier ejection).
//!
//! STUB (issue 11, in progress): records nothing.

use std::sync::Arc;
use std::time::Duration;

use super::Backend;
use crate::config::PassiveHealth;

/// What one attempt on a backend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// It answered with this status, this long after the attempt started.
    Answered { status: u16, took: Duration },
    /// The connection could not be made (refused, unreachable, timed out).
    ConnectFailed,
    /// It was connected but failed before a whole answer: reset, closed, timed out.
    Failed,
}

/// Records what an attempt on `backend` (a member of `pool`) came to: with `passive` set, a run of failures ejects
/// it; without, a run of connect failures takes it out until its next passed health check.
pub fn observe(
    _backend: &Backend,
    _observed: Observed,
    _passive: Option<&PassiveHealth>,
    _pool: &[Arc<Backend>],
) {
}
