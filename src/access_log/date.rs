//! Wall-clock time as access logs write it, in UTC: `10/Oct/2000:13:55:36 +0000` (the common log format's) and
//! `2000-10-10T13:55:36.123Z` (RFC 3339, for JSON). Written here rather than with a date crate: two formats, one
//! calendar conversion.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// A moment split into the fields the formats need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Utc {
    pub fn now() -> Utc {
        Utc::at(SystemTime::now())
    }

    /// `time` (before 1970 counts as 1970: a clock that far off has no better answer).
    pub fn at(time: SystemTime) -> Utc {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since.as_secs();
        let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
        let of_day = (seconds % 86_400) as u32;
        Utc {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            millis: since.subsec_millis(),
        }
    }

    /// `10/Oct/2000:13:55:36 +0000`.
    pub fn write_clf(&self, out: &mut String) {
        let month = MONTHS[(self.month - 1) as usize];
        let _ = write!(
            out,
            "{:02}/{month}/{:04}:{:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        );
    }

    /// `2000-10-10T13:55:36.123Z`.
    pub fn write_rfc3339(&self, out: &mut String) {
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        );
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64, millis: u64) -> Utc {
        Utc::at(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis))
    }

    #[test]
    fn both_formats() {
        // The common log format's own example: 10/Oct/2000:13:55:36 -0700 is 20:55:36 UTC.
        let time = at(971_211_336, 7);
        let mut out = String::new();
        time.write_clf(&mut out);
        assert_eq!(out, "10/Oct/2000:20:55:36 +0000");
        out.clear();
        time.write_rfc3339(&mut out);
        assert_eq!(out, "2000-10-10T20:55:36.007Z");
    }

    #[test]
    fn calendar_edges() {
        let date = |seconds| {
            let mut out = String::new();
            at(seconds, 0).write_rfc3339(&mut out);
            out
        };
        assert_eq!(date(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(date(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(date(1_709_251_199), "2024-02-29T23:59:59.000Z");
        assert_eq!(date(4_102_444_800), "2100-01-01T00:00:00.000Z");
    }
}
