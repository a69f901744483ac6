//! The redirect listener: `[[listeners]] redirect_https = true` answers every request with `301` to the same path
//! and query on `https://`, at the TLS listener's port.

use serde_json::json;

use crate::harness::tls::TestCa;
use crate::harness::{full_config, RawConn, TestBackend, TestLb};

#[tokio::test]
async fn every_request_on_the_redirect_listener_gets_301_to_the_same_url_on_https() {
    let backend = TestBackend::start(1).await;
    let ca = TestCa::new();
    let cert = ca.issue("shop", &["shop.test"]);
    let config = full_config(
        &[(1, &backend)],
        json!({
            "tls": {"cert": cert.cert, "key": cert.key},
            "listeners": [{"address": "127.0.0.1:0", "redirect_https": true}],
        }),
    );
    let lb = TestLb::from_file("lb.json", &config).await;
    let redirect = lb.listener(0).await;
    let https_port = lb.addr().port();

    for (request, location) in [
        (
            "GET /a/b?c=d&e HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n",
            format!("https://shop.test:{https_port}/a/b?c=d&e"),
        ),
        (
            "POST /form HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\nabc",
            format!("https://shop.test:{https_port}/form"),
        ),
        (
            "HEAD / HTTP/1.0\r\nHost: [::1]:80\r\n\r\n",
            format!("https://[::1]:{https_port}/"),
        ),
    ] {
        let mut conn = RawConn::connect(redirect).await;
        conn.send(request.as_bytes()).await;
        let response = if request.starts_with("HEAD") {
            conn.head_response().await
        } else {
            conn.response().await
        };
        assert_eq!(response.status, 301, "{request:?}");
        assert_eq!(
            response.header("location"),
            Some(location.as_str()),
            "{request:?}"
        );
    }
    assert_eq!(backend.hits(), 0, "no redirected request reaches a backend");

    // The https URL it points to works.
    let mut conn = RawConn::from_stream(ca.connect(lb.addr(), "shop.test").await);
    conn.send(b"GET /a/b?c=d&e HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn a_request_without_a_host_gets_400_and_garbage_gets_a_close() {
    let backend = TestBackend::start(1).await;
    let ca = TestCa::new();
    let cert = ca.issue("shop", &["shop.test"]);
    let config = full_config(
        &[(1, &backend)],
        json!({
            "tls": {"cert": cert.cert, "key": cert.key},
            "listeners": [{"address": "127.0.0.1:0", "redirect_https": true}],
        }),
    );
    let lb = TestLb::from_file("lb.json", &config).await;
    let redirect = lb.listener(0).await;

    for request in [
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil.test/x\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(redirect).await;
        conn.send(request.as_bytes()).await;
        let response = conn.response().await;
        assert_eq!(response.status, 400, "{request:?}");
        assert_eq!(response.header("location"), None);
    }
    let mut conn = RawConn::connect(redirect).await;
    conn.send(b"\x16\x03\x01 not http\r\n\r\n").await;
    conn.read_until_closed(crate::harness::PATIENCE).await;
}
