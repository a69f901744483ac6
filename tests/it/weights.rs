//! Weights through the real binary (issue 11): `weight = 3` on one of three backends gives it 60% of the requests
//! under round robin, in nginx's smooth order (never a long run of the heavy one); `weight = 0` takes no traffic but
//! is still checked; weighted `random` and `least_request` follow the weights too, within a looser tolerance.

use std::collections::BTreeMap;

use crate::harness::gauged::BalancingConfig;
use crate::harness::{tally, wait_until, TestBackend, TestLb, PATIENCE};

/// `lb` over three backends, the first of weight 3, balanced by `balance`.
async fn three_one_one(balance: &str, backends: &[TestBackend; 3]) -> TestLb {
    BalancingConfig::new()
        .key(&format!("balance = {balance:?}"))
        .backend(1, backends[0].addr(), "weight = 3")
        .backend(2, backends[1].addr(), "")
        .backend(3, backends[2].addr(), "weight = 1")
        .start()
        .await
}

async fn three_backends() -> [TestBackend; 3] {
    [
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    ]
}

/// Asserts that each backend's share of `tally` is its expected count, give or take `slack`.
fn assert_shares(tally: &BTreeMap<u64, usize>, expected: &[(u64, usize)], slack: usize) {
    for (id, want) in expected {
        let got = tally.get(id).copied().unwrap_or(0);
        assert!(
            got.abs_diff(*want) <= slack,
            "backend {id} got {got}, not {want} ± {slack}: {tally:?}"
        );
    }
}

/// The longest run of consecutive answers from `id` in `order`.
fn longest_run(order: &[u64], id: u64) -> usize {
    let (mut longest, mut run) = (0, 0);
    for &answered in order {
        run = if answered == id { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

#[tokio::test]
async fn weights_3_1_1_give_60_20_20_in_a_smooth_order() {
    let backends = three_backends().await;
    let lb = three_one_one("round_robin", &backends).await;
    lb.wait_serving(&[1, 2, 3]).await;

    let order = lb.answers(1000).await;

    assert_shares(&tally(order.clone()), &[(1, 600), (2, 200), (3, 200)], 30);
    // Smooth weighted round robin interleaves: 1 2 1 3 1 | 1 2 1 3 1 ... never three of backend 1 in a row, never
    // two of a light one.
    assert!(longest_run(&order, 1) <= 2, "not smooth: {order:?}");
    assert_eq!(longest_run(&order, 2), 1, "not smooth: {order:?}");
    assert_eq!(longest_run(&order, 3), 1, "not smooth: {order:?}");
}

#[tokio::test]
async fn a_backend_of_weight_0_gets_no_traffic_but_is_still_checked() {
    let one = TestBackend::start(1).await;
    let zero = TestBackend::start(2).await;
    let lb = BalancingConfig::new()
        .backend(1, one.addr(), "weight = 1")
        .backend(2, zero.addr(), "weight = 0")
        .start()
        .await;
    lb.wait_serving(&[1]).await;

    let tally = lb.spread(100).await;

    assert_eq!(tally.get(&1), Some(&100), "{tally:?}");
    assert_eq!(zero.hits(), 0, "the backend of weight 0 got requests");
    let checked = zero.health_checks();
    wait_until(
        "the backend of weight 0 is still health checked",
        PATIENCE,
        async || zero.health_checks() >= checked + 3,
    )
    .await;
    assert_eq!(zero.hits(), 0);
}

#[tokio::test]
async fn weighted_random_follows_the_weights() {
    let backends = three_backends().await;
    let lb = three_one_one("random", &backends).await;
    lb.wait_serving(&[1, 2, 3]).await;

    let tally = lb.spread(2000).await;

    // Binomial spread over 2,000: about 22 requests for backend 1 (p = 0.6); 120 is more than five of those.
    assert_shares(&tally, &[(1, 1200), (2, 400), (3, 400)], 120);
}

#[tokio::test]
async fn weighted_least_request_follows_the_weights() {
    let backends = three_backends().await;
    let lb = three_one_one("least_request", &backends).await;
    lb.wait_serving(&[1, 2, 3]).await;

    // One request at a time: every backend has none in flight when a pick is made, so only the weights decide.
    let tally = lb.spread(2000).await;

    assert_shares(&tally, &[(1, 1200), (2, 400), (3, 400)], 120);
}
