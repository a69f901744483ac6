//! What a client or a burst can make `lb` hold is bounded: a slow upload gets 408 and frees its backend connection,
//! client connections stop at `max_connections` (the rest wait in the kernel's queue), idle backend connections
//! are capped per backend and closed after `pool.idle_timeout`, with or without traffic.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{wait_until, RawConn, ScriptedBackend, Step, TestBackend, TestLb, PATIENCE};

/// A backend that reads a request (and its body) and answers 200.
async fn answering_backend() -> ScriptedBackend {
    ScriptedBackend::start(|_| {
        vec![Step::write(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )]
    })
    .await
}

#[tokio::test]
async fn an_upload_that_trickles_gets_408_and_frees_its_backend_connection() {
    let backend = answering_backend().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("request_body", "1s")
        .start()
        .await;

    let mut client = RawConn::connect(lb.addr()).await;
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 1000\r\n\r\n")
        .await;
    wait_until(
        "the backend holds the upload's connection",
        PATIENCE,
        async || backend.open() >= 1,
    )
    .await;
    let started = Instant::now();
    // A byte every 200 ms never stalls the body (idle is 60 s) but is far below 1 KiB/s.
    let trickle = async {
        for _ in 0..50 {
            if client.try_send(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut watcher = RawConn::connect(lb.addr()).await;
    tokio::select! {
        () = trickle => panic!("lb took 10 s of trickle without answering"),
        () = wait_until("the backend connection is closed", PATIENCE, async || backend.open() == 0) => {}
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut after {took:?}, before request_body"
    );
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    let answer = client.response().await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"));
    // lb itself is fine.
    watcher
        .send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    assert_eq!(watcher.response().await.status, 200);
}

#[tokio::test]
async fn an_upload_at_a_fair_pace_takes_as_long_as_it_needs() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("request_body", "1s")
        .start()
        .await;
    let mut client = RawConn::connect(lb.addr()).await;
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 40960\r\n\r\n")
        .await;
    // 4 KiB every 200 ms: 20 KiB/s, for 2 s, twice request_body.
    for _ in 0..10 {
        client.send(&[b'a'; 4096]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = client.response().await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.text().ends_with(" 40960"), "{}", answer.text());
}

#[tokio::test]
async fn at_max_connections_new_clients_wait_in_the_queue_until_one_leaves() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .set("max_connections", 2)
        .start()
        .await;
    lb.wait_log("max_connections 2 (configured)", PATIENCE)
        .await;

    let mut first = RawConn::connect(lb.addr()).await;
    let mut second = RawConn::connect(lb.addr()).await;
    for conn in [&mut first, &mut second] {
        conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
            .await;
        assert_eq!(conn.response().await.status, 200);
    }
    // The third is accepted by the kernel (the listen queue) but not served while two are open.
    let mut third = TcpStream::connect(lb.addr())
        .await
        .expect("queued by the kernel");
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await
        .unwrap();
    let mut third = RawConn::from_stream(third);
    let early = tokio::time::timeout(Duration::from_millis(500), third.response()).await;
    assert!(early.is_err(), "served beyond max_connections: {early:?}");

    drop(first);
    let answer = tokio::time::timeout(PATIENCE, third.response())
        .await
        .expect("served once a connection left");
    assert_eq!(answer.status, 200);
    assert_eq!(
        lb.count_logs("accept"),
        0,
        "nothing failed: {:?}",
        lb.logs()
    );
}

#[tokio::test]
async fn idle_backend_connections_are_capped_and_closed_after_idle_timeout_without_traffic() {
    let backend = ScriptedBackend::start(|_| {
        vec![
            Step::Sleep(Duration::from_millis(300)),
            Step::write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ]
    })
    .await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .pool("max_idle_per_backend", 3)
        .pool("idle_timeout", "1s")
        .start()
        .await;

    // 40 requests at once: 40 backend connections in use.
    let client = crate::harness::client();
    let requests = (0..40).map(|_| {
        let (client, url) = (client.clone(), lb.url("/"));
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status.expect("answered"), 200);
    }
    // At most 3 per worker (2 workers) stay, and none after the idle timeout, though no request comes.
    wait_until(
        "the pool keeps at most 3 per worker",
        PATIENCE,
        async || backend.open() <= 6,
    )
    .await;
    let kept = Instant::now();
    wait_until(
        "idle backend connections are closed",
        PATIENCE,
        async || backend.open() == 0,
    )
    .await;
    assert!(
        kept.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        kept.elapsed()
    );
}
