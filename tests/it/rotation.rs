//! Round robin: k×N requests over N healthy backends give each k (±1), in config order, one client after another or
//! many at once.

use std::collections::BTreeMap;

use crate::harness::{assert_fair, backend_of, client, tally, TestBackend, TestLb};

#[tokio::test]
async fn sequential_requests_take_turns_in_config_order() {
    let backends = [
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    ];
    let lb = TestLb::builder()
        .backends(&backends.each_ref())
        .start()
        .await;
    lb.wait_serving(&[1, 2, 3]).await;
    let before: Vec<usize> = backends.iter().map(TestBackend::hits).collect();

    let order = lb.answers(30).await;

    for pair in order.windows(2) {
        assert_eq!(pair[1], pair[0] % 3 + 1, "not 1, 2, 3, 1, ...: {order:?}");
    }
    let tally = tally(order);
    assert_fair(&tally, &[1, 2, 3], 10);
    assert_no_retries(&backends, &before, &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_are_spread_fairly() {
    let backends = [
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
        TestBackend::start(4).await,
    ];
    let lb = TestLb::builder()
        .backends(&backends.each_ref())
        .start()
        .await;
    lb.wait_serving(&[1, 2, 3, 4]).await;
    let before: Vec<usize> = backends.iter().map(TestBackend::hits).collect();

    let clients = (0..8).map(|_| {
        let url = lb.url("/");
        tokio::spawn(async move {
            let client = client();
            let mut ids = Vec::new();
            for _ in 0..25 {
                let response = client.get(&url).send().await.expect("a response");
                assert_eq!(response.status(), 200);
                ids.push(
                    backend_of(&response.text().await.unwrap()).expect("a backend's greeting"),
                );
            }
            ids
        })
    });
    let mut answered = Vec::new();
    for ids in futures_util::future::join_all(clients).await {
        answered.extend(ids.expect("a client task"));
    }

    let tally = tally(answered);
    assert_fair(&tally, &[1, 2, 3, 4], 50);
    assert_no_retries(&backends, &before, &tally);
}

/// Each backend saw exactly the requests it answered since `before`: none was sent twice.
fn assert_no_retries(backends: &[TestBackend], before: &[usize], tally: &BTreeMap<u64, usize>) {
    for (backend, before) in backends.iter().zip(before) {
        let seen = backend.hits() - before;
        assert_eq!(
            seen, tally[&backend.id],
            "backend {} saw a request twice",
            backend.id
        );
    }
}
