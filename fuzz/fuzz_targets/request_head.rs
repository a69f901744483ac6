//! The request head parser: never panics, stays inside its input, decides the same whichever way the bytes arrive,
//! and the head it writes for the backend reads back as the request it was made from.
//!
//! Input: one byte that picks where to cut (reads arrive in pieces, and `connection.rs` parses the buffer from its
//! start after each one), then the bytes from the client.
#![no_main]

use std::ops::Range;

use lb::fuzzing::{
    forward_request, request_head, Refusal, RequestHead, BACKEND, MAX_HEADERS, MAX_REQUEST_HEAD,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let whole = request_head(input);
    if let Ok(Some((head, length))) = &whole {
        check_head(input, head, *length);
        check_forwarded(input, head);
    }
    let cut = usize::from(pick) * input.len() / 255;
    check_prefix(input, &whole, cut);
    if let Ok(Some((_, length))) = &whole {
        check_prefix(input, &whole, length - 1);
        check_prefix(input, &whole, *length);
    }
});

/// A complete head lies within the input and within the limit, and so does every range into it.
fn check_head(input: &[u8], head: &RequestHead, length: usize) {
    assert!(length <= input.len() && length <= MAX_REQUEST_HEAD);
    let inside =
        |r: &Range<usize>| assert!(r.start <= r.end && r.end <= length, "{r:?} / {length}");
    inside(&head.target);
    if let Some(host) = &head.host {
        inside(host);
    }
    for header in &head.headers {
        inside(&header.name);
        inside(&header.value);
        assert!(!header.name.is_empty());
    }
    assert!(head.minor <= 1);
}

/// The bytes of the first `cut` arrive first: whatever that prefix yields must agree with the whole.
fn check_prefix(input: &[u8], whole: &Result<Option<(RequestHead, usize)>, Refusal>, cut: usize) {
    if cut > input.len() {
        return;
    }
    let part = request_head(&input[..cut]);
    match (&part, whole) {
        // A head complete in the prefix is the head of the whole, to the byte.
        (Ok(Some((a, la))), Ok(Some((b, lb)))) => {
            assert_eq!(la, lb);
            assert_eq!(summary(a), summary(b));
        }
        (Ok(Some((_, la))), _) => {
            panic!("prefix of {cut} bytes: a head of {la}, the whole: {whole:?}")
        }
        (_, Ok(Some((_, lb)))) if cut >= *lb => {
            panic!("prefix of {cut} holds the head of {lb}: {part:?}")
        }
        // A refusal of the prefix must be a refusal of the whole (the status may differ: a limit can fire first).
        (Err(r), Ok(_)) => panic!("prefix of {cut} refused ({r:?}), the whole is not: {whole:?}"),
        _ => {}
    }
}

/// What must not change between two reads of one head.
fn summary(head: &RequestHead) -> String {
    format!(
        "{} {:?} {} {:?} {:?} {} {} {} {}",
        head.method,
        head.target,
        head.minor,
        head.host,
        head.body,
        head.declared_length,
        head.keep_alive,
        head.connection_names,
        head.headers.len()
    )
}

/// The head written for the backend parses back, complete, as the same request: method, target, Host, framing.
fn check_forwarded(input: &[u8], head: &RequestHead) {
    let out = forward_request(input, head);
    let (again, length) = match request_head(&out) {
        Ok(Some(parsed)) => parsed,
        // The headers we add may take a head at the limits over them.
        Err(refusal)
            if refusal.status == 431
                && (head.headers.len() + 6 > MAX_HEADERS || out.len() > MAX_REQUEST_HEAD) =>
        {
            return
        }
        other => panic!(
            "the backend's head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    let text = String::from_utf8_lossy(&out);
    assert_eq!(length, out.len(), "{text}");
    assert_eq!(again.method, head.method, "{text}");
    assert_eq!(again.minor, 1, "{text}");
    assert_eq!(again.body, head.body, "{text}");
    let target = &input[head.target.clone()];
    let target: &[u8] = if target.is_empty() { b"/" } else { target };
    assert_eq!(&out[again.target.clone()], target, "{text}");
    let host = head.host.clone().map_or(BACKEND.as_bytes(), |r| &input[r]);
    assert_eq!(again.host.clone().map(|r| &out[r]), Some(host), "{text}");
}
