//! Durations as people write them: `10`, `0.5`, `500ms`, `2s`, `1.5s`, `1m`, `1h`.
//!
//! One parser serves the command line (`--interval`, `--drain-timeout`) and the config file, so a value that works in
//! one place works in the other. In a file a duration may also be a bare number (integer or float seconds); the serde
//! newtypes here accept both shapes and reject bad values *inside* deserialization, so the parser's error carries the
//! line and column of the offending value. Messages are short fragments ("must not be negative") because the caller
//! prefixes them with the flag or the file position and key path.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The longest duration `lb` takes anywhere (7 days): far beyond any sensible timeout or interval, and small enough
/// that no deadline computed from it (now + duration, milliseconds in a `u32`) can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration: a non-negative number of seconds, optionally followed by a unit (`ms`, `s`, `m`, `h`), at most
/// [`MAX_DURATION`].
///
/// Zero is accepted; callers for which zero makes no sense reject it themselves.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_unbounded(s).and_then(at_most_max)
}

fn at_most_max(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err("too large: at most 168h (7 days)".to_string());
    }
    Ok(d)
}

fn parse_unbounded(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration (use e.g. 10, 0.5, 500ms, 2s, 1m)".to_string());
    }
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = (s[..split].trim_end(), &s[split..]);
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ if number.is_empty() => {
            return Err(format!(
                "invalid duration \"{s}\" (use e.g. 10, 0.5, 500ms, 2s, 1m)"
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\" in \"{s}\" (use ms, s, m or h)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration \"{s}\" (use e.g. 10, 0.5, 500ms, 2s, 1m)"))?;
    // Whole numbers take the exact integer path so that e.g. `100ms` is exactly 100 ms, not a rounded float.
    if let Ok(whole) = number.parse::<u64>() {
        let exact = match unit {
            "ms" => Some(Duration::from_millis(whole)),
            "" | "s" => Some(Duration::from_secs(whole)),
            "m" => whole.checked_mul(60).map(Duration::from_secs),
            _ => whole.checked_mul(3600).map(Duration::from_secs),
        };
        return exact.ok_or_else(|| format!("duration \"{s}\" is too large"));
    }
    from_seconds(value * seconds_per_unit)
}

/// Converts a number of seconds, rejecting negative, NaN, infinite and out-of-range values.
fn from_seconds(seconds: f64) -> Result<Duration, String> {
    if seconds.is_nan() {
        return Err("not a number".to_string());
    }
    if seconds < 0.0 {
        return Err("must not be negative".to_string());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| "duration is too large".to_string())
}

/// A duration in a config file, zero allowed (e.g. `drain = 0`: exit without waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDuration(pub Duration);

/// A duration in a config file that must be greater than zero (intervals and timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveDuration(pub Duration);

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(DurationVisitor { positive: false })
            .map(FileDuration)
    }
}

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(DurationVisitor { positive: true })
            .map(PositiveDuration)
    }
}

struct DurationVisitor {
    positive: bool,
}

impl DurationVisitor {
    fn check<E: de::Error>(&self, parsed: Result<Duration, String>) -> Result<Duration, E> {
        match parsed.and_then(at_most_max) {
            Ok(d) if self.positive && d.is_zero() => Err(E::custom("must be greater than 0")),
            Ok(d) => Ok(d),
            Err(e) => Err(E::custom(e)),
        }
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a duration: seconds (5, 0.5) or a string with a unit (\"500ms\", \"2s\", \"1m\")",
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.check(Ok(Duration::from_secs(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom("must not be negative")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        self.check(from_seconds(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        self.check(parse_duration(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_duration(s).expect_err(s)
    }

    #[test]
    fn accepts_numbers_and_units() {
        assert_eq!(ok("10"), Duration::from_secs(10));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("100ms"), Duration::from_millis(100));
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok(" 2 s "), Duration::from_secs(2));
        assert_eq!(ok("1.5ms"), Duration::from_micros(1500));
    }

    #[test]
    fn rejects_bad_input_with_a_short_message() {
        assert!(err("").contains("empty duration"));
        assert!(err("   ").contains("empty duration"));
        assert_eq!(err("-1"), "must not be negative");
        assert_eq!(err("-0.5s"), "must not be negative");
        assert!(err("NaN").starts_with("invalid duration \"NaN\""));
        assert!(err("inf").starts_with("invalid duration \"inf\""));
        assert!(err("abc").starts_with("invalid duration \"abc\""));
        assert!(err("1.2.3s").starts_with("invalid duration \"1.2.3s\""));
        assert_eq!(
            err("5x"),
            "unknown unit \"x\" in \"5x\" (use ms, s, m or h)"
        );
        assert_eq!(
            err("5 days"),
            "unknown unit \"days\" in \"5 days\" (use ms, s, m or h)"
        );
        assert!(err("1e3").starts_with("unknown unit \"e3\""));
        assert!(err("99999999999999999999999").contains("too large"));
        assert!(err("18446744073709551615h").contains("too large"));
        assert_eq!(err("169h"), "too large: at most 168h (7 days)");
        assert_eq!(ok("168h"), MAX_DURATION);
        assert_eq!(err("604801"), "too large: at most 168h (7 days)");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Both {
        any: FileDuration,
        positive: PositiveDuration,
    }

    fn json(text: &str) -> Result<Both, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn serde_accepts_numbers_and_strings() {
        let both = json(r#"{"any": 0, "positive": "250ms"}"#).unwrap();
        assert_eq!(both.any.0, Duration::ZERO);
        assert_eq!(both.positive.0, Duration::from_millis(250));
        let both = json(r#"{"any": 1.5, "positive": 3}"#).unwrap();
        assert_eq!(both.any.0, Duration::from_millis(1500));
        assert_eq!(both.positive.0, Duration::from_secs(3));
    }

    #[test]
    fn serde_rejects_negative_zero_and_wrong_types() {
        let e = json(r#"{"any": -1, "positive": 1}"#).unwrap_err();
        assert!(e.starts_with("must not be negative at line 1"), "{e}");
        let e = json(r#"{"any": -0.5, "positive": 1}"#).unwrap_err();
        assert!(e.starts_with("must not be negative at line 1"), "{e}");
        let e = json(r#"{"any": 1, "positive": 0}"#).unwrap_err();
        assert!(e.starts_with("must be greater than 0 at line 1"), "{e}");
        let e = json(r#"{"any": 1, "positive": "0s"}"#).unwrap_err();
        assert!(e.starts_with("must be greater than 0 at line 1"), "{e}");
        let e = json(r#"{"any": 1e12, "positive": 1}"#).unwrap_err();
        assert!(e.starts_with("too large: at most 168h (7 days)"), "{e}");
        let e = json(r#"{"any": 1, "positive": 18446744073709551615}"#).unwrap_err();
        assert!(e.starts_with("too large: at most 168h (7 days)"), "{e}");
        let e = json(r#"{"any": true, "positive": 1}"#).unwrap_err();
        assert!(
            e.starts_with("invalid type: boolean `true`, expected a duration"),
            "{e}"
        );
    }
}
