//! `GET /metrics`: exact counts (after N requests the sum of `lb_requests_total` grows by exactly N, split by
//! backend as round robin sent them, `lb`'s own answers under `backend=""`), the time-to-head histogram, retries,
//! the connection gauges (clients, backends: pooled and in use), backend health, reloads and the build, in a
//! well-formed exposition (read here by a small parser of the text format, not a library's).
//!
//! The data plane counts an answer once it has gone out, so a client can scrape a moment before its last answer is
//! counted: tests wait until a count is reached, then check it is not passed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{
    client, wait_until, RawConn, ScriptedBackend, Step, TestBackend, TestLb, HEALTH_PATH, PATIENCE,
};

/// One sample: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: every sample line, checked to be well formed (comments are left out).
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
            .collect();
        Scrape { samples }
    }

    /// The samples called `name` whose labels include `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples called `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The one sample called `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .matching(name, labels)
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }
}

/// `name{k="v",...} value` (labels optional); label values may hold escaped quotes.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let valid_name = name.chars().next()?.is_ascii_alphabetic()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => value.push(chars.next()?.1),
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
    }
    let value = match rest.strip_prefix(' ')? {
        "+Inf" => f64::INFINITY,
        value => value.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Scrapes `/metrics` and parses it.
async fn scrape(lb: &TestLb) -> Scrape {
    let (status, body) = lb.admin().await.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

/// Scrapes until `what` holds of a scrape; answers that scrape.
async fn scrape_until(lb: &TestLb, what: &str, condition: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    wait_until(what, PATIENCE, async || {
        let scraped = scrape(lb).await;
        let holds = condition(&scraped);
        last = Some(scraped);
        holds
    })
    .await;
    last.unwrap()
}

const REQUESTS: &str = "lb_requests_total";

#[tokio::test]
async fn every_request_is_counted_once_on_the_backend_that_answered() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .admin()
        .start()
        .await;
    lb.wait_serving(&[1, 2]).await;
    let before = scrape(&lb).await;

    let tally = lb.spread(20).await;
    let after = scrape_until(&lb, "the 20 requests are counted", |s| {
        s.sum(REQUESTS, &[]) >= before.sum(REQUESTS, &[]) + 20.0
    })
    .await;
    assert_eq!(after.sum(REQUESTS, &[]) - before.sum(REQUESTS, &[]), 20.0);
    for (id, count) in &tally {
        let ok = [("backend", &*id.to_string()), ("code", "2xx")];
        assert_eq!(
            after.value(REQUESTS, &ok) - before.value(REQUESTS, &ok),
            *count as f64,
            "backend {id}: {tally:?}"
        );
    }
    assert_eq!(after.sum(REQUESTS, &[("backend", "")]), 0.0);

    // The histogram counts each of a backend's answers once, in cumulative buckets up to +Inf.
    for id in ["1", "2"] {
        let backend = [("backend", id)];
        let count = after.value("lb_request_duration_seconds_count", &backend);
        assert_eq!(count, after.sum(REQUESTS, &backend), "backend {id}");
        let buckets: Vec<&Sample> = after
            .matching("lb_request_duration_seconds_bucket", &backend)
            .collect();
        assert_eq!(buckets.len(), 17, "16 bounds and +Inf: {buckets:?}");
        let bounds: Vec<f64> = buckets
            .iter()
            .map(|b| b.labels["le"].parse::<f64>().unwrap())
            .collect();
        assert_eq!(
            (bounds[0], bounds[15], bounds[16]),
            (0.0005, 30.0, f64::INFINITY)
        );
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{buckets:?}"
        );
        assert_eq!(buckets[16].value, count);
        let sum = after.value("lb_request_duration_seconds_sum", &backend);
        assert!(sum > 0.0 && sum < count * 5.0, "sum {sum} for {count}");
    }
}

#[tokio::test]
async fn answers_lb_made_itself_are_counted_without_a_backend() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("client_header", "300ms")
        .admin()
        .start()
        .await;
    lb.wait_serving(&[1]).await;
    let own = |code| [("backend", ""), ("code", code)];
    let before = scrape(&lb).await;

    // A malformed head: 400; a head that never ends: 408.
    let mut bad = RawConn::connect(lb.addr()).await;
    bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .await;
    assert_eq!(bad.response().await.status, 400);
    let mut slow = RawConn::connect(lb.addr()).await;
    slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(slow.response().await.status, 408);
    // No healthy backend: 503.
    backend.set_healthy(false);
    scrape_until(&lb, "the backend is down", |s| {
        s.value("lb_backend_up", &[("backend", "1")]) == 0.0
    })
    .await;
    assert_eq!(lb.get("/").await.0, 503);

    let after = scrape_until(&lb, "the three answers are counted", |s| {
        s.sum(REQUESTS, &[]) >= before.sum(REQUESTS, &[]) + 3.0
    })
    .await;
    assert_eq!(after.sum(REQUESTS, &[]) - before.sum(REQUESTS, &[]), 3.0);
    assert_eq!(
        after.value(REQUESTS, &own("4xx")) - before.value(REQUESTS, &own("4xx")),
        2.0
    );
    assert_eq!(
        after.value(REQUESTS, &own("5xx")) - before.value(REQUESTS, &own("5xx")),
        1.0
    );
}

#[tokio::test]
async fn a_request_resent_elsewhere_is_one_request_and_one_retry() {
    let resetting = ScriptedBackend::start(|_| vec![Step::Reset]).await;
    let good = TestBackend::start(2).await;
    let lb = TestLb::builder()
        .backend_at(1, resetting.addr())
        .backend(&good)
        .admin()
        .start()
        .await;
    let before = scrape(&lb).await;

    for _ in 0..4 {
        let (status, body) = lb.get("/").await;
        assert_eq!((status, body.as_str()), (200, "hello from backend 2"));
    }
    let after = scrape_until(&lb, "the 4 requests are counted", |s| {
        s.sum(REQUESTS, &[]) >= before.sum(REQUESTS, &[]) + 4.0
    })
    .await;
    assert_eq!(after.sum(REQUESTS, &[]) - before.sum(REQUESTS, &[]), 4.0);
    assert_eq!(after.sum(REQUESTS, &[("backend", "1")]), 0.0);
    let retries = after.value("lb_retries_total", &[]) - before.value("lb_retries_total", &[]);
    assert!(resetting.hits() >= 1, "round robin sent some to backend 1");
    assert_eq!(retries, resetting.hits() as f64, "one retry per reset");
}

#[tokio::test]
async fn open_client_connections_are_counted() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).admin().start().await;
    lb.wait_serving(&[1]).await;
    let open = |s: &Scrape| s.value("lb_client_connections", &[]);
    let before = open(&scrape(&lb).await);

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(conn.response().await.status, 200);
        clients.push(conn);
    }
    scrape_until(&lb, "3 more client connections", |s| {
        open(s) == before + 3.0
    })
    .await;
    drop(clients);
    scrape_until(&lb, "they are closed", |s| open(s) == before).await;
}

#[tokio::test]
async fn backend_connections_count_the_pooled_ones_until_the_backend_closes_them() {
    // Answers after a second (so that concurrent requests need a connection each), keeps idle connections 2 s.
    let script = |_: &_| {
        vec![
            Step::Sleep(Duration::from_secs(1)),
            Step::write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ]
    };
    let backend =
        ScriptedBackend::start_with_idle_close(Some(Duration::from_secs(2)), script).await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .admin()
        .start()
        .await;
    let pooled = |s: &Scrape| s.value("lb_backend_connections", &[("backend", "1")]);
    assert_eq!(pooled(&scrape(&lb).await), 0.0);

    // Three at once: three connections, in use and then pooled.
    let in_flight = |s: &Scrape| s.value("lb_backend_in_flight", &[("backend", "1")]);
    let http = client();
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let request = http.get(lb.url("/")).send();
            tokio::spawn(async move { request.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    scrape_until(&lb, "3 requests in flight on 3 connections", |s| {
        in_flight(s) == 3.0 && pooled(s) == 3.0
    })
    .await;
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let after = scrape_until(&lb, "none in flight", |s| in_flight(s) == 0.0).await;
    assert_eq!(pooled(&after), 3.0, "the three stay pooled");

    // The backend closes them when idle; the pool notices, and so does the gauge.
    scrape_until(&lb, "the closed connections are not counted", |s| {
        pooled(s) == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_dead_backend_shows_down() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .admin()
        .start()
        .await;
    let up = |s: &Scrape, id| s.value("lb_backend_up", &[("backend", id)]);
    scrape_until(&lb, "both up", |s| up(s, "1") == 1.0 && up(s, "2") == 1.0).await;
    b2.stop().await;
    let scraped = scrape_until(&lb, "backend 2 down", |s| up(s, "2") == 0.0).await;
    assert_eq!(up(&scraped, "1"), 1.0);
    // Taken down by `fall` (3) failed checks, counted by result.
    let checks = |id, result| {
        let labels = [("backend", id), ("result", result)];
        scraped.value("lb_health_checks_total", &labels)
    };
    assert!(checks("2", "fail") >= 3.0, "{:?}", checks("2", "fail"));
    assert!(checks("1", "pass") >= 1.0);
    assert_eq!(checks("1", "fail"), 0.0);
}

#[tokio::test]
async fn reloads_are_counted_by_result() {
    let backend = TestBackend::start(1).await;
    let config = format!(
        r#"{{"backends": [{{"id": 1, "host": "127.0.0.1", "port": {}}}], "health_check": {{"path": "{HEALTH_PATH}"}}}}"#,
        backend.addr().port()
    );
    let lb = TestLb::from_file_with("lb.json", &config, &["--admin", "127.0.0.1:0"]).await;
    let admin = lb.admin().await;
    let reloads = |s: &Scrape, result| s.value("lb_config_reloads_total", &[("result", result)]);
    let before = scrape(&lb).await;
    assert_eq!(
        (reloads(&before, "ok"), reloads(&before, "error")),
        (0.0, 0.0)
    );

    assert_eq!(admin.post("/api/reload").await.0, 200);
    lb.rewrite_config("{not json");
    assert_eq!(admin.post("/api/reload").await.0, 400);
    lb.rewrite_config(&config);
    assert_eq!(admin.post("/api/reload").await.0, 200);
    let after = scrape(&lb).await;
    assert_eq!(
        (reloads(&after, "ok"), reloads(&after, "error")),
        (2.0, 1.0)
    );
}

#[tokio::test]
async fn the_exposition_names_every_metric_once_in_either_format() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).admin().start().await;
    lb.wait_serving(&[1]).await;
    let admin = lb.admin().await;

    // Without asking (curl): the Prometheus text format.
    let response = client().get(admin.url("/metrics")).send().await.unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    let scraped = Scrape::parse(&text);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(scraped.value("lb_build_info", &[("version", version)]), 1.0);
    let names = [
        "lb_requests_total",
        "lb_request_duration_seconds_bucket",
        "lb_request_duration_seconds_sum",
        "lb_request_duration_seconds_count",
        "lb_backend_up",
        "lb_backend_ejected",
        "lb_backend_in_flight",
        "lb_health_checks_total",
        "lb_backend_ejections_total",
        "lb_retries_total",
        "lb_client_connections",
        "lb_backend_connections",
        "lb_config_reloads_total",
        "lb_build_info",
    ];
    for name in names {
        assert!(
            scraped.matching(name, &[]).next().is_some(),
            "no {name}:\n{text}"
        );
    }
    let unknown: Vec<&str> = scraped
        .samples
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| !names.contains(name))
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    // Every sample's family is described (HELP and TYPE), and the requests' codes are the five classes.
    for family in [
        "lb_requests_total",
        "lb_request_duration_seconds",
        "lb_retries_total",
        "lb_build_info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family}:\n{text}"
        );
    }
    let codes: Vec<&str> = scraped
        .matching(REQUESTS, &[("backend", "1")])
        .map(|s| s.labels["code"].as_str())
        .collect();
    assert_eq!(codes, ["1xx", "2xx", "3xx", "4xx", "5xx"]);
    for result in ["pass", "fail"] {
        let labels = [("backend", "1"), ("result", result)];
        assert_eq!(
            scraped.matching("lb_health_checks_total", &labels).count(),
            1
        );
    }

    // As Prometheus asks: OpenMetrics, the same samples, ending with # EOF.
    let openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let response = client()
        .get(admin.url("/metrics"))
        .header("accept", openmetrics)
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE lb_requests counter\n"), "{text}");
    let scraped_again = Scrape::parse(&text);
    for name in names {
        assert!(
            scraped_again.matching(name, &[]).next().is_some(),
            "no {name}:\n{text}"
        );
    }
    assert!(!text.contains("_total_total"), "{text}");
}
