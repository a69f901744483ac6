//! Reading a backend's response head.
//!
//! The backend is trusted more than a client, but not to be well-formed: whatever it sends, the client must get
//! a message whose end is unambiguous. So a response whose length could be read two ways is refused (the client
//! gets 502), and one with no length at all is read until the backend closes.

use http::StatusCode;

use super::{
    contains_token, names_headers, offset, parse_content_length, BodyLength, Header, MAX_HEADERS,
};

/// Response heads larger than this are refused (502).
pub const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The reason phrase, as a range of the head's bytes.
    pub reason: std::ops::Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<Header>,
    pub body: BodyLength,
    /// The Content-Length the backend stated (for HEAD and 304 it describes a body that is not sent).
    pub content_length: Option<u64>,
    /// The backend will keep the connection open after this response.
    pub keep_alive: bool,
    pub connection_names: bool,
    /// `Transfer-Encoding` names codings other than `chunked` (e.g. `gzip, chunked`): the client must be told them.
    pub transfer_codings: bool,
    /// `Keep-Alive: timeout=N`: how long (seconds) the backend keeps the connection open while idle.
    pub keep_alive_timeout: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad response from backend: {0}")]
pub struct BadResponse(pub &'static str);

/// Parses the head at the start of `buf` (`Ok(None)`: not complete yet). `head_request`: the request was HEAD, so
/// no body follows whatever the headers say.
pub fn parse(buf: &[u8], head_request: bool) -> Result<Option<(ResponseHead, usize)>, BadResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(BadResponse("head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse("malformed head")),
    };
    if length > MAX_HEAD {
        return Err(BadResponse("head too large"));
    }
    // 1xx to 5xx: a status of no class (600 and up) has no meaning a client could act on.
    let status = match response.code.unwrap_or(0) {
        code @ 100..=599 => StatusCode::from_u16(code).map_err(|_| BadResponse("bad status"))?,
        _ => return Err(BadResponse("bad status")),
    };
    let minor = response.version.unwrap_or(1);
    let reason = offset(buf, response.reason.unwrap_or_default().as_bytes());

    let mut headers = Vec::with_capacity(response.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut transfer_codings = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut connection_names = false;
    let mut keep_alive_timeout = None;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let length =
                parse_content_length(field.value).ok_or(BadResponse("bad Content-Length"))?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(BadResponse("conflicting Content-Length"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in field.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                if chunked_last {
                    // `chunked, chunked` or `chunked, gzip`: no client could tell where such a body ends.
                    return Err(BadResponse("chunked is not the last transfer coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_last = true;
                } else {
                    transfer_codings = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive_timeout = announced_timeout(field.value).or(keep_alive_timeout);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_names |= names_headers(field.value);
            close |= contains_token(field.value, b"close");
            keep_alive |= contains_token(field.value, b"keep-alive");
        }
        headers.push(Header {
            name: offset(buf, name),
            value: offset(buf, field.value),
        });
    }

    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = if minor == 1 {
        !close
    } else {
        keep_alive && !close
    };
    let body = if no_body {
        BodyLength::Empty
    } else if transfer_encoding {
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length; without a final `chunked` the body runs to
        // the close. Either way the connection is not trusted for another request.
        if content_length.is_some() {
            keep_alive = false;
        }
        if chunked_last {
            BodyLength::Chunked
        } else {
            keep_alive = false;
            BodyLength::UntilClose
        }
    } else {
        match content_length {
            Some(0) => BodyLength::Empty,
            Some(length) => BodyLength::Length(length),
            None => {
                keep_alive = false;
                BodyLength::UntilClose
            }
        }
    };
    let head = ResponseHead {
        status,
        reason,
        minor,
        headers,
        body,
        content_length,
        keep_alive,
        connection_names,
        transfer_codings,
        keep_alive_timeout,
    };
    Ok(Some((head, length)))
}

/// The `timeout=N` parameter of a `Keep-Alive` value (RFC 2068 §19.7.1.1), in seconds.
fn announced_timeout(value: &[u8]) -> Option<u32> {
    value.split(|&b| b == b',').find_map(|param| {
        let (name, seconds) = param.trim_ascii().split_at_checked(8)?;
        if !name.eq_ignore_ascii_case(b"timeout=") {
            return None;
        }
        std::str::from_utf8(seconds.trim_ascii()).ok()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, head_request: bool) -> ResponseHead {
        parse(raw.as_bytes(), head_request).unwrap().unwrap().0
    }

    #[test]
    fn framings() {
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).body,
            BodyLength::Length(5)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).body,
            BodyLength::Empty
        );
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\n\r\n", false).body,
            BodyLength::Empty
        );
        assert_eq!(
            ok(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .body,
            BodyLength::Empty
        );
        let chunked = ok(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(
            (chunked.body, chunked.keep_alive),
            (BodyLength::Chunked, true)
        );
        let until_close = ok("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!(
            (until_close.body, until_close.keep_alive),
            (BodyLength::UntilClose, false)
        );
        let both = ok(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((both.body, both.keep_alive), (BodyLength::Chunked, false));
    }

    #[test]
    fn transfer_codings_and_keep_alive_timeouts() {
        let gzip = ok(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nKeep-Alive: max=5, timeout=7\r\n\r\n",
            false,
        );
        assert_eq!(gzip.body, BodyLength::Chunked);
        assert!(gzip.transfer_codings);
        assert_eq!(gzip.keep_alive_timeout, Some(7));
        let plain = ok(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert!(!plain.transfer_codings);
        assert_eq!(plain.keep_alive_timeout, None);
        let until_close = ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(until_close.body, BodyLength::UntilClose);
        assert!(until_close.transfer_codings);
        for bad in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(parse(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_ambiguous_lengths() {
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", false).is_err());
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 600 Odd\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 999 Odd\r\n\r\n", false).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse(huge.as_bytes(), false).unwrap_err(),
            BadResponse("head too large")
        );
    }
}
