//! TLS termination: certificates chosen by SNI (made here by a test CA), ALPN, what the backend learns, keep-alive
//! over TLS, certificates that cannot be loaded (at the start and on reload), a reload that brings a new one, and
//! what a client that does not speak TLS gets.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::tls::{alpn, presented, Issued, TestCa};
use crate::harness::{full_config, run_lb, RawConn, TestBackend, TestLb, WsEchoBackend, PATIENCE};
use crate::harness::{h2_fetch, h2_request};
use futures_util::{SinkExt, StreamExt};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;

/// Two certificates: `a.test` (the default, first) and `*.b.test`.
pub(crate) struct Two {
    pub ca: TestCa,
    pub a: Issued,
    pub b: Issued,
}

pub(crate) fn two_certificates() -> Two {
    let ca = TestCa::new();
    let a = ca.issue("a", &["a.test"]);
    let b = ca.issue("b", &["*.b.test"]);
    Two { ca, a, b }
}

pub(crate) fn tls_table(certs: &Two) -> serde_json::Value {
    json!({
        "cert": certs.a.cert,
        "key": certs.a.key,
        "certificates": [{"cert": certs.b.cert, "key": certs.b.key}],
    })
}

pub(crate) async fn lb_with(backend: &TestBackend, certs: &Two) -> TestLb {
    let config = full_config(
        &[(1, backend)],
        json!({"tls": tls_table(certs), "timeouts": {"client_header": "1s"}}),
    );
    TestLb::from_file("lb.json", &config).await
}

pub(crate) fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn sni_chooses_the_certificate_exact_or_wildcard_and_anything_else_gets_the_default() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;

    let a = certs.ca.connect(lb.addr(), "a.test").await;
    assert_eq!(presented(&a), certs.a.der, "a.test");
    let b = certs.ca.connect(lb.addr(), "shop.b.test").await;
    assert_eq!(presented(&b), certs.b.der, "shop.b.test (a wildcard)");

    // A name no certificate has, a name two labels under the wildcard, and no SNI at all: the default.
    for (sni, send) in [
        ("unknown.test", true),
        ("x.shop.b.test", true),
        ("a.test", false),
    ] {
        let client = certs.ca.client_verifying_as("a.test", send);
        let tcp = TcpStream::connect(lb.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let stream = client
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("{sni} (SNI sent: {send}): {e}"));
        assert_eq!(presented(&stream), certs.a.der, "{sni} (SNI sent: {send})");
    }
}

#[tokio::test]
async fn alpn_agrees_on_http11_and_the_backend_learns_https_over_one_kept_alive_connection() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;

    let stream = certs
        .ca
        .try_connect(lb.addr(), "a.test", &[b"http/1.1"])
        .await
        .expect("a handshake offering http/1.1");
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
    let mut conn = RawConn::from_stream(stream);
    for i in 0..3 {
        conn.send(&get(&format!("/kept/{i}"))).await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "request {i} on one connection");
        assert_eq!(response.text(), "hello from backend 1");
        let seen = backend.last_seen();
        assert_eq!(seen.path, format!("/kept/{i}"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
        let forwarded = seen.header("forwarded").unwrap_or_default();
        assert!(
            forwarded.ends_with(";proto=https"),
            "forwarded: {forwarded}"
        );
    }
    // Pipelined requests over TLS (both in one write: decrypted together, served in order).
    let mut two = get("/one");
    two.extend_from_slice(&get("/two"));
    conn.send(&two).await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(backend.last_seen().path, "/two");
}

#[tokio::test]
async fn alpn_prefers_h2_and_requests_over_it_reach_the_backend_as_https() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;

    let stream = certs
        .ca
        .try_connect(lb.addr(), "a.test", &[b"h2", b"http/1.1"])
        .await
        .expect("a handshake offering h2 and http/1.1");
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 connection over TLS");
    tokio::spawn(connection);
    for i in 0..3 {
        let request = h2_request("GET", &format!("/over-h2/{i}"), "");
        let (status, _, body, _) = h2_fetch(&mut sender, request).await;
        assert_eq!(status, 200, "request {i} over h2");
        assert_eq!(body, "hello from backend 1");
        let seen = backend.last_seen();
        assert_eq!(seen.path, format!("/over-h2/{i}"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn tls_12_and_13_are_both_spoken() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = certs.ca.client_with(&[b"http/1.1"], &[version]);
        let tcp = TcpStream::connect(lb.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        let stream = client.connect(name, tcp).await.expect("a handshake");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        let mut conn = RawConn::from_stream(stream);
        conn.send(&get("/")).await;
        assert_eq!(conn.response().await.status, 200, "{:?}", version.version);
    }
}

#[tokio::test]
async fn a_websocket_session_works_over_tls() {
    let backend = WsEchoBackend::start().await;
    let ca = TestCa::new();
    let cert = ca.issue("ws", &["ws.test"]);
    let config = format!(
        r#"{{"backends": [{{"id": 1, "host": "127.0.0.1", "port": {}}}], "health_check": {{"path": "/health", "interval": "100ms"}}, "tls": {{"cert": {:?}, "key": {:?}}}}}"#,
        backend.addr().port(),
        cert.cert,
        cert.key
    );
    let lb = TestLb::from_file("lb.json", &config).await;
    let stream = ca.connect(lb.addr(), "ws.test").await;
    let url = format!("wss://ws.test:{}/chat", lb.addr().port());
    let (mut ws, response) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("a handshake in time")
            .expect("a WebSocket handshake over TLS");
    assert_eq!(response.status(), 101);
    for size in [5, 70_000] {
        let sent = crate::harness::pattern(size);
        ws.send(Message::Binary(sent.clone().into())).await.unwrap();
        let back = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("an echo in time")
            .expect("a message")
            .expect("no error");
        assert_eq!(back.into_data().to_vec(), sent, "{size} bytes echoed");
    }
    ws.close(None).await.unwrap();
}

/// A few of the framing tests' refusals (`framing/`), over TLS: the same status, a close, nothing smuggled.
#[tokio::test]
async fn malformed_requests_are_refused_over_tls_as_in_clear_text() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let cases = [
        "POST /up HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1, 2\r\n\r\nab",
        "GET / HTTP/1.1\r\nHost: shop.test\r\nBad Header: x\r\n\r\n",
        "GET / HTTP/1.1\nHost: shop.test\r\n\r\n",
    ];
    for case in cases {
        let mut stream = certs.ca.connect(lb.addr(), "a.test").await;
        let _ = stream
            .write_all(format!("{case}{smuggled}").as_bytes())
            .await;
        let mut received = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                received.extend_from_slice(&buf[..n]);
            }
        };
        let closed = tokio::time::timeout(PATIENCE, read).await.is_ok();
        let text = String::from_utf8_lossy(&received);
        assert!(closed, "{case:?}: not closed; got {text:?}");
        assert!(text.starts_with("HTTP/1.1 400 "), "{case:?}: got {text:?}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "{case:?}: one answer: {text:?}"
        );
    }
    assert_eq!(
        backend.hits(),
        0,
        "no malformed or smuggled request reached the backend"
    );
}

#[tokio::test]
async fn a_large_body_goes_up_and_comes_back_over_tls() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;
    let mut conn = RawConn::from_stream(certs.ca.connect(lb.addr(), "a.test").await);
    let body = crate::harness::pattern(300 * 1024);
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    conn.send(&request).await;
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    crate::harness::same_bytes(&response.body, &body, "the body echoed over TLS");
    // Then the connection still serves.
    conn.send(&get("/after")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn a_large_download_to_a_slow_reader_arrives_whole_and_the_connection_serves_on() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    // Health checks that a busy test thread (reading and hashing 8 MiB) cannot fail.
    let health =
        json!({"path": crate::harness::HEALTH_PATH, "interval": "1s", "timeout": "1s", "fall": 3});
    let config = full_config(
        &[(1, &backend)],
        json!({"tls": tls_table(&certs), "health_check": health}),
    );
    let lb = TestLb::from_file("lb.json", &config).await;
    let mut stream = certs.ca.connect(lb.addr(), "a.test").await;
    let size: usize = 8 * 1024 * 1024;
    stream
        .write_all(&get(&format!("/download?bytes={size}")))
        .await
        .unwrap();
    // Not reading for a while: the sockets fill up and lb's writes wait.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut conn = RawConn::from_stream(stream);
    let response = conn.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), size);
    let digest = sha2::Sha256::digest(&response.body);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, crate::harness::pattern_sha256(size as u64));
    conn.send(&get("/next")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn the_flags_give_the_main_listener_its_certificate() {
    let backend = TestBackend::start(1).await;
    let ca = TestCa::new();
    let issued = ca.issue("flag", &["flag.test"]);
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--tls-cert")
        .arg(issued.cert.to_str().unwrap())
        .arg("--tls-key")
        .arg(issued.key.to_str().unwrap())
        .start()
        .await;
    let stream = ca.connect(lb.addr(), "flag.test").await;
    assert_eq!(presented(&stream), issued.der);
    let mut conn = RawConn::from_stream(stream);
    conn.send(&get("/")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn a_certificate_that_cannot_be_loaded_stops_the_start_with_one_line_naming_it() {
    let ca = TestCa::new();
    let good = ca.issue("good", &["good.test"]);
    let other = ca.issue("other", &["other.test"]);
    let garbage = ca.path("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let empty_pem = ca.path("empty.pem");
    std::fs::write(&empty_pem, "").unwrap();
    let missing = ca.path("missing.pem");
    let (g, k, o) = (&good.cert, &good.key, &other.key);
    let config = ca.path("lb.json");
    std::fs::write(&config, r#"[{"id": 1, "host": "127.0.0.1", "port": 9}]"#).unwrap();
    let config = config.to_str().unwrap();
    let cases = [
        (
            missing.clone(),
            k.clone(),
            missing.clone(),
            "cannot read: no such file",
        ),
        (
            garbage.clone(),
            k.clone(),
            garbage.clone(),
            "no certificate in it",
        ),
        (
            empty_pem.clone(),
            k.clone(),
            empty_pem.clone(),
            "no certificate in it",
        ),
        (
            g.clone(),
            garbage.clone(),
            garbage.clone(),
            "no private key in it",
        ),
        (g.clone(), g.clone(), g.clone(), "no private key in it"),
        (k.clone(), k.clone(), k.clone(), "no certificate in it"),
        (
            g.clone(),
            o.clone(),
            o.clone(),
            "this key does not match the certificate",
        ),
    ];
    for (cert, key, named, problem) in cases {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let finished = run_lb(&[
            "--config",
            config,
            "--port",
            "0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ])
        .await;
        let line = finished.last_error_line();
        assert_eq!(finished.code, Some(1), "{cert} {key}: {}", finished.stderr);
        let named = named.to_str().unwrap();
        assert!(
            line.starts_with("error: tls: ") && line.contains(named) && line.contains(problem),
            "{cert} {key}: wanted one line naming {named} and {problem:?}, got {line:?}"
        );
        assert_eq!(
            finished
                .stderr
                .lines()
                .filter(|l| l.contains("error"))
                .count(),
            1,
            "one line: {}",
            finished.stderr
        );
        // `lb check` says the same, without starting.
        let checked = run_lb(&[
            "check",
            "--config",
            config,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ])
        .await;
        assert_eq!(
            checked.code,
            Some(1),
            "check {cert} {key}: {}",
            checked.stderr
        );
        assert_eq!(checked.last_error_line(), line, "check {cert} {key}");
    }
}

#[tokio::test]
async fn an_expired_certificate_loads_with_a_warning() {
    let backend = TestBackend::start(1).await;
    let ca = TestCa::new();
    let mut params = rcgen::CertificateParams::new(vec!["old.test".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let old = ca.issue_with("old", params);
    let config = full_config(
        &[(1, &backend)],
        json!({"tls": {"cert": old.cert, "key": old.key}}),
    );
    let lb = TestLb::from_file("lb.json", &config).await;
    let line = lb.wait_log("expired on", PATIENCE).await;
    assert!(line.contains(old.cert.to_str().unwrap()), "{line}");
}

#[tokio::test]
async fn a_reload_brings_new_certificates_and_one_that_fails_keeps_the_old() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;
    let before = certs.ca.connect(lb.addr(), "x.b.test").await;
    assert_eq!(presented(&before), certs.b.der);
    let mut kept = RawConn::from_stream(before);

    // A renewal: new files at the same paths.
    let renewed = certs.ca.issue("b", &["*.b.test"]);
    assert_ne!(renewed.der, certs.b.der);
    lb.signal("HUP").await;
    lb.wait_log("config reloaded", PATIENCE).await;
    let after = certs.ca.connect(lb.addr(), "x.b.test").await;
    assert_eq!(
        presented(&after),
        renewed.der,
        "new handshakes get the new certificate"
    );
    // The connection made before is not touched.
    kept.send(&get("/still")).await;
    assert_eq!(kept.response().await.status, 200);

    // A broken renewal: the certificate loaded before stays, and the balancer goes on serving.
    std::fs::write(&certs.b.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    lb.signal("HUP").await;
    let line = lb
        .wait_log("the certificate loaded before stays", PATIENCE)
        .await;
    assert!(line.contains(certs.b.cert.to_str().unwrap()), "{line}");
    lb.wait_log("kept the certificate loaded before", PATIENCE)
        .await;
    let still = certs.ca.connect(lb.addr(), "x.b.test").await;
    assert_eq!(presented(&still), renewed.der, "the old one is kept");
    let mut conn = RawConn::from_stream(still);
    conn.send(&get("/")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_400_and_a_close_and_garbage_gets_a_close() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;

    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(&get("/")).await;
    let response = conn.response().await;
    assert_eq!(response.status, 400);
    assert!(response.text().contains("https://"), "{}", response.text());
    conn.read_until_closed(PATIENCE).await;

    for garbage in [
        &b"\x00\x01\x02\x03 not tls at all\r\n\r\n"[..],
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut tcp = TcpStream::connect(lb.addr()).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "{garbage:?}: lb kept the connection open");
    }

    // A client that connects and says nothing is closed after client_header (1 s here).
    let mut silent = TcpStream::connect(lb.addr()).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, silent.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a silent client is closed in time");

    // And lb still serves.
    let mut conn = RawConn::from_stream(certs.ca.connect(lb.addr(), "a.test").await);
    conn.send(&get("/")).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn an_extra_tls_listener_serves_like_the_main_one() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let config = full_config(
        &[(1, &backend)],
        json!({"tls": tls_table(&certs), "listeners": [{"address": "127.0.0.1:0", "tls": true}]}),
    );
    let lb = TestLb::from_file("lb.json", &config).await;
    let extra = lb.listener(0).await;
    let stream = certs.ca.connect(extra, "y.b.test").await;
    assert_eq!(presented(&stream), certs.b.der);
    let mut conn = RawConn::from_stream(stream);
    conn.send(&get("/extra")).await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(
        backend.last_seen().header("x-forwarded-proto"),
        Some("https")
    );
}

#[tokio::test]
async fn a_reload_on_the_admin_plane_lists_the_certificates_that_kept_their_old_version() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let config = full_config(&[(1, &backend)], json!({"tls": tls_table(&certs)}));
    let lb = TestLb::from_file_with("lb.json", &config, &["--admin", "127.0.0.1:0"]).await;
    let admin = lb.admin().await;

    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 200, "{body}");
    let diff: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(diff.get("certificate_errors"), None, "{body}");

    std::fs::write(&certs.a.key, "not a key\n").unwrap();
    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 200, "the rest of the reload is applied: {body}");
    let diff: serde_json::Value = serde_json::from_str(&body).unwrap();
    let errors = diff["certificate_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1, "{body}");
    let error = errors[0].as_str().unwrap();
    assert!(
        error.contains(certs.a.key.to_str().unwrap()) && error.contains("no private key"),
        "{error}"
    );
    let stream = certs.ca.connect(lb.addr(), "a.test").await;
    assert_eq!(presented(&stream), certs.a.der, "the old one is kept");
}
