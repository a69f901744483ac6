//! The access log (stdout): each format as its readers parse it (`combined` with the usual regex of log tools,
//! `common` as the bare common log format, `json` with serde), and a line for every answer: `lb`'s own too (400,
//! 408, 504 naming the backend it tried), with the attempts a retried request took.

use regex::Regex;
use serde_json::Value;

use crate::harness::{RawConn, ScriptedBackend, Step, TestBackend, TestLb, PATIENCE};

/// The combined log format as log tools read it (Logstash's `COMBINEDAPACHELOG`, GoAccess's `COMBINED`): client,
/// identity, user, [time], "request", status, bytes, "referer", "user agent"; anything may follow.
const COMBINED: &str = r#"^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(\S+) (\S+) (HTTP/\d\.\d)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)""#;

/// The access log line (stdout) that contains `needle`.
async fn line_with(lb: &TestLb, needle: &str) -> String {
    lb.wait_log(needle, PATIENCE).await
}

/// The JSON access log line whose `key` is `value`, parsed.
async fn json_line(lb: &TestLb, key: &str, value: &str) -> Value {
    let needle = format!("\"{key}\":{value}");
    let line = line_with(lb, &needle).await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

async fn get_with_headers(lb: &TestLb, path: &str) -> String {
    let response = crate::harness::client()
        .get(lb.url(path))
        .header("referer", "http://shop.example/cart")
        .header("user-agent", "tester/1.0 \"quoted\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn combined_is_the_default_and_parses_as_combined() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--access-log")
        .start()
        .await;
    let body = get_with_headers(&lb, "/combined?x=1").await;

    let line = line_with(&lb, "/combined?x=1").await;
    let fields = Regex::new(COMBINED).unwrap().captures(&line);
    let fields = fields.unwrap_or_else(|| panic!("not the combined format: {line}"));
    let field = |i| fields.get(i).unwrap().as_str();
    assert_eq!((field(1), field(2), field(3)), ("127.0.0.1", "-", "-"));
    assert!(field(4).ends_with(" +0000"), "{line}");
    assert_eq!(
        (field(5), field(6), field(7)),
        ("GET", "/combined?x=1", "HTTP/1.1")
    );
    assert_eq!(field(8), "200");
    assert_eq!(field(9), body.len().to_string());
    assert_eq!(field(10), "http://shop.example/cart");
    assert_eq!(field(11), r"tester/1.0 \x22quoted\x22");
    // lb's own fields come after.
    let rest = &line[fields.get(0).unwrap().end()..];
    let own = Regex::new(r"^ backend=1 attempts=1 duration_ms=\d+\.\d{3} upstream_ms=\d+\.\d{3}$")
        .unwrap();
    assert!(own.is_match(rest), "{line}");
}

#[tokio::test]
async fn common_is_the_common_log_format_and_nothing_more() {
    let backend = TestBackend::start(1).await;
    // Naming a format turns the access log on.
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--access-log-format")
        .arg("common")
        .start()
        .await;
    let body = get_with_headers(&lb, "/common").await;

    let line = line_with(&lb, "/common").await;
    let common = Regex::new(
        r#"^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET /common HTTP/1\.1" 200 (\d+)$"#,
    )
    .unwrap();
    let fields = common.captures(&line).unwrap_or_else(|| panic!("{line}"));
    assert_eq!(fields[1], body.len().to_string());
}

#[tokio::test]
async fn json_lines_carry_every_field() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .arg("--access-log-format")
        .arg("json")
        .start()
        .await;
    let body = get_with_headers(&lb, "/json?a=%22b").await;

    let line = json_line(&lb, "target", "\"/json?a=%22b\"").await;
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], body.len());
    assert_eq!(line["backend"], 1);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["referer"], "http://shop.example/cart");
    assert_eq!(line["user_agent"], "tester/1.0 \"quoted\"");
    let (duration, upstream) = (
        line["duration_ms"].as_f64().unwrap(),
        line["upstream_ms"].as_f64().unwrap(),
    );
    assert!(upstream > 0.0 && upstream <= duration, "{line}");
    let time = line["time"].as_str().unwrap();
    let rfc3339 = Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    assert!(rfc3339.is_match(time), "{time}");
}

#[tokio::test]
async fn a_504_names_the_backend_it_waited_for() {
    let backend = TestBackend::start(7).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("backend_response", "300ms")
        .arg("--access-log-format")
        .arg("json")
        .start()
        .await;
    assert_eq!(lb.get("/slow?ms=3000").await.0, 504);

    let line = json_line(&lb, "status", "504").await;
    assert_eq!(line["target"], "/slow?ms=3000");
    assert_eq!(line["backend"], 7);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["upstream_ms"], Value::Null, "no response head came");
    assert!(
        line["bytes"].as_u64().unwrap() > 0,
        "lb's own answer has a body: {line}"
    );
}

#[tokio::test]
async fn refused_and_unfinished_heads_get_a_line() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("client_header", "300ms")
        .arg("--access-log-format")
        .arg("json")
        .start()
        .await;

    let mut bad = RawConn::connect(lb.addr()).await;
    bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .await;
    assert_eq!(bad.response().await.status, 400);
    let line = json_line(&lb, "status", "400").await;
    assert_eq!(
        (&line["method"], &line["backend"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(line["attempts"], 0);

    let mut slow = RawConn::connect(lb.addr()).await;
    slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(slow.response().await.status, 408);
    let line = json_line(&lb, "status", "408").await;
    let waited = line["duration_ms"].as_f64().unwrap();
    assert!(waited >= 250.0, "the head's wait is its duration: {line}");
}

#[tokio::test]
async fn a_request_resent_to_another_backend_took_two_attempts() {
    let resetting = ScriptedBackend::start(|_| vec![Step::Reset]).await;
    let good = TestBackend::start(2).await;
    let lb = TestLb::builder()
        .backend_at(1, resetting.addr())
        .backend(&good)
        .arg("--access-log")
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(lb.get("/retried").await.0, 200);
    }
    // Round robin sent one of the two (at least) to the resetting backend first.
    let line = line_with(&lb, "attempts=2").await;
    assert!(line.contains("\"GET /retried HTTP/1.1\" 200 "), "{line}");
    assert!(line.contains(" backend=2 "), "{line}");
    assert!(resetting.hits() >= 1);
}

#[tokio::test]
async fn an_answer_cut_by_a_trickling_upload_logs_the_bytes_it_sent() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("request_body", "1s")
        .arg("--access-log-format")
        .arg("json")
        .start()
        .await;
    // The backend answers at once, without reading the body; the client sends one byte of its body and reads
    // nothing, so the answer streams until the socket buffers are full, and the body too slow cuts both sides:
    // part of the answer went out, and the line says how much.
    let mut client = RawConn::connect(lb.addr()).await;
    client
        .send(
            b"POST /download?bytes=268435456 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx",
        )
        .await;
    let line = json_line(&lb, "status", "499").await;
    assert_eq!(line["target"], "/download?bytes=268435456");
    assert!(
        line["bytes"].as_u64().unwrap() > 0,
        "the body bytes sent before the cut: {line}"
    );
}

/// A stdout nobody reads (a stalled log shipper) fills its pipe after a few hundred lines; traffic must go on (lines
/// wait in lb's buffer, or are dropped past it), shutdown must stay prompt, and once the reader reads again every
/// line is there.
#[tokio::test]
async fn a_stdout_nobody_reads_does_not_stall_traffic() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let backend = TestBackend::start(1).await;
    let config = format!(
        r#"[{{"id": 1, "host": "127.0.0.1", "port": {}}}]"#,
        backend.addr().port()
    );
    let (_dir, file) = crate::harness::config_file("lb.json", &config);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "--port",
            "0",
            "--workers",
            "1",
            "--access-log",
            "--config",
            &file,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = tokio::time::timeout(PATIENCE, stderr.next_line())
            .await
            .expect("lb's startup line")
            .unwrap()
            .expect("lb's stderr");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // The pipe holds 64 KiB: a line is about 100 bytes, so 2,000 answers are several pipes full, none of it read.
    let client = crate::harness::client();
    let requests = 2_000;
    let answered = tokio::time::timeout(PATIENCE, async {
        for _ in 0..requests {
            let answer = client.get(format!("http://{addr}/")).send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.bytes().await.unwrap();
        }
    })
    .await;
    assert!(answered.is_ok(), "traffic stalled behind an unread stdout");

    // Shutdown does not hang on the stuck stdout either.
    let pid = child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    // The reader comes back: every line was kept (far below the buffer's bound), none lost at exit.
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    tokio::time::timeout(PATIENCE, stdout.read_to_string(&mut out))
        .await
        .expect("stdout ends when lb exits")
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(out.lines().count(), requests, "one line per answer");
}
