//! Limits per backend and per request (issue 11): `max_connections` on a backend caps the requests it has in flight
//! (a full backend is skipped like an unhealthy one, and when every backend is full the answer is 503 with a log
//! line), and `[retries] max_attempts` caps the backends one request tries.

use std::time::Duration;

use crate::harness::gauged::{wait_in_flight, BalancingConfig, GaugedBackend};
use crate::harness::{client, wait_until, RawBackend, TestBackend, TestLb, PATIENCE};

/// Sends `count` GETs of `/` at once; answers their tasks (each gives the status).
fn send_at_once(lb: &TestLb, count: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..count)
        .map(|_| {
            let url = lb.url("/");
            tokio::spawn(async move {
                let response = client().get(url).send().await.expect("a response");
                response.status().as_u16()
            })
        })
        .collect()
}

async fn statuses(requests: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("a request task"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_is_skipped() {
    let limited = GaugedBackend::start(1).await;
    let open = GaugedBackend::start(2).await;
    let lb = BalancingConfig::new()
        .backend(1, limited.addr(), "max_connections = 2")
        .backend(2, open.addr(), "")
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;
    limited.hold();
    open.hold();

    let requests = send_at_once(&lb, 6);
    wait_in_flight(&[&limited, &open], 6).await;

    assert!(
        limited.in_flight() <= 2,
        "{} in flight",
        limited.in_flight()
    );
    assert_eq!(open.in_flight(), 6 - limited.in_flight());
    limited.release();
    open.release();
    assert_eq!(statuses(requests).await, [200; 6]);
    assert!(limited.peak() <= 2, "peak {}", limited.peak());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_under_concurrent_load() {
    let limited = GaugedBackend::slow(1, Duration::from_millis(20)).await;
    let open = GaugedBackend::slow(2, Duration::from_millis(20)).await;
    let lb = BalancingConfig::new()
        .backend(1, limited.addr(), "max_connections = 2")
        .backend(2, open.addr(), "")
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;

    // 8 clients of 15 requests each, on both of lb's workers: the limit is one count, not one per worker.
    let clients = (0..8).map(|_| {
        let url = lb.url("/");
        tokio::spawn(async move {
            let client = client();
            for _ in 0..15 {
                let response = client.get(&url).send().await.expect("a response");
                assert_eq!(response.status(), 200);
            }
        })
    });
    for done in futures_util::future::join_all(clients).await {
        done.expect("a client task");
    }

    assert!(limited.peak() <= 2, "peak {} in flight", limited.peak());
    assert!(limited.hits() > 0 && open.hits() > limited.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_full_gives_503_and_a_log_line() {
    let one = GaugedBackend::start(1).await;
    let two = GaugedBackend::start(2).await;
    let lb = BalancingConfig::new()
        .backend(1, one.addr(), "max_connections = 1")
        .backend(2, two.addr(), "max_connections = 1")
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;
    one.hold();
    two.hold();
    let requests = send_at_once(&lb, 2);
    wait_in_flight(&[&one, &two], 2).await;

    let (status, _) = lb.get("/").await;

    assert_eq!(status, 503);
    lb.wait_log("max_connections", PATIENCE).await;
    one.release();
    two.release();
    assert_eq!(statuses(requests).await, [200, 200]);
    assert_eq!((one.peak(), two.peak()), (1, 1));
}

/// The `attempts` of every access log line from index `from` of the logs on.
fn attempts_since(lb: &TestLb, from: usize) -> Vec<(String, u32)> {
    lb.logs()[from..]
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find(" attempts=")? + " attempts=".len()..];
            let attempts = rest.split_whitespace().next()?.parse().ok()?;
            Some((line.clone(), attempts))
        })
        .collect()
}

#[tokio::test]
async fn max_attempts_caps_the_backends_a_request_tries() {
    let backends = [
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
        TestBackend::start(4).await,
    ];
    // Checked once at the start, then not for a minute: backends 1 to 3 stop listening but stay in the rotation,
    // so each request meets refused connections and moves on, as far as max_attempts lets it. No idle connections
    // are kept, so every attempt is a new connection to a new backend (a kept one to a stopped backend would be
    // resent on a new connection to the same backend, an attempt more).
    let mut config = BalancingConfig::new()
        .key("access_log = true")
        .health("interval", "\"60s\"")
        .table("[pool]\nmax_idle_per_backend = 0\n")
        .table("[retries]\nmax_attempts = 2\nbudget_percent = 100\n");
    for backend in &backends {
        config = config.backend(backend.id, backend.addr(), "");
    }
    let lb = config.start().await;
    lb.wait_serving(&[1, 2, 3, 4]).await;
    for backend in &backends[..3] {
        backend.stop().await;
    }
    let from = lb.logs().len();

    let mut failed = 0;
    for _ in 0..8 {
        let (status, _) = lb.get("/").await;
        if status != 200 {
            failed += 1;
        }
    }

    let mut lines = Vec::new();
    wait_until("an access log line per request", PATIENCE, async || {
        lines = attempts_since(&lb, from);
        lines.len() >= 8
    })
    .await;
    for (line, attempts) in &lines {
        assert!(*attempts <= 2, "more than 2 attempts: {line}");
    }
    // Backend 4 was there for every request: only the cap stopped some from reaching it.
    assert!(
        failed > 0,
        "no request was stopped by max_attempts: {lines:?}"
    );
    assert!(
        lines.iter().any(|(_, attempts)| *attempts == 2),
        "{lines:?}"
    );
}

/// Sends `count` GETs to two backends that accept each request and close without answering; answers the requests
/// they received.
async fn requests_reaching_closers(max_attempts: Option<u32>, count: usize) -> usize {
    let closers = [RawBackend::start(b"").await, RawBackend::start(b"").await];
    let mut config = BalancingConfig::new();
    if let Some(max) = max_attempts {
        config = config.table(&format!(
            "[retries]\nmax_attempts = {max}\nbudget_percent = 100\n"
        ));
    } else {
        config = config.table("[retries]\nbudget_percent = 100\n");
    }
    for (id, closer) in (1..).zip(&closers) {
        config = config.backend(id, closer.addr(), "");
    }
    let lb = config.start().await;
    wait_until("a backend is asked", PATIENCE, async || {
        lb.get("/").await;
        closers.iter().map(RawBackend::hits).sum::<usize>() > 0
    })
    .await;
    // Whatever the warm-up did, from here on count afresh.
    let before: usize = closers.iter().map(RawBackend::hits).sum();
    for _ in 0..count {
        let (status, _) = lb.get("/").await;
        assert_eq!(status, 502);
    }
    closers.iter().map(RawBackend::hits).sum::<usize>() - before
}

#[tokio::test]
async fn a_request_that_reached_a_backend_is_resent_once_unless_max_attempts_is_1() {
    // A GET that a backend dropped without an answer is resent once, to the other backend...
    assert_eq!(requests_reaching_closers(None, 3).await, 6);
    // ...but not when a request may make only one attempt.
    assert_eq!(requests_reaching_closers(Some(1), 3).await, 3);
}
