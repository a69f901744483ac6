//! The generic path for HTTP/1.1 clients: when some backend is not plain HTTP/1.1 (here: `protocol = "h2c"`),
//! requests go through hyper, over HTTP/2 to the backends that speak it, with the same balancing, forwarding
//! headers and error answers as the fast path.

use serde_json::json;

use crate::h2::lb_over;
use crate::harness::{
    backend_of, client, pattern, same_bytes, tally, wait_until, H2Backend, RawConn, TestBackend,
    TestLb, PATIENCE,
};

#[tokio::test]
async fn an_http1_client_reaches_h2c_backends_in_turn() {
    let one = H2Backend::start(1).await;
    let two = H2Backend::start(2).await;
    let lb = lb_over(&[(one.id, one.addr()), (two.id, two.addr())], "h2c").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (status, body) = lb.get("/hello?x=1").await;
        assert_eq!(status, 200, "{body}");
        ids.push(backend_of(&body).unwrap());
    }
    let tally = tally(ids);
    assert_eq!(tally.get(&1), Some(&3), "{tally:?}");
    assert_eq!(tally.get(&2), Some(&3), "{tally:?}");
    assert_eq!(one.hits() + two.hits(), 6);
    let (seen, version) = one.last_seen();
    assert_eq!(version, "HTTP/2.0", "the backend is reached over HTTP/2");
    assert_eq!(seen.path, "/hello");
    assert_eq!(seen.query.as_deref(), Some("x=1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let host = lb.addr().to_string();
    assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(seen.header("connection"), None);
    lb.wait_log("\"GET /hello?x=1 HTTP/1.1\" 200", PATIENCE)
        .await;
}

#[tokio::test]
async fn a_post_streams_both_ways_through_the_generic_path() {
    let one = H2Backend::start(1).await;
    let lb = lb_over(&[(1, one.addr())], "h2c").await;
    let body = pattern(2 * 1024 * 1024 + 5);
    let response = client()
        .post(lb.url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    same_bytes(&response.bytes().await.unwrap(), &body, "the echoed body");
}

#[tokio::test]
async fn the_generic_path_answers_503_when_no_backend_is_healthy() {
    let gone = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let lb = lb_over(&[(1, gone)], "h2c").await;
    let mut last = (0, String::new());
    wait_until("lb answers 503", PATIENCE, async || {
        last = lb.get("/").await;
        last.0 == 503
    })
    .await;
    assert_eq!(last.1, "503 Service Unavailable\n");
}

#[tokio::test]
async fn a_mixed_pool_serves_http1_and_h2c_backends_in_turn() {
    let one = TestBackend::start(1).await;
    let two = H2Backend::start(2).await;
    let config = json!({
        "backends": [
            {"id": 1, "host": "127.0.0.1", "port": one.addr().port()},
            {"id": 2, "host": "127.0.0.1", "port": two.addr().port(), "protocol": "h2c"},
        ],
        "health_check": {"path": "/health", "interval": "100ms", "fall": 1, "rise": 1},
        "workers": 1,
    });
    let lb = TestLb::from_file("lb.json", &config.to_string()).await;
    let http = client();
    let mut ids = Vec::new();
    for _ in 0..8 {
        // One keep-alive client connection, handed to the generic path at its first request.
        let body = http
            .get(lb.url("/m"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ids.push(backend_of(&body).unwrap());
    }
    let tally = tally(ids);
    assert_eq!(tally.get(&1), Some(&4), "{tally:?}");
    assert_eq!(tally.get(&2), Some(&4), "{tally:?}");
    assert_eq!(one.last_seen().header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(two.last_seen().1, "HTTP/2.0");
}

#[tokio::test]
async fn a_websocket_goes_through_the_generic_path() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (lb, _backend) = lb_for_websockets("60s").await;
    let mut ws = ws_through(&lb).await;
    for text in ["hello", "through hyper"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
        assert_eq!(back.unwrap().unwrap(), Message::text(text));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn an_idle_websocket_on_the_generic_path_is_closed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (lb, _backend) = lb_for_websockets("300ms").await;
    let mut ws = ws_through(&lb).await;
    ws.send(Message::text("one")).await.unwrap();
    let back = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    assert_eq!(back.unwrap().unwrap(), Message::text("one"));
    let started = std::time::Instant::now();
    // Nothing more either way: the tunnel ends.
    let end = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("the tunnel ends");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket client session to `/chat` through `lb`.
async fn ws_through(lb: &TestLb) -> Ws {
    let mut ws = None;
    wait_until("a WebSocket handshake through lb", PATIENCE, async || {
        let stream = tokio::net::TcpStream::connect(lb.addr()).await.unwrap();
        let url = format!("ws://{}/chat", lb.addr());
        ws = tokio_tungstenite::client_async(url, stream).await.ok();
        ws.is_some()
    })
    .await;
    ws.unwrap().0
}

/// `lb` over a WebSocket echo backend and an h2c one (down), which makes HTTP/1.1 clients take the generic path.
async fn lb_for_websockets(tunnel_idle: &str) -> (TestLb, crate::harness::WsEchoBackend) {
    let ws_backend = crate::harness::WsEchoBackend::start().await;
    let gone = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let config = json!({
        "backends": [
            {"id": 1, "host": "127.0.0.1", "port": ws_backend.addr().port()},
            {"id": 2, "host": "127.0.0.1", "port": gone.port(), "protocol": "h2c"},
        ],
        "health_check": {"path": "/health", "interval": "100ms", "fall": 1, "rise": 1},
        "timeouts": {"tunnel_idle": tunnel_idle},
        "workers": 1,
    });
    let lb = TestLb::from_file("lb.json", &config.to_string()).await;
    (lb, ws_backend)
}

#[tokio::test]
async fn a_backend_that_refuses_connections_is_skipped_for_the_next() {
    let live = H2Backend::start(1).await;
    let dying = H2Backend::start(2).await;
    // Checks too rare to notice the stop: requests find out by connecting.
    let config = json!({
        "backends": [
            {"id": 1, "host": "127.0.0.1", "port": live.addr().port(), "protocol": "h2c"},
            {"id": 2, "host": "127.0.0.1", "port": dying.addr().port(), "protocol": "h2c"},
        ],
        "health_check": {"path": "/health", "interval": "60s", "fall": 3, "rise": 1},
        "workers": 1,
    });
    let lb = TestLb::from_file("lb.json", &config.to_string()).await;
    dying.stop();
    wait_until("the stopped backend refuses", PATIENCE, async || {
        tokio::net::TcpStream::connect(dying.addr()).await.is_err()
    })
    .await;
    for _ in 0..6 {
        let (status, body) = lb.get("/r").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(backend_of(&body), Some(1));
    }
    assert_eq!(live.hits(), 6);
    lb.wait_log("request retried on the next backend", PATIENCE)
        .await;
}

/// A mixed pool (an HTTP/1.1 backend and an h2c one) puts HTTP/1.1 clients on the generic path.
async fn mixed_pool(one: &TestBackend, two: &H2Backend) -> TestLb {
    let config = json!({
        "backends": [
            {"id": 1, "host": "127.0.0.1", "port": one.addr().port()},
            {"id": 2, "host": "127.0.0.1", "port": two.addr().port(), "protocol": "h2c"},
        ],
        "health_check": {"path": "/health", "interval": "100ms", "fall": 1, "rise": 1},
        "workers": 1,
    });
    TestLb::from_file("lb.json", &config.to_string()).await
}

/// A `GET` with a chunked body reaches an HTTP/1.1 backend with its body on the generic path, as on the fast path
/// (hyper's client, left to itself, sends a `GET` of unknown length without its body, in silence).
#[tokio::test]
async fn a_chunked_get_body_reaches_an_http1_backend_on_the_generic_path() {
    let one = TestBackend::start(1).await;
    let two = H2Backend::start(2).await;
    let lb = mixed_pool(&one, &two).await;
    lb.wait_serving(&[1, 2]).await;
    // Round robin: whichever backend the first request goes to, one of two consecutive ones goes to backend 1.
    let before = one.hits();
    let mut echoed = Vec::new();
    for _ in 0..2 {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(b"GET /echo HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "{}", response.text());
        echoed.push(response.text());
    }
    assert_eq!(echoed, ["hello", "hello"], "both backends got the body");
    assert_eq!(
        one.hits(),
        before + 1,
        "one of them went to the HTTP/1.1 backend"
    );
}

/// A malformed chunked body on the generic path is the client's fault, as on the fast path: `400`, not a `502`
/// blamed on the backend.
#[tokio::test]
async fn a_malformed_chunked_body_on_the_generic_path_gets_400() {
    let one = TestBackend::start(1).await;
    let two = H2Backend::start(2).await;
    let lb = mixed_pool(&one, &two).await;
    lb.wait_serving(&[1, 2]).await;
    for _ in 0..2 {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(b"POST /echo HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5zz\r\nhello\r\n0\r\n\r\n")
            .await;
        let response = conn.response().await;
        assert_eq!(response.status, 400, "{}", response.text());
    }
}
