//! HTTP/2 clients: h2c with prior knowledge on the plain listener (the preface tells), to HTTP/1.1 and h2c
//! backends, and the limits against HTTP/2 floods.

use std::time::Duration;

use bytes::Bytes;

use crate::harness::{
    backend_of, h2_fetch, h2_request, h2c_client, pattern, same_bytes, tally, wait_until,
    H2Backend, RawH2, TestBackend, TestLb, CANCEL, ENHANCE_YOUR_CALM, GOAWAY, PATIENCE,
    REFUSED_STREAM, RST_STREAM,
};

/// `lb` over `backends` (given as id and address), every one with `protocol`.
pub async fn lb_over(backends: &[(u64, std::net::SocketAddr)], protocol: &str) -> TestLb {
    let backends: Vec<_> = backends
        .iter()
        .map(|(id, addr)| {
            serde_json::json!({"id": id, "host": "127.0.0.1", "port": addr.port(), "protocol": protocol})
        })
        .collect();
    let config = serde_json::json!({
        "backends": backends,
        "health_check": {"path": "/health", "interval": "100ms", "timeout": "1s", "fall": 1, "rise": 1},
        "timeouts": {"connect": "1s", "backend_response": "5s", "drain": "5s"},
        "workers": 2,
        "access_log": true,
    });
    TestLb::from_file("lb.json", &config.to_string()).await
}

#[tokio::test]
async fn h2c_with_prior_knowledge_reaches_http1_backends_in_turn() {
    let one = TestBackend::start(1).await;
    let two = TestBackend::start(2).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backends(&[&one, &two])
        .arg("--access-log")
        .start()
        .await;
    let mut client = h2c_client(lb.addr()).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, headers, body, _) = h2_fetch(&mut client, h2_request("GET", "/a", "")).await;
        assert_eq!(status, 200);
        assert!(headers.get("x-backend-id").is_some());
        ids.push(backend_of(std::str::from_utf8(&body).unwrap()).unwrap());
    }
    let tally = tally(ids);
    assert_eq!(tally.get(&1), Some(&3), "{tally:?}");
    assert_eq!(tally.get(&2), Some(&3), "{tally:?}");
    let seen = two.last_seen();
    assert_eq!(seen.path, "/a");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("host"), Some("lb"));
    assert_eq!(
        seen.header("forwarded"),
        Some("for=127.0.0.1;host=\"lb\";proto=http")
    );
    // Its access log line says HTTP/2.
    lb.wait_log("\"GET /a HTTP/2.0\" 200", PATIENCE).await;
}

#[tokio::test]
async fn h2c_answers_503_when_no_backend_is_healthy() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    one.set_healthy(false);
    let mut client = h2c_client(lb.addr()).await;
    let mut last = (0, Bytes::new(), None);
    wait_until("lb answers 503", PATIENCE, async || {
        let (status, headers, body, _) = h2_fetch(&mut client, h2_request("GET", "/", "")).await;
        last = (status, body, headers.get("retry-after").cloned());
        status == 503
    })
    .await;
    assert_eq!(last.1, "503 Service Unavailable\n");
    assert_eq!(last.2.unwrap(), "1");
}

#[tokio::test]
async fn a_post_body_streams_both_ways_over_h2c() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    let mut client = h2c_client(lb.addr()).await;
    let body = pattern(3 * 1024 * 1024 + 17);
    let (status, _, echoed, _) =
        h2_fetch(&mut client, h2_request("POST", "/echo", body.clone())).await;
    assert_eq!(status, 200);
    same_bytes(&echoed, &body, "the echoed body");
}

#[tokio::test]
async fn many_concurrent_streams_share_one_connection() {
    let one = TestBackend::start(1).await;
    let two = TestBackend::start(2).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backends(&[&one, &two])
        .start()
        .await;
    let client = h2c_client(lb.addr()).await;
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                h2_fetch(&mut client, h2_request("GET", "/slow?ms=200", ""))
                    .await
                    .0
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    // Side by side, not one after another (100 × 200 ms).
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(one.hits() + two.hits(), 100);
}

#[tokio::test]
async fn an_h2c_client_reaches_an_h2c_backend_with_trailers() {
    let one = H2Backend::start(1).await;
    let lb = crate::h2::lb_over(&[(1, one.addr())], "h2c").await;
    let mut client = h2c_client(lb.addr()).await;
    let (status, headers, body, _) = h2_fetch(&mut client, h2_request("GET", "/x", "")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello from backend 1");
    assert_eq!(headers["x-version"], "HTTP/2.0");
    let (seen, version) = one.last_seen();
    assert_eq!(version, "HTTP/2.0");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let (status, _, body, trailers) =
        h2_fetch(&mut client, h2_request("GET", "/trailers", "")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "payload");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["x-sum"], "42");
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    let mut raw = RawH2::connect(lb.addr()).await;
    // 300 requests that stay open a while: 128 may be open at once.
    for i in 0..300u32 {
        raw.get(1 + 2 * i, "/slow?ms=1000").await;
    }
    let frames = raw
        .read_until(PATIENCE, |frames| {
            frames
                .iter()
                .filter(|f| f.kind == RST_STREAM && f.error_code() == REFUSED_STREAM)
                .count()
                >= 172
        })
        .await;
    let refused = frames
        .iter()
        .filter(|f| f.kind == RST_STREAM && f.error_code() == REFUSED_STREAM)
        .count();
    assert_eq!(refused, 172, "streams refused");
    // The others are answered.
    let answered = raw
        .read_until(PATIENCE, |frames| {
            frames.iter().filter(|f| f.kind == 0x1).count() >= 128
        })
        .await;
    assert_eq!(answered.iter().filter(|f| f.kind == 0x1).count(), 128);
}

#[tokio::test]
async fn a_rapid_reset_burst_closes_the_connection_and_others_are_served() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    let mut raw = RawH2::connect(lb.addr()).await;
    for i in 0..500u32 {
        let stream = 1 + 2 * i;
        raw.get(stream, "/slow?ms=1000").await;
        raw.reset(stream, CANCEL).await;
    }
    let frames = raw
        .read_until(PATIENCE, |frames| frames.iter().any(|f| f.kind == GOAWAY))
        .await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("a GOAWAY");
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM);
    // lb goes on serving everyone else.
    let mut client = h2c_client(lb.addr()).await;
    let (status, _, _, _) = h2_fetch(&mut client, h2_request("GET", "/", "")).await;
    assert_eq!(status, 200);
    assert!(one.hits() < 500, "the burst did not all reach the backend");
}

#[tokio::test]
async fn sigterm_lets_an_h2_request_in_flight_finish() {
    let one = TestBackend::start(1).await;
    let mut lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    let client = h2c_client(lb.addr()).await;
    let request = tokio::spawn(async move {
        let mut client = client;
        h2_fetch(&mut client, h2_request("GET", "/slow?ms=700", "")).await
    });
    wait_until("the backend has the request", PATIENCE, async || {
        one.hits() == 1
    })
    .await;
    lb.signal("TERM").await;
    let (status, _, body, _) = request.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "hello from backend 1");
    let exit = lb.wait_exit(PATIENCE).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_gracefully() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .timeout("idle", "300ms")
        .start()
        .await;
    let mut raw = RawH2::connect(lb.addr()).await;
    raw.get(1, "/").await;
    let started = std::time::Instant::now();
    let frames = raw
        .read_until(PATIENCE, |frames| frames.iter().any(|f| f.kind == GOAWAY))
        .await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("a GOAWAY");
    assert_eq!(goaway.error_code(), 0, "NO_ERROR");
    assert!(
        frames.iter().any(|f| f.kind == 0x1 && f.stream == 1),
        "the request was answered first"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_continuation_flood_is_cut_and_others_are_served() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    let mut raw = RawH2::connect(lb.addr()).await;
    raw.open_headers(1).await;
    // 1000 frames of 4000 bytes of headers: 4 MB in one header block, never ended.
    let flood = tokio::time::timeout(PATIENCE, async {
        for _ in 0..1000 {
            raw.continuation(1, 4000).await;
        }
        raw
    })
    .await;
    let mut raw = flood.expect("lb reads the frames or closes, it does not stall the sender");
    let frames = raw
        .read_until(PATIENCE, |frames| {
            frames
                .iter()
                .any(|f| f.kind == GOAWAY || f.kind == RST_STREAM)
        })
        .await;
    assert!(
        frames
            .iter()
            .any(|f| f.kind == GOAWAY || f.kind == RST_STREAM),
        "the header block was refused: {frames:?}"
    );
    assert!(!frames.iter().any(|f| f.kind == 0x1), "no answer to it");
    assert_eq!(one.hits(), 0);
    let mut client = h2c_client(lb.addr()).await;
    let (status, _, _, _) = h2_fetch(&mut client, h2_request("GET", "/", "")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_ping_flood_from_a_peer_that_does_not_read_is_held_back() {
    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .start()
        .await;
    let mut raw = RawH2::connect(lb.addr()).await;
    // Pings, and no read of the pongs: lb answers each, and stops reading once its answers cannot be written.
    let flood = tokio::spawn(async move {
        for _ in 0..1_000_000 {
            raw.ping().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!flood.is_finished(), "17 MB of pings were not all taken in");
    let mut client = h2c_client(lb.addr()).await;
    let (status, _, _, _) = h2_fetch(&mut client, h2_request("GET", "/", "")).await;
    assert_eq!(status, 200);
    flood.abort();
    assert!(
        crate::harness::peak_memory_kib(lb.pid()) < 256 * 1024,
        "lb's memory stayed bounded"
    );
}

#[tokio::test]
async fn a_websocket_over_h2_reaches_an_http1_backend() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    let backend = crate::harness::WsEchoBackend::start().await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut client = h2c_client(lb.addr()).await;
    // A first exchange: lb's SETTINGS (which allow extended CONNECT) have arrived by its end.
    let (status, _, _, _) = h2_fetch(&mut client, h2_request("GET", "/", "")).await;
    assert_eq!(status, 200);
    let mut request = h2_request("CONNECT", "/chat", "");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    request
        .headers_mut()
        .insert("sec-websocket-version", "13".parse().unwrap());
    let response = tokio::time::timeout(PATIENCE, client.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(response).await.expect("the tunnel");
    let io = hyper_util::rt::TokioIo::new(upgraded);
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    for text in ["hello", "over h2"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
        assert_eq!(back.unwrap().unwrap(), Message::text(text));
    }
    let handshake = &backend.handshakes()[0];
    let upgrade = handshake
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("upgrade"));
    assert_eq!(upgrade.map(|(_, v)| v.as_str()), Some("websocket"));
}

#[tokio::test]
async fn a_response_body_that_stands_still_is_cut() {
    use http_body_util::BodyExt;

    let one = H2Backend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend_at(1, one.addr())
        .timeout("backend_response", "300ms")
        .start()
        .await;
    let mut client = h2c_client(lb.addr()).await;
    let response = client
        .send_request(h2_request("GET", "/stall", ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cut = tokio::time::timeout(PATIENCE, response.into_body().collect()).await;
    assert!(
        cut.expect("cut in time").is_err(),
        "the body fails, not ends"
    );
}

#[tokio::test]
async fn a_request_body_that_comes_too_slowly_gets_408() {
    use futures_util::stream;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let one = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .health("timeout", "1s")
        .backend(&one)
        .timeout("request_body", "300ms")
        .start()
        .await;
    let mut client = h2c_client(lb.addr()).await;
    let start = stream::iter([Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(
        b"0123456789",
    )))]);
    let body = BodyExt::boxed(StreamBody::new(futures_util::StreamExt::chain(
        start,
        stream::pending(),
    )));
    let request = hyper::Request::builder()
        .method("POST")
        .uri("http://lb/upload")
        .body(body)
        .unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(PATIENCE, client.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(response.status(), 408);
    assert!(started.elapsed() >= Duration::from_millis(250));
}
