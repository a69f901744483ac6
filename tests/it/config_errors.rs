//! A bad config stops `lb` before it listens: exit status 1 and a last line `error: <file>[:line:col]: <place>: ...`.
//! Every case runs the real binary.

use std::path::Path;

use crate::harness::{config_file, run_lb};

/// Runs `lb` on `path`, which it must refuse; answers the error line.
async fn refused(path: &str) -> String {
    let run = run_lb(&["--host", "127.0.0.1", "--port", "0", "--config", path]).await;
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("listening on"),
        "it listened:\n{}",
        run.stderr
    );
    let line = run.last_error_line();
    assert!(line.starts_with("error: "), "{line}");
    let name = Path::new(path).file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(name),
        "the error does not name the file: {line}"
    );
    line.to_owned()
}

/// Writes `contents` to a file called `name` and runs `lb` on it; answers the error line.
async fn refused_config(name: &str, contents: &str) -> String {
    let (_dir, path) = config_file(name, contents);
    refused(&path).await
}

/// The `line:col` right after `<name>:` in `error`.
fn line_col(error: &str, name: &str) -> (u32, u32) {
    let place = &error[error.find(&format!("{name}:")).expect("the file name") + name.len() + 1..];
    let mut numbers = place.splitn(3, ':').map(|n| n.parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(line)), Some(Ok(col))) => (line, col),
        _ => panic!("no line:col after {name}: {error}"),
    }
}

fn assert_mentions(error: &str, needles: &[&str]) {
    for needle in needles {
        assert!(error.contains(needle), "{needle:?} missing from: {error}");
    }
}

#[tokio::test]
async fn a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = refused(dir.path().join("missing.json").to_str().unwrap()).await;
    assert_mentions(&error, &["missing.json"]);
}

#[tokio::test]
async fn invalid_json_is_located_by_line_and_column() {
    let error = refused_config(
        "servers.json",
        "[\n  {\"id\": 1, \"host\": \"127.0.0.1\", \"port\": 8001},\n  {\"id\": 2, \"host\": \"127.0.0.1\" \"port\": 8002}\n]\n",
    )
    .await;
    let (line, col) = line_col(&error, "servers.json");
    assert_eq!(line, 3, "{error}");
    assert!(col > 1, "{error}");
}

#[tokio::test]
async fn invalid_toml_is_located_by_line_and_column() {
    let error = refused_config(
        "lb.toml",
        "[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = = 8001\n",
    )
    .await;
    let (line, col) = line_col(&error, "lb.toml");
    assert_eq!(line, 4, "{error}");
    assert!(col >= 1, "{error}");
}

#[tokio::test]
async fn an_unknown_key_in_a_backend() {
    let error = refused_config(
        "servers.json",
        r#"[{"id": 1, "host": "127.0.0.1", "port": 8001, "wieght": 5}]"#,
    )
    .await;
    assert_mentions(&error, &["[0].wieght", "unknown field", "`weight`"]);
}

#[tokio::test]
async fn an_unknown_key_in_a_section() {
    let error = refused_config(
        "lb.json",
        r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}], "health_check": {"intervl": "1s"}}"#,
    )
    .await;
    assert_mentions(&error, &["health_check", "intervl"]);
}

#[tokio::test]
async fn a_missing_field() {
    let error = refused_config("servers.json", r#"[{"id": 1, "host": "127.0.0.1"}]"#).await;
    assert_mentions(&error, &["[0]", "port"]);
}

#[tokio::test]
async fn a_duplicate_id() {
    let error = refused_config(
        "servers.json",
        "[\n  {\"id\": 1, \"host\": \"127.0.0.1\", \"port\": 8001},\n  {\"id\": 1, \"host\": \"127.0.0.1\", \"port\": 8002}\n]\n",
    )
    .await;
    assert_mentions(&error, &["[1].id", "duplicate id 1"]);
}

#[tokio::test]
async fn a_duplicate_id_in_toml() {
    let error = refused_config(
        "lb.toml",
        "[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8001\n\n\
         [[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8002\n",
    )
    .await;
    assert_mentions(&error, &["backends[1].id", "duplicate id 1"]);
}

#[tokio::test]
async fn a_duplicate_address() {
    let error = refused_config(
        "servers.json",
        "[\n  {\"id\": 1, \"host\": \"127.0.0.1\", \"port\": 8001},\n  {\"id\": 2, \"host\": \"127.0.0.1\", \"port\": 8001}\n]\n",
    )
    .await;
    assert_mentions(&error, &["[1]", "duplicate"]);
}

#[tokio::test]
async fn port_0_for_a_backend() {
    let error = refused_config(
        "servers.json",
        r#"[{"id": 1, "host": "127.0.0.1", "port": 0}]"#,
    )
    .await;
    assert_mentions(&error, &["[0].port"]);
}

#[tokio::test]
async fn port_70000_for_a_backend() {
    let error = refused_config(
        "servers.json",
        "[\n  {\"id\": 1, \"host\": \"127.0.0.1\", \"port\": 8001},\n  {\"id\": 2, \"host\": \"127.0.0.1\", \"port\": 70000}\n]\n",
    )
    .await;
    assert_mentions(&error, &["[1].port", "70000"]);
    assert_eq!(line_col(&error, "servers.json").0, 3, "{error}");
}

#[tokio::test]
async fn an_empty_backend_list() {
    let error = refused_config("servers.json", "[]").await;
    assert_mentions(&error, &["backend"]);
}

#[tokio::test]
async fn a_negative_interval() {
    let error = refused_config(
        "lb.json",
        r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}], "health_check": {"interval": -1}}"#,
    )
    .await;
    assert_mentions(&error, &["health_check.interval"]);
}

#[tokio::test]
async fn a_toml_body_in_a_json_file_says_why_it_was_read_as_json() {
    let error = refused_config(
        "lb.json",
        "[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8001\n",
    )
    .await;
    assert_mentions(
        &error,
        &[
            "lb.json:1:",
            "read as JSON because of the .json extension",
            "looks like TOML: rename it to lb.toml",
        ],
    );
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[tokio::test]
async fn a_yaml_body_in_a_json_file_says_lb_reads_json_or_toml() {
    let error = refused_config("servers.json", "- id: 1\n  host: 127.0.0.1\n  port: 8001\n").await;
    assert_mentions(
        &error,
        &[
            "servers.json:1:",
            "read as JSON because of the .json extension",
            "looks like YAML: lb reads JSON or TOML",
        ],
    );
}

#[tokio::test]
async fn a_json_body_in_a_toml_file_says_rename_it() {
    let error = refused_config(
        "lb.toml",
        r#"[{"id": 1, "host": "127.0.0.1", "port": 8001}]"#,
    )
    .await;
    assert_mentions(&error, &["read as TOML", "rename it to lb.json"]);
}

#[tokio::test]
async fn a_json_typo_gets_no_format_hint() {
    let error = refused_config(
        "servers.json",
        r#"[{"id": 1, "host": "127.0.0.1", "port": 8001,}]"#,
    )
    .await;
    assert!(!error.contains("read as"), "{error}");
}

#[tokio::test]
async fn a_toml_file_cut_off_after_a_key_says_what_is_missing() {
    // What a reload reads when it comes while an editor is still writing the file.
    let contents =
        "[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8001\n\n[[backends]]\nid = 2\nhost =";
    let error = refused_config("lb.toml", contents).await;
    assert_eq!(line_col(&error, "lb.toml"), (8, 7), "{error}");
    assert!(
        error.ends_with("lb.toml:8:7: unexpected end of file: a value is missing"),
        "{error}"
    );
}

/// A TOML file with a top-level backend, a pool `api` and `rest`.
fn with_a_pool(rest: &str) -> String {
    format!(
        "[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8001\n\n\
         [pools.api]\nbackends = [{{ id = 2, host = \"127.0.0.1\", port = 8002 }}]\n\n{rest}"
    )
}

#[tokio::test]
async fn a_route_to_an_unknown_pool() {
    let routes = "[[routes]]\nhost = \"api.example.com\"\npool = \"api\"\n\n\
                  [[routes]]\npath_prefix = \"/v2\"\npool = \"apii\"\n";
    let error = refused_config("lb.toml", &with_a_pool(routes)).await;
    assert!(
        error.ends_with(
            "lb.toml: routes[1].pool: unknown pool \"apii\" (known: \"api\", \"default\" (the top-level backends))"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_pool_with_no_backends() {
    let error = refused_config("lb.toml", &with_a_pool("[pools.web]\nbackends = []\n")).await;
    assert_eq!(line_col(&error, "lb.toml"), (10, 12), "{error}");
    assert_mentions(&error, &["pools.web.backends: pool web has no backends"]);
}

#[tokio::test]
async fn a_weight_out_of_range() {
    let error = refused_config(
        "lb.toml",
        "[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8001\nweight = 1001\n",
    )
    .await;
    assert_eq!(line_col(&error, "lb.toml"), (5, 10), "{error}");
    assert_mentions(
        &error,
        &["backends[0].weight: weight must be between 0 and 1000, got 1001"],
    );
}

#[tokio::test]
async fn a_backend_id_used_in_two_pools() {
    let pool = "[pools.web]\nbackends = [{ id = 2, host = \"127.0.0.1\", port = 8003 }]\n";
    let error = refused_config("lb.toml", &with_a_pool(pool)).await;
    assert_mentions(
        &error,
        &["pools.web.backends[0].id: duplicate id 2 (also pools.api.backends[0])"],
    );
}

#[tokio::test]
async fn a_hash_key_without_consistent_hash() {
    let error = refused_config(
        "lb.json",
        r#"{"balance": "least_request", "hash_key": "header:x-user", "backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}]}"#,
    )
    .await;
    assert_mentions(
        &error,
        &["lb.json: hash_key: applies only to balance = \"consistent_hash\""],
    );
}

#[tokio::test]
async fn a_route_in_tcp_mode() {
    let routes = "[[routes]]\npath_prefix = \"/api\"\npool = \"api\"\n";
    let error = refused_config(
        "lb.toml",
        &format!("mode = \"tcp\"\n{}", with_a_pool(routes)),
    )
    .await;
    assert_mentions(&error, &["routes: ", "no listener speaks HTTP"]);
}
