//! Runtime control on the admin plane: `disable` and `enable` stop and resume a backend's traffic at once; `drain`
//! stops it at once and answers when the requests in flight on it are done (or at its timeout); the operator's
//! state survives a reload that keeps the backend; unknown ids are 404, wrong methods 405.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{wait_until, TestBackend, TestLb, HEALTH_PATH, PATIENCE};

async fn lb_with_admin(backends: &[&TestBackend]) -> TestLb {
    TestLb::builder().backends(backends).admin().start().await
}

fn ids(spread: &std::collections::BTreeMap<u64, usize>) -> Vec<u64> {
    spread.keys().copied().collect()
}

/// Starts `GET /slow?ms=…` requests until one is in flight on `target` (round robin: at most one per backend);
/// answers the tasks of all of them.
async fn slow_request_on(
    lb: &TestLb,
    backends: &[&TestBackend],
    target: &TestBackend,
    ms: u64,
) -> Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>> {
    let mut requests = Vec::new();
    for _ in 0..backends.len() {
        let seen: usize = backends.iter().map(|b| b.hits()).sum();
        let before = target.hits();
        let url = lb.url(&format!("/slow?ms={ms}"));
        requests.push(tokio::spawn(crate::harness::client().get(url).send()));
        wait_until("the slow request reached a backend", PATIENCE, async || {
            backends.iter().map(|b| b.hits()).sum::<usize>() > seen
        })
        .await;
        if target.hits() > before {
            return requests;
        }
    }
    panic!("no slow request reached backend {}", target.id);
}

#[tokio::test]
async fn disable_and_enable_stop_and_resume_a_backends_traffic() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = lb_with_admin(&[&b1, &b2]).await;
    let admin = lb.admin().await;
    lb.wait_serving(&[1, 2]).await;

    let (status, answer) = admin.call("POST", "/api/backends/2/disable").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["id"], &answer["state"]),
        (&2.into(), &"disabled".into()),
        "{answer}"
    );
    assert_eq!(answer["was"], "enabled");
    let line = format!(
        "admin: backend 2 127.0.0.1:{} disabled (was enabled)",
        b2.addr().port()
    );
    lb.wait_log(&line, PATIENCE).await;
    let before = b2.hits();
    assert_eq!(ids(&lb.spread(10).await), [1]);
    assert_eq!(b2.hits(), before, "no request reaches a disabled backend");
    let two = admin.backend(2).await;
    assert_eq!(
        (&two["state"], &two["health"], &two["admin"]),
        (&"disabled".into(), &"up".into(), &"disabled".into())
    );
    // Still health-checked while disabled.
    let checks = b2.health_checks();
    wait_until("backend 2 still checked", PATIENCE, async || {
        b2.health_checks() > checks + 2
    })
    .await;

    let (status, answer) = admin.call("POST", "/api/backends/2/enable").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["state"], &answer["was"]),
        (&"up".into(), &"disabled".into())
    );
    assert_eq!(
        lb.count_logs("admin: backend 2"),
        2,
        "one audit line per change"
    );
    assert_eq!(ids(&lb.spread(10).await), [1, 2]);
    assert_eq!(admin.backend(2).await["state"], "up");
}

#[tokio::test]
async fn drain_answers_when_the_last_request_in_flight_is_done() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = lb_with_admin(&[&b1, &b2]).await;
    let admin = lb.admin().await;
    lb.wait_serving(&[1, 2]).await;
    let slow_ms = 1500;
    let started = Instant::now();
    let slow = slow_request_on(&lb, &[&b1, &b2], &b2, slow_ms).await;

    let drain_url = admin.url("/api/backends/2/drain?timeout=20s");
    let drain = tokio::spawn(crate::harness::client().post(drain_url).send());
    wait_until("backend 2 is draining", PATIENCE, async || {
        admin.backend(2).await["state"] == "draining"
    })
    .await;
    // New requests avoid it at once, while the drain waits for the slow one.
    let before = b2.hits();
    assert_eq!(ids(&lb.spread(10).await), [1]);
    assert_eq!(b2.hits(), before);
    assert_eq!(admin.backend(2).await["in_flight"], 1);
    assert!(
        !drain.is_finished(),
        "the drain answered with a request in flight"
    );

    let answer = drain.await.unwrap().expect("the drain's answer");
    let answered_after = started.elapsed();
    assert_eq!(answer.status(), 200);
    let answer: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(answer["id"], 2);
    assert_eq!(
        (&answer["in_flight"], &answer["drained"]),
        (&0.into(), &true.into()),
        "{answer}"
    );
    assert!(
        answered_after >= Duration::from_millis(slow_ms),
        "answered after {answered_after:?}, before the slow request's {slow_ms} ms were over"
    );
    for request in slow {
        let response = request
            .await
            .unwrap()
            .expect("the slow request is answered");
        assert_eq!(response.status(), 200);
    }
    let line = lb.wait_log("admin: backend 2", PATIENCE).await;
    assert!(
        line.contains(" drained in ") && line.ends_with("(was enabled)"),
        "{line}"
    );

    // A drained backend stays out of the rotation until enabled.
    assert_eq!(admin.backend(2).await["state"], "draining");
    assert_eq!(ids(&lb.spread(6).await), [1]);
    let (status, _) = admin.call("POST", "/api/backends/2/enable").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&lb.spread(10).await), [1, 2]);
}

#[tokio::test]
async fn drain_answers_at_its_timeout_with_what_is_still_in_flight() {
    let b1 = TestBackend::start(1).await;
    let lb = lb_with_admin(&[&b1]).await;
    let admin = lb.admin().await;
    let slow = slow_request_on(&lb, &[&b1], &b1, 3000).await;

    let asked = Instant::now();
    let (status, answer) = admin
        .call("POST", "/api/backends/1/drain?timeout=300ms")
        .await;
    let waited = asked.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["in_flight"], &answer["drained"]),
        (&1.into(), &false.into()),
        "{answer}"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let line = lb.wait_log("admin: backend 1", PATIENCE).await;
    assert!(line.contains("1 in flight still after"), "{line}");
    // The request in flight is not cut.
    let response = slow
        .into_iter()
        .next()
        .unwrap()
        .await
        .unwrap()
        .expect("answered");
    assert_eq!(response.status(), 200);

    // An idle backend drains at once; a bad timeout is refused.
    let (status, answer) = admin.call("POST", "/api/backends/1/drain").await;
    assert_eq!(
        (status, &answer["drained"]),
        (200, &true.into()),
        "{answer}"
    );
    let (status, answer) = admin
        .call("POST", "/api/backends/1/drain?timeout=soon")
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("timeout: "),
        "{answer}"
    );
}

#[tokio::test]
async fn unknown_ids_are_404_and_wrong_methods_405() {
    let b1 = TestBackend::start(1).await;
    let lb = lb_with_admin(&[&b1]).await;
    let admin = lb.admin().await;
    for path in [
        "/api/backends/9/disable",
        "/api/backends/abc/drain",
        "/api/backends/-1/enable",
    ] {
        let (status, answer) = admin.call("POST", path).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("no backend with id"),
            "{answer}"
        );
    }
    for (method, path) in [
        ("GET", "/api/backends/1/disable"),
        ("PUT", "/api/backends/1/drain"),
        ("POST", "/api/status"),
    ] {
        let (status, answer) = admin.call(method, path).await;
        assert_eq!(status, 405, "{method} {path}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(admin.backend(1).await["state"], "up", "nothing changed");
}

#[tokio::test]
async fn the_operators_state_survives_a_reload_that_keeps_the_backend() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    let config = |backends: &[&TestBackend]| {
        let backends: Vec<Value> = backends
            .iter()
            .map(|b| json!({"id": b.id, "host": "127.0.0.1", "port": b.addr().port()}))
            .collect();
        json!({
            "backends": backends,
            "health_check": {"path": HEALTH_PATH, "interval": "100ms", "rise": 1, "fall": 1},
            "workers": 2,
            "admin": "127.0.0.1:0",
        })
        .to_string()
    };
    let lb = TestLb::from_file("lb.json", &config(&[&b1, &b2])).await;
    let admin = lb.admin().await;
    lb.wait_serving(&[1, 2]).await;
    let (status, _) = admin.call("POST", "/api/backends/2/disable").await;
    assert_eq!(status, 200);
    let before = admin.backend(2).await;

    lb.rewrite_config(&config(&[&b1, &b2, &b3]));
    lb.signal("HUP").await;
    wait_until("the reload is applied", PATIENCE, async || {
        admin.status().await["generation"] == 2
    })
    .await;
    let after = admin.backend(2).await;
    assert_eq!(after["state"], "disabled", "{after}");
    assert_eq!(
        after["since"], before["since"],
        "the same state, since the same time"
    );
    assert!(after["checks_passed"].as_u64() >= before["checks_passed"].as_u64());
    lb.wait_serving(&[1, 3]).await;
    assert_eq!(ids(&lb.spread(12).await), [1, 3]);
}
