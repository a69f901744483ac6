//! SIGHUP reloads the config file: a good one is applied without dropping anything (requests in flight finish,
//! kept backends keep their health, added ones are checked first), a bad one or one that changes the listener keeps
//! the running config; one log line says which, with the diff.

use serde_json::json;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    assert_fair, full_config, wait_until, ScriptedBackend, Step, TestBackend, TestLb, HEALTH_PATH,
    PATIENCE,
};

#[tokio::test]
async fn sighup_adds_and_removes_backends_and_a_request_in_flight_finishes() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    let mut lb = TestLb::from_file("lb.json", &full_config(&[(1, &b1), (2, &b2)], json!({}))).await;
    assert_fair(&lb.spread(20).await, &[1, 2], 10);

    let client = crate::harness::client();
    let slow = tokio::spawn(client.get(lb.url("/slow?ms=700")).send());
    wait_until("the slow request reached a backend", PATIENCE, async || {
        b1.hits() + b2.hits() > 20
    })
    .await;
    lb.rewrite_config(&full_config(&[(1, &b1), (3, &b3)], json!({})));
    lb.signal("HUP").await;
    let line = lb.wait_log("config reloaded", PATIENCE).await;
    assert!(
        line.contains("generation 2: added [3], removed [2], changed []"),
        "{line}"
    );
    assert_eq!(
        lb.spread(20).await.keys().copied().collect::<Vec<_>>(),
        [1, 3]
    );
    let answer = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status(), 200);

    lb.signal("TERM").await;
    assert!(lb.wait_exit(PATIENCE).await.success());
}

#[tokio::test]
async fn a_bad_file_or_a_new_listener_keeps_the_running_config() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::from_file("lb.json", &full_config(&[(1, &b1)], json!({}))).await;

    lb.rewrite_config(r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 70000}]}"#);
    lb.signal("HUP").await;
    let line = lb.wait_log("reload failed", PATIENCE).await;
    assert!(line.contains("port must be between 1 and 65535"), "{line}");
    assert_eq!(lb.spread(4).await.keys().copied().collect::<Vec<_>>(), [1]);

    lb.rewrite_config(&full_config(&[(1, &b1), (2, &b2)], json!({"workers": 3})));
    lb.signal("HUP").await;
    let line = lb.wait_log("reload refused", PATIENCE).await;
    assert!(line.contains("workers 2 → 3"), "{line}");
    assert_eq!(lb.spread(4).await.keys().copied().collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn a_kept_backend_keeps_its_health_and_an_added_one_is_checked_before_traffic() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    let lb = TestLb::from_file("lb.json", &full_config(&[(1, &b1), (2, &b2)], json!({}))).await;
    b2.set_healthy(false);
    let down = format!("backend 2 127.0.0.1:{} down", b2.addr().port());
    lb.wait_log(&down, PATIENCE).await;
    b3.set_healthy(false);

    lb.rewrite_config(&full_config(&[(1, &b1), (2, &b2), (3, &b3)], json!({})));
    lb.signal("HUP").await;
    lb.wait_log("config reloaded", PATIENCE).await;
    // Backend 2 is still down (its state was kept, not reset to up), and backend 3 was checked before it got
    // traffic: every request goes to backend 1.
    assert_eq!(lb.spread(12).await.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(b2.hits() + b3.hits(), 0);
}

#[tokio::test]
async fn a_removed_backends_pooled_connections_close_at_once() {
    let b1 = TestBackend::start(1).await;
    let b2 = ScriptedBackend::start(|_| {
        vec![Step::write(
            "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nhello from backend 2",
        )]
    })
    .await;
    let backends = |with_two: bool| {
        let mut list = vec![json!({"id": 1, "host": "127.0.0.1", "port": b1.addr().port()})];
        if with_two {
            list.push(json!({"id": 2, "host": "127.0.0.1", "port": b2.addr().port()}));
        }
        json!({
            "backends": list,
            "health_check": {"path": HEALTH_PATH, "interval": "10s"},
            "pool": {"idle_timeout": "60s"},
            "workers": 2,
        })
        .to_string()
    };
    let lb = TestLb::from_file("lb.json", &backends(true)).await;
    // Concurrent requests, so that connections to backend 2 are pooled (kept for 60 s).
    let spread = futures_util::future::join_all((0..16).map(|_| lb.get("/"))).await;
    assert!(spread.iter().all(|(status, _)| *status == 200));
    assert!(
        b2.hits() > 0 && b2.open() > 0,
        "lb keeps connections to backend 2"
    );

    lb.rewrite_config(&backends(false));
    lb.signal("HUP").await;
    lb.wait_log("config reloaded", PATIENCE).await;
    // Closed by the workers' sweepers within a tick, not after the pool's 60 s.
    wait_until(
        "backend 2's pooled connections closed",
        Duration::from_secs(5),
        async || b2.open() == 0,
    )
    .await;
    assert_eq!(lb.spread(6).await.keys().copied().collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn ctrl_c_during_a_reload_that_waits_for_a_new_backends_check_stops_lb_at_once() {
    let b1 = TestBackend::start(1).await;
    // A backend that accepts and never answers: a reload that adds it waits for its first check, up to 30 s.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let file = |with_silent: bool| {
        let mut backends = vec![json!({"id": 1, "host": "127.0.0.1", "port": b1.addr().port()})];
        if with_silent {
            backends.push(json!({"id": 2, "host": "127.0.0.1", "port": silent_port}));
        }
        let health = json!({"path": HEALTH_PATH, "interval": "60s", "timeout": "30s"});
        json!({"backends": backends, "health_check": health, "workers": 1}).to_string()
    };
    let mut lb = TestLb::from_file("lb.json", &file(false)).await;

    lb.rewrite_config(&file(true));
    lb.signal("HUP").await;
    wait_until("the reload checks the new backend", PATIENCE, async || {
        accepted.load(Ordering::Relaxed) > 0
    })
    .await;
    let asked = Instant::now();
    lb.signal("INT").await;
    let status = lb.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "stopped {:?} after Ctrl+C: the reload's check held it up",
        asked.elapsed()
    );
    let line = lb.wait_log("SIGHUP received:", PATIENCE).await;
    assert!(line.contains("not applied: lb is stopping"), "{line}");
}
