//! The admin plane's own surface: where it listens and who may use it (off by default, loopback unless a token,
//! Bearer or Basic, Host and Origin checks), its routes (404, 405), and reloads asked over it (`POST /api/reload`,
//! `lb reload`, `lb check --admin`), which are SIGHUP's reload: the diff, or a 400 with the one-line error and the
//! running config kept.

use serde_json::{json, Value};

use crate::harness::{
    client, full_config, run_lb, run_lb_with_env, ScriptedBackend, Step, TestBackend, TestLb,
};

const TOKEN: &str = "s3cret-token-0123456789";

#[tokio::test]
async fn reload_over_the_admin_plane_answers_the_diff_or_the_error() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::from_file_with(
        "lb.json",
        &full_config(&[(1, &b1)], json!({})),
        &["--admin", "127.0.0.1:0"],
    )
    .await;
    let admin = lb.admin().await;

    lb.rewrite_config(&full_config(&[(1, &b1), (2, &b2)], json!({})));
    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 200, "{body}");
    let diff: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        diff,
        json!({"generation": 2, "added": [2], "removed": [], "changed": []})
    );
    assert_eq!(
        lb.spread(20).await.keys().copied().collect::<Vec<_>>(),
        [1, 2]
    );
    lb.wait_log(
        "reload asked on the admin plane: config reloaded",
        crate::harness::PATIENCE,
    )
    .await;

    // A bad file: 400 with the one-line error (file, place, problem); the running config stays.
    lb.rewrite_config(r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 70000}]}"#);
    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 400, "{body}");
    let error = serde_json::from_str::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("lb.json") && error.contains("backends[0].port"),
        "{error}"
    );
    assert!(error.contains("running config stays"), "{error}");
    assert_eq!(
        lb.spread(20).await.keys().copied().collect::<Vec<_>>(),
        [1, 2]
    );

    // A new listener: refused, with what would change.
    lb.rewrite_config(&full_config(&[(1, &b1)], json!({"workers": 3})));
    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("restart") && body.contains("workers 2 → 3"),
        "{body}"
    );

    // The command line asks the same: `lb reload` prints the diff.
    let admin_addr = admin.addr.to_string();
    lb.rewrite_config(&full_config(&[(2, &b2)], json!({})));
    let reloaded = run_lb(&["reload", "--admin", &admin_addr]).await;
    assert_eq!(reloaded.code, Some(0), "{}", reloaded.stderr);
    assert_eq!(
        reloaded.stdout.trim(),
        "reloaded: generation 3: added [], removed [1], changed []"
    );
    assert_eq!(lb.spread(6).await.keys().copied().collect::<Vec<_>>(), [2]);

    lb.rewrite_config("not json");
    let failed = run_lb(&["reload", "--admin", &admin_addr]).await;
    assert_eq!(failed.code, Some(1));
    assert!(
        failed
            .last_error_line()
            .starts_with("error: reload failed, the running config stays: ")
            && failed.last_error_line().contains("lb.json:1:"),
        "{}",
        failed.stderr
    );
}

#[tokio::test]
async fn the_admin_plane_is_off_unless_asked_and_never_on_the_traffic_port() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    // The traffic port proxies every path, /metrics and /api too: they reach the backend.
    for path in ["/metrics", "/api/status"] {
        let (status, body) = lb.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(crate::harness::backend_of(&body), Some(1), "{path}: {body}");
    }
    assert_eq!(lb.count_logs("admin plane on"), 0);

    let unreachable = run_lb(&["reload", "--admin", "127.0.0.1:9"]).await;
    assert_eq!(unreachable.code, Some(1));
    assert!(
        unreachable
            .last_error_line()
            .starts_with("error: cannot reach lb's admin plane at 127.0.0.1:9"),
        "{}",
        unreachable.stderr
    );
}

#[tokio::test]
async fn off_loopback_the_admin_plane_needs_a_token() {
    let (_dir, file) =
        crate::harness::config_file("lb.json", r#"[{"id":1,"host":"127.0.0.1","port":8001}]"#);
    let refused = run_lb(&["check", "--config", &file, "--admin", "0.0.0.0:9000"]).await;
    assert_eq!(refused.code, Some(1));
    assert_eq!(
        refused.last_error_line(),
        "error: --admin: 0.0.0.0:9000 is not a loopback address: set admin_token in the config (every admin request must then carry it), or listen on 127.0.0.1"
    );
    let in_file =
        r#"{"admin": "[::]:9000", "backends": [{"id":1,"host":"127.0.0.1","port":8001}]}"#;
    let (_dir, file) = crate::harness::config_file("lb.json", in_file);
    let refused = run_lb(&["check", "--config", &file]).await;
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.last_error_line().starts_with("error: ")
            && refused
                .last_error_line()
                .contains("lb.json: admin: [::]:9000 is not a loopback address"),
        "{}",
        refused.stderr
    );
    let short =
        r#"{"admin_token": "short", "backends": [{"id":1,"host":"127.0.0.1","port":8001}]}"#;
    let (_dir, file) = crate::harness::config_file("lb.json", short);
    let refused = run_lb(&["check", "--config", &file]).await;
    assert!(
        refused
            .last_error_line()
            .contains("admin_token: must be at least 16 characters"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn with_a_token_every_admin_request_carries_it() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::from_file_with(
        "lb.json",
        &full_config(
            &[(1, &backend)],
            json!({"admin": "127.0.0.1:0", "admin_token": TOKEN}),
        ),
        &[],
    )
    .await;
    let admin = lb.admin().await;
    for path in ["/", "/metrics", "/api/status", "/nope"] {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, 401, "GET {path} without the token: {body}");
    }
    let (status, _) = admin.post("/api/reload").await;
    assert_eq!(status, 401);
    let wrong = lb.admin().await.with_token(&format!("{TOKEN}x"));
    assert_eq!(wrong.post("/api/reload").await.0, 401);

    let admin = admin.with_token(TOKEN);
    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 200, "{body}");
    // A browser's way: Basic, with the token as the password (any user name).
    let basic = client()
        .post(admin.url("/api/reload"))
        .basic_auth("me", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    // Any name for the host is fine with a token (it is what lets the plane serve off loopback).
    let named = client()
        .post(admin.url("/api/reload"))
        .bearer_auth(TOKEN)
        .header("host", "lb.internal:9000")
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    // `lb reload` takes the token from LB_ADMIN_TOKEN or the config file; here, the file.
    let addr = admin.addr.to_string();
    let reloaded = run_lb(&["reload", "--admin", &addr]).await;
    assert_eq!(
        reloaded.code,
        Some(1),
        "no config file here, no token: {}",
        reloaded.stdout
    );
    assert!(
        reloaded.last_error_line().contains("needs its token"),
        "{}",
        reloaded.stderr
    );

    // A reload may rotate the token (not move the address: that needs a restart).
    const NEXT: &str = "the-next-token-9876543210";
    let file = |token: &str, admin: &str| {
        full_config(
            &[(1, &backend)],
            json!({"admin": admin, "admin_token": token}),
        )
    };
    lb.rewrite_config(&file(TOKEN, "127.0.0.1:1"));
    let (status, body) = admin.post("/api/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("admin 127.0.0.1:"), "{body}");
    lb.rewrite_config(&file(NEXT, "127.0.0.1:0"));
    assert_eq!(admin.post("/api/reload").await.0, 200);
    assert_eq!(
        admin.post("/api/reload").await.0,
        401,
        "the old token no longer works"
    );
    let next = lb.admin().await.with_token(NEXT);
    assert_eq!(next.post("/api/reload").await.0, 200);
}

#[tokio::test]
async fn unknown_paths_wrong_methods_strange_hosts_and_other_origins_are_refused() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).admin().start().await;
    let admin = lb.admin().await;

    let (status, body) = admin.get("/nope").await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"error":"no such admin path: /nope"}"#)
    );
    let (status, _) = admin.post("/api/backends/1/explode").await;
    assert_eq!(status, 404);

    let wrong = client().get(admin.url("/api/reload")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "POST");
    let wrong = client().delete(admin.url("/metrics")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "GET");

    // DNS rebinding: a page whose own name resolves to 127.0.0.1 may not read the plane.
    let rebound = client()
        .get(admin.url("/api/status"))
        .header("host", "attacker.example:9000")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    for host in ["[::1]attacker.example", "localhost:attacker.example"] {
        let odd = client()
            .get(admin.url("/api/status"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(odd.status(), 403, "Host: {host}");
    }
    // A form posted by a page of another origin may not steer it.
    let forged = client()
        .post(admin.url("/api/reload"))
        .header("origin", "http://attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(lb.count_logs("reload asked on the admin plane"), 0);
    // The same post from the dashboard's own origin goes through.
    let own = client()
        .post(admin.url("/api/reload"))
        .header("origin", format!("http://{}", admin.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn check_with_admin_says_what_a_reload_would_change() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::from_file_with(
        "lb.json",
        &full_config(&[(1, &b1)], json!({})),
        &["--admin", "127.0.0.1:0"],
    )
    .await;
    let admin_addr = lb.admin().await.addr.to_string();
    let (_dir, file) =
        crate::harness::config_file("next.json", &full_config(&[(2, &b2)], json!({})));
    let checked = run_lb(&["check", "--config", &file, "--admin", &admin_addr]).await;
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked
            .stdout
            .contains("(generation 1): a reload would add [2], remove [1], change []"),
        "{}",
        checked.stdout
    );
}

#[tokio::test]
async fn the_command_line_says_when_what_answers_is_not_lb() {
    // An HTTP server that is not lb, and keeps the connection open after its answer whatever the request asked.
    let page = "<html>\n<p>nothing here</p>\n</html>\n";
    let answer = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
        page.len()
    );
    let other = ScriptedBackend::start(move |_| vec![Step::write(&answer)]).await;
    let addr = other.addr().to_string();
    let backend = TestBackend::start(1).await;
    let (_dir, file) =
        crate::harness::config_file("lb.json", &full_config(&[(1, &backend)], json!({})));
    for args in [
        vec!["status", "--admin", &addr],
        vec!["reload", "--admin", &addr],
        vec!["check", "--config", &file, "--admin", &addr],
    ] {
        let run = run_lb(&args).await;
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        let line = run.last_error_line();
        assert!(
            line.ends_with(&format!(
                "{addr} answered 404 Not Found, not as lb's admin plane does: is it lb's admin address?"
            )),
            "{args:?}: {line}"
        );
        assert!(
            !run.stderr.contains("<html>") && !line.contains("config stays"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn after_a_token_change_in_the_file_lb_reload_says_which_token_to_give() {
    let backend = TestBackend::start(1).await;
    let file = |token: &str| {
        full_config(
            &[(1, &backend)],
            json!({"admin": "127.0.0.1:0", "admin_token": token}),
        )
    };
    let lb = TestLb::from_file_with("lb.json", &file(TOKEN), &[]).await;
    let addr = lb.admin().await.addr.to_string();
    const NEXT: &str = "the-next-token-9876543210";
    lb.rewrite_config(&file(NEXT));
    let reload = ["reload", "--config", lb.config_path(), "--admin", &addr];

    // The file's token is the next one: the running lb still wants the old one.
    let refused = run_lb(&reload).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stdout);
    let line = refused.last_error_line();
    assert!(
        line.contains("lb.json's admin_token was refused") && line.contains("LB_ADMIN_TOKEN"),
        "{line}"
    );
    let rotated = run_lb_with_env(&reload, &[("LB_ADMIN_TOKEN", TOKEN)]).await;
    assert_eq!(rotated.code, Some(0), "{}", rotated.stderr);
    // From now on the file's token is the running one.
    let status = run_lb(&["status", "--config", lb.config_path(), "--admin", &addr]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
}

/// One client address cannot take every admin connection: its connections past its share are closed at once, and
/// another client (here 127.0.0.1, the attacker 127.0.0.2) is still served while the attacker holds its share.
#[tokio::test]
async fn one_client_cannot_hold_every_admin_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).admin().start().await;
    let admin = lb.admin().await;
    let connect_from_2 = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(admin.addr).await.unwrap()
    };
    // Heads started and never finished: each holds a connection until the head timeout.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = connect_from_2().await;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let mut one_more = connect_from_2().await;
    let _ = one_more.write_all(b"GET /metrics HTTP/1.1\r\n").await;
    let mut buf = [0u8; 64];
    // At once: well before the 10 s head timeout would close it anyway.
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), one_more.read(&mut buf))
        .await
        .expect("the connection past the share is closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Everyone else is served meanwhile.
    for _ in 0..20 {
        let (status, _) = admin.get("/api/status").await;
        assert_eq!(status, 200);
    }
    drop(held);
}
