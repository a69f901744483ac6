//! The retry budget: retries may add at most `budget_percent` % on top of recent requests, with a floor of
//! `RETRY_FLOOR_PER_SECOND` a second (as Envoy's and Finagle's retry budgets), so that when every backend fails a
//! retry storm does not multiply the load on them.
//!
//! STUB (issue 11, in progress): allows every retry.

/// Recent requests and retries, shared by every worker and carried from snapshot to snapshot.
#[derive(Debug)]
pub struct RetryBudget {}

impl RetryBudget {
    /// A budget for `workers` workers, with no request seen yet.
    pub fn new(_workers: usize) -> Self {
        RetryBudget {}
    }

    /// Counts one request (its first attempt), on `worker`'s own counter.
    #[inline]
    pub fn request(&self, _worker: usize) {}

    /// Whether one more retry fits in the budget of `percent` %; if it does, it is counted.
    pub fn try_retry(&self, _percent: u32) -> bool {
        true
    }
}
