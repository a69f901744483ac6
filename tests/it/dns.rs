//! Names that move: backends given by host name are resolved by `lb` at start and again every `resolve_interval`
//! (or the answer's shorter TTL), against the test's own DNS server (`resolver`): a name that does not resolve yet
//! starts down and serves once it does, a moved name moves the traffic, `resolve = "all"` makes every address a
//! member, and a resolver that stops answering leaves the backends where they were.
//!
//! Names resolve to loopback addresses other than 127.0.0.1 (127.0.0.2, .3, .4), each with a backend on the same
//! port, as the pods of one service would be.

use std::net::{IpAddr, SocketAddr};

use serde_json::json;

use crate::harness::{backend_of, wait_until, TestBackend, TestDns, TestLb, PATIENCE};

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Backends with ids `lasts` on 127.0.0.`last`, all on one port (the port a name's backends share); the port.
async fn pods(lasts: &[u8]) -> (u16, Vec<TestBackend>) {
    for _ in 0..20 {
        let first = TestBackend::start_at(lasts[0].into(), SocketAddr::new(loopback(lasts[0]), 0))
            .await
            .expect("bind a backend on 127.0.0.x");
        let port = first.addr().port();
        let mut pods = vec![first];
        for &last in &lasts[1..] {
            match TestBackend::start_at(last.into(), SocketAddr::new(loopback(last), port)).await {
                Some(pod) => pods.push(pod),
                None => break,
            }
        }
        if pods.len() == lasts.len() {
            return (port, pods);
        }
    }
    panic!("no port free on every one of 127.0.0.{lasts:?}");
}

/// `lb` with the default pool's backends `backends` (JSON), asking `dns` every 200 ms.
async fn lb_with(dns: &TestDns, backends: serde_json::Value) -> TestLb {
    TestLb::builder()
        .set("backends", backends)
        .set("resolver", dns.addr().to_string())
        .set("resolve_interval", "200ms")
        .start()
        .await
}

/// The backend ids of `count` answers (a 503 counts as 0).
async fn served_by(lb: &TestLb, count: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let (status, body) = lb.get("/").await;
        ids.push(match status {
            200 => backend_of(&body).expect("a backend's answer"),
            _ => 0,
        });
    }
    ids
}

#[tokio::test]
async fn a_name_that_does_not_resolve_starts_down_then_serves_once_it_resolves() {
    let dns = TestDns::start().await;
    let (port, pods) = pods(&[2]).await;
    let lb = lb_with(&dns, json!([{"id": 1, "host": "late.test", "port": port}])).await;

    lb.wait_log("cannot resolve late.test", PATIENCE).await;
    let line = lb.wait_log("down at its first check", PATIENCE).await;
    assert!(line.contains("name does not resolve"), "{line}");
    let (status, _) = lb.get("/").await;
    assert_eq!(status, 503, "no backend has an address yet");
    assert_eq!(pods[0].hits() + pods[0].health_checks(), 0);

    dns.set("late.test", &[loopback(2)]);
    let line = lb.wait_log("now resolves to", PATIENCE).await;
    assert!(
        line.contains(&format!(
            "backend 1 late.test:{port} now resolves to 127.0.0.2:{port} (was unresolved)"
        )),
        "{line}"
    );
    lb.wait_serving(&[2]).await;
    assert_eq!(lb.answers(10).await, [2; 10]);
}

#[tokio::test]
async fn re_resolution_moves_traffic_from_the_old_address_to_the_new_one() {
    let dns = TestDns::start().await;
    let (port, pods) = pods(&[2, 3]).await;
    dns.set("api.test", &[loopback(2)]);
    let lb = lb_with(
        &dns,
        json!([{"id": 1, "host": "api.test", "port": port}, {"id": 9, "host": "127.0.0.1", "port": 1}]),
    )
    .await;
    lb.wait_serving(&[2]).await;

    dns.set("api.test", &[loopback(3)]);
    let line = lb.wait_log("now resolves to", PATIENCE).await;
    assert!(
        line.contains(&format!(
            "backend 1 api.test:{port} now resolves to 127.0.0.3:{port} (was 127.0.0.2:{port})"
        )),
        "{line}"
    );
    wait_until(
        "every answer comes from the new address",
        PATIENCE,
        async || served_by(&lb, 5).await == [3; 5],
    )
    .await;
    let old = pods[0].hits();
    assert_eq!(served_by(&lb, 20).await, [3; 20]);
    assert_eq!(pods[0].hits(), old, "nothing more went to the old address");
}

#[tokio::test]
async fn resolve_all_spreads_over_every_address_and_follows_changes() {
    let dns = TestDns::start().await;
    let (port, _pods) = pods(&[2, 3, 4]).await;
    dns.set("pods.test", &[loopback(3), loopback(2)]);
    let lb = lb_with(
        &dns,
        json!([{"id": 1, "host": "pods.test", "port": port, "resolve": "all"}]),
    )
    .await;
    lb.wait_serving(&[2, 3]).await;
    let spread = lb.spread(20).await;
    assert_eq!(
        spread.keys().copied().collect::<Vec<_>>(),
        [2, 3],
        "{spread:?}"
    );
    assert_eq!(
        spread[&2], 10,
        "round robin over the two members: {spread:?}"
    );

    dns.set("pods.test", &[loopback(4), loopback(3)]);
    lb.wait_log("now resolves to", PATIENCE).await;
    wait_until("the members are .3 and .4", PATIENCE, async || {
        let mut ids = served_by(&lb, 6).await;
        ids.sort();
        ids.dedup();
        ids == [3, 4]
    })
    .await;
    let spread = lb.spread(20).await;
    assert_eq!(
        spread.keys().copied().collect::<Vec<_>>(),
        [3, 4],
        "{spread:?}"
    );
}

#[tokio::test]
async fn a_resolver_that_stops_answering_keeps_the_last_addresses() {
    let dns = TestDns::start().await;
    let (port, _pods) = pods(&[2]).await;
    dns.set("api.test", &[loopback(2)]);
    let lb = lb_with(&dns, json!([{"id": 1, "host": "api.test", "port": port}])).await;
    lb.wait_serving(&[2]).await;

    dns.silence(true);
    let asked = dns.questions();
    // A silent server is noticed when a lookup times out (up to 5 s, after the last answer's TTL).
    lb.wait_log("cannot resolve api.test", 2 * PATIENCE).await;
    wait_until(
        "lb asked again while the resolver was silent",
        PATIENCE,
        async || dns.questions() > asked + 2,
    )
    .await;
    assert_eq!(lb.answers(10).await, [2; 10]);
    assert_eq!(lb.count_logs("now resolves to"), 0);
}

/// Each name is looked up on its own: while the server leaves one name's questions unanswered (each lookup waits
/// out its 5 s timeout), another name's move is applied as soon as its answer comes, before the hanging lookup
/// even gives up (found by the review: every name waited for the slowest one).
#[tokio::test]
async fn a_name_that_hangs_delays_no_other_name() {
    let dns = TestDns::start().await;
    let (port, _pods) = pods(&[2, 3, 4]).await;
    dns.set("slow.test", &[loopback(2)]);
    dns.set("fast.test", &[loopback(3)]);
    let lb = lb_with(
        &dns,
        json!([{"id": 1, "host": "slow.test", "port": port}, {"id": 2, "host": "fast.test", "port": port}]),
    )
    .await;
    lb.wait_serving(&[2, 3]).await;

    dns.silence_name("slow.test", true);
    let asked = dns.questions();
    wait_until("slow.test asked while silent", PATIENCE, async || {
        dns.questions() > asked + 1
    })
    .await;
    dns.set("fast.test", &[loopback(4)]);
    let line = lb.wait_log("now resolves to", 2 * PATIENCE).await;
    assert!(line.contains("fast.test"), "{line}");
    assert_eq!(
        lb.count_logs("cannot resolve slow.test"),
        0,
        "fast.test's move came only after slow.test's lookup timed out"
    );
    wait_until(
        "answers from fast.test's new address",
        PATIENCE,
        async || served_by(&lb, 6).await.contains(&4),
    )
    .await;
}
