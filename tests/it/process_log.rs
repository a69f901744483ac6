//! The process log on stderr: `--log-format json` makes every line a JSON object (timestamp, level, message and the
//! event's fields), and `--log-level debug` starts with the effective config (what the file, the flags and the
//! defaults came to).

use serde_json::Value;

use crate::harness::{TestBackend, TestLb, PATIENCE};

#[tokio::test]
async fn json_log_lines_are_objects_with_time_level_and_message() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--log-format")
        .arg("json")
        .start()
        .await;

    let line = lb.wait_log("listening on", PATIENCE).await;

    let startup: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the startup line is not JSON ({e}): {line}"));
    let message = startup["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("listening on {}", lb.addr())),
        "{line}"
    );
    assert_eq!(startup["level"], "INFO", "{line}");
    assert!(startup["timestamp"].is_string(), "{line}");
    for line in lb.logs() {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "not a JSON object: {line}"
        );
    }
}

#[tokio::test]
async fn debug_logs_the_effective_config_at_startup() {
    let (b1, b2) = (TestBackend::start(1).await, TestBackend::start(2).await);
    let lb = TestLb::builder()
        .backends(&[&b1, &b2])
        .arg("--log-level")
        .arg("debug")
        .arg("--drain-timeout")
        .arg("7s")
        .start()
        .await;

    let backends = lb.wait_log("config: backends (2)", PATIENCE).await;
    for backend in [&b1, &b2] {
        let listed = format!("{} {}", backend.id, backend.addr());
        assert!(backends.contains(&listed), "no {listed:?} in: {backends}");
    }
    let health = lb.wait_log("config: health:", PATIENCE).await;
    assert!(health.contains("every 100ms"), "{health}");
    let timeouts = lb.wait_log("config: timeouts:", PATIENCE).await;
    assert!(
        timeouts.contains("drain 7s"),
        "the flag is not applied: {timeouts}"
    );
}

#[tokio::test]
async fn info_does_not_log_the_config() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;

    lb.wait_log("listening on", PATIENCE).await;

    assert_eq!(lb.count_logs("config:"), 0, "{:#?}", lb.logs());
}
