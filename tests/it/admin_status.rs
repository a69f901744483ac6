//! `GET /api/status` and `lb status` say which backends are up, since when, and why one is down; each health check
//! shows there (the last 10, newest first) and, with `--log-level debug`, in the log.

use serde_json::Value;

use crate::harness::{run_lb, wait_until, TestBackend, TestLb, PATIENCE};

/// `lb` in front of `backends`, with its admin plane on an ephemeral port.
async fn lb_with_admin(backends: &[&TestBackend]) -> TestLb {
    TestLb::builder().backends(backends).admin().start().await
}

fn is_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.ends_with('Z') && humantime::parse_rfc3339(s).is_ok())
}

/// The checks of a backend's status, after asserting they are at most 10, newest first.
fn checks(backend: &Value) -> Vec<Value> {
    let checks = backend["checks"].as_array().expect("checks").clone();
    assert!(checks.len() <= 10, "{backend}");
    let times: Vec<&str> = checks.iter().map(|c| c["at"].as_str().unwrap()).collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first, "newest first");
    checks
}

#[tokio::test]
async fn status_says_why_a_backend_is_down() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = lb_with_admin(&[&b1, &b2]).await;
    let admin = lb.admin().await;
    lb.wait_serving(&[1, 2]).await;
    lb.spread(10).await;

    let status = admin.status().await;
    assert_eq!(status["generation"], 1, "{status}");
    assert!(status["config"].as_str().unwrap().ends_with("lb.json"));
    assert!(is_timestamp(&status["loaded_at"]), "{status}");
    let one = admin.backend(1).await;
    assert_eq!(one["address"], format!("127.0.0.1:{}", b1.addr().port()));
    assert_eq!(
        (&one["state"], &one["health"]),
        (&"up".into(), &"up".into())
    );
    assert!(
        one["reason"].is_null() && is_timestamp(&one["since"]),
        "{one}"
    );
    assert_eq!(one["in_flight"], 0);
    let answered =
        one["requests"].as_u64().unwrap() + admin.backend(2).await["requests"].as_u64().unwrap();
    assert!(answered >= 12, "every answer counted: {status}");
    let first = &checks(&one)[0];
    assert_eq!(
        (&first["ok"], &first["status"]),
        (&true.into(), &200.into())
    );
    assert!(
        first["error"].is_null() && first["ms"].as_f64().is_some() && is_timestamp(&first["at"])
    );

    // Backend 2 dies: after `fall` (3) failed checks it is down, and says why.
    b2.stop().await;
    let mut down = Value::Null;
    wait_until("backend 2 is down in the status", PATIENCE, async || {
        down = admin.backend(2).await;
        down["state"] == "down"
    })
    .await;
    assert_eq!(down["health"], "down");
    let reason = down["reason"].as_str().expect("a reason");
    assert!(
        reason.ends_with("checks failed, last: connection refused"),
        "{reason}"
    );
    assert!(
        down["since"].as_str() > one["since"].as_str(),
        "since the flip: {down}"
    );
    let latest = &checks(&down)[0];
    assert_eq!(latest["ok"], false);
    assert!(latest["status"].is_null(), "{latest}");
    assert_eq!(latest["error"], "connection refused");
    // Checks every 100 ms: the list fills up to 10 and stays at 10.
    wait_until("10 checks kept", PATIENCE, async || {
        checks(&admin.backend(2).await).len() == 10
    })
    .await;
    assert!(down["checks_failed"].as_u64().unwrap() >= 3, "{down}");

    // A backend that answers its checks with a 500 says so.
    b1.set_healthy(false);
    wait_until("backend 1 is down in the status", PATIENCE, async || {
        admin.backend(1).await["state"] == "down"
    })
    .await;
    let one = admin.backend(1).await;
    let reason = one["reason"].as_str().unwrap();
    assert!(
        reason.ends_with("checks failed, last: status 500"),
        "{reason}"
    );
    assert_eq!(checks(&one)[0]["status"], 500);

    // It comes back: up, no reason.
    b1.set_healthy(true);
    wait_until("backend 1 is up again", PATIENCE, async || {
        let one = admin.backend(1).await;
        one["state"] == "up" && one["reason"].is_null()
    })
    .await;
}

#[tokio::test]
async fn lb_status_prints_the_table_with_a_down_backends_reason() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = lb_with_admin(&[&b1, &b2]).await;
    let admin = lb.admin().await;
    b2.stop().await;
    wait_until("backend 2 is down", PATIENCE, async || {
        admin.backend(2).await["state"] == "down"
    })
    .await;
    let admin = admin.addr.to_string();

    let run = run_lb(&["status", "--admin", &admin]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("lb at {admin}: generation 1, ")),
        "{}",
        run.stdout
    );
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[1]),
        ["ID", "ADDRESS", "STATE", "SINCE", "REQUESTS", "IN", "FLIGHT", "REASON"]
    );
    let row = |id: &str| {
        let found = lines[2..].iter().find(|l| l.starts_with(&format!("{id} ")));
        found
            .unwrap_or_else(|| panic!("no row for backend {id}:\n{}", run.stdout))
            .to_string()
    };
    let (one, two) = (row("1"), row("2"));
    assert_eq!(
        words(&one)[1..3],
        [format!("127.0.0.1:{}", b1.addr().port()), "up".into()]
    );
    assert!(one.trim_end().ends_with(" -"), "no reason while up: {one}");
    assert_eq!(words(&two)[2], "down");
    assert!(two.contains(" ago ") || two.contains(" just now "), "{two}");
    assert!(
        two.ends_with("checks failed, last: connection refused"),
        "{two}"
    );

    // Nobody there: one line, exit 1.
    drop(lb);
    let run = run_lb(&["status", "--admin", &admin]).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach lb's admin plane"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn debug_logs_each_health_check() {
    let b1 = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&b1)
        .arg("--log-level")
        .arg("debug")
        .start()
        .await;
    let passed = format!(
        "backend 1 127.0.0.1:{} health check passed",
        b1.addr().port()
    );
    wait_until("a few checks logged", PATIENCE, async || {
        lb.count_logs(&passed) >= 3
    })
    .await;
    let line = lb.wait_log(&passed, PATIENCE).await;
    assert!(
        line.contains("status=200") && line.contains("ms="),
        "{line}"
    );
    b1.set_healthy(false);
    let failed = lb.wait_log("health check failed", PATIENCE).await;
    assert!(
        failed.contains("status=500") && failed.contains("error=status 500"),
        "{failed}"
    );
    // One line per check (give or take the one being made while counting).
    let lines = lb.count_logs("health check");
    let checks = b1.health_checks();
    assert!(
        lines.abs_diff(checks) <= 2,
        "{lines} lines for {checks} checks"
    );
}
