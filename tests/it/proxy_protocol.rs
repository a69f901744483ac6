//! The PROXY protocol both ways: `send_proxy = "v1" | "v2"` makes `lb` tell a backend who the client is, and
//! `accept_proxy` makes it believe a trusted source that tells it (in HTTP mode, the backend then sees that client in
//! `X-Forwarded-For`; in TCP mode with `send_proxy` too, the backend gets the original addresses). Malformed
//! headers, and headers from sources not trusted with one, close the connection, and `lb` keeps serving.

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{
    goodbye, greeting, v1_header, v2_header, RawConn, TcpBackend, TestBackend, TestLb, PATIENCE,
};

/// The client `lb` is told about, and the address it is told that client reached.
fn told() -> (SocketAddr, SocketAddr) {
    (
        "203.0.113.9:40000".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
    )
}

/// `lb` in TCP mode over one backend with `send_proxy = version`, and `extra` top-level keys.
async fn tcp_lb(backend: &TcpBackend, version: &str, extra: serde_json::Value) -> TestLb {
    let mut lb = TestLb::builder().set("mode", "tcp").set(
        "backends",
        json!([{"id": backend.id, "host": "127.0.0.1", "port": backend.addr().port(), "send_proxy": version}]),
    );
    for (key, value) in extra.as_object().unwrap() {
        lb = lb.set(key, value.clone());
    }
    lb.start().await
}

/// Sends `first` on a new connection to `lb` and answers the greeting line, then checks the echo through it.
async fn session(lb: &TestLb, first: &[u8], id: u64) -> SocketAddr {
    let mut stream = TcpStream::connect(lb.addr()).await.expect("connect to lb");
    let me = stream.local_addr().unwrap();
    stream.write_all(first).await.unwrap();
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
        .await
        .expect("a greeting in time")
        .unwrap();
    assert_eq!(line, greeting(id), "{}", lb.logs().join("\n"));
    stream.write_all(b"data").await.unwrap();
    stream.get_mut().shutdown().await.unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, format!("data{}", goodbye(id)));
    me
}

/// Sends `bytes` to `addr` and answers what came back before the connection closed (lb closes it: a read error
/// such as a reset counts as closed too).
async fn closed_after(addr: SocketAddr, bytes: &[u8], shut_write: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to lb");
    let _ = stream.write_all(bytes).await;
    if shut_write {
        let _ = stream.shutdown().await;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "lb kept the connection open after {bytes:?}");
    got
}

#[tokio::test]
async fn send_proxy_v1_and_v2_tell_a_tcp_backend_the_client() {
    for version in ["v1", "v2"] {
        let backend = TcpBackend::expecting_proxy(1).await;
        let lb = tcp_lb(&backend, version, json!({})).await;
        let me = session(&lb, b"", 1).await;
        let want = match version {
            "v1" => v1_header(me, lb.addr()),
            _ => v2_header(me, lb.addr()),
        };
        assert_eq!(backend.headers(), vec![want], "{version}");
    }
}

#[tokio::test]
async fn accept_proxy_in_http_mode_makes_the_header_client_the_forwarded_one() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .set("accept_proxy", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let (client, local) = told();
    for header in [v1_header(client, local), v2_header(client, local)] {
        let mut conn = RawConn::connect(lb.addr()).await;
        let request = b"GET /who HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
        conn.send(&[header.as_slice(), request].concat()).await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = backend.last_seen();
        assert_eq!(seen.path, "/who");
        assert_eq!(seen.header("x-forwarded-for"), Some("203.0.113.9"));
    }
}

#[tokio::test]
async fn accept_proxy_in_tcp_mode_passes_the_original_addresses_on() {
    let backend = TcpBackend::expecting_proxy(1).await;
    let lb = tcp_lb(&backend, "v1", json!({"accept_proxy": ["127.0.0.0/8"]})).await;
    let (client, local) = told();
    // Bytes past the header, sent with it, reach the backend too (the echo shows them).
    let first = [v2_header(client, local).as_slice(), b"early "].concat();
    let mut stream = TcpStream::connect(lb.addr()).await.unwrap();
    stream.write_all(&first).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut got))
        .await
        .expect("the answer in time")
        .unwrap();
    assert_eq!(got, format!("{}early {}", greeting(1), goodbye(1)));
    assert_eq!(backend.headers(), vec![v1_header(client, local)]);
}

#[tokio::test]
async fn malformed_headers_close_the_connection_and_lb_keeps_serving() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .set("accept_proxy", json!(["127.0.0.1"]))
        .start()
        .await;
    let (client, local) = told();
    let v2 = v2_header(client, local);
    let request = b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
    let cases: &[(&str, Vec<u8>, bool)] = &[
        ("no header from a trusted source", request.to_vec(), false),
        (
            "bad v2 signature",
            [b"\r\n\r\n\0\r\nQUIX\n".as_slice(), &v2[12..], request].concat(),
            false,
        ),
        (
            "v2 version 1",
            [&v2[..12], &[0x11], &v2[13..], request].concat(),
            false,
        ),
        ("v2 truncated", v2[..20].to_vec(), true),
        (
            "v1 truncated",
            b"PROXY TCP4 203.0.113.9 198.51".to_vec(),
            true,
        ),
        ("v1 too long", [long.as_bytes(), request].concat(), false),
        (
            "v1 port out of range",
            [
                b"PROXY TCP4 203.0.113.9 198.51.100.1 70000 443\r\n".as_slice(),
                request,
            ]
            .concat(),
            false,
        ),
        (
            "v1 bad address",
            [
                b"PROXY TCP4 203.0.113.999 198.51.100.1 4 443\r\n".as_slice(),
                request,
            ]
            .concat(),
            false,
        ),
        (
            "v1 double space",
            [
                b"PROXY TCP4  203.0.113.9 198.51.100.1 4 443\r\n".as_slice(),
                request,
            ]
            .concat(),
            false,
        ),
    ];
    for (what, bytes, shut_write) in cases {
        let got = closed_after(lb.addr(), bytes, *shut_write).await;
        assert!(
            got.is_empty(),
            "{what}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    lb.wait_log("malformed PROXY header", PATIENCE).await;
    // Still serving, with a good header.
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(&[v1_header(client, local).as_slice(), request].concat())
        .await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(backend.hits(), 1, "only the good one reached the backend");
}

#[tokio::test]
async fn a_header_from_an_untrusted_source_closes_the_connection() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .set("accept_proxy", json!(["192.0.2.0/24"]))
        .start()
        .await;
    let (client, local) = told();
    let request = b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    for header in [v1_header(client, local), v2_header(client, local)] {
        let got = closed_after(lb.addr(), &[header.as_slice(), request].concat(), false).await;
        assert!(
            got.is_empty(),
            "answered {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    lb.wait_log("PROXY header from a source not in accept_proxy", PATIENCE)
        .await;
    // The same source without a header is served as usual, and the backend sees the real client.
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(request).await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(
        backend.last_seen().header("x-forwarded-for"),
        Some("127.0.0.1")
    );
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn in_tcp_mode_an_untrusted_header_never_reaches_the_backend() {
    let backend = TcpBackend::start(1).await;
    let lb = TestLb::builder()
        .set("mode", "tcp")
        .set(
            "backends",
            json!([{"id": 1, "host": "127.0.0.1", "port": backend.addr().port()}]),
        )
        .set("accept_proxy", json!(["192.0.2.0/24"]))
        .start()
        .await;
    let (client, local) = told();
    let mut stream = TcpStream::connect(lb.addr()).await.unwrap();
    stream.write_all(&v1_header(client, local)).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("closed");
    assert_eq!(backend.sessions(), 0, "the header reached the backend");
    // A client without a header is served.
    session(&lb, b"", 1).await;
}

/// An HTTP/1.1 backend whose connections start with a PROXY header: it records each header and answers every
/// request on the connection with `200 ok`.
async fn http_backend_expecting_proxy(
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = headers.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Health checks (type tcp) only connect: no header, nothing to answer.
                let Some(header) = crate::harness::read_proxy_header(&mut stream).await else {
                    return;
                };
                // A health check's connection: a header naming no client, then nothing to answer.
                if crate::harness::is_local(&header) {
                    return;
                }
                seen.lock().unwrap().push(header);
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    // A request head, up to its empty line.
                    loop {
                        line.clear();
                        match reader.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if reader.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, headers)
}

#[tokio::test]
async fn send_proxy_in_http_mode_tells_the_backend_each_client_on_a_connection_of_its_own() {
    let (backend, headers) = http_backend_expecting_proxy().await;
    let lb = TestLb::builder()
        .health("type", "tcp")
        .set(
            "backends",
            json!([{"id": 1, "host": "127.0.0.1", "port": backend.port(), "send_proxy": "v1"}]),
        )
        .start()
        .await;

    let mut clients = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(lb.addr()).await.expect("connect to lb");
        clients.push(stream.local_addr().unwrap());
        let mut conn = RawConn::from_stream(stream);
        for _ in 0..2 {
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let response = conn.response().await;
            assert_eq!((response.status, response.text()), (200, "ok".to_owned()));
        }
    }
    // One backend connection per client connection (two requests each), each starting with that client's header.
    let headers = headers.lock().unwrap().clone();
    let want: Vec<Vec<u8>> = clients.iter().map(|&c| v1_header(c, lb.addr())).collect();
    assert_eq!(
        headers
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect::<Vec<_>>(),
        want.iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect::<Vec<_>>(),
    );
}

#[tokio::test]
async fn a_proxy_header_before_the_handshake_names_the_client_the_backend_learns() {
    let backend = TestBackend::start(1).await;
    let certs = crate::tls::two_certificates();
    let config = crate::harness::full_config(
        &[(1, &backend)],
        json!({"tls": crate::tls::tls_table(&certs), "accept_proxy": ["127.0.0.1/32"]}),
    );
    let lb = TestLb::from_file("lb.json", &config).await;

    // As a load balancer in front sends it: the v2 header, then the TLS handshake on the same connection.
    let client: std::net::SocketAddr = "203.0.113.7:41000".parse().unwrap();
    let mut tcp = TcpStream::connect(lb.addr()).await.unwrap();
    tcp.write_all(&v2_header(client, lb.addr())).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let stream = certs
        .ca
        .client(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("a handshake after the PROXY header");
    let mut conn = RawConn::from_stream(stream);
    conn.send(&crate::tls::get("/proxied")).await;
    assert_eq!(conn.response().await.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.header("x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // A source in the list must send the header: a bare handshake is refused.
    let refused = certs
        .ca
        .try_connect(lb.addr(), "a.test", &[b"http/1.1"])
        .await;
    assert!(
        refused.is_err(),
        "a handshake without the header: {refused:?}"
    );
}

#[tokio::test]
async fn health_checks_of_a_send_proxy_backend_start_with_a_header_naming_no_client() {
    for version in ["v1", "v2"] {
        let backend = TcpBackend::expecting_proxy(1).await;
        let _lb = tcp_lb(&backend, version, json!({})).await;
        // Every check (a connect, in TCP mode) starts with a header the backend accepts: PROXY UNKNOWN, v2 LOCAL.
        crate::harness::wait_until("checks with a LOCAL header", PATIENCE, async || {
            backend.locals() >= 3
        })
        .await;
        assert!(
            backend.headers().is_empty(),
            "{version}: no client connected yet"
        );
    }
}
