//! Several pools behind one listener (issue 11): `[pools.NAME]` and `[[routes]]` by host (exact or `*.suffix`,
//! without the port, any case) and path prefix. The most specific route wins (an exact host over a wildcard, the
//! longest prefix); a request no route takes goes to the top-level backends, or gets 404 when there are none. Each
//! pool balances and checks its backends by its own settings. Over HTTP/1.1 and HTTP/2 (h2c): the fast path and the
//! generic path route separately.
//!
//! Backends are told apart by their greeting: default pool 1 and 2, `api` 11 and 12, `web` (`*.example.com`) 21,
//! `static` (`/static`) 31, `images` (`/static/images`) 41.

use std::collections::BTreeSet;

use crate::harness::gauged::BalancingConfig;
use crate::harness::{
    backend_of, client, h2_fetch, h2_request, h2c_client, wait_until, TestBackend, TestLb,
    HEALTH_PATH, PATIENCE,
};

struct Site {
    lb: TestLb,
    _backends: Vec<TestBackend>,
}

/// The pools and routes of the module doc; the default pool only when `with_default`.
async fn site(with_default: bool) -> Site {
    let mut backends = Vec::new();
    for id in [1, 2, 11, 12, 21, 31, 41] {
        backends.push(TestBackend::start(id).await);
    }
    let addr = |id: u64| backends.iter().find(|b| b.id == id).unwrap().addr();
    let mut config = BalancingConfig::new();
    if with_default {
        config = config.backend(1, addr(1), "").backend(2, addr(2), "");
    }
    let config = config
        .pool_backend("api", 11, addr(11), "")
        .pool_backend("api", 12, addr(12), "")
        .pool_backend("web", 21, addr(21), "")
        .pool_backend("static", 31, addr(31), "")
        .pool_backend("images", 41, addr(41), "")
        .route("host = \"*.example.com\"", "web")
        .route("path_prefix = \"/static\"", "static")
        .route("host = \"api.example.com\"", "api")
        .route("path_prefix = \"/static/images\"", "images");
    Site {
        lb: config.start().await,
        _backends: backends,
    }
}

/// GETs `path` with `Host: host` over HTTP/1.1; answers the status and the backend that answered, if one did.
async fn ask(lb: &TestLb, host: &str, path: &str) -> (u16, Option<u64>) {
    let response = client()
        .get(lb.url(path))
        .header("host", host)
        .send()
        .await
        .expect("a response");
    let status = response.status().as_u16();
    (status, backend_of(&response.text().await.expect("a body")))
}

/// Which backends may answer each (host, path): the routing table these tests check.
const EXPECTED: &[(&str, &str, &[u64])] = &[
    ("api.example.com", "/users", &[11, 12]),
    // The port and the case do not matter.
    ("API.Example.COM:8080", "/users", &[11, 12]),
    // A wildcard host: any name under example.com, but the exact name above wins over it.
    ("www.example.com", "/", &[21]),
    ("a.b.example.com", "/users", &[21]),
    // The longest prefix wins.
    ("other.org", "/static/app.css", &[31]),
    ("other.org", "/static/images/logo.png", &[41]),
    ("other.org", "/staticky", &[31]),
    // No route: the default pool. A wildcard needs a label before its suffix.
    ("other.org", "/users", &[1, 2]),
    ("example.com", "/", &[1, 2]),
];

/// Waits until every pool answers (each checks its backends on its own), by asking each row of [`EXPECTED`].
async fn wait_every_pool(lb: &TestLb) {
    wait_until("every pool answers", PATIENCE, async || {
        for (host, path, _) in EXPECTED {
            if ask(lb, host, path).await.0 != 200 {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test]
async fn requests_reach_the_pool_their_host_or_path_names() {
    let site = site(true).await;
    wait_every_pool(&site.lb).await;

    for (host, path, ids) in EXPECTED {
        let mut answered = BTreeSet::new();
        for _ in 0..6 {
            let (status, id) = ask(&site.lb, host, path).await;
            assert_eq!(status, 200, "{host}{path}");
            answered.insert(id.unwrap_or_else(|| panic!("{host}{path}: not a backend")));
        }
        // Round robin within a pool: every member takes its turn.
        let want: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(answered, want, "{host}{path}");
    }
}

#[tokio::test]
async fn http2_requests_are_routed_alike() {
    let site = site(true).await;
    wait_every_pool(&site.lb).await;
    let mut h2 = h2c_client(site.lb.addr()).await;

    for (host, path, ids) in EXPECTED {
        let mut answered = BTreeSet::new();
        for _ in 0..6 {
            let mut request = h2_request("GET", path, "");
            *request.uri_mut() = format!("http://{host}{path}").parse().unwrap();
            let (status, _, body, _) = h2_fetch(&mut h2, request).await;
            assert_eq!(status, 200, "{host}{path} over HTTP/2");
            let id = backend_of(std::str::from_utf8(&body).unwrap());
            answered.insert(id.unwrap_or_else(|| panic!("{host}{path}: not a backend")));
        }
        let want: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(answered, want, "{host}{path} over HTTP/2");
    }
}

#[tokio::test]
async fn without_top_level_backends_an_unrouted_request_gets_404() {
    let site = site(false).await;
    let lb = &site.lb;
    wait_until("the api pool answers", PATIENCE, async || {
        ask(lb, "api.example.com", "/").await.0 == 200
    })
    .await;

    assert_eq!(ask(lb, "other.org", "/users").await, (404, None));
    assert_eq!(ask(lb, "example.com", "/").await, (404, None));
    assert_eq!(ask(lb, "other.org", "/static/x").await.0, 200);
    // And over HTTP/2.
    let mut h2 = h2c_client(lb.addr()).await;
    let mut request = h2_request("GET", "/users", "");
    *request.uri_mut() = "http://other.org/users".parse().unwrap();
    assert_eq!(h2_fetch(&mut h2, request).await.0, 404);
    let mut request = h2_request("GET", "/users", "");
    *request.uri_mut() = "http://api.example.com/users".parse().unwrap();
    assert_eq!(h2_fetch(&mut h2, request).await.0, 200);
}

#[tokio::test]
async fn a_pool_balances_and_checks_by_its_own_settings() {
    let defaults = [TestBackend::start(1).await, TestBackend::start(2).await];
    let api = [TestBackend::start(11).await, TestBackend::start(12).await];
    // The top-level checks ask a path every backend answers 200 once a minute: only the pool's own checks, of the
    // health path every 100 ms, can see an api backend go down.
    let lb = BalancingConfig::new()
        .health("path", "\"/always-fine\"")
        .health("interval", "\"60s\"")
        .backend(1, defaults[0].addr(), "")
        .backend(2, defaults[1].addr(), "")
        .table("[pools.api]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user\"\n")
        .table(&format!(
            "[pools.api.health_check]\npath = \"{HEALTH_PATH}\"\ninterval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n"
        ))
        .pool_backend("api", 11, api[0].addr(), "")
        .pool_backend("api", 12, api[1].addr(), "")
        .route("host = \"api.example.com\"", "api")
        .start()
        .await;
    let as_user = async |user: &str| -> (u16, Option<u64>) {
        let response = client()
            .get(lb.url("/"))
            .header("host", "api.example.com")
            .header("x-user", user)
            .send()
            .await
            .expect("a response");
        let status = response.status().as_u16();
        (status, backend_of(&response.text().await.unwrap()))
    };
    let mut homes = BTreeSet::new();
    wait_until("both api backends answer some user", PATIENCE, async || {
        homes.clear();
        for n in 0..20 {
            homes.extend(as_user(&format!("user-{n}")).await.1);
        }
        homes.len() == 2
    })
    .await;
    lb.wait_serving(&[1, 2]).await;

    // The api pool hashes: a user stays on one backend, while the default pool takes turns.
    let alice = as_user("alice").await.1;
    for _ in 0..20 {
        assert_eq!(as_user("alice").await.1, alice);
    }
    let tally = lb.spread(20).await;
    assert_eq!(tally.values().copied().collect::<Vec<_>>(), [10, 10]);

    // The api pool's checks take 12 out: every user is served by 11.
    api[1].set_healthy(false);
    wait_until(
        "the api pool stops using backend 12",
        PATIENCE,
        async || {
            for n in 0..20 {
                if as_user(&format!("user-{n}")).await != (200, Some(11)) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for n in 0..40 {
        assert_eq!(as_user(&format!("user-{n}")).await, (200, Some(11)));
    }
}

/// Sends `GET path` with `Host: host` as written (no client library tidies it first); answers the backend that
/// answered, if one did.
async fn ask_raw(lb: &TestLb, host: &str, path: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    backend_of(body)
}

/// A path is routed as nginx matches a location: dot segments, repeated slashes and encoded unreserved characters
/// cannot steer a request past a more specific prefix into another pool (found by the review).
#[tokio::test]
async fn a_path_is_routed_by_its_normalized_form() {
    let site = site(true).await;
    wait_every_pool(&site.lb).await;
    for (path, ids) in [
        ("/static/x/../images/logo.png", &[41][..]),
        ("/static//images/logo.png", &[41]),
        ("/static/%69mages/logo.png", &[41]),
        ("/static/./images/logo.png", &[41]),
        ("/static/../users", &[1, 2]),
        ("/static/app.css", &[31]),
    ] {
        let id = ask_raw(&site.lb, "other.org", path).await;
        assert!(
            id.is_some_and(|id| ids.contains(&id)),
            "{path}: answered by {id:?}, want {ids:?}"
        );
    }
}
