//! Local trouble is not the backend's fault, and failures do not flood the log: a process out of file descriptors
//! marks no backend down, a client that goes away blames no backend, a dead backend costs one line a second, and a
//! request that makes backends close without answering reaches at most two of them.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{wait_until, RawConn, ScriptedBackend, Step, TestBackend, TestLb, PATIENCE};

#[tokio::test]
async fn a_query_of_death_reaches_at_most_two_backends() {
    let mut backends = Vec::new();
    // Each closes, or resets, the connection on every request it reads.
    for reset in [false, true, false] {
        let step = if reset { Step::Reset } else { Step::Close };
        backends.push(ScriptedBackend::start(move |_| vec![step.clone()]).await);
    }
    let lb = backends
        .iter()
        .enumerate()
        .fold(TestLb::builder(), |lb, (i, b)| {
            lb.backend_at(i as u64 + 1, b.addr())
        })
        .start()
        .await;
    let hits = || backends.iter().map(ScriptedBackend::hits).sum::<usize>();

    let (status, _) = lb.get("/crash").await;
    assert_eq!(status, 502);
    assert_eq!(hits(), 2, "the GET was sent once and resent once");

    let mut post = RawConn::connect(lb.addr()).await;
    post.send(b"POST /crash HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    assert_eq!(post.response().await.status, 502);
    assert_eq!(hits(), 3, "a POST is never resent");
    let line = lb.wait_log("request failed", PATIENCE).await;
    assert!(line.contains("not resent again"), "{line}");
}

#[tokio::test]
async fn clients_that_go_away_blame_no_backend() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--access-log")
        .start()
        .await;

    // While the backend thinks.
    let mut thinking = TcpStream::connect(lb.addr()).await.unwrap();
    thinking
        .write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await
        .unwrap();
    wait_until("the backend has the request", PATIENCE, async || {
        backend.hits() == 1
    })
    .await;
    drop(thinking);
    // Mid-download.
    let mut downloading = TcpStream::connect(lb.addr()).await.unwrap();
    downloading
        .write_all(b"GET /download?bytes=50000000 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await
        .unwrap();
    let mut some = vec![0u8; 256 * 1024];
    downloading.read_exact(&mut some).await.unwrap();
    drop(downloading);
    // Mid-upload.
    let mut uploading = TcpStream::connect(lb.addr()).await.unwrap();
    uploading
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await
        .unwrap();
    uploading.write_all(&[b'u'; 100_000]).await.unwrap();
    wait_until("the upload reached the backend", PATIENCE, async || {
        backend.hits() == 3
    })
    .await;
    drop(uploading);

    wait_until("all three are in the access log", PATIENCE, async || {
        lb.count_logs("backend=") >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let warnings: Vec<String> = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert!(
        warnings.is_empty(),
        "client aborts blamed on the backend: {warnings:#?}"
    );
    let access: Vec<String> = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("backend="))
        .collect();
    assert!(access.iter().all(|l| !l.contains("\" 502 ")), "{access:#?}");
    // The download is cut by its client (499, nginx's "client closed request"); the answer to the one that left
    // while the backend thought still went out whole to the kernel (a half-closed client may still read it).
    let cut = |path: &str| {
        let line = access.iter().find(|l| l.contains(path));
        line.is_some_and(|l| l.contains("\" 499 ") && l.contains("backend=1"))
    };
    assert!(cut("/download") && cut("/upload"), "{access:#?}");
}

#[tokio::test]
async fn a_dead_backend_costs_one_log_line_a_second_not_one_per_request() {
    let alive = TestBackend::start(1).await;
    let dying = TestBackend::start(2).await;
    // Checks every 5 s: the dead backend stays in the rotation for the whole test.
    let lb = TestLb::builder()
        .backends(&[&alive, &dying])
        .health("interval", "5s")
        .health("timeout", "1s")
        .arg("--log-level")
        .arg("debug")
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;
    dying.stop().await;

    let started = Instant::now();
    let client = crate::harness::client();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let requests = (0..20).map(|_| client.get(lb.url("/")).send());
        for response in futures_util::future::join_all(requests).await {
            assert_eq!(response.expect("answered").status(), 200);
            answered += 1;
        }
    }
    let line = lb
        .wait_log("more requests retried elsewhere in the last 1 s", PATIENCE)
        .await;
    assert!(
        line.contains("backend 2: ") && line.contains("connection refused"),
        "{line}"
    );
    let about_backend_2 = lb
        .logs()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("backend 2"))
        .count();
    assert!(
        about_backend_2 <= 4,
        "{about_backend_2} lines for {answered} requests:\n{}",
        lb.logs().join("\n")
    );
    assert!(answered > 100);
}

/// Opens `count` connections that each make one request and then stay open; answers them.
async fn flood(lb: &TestLb, count: usize) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(lb.addr())
            .await
            .expect("the kernel queues it");
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
            .await;
        flood.push(stream);
    }
    flood
}

#[tokio::test]
async fn a_flood_within_the_derived_limit_leaves_the_backends_up() {
    let backends = [TestBackend::start(1).await, TestBackend::start(2).await];
    let lb = TestLb::builder()
        .backends(&[&backends[0], &backends[1]])
        .open_files(256)
        // A check that takes long on a loaded machine is not what this test is about: only the flood's effect is.
        .health("timeout", "1s")
        .start()
        .await;
    lb.wait_log("(from the open-files limit 256)", PATIENCE)
        .await;
    let flood = flood(&lb, 400).await;
    // Many health checks run while the flood holds every connection lb allows.
    let checks = backends[0].health_checks();
    wait_until("health checks go on", PATIENCE, async || {
        backends[0].health_checks() >= checks + 10
    })
    .await;
    drop(flood);
    assert_eq!(lb.get("/").await.0, 200);
    assert_eq!(lb.count_logs(" down"), 0, "{}", lb.logs().join("\n"));
    assert_eq!(
        lb.count_logs("too many open files"),
        0,
        "{}",
        lb.logs().join("\n")
    );
}

#[tokio::test]
async fn out_of_file_descriptors_is_not_the_backends_fault() {
    let backends = [TestBackend::start(1).await, TestBackend::start(2).await];
    // A limit set far above what 128 descriptors allow: lb runs out of them.
    let lb = TestLb::builder()
        .backends(&[&backends[0], &backends[1]])
        .open_files(128)
        .set("max_connections", 1000)
        // A check that takes long on a loaded machine is not what this test is about: only running out of
        // descriptors is.
        .health("timeout", "1s")
        .start()
        .await;
    lb.wait_log("max_connections 1000 is more than", PATIENCE)
        .await;
    let flood = flood(&lb, 300).await;
    lb.wait_log("accept: too many open files", PATIENCE).await;
    let checks = backends[0].health_checks();
    // A second and more of health check intervals (100 ms, fall 3) pass with lb out of descriptors.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(flood);
    wait_until("health checks succeed again", PATIENCE, async || {
        backends[0].health_checks() > checks
    })
    .await;
    // The flood's connections still queued in the kernel are accepted and closed one by one as descriptors free up:
    // wait until that churn is over (most of the 128 free again), or the next request may find none left to connect with.
    let fds = format!("/proc/{}/fd", lb.pid());
    wait_until("lb's descriptors are free again", PATIENCE, async || {
        std::fs::read_dir(&fds).is_ok_and(|entries| entries.count() < 100)
    })
    .await;
    // No backend was taken down, so the next client is served at once.
    assert_eq!(lb.get("/").await.0, 200);
    let logs = lb.logs();
    assert_eq!(lb.count_logs(" down"), 0, "{}", logs.join("\n"));
    let accept_lines = lb.count_logs("accept: too many open files");
    assert!(
        accept_lines <= 4,
        "{accept_lines} accept lines:\n{}",
        logs.join("\n")
    );
}
