//! The three access log formats, each line written into a `String` the caller reuses.
//!
//! - `common`: the common log format as Apache and nginx write it, nothing added:
//!   `127.0.0.1 - - [10/Oct/2000:20:55:36 +0000] "GET /a HTTP/1.1" 200 12`.
//! - `combined`: the same plus `"referer" "user-agent"`, then `lb`'s own fields as `key=value` (as nginx users add
//!   theirs after the combined part; a parser of the combined format reads the line up to there):
//!   `backend=2 attempts=1 duration_ms=0.412 upstream_ms=0.355` (`-` for no backend or no response head).
//! - `json`: one object per line: `time` (RFC 3339, UTC), `client`, `method`, `target`, `protocol`, `status`, `bytes`,
//!   `duration_ms`, `backend` (id or null), `attempts`, `upstream_ms` (null when no response head came),
//!   `referer`, `user_agent`.
//!
//! A request whose head could not be read (refused, or unfinished: 400, 408, 414, 431) has no request line: `"-"`,
//! and nulls in JSON. Bytes a header may hold that would break a line (quotes, backslashes, control bytes, bytes
//! outside ASCII) are escaped as nginx does (`\x22`); JSON strings are escaped as JSON asks.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use super::date::Utc;
use crate::config::AccessLogFormat;
use crate::h1::request::RequestHead;
use crate::proxy::Record;

/// What an access log line says.
pub struct Line<'a> {
    pub peer: SocketAddr,
    /// The request's head, parsed and as read; `None` when it could not be read (refused, or unfinished).
    pub request: Option<(&'a RequestHead, &'a [u8])>,
    /// What the client was answered (499: nothing, it left).
    pub status: StatusCode,
    /// The backend that answered, or the one tried last when `lb` answered.
    pub backend: Option<u64>,
    pub record: Record,
    /// From the request's arrival to the end of its answer.
    pub took: Duration,
}

impl<'a> Line<'a> {
    /// The request line, as the client sent it (`GET /a HTTP/1.1`).
    fn request_line(&self) -> Option<&'a [u8]> {
        let (_, raw) = self.request?;
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        Some(&raw[..end])
    }

    /// The value of the first header called `name` (lowercase).
    fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        let (head, raw) = self.request?;
        let header = head
            .headers
            .iter()
            .find(|h| raw[h.name.clone()].eq_ignore_ascii_case(name))?;
        Some(&raw[header.value.clone()])
    }
}

/// Writes `line` in `format` into `out`, with its newline.
pub fn write(out: &mut String, format: AccessLogFormat, line: &Line<'_>, now: Utc) {
    match format {
        AccessLogFormat::Common | AccessLogFormat::Combined => {
            let combined = format == AccessLogFormat::Combined;
            write_text(out, line, now, combined);
        }
        AccessLogFormat::Json => write_json(out, line, now),
    }
    out.push('\n');
}

fn write_text(out: &mut String, line: &Line<'_>, now: Utc, combined: bool) {
    let _ = write!(out, "{} - - [", line.peer.ip());
    now.write_clf(out);
    out.push_str("] \"");
    match line.request_line() {
        Some(request) => escape_text(out, request),
        None => out.push('-'),
    }
    let _ = write!(
        out,
        "\" {} {}",
        line.status.as_u16(),
        line.record.body_bytes
    );
    if !combined {
        return;
    }
    for name in [&b"referer"[..], b"user-agent"] {
        out.push_str(" \"");
        match line.header(name) {
            Some(value) => escape_text(out, value),
            None => out.push('-'),
        }
        out.push('"');
    }
    out.push_str(" backend=");
    match line.backend {
        Some(id) => write!(out, "{id}"),
        None => write!(out, "-"),
    }
    .ok();
    let _ = write!(
        out,
        " attempts={} duration_ms={:.3} upstream_ms=",
        line.record.attempts,
        millis(line.took)
    );
    match line.record.upstream {
        Some(upstream) => write!(out, "{:.3}", millis(upstream)),
        None => write!(out, "-"),
    }
    .ok();
}

fn write_json(out: &mut String, line: &Line<'_>, now: Utc) {
    out.push_str("{\"time\":\"");
    now.write_rfc3339(out);
    let _ = write!(out, "\",\"client\":\"{}\"", line.peer.ip());
    let mut parts = line.request_line().map(|l| l.splitn(3, |&b| b == b' '));
    for key in ["method", "target", "protocol"] {
        let _ = write!(out, ",\"{key}\":");
        json_string(out, parts.as_mut().and_then(Iterator::next));
    }
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3},\"backend\":",
        line.status.as_u16(),
        line.record.body_bytes,
        millis(line.took)
    );
    match line.backend {
        Some(id) => write!(out, "{id}"),
        None => write!(out, "null"),
    }
    .ok();
    let _ = write!(
        out,
        ",\"attempts\":{},\"upstream_ms\":",
        line.record.attempts
    );
    match line.record.upstream {
        Some(upstream) => write!(out, "{:.3}", millis(upstream)),
        None => write!(out, "null"),
    }
    .ok();
    out.push_str(",\"referer\":");
    json_string(out, line.header(b"referer"));
    out.push_str(",\"user_agent\":");
    json_string(out, line.header(b"user-agent"));
    out.push('}');
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `bytes` inside a quoted field of a text line: printable ASCII as it is, but for `"` and `\`; everything else as
/// `\xHH` (nginx's escaping).
fn escape_text(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                let _ = write!(out, "\\x{b:02X}");
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

/// `bytes` as a JSON string (bytes that are not UTF-8 become U+FFFD), or `null`.
fn json_string(out: &mut String, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        out.push_str("null");
        return;
    };
    out.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::request;
    use std::time::UNIX_EPOCH;

    const RAW: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nReferer: http://r.example/\r\nUser-Agent: say \"hi\"\\\xe9\r\n\r\n";

    fn line_of(format: AccessLogFormat, head: Option<&request::RequestHead>) -> String {
        let line = Line {
            peer: "203.0.113.7:5000".parse().unwrap(),
            request: head.map(|head| (head, RAW)),
            status: StatusCode::OK,
            backend: Some(2),
            record: Record {
                attempts: 2,
                upstream: Some(Duration::from_micros(1500)),
                body_bytes: 12,
            },
            took: Duration::from_micros(2250),
        };
        let now = Utc::at(UNIX_EPOCH + Duration::from_secs(971_211_336));
        let mut out = String::new();
        write(&mut out, format, &line, now);
        out
    }

    #[test]
    fn text_formats() {
        let (head, _) = request::parse(RAW).unwrap().unwrap();
        let common = "203.0.113.7 - - [10/Oct/2000:20:55:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12";
        assert_eq!(
            line_of(AccessLogFormat::Common, Some(&head)),
            format!("{common}\n")
        );
        assert_eq!(
            line_of(AccessLogFormat::Combined, Some(&head)),
            format!("{common} \"http://r.example/\" \"say \\x22hi\\x22\\x5C\\xE9\" backend=2 attempts=2 duration_ms=2.250 upstream_ms=1.500\n")
        );
        assert_eq!(
            line_of(AccessLogFormat::Common, None),
            "203.0.113.7 - - [10/Oct/2000:20:55:36 +0000] \"-\" 200 12\n"
        );
    }

    #[test]
    fn json_format() {
        let (head, _) = request::parse(RAW).unwrap().unwrap();
        let line = line_of(AccessLogFormat::Json, Some(&head));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2000-10-10T20:55:36.000Z", "client": "203.0.113.7", "method": "GET", "target": "/a?b=1",
                "protocol": "HTTP/1.1", "status": 200, "bytes": 12, "duration_ms": 2.25, "backend": 2, "attempts": 2,
                "upstream_ms": 1.5, "referer": "http://r.example/", "user_agent": "say \"hi\"\\\u{fffd}",
            })
        );
        let none: serde_json::Value =
            serde_json::from_str(&line_of(AccessLogFormat::Json, None)).unwrap();
        assert_eq!(
            (&none["method"], &none["user_agent"]),
            (&serde_json::Value::Null, &serde_json::Value::Null)
        );
    }
}
