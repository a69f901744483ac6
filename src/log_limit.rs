//! Log lines that cannot flood: the first event of a kind is logged in full, the ones that follow within a second
//! are counted, and one line a second sums them up.
//!
//! A dead backend fails every request sent to it until its health checks take it out (`fall × interval`), and a
//! process out of file descriptors fails every `accept`: thousands of identical lines a second, which hide
//! everything else and cost more than the failures themselves. Events are keyed by what happened, to what and why
//! ([`Key`]); [`first`] answers whether the caller should log this one in full, and [`flush`] (run once a second by
//! the server) writes the sum of the rest: `backend 2: 4,812 requests retried elsewhere in the last 1 s: connection
//! refused`. Only failures pass through here (a lock per event is fine there), never the path of a request that
//! succeeds.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long events of one kind are counted before they are summed up in one line.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Backend(u64),
    Accept,
    /// Connecting to backends, when it fails for a local reason (no backend in particular).
    Backends,
}

/// A kind of event: its subject, what happened (a plural noun phrase: `requests retried elsewhere`) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub subject: Subject,
    pub what: &'static str,
    pub reason: &'static str,
}

#[derive(Debug)]
struct Counted {
    /// Events since the last line about this key.
    since_logged: u64,
    last_logged: Instant,
}

static COUNTS: LazyLock<Mutex<HashMap<Key, Counted>>> = LazyLock::new(Default::default);

/// Records an event of kind `key`: true when the caller should log it in full (the first of its kind for a
/// while); otherwise it is counted into the next summary line.
pub fn first(key: Key) -> bool {
    let now = Instant::now();
    let mut counts = COUNTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match counts.get_mut(&key) {
        Some(counted) => {
            counted.since_logged += 1;
            false
        }
        None => {
            counts.insert(
                key,
                Counted {
                    since_logged: 0,
                    last_logged: now,
                },
            );
            true
        }
    }
}

/// Writes one summary line per kind with events counted since its last line, and forgets kinds that have been
/// quiet for a window (so their next event is logged in full again).
pub fn flush() {
    let now = Instant::now();
    let mut lines = Vec::new();
    {
        let mut counts = COUNTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.retain(|key, counted| {
            // A window is taken as over a little early: flushes come a window apart, give or take a tick.
            let waited = now.saturating_duration_since(counted.last_logged) + WINDOW / 4;
            if counted.since_logged > 0 && waited >= WINDOW {
                lines.push(Summary {
                    key: *key,
                    count: counted.since_logged,
                    over: waited - WINDOW / 4,
                });
                counted.since_logged = 0;
                counted.last_logged = now;
                true
            } else {
                counted.since_logged > 0 || waited < WINDOW
            }
        });
    }
    for line in lines {
        tracing::warn!("{line}");
    }
}

/// Runs [`flush`] every [`WINDOW`], forever (the server runs it on its control runtime).
pub async fn flush_every_window() {
    let mut ticks = tokio::time::interval(WINDOW);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        flush();
    }
}

struct Summary {
    key: Key,
    count: u64,
    over: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Key {
            subject,
            what,
            reason,
        } = self.key;
        let count = Thousands(self.count);
        let over = self.over.as_secs_f64().round().max(1.0);
        match subject {
            Subject::Backend(id) => write!(
                f,
                "backend {id}: {count} more {what} in the last {over} s: {reason}"
            ),
            Subject::Accept => write!(f, "accept: {reason} (×{count} in {over} s)"),
            Subject::Backends => write!(
                f,
                "backends: {count} more {what} in the last {over} s: {reason}"
            ),
        }
    }
}

/// A count with thousands separators: `4,812`.
struct Thousands(u64);

impl fmt::Display for Thousands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                f.write_str(",")?;
            }
            write!(f, "{digit}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_of_a_kind_is_logged_the_rest_counted() {
        let key = Key {
            subject: Subject::Backend(u64::MAX),
            what: "requests retried elsewhere",
            reason: "connection refused",
        };
        assert!(first(key));
        assert!(!first(key));
        assert!(!first(key));
        let other = Key {
            reason: "connection reset",
            ..key
        };
        assert!(first(other), "another reason is another kind");
        let counts = COUNTS.lock().unwrap();
        assert_eq!(counts[&key].since_logged, 2);
    }

    #[test]
    fn summaries_read_well() {
        let key = Key {
            subject: Subject::Backend(2),
            what: "requests retried elsewhere",
            reason: "connection refused",
        };
        let line = Summary {
            key,
            count: 4812,
            over: Duration::from_millis(1003),
        };
        assert_eq!(
            line.to_string(),
            "backend 2: 4,812 more requests retried elsewhere in the last 1 s: connection refused"
        );
        let accept = Summary {
            key: Key {
                subject: Subject::Accept,
                what: "",
                reason: "too many open files",
            },
            count: 312,
            over: Duration::from_secs(1),
        };
        assert_eq!(
            accept.to_string(),
            "accept: too many open files (×312 in 1 s)"
        );
        assert_eq!(Thousands(1_234_567).to_string(), "1,234,567");
        assert_eq!(Thousands(999).to_string(), "999");
    }
}
