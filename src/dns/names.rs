//! The last answer of every backend host name, and when to ask again.
//!
//! Addresses are kept in a sticky order: a new answer keeps the addresses it shares with the last one where they
//! were, and puts the new ones after them. So the first address (what `resolve = "first"` uses) changes only when
//! the name no longer resolves to it, not each time a DNS server rotates its answers.
//!
//! A lookup that fails, or finds no address, changes nothing but the time of the next one: a DNS server that stops
//! answering leaves the backends where they were (their health checks tell whether they still serve), and an empty
//! answer, which may be a transient state of a service registry, does not empty a pool. The first failure of a run
//! is warned about, then at most one line a minute per name, and the return is logged.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::resolver::Answer;

/// How soon a name is asked again at the earliest, whatever its TTL (0 included).
const MIN_TTL: Duration = Duration::from_secs(1);
/// How soon a name whose lookup failed is asked again at the latest (sooner when `resolve_interval` is shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// At most one warning about a name that keeps failing per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What is known of every backend host name.
#[derive(Debug, Default)]
pub struct Names {
    known: HashMap<String, Known>,
}

#[derive(Debug)]
struct Known {
    /// In sticky order (see the module doc); empty until the name first resolved.
    addrs: Vec<IpAddr>,
    /// When to ask again.
    next: Instant,
    /// Failures in a row, and when the last warning about them was logged.
    failures: u32,
    warned: Option<Instant>,
}

impl Names {
    /// The addresses `host` last resolved to (none: it never has).
    pub fn addrs(&self, host: &str) -> &[IpAddr] {
        self.known.get(host).map_or(&[], |known| &known.addrs)
    }

    /// Forgets the names not in `hosts` (their backends are gone).
    pub fn retain(&mut self, hosts: &BTreeSet<String>) {
        self.known.retain(|host, _| hosts.contains(host));
    }

    /// The names to ask again at `now`.
    pub fn due(&self, now: Instant) -> Vec<String> {
        let due = self.known.iter().filter(|(_, known)| known.next <= now);
        due.map(|(host, _)| host.clone()).collect()
    }

    /// When the next name is due (`None`: there is no name).
    pub fn next_due(&self) -> Option<Instant> {
        self.known.values().map(|known| known.next).min()
    }

    /// Records what a lookup of `host` came to at `now`; names are asked again after `interval` (or the answer's
    /// TTL when shorter). Answers whether its addresses changed.
    pub fn record(
        &mut self,
        host: &str,
        looked_up: Result<Answer, String>,
        now: Instant,
        interval: Duration,
    ) -> bool {
        let known = self.known.entry(host.to_owned()).or_insert_with(|| Known {
            addrs: Vec::new(),
            next: now,
            failures: 0,
            warned: None,
        });
        match looked_up {
            Ok(answer) => {
                known.next = now + refresh_after(answer.ttl, interval);
                if known.failures > 0 && !known.addrs.is_empty() {
                    let failures = known.failures;
                    tracing::info!(host, failures, "{host} resolves again");
                }
                known.failures = 0;
                known.warned = None;
                let merged = sticky(&known.addrs, &answer.addrs);
                let changed = merged != known.addrs;
                known.addrs = merged;
                changed
            }
            Err(error) => {
                known.next = now + interval.min(RETRY_AFTER_FAILURE);
                known.failures += 1;
                if known.warned.is_none_or(|at| now >= at + WARN_EVERY) {
                    known.warned = Some(now);
                    let failures = known.failures;
                    match known.addrs.is_empty() {
                        true => tracing::warn!(
                            host,
                            failures,
                            "cannot resolve {host}: {error}: its backends stay down until it resolves"
                        ),
                        false => tracing::warn!(
                            host,
                            failures,
                            "cannot resolve {host}: {error}: keeping its last addresses {}",
                            list(&known.addrs)
                        ),
                    }
                }
                false
            }
        }
    }
}

/// How long an answer is used before the name is asked again: `interval`, or the answer's TTL when shorter (but
/// never less than [`MIN_TTL`], so a TTL of 0 does not make a query loop).
fn refresh_after(ttl: Option<Duration>, interval: Duration) -> Duration {
    match ttl {
        Some(ttl) => interval.min(ttl.max(MIN_TTL)),
        None => interval,
    }
}

/// `answer`'s addresses, those also in `last` first and in `last`'s order, then the new ones in `answer`'s.
fn sticky(last: &[IpAddr], answer: &[IpAddr]) -> Vec<IpAddr> {
    let kept = last.iter().filter(|ip| answer.contains(ip));
    let new = answer.iter().filter(|ip| !last.contains(ip));
    kept.chain(new).copied().collect()
}

fn list(addrs: &[IpAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    addrs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn answer(addrs: &[u8], ttl: Option<u64>) -> Result<Answer, String> {
        Ok(Answer {
            addrs: addrs.iter().map(|&last| ip(last)).collect(),
            ttl: ttl.map(Duration::from_secs),
        })
    }

    #[test]
    fn a_rotated_answer_keeps_the_first_address_and_changes_nothing() {
        let (mut names, now, interval) =
            (Names::default(), Instant::now(), Duration::from_secs(30));
        assert!(names.record("api", answer(&[2, 3, 4], None), now, interval));
        assert!(!names.record("api", answer(&[4, 2, 3], None), now, interval));
        assert_eq!(names.addrs("api"), [ip(2), ip(3), ip(4)]);

        // The first address gone: the next one it had leads, the new one comes last.
        assert!(names.record("api", answer(&[5, 4, 3], None), now, interval));
        assert_eq!(names.addrs("api"), [ip(3), ip(4), ip(5)]);
    }

    #[test]
    fn a_failure_or_an_empty_answer_keeps_the_last_addresses() {
        let (mut names, now, interval) =
            (Names::default(), Instant::now(), Duration::from_secs(30));
        assert!(!names.record("api", Err("timed out".into()), now, interval));
        assert!(names.addrs("api").is_empty(), "never resolved");
        assert!(names.record("api", answer(&[2], None), now, interval));
        assert!(!names.record("api", Err("timed out".into()), now, interval));
        assert_eq!(names.addrs("api"), [ip(2)]);
        assert_eq!(names.next_due(), Some(now + RETRY_AFTER_FAILURE));
    }

    #[test]
    fn a_name_is_asked_again_after_the_interval_or_its_shorter_ttl() {
        let interval = Duration::from_secs(30);
        let secs = Duration::from_secs;
        assert_eq!(refresh_after(None, interval), interval);
        assert_eq!(refresh_after(Some(secs(10)), interval), secs(10));
        assert_eq!(refresh_after(Some(secs(300)), interval), interval);
        assert_eq!(refresh_after(Some(secs(0)), interval), MIN_TTL);
        assert_eq!(
            refresh_after(Some(secs(0)), Duration::from_millis(200)),
            Duration::from_millis(200)
        );

        let (mut names, now) = (Names::default(), Instant::now());
        names.record("a", answer(&[2], Some(10)), now, interval);
        names.record("b", answer(&[3], None), now, interval);
        assert_eq!(names.next_due(), Some(now + secs(10)));
        assert!(names.due(now + secs(9)).is_empty());
        assert_eq!(names.due(now + secs(10)), ["a"]);

        names.retain(&BTreeSet::from(["b".to_owned()]));
        assert_eq!(names.next_due(), Some(now + interval));
    }
}
