//! The command line: bad flag values stop `lb` with status 2 and one line; `--help` and `--version` answer on stdout;
//! an address in use stops it with status 1; flags win over the config file.

use crate::harness::{config_file, run_lb, TestBackend, TestLb, PATIENCE};

fn backends_json(backend: &TestBackend) -> String {
    let addr = backend.addr();
    format!(
        r#"[{{"id": 1, "host": "{}", "port": {}}}]"#,
        addr.ip(),
        addr.port()
    )
}

#[tokio::test]
async fn a_bad_flag_value_is_one_line_and_status_2() {
    let backend = TestBackend::start(1).await;
    let (_dir, config) = config_file("servers.json", &backends_json(&backend));
    let cases = [
        ("--port", "abc"),
        ("--port", "70000"),
        ("--interval", "-1"),
        ("--interval", "soon"),
        ("--workers", "0"),
        ("--drain-timeout", "forever"),
    ];

    for (flag, value) in cases {
        let mut args = vec!["--host", "127.0.0.1", "--config", &config];
        if flag != "--port" {
            args.extend(["--port", "0"]);
        }
        args.extend([flag, value]);
        let run = run_lb(&args).await;

        assert_eq!(run.code, Some(2), "{flag} {value}: {}", run.stderr);
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{flag} {value}: not one line: {lines:#?}");
        assert!(
            lines[0].contains(flag) && lines[0].contains(value),
            "{flag} {value}: {}",
            lines[0]
        );
    }
}

#[tokio::test]
async fn an_unknown_flag_is_status_2() {
    let run = run_lb(&["--bogus"]).await;

    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--bogus"), "{}", run.stderr);
}

#[tokio::test]
async fn help_lists_the_flags() {
    let run = run_lb(&["--help"]).await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for flag in [
        "--host",
        "--port",
        "--interval",
        "--config",
        "--workers",
        "--drain-timeout",
        "--access-log",
        "--log-level",
        "--log-format",
    ] {
        assert!(
            run.stdout.contains(flag),
            "--help does not mention {flag}:\n{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn version_names_the_version() {
    let run = run_lb(&["--version"]).await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn an_address_in_use_is_status_1_before_listening() {
    let backend = TestBackend::start(1).await;
    let (_dir, config) = config_file("servers.json", &backends_json(&backend));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();

    let run = run_lb(&["--host", "127.0.0.1", "--port", &port, "--config", &config]).await;

    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let expected = format!("error: cannot listen on 127.0.0.1:{port}: ");
    assert!(
        run.last_error_line().starts_with(&expected),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("listening on"), "{}", run.stderr);
}

#[tokio::test]
async fn interval_on_the_command_line_wins_over_the_file() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .health("interval", "30s")
        .arg("--interval")
        .arg("100ms")
        .start()
        .await;

    b2.stop().await;

    // Three checks 30 s apart would take 90 s; 100 ms apart they take a fraction of the patience.
    lb.wait_log(
        &format!("backend 2 {} down: 3 checks failed", b2.addr()),
        PATIENCE,
    )
    .await;
}

#[tokio::test]
async fn access_log_writes_a_line_per_request() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--access-log")
        .start()
        .await;

    for n in 0..3 {
        let (status, _) = lb.get(&format!("/access-probe-{n}")).await;
        assert_eq!(status, 200);
    }

    for n in 0..3 {
        lb.wait_log(&format!("/access-probe-{n}"), PATIENCE).await;
    }
}

#[tokio::test]
async fn check_prints_the_plan_of_a_valid_config_and_exits_0() {
    let (_dir, path) = config_file(
        "lb.toml",
        "workers = 1\n[[backends]]\nid = 7\nhost = \"localhost\"\nport = 8107\n\
         [health_check]\ninterval = \"500ms\"\n[timeouts]\ntunnel_idle = \"90s\"\n",
    );
    let run = run_lb(&["check", "--config", &path, "--port", "9123"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let plan = &run.stdout;
    for line in [
        "lb.toml: valid",
        "listen: 127.0.0.1:9123 (1 worker,",
        "backends (1), round robin:",
        "  7  localhost:8107 (",
        "health: GET / every 500ms, timeout 500ms, down after 3 failures, up after 2 passes, pass: 200-399",
        "tunnel_idle 1m30s",
    ] {
        assert!(plan.contains(line), "no {line:?} in:\n{plan}");
    }
}

#[tokio::test]
async fn check_refuses_a_bad_config_with_the_startup_error_and_exits_1() {
    let (_dir, path) = config_file(
        "lb.json",
        r#"[{"id": 1, "host": "127.0.0.1", "port": 70000}]"#,
    );
    let run = run_lb(&["check", "--config", &path]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.last_error_line()
            .ends_with("lb.json:1:45: [0].port: port must be between 1 and 65535, got 70000"),
        "{}",
        run.stderr
    );
}
