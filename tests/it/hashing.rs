//! `consistent_hash` through the real binary (issue 11): a key (a header, a cookie, the path, the client's address)
//! keeps landing on one backend while different keys spread over all of them; a down backend's keys move elsewhere
//! (and only those) and come back when it does; `hash_bound` keeps one hot key from piling every request on one
//! backend; and HTTP/2 clients hash like HTTP/1 ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::harness::gauged::{wait_in_flight, BalancingConfig, GaugedBackend};
use crate::harness::{
    backend_of, client, h2_fetch, h2_request, h2c_client, wait_until, TestBackend, TestLb, PATIENCE,
};

/// `lb` hashing by `hash_key` over three backends.
async fn hashing(hash_key: &str, backends: &[TestBackend; 3]) -> TestLb {
    let mut config = BalancingConfig::new()
        .key("balance = \"consistent_hash\"")
        .key(&format!("hash_key = {hash_key:?}"));
    for backend in backends {
        config = config.backend(backend.id, backend.addr(), "");
    }
    config.start().await
}

async fn three_backends() -> [TestBackend; 3] {
    [
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    ]
}

/// GETs `path` with the header `name: value`; answers the backend that answered (it must be a 200).
async fn answer_with(lb: &TestLb, path: &str, name: &str, value: &str) -> u64 {
    let answer = try_answer_with(lb, path, name, value).await;
    answer.unwrap_or_else(|| panic!("no backend answered {name}: {value}"))
}

/// Like [`answer_with`], but `None` when no backend answered (none is up yet, say).
async fn try_answer_with(lb: &TestLb, path: &str, name: &str, value: &str) -> Option<u64> {
    let response = client()
        .get(lb.url(path))
        .header(name, value)
        .send()
        .await
        .expect("a response");
    match response.status().as_u16() {
        200 => backend_of(&response.text().await.expect("a body")),
        _ => None,
    }
}

/// Waits until each of `ids` has answered some `x-user` key: every backend is up and in the table.
async fn wait_every_backend_hashed(lb: &TestLb, ids: &[u64]) {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    wait_until("every backend answers some key", PATIENCE, async || {
        n += 1;
        seen.extend(try_answer_with(lb, "/", "x-user", &format!("warm-{n}")).await);
        ids.iter().all(|id| seen.contains(id))
    })
    .await;
}

/// Where each of `keys` lands now, asked once each.
async fn homes(lb: &TestLb, keys: &[String]) -> BTreeMap<String, u64> {
    let mut homes = BTreeMap::new();
    for key in keys {
        homes.insert(key.clone(), answer_with(lb, "/", "x-user", key).await);
    }
    homes
}

fn users(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("user-{n}")).collect()
}

#[tokio::test]
async fn the_same_header_value_always_lands_on_the_same_backend() {
    let backends = three_backends().await;
    let lb = hashing("header:x-user", &backends).await;
    wait_every_backend_hashed(&lb, &[1, 2, 3]).await;

    for key in ["alice", "bob", "carol", "dave", "erin"] {
        let first = answer_with(&lb, "/", "x-user", key).await;
        for n in 0..100 {
            let path = format!("/page/{n}");
            let again = answer_with(&lb, &path, "x-user", key).await;
            assert_eq!(again, first, "key {key} moved on request {n}");
        }
    }
    // Different keys spread over every backend.
    let homes = homes(&lb, &users(60)).await;
    let used: BTreeSet<u64> = homes.values().copied().collect();
    assert_eq!(used, BTreeSet::from([1, 2, 3]), "{homes:?}");
    // A request without the header hashes as empty: always the same backend.
    let (_, body) = lb.get("/").await;
    let without = backend_of(&body).unwrap();
    for _ in 0..20 {
        assert_eq!(backend_of(&lb.get("/").await.1), Some(without));
    }
}

#[tokio::test]
async fn a_cookie_keeps_its_backend() {
    let backends = three_backends().await;
    let lb = hashing("cookie:session", &backends).await;
    let mut homes = BTreeMap::new();
    wait_until("sessions land on every backend", PATIENCE, async || {
        homes.clear();
        for n in 0..30 {
            let cookie = format!("theme=dark; session=s{n}; lang=en");
            if let Some(id) = try_answer_with(&lb, "/", "cookie", &cookie).await {
                homes.insert(n, id);
            }
        }
        homes.len() == 30 && homes.values().collect::<BTreeSet<_>>().len() == 3
    })
    .await;

    for (n, home) in &homes {
        for other in ["a", "b", "c"] {
            // Other cookies around it do not matter: only `session` is hashed.
            let cookie = format!("session=s{n}; other={other}");
            assert_eq!(answer_with(&lb, "/", "cookie", &cookie).await, *home);
        }
    }
}

#[tokio::test]
async fn a_path_keeps_its_backend_whatever_the_query() {
    let backends = three_backends().await;
    let lb = hashing("path", &backends).await;
    let mut homes = BTreeMap::new();
    wait_until("paths land on every backend", PATIENCE, async || {
        homes.clear();
        for n in 0..30 {
            let (status, body) = lb.get(&format!("/item/{n}")).await;
            if status == 200 {
                homes.insert(n, backend_of(&body).unwrap());
            }
        }
        homes.len() == 30 && homes.values().collect::<BTreeSet<_>>().len() == 3
    })
    .await;

    for (n, home) in &homes {
        for query in ["", "?a=1", "?b=2&c=3"] {
            let (status, body) = lb.get(&format!("/item/{n}{query}")).await;
            assert_eq!(status, 200);
            assert_eq!(backend_of(&body), Some(*home), "/item/{n}{query}");
        }
    }
}

#[tokio::test]
async fn a_client_address_keeps_its_backend() {
    let backends = three_backends().await;
    let lb = hashing("client_ip", &backends).await;
    // Every 127.0.0.0/8 address is the loopback interface's: clients from 127.0.0.2, .3, ... are different clients.
    let from = |n: u8| -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .local_address(IpAddr::from([127, 0, 0, n]))
            .build()
            .expect("a client")
    };
    let ask = async |n: u8| -> Option<u64> {
        let response = from(n).get(lb.url("/")).send().await.expect("a response");
        match response.status().as_u16() {
            200 => backend_of(&response.text().await.unwrap()),
            _ => None,
        }
    };
    let mut homes = BTreeMap::new();
    wait_until("clients land on every backend", PATIENCE, async || {
        homes.clear();
        for n in 2..32 {
            if let Some(id) = ask(n).await {
                homes.insert(n, id);
            }
        }
        homes.len() == 30 && homes.values().collect::<BTreeSet<_>>().len() == 3
    })
    .await;

    for (n, home) in &homes {
        for _ in 0..3 {
            assert_eq!(ask(*n).await, Some(*home), "client 127.0.0.{n}");
        }
    }
}

#[tokio::test]
async fn a_down_backends_keys_move_and_come_back() {
    let backends = three_backends().await;
    let lb = hashing("header:x-user", &backends).await;
    wait_every_backend_hashed(&lb, &[1, 2, 3]).await;
    let keys = users(60);
    let before = homes(&lb, &keys).await;
    let down = before["user-0"];
    let watched = "user-0".to_owned();

    backends[down as usize - 1].set_healthy(false);
    wait_until("the key leaves its down backend", PATIENCE, async || {
        let now = try_answer_with(&lb, "/", "x-user", &watched).await;
        now.is_some_and(|id| id != down)
    })
    .await;
    let during = homes(&lb, &keys).await;
    for key in &keys {
        match before[key] == down {
            true => assert_ne!(during[key], down, "{key} still goes to the down backend"),
            // Only the down backend's keys move.
            false => assert_eq!(during[key], before[key], "{key} moved needlessly"),
        }
    }

    backends[down as usize - 1].set_healthy(true);
    wait_until("the key returns to its backend", PATIENCE, async || {
        try_answer_with(&lb, "/", "x-user", &watched).await == Some(down)
    })
    .await;
    assert_eq!(
        homes(&lb, &keys).await,
        before,
        "keys did not all come back"
    );
}

/// Holds `count` requests of one key in flight on held backends; answers how many each backend has.
async fn hot_key(hash_bound: Option<&str>, count: usize) -> Vec<usize> {
    let backends = [
        GaugedBackend::start(1).await,
        GaugedBackend::start(2).await,
        GaugedBackend::start(3).await,
    ];
    let mut config = BalancingConfig::new()
        .key("balance = \"consistent_hash\"")
        .key("hash_key = \"header:x-user\"");
    if let Some(bound) = hash_bound {
        config = config.key(&format!("hash_bound = {bound}"));
    }
    for backend in &backends {
        config = config.backend(backend.id, backend.addr(), "");
    }
    let lb = config.start().await;
    wait_every_backend_hashed(&lb, &[1, 2, 3]).await;
    for backend in &backends {
        backend.hold();
    }

    let requests: Vec<_> = (0..count)
        .map(|_| {
            let url = lb.url("/");
            tokio::spawn(async move {
                let response = client().get(url).header("x-user", "hot").send().await;
                response.expect("a response").status().as_u16()
            })
        })
        .collect();
    let held: Vec<&GaugedBackend> = backends.iter().collect();
    wait_in_flight(&held, count).await;
    let in_flight = backends.iter().map(GaugedBackend::in_flight).collect();

    for backend in &backends {
        backend.release();
    }
    for request in requests {
        assert_eq!(request.await.expect("a request task"), 200);
    }
    in_flight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bound_a_hot_key_piles_on_one_backend() {
    let in_flight = hot_key(None, 12).await;
    assert!(in_flight.contains(&12), "{in_flight:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_bound_spreads_a_hot_key() {
    let in_flight = hot_key(Some("1.25"), 12).await;
    // 12 in flight over 3 backends: an average of 4, and 1.25 × that is 5 (6 allows for the request being placed).
    let busiest = in_flight.iter().max().copied().unwrap_or(0);
    assert!(busiest <= 6, "one backend holds {busiest}: {in_flight:?}");
    let used = in_flight.iter().filter(|&&n| n > 0).count();
    assert!(used >= 2, "{in_flight:?}");
}

#[tokio::test]
async fn http2_clients_hash_like_http1_ones() {
    let backends = three_backends().await;
    let lb = hashing("header:x-user", &backends).await;
    wait_every_backend_hashed(&lb, &[1, 2, 3]).await;
    let keys = users(30);
    let over_http1 = homes(&lb, &keys).await;

    let mut h2 = h2c_client(lb.addr()).await;
    for key in &keys {
        for n in 0..5 {
            let mut request = h2_request("GET", &format!("/h2/{n}"), "");
            let value = key.parse().expect("a header value");
            request.headers_mut().insert("x-user", value);
            let (status, _, body, _) = h2_fetch(&mut h2, request).await;
            assert_eq!(status, 200);
            let id = backend_of(std::str::from_utf8(&body).unwrap());
            assert_eq!(id, Some(over_http1[key]), "{key} over HTTP/2");
        }
    }
}
