//! Clients as they come: HTTP/1.0, keep-alive with several requests on one connection, idle connections.

use std::time::{Duration, Instant};

use crate::harness::{backend_of, RawConn, TestBackend, TestLb, PATIENCE};

#[tokio::test]
async fn an_http_1_0_client_gets_its_answer_and_the_connection_closes() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(b"GET /old-school HTTP/1.0\r\nHost: shop.example\r\n\r\n")
        .await;
    let response = conn.response().await;

    assert!(
        response.status_line.starts_with("HTTP/1."),
        "{}",
        response.status_line
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello from backend 1");
    assert_eq!(
        response.header("transfer-encoding"),
        None,
        "HTTP/1.0 has no chunked encoding"
    );
    assert_eq!(conn.read_until_closed(PATIENCE).await, b"");
    assert_eq!(backend.last_seen().path, "/old-school");
}

#[tokio::test]
async fn requests_on_one_kept_alive_connection_each_take_their_turn() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder().backends(&[&b1, &b2]).start().await;
    lb.wait_serving(&[1, 2]).await;
    let mut conn = RawConn::connect(lb.addr()).await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
            .await;
        let response = conn.response().await;
        assert_eq!(response.status, 200);
        ids.push(backend_of(&response.text()).expect("a backend's greeting"));
    }
    conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
        .await;
    let last = conn.response().await;

    assert_ne!(
        ids[0], ids[1],
        "round robin is per request, not per connection"
    );
    assert_eq!(last.status, 200);
    assert_eq!(
        conn.read_until_closed(PATIENCE).await,
        b"",
        "Connection: close was not honoured"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("idle", "300ms")
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 200);
    let idle_since = Instant::now();

    assert_eq!(conn.read_until_closed(PATIENCE).await, b"");
    assert!(
        idle_since.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        idle_since.elapsed()
    );
}
