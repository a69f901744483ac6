//! Requests `lb` must refuse, and how: the status, the closed connection, nothing smuggled.

use super::*;

async fn content_length_with_transfer_encoding_is_refused_before_any_backend_sees_it(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let cases = [
        // CL.TE: a front end going by Content-Length forwards it all; a back end going by chunked sees two requests.
        (
            "CL.TE",
            with_smuggled(
                "POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 6\r\n\
                 Transfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
        ),
        // TE.CL: the other way round; the chunk carries the smuggled request.
        (
            "TE.CL",
            format!(
                "POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
                SMUGGLED.len()
            )
            .into_bytes(),
        ),
        (
            "Transfer-Encoding first",
            with_smuggled(
                "POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 5\r\n",
                "0\r\n\r\n",
            ),
        ),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn every_doubtful_content_length_is_refused(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let post = |lengths: &str, body: &str| {
        with_smuggled(
            &format!("POST /upload HTTP/1.1\r\nHost: shop.example\r\n{lengths}"),
            body,
        )
    };
    let cases = [
        (
            "twice, the same",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        ),
        (
            "twice, different",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        ),
        ("a list", post("Content-Length: 1, 1\r\n", "x")),
        ("a plus sign", post("Content-Length: +1\r\n", "x")),
        ("a minus sign", post("Content-Length: -1\r\n", "x")),
        ("hex", post("Content-Length: 0x5\r\n", "hello")),
        ("not digits", post("Content-Length: five\r\n", "hello")),
        ("digits then junk", post("Content-Length: 5a\r\n", "hello")),
        ("empty", post("Content-Length: \r\n", "")),
        (
            "20 digits, over u64",
            post("Content-Length: 99999999999999999999\r\n", "hello"),
        ),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn a_bad_chunk_never_lets_what_follows_reach_a_backend(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    // The head is fine, so `lb` may have forwarded it before it reads the bad chunk; what follows must not pass.
    let chunked = |body: &str| {
        with_smuggled(
            "POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n",
            body,
        )
    };
    let cases = [
        ("size not hex", chunked("zz\r\nhello\r\n0\r\n\r\n")),
        ("size negative", chunked("-1\r\nhello\r\n0\r\n\r\n")),
        // A lenient parser reads the 0 and stops: the last chunk, then the rest is "the next request".
        ("size with 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n")),
        (
            "size of 17 hex digits, over u64",
            chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "size of 17 hex digits, leading zeros",
            chunked("00000000000000005\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "size with a space inside",
            chunked("1 0\r\nhello\r\n0\r\n\r\n"),
        ),
        ("bare LF after the size", chunked("5\nhello\r\n0\r\n\r\n")),
        ("bare LF after the data", chunked("5\r\nhello\n0\r\n\r\n")),
        (
            "data longer than its size",
            chunked("3\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "bare CR in an extension",
            chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ),
        // After the last chunk come trailer fields: a request line is none, and a bare LF ends no line.
        ("a request line among the trailers", chunked("0\r\n")),
        (
            "bare LF ending the trailers",
            chunked("0\r\nX-Trailer: a\n\n"),
        ),
        (
            "obs-fold in the trailers",
            chunked("0\r\nX-Trailer: a\r\n b\r\n\r\n"),
        ),
    ];
    // 400, or at worst a connection closed with no answer at all. On the generic path hyper's chunked decoder
    // finds the bad chunk while the body streams to the backend: the exchange fails as a forwarding does, 502.
    let allowed: &[&[u16]] = match path {
        Path::Tcp | Path::Tls => &[&[400], &[]],
        Path::Generic | Path::GenericSecond => &[&[400], &[], &[502]],
    };
    assert_refused(&lb, &backend, &cases, allowed, Reach::HeadsOnly).await;
}

async fn header_lines_a_lenient_parser_would_read_differently_are_refused(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let get = |headers: &str| with_smuggled(&format!("GET /page HTTP/1.1\r\n{headers}"), "");
    let cases = [
        (
            "space before the colon of Host",
            get("Host : shop.example\r\n"),
        ),
        (
            "space before the colon",
            get("Host: shop.example\r\nX-Note : yes\r\n"),
        ),
        (
            "tab before the colon",
            get("Host: shop.example\r\nX-Note\t: yes\r\n"),
        ),
        (
            "NUL in a value",
            get("Host: shop.example\r\nX-Note: a\0b\r\n"),
        ),
        (
            "bare CR in a value",
            get("Host: shop.example\r\nX-Note: a\rb\r\n"),
        ),
        (
            "bare LF in a value",
            get("Host: shop.example\r\nX-Note: a\nTransfer-Encoding: chunked\r\n"),
        ),
        (
            "obs-fold",
            get("Host: shop.example\r\nX-Note: one\r\n two\r\n"),
        ),
        (
            "obs-fold with a tab",
            get("Host: shop.example\r\nX-Note: one\r\n\ttwo\r\n"),
        ),
        (
            "whitespace before the first header",
            get(" X-Note: one\r\nHost: shop.example\r\n"),
        ),
        ("no colon at all", get("Host: shop.example\r\nX-Note\r\n")),
        (
            "a space inside the name",
            get("Host: shop.example\r\nX Note: yes\r\n"),
        ),
        ("empty name", get("Host: shop.example\r\n: nameless\r\n")),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn a_bare_lf_ending_the_request_line_is_refused(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    // RFC 9112 §2.2 lets a recipient accept a bare LF; a strict engine does not, in the request line as in fields.
    let cases = [(
        "bare LF ending the request line",
        with_smuggled("GET /page HTTP/1.1\nHost: shop.example\r\n", ""),
    )];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn an_http_1_1_request_needs_exactly_one_host(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let cases = [
        ("no Host", with_smuggled("GET /page HTTP/1.1\r\n", "")),
        (
            "two Hosts",
            with_smuggled(
                "GET /page HTTP/1.1\r\nHost: shop.example\r\nHost: admin.example\r\n",
                "",
            ),
        ),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn targets_and_authorities_outside_rfc_3986_are_refused_and_never_forwarded(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let target = |target: &str| {
        with_smuggled(
            &format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\n"),
            "",
        )
    };
    let host = |host: &str| with_smuggled(&format!("GET /page HTTP/1.1\r\nHost: {host}\r\n"), "");
    let cases = [
        ("a fragment", target("/a#frag")),
        ("a fragment after a query", target("/a?b=1#frag")),
        ("raw UTF-8", target("/caf\u{e9}")),
        ("a quote", target("/a\"b")),
        ("a backslash", target("/a\\b")),
        ("braces in the path", target("/a{c}")),
        ("a space in the query", target("/a?b=c d")),
        ("angle brackets in the query", target("/a?b=<c>")),
        ("% without hex digits", target("/a%zz")),
        ("% at the end", target("/a%2")),
        ("absolute: a quote in the host", target("http://a\"b/")),
        ("absolute: a port with junk", target("http://a:99999x/")),
        ("absolute: a port over 65535", target("http://a:65536/")),
        ("absolute: an empty host", target("http://:80/")),
        ("absolute: userinfo", target("http://user@shop.example/")),
        ("absolute: a comma in the host", target("http://a,b/")),
        ("absolute: an unclosed IP literal", target("http://[::1/")),
        ("absolute: not an IPv6 address", target("http://[zz]/")),
        ("absolute: a fragment", target("http://shop.example/a#frag")),
        ("Host with a space", host("shop.example evil.example")),
        ("Host with a comma", host("shop.example,evil.example")),
        ("Host with a tab", host("shop.example\tevil.example")),
        ("Host with a quote", host("shop.example\"")),
        ("Host with a port over 65535", host("shop.example:65536")),
        ("Host with a port not digits", host("shop.example:80x")),
        ("Host with an empty port", host("shop.example:")),
        ("Host with only a port", host(":80")),
        ("Host with userinfo", host("user@shop.example")),
        ("Host with raw UTF-8", host("caf\u{e9}.example")),
        ("Host with a slash", host("shop.example/admin")),
        (
            "Host bad behind a good absolute target",
            with_smuggled("GET http://shop.example/ HTTP/1.1\r\nHost: a b\r\n", ""),
        ),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn an_http_1_0_request_without_host_is_served(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let answer = exchange(&lb, b"GET /old-school HTTP/1.0\r\n\r\n").await;

    assert_eq!(answer.statuses, [200], "{answer:?}");
    assert!(answer.closed, "HTTP/1.0 without keep-alive: {answer:?}");
    assert_eq!(backend.targets(), ["/old-school"]);
}

async fn a_transfer_coding_lb_does_not_know_gets_501(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let coded = |coding: &str, body: &str| {
        with_smuggled(
            &format!(
                "POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: {coding}\r\n"
            ),
            body,
        )
    };
    let cases = [
        ("gzip, chunked", coded("gzip, chunked", "0\r\n\r\n")),
        ("identity", coded("identity", "")),
        ("x-custom, chunked", coded("x-custom, chunked", "0\r\n\r\n")),
    ];
    // hyper answers a Transfer-Encoding without chunked itself (`identity`), with 400, before lb sees the request.
    let allowed: &[&[u16]] = match path {
        Path::GenericSecond => &[&[501], &[400]],
        _ => &[&[501]],
    };
    assert_refused(&lb, &backend, &cases, allowed, Reach::Nothing).await;
}

async fn chunked_twice_gets_400(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let coded = |te_lines: &str| {
        with_smuggled(
            &format!("POST /upload HTTP/1.1\r\nHost: shop.example\r\n{te_lines}"),
            "0\r\n\r\n",
        )
    };
    let cases = [
        (
            "chunked, chunked",
            coded("Transfer-Encoding: chunked, chunked\r\n"),
        ),
        (
            "chunked on two lines",
            coded("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn chunked_not_last_is_refused(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let cases = [(
        "chunked, gzip",
        with_smuggled(
            "POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked, gzip\r\n",
            "0\r\n\r\n",
        ),
    )];
    // gzip is unknown too: 501 for that is as good as 400 for chunked not being last.
    assert_refused(&lb, &backend, &cases, &[&[400], &[501]], Reach::Nothing).await;
}

async fn transfer_encoding_in_http_1_0_is_refused(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let cases = [(
        "HTTP/1.0 chunked",
        with_smuggled(
            "POST /upload HTTP/1.0\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
    )];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn connect_gets_501(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    let cases = [(
        "CONNECT",
        with_smuggled(
            "CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n",
            "",
        ),
    )];
    assert_refused(&lb, &backend, &cases, &[&[501]], Reach::Nothing).await;
}

async fn a_request_pipelined_behind_a_refused_one_is_neither_answered_nor_forwarded(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    // No Host: refused. The request behind it is a perfectly good one, but a refusal ends the connection.
    let cases = [(
        "a good request behind a refused one",
        b"GET /first HTTP/1.1\r\nX-Note: no Host\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: shop.example\r\n\r\n"
            .to_vec(),
    )];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

async fn a_refused_request_closes_the_connection_even_with_nothing_behind_it(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

    // Each request is complete, and nothing follows it: the close is still owed, since lb cannot know what it
    // misread (RFC 9112 §6.3 demands it for the two framing cases).
    let cases = [
        (
            "Content-Length with Transfer-Encoding",
            b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "a Content-Length with a sign",
            b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: +5\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "no Host",
            b"GET /page HTTP/1.1\r\nX-Note: no Host\r\n\r\n".to_vec(),
        ),
    ];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

on_every_path!(
    content_length_with_transfer_encoding_is_refused_before_any_backend_sees_it,
    every_doubtful_content_length_is_refused,
    a_bad_chunk_never_lets_what_follows_reach_a_backend,
    header_lines_a_lenient_parser_would_read_differently_are_refused,
    a_bare_lf_ending_the_request_line_is_refused,
    an_http_1_1_request_needs_exactly_one_host,
    targets_and_authorities_outside_rfc_3986_are_refused_and_never_forwarded,
    an_http_1_0_request_without_host_is_served,
    a_transfer_coding_lb_does_not_know_gets_501,
    chunked_twice_gets_400,
    chunked_not_last_is_refused,
    transfer_encoding_in_http_1_0_is_refused,
    connect_gets_501,
    a_request_pipelined_behind_a_refused_one_is_neither_answered_nor_forwarded,
    a_refused_request_closes_the_connection_even_with_nothing_behind_it,
);
