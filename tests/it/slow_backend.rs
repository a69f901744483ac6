//! A slow backend gets less under the latency-aware algorithms (issue 11): three backends, one 60 ms slower per
//! answer, sixteen clients at once. Under `least_request` its requests pile up in flight and under `peak_ewma` its
//! latency shows, so both send it clearly less than a third; round robin, the control, gives it its third.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::gauged::{BalancingConfig, GaugedBackend};
use crate::harness::{backend_of, client, tally, TestLb};

const CLIENTS: usize = 16;
const REQUESTS_EACH: usize = 38;
const SLOW_ID: u64 = 3;

/// Runs [`CLIENTS`] clients of [`REQUESTS_EACH`] sequential requests each, all at once; answers who answered.
async fn load(lb: &TestLb) -> BTreeMap<u64, usize> {
    let clients = (0..CLIENTS).map(|_| {
        let url = lb.url("/");
        tokio::spawn(async move {
            let client = client();
            let mut ids = Vec::with_capacity(REQUESTS_EACH);
            for _ in 0..REQUESTS_EACH {
                let response = client.get(&url).send().await.expect("a response");
                assert_eq!(response.status(), 200);
                let body = response.text().await.expect("a body");
                ids.push(backend_of(&body).expect("a backend's greeting"));
            }
            ids
        })
    });
    let mut answered = Vec::new();
    for ids in futures_util::future::join_all(clients).await {
        answered.extend(ids.expect("a client task"));
    }
    tally(answered)
}

/// The slow backend's share of the requests under `balance`.
async fn slow_share(balance: &str) -> (f64, BTreeMap<u64, usize>) {
    let fast = [GaugedBackend::start(1).await, GaugedBackend::start(2).await];
    let slow = GaugedBackend::slow(SLOW_ID, Duration::from_millis(60)).await;
    let lb = BalancingConfig::new()
        .key(&format!("balance = {balance:?}"))
        .backend(1, fast[0].addr(), "")
        .backend(2, fast[1].addr(), "")
        .backend(SLOW_ID, slow.addr(), "")
        .start()
        .await;
    lb.wait_serving(&[1, 2, SLOW_ID]).await;

    let tally = load(&lb).await;

    let total: usize = tally.values().sum();
    assert_eq!(total, CLIENTS * REQUESTS_EACH, "{tally:?}");
    let share = tally.get(&SLOW_ID).copied().unwrap_or(0) as f64 / total as f64;
    (share, tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_less_to_a_slow_backend() {
    let (share, tally) = slow_share("least_request").await;
    assert!(share < 0.20, "the slow backend got {share:.2}: {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_less_to_a_slow_backend() {
    let (share, tally) = slow_share("peak_ewma").await;
    assert!(share < 0.20, "the slow backend got {share:.2}: {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_a_slow_backend_its_third() {
    let (share, tally) = slow_share("round_robin").await;
    assert!(
        (0.28..=0.39).contains(&share),
        "the slow backend got {share:.2}, not about a third: {tally:?}"
    );
}
