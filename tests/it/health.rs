//! Health checks: a backend goes down after `fall` failed checks and gets no traffic, and comes back after `rise`
//! passed ones; each change is logged once with its reason; every backend is checked before the first request; with
//! no backend healthy, clients get 503.

use crate::harness::{assert_fair, TestBackend, TestLb, PATIENCE};

#[tokio::test]
async fn failing_checks_take_a_backend_out_and_passing_checks_bring_it_back() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    let lb = TestLb::builder().backends(&[&b1, &b2, &b3]).start().await;
    lb.wait_serving(&[1, 2, 3]).await;

    b2.set_healthy(false);
    let down = format!("backend 2 {} down: 3 checks failed, last: ", b2.addr());
    let line = lb.wait_log(&down, PATIENCE).await;
    assert!(
        line.contains("500"),
        "the reason should name the status: {line}"
    );

    let hits = b2.hits();
    assert_fair(&lb.spread(20).await, &[1, 3], 10);
    assert_eq!(b2.hits(), hits, "a backend marked down still got traffic");

    b2.set_healthy(true);
    lb.wait_log(
        &format!("backend 2 {} up: 2 checks passed", b2.addr()),
        PATIENCE,
    )
    .await;
    assert_fair(&lb.spread(30).await, &[1, 2, 3], 10);

    assert_eq!(
        lb.count_logs(&down),
        1,
        "the change should be logged once:\n{:#?}",
        lb.logs()
    );
    assert_eq!(
        lb.count_logs(" down: "),
        1,
        "only backend 2 went down:\n{:#?}",
        lb.logs()
    );
}

#[tokio::test]
async fn a_stopped_backend_goes_down_as_refused_and_comes_back_when_restarted() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder().backends(&[&b1, &b2]).start().await;
    lb.wait_serving(&[1, 2]).await;

    b2.stop().await;
    let down = format!(
        "backend 2 {} down: 3 checks failed, last: connection refused",
        b2.addr()
    );
    lb.wait_log(&down, PATIENCE).await;
    assert_fair(&lb.spread(10).await, &[1], 10);

    b2.restart().await;
    lb.wait_log(
        &format!("backend 2 {} up: 2 checks passed", b2.addr()),
        PATIENCE,
    )
    .await;
    assert_fair(&lb.spread(10).await, &[1, 2], 5);
}

#[tokio::test]
async fn a_backend_failing_at_startup_never_gets_a_request() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    b2.set_healthy(false);

    // Slow checks: only the one before serving can keep backend 2 out of the first requests.
    let lb = TestLb::builder()
        .backends(&[&b1, &b2, &b3])
        .health("interval", "1s")
        .health("timeout", "1s")
        .start()
        .await;
    let first_requests = lb.spread(20).await;

    assert_fair(&first_requests, &[1, 3], 10);
    assert_eq!(b2.hits(), 0);
    assert!(b2.health_checks() >= 1, "backend 2 was never checked");
}

#[tokio::test]
async fn no_healthy_backend_means_503_until_one_recovers() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    b1.set_healthy(false);
    b2.set_healthy(false);
    let lb = TestLb::builder().backends(&[&b1, &b2]).start().await;

    let (status, _) = lb.get("/").await;
    assert_eq!(status, 503);
    assert_eq!(b1.hits() + b2.hits(), 0);

    b1.set_healthy(true);
    lb.wait_log(
        &format!("backend 1 {} up: 2 checks passed", b1.addr()),
        PATIENCE,
    )
    .await;
    assert_fair(&lb.spread(4).await, &[1], 4);
}

#[tokio::test]
async fn statuses_decide_which_answers_pass() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    b1.set_healthy(false);
    b2.set_healthy(false);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .health("statuses", serde_json::json!(["200-299", 500]))
        .start()
        .await;

    // Both answer their checks with 500, which this config counts as a pass.
    assert_fair(&lb.spread(10).await, &[1, 2], 5);
}
