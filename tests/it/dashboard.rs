//! The dashboard in a real browser (headless Chromium, see `harness::browser`): the page, loaded once, follows a
//! backend that dies (it turns red within `fall × interval` + 2 s, saying why, while the other stays green), its
//! buttons steer the backends, and with `admin_token` it works after the browser's login.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{wait_until, Browser, Page, TestBackend, TestLb, PATIENCE};

/// The page's colours for `up` and `down` (`--up`, `--down` in dashboard.html).
const GREEN: &str = "rgb(26, 127, 55)";
const RED: &str = "rgb(207, 34, 46)";
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 3;

/// lb over `backends` with the admin plane on a free port, checking health every [`INTERVAL`], down after [`FALL`].
async fn lb_with_admin(backends: &[&TestBackend], token: Option<&str>) -> (TestLb, SocketAddr) {
    let mut lb = TestLb::builder()
        .backends(backends)
        .health("interval", format!("{}ms", INTERVAL.as_millis()))
        .health("fall", FALL)
        .admin();
    if let Some(token) = token {
        lb = lb.set("admin_token", token);
    }
    let lb = lb.start().await;
    let admin = lb.admin().await.addr;
    (lb, admin)
}

/// What the page shows of backend `id`: `{state, colour, reason, answer}`; before its card exists, `{live}`: the
/// page's own word on its updates (e.g. an error from `/api/status`).
fn card(id: u64) -> String {
    format!(
        r#"(() => {{
            const card = document.querySelector('[data-backend="{id}"]');
            if (!card) return {{ live: document.getElementById('live')?.textContent ?? document.title }};
            const reason = card.querySelector('.reason');
            return {{
                state: card.dataset.state,
                colour: getComputedStyle(card.querySelector('.state')).backgroundColor,
                reason: reason.hidden ? null : reason.textContent,
                answer: card.querySelector('.answer').textContent,
            }};
        }})()"#
    )
}

/// Clicks backend `id`'s button for `action`, as a person would.
async fn click(page: &mut Page, id: u64, action: &str) {
    let selector = format!(r#"[data-backend="{id}"] button[data-action="{action}"]"#);
    let clicked = page
        .eval(&format!(
            "(() => {{ const b = document.querySelector('{selector}'); if (b) b.click(); return !!b; }})()"
        ))
        .await;
    assert_eq!(clicked, true, "no {action} button for backend {id}");
}

async fn wait_state(page: &mut Page, id: u64, state: &str, timeout: Duration) -> Value {
    let what = format!("backend {id} shows {state}");
    page.wait_for(&what, timeout, &card(id), |card| card["state"] == state)
        .await
}

#[tokio::test]
async fn a_killed_backend_turns_red_on_the_open_page_and_the_buttons_steer() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let (_lb, admin) = lb_with_admin(&[&b1, &b2], None).await;
    let mut page = browser.open().await;
    page.navigate(&format!("http://{admin}/")).await;
    for id in [1, 2] {
        let card = wait_state(&mut page, id, "up", PATIENCE).await;
        assert_eq!(card["colour"], GREEN, "{card}");
        assert_eq!(card["reason"], Value::Null, "{card}");
    }
    // The page is not loaded again from here on: what it shows next, it learnt by itself.
    page.eval("window.loadedOnce = true").await;

    b2.stop().await;
    let killed = Instant::now();
    let budget = INTERVAL * FALL + Duration::from_secs(2);
    let down = wait_state(&mut page, 2, "down", budget).await;
    eprintln!(
        "backend 2 turned red on the page {} ms after it was killed (budget {} ms)",
        killed.elapsed().as_millis(),
        budget.as_millis()
    );
    assert_eq!(down["colour"], RED, "{down}");
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "a down backend says why: {down}");
    let up = page.eval(&card(1)).await;
    assert_eq!(
        (&up["state"], &up["colour"]),
        (&"up".into(), &GREEN.into()),
        "{up}"
    );

    click(&mut page, 1, "disable").await;
    let disabled = wait_state(&mut page, 1, "disabled", PATIENCE).await;
    assert!(
        disabled["answer"]
            .as_str()
            .unwrap_or_default()
            .starts_with("disable: "),
        "the page shows the answer: {disabled}"
    );
    click(&mut page, 1, "enable").await;
    wait_state(&mut page, 1, "up", PATIENCE).await;
    assert_eq!(page.eval("window.loadedOnce").await, true);
}

#[tokio::test]
async fn with_a_token_the_page_works_after_the_browsers_login() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    const TOKEN: &str = "a-token-for-the-dashboard-test";
    let b1 = TestBackend::start(1).await;
    let (_lb, admin) = lb_with_admin(&[&b1], Some(TOKEN)).await;
    let mut page = browser.open().await;
    page.log_in_with("admin", TOKEN).await;
    page.navigate(&format!("http://{admin}/")).await;
    wait_state(&mut page, 1, "up", PATIENCE).await;
    // A POST from the page: the credentials go with it, and its Origin is this origin.
    click(&mut page, 1, "disable").await;
    wait_state(&mut page, 1, "disabled", PATIENCE).await;
}

#[tokio::test]
async fn the_history_counts_each_backends_requests_and_the_page_runs_only_its_own_code() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .admin()
        .start()
        .await;
    let admin = lb.admin().await;
    assert_eq!(lb.spread(40).await.len(), 2);
    let mut history = Value::Null;
    wait_until(
        "the history has a point with requests for both",
        PATIENCE,
        async || {
            history = admin.json("/api/history").await;
            let busy = |id: u64| {
                let series = history["backends"].as_array().into_iter().flatten();
                let mut series = series.filter(|s| s["id"] == id);
                series.any(|s| {
                    s["points"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["rps"].as_f64() > Some(0.0))
                })
            };
            busy(1) && busy(2)
        },
    )
    .await;
    assert_eq!(history["every_ms"], 1000, "{history}");
    let points = history["backends"][0]["points"].as_array().unwrap();
    let busy = points
        .iter()
        .find(|p| p["rps"].as_f64() > Some(0.0))
        .unwrap();
    assert!(
        busy["t"].as_u64() > Some(1_700_000_000_000),
        "Unix ms: {busy}"
    );
    for quantile in ["p50_ms", "p99_ms"] {
        // A bucket bound: 0.5 ms is the first.
        assert!(busy[quantile].as_f64() >= Some(0.5), "{quantile} in {busy}");
    }

    let page = crate::harness::client()
        .get(admin.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let body = page.text().await.unwrap();
    assert!(
        body.contains("<script>") && !body.contains("<script src"),
        "one inline script"
    );
}
