//! HTTP/1.1 framing byte for byte (RFC 9112): what `lb` refuses and how (the status, then the connection closed),
//! what it lets through intact, and above all that no sequence of bytes gets a second, smuggled request to a backend.
//!
//! Every test writes raw bytes to `lb`, with a [`RecordingBackend`] behind it: a backend that reads requests by hand,
//! leniently, and records every request it reads and every byte it receives. A malformed request is followed, in the
//! same write, by `GET /smuggled`; that request must never be answered, and `smuggled` must never reach the backend.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::harness::{wait_until, RawBackend, RawConn, RawResponse, TestLb, HEALTH_PATH};

/// How long `lb` may take to answer and close a connection; only reached when it leaves the connection open.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// The request pipelined behind every malformed one: it must never be answered nor forwarded.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n";

/// A refused request must be answered with this and nothing else.
const BAD_REQUEST: &[&[u16]] = &[&[400]];

/// `head`, then `body`, then [`SMUGGLED`], as one write.
fn with_smuggled(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\n{body}{SMUGGLED}").into_bytes()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_before_any_backend_sees_it() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn every_doubtful_content_length_is_refused() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn a_bad_chunk_never_lets_what_follows_reach_a_backend() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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
    // 400, or at worst a connection closed with no answer at all.
    assert_refused(&lb, &backend, &cases, &[&[400], &[]], Reach::HeadsOnly).await;
}

#[tokio::test]
async fn header_lines_a_lenient_parser_would_read_differently_are_refused() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn a_bare_lf_ending_the_request_line_is_refused() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    // RFC 9112 §2.2 lets a recipient accept a bare LF; a strict engine does not, in the request line as in fields.
    let cases = [(
        "bare LF ending the request line",
        with_smuggled("GET /page HTTP/1.1\nHost: shop.example\r\n", ""),
    )];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

#[tokio::test]
async fn an_http_1_1_request_needs_exactly_one_host() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn an_http_1_0_request_without_host_is_served() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    let answer = exchange(lb.addr(), b"GET /old-school HTTP/1.0\r\n\r\n").await;

    assert_eq!(answer.statuses, [200], "{answer:?}");
    assert!(answer.closed, "HTTP/1.0 without keep-alive: {answer:?}");
    assert_eq!(backend.targets(), ["/old-school"]);
}

#[tokio::test]
async fn a_transfer_coding_lb_does_not_know_gets_501() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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
    assert_refused(&lb, &backend, &cases, &[&[501]], Reach::Nothing).await;
}

#[tokio::test]
async fn chunked_twice_gets_400() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn chunked_not_last_is_refused() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn transfer_encoding_in_http_1_0_is_refused() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    let cases = [(
        "HTTP/1.0 chunked",
        with_smuggled(
            "POST /upload HTTP/1.0\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
    )];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

#[tokio::test]
async fn connect_gets_501() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    let cases = [(
        "CONNECT",
        with_smuggled(
            "CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n",
            "",
        ),
    )];
    assert_refused(&lb, &backend, &cases, &[&[501]], Reach::Nothing).await;
}

#[tokio::test]
async fn a_request_pipelined_behind_a_refused_one_is_neither_answered_nor_forwarded() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    // No Host: refused. The request behind it is a perfectly good one, but a refusal ends the connection.
    let cases = [(
        "a good request behind a refused one",
        b"GET /first HTTP/1.1\r\nX-Note: no Host\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: shop.example\r\n\r\n"
            .to_vec(),
    )];
    assert_refused(&lb, &backend, &cases, BAD_REQUEST, Reach::Nothing).await;
}

#[tokio::test]
async fn a_refused_request_closes_the_connection_even_with_nothing_behind_it() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

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

#[tokio::test]
async fn obfuscated_transfer_encoding_smuggles_nothing() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    // TE.TE: both ends know chunked, but one of them can be made not to see it. Each also has a Content-Length.
    let obfuscated = |te_lines: &str| {
        with_smuggled(
            &format!(
                "POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\n{te_lines}"
            ),
            "0\r\n\r\n",
        )
    };
    let cases = [
        ("xchunked", obfuscated("Transfer-Encoding: xchunked\r\n")),
        (
            "space before the colon",
            obfuscated("Transfer-Encoding : chunked\r\n"),
        ),
        (
            "chunked, then identity",
            obfuscated("Transfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n"),
        ),
        (
            "folded onto a second line",
            obfuscated("Transfer-Encoding:\r\n chunked\r\n"),
        ),
        ("quoted", obfuscated("Transfer-Encoding: \"chunked\"\r\n")),
        (
            "vertical tab",
            obfuscated("Transfer-Encoding:\x0bchunked\r\n"),
        ),
    ];
    // Which check fires first (both framings present, an unknown coding, a bad line) is lb's business.
    assert_refused(&lb, &backend, &cases, &[&[400], &[501]], Reach::Nothing).await;
}

#[tokio::test]
async fn a_body_that_looks_like_a_request_stays_a_body() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(
        format!(
            "POST /outer HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        )
        .as_bytes(),
    )
    .await;
    let outer = conn.response().await;
    conn.send(b"GET /next HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let next = conn.response().await;

    assert_eq!(
        (outer.status, outer.text().as_str()),
        (200, "saw POST /outer")
    );
    assert_eq!((next.status, next.text().as_str()), (200, "saw GET /next"));
    assert_eq!(backend.targets(), ["/outer", "/next"]);
    let outer = &backend.requests()[0];
    assert_eq!(outer.method, "POST");
    assert_eq!(outer.body.as_deref(), Some(SMUGGLED.as_bytes()));
}

#[tokio::test]
async fn a_connection_header_cannot_take_the_length_away_from_a_body() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(
        format!(
            "POST /outer HTTP/1.1\r\nHost: shop.example\r\nConnection: Content-Length\r\n\
             Content-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        )
        .as_bytes(),
    )
    .await;
    let outer = conn.response().await;
    conn.send(b"GET /next HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let next = conn.response().await;

    assert_eq!(
        (outer.status, outer.text().as_str()),
        (200, "saw POST /outer")
    );
    assert_eq!((next.status, next.text().as_str()), (200, "saw GET /next"));
    assert_eq!(backend.targets(), ["/outer", "/next"], "nothing smuggled");
    assert_eq!(
        backend.requests()[0].body.as_deref(),
        Some(SMUGGLED.as_bytes())
    );
}

#[tokio::test]
async fn a_response_without_a_reason_phrase_is_forwarded() {
    let backend =
        RecordingBackend::replying("/bare", b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nok").await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(b"GET /bare HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let response = conn.response().await;

    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    assert!(!lb.logs().join("\n").contains("panicked"));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(
        b"GET /first HTTP/1.1\r\nHost: shop.example\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )
    .await;
    let first = conn.response().await;
    let second = conn.response().await;

    assert_eq!(
        (first.status, first.text().as_str()),
        (200, "saw GET /first")
    );
    assert_eq!(
        (second.status, second.text().as_str()),
        (200, "saw GET /second")
    );
    assert_eq!(backend.targets(), ["/first", "/second"]);
}

#[tokio::test]
async fn a_chunked_body_with_extensions_and_trailers_arrives_intact() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    // The GET behind it is answered only if lb found where the chunked body, trailers included, ends.
    conn.send(
        b"POST /chunked HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=val\r\nhello\r\n\
          6;quoted=\"a b\";flag\r\n world\r\n\
          0;last=1\r\n\
          X-Checksum: 42\r\n\
          X-Other: yes\r\n\
          \r\n\
          GET /after HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )
    .await;
    let posted = conn.response().await;
    let after = conn.response().await;

    assert_eq!(
        (posted.status, posted.text().as_str()),
        (200, "saw POST /chunked")
    );
    assert_eq!(
        (after.status, after.text().as_str()),
        (200, "saw GET /after")
    );
    assert_eq!(backend.targets(), ["/chunked", "/after"]);
    let posted = &backend.requests()[0];
    assert_eq!(posted.body.as_deref(), Some(&b"hello world"[..]));
    let framing = |name: &str| {
        let values = posted.headers.iter().filter(|(n, _)| n == name);
        values.map(|(_, v)| v.as_str()).collect::<Vec<_>>()
    };
    let (te, cl) = (framing("transfer-encoding"), framing("content-length"));
    assert!(
        (te == ["chunked"] && cl.is_empty()) || (te.is_empty() && cl == ["11"]),
        "forwarded with Transfer-Encoding {te:?} and Content-Length {cl:?}"
    );
}

#[tokio::test]
async fn a_post_with_an_empty_body_is_forwarded_and_the_connection_goes_on() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(
        b"POST /empty HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 0\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )
    .await;
    let posted = conn.response().await;
    let after = conn.response().await;

    assert_eq!(
        (posted.status, posted.text().as_str()),
        (200, "saw POST /empty")
    );
    assert_eq!(
        (after.status, after.text().as_str()),
        (200, "saw GET /after")
    );
    assert_eq!(backend.targets(), ["/empty", "/after"]);
    assert_eq!(backend.requests()[0].body.as_deref(), Some(&b""[..]));
}

#[tokio::test]
async fn requests_dribbled_a_few_bytes_at_a_time_arrive_whole() {
    let backend = RecordingBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    let body: String = (0..600)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let chunks: String = body
        .as_bytes()
        .chunks(100)
        .map(|chunk| {
            format!(
                "{:x}\r\n{}\r\n",
                chunk.len(),
                String::from_utf8_lossy(chunk)
            )
        })
        .collect();
    let requests = format!(
        "POST /by-length HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {}\r\n\r\n{body}\
         POST /by-chunks HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n\
         {chunks}0\r\n\r\n",
        body.len()
    );
    // Three bytes per write: heads, sizes and CRLFs all end up split across reads.
    for piece in requests.as_bytes().chunks(3) {
        conn.send(piece).await;
    }
    let by_length = conn.response().await;
    let by_chunks = conn.response().await;

    assert_eq!(by_length.status, 200, "{}", by_length.text());
    assert_eq!(by_chunks.status, 200, "{}", by_chunks.text());
    assert_eq!(backend.targets(), ["/by-length", "/by-chunks"]);
    for request in backend.requests() {
        assert_eq!(
            request.body.as_deref(),
            Some(body.as_bytes()),
            "{}",
            request.target
        );
    }
}

#[tokio::test]
async fn a_backend_response_with_content_length_and_chunked_reaches_the_client_chunked() {
    let backend = RecordingBackend::replying(
        "/odd",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    // One worker, so one connection pool: every request is a chance to reuse the odd response's connection.
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .arg("--workers")
        .arg("1")
        .start()
        .await;
    let connection_of = |target: &str| {
        let requests = backend.requests();
        let found = requests.iter().rev().find(|r| r.target == target);
        found.expect("the backend saw it").connection
    };
    // First, that lb does reuse a backend connection after a clean response; else the test below proves nothing.
    let mut previous = None;
    wait_until("lb reuses a backend connection", CLOSE_WITHIN, async || {
        let warm = response_on_new_connection(lb.addr(), "/warm").await;
        assert_eq!(warm.status, 200, "{warm:?}");
        let connection = connection_of("/warm");
        previous.replace(connection) == Some(connection)
    })
    .await;

    let request = b"GET /odd HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";
    let odd = exchange(lb.addr(), request).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        let response = response_on_new_connection(lb.addr(), "/after").await;
        assert_eq!(response.status, 200, "{response:?}");
        after.push(connection_of("/after"));
    }

    let (head, body) = odd.raw.split_once("\r\n\r\n").unwrap_or((&odd.raw, ""));
    let head = head.to_ascii_lowercase();
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(odd.statuses, [200], "{odd:?}");
    assert!(odd.closed, "Connection: close was not honoured: {odd:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("content-length:")),
        "a Content-Length next to chunked: {odd:?}"
    );
    assert!(
        lines.contains(&"transfer-encoding: chunked"),
        "not chunked: {odd:?}"
    );
    assert_eq!(dechunk(body).as_deref(), Some("hello"), "{odd:?}");
    let odd_connection = connection_of("/odd");
    assert!(
        !after.contains(&odd_connection),
        "lb reused the connection of the response with both framings: {:?}",
        backend.requests()
    );
}

#[tokio::test]
async fn a_backend_response_with_two_content_lengths_means_502() {
    let backend = RawBackend::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    let (status, body) = lb.get("/").await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(backend.hits(), 1);
}

/// What `lb` sent back on one connection.
#[derive(Debug)]
struct Answer {
    /// The status of every response, in order.
    statuses: Vec<u16>,
    /// Whether `lb` closed the connection within [`CLOSE_WITHIN`].
    closed: bool,
    raw: String,
}

/// Writes `request` on a fresh connection, then reads whatever comes until `lb` closes it or [`CLOSE_WITHIN`]
/// passes. The write side stays open: the close must be `lb`'s own decision.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect to lb");
    // lb may rightly refuse and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    };
    let closed = tokio::time::timeout(CLOSE_WITHIN, read).await.is_ok();
    let raw = String::from_utf8_lossy(&received).into_owned();
    let statuses = raw
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("HTTP/1."))
        .filter_map(|rest| rest.get(2..5)?.parse().ok())
        .collect();
    Answer {
        statuses,
        closed,
        raw,
    }
}

/// The data of a whole chunked body (extensions ignored, no trailers), or `None` if it is not one.
fn dechunk(mut body: &str) -> Option<String> {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(data);
        }
        data.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// What may reach the backend of a request `lb` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Nothing at all: the head alone is reason to refuse.
    Nothing,
    /// The head: `lb` may forward it before it finds the body broken. Never what follows the body.
    HeadsOnly,
}

/// Sends every case at once, each on a connection of its own. Each must get one of `allowed` (the statuses of
/// everything it got, in order), then a closed connection. Then a clean request must still be served, and the
/// backend must have seen nothing but what `reach` allows and the clean request, and no byte of `smuggled`. Fails
/// listing everything that went wrong.
async fn assert_refused(
    lb: &TestLb,
    backend: &RecordingBackend,
    cases: &[(&str, Vec<u8>)],
    allowed: &[&[u16]],
    reach: Reach,
) {
    let answers = join_all(
        cases
            .iter()
            .map(|(_, request)| exchange(lb.addr(), request)),
    )
    .await;
    let mut wrong: Vec<String> = cases
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| !(answer.closed && allowed.contains(&answer.statuses.as_slice())))
        .map(|((name, _), answer)| {
            format!(
                "{name}: got {:?}, closed: {}, received {:?}",
                answer.statuses, answer.closed, answer.raw
            )
        })
        .collect();

    // The backend records a request before it answers, so once the clean one is answered it has been recorded.
    let clean = response_on_new_connection(lb.addr(), "/clean").await;
    if (clean.status, clean.text().as_str()) != (200, "saw GET /clean") {
        wrong.push(format!("lb no longer serves a clean request: {clean:?}"));
    }
    let targets = backend.targets();
    let unexpected: Vec<&String> = match reach {
        Reach::Nothing => targets.iter().filter(|t| *t != "/clean").collect(),
        Reach::HeadsOnly => targets
            .iter()
            .filter(|t| {
                !cases
                    .iter()
                    .any(|(_, r)| r.starts_with(format!("POST {t} ").as_bytes()))
            })
            .filter(|t| *t != "/clean")
            .collect(),
    };
    if !unexpected.is_empty() {
        wrong.push(format!(
            "the backend got {unexpected:?} (allowed: {reach:?}); all it got: {:?}",
            backend.requests()
        ));
    }
    if backend.received("smuggled") {
        wrong.push(format!(
            "smuggled bytes reached the backend: {:?}",
            backend.requests()
        ));
    }
    assert!(
        wrong.is_empty(),
        "{} problems ({} cases, each wanting one of {allowed:?} and a close):\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// GETs `target` on a fresh connection (closed after the answer) and answers the response.
async fn response_on_new_connection(addr: SocketAddr, target: &str) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.send(
        format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    tokio::time::timeout(CLOSE_WITHIN, conn.response())
        .await
        .unwrap_or_else(|_| panic!("no whole response to GET {target} within {CLOSE_WITHIN:?}"))
}

/// One request as a [`RecordingBackend`] read it.
#[derive(Clone)]
struct Received {
    /// Which connection it came on: the backend numbers them from 0 as it accepts them.
    connection: usize,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    /// `None` until the body has been read whole, by Transfer-Encoding if it mentions chunked, else by the first
    /// Content-Length.
    body: Option<Vec<u8>>,
}

impl std::fmt::Debug for Received {
    /// One line: the connection, the request line, the framing headers and the body as text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let framing: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| name == "content-length" || name == "transfer-encoding")
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        let body = self.body.as_ref().map(|b| String::from_utf8_lossy(b));
        write!(
            f,
            "[connection {}] {} {} {framing:?} body {body:?}",
            self.connection, self.method, self.target
        )
    }
}

#[derive(Default)]
struct Recording {
    /// Health checks excluded.
    requests: Vec<Received>,
    /// Every byte received, on every connection, health checks included.
    bytes: Vec<u8>,
    connections: usize,
}

/// A backend on a bare socket that reads HTTP/1.1 by hand, leniently (as a naive server would: bare LF ends a line,
/// any Transfer-Encoding mentioning chunked means chunked, else the first Content-Length), keeps connections alive,
/// and records what it reads. Health checks get 200; any other request gets 200 `saw <method> <target>`, or a fixed
/// reply (see [`RecordingBackend::replying`]).
struct RecordingBackend {
    addr: SocketAddr,
    recording: Arc<Mutex<Recording>>,
    server: JoinHandle<()>,
}

impl RecordingBackend {
    async fn start() -> Self {
        Self::serve(None).await
    }

    /// Answers requests whose target starts with `prefix` with exactly `reply`, and keeps the connection open.
    async fn replying(prefix: &'static str, reply: &'static [u8]) -> Self {
        Self::serve(Some((prefix, reply))).await
    }

    async fn serve(reply: Option<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a recording backend");
        let addr = listener.local_addr().expect("recording backend address");
        let recording = Arc::new(Mutex::new(Recording::default()));
        let shared = recording.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let connection = {
                    let mut recording = shared.lock().unwrap();
                    recording.connections += 1;
                    recording.connections - 1
                };
                let wire = Wire {
                    stream,
                    buf: Vec::new(),
                    recording: shared.clone(),
                };
                connections.spawn(wire.serve(connection, reply));
            }
        });
        RecordingBackend {
            addr,
            recording,
            server,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn requests(&self) -> Vec<Received> {
        self.recording.lock().unwrap().requests.clone()
    }

    fn targets(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.target).collect()
    }

    /// Whether `needle` occurs anywhere in the bytes received.
    fn received(&self, needle: &str) -> bool {
        let recording = self.recording.lock().unwrap();
        let needle = needle.as_bytes();
        recording.bytes.windows(needle.len()).any(|w| w == needle)
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A target prefix, and the exact bytes to answer requests for such targets with.
type Reply = (&'static str, &'static [u8]);

/// The largest head or chunk the backend reads: far beyond any test's.
const WIRE_LIMIT: usize = 1024 * 1024;

/// One connection to a [`RecordingBackend`]: the socket, what was read but not yet parsed, and the recording.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    recording: Arc<Mutex<Recording>>,
}

impl Wire {
    /// Serves requests until the peer closes, asks to close, or sends what even a lenient reader cannot frame.
    async fn serve(mut self, connection: usize, reply: Option<Reply>) {
        while let Some((method, target, headers)) = self.head().await {
            if target == HEALTH_PATH {
                let _ = self
                    .stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            } else {
                let index = {
                    let mut recording = self.recording.lock().unwrap();
                    recording.requests.push(Received {
                        connection,
                        method: method.clone(),
                        target: target.clone(),
                        headers: headers.clone(),
                        body: None,
                    });
                    recording.requests.len() - 1
                };
                let Some(body) = self.body(&headers).await else {
                    return;
                };
                self.recording.lock().unwrap().requests[index].body = Some(body);
                let answer = match reply {
                    Some((prefix, reply)) if target.starts_with(prefix) => reply.to_vec(),
                    _ => {
                        let text = format!("saw {method} {target}");
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        )
                        .into_bytes()
                    }
                };
                if self.stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
            let close = headers
                .iter()
                .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"));
            if close {
                let _ = self.stream.shutdown().await;
                return;
            }
        }
    }

    /// Reads more; `false` at the end of the stream or past the limit.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(n @ 1..) if self.buf.len() < WIRE_LIMIT => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.recording
                    .lock()
                    .unwrap()
                    .bytes
                    .extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// One line, without its LF and any CR before it.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Some(String::from_utf8_lossy(line).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buf.len() < len {
            if len > WIRE_LIMIT || !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..len).collect())
    }

    /// The method, the target and the headers (names lowercased, values trimmed).
    async fn head(&mut self) -> Option<(String, String, Vec<(String, String)>)> {
        let mut request_line = self.line().await?;
        while request_line.is_empty() {
            request_line = self.line().await?;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Some((method, target, headers));
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    async fn body(&mut self, headers: &[(String, String)]) -> Option<Vec<u8>> {
        let value = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.to_ascii_lowercase())
        };
        if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let size_line = self.line().await?;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).ok()?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    return Some(body);
                }
                body.extend(self.take(size).await?);
                if !self.line().await?.is_empty() {
                    return None;
                }
            }
        }
        match value("content-length") {
            Some(length) => self.take(length.parse().ok()?).await,
            None => Some(Vec::new()),
        }
    }
}
