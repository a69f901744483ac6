//! Passive health through the real binary: what real traffic says takes a backend out before its health checks
//! would. A backend answering 500 to everything is ejected (`[passive_health]`) and comes back when the ejection
//! ends; `max_ejected_percent` spares the last ones; connect failures take a backend out by default until its next
//! passed check (refused, and timed out: the requests after them no longer pay the connect timeout); the retry
//! budget holds a retry storm when every backend fails; slow start ramps a backend that came back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{backend_of, tally, wait_until, RawBackend, TestBackend, TestLb, PATIENCE};

/// Answers every request but the health checks with a 500.
const FIVE_HUNDRED: &[u8] =
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops";

/// GETs `/` `count` times, one after the other; answers the statuses and who answered (`None`: not a backend's
/// greeting, such as the 500s).
async fn statuses(lb: &TestLb, count: usize) -> Vec<(u16, Option<u64>)> {
    let mut seen = Vec::with_capacity(count);
    for _ in 0..count {
        let (status, body) = lb.get("/").await;
        seen.push((status, backend_of(&body)));
    }
    seen
}

fn fives(seen: &[(u16, Option<u64>)]) -> usize {
    seen.iter().filter(|(status, _)| *status == 500).count()
}

#[tokio::test]
async fn a_backend_answering_500_is_ejected_after_five_and_comes_back() {
    let (one, two) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let bad = RawBackend::start(FIVE_HUNDRED).await;
    let lb = TestLb::builder()
        .backends(&[&one, &two])
        .backend_at(3, bad.addr())
        .set(
            "passive_health",
            json!({"consecutive_failures": 5, "base_ejection": "2s", "max_ejected_percent": 50}),
        )
        .admin()
        .start()
        .await;
    let admin = lb.admin().await;

    // Every third request is backend 3's until five 500s in a row eject it.
    let ejected = format!("backend 3 {} ejected for 2s: 5 consecutive 5xx", bad.addr());
    let mut seen = Vec::new();
    wait_until("backend 3 is ejected", PATIENCE, async || {
        seen.extend(statuses(&lb, 1).await);
        lb.count_logs(&ejected) == 1
    })
    .await;
    assert_eq!(fives(&seen), 5, "{seen:?}");
    assert_eq!(bad.hits(), 5);

    // Its clients see no more 500s from it while the ejection lasts; a passed health check does not end it.
    let after = statuses(&lb, 30).await;
    assert_eq!(fives(&after), 0, "{after:?}");
    assert_eq!(bad.hits(), 5);
    let status = admin.backend(3).await;
    assert_eq!(status["ejected"], true, "{status}");
    assert_eq!(status["ejections"], 1, "{status}");
    assert_eq!(status["state"], "ejected", "{status}");
    assert_eq!(status["health"], "up", "healthy, though ejected: {status}");
    let (_, metrics) = admin.get("/metrics").await;
    assert!(
        metrics.contains("lb_backend_ejections_total{backend=\"3\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lb_backend_ejected{backend=\"3\"} 1"),
        "{metrics}"
    );

    // Two seconds later it is back (and fails again: ejected for twice as long, as it did not live the first down).
    let back = format!("backend 3 {} back after ejection", bad.addr());
    wait_until("backend 3 is back", PATIENCE, async || {
        statuses(&lb, 1).await;
        lb.count_logs(&back) == 1
    })
    .await;
    let again = format!("backend 3 {} ejected for 4s: 5 consecutive 5xx", bad.addr());
    wait_until("backend 3 is ejected again", PATIENCE, async || {
        statuses(&lb, 1).await;
        lb.count_logs(&again) == 1
    })
    .await;
    assert_eq!(bad.hits(), 10);
    assert_eq!(admin.backend(3).await["ejections"], 2);
}

#[tokio::test]
async fn max_ejected_percent_spares_the_last_ones() {
    let bad = [
        RawBackend::start(FIVE_HUNDRED).await,
        RawBackend::start(FIVE_HUNDRED).await,
        RawBackend::start(FIVE_HUNDRED).await,
        RawBackend::start(FIVE_HUNDRED).await,
    ];
    let mut builder = TestLb::builder();
    for (id, backend) in (1..).zip(&bad) {
        builder = builder.backend_at(id, backend.addr());
    }
    let lb = builder
        .set(
            "passive_health",
            json!({"consecutive_failures": 3, "base_ejection": "60s", "max_ejected_percent": 50}),
        )
        .admin()
        .start()
        .await;
    let admin = lb.admin().await;

    wait_until("a backend is spared", PATIENCE, async || {
        statuses(&lb, 1).await;
        lb.count_logs(
            "of the 4 backends of its pool are ejected already (max_ejected_percent = 50)",
        ) > 0
    })
    .await;
    // Two of four ejected (50%), never a third; the other two still answer (their 500s are all there is).
    let seen = statuses(&lb, 40).await;
    assert_eq!(fives(&seen), 40);
    assert_eq!(lb.count_logs("ejected for 1m: 3 consecutive 5xx"), 2);
    let status = admin.status().await;
    let ejected: Vec<bool> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ejected"].as_bool().unwrap())
        .collect();
    assert_eq!(ejected.iter().filter(|e| **e).count(), 2, "{status}");
}

#[tokio::test]
async fn refused_connects_take_a_backend_out_until_its_next_passed_check() {
    let (one, two) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&one, &two])
        // Checks too far apart to notice a backend gone within the test: requests must.
        .health("interval", "1s")
        .admin()
        .start()
        .await;
    let admin = lb.admin().await;
    lb.wait_serving(&[1, 2]).await;

    two.stop().await;
    let taken_out = format!(
        "backend 2 {} taken out until its next passed health check: 3 consecutive connect failures",
        two.addr()
    );
    // Each refused connect is retried on backend 1, so clients see only 200s.
    // Well before the checks would notice (3 failed checks, a second apart).
    wait_until(
        "backend 2 is taken out",
        Duration::from_secs(2),
        async || {
            assert_eq!(lb.answers(1).await, [1]);
            lb.count_logs(&taken_out) == 1
        },
    )
    .await;
    let failures = admin.backend(2).await["connect_failures"].as_u64().unwrap();
    assert_eq!(failures, 3);
    assert_eq!(lb.answers(20).await, [1; 20]);
    let status = admin.backend(2).await;
    assert_eq!(status["connect_failures"], 3, "no more tries: {status}");
    assert_eq!(status["state"], "down", "{status}");
    assert_eq!(
        status["reason"], "taken out: 3 consecutive connect failures",
        "{status}"
    );

    // Listening again: its next passed check brings it back.
    two.restart().await;
    lb.wait_serving(&[1, 2]).await;
}

/// A listener that accepts nothing, with room for one connection in its queue: once that is taken, connects to it
/// time out (the kernel drops their SYNs).
fn black_hole() -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}

#[tokio::test]
async fn connects_that_time_out_stop_costing_requests_after_three() {
    let one = TestBackend::start(1).await;
    let (_hole, hole) = black_hole();
    let lb = TestLb::builder()
        .backend(&one)
        .backend_at(2, hole)
        // A TCP check passes on the first connect (which fills the queue); the next would come too late to matter.
        .health("type", "tcp")
        .health("interval", "30s")
        .timeout("connect", "300ms")
        .start()
        .await;

    let taken_out = format!(
        "backend 2 {hole} taken out until its next passed health check: 3 consecutive connect failures"
    );
    let started = Instant::now();
    wait_until("backend 2 is taken out", PATIENCE, async || {
        assert_eq!(lb.answers(1).await, [1]);
        lb.count_logs(&taken_out) == 1
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "three connects timed out"
    );
    // The requests after it do not wait for a connect that will not come.
    let started = Instant::now();
    assert_eq!(lb.answers(20).await, [1; 20]);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?} for 20 requests",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    // Four backends that close every connection without an answer: each request would be sent twice.
    let silent = [
        RawBackend::start(b"").await,
        RawBackend::start(b"").await,
        RawBackend::start(b"").await,
        RawBackend::start(b"").await,
    ];
    let mut builder = TestLb::builder();
    for (id, backend) in (1..).zip(&silent) {
        builder = builder.backend_at(id, backend.addr());
    }
    let lb = builder.start().await;

    let requests = 300;
    let started = Instant::now();
    let seen = statuses(&lb, requests).await;
    let windows = started.elapsed().as_secs() as usize / 10 + 1;
    assert!(seen.iter().all(|(status, _)| *status == 502), "{seen:?}");
    let hits: usize = silent.iter().map(|b| b.hits()).sum();
    let retries = hits - requests;
    // 20% of the requests, and the floor of 3 a second: 30 for each 10 s window the storm lasted.
    let allowed = requests / 5 + 30 * windows;
    assert!(retries > 0, "some retries are made");
    assert!(retries <= allowed, "{retries} retries, at most {allowed}");
    lb.wait_log("retry budget spent (20% of recent requests)", PATIENCE)
        .await;
}

/// Needs the weighted balancers (a balancer that honours `effective_weight`).
#[tokio::test]
async fn slow_start_ramps_a_backend_that_came_back() {
    let (one, two) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let started = Instant::now();
    let lb = TestLb::builder()
        .backends(&[&one, &two])
        .set("slow_start", json!({"window": "3s"}))
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;
    // Every backend is new at the start and ramps with the others: wait until that is over.
    while started.elapsed() < Duration::from_millis(3200) {
        lb.answers(1).await;
    }

    two.set_healthy(false);
    lb.wait_log(&format!("backend 2 {} down", two.addr()), PATIENCE)
        .await;
    two.set_healthy(true);
    lb.wait_log(&format!("backend 2 {} up", two.addr()), PATIENCE)
        .await;
    let up = Instant::now();

    // The first part of the window (at most 10% → 40% of its weight), then past it.
    let mut early = Vec::new();
    while up.elapsed() < Duration::from_millis(900) {
        early.extend(lb.answers(1).await);
    }
    while up.elapsed() < Duration::from_millis(3200) {
        lb.answers(1).await;
    }
    let late = lb.answers(200).await;
    let share = |ids: &[u64]| {
        tally(ids.iter().copied()).get(&2).copied().unwrap_or(0) as f64 / ids.len() as f64
    };
    let (early, late) = (share(&early), share(&late));
    assert!(
        early < 0.3,
        "backend 2 got {early:.2} of the requests at first"
    );
    assert!(late > 0.4, "backend 2 got {late:.2} of the requests later");
}
