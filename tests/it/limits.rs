//! Requests `lb` refuses before any backend sees them: a head too slow (408, slowloris), too big (431), a target too
//! long (414), a malformed request (400); and requests just under the limits, which pass.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{client, TestBackend, TestLb, PATIENCE};

/// Sends `pieces` with `gap` between them while reading whatever comes back, until `lb` closes the connection.
/// The write side stays open throughout, as a slow client's would. Answers the bytes received and when the close came.
async fn exchange(addr: SocketAddr, pieces: &[&[u8]], gap: Duration) -> (String, Duration) {
    let started = Instant::now();
    let (mut reader, mut writer) = TcpStream::connect(addr)
        .await
        .expect("connect to lb")
        .into_split();
    let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
    let sender = tokio::spawn(async move {
        for piece in pieces {
            if writer.write_all(&piece).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    };
    let closed = tokio::time::timeout(PATIENCE, read).await;
    sender.abort();
    let received = String::from_utf8_lossy(&received).into_owned();
    assert!(
        closed.is_ok(),
        "lb kept the connection open; received {received:?}"
    );
    (received, started.elapsed())
}

#[tokio::test]
async fn a_client_that_stops_halfway_through_its_head_gets_408_and_is_closed() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("client_header", "500ms")
        .start()
        .await;

    let partial: &[u8] = b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Slow: ";
    let (answer, closed_after) = exchange(lb.addr(), &[partial], Duration::ZERO).await;

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        closed_after >= Duration::from_millis(400),
        "closed after {closed_after:?}, before the timeout"
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_client_dribbling_its_head_gets_408_when_the_whole_head_is_late() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("client_header", "500ms")
        .start()
        .await;

    // A header line every 100 ms keeps the socket busy for 4 s; only a deadline on the whole head stops it.
    let mut pieces: Vec<&[u8]> = vec![b"GET / HTTP/1.1\r\nHost: shop.example\r\n"];
    pieces.extend([&b"X-Drip: drop\r\n"[..]; 40]);
    let (answer, closed_after) = exchange(lb.addr(), &pieces, Duration::from_millis(100)).await;

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        closed_after < Duration::from_secs(2),
        "closed after {closed_after:?}"
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_head_over_64_kib_gets_431() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    let request = format!(
        "GET / HTTP/1.1\r\nHost: shop.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (answer, _) = exchange(lb.addr(), &[request.as_bytes()], Duration::ZERO).await;

    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_target_over_16_kib_gets_414() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    let (status, _) = lb.get(&format!("/{}", "a".repeat(20 * 1024))).await;

    assert_eq!(status, 414);
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_malformed_request_gets_400() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    let request: &[u8] = b"GET / HTTP/1.1\r\nHost: shop.example\r\nthis is no header\r\n\r\n";
    let (answer, _) = exchange(lb.addr(), &[request], Duration::ZERO).await;

    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn requests_just_under_the_limits_pass() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let target = format!("/{}", "b".repeat(15 * 1024));

    let response = client()
        .get(lb.url(&target))
        .header("x-big", "c".repeat(48 * 1024))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let seen = backend.last_seen();
    assert_eq!(seen.path, target);
    assert_eq!(seen.header("x-big").map(str::len), Some(48 * 1024));
}
