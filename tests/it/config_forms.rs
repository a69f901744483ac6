//! The config forms `lb` accepts, each run for real: the spec's JSON array, the full form in TOML, and several pools
//! behind one listener with the routes to them.

use crate::harness::{assert_fair, backend_of, client, config_file, run_lb, TestBackend, TestLb};

#[tokio::test]
async fn the_specs_json_array_is_a_whole_config() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let servers = format!(
        "[\n  {{\"id\": 1, \"host\": \"127.0.0.1\", \"port\": {}}},\n  {{\"id\": 2, \"host\": \"127.0.0.1\", \"port\": {}}}\n]\n",
        b1.addr().port(),
        b2.addr().port()
    );

    let lb = TestLb::from_file("servers.json", &servers).await;

    assert_fair(&lb.spread(10).await, &[1, 2], 5);
}

#[tokio::test]
async fn a_toml_file_sets_backends_and_health_checks() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    b2.set_healthy(false);
    let config = format!(
        "workers = 1\naccess_log = false\n\n\
         [[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = {}\n\n\
         [[backends]]\nid = 2\nhost = \"127.0.0.1\"\nport = {}\n\n\
         [health_check]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = 0.1\nrise = 2\nfall = 3\n\
         statuses = [\"200-399\"]\n\n\
         [timeouts]\nconnect = \"1s\"\nclient_header = 5\nbackend_response = \"5s\"\nidle = \"1m\"\ndrain = \"5s\"\n",
        b1.addr().port(),
        b2.addr().port()
    );

    let lb = TestLb::from_file("lb.toml", &config).await;

    // Backend 2 fails the configured health path, so only backend 1 serves.
    assert_fair(&lb.spread(6).await, &[1], 6);
    assert!(
        b2.health_checks() >= 1,
        "the health path of the file was not used"
    );
}

/// A backend entry of a TOML inline table.
fn entry(id: u64, backend: &TestBackend) -> String {
    format!(
        "{{ id = {id}, host = \"127.0.0.1\", port = {} }}",
        backend.addr().port()
    )
}

#[tokio::test]
async fn routes_send_requests_to_their_pools_by_host_and_path() {
    let (b1, b2, b3) = (
        TestBackend::start(1).await,
        TestBackend::start(2).await,
        TestBackend::start(3).await,
    );
    let config = format!(
        "workers = 1\nbackends = [{}]\n\n\
         [pools.api]\nbackends = [{}]\nbalance = \"least_request\"\n\n\
         [pools.static]\nbackends = [{}]\n\n\
         [[routes]]\nhost = \"API.example.com\"\npool = \"api\"\n\n\
         [[routes]]\npath_prefix = \"/static/\"\npool = \"static\"\n\n\
         [[routes]]\nhost = \"*.example.com\"\npath_prefix = \"/static/own\"\npool = \"default\"\n",
        entry(1, &b1),
        entry(2, &b2),
        entry(3, &b3)
    );

    let lb = TestLb::from_file("lb.toml", &config).await;

    let answer = async |host: Option<&str>, path: &str| {
        let mut request = client().get(lb.url(path));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status(), 200, "{host:?} {path}");
        backend_of(&response.text().await.unwrap()).expect("a backend's answer")
    };
    assert_eq!(answer(None, "/").await, 1, "no route: the default pool");
    assert_eq!(answer(None, "/static/a.css").await, 3);
    assert_eq!(answer(Some("api.example.com:8080"), "/").await, 2);
    assert_eq!(
        answer(Some("Api.Example.Com"), "/static/a.css").await,
        2,
        "an exact host wins"
    );
    assert_eq!(answer(Some("www.example.com"), "/static/a.css").await, 3);
    assert_eq!(answer(Some("www.example.com"), "/static/own/x").await, 1);
}

#[tokio::test]
async fn without_top_level_backends_a_request_no_route_takes_gets_404() {
    let b1 = TestBackend::start(1).await;
    let config = format!(
        "workers = 1\n[pools.api]\nbackends = [{}]\n[[routes]]\npath_prefix = \"/api/\"\npool = \"api\"\n",
        entry(1, &b1)
    );

    let lb = TestLb::from_file("lb.toml", &config).await;

    let (status, body) = lb.get("/api/users").await;
    assert_eq!((status, backend_of(&body)), (200, Some(1)));
    assert_eq!(lb.get("/other").await.0, 404);
}

#[tokio::test]
async fn check_prints_pools_weights_and_routes() {
    let config = "balance = \"peak_ewma\"\n\
         [[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8101\nweight = 3\nmax_connections = 50\n\
         [pools.api]\nbackends = [{ id = 2, host = \"127.0.0.1\", port = 8102 }]\n\
         balance = \"consistent_hash\"\nhash_key = \"header:X-User\"\nhash_bound = 1.25\n\
         [pools.api.slow_start]\nwindow = \"10s\"\n\
         [pools.spare]\nbackends = [{ id = 3, host = \"127.0.0.1\", port = 8103 }]\n\
         [pools.spare.health_check]\ninterval = \"1s\"\n\
         [[routes]]\nhost = \"*.example.com\"\npath_prefix = \"/api\"\npool = \"api\"\n\
         [retries]\nbudget_percent = 10\n";
    let (_dir, path) = config_file("lb.toml", config);

    let run = run_lb(&["check", "--config", &path]).await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for line in [
        "backends (1), peak EWMA:",
        "  1  127.0.0.1:8101  weight 3, max_connections 50",
        "pool api (1), consistent hash of header x-user, load bound 1.25, slow start 10s:",
        "pool spare (1), peak EWMA, no route leads here:",
        "  health: GET / every 1s, timeout 1s,",
        "route: host *.example.com, path /api → pool api",
        "retries: at most 3 attempts per request, budget 10%",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
}
