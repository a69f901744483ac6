//! The balancing keys as a file writes them (issue 11): `balance`, `hash_key`, `hash_bound`, `[passive_health]`,
//! `[slow_start]` and `[retries]`, at the top level and (but for `[retries]`) in each `[pools.NAME]` table.
//!
//! As everywhere in the file layer, each value is checked while it is read, so a bad one is refused with its line,
//! column and key path. What depends on several keys (a `hash_key` with a `balance` that does not hash, what a pool
//! inherits from the top level) is decided afterwards, by [`Balancing::resolve`], with the key path alone.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::duration::PositiveDuration;
use super::numbers::{AtLeastOne, BudgetPercent, Percent};
use super::{Algorithm, BalanceConfig, HashKey, PassiveHealth, Retries};

/// The default `[slow_start] window`, as in the example and HAProxy's common `slowstart 30s`.
const DEFAULT_SLOW_START: Duration = Duration::from_secs(30);

/// `hash_key` as written: `client_ip`, `path`, `header:NAME` (stored lowercase) or `cookie:NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct FileHashKey(pub HashKey);

impl TryFrom<String> for FileHashKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let named = |kind: &str, name: &str| -> Result<String, String> {
            if name.is_empty() {
                return Err(format!(
                    "{kind}: needs a name after the colon, e.g. {kind}:x-user"
                ));
            }
            // A header name and a cookie name are both RFC 9110 tokens (RFC 6265 §4.1.1 for cookies).
            match name.bytes().find(|&b| !is_token_byte(b)) {
                Some(_) => Err(format!(
                    "{name:?} is not a {} name (letters, digits and !#$%&'*+-.^_`|~ only)",
                    match kind {
                        "header" => "header",
                        _ => "cookie",
                    }
                )),
                None => Ok(name.to_owned()),
            }
        };
        let key = match text.split_once(':') {
            None if text == "client_ip" => HashKey::ClientIp,
            None if text == "path" => HashKey::Path,
            Some(("header", name)) => HashKey::Header(named("header", name)?.to_ascii_lowercase()),
            Some(("cookie", name)) => HashKey::Cookie(named("cookie", name)?),
            _ => {
                return Err(format!(
                    "expected client_ip, path, header:NAME or cookie:NAME, got {text:?}"
                ))
            }
        };
        Ok(FileHashKey(key))
    }
}

/// A byte of an RFC 9110 token (`tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `hash_bound`: a number greater than 1 (1.25: no backend takes a request while it has more than 1.25 × the
/// average in flight).
#[derive(Debug, Clone, Copy)]
pub struct HashBound(pub f64);

impl<'de> Deserialize<'de> for HashBound {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(HashBoundVisitor)
            .map(HashBound)
    }
}

struct HashBoundVisitor;

impl Visitor<'_> for HashBoundVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number greater than 1, such as 1.25")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        match v.is_finite() && v > 1.0 {
            true => Ok(v),
            false => Err(E::custom(format!(
                "must be a number greater than 1 (1.25: at most 1.25 × the average load), got {v}"
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

/// `[passive_health]` as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of passive health settings")]
pub struct FilePassiveHealth {
    pub consecutive_failures: Option<AtLeastOne>,
    pub base_ejection: Option<PositiveDuration>,
    pub max_ejected_percent: Option<Percent>,
}

impl FilePassiveHealth {
    fn resolve(&self) -> PassiveHealth {
        let default = PassiveHealth::default();
        PassiveHealth {
            consecutive_failures: self
                .consecutive_failures
                .map_or(default.consecutive_failures, |n| n.0),
            base_ejection: self.base_ejection.map_or(default.base_ejection, |d| d.0),
            max_ejected_percent: self
                .max_ejected_percent
                .map_or(default.max_ejected_percent, |p| p.0),
        }
    }
}

/// `[slow_start]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of slow start settings")]
pub struct FileSlowStart {
    pub window: Option<PositiveDuration>,
}

/// `[retries]` as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of retry settings")]
pub struct FileRetries {
    pub budget_percent: Option<BudgetPercent>,
    pub max_attempts: Option<AtLeastOne>,
}

impl FileRetries {
    pub fn resolve(&self) -> Retries {
        let default = Retries::default();
        Retries {
            budget_percent: self.budget_percent.map_or(default.budget_percent, |p| p.0),
            max_attempts: self.max_attempts.map_or(default.max_attempts, |n| n.0),
        }
    }
}

/// The balancing keys of one table (the top level or a `[pools.NAME]`), as written.
#[derive(Debug, Default)]
pub struct Balancing {
    pub balance: Option<Algorithm>,
    pub hash_key: Option<FileHashKey>,
    pub hash_bound: Option<HashBound>,
    pub passive_health: Option<FilePassiveHealth>,
    pub slow_start: Option<FileSlowStart>,
}

/// What a table's balancing comes to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub balance: BalanceConfig,
    pub passive_health: Option<PassiveHealth>,
    pub slow_start: Option<Duration>,
}

impl Balancing {
    /// The settings of the table at `place` (`""` for the top level, `pools.api.` for a pool: the key path before
    /// its keys), each key not written taken from `inherited` (the top level's, for a pool) or its default.
    ///
    /// `hash_key` and `hash_bound` written where the balance (written or inherited) is not `consistent_hash` are
    /// errors: they would silently do nothing. A pool that hashes inherits the top level's `hash_key` and
    /// `hash_bound` only when the top level hashes too.
    pub fn resolve(&self, place: &str, inherited: Option<&Resolved>) -> Result<Resolved, String> {
        let parent = inherited.map(|r| &r.balance);
        let algorithm = self
            .balance
            .or(parent.map(|b| b.algorithm))
            .unwrap_or_default();
        let hashing = algorithm == Algorithm::ConsistentHash;
        let written = [
            ("hash_key", self.hash_key.is_some()),
            ("hash_bound", self.hash_bound.is_some()),
        ];
        if let Some((key, _)) = written.iter().find(|(_, set)| *set && !hashing) {
            return Err(format!(
                "{place}{key}: applies only to balance = \"consistent_hash\" (the balance here is \"{}\")",
                algorithm.as_str()
            ));
        }
        let parent_hashes = parent.filter(|b| b.algorithm == Algorithm::ConsistentHash);
        let balance = match hashing {
            false => BalanceConfig {
                algorithm,
                ..BalanceConfig::default()
            },
            true => BalanceConfig {
                algorithm,
                hash_key: match &self.hash_key {
                    Some(key) => key.0.clone(),
                    None => parent_hashes
                        .map(|b| b.hash_key.clone())
                        .unwrap_or_default(),
                },
                hash_bound: match self.hash_bound {
                    Some(bound) => Some(bound.0),
                    None => parent_hashes.and_then(|b| b.hash_bound),
                },
            },
        };
        Ok(Resolved {
            balance,
            passive_health: match &self.passive_health {
                Some(table) => Some(table.resolve()),
                None => inherited.and_then(|r| r.passive_health.clone()),
            },
            slow_start: match &self.slow_start {
                Some(table) => Some(table.window.map_or(DEFAULT_SLOW_START, |d| d.0)),
                None => inherited.and_then(|r| r.slow_start),
            },
        })
    }
}
