//! The `health_check` table as a file writes it (top level, and in each `[pools.NAME]`): the path, the statuses
//! that pass, and the counts and durations, each checked as it is read.

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::PositiveDuration;
use super::numbers::{AtLeastOne, Bounded};
use super::HealthKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of health check settings")]
pub struct FileHealth {
    pub path: Option<HealthPath>,
    pub interval: Option<PositiveDuration>,
    pub timeout: Option<PositiveDuration>,
    pub rise: Option<AtLeastOne>,
    pub fall: Option<AtLeastOne>,
    pub statuses: Option<Statuses>,
    /// `http` (a GET) or `tcp` (a connect); the default is `tcp` in TCP mode, else `http`.
    #[serde(rename = "type")]
    pub kind: Option<HealthKind>,
}

const STATUS: Bounded = Bounded {
    what: "status",
    min: 100,
    max: 599,
};

/// The health check path: it goes verbatim into a request line, so it must be an absolute path without spaces.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct HealthPath(pub String);

impl TryFrom<String> for HealthPath {
    type Error = String;

    fn try_from(path: String) -> Result<Self, String> {
        if !path.starts_with('/') {
            Err(format!("must start with '/', got {path:?}"))
        } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!(
                "must not contain spaces or control characters, got {path:?}"
            ))
        } else {
            Ok(HealthPath(path))
        }
    }
}

/// The statuses that pass a health check: a non-empty list of statuses (`404`) and ranges (`"200-399"`).
#[derive(Debug, Clone)]
pub struct Statuses(pub Vec<RangeInclusive<u16>>);

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(StatusesVisitor).map(Statuses)
    }
}

struct StatusesVisitor;

impl<'de> Visitor<'de> for StatusesVisitor {
    type Value = Vec<RangeInclusive<u16>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of statuses and ranges, such as [\"200-399\", 404]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ranges = Vec::new();
        while let Some(StatusRange(range)) = seq.next_element()? {
            ranges.push(range);
        }
        if ranges.is_empty() {
            return Err(de::Error::custom("no statuses: no check could ever pass"));
        }
        Ok(ranges)
    }
}

struct StatusRange(RangeInclusive<u16>);

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusRangeVisitor)
    }
}

struct StatusRangeVisitor;

impl Visitor<'_> for StatusRangeVisitor {
    type Value = StatusRange;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a status such as 404 or a range such as \"200-399\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
        let status = STATUS.check(i128::from(v))? as u16;
        Ok(StatusRange(status..=status))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusRange, E> {
        let bad = |why: String| E::custom(format!("bad status range {s:?}: {why}"));
        let number = |part: &str| -> Result<u16, E> {
            let n: i128 = part.trim().parse().map_err(|_| {
                bad("expected a status such as 404 or a range such as \"200-399\"".to_string())
            })?;
            let status = STATUS.check::<serde::de::value::Error>(n);
            status.map(|n| n as u16).map_err(|e| bad(e.to_string()))
        };
        let (low, high) = match s.split_once('-') {
            Some((low, high)) => (number(low)?, number(high)?),
            None => (number(s)?, number(s)?),
        };
        if low > high {
            return Err(bad(format!("{low} is above {high}")));
        }
        Ok(StatusRange(low..=high))
    }
}
