//! The response head parser: never panics, stays inside its input, decides the same whichever way the bytes arrive,
//! and the head it writes for the client reads back with the framing the proxy chose.
//!
//! Input: one byte of flags (bit 0: the request was HEAD; bit 1: the client speaks HTTP/1.0; the rest picks where to
//! cut), then the bytes from the backend.
#![no_main]

use std::ops::Range;

use lb::fuzzing::{
    forward_response, response_head, BadResponse, BodyLength, ClientFraming, ResponseHead,
    MAX_HEADERS, MAX_RESPONSE_HEAD,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let http11 = flags & 2 == 0;
    let whole = response_head(input, head_request);
    if let Ok(Some((head, length))) = &whole {
        check_head(head, *length, input.len());
        check_forwarded(input, head, head_request, http11);
    }
    let cut = usize::from(flags >> 2) * input.len() / 63;
    check_prefix(input, head_request, &whole, cut);
    if let Ok(Some((_, length))) = &whole {
        check_prefix(input, head_request, &whole, length - 1);
    }
});

fn check_head(head: &ResponseHead, length: usize, input: usize) {
    assert!(length <= input);
    let inside =
        |r: &Range<usize>| assert!(r.start <= r.end && r.end <= length, "{r:?} / {length}");
    inside(&head.reason);
    for header in &head.headers {
        inside(&header.name);
        inside(&header.value);
    }
    // A body of unknown length ends the connection.
    if head.body == BodyLength::UntilClose {
        assert!(!head.keep_alive);
    }
}

fn check_prefix(
    input: &[u8],
    head_request: bool,
    whole: &Result<Option<(ResponseHead, usize)>, BadResponse>,
    cut: usize,
) {
    if cut > input.len() {
        return;
    }
    let part = response_head(&input[..cut], head_request);
    match (&part, whole) {
        (Ok(Some((a, la))), Ok(Some((b, lb)))) => {
            assert_eq!(la, lb);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        (Ok(Some((_, la))), _) => panic!("prefix of {cut}: a head of {la}, the whole: {whole:?}"),
        (Err(e), Ok(_)) if input.len() < MAX_RESPONSE_HEAD => {
            panic!("prefix of {cut} refused ({e:?}), the whole is not: {whole:?}")
        }
        _ => {}
    }
}

/// What `proxy` does: chunked to an HTTP/1.1 client of a chunked body (with any other codings stated again), else
/// the body as it comes (dechunked for an
/// HTTP/1.0 client, and then the connection closes, as it does after a body that runs to the close).
fn check_forwarded(input: &[u8], head: &ResponseHead, head_request: bool, http11: bool) {
    let has_body = head.body != BodyLength::Empty;
    if head.transfer_codings && has_body && !http11 {
        return; // the proxy answers 502: codings cannot reach an HTTP/1.0 client
    }
    let dechunk = !http11 && head.body == BodyLength::Chunked;
    let framing = ClientFraming {
        chunked: http11 && head.body == BodyLength::Chunked,
        keep_alive: head.keep_alive && !dechunk && head.body != BodyLength::UntilClose,
        http10: !http11,
        codings: http11 && head.transfer_codings && has_body,
    };
    let out = forward_response(input, head, framing);
    let text = String::from_utf8_lossy(&out);
    let again = match response_head(&out, head_request) {
        Ok(Some((again, length))) => {
            assert_eq!(length, out.len(), "{text}");
            again
        }
        Err(_) if head.headers.len() + 3 > MAX_HEADERS || out.len() >= MAX_RESPONSE_HEAD => return,
        other => panic!("the client's head does not parse: {other:?}\n{text}"),
    };
    assert_eq!(again.status, head.status, "{text}");
    let want = match head.body {
        // Dechunked for an HTTP/1.0 client: it runs to the close.
        BodyLength::Chunked if !http11 => BodyLength::UntilClose,
        body => body,
    };
    if !head.status.is_informational() {
        assert_eq!(again.body, want, "{text}");
        assert_eq!(again.keep_alive, framing.keep_alive, "{text}");
    }
}
