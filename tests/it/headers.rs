//! What crosses `lb` unchanged (method, path, query, body, end-to-end headers, the backend's answer), what it adds
//! (X-Forwarded-*, Forwarded) and what it removes (hop-by-hop headers).

use reqwest::Method;

use crate::harness::{client, RawConn, TestBackend, TestLb};

#[tokio::test]
async fn the_backend_learns_who_the_client_is_appended_to_earlier_proxies() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    let response = client()
        .get(lb.url("/echo/who"))
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.7")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let seen = backend.last_seen();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    let forwarded = seen.header("forwarded").expect("a Forwarded header");
    let (earlier, ours) = forwarded
        .split_once(", ")
        .expect("lb's entry appended after the earlier one");
    assert_eq!(earlier, "for=203.0.113.7;proto=https");
    let mut params: Vec<&str> = ours.split(';').collect();
    params.sort();
    assert_eq!(params, ["for=127.0.0.1", "host=shop.example", "proto=http"]);
}

#[tokio::test]
async fn the_backend_learns_who_the_client_is_from_lb_alone() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    let (status, _) = lb.get("/echo/who").await;
    assert_eq!(status, 200);

    let seen = backend.last_seen();
    let host = lb.addr().to_string();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    let forwarded = seen.header("forwarded").expect("a Forwarded header");
    let params: Vec<&str> = forwarded.split(';').collect();
    assert!(
        params.contains(&"for=127.0.0.1") && params.contains(&"proto=http"),
        "{forwarded}"
    );
    // host:port is no token, so RFC 7239 wants it quoted; accept it either way.
    let forwarded_host = params
        .iter()
        .find_map(|p| p.strip_prefix("host="))
        .expect("a host= parameter");
    assert_eq!(forwarded_host.trim_matches('"'), host, "{forwarded}");
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_lb_and_end_to_end_ones_pass() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(
        b"GET /echo/hop HTTP/1.1\r\n\
          Host: shop.example\r\n\
          Connection: keep-alive, X-Hop-Secret\r\n\
          X-Hop-Secret: for lb only\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Trailer: X-Checksum\r\n\
          Upgrade: example/1\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-End-To-End: for the backend\r\n\
          Accept: text/plain\r\n\
          \r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);

    let seen = backend.last_seen();
    for hop in [
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ] {
        assert_eq!(
            seen.header_values(hop),
            Vec::<&str>::new(),
            "{hop} was forwarded"
        );
    }
    for connection in seen.header_values("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-hop-secret"),
            "Connection: {connection}"
        );
    }
    assert_eq!(seen.header("x-end-to-end"), Some("for the backend"));
    assert_eq!(seen.header("accept"), Some("text/plain"));
}

#[tokio::test]
async fn a_chunked_body_arrives_whole_with_its_own_framing() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(
        b"POST /echo/chunked HTTP/1.1\r\n\
          Host: shop.example\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let response = conn.response().await;

    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "hello world")
    );
    let seen = backend.last_seen();
    let framing = seen.header_values("transfer-encoding");
    assert!(
        framing.is_empty() || framing == ["chunked"],
        "Transfer-Encoding: {framing:?}"
    );
}

#[tokio::test]
async fn method_path_query_body_and_custom_headers_pass_unchanged() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let client = client();
    let path = "/echo/orders/42/caf%C3%A9%2Fbar";
    let query = "expand=items&note=two%20words&empty=&flag";

    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let payload = format!("payload of a {method}");
        let response = client
            .request(method.clone(), lb.url(&format!("{path}?{query}")))
            .header("x-custom", "forty two")
            .header("cookie", "a=1; b=2")
            .header("user-agent", "lb-tests/1")
            .body(payload.clone())
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(
            response.text().await.unwrap(),
            payload,
            "{method}: the body"
        );
        let seen = backend.last_seen();
        assert_eq!(seen.method, method.as_str());
        assert_eq!(seen.path, path);
        assert_eq!(seen.query.as_deref(), Some(query));
        assert_eq!(seen.header("x-custom"), Some("forty two"));
        assert_eq!(seen.header("cookie"), Some("a=1; b=2"));
        assert_eq!(seen.header("user-agent"), Some("lb-tests/1"));
    }
}

#[tokio::test]
async fn the_client_gets_the_backends_status_headers_and_body() {
    let backend = TestBackend::start(7).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    let response = client().get(lb.url("/anything")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-backend-id"], "7");
    assert_eq!(response.text().await.unwrap(), "hello from backend 7");
    assert_eq!(backend.last_seen().path, "/anything");
}

#[tokio::test]
async fn underscore_aliases_of_the_headers_lb_sets_are_dropped_and_others_pass() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;

    // Behind a CGI-style backend, `X_Forwarded_Proto` and `X-Forwarded-Proto` are both HTTP_X_FORWARDED_PROTO.
    conn.send(
        b"GET /echo/aliases HTTP/1.1\r\n\
          Host: shop.example\r\n\
          X_Forwarded_Proto: https\r\n\
          x_forwarded_for: 203.0.113.7\r\n\
          X_Forwarded_Host: admin.example\r\n\
          X-Forwarded_Host: admin.example\r\n\
          Content_Length: 5\r\n\
          Transfer_Encoding: chunked\r\n\
          Proxy_Connection: keep-alive\r\n\
          X_Request_Id: 42\r\n\
          X_Forwarded_Protocol: kept\r\n\
          \r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);

    let seen = backend.last_seen();
    for (name, _) in &seen.headers {
        let alias = name.replace('_', "-");
        assert!(
            *name == alias
                || ![
                    "x-forwarded-proto",
                    "x-forwarded-for",
                    "x-forwarded-host",
                    "content-length",
                    "transfer-encoding",
                    "proxy-connection",
                ]
                .contains(&alias.as_str()),
            "{name} was forwarded: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    assert_eq!(seen.header("x_request_id"), Some("42"));
    assert_eq!(seen.header("x_forwarded_protocol"), Some("kept"));
}
