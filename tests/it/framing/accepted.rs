//! Framing that must pass intact: pipelining, chunked extensions and trailers, bodies that look like requests.

use super::*;

async fn obfuscated_transfer_encoding_smuggles_nothing(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;

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

async fn a_body_that_looks_like_a_request_stays_a_body(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

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

async fn a_connection_header_cannot_take_the_length_away_from_a_body(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

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

async fn a_response_without_a_reason_phrase_is_forwarded(path: Path) {
    let backend =
        RecordingBackend::replying("/bare", b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nok").await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

    conn.send(b"GET /bare HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let response = conn.response().await;

    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    assert!(!lb.logs().join("\n").contains("panicked"));
}

async fn pipelined_requests_are_answered_in_order(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

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

async fn a_chunked_body_with_extensions_and_trailers_arrives_intact(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

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

async fn a_post_with_an_empty_body_is_forwarded_and_the_connection_goes_on(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

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

async fn requests_dribbled_a_few_bytes_at_a_time_arrive_whole(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

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

async fn a_backend_response_with_content_length_and_chunked_reaches_the_client_chunked(path: Path) {
    let backend = RecordingBackend::replying(
        "/odd",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    // One worker, so one connection pool: every request is a chance to reuse the odd response's connection.
    let lb = Lb::start_with(path, backend.addr(), |lb| lb.arg("--workers").arg("1")).await;
    let connection_of = |target: &str| {
        let requests = backend.requests();
        let found = requests.iter().rev().find(|r| r.target == target);
        found.expect("the backend saw it").connection
    };
    // First, that lb does reuse a backend connection after a clean response; else the test below proves nothing.
    let mut previous = None;
    wait_until("lb reuses a backend connection", CLOSE_WITHIN, async || {
        let warm = response_on_new_connection(&lb, "/warm").await;
        assert_eq!(warm.status, 200, "{warm:?}");
        let connection = connection_of("/warm");
        previous.replace(connection) == Some(connection)
    })
    .await;

    let request = b"GET /odd HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";
    let odd = exchange(&lb, request).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        let response = response_on_new_connection(&lb, "/after").await;
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

async fn a_backend_response_with_two_content_lengths_means_502(path: Path) {
    let backend = RawBackend::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    let lb = Lb::start(path, backend.addr()).await;

    let response = response_on_new_connection(&lb, "/").await;

    assert_eq!(response.status, 502, "{response:?}");
    assert_eq!(backend.hits(), 1);
}

async fn targets_and_hosts_of_rfc_3986_and_what_browsers_send_pass_as_they_are(path: Path) {
    let backend = RecordingBackend::start().await;
    let lb = Lb::start(path, backend.addr()).await;
    let mut conn = lb.raw().await;

    let requests = [
        ("/caf%C3%A9/a-._~!$&'()*+,;=:@?q=/?:@", "shop.example:8080"),
        ("http://[2001:db8::1]:81/p?q", "ignored.example"),
        ("/ipv6", "[::1]:8080"),
        ("/empty-host", ""),
        // What browsers send unencoded (RFC 3986 would have them escaped).
        ("/a[1]|^/s?filter[name]={x}&a[]=1|^`\\", "shop.example"),
    ];
    for (target, host) in requests {
        conn.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        assert_eq!(conn.response().await.status, 200, "{target} {host}");
    }

    let seen: Vec<(String, Option<String>)> = backend
        .requests()
        .into_iter()
        .map(|r| {
            let host = r.headers.iter().find(|(n, _)| n == "host");
            (r.target, host.map(|(_, v)| v.clone()))
        })
        .collect();
    let want = [
        ("/caf%C3%A9/a-._~!$&'()*+,;=:@?q=/?:@", "shop.example:8080"),
        ("/p?q", "[2001:db8::1]:81"),
        ("/ipv6", "[::1]:8080"),
        ("/empty-host", ""),
        ("/a[1]|^/s?filter[name]={x}&a[]=1|^`\\", "shop.example"),
    ];
    let want: Vec<(String, Option<String>)> = want
        .iter()
        .map(|(t, h)| (t.to_string(), Some(h.to_string())))
        .collect();
    assert_eq!(seen, want);
}

on_every_path!(
    obfuscated_transfer_encoding_smuggles_nothing,
    a_body_that_looks_like_a_request_stays_a_body,
    a_connection_header_cannot_take_the_length_away_from_a_body,
    a_response_without_a_reason_phrase_is_forwarded,
    pipelined_requests_are_answered_in_order,
    a_chunked_body_with_extensions_and_trailers_arrives_intact,
    a_post_with_an_empty_body_is_forwarded_and_the_connection_goes_on,
    requests_dribbled_a_few_bytes_at_a_time_arrive_whole,
    a_backend_response_with_content_length_and_chunked_reaches_the_client_chunked,
    a_backend_response_with_two_content_lengths_means_502,
    targets_and_hosts_of_rfc_3986_and_what_browsers_send_pass_as_they_are,
);
