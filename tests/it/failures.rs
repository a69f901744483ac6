//! When backends fail: a refused connection is retried on the next backend, so a dying backend costs clients nothing;
//! what cannot be retried is answered honestly (502, 504), and a body cut short never looks complete.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{backend_of, client, tally, RawBackend, TestBackend, TestLb};

#[tokio::test]
async fn a_backend_killed_under_steady_traffic_costs_clients_nothing() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    // Checks too rare to notice: only the retry on the next backend can save the requests meant for backend 2.
    let lb = TestLb::builder()
        .backends(&[&b1, &b2, &b3])
        .health("interval", "10s")
        .health("timeout", "1s")
        .start()
        .await;
    lb.wait_serving(&[1, 2, 3]).await;

    let client = client();
    let mut failures = Vec::new();
    let mut after_the_kill = Vec::new();
    for i in 0..300 {
        if i == 50 {
            b2.stop().await;
        }
        let answer = match client.get(lb.url("/")).send().await {
            Ok(response) => (response.status().as_u16(), response.text().await),
            Err(e) => (0, Err(e)),
        };
        match answer {
            (200, Ok(body)) if i >= 50 => after_the_kill.extend(backend_of(&body)),
            (200, Ok(_)) => {}
            (status, body) => failures.push(format!("request {i}: {status} {body:?}")),
        }
    }

    assert!(
        failures.is_empty(),
        "{} of 300 requests failed: {failures:#?}",
        failures.len()
    );
    let answered_after: Vec<u64> = tally(after_the_kill).into_keys().collect();
    assert_eq!(answered_after, [1, 3]);
    assert_eq!(
        lb.count_logs(" down: "),
        0,
        "the checks noticed first, so the retry was not tested"
    );
}

#[tokio::test]
async fn every_attempt_refused_means_502() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .health("interval", "10s")
        .health("timeout", "1s")
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;

    b1.stop().await;
    b2.stop().await;

    let (status, _) = lb.get("/").await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_backend_closing_without_an_answer_means_502_and_no_second_try_there() {
    let backend = RawBackend::start(b"").await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    let (status, _) = lb.get("/").await;

    assert_eq!(status, 502);
    assert_eq!(
        backend.hits(),
        1,
        "the request was sent twice to the same backend"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_closed_as_it_is_reused_is_retried_on_a_new_one() {
    let (addr, closed_unanswered) = one_answer_per_connection().await;
    let lb = TestLb::builder()
        .backend_at(1, addr)
        .health("interval", "10s")
        .start()
        .await;

    assert_eq!(lb.get("/").await, (200, "ok".to_owned()));
    // The second request goes out on the kept-alive connection, which the backend closes without an answer.
    assert_eq!(lb.get("/").await, (200, "ok".to_owned()));
    assert_eq!(closed_unanswered.load(Ordering::SeqCst), 1);
}

/// A backend that answers the first request of each connection and closes it, unanswered, when a second comes:
/// like a backend whose keep-alive timeout fires just as the connection is reused. Counts those closes.
async fn one_answer_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let mut head = Vec::new();
                let mut answered = false;
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    head.extend_from_slice(&buf[..n]);
                    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    if answered {
                        counter.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    answered = true;
                    head.clear();
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, closed)
}

#[tokio::test]
async fn a_backend_that_stops_taking_the_body_and_never_answers_means_504() {
    // Reads the head, then neither reads the body nor answers, for 30 s.
    let backend = RawBackend::start_stalling(b"").await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("idle", "300ms")
        .timeout("backend_response", "300ms")
        .start()
        .await;

    let (mut read, mut write) = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect")
        .into_split();
    // Far more than the socket buffers between lb and the backend hold.
    let total: usize = 64 << 20;
    tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n");
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..total / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;

    assert!(head.is_ok(), "no answer within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
}

#[tokio::test]
async fn a_backend_answering_garbage_means_502() {
    let backend = RawBackend::start(b"this is not HTTP at all\r\n\r\n").await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;

    let (status, _) = lb.get("/").await;

    assert_eq!(status, 502);
}

#[tokio::test]
async fn a_backend_slower_than_backend_response_means_504() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("backend_response", "300ms")
        .start()
        .await;

    let started = Instant::now();
    let (status, _) = lb.get("/slow?ms=3000").await;

    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    let (status, body) = lb.get("/").await;
    assert_eq!((status, body.as_str()), (200, "hello from backend 1"));
}

#[tokio::test]
async fn a_backend_dying_mid_response_never_looks_complete() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let client = client();

    for path in ["/die?bytes=100000", "/die?bytes=100000&chunked=1"] {
        let Ok(response) = client.get(lb.url(path)).send().await else {
            continue; // an error before the head is honest too
        };
        assert_eq!(response.status(), 200, "{path}");
        let body = response.bytes().await;
        assert!(
            body.is_err(),
            "{path}: a body cut short looked complete: {:?} bytes",
            body.map(|b| b.len())
        );
    }

    let (status, _) = lb.get("/").await;
    assert_eq!(
        status, 200,
        "lb still serves after a backend died mid-response"
    );
}

#[tokio::test]
async fn a_backend_that_stalls_mid_body_is_cut_off_after_backend_response() {
    let backend =
        RawBackend::start_stalling(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc").await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("backend_response", "500ms")
        .start()
        .await;

    let mut stream = tokio::net::TcpStream::connect(lb.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;

    assert!(
        read.is_ok(),
        "lb kept the connection open behind a stalled backend"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("abc"),
        "the body must stay visibly incomplete: {text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "cut off too early"
    );
}
