//! The config's tests: loading each form with every value, the merge with the flags, and a table of bad files with
//! the one error line each must give.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Writes `text` as `name` in a fresh temp directory, loads it, removes it, and returns the error line with the
/// directory left out, so that tests can compare whole lines.
fn load_text(name: &str, text: &str, overrides: &Overrides) -> Result<Config, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lb-config-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let result = load(&path, overrides);
    std::fs::remove_dir_all(&dir).unwrap();
    let prefix = format!("{}/", dir.display());
    result.map_err(|e| e.to_string().replacen(&prefix, "", 1))
}

const SPEC: &str = r#"[
  {"id": 1, "host": "127.0.0.1", "port": 8001},
  {"id": 2, "host": "127.0.0.1", "port": 8002},
  {"id": 3, "host": "127.0.0.1", "port": 8003}
]
"#;

const FULL_TOML: &str = r#"
host = "0.0.0.0"
port = 9000
workers = 2
access_log = true

[[backends]]
id = 7
host = "localhost"
port = 8001

[[backends]]
id = 8
host = "127.0.0.2"
port = 8002

[health_check]
path = "/health"
interval = "1.5s"
timeout = 3
rise = 1
fall = 4
statuses = ["200-299", 404]

[timeouts]
connect = "250ms"
client_header = 1
backend_response = "2m"
idle = 0.5
drain = 0
"#;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn spec_array_form_loads_with_defaults() {
    let c = load_text("servers.json", SPEC, &Overrides::default()).unwrap();
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 8000));
    assert_eq!(c.workers, default_workers());
    assert!(c.workers >= 1);
    assert!(!c.access_log);
    let ids: Vec<u64> = c.clusters[0].backends.iter().map(|b| b.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(c.clusters[0].backends[1].host, "127.0.0.1");
    assert_eq!(c.clusters[0].backends[1].port, 8002);
    assert_eq!(
        c.clusters[0].backends[1].addr,
        "127.0.0.1:8002".parse().unwrap()
    );
    let h = &c.health;
    assert_eq!(
        (h.path.as_str(), h.interval, h.timeout),
        ("/", secs(5.0), secs(2.0))
    );
    assert_eq!((h.rise, h.fall), (2, 3));
    assert_eq!(h.statuses, vec![200..=399]);
    assert!(h.passes(200) && h.passes(399) && !h.passes(404) && !h.passes(199));
    let t = &c.timeouts;
    assert_eq!((t.connect, t.client_header), (secs(3.0), secs(10.0)));
    assert_eq!(
        (t.backend_response, t.idle, t.drain),
        (secs(60.0), secs(60.0), secs(10.0))
    );
}

#[test]
fn full_toml_form_loads_every_value() {
    let c = load_text("lb.toml", FULL_TOML, &Overrides::default()).unwrap();
    assert_eq!(
        (c.host.as_str(), c.port, c.workers, c.access_log),
        ("0.0.0.0", 9000, 2, true)
    );
    assert_eq!(c.clusters[0].backends.len(), 2);
    assert_eq!(
        (
            c.clusters[0].backends[0].id,
            c.clusters[0].backends[0].host.as_str()
        ),
        (7, "localhost")
    );
    // A host name is resolved by the control plane, not as the file is read.
    assert_eq!(c.clusters[0].backends[0].addr, super::UNRESOLVED);
    assert_eq!(c.clusters[0].backends[0].port, 8001);
    assert_eq!(
        c.clusters[0].backends[1].addr,
        "127.0.0.2:8002".parse().unwrap()
    );
    let h = &c.health;
    assert_eq!(h.path, "/health");
    // A file timeout longer than the interval is allowed.
    assert_eq!(
        (h.interval, h.timeout, h.rise, h.fall),
        (secs(1.5), secs(3.0), 1, 4)
    );
    assert_eq!(h.statuses, vec![200..=299, 404..=404]);
    let t = &c.timeouts;
    assert_eq!((t.connect, t.client_header), (secs(0.25), secs(1.0)));
    assert_eq!(
        (t.backend_response, t.idle, t.drain),
        (secs(120.0), secs(0.5), Duration::ZERO)
    );
}

#[test]
fn full_json_form_loads() {
    let text = r#"{"port": 0, "backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}],
        "health_check": {"interval": 1}, "timeouts": {"drain": "1m"}}"#;
    let c = load_text("lb.json", text, &Overrides::default()).unwrap();
    assert_eq!(c.port, 0);
    assert_eq!(
        (c.health.interval, c.health.timeout),
        (secs(1.0), secs(1.0))
    );
    assert_eq!(c.timeouts.drain, secs(60.0));
}

#[test]
fn overrides_win_over_the_file() {
    let o = Overrides {
        host: Some("localhost".to_string()),
        port: Some(0),
        interval: Some(secs(0.5)),
        workers: Some(3),
        drain: Some(secs(1.0)),
        access_log: false,
        access_log_format: None,
        admin: None,
        tls_cert: None,
    };
    let c = load_text("lb.toml", FULL_TOML, &o).unwrap();
    assert_eq!((c.host.as_str(), c.port, c.workers), ("localhost", 0, 3));
    assert!(c.access_log, "the file's access_log = true still counts");
    assert_eq!(
        (c.health.interval, c.health.timeout),
        (secs(0.5), secs(3.0))
    );
    assert_eq!(c.timeouts.drain, secs(1.0));
}

#[test]
fn default_timeout_follows_the_overridden_interval() {
    let o = Overrides {
        interval: Some(secs(0.5)),
        access_log: true,
        ..Overrides::default()
    };
    let c = load_text("servers.json", SPEC, &o).unwrap();
    assert_eq!(
        (c.health.interval, c.health.timeout),
        (secs(0.5), secs(0.5))
    );
    assert!(c.access_log);
    let o = Overrides {
        interval: Some(secs(10.0)),
        ..Overrides::default()
    };
    let c = load_text("servers.json", SPEC, &o).unwrap();
    assert_eq!(
        (c.health.interval, c.health.timeout),
        (secs(10.0), secs(2.0))
    );
}

#[test]
fn an_access_log_format_turns_the_log_on_unless_the_file_says_no() {
    let with = |file: &str, overrides: Overrides| {
        let text = format!("{file}\n[[backends]]\nid = 1\nhost = \"127.0.0.1\"\nport = 8001\n");
        let c = load_text("lb.toml", &text, &overrides).unwrap();
        (c.access_log, c.access_log_format)
    };
    let json = Some(AccessLogFormat::Json);
    let flag = |format| Overrides {
        access_log_format: format,
        ..Overrides::default()
    };
    assert_eq!(with("", flag(None)), (false, AccessLogFormat::Combined));
    assert_eq!(with("", flag(json)), (true, AccessLogFormat::Json));
    assert_eq!(
        with("access_log_format = \"common\"", flag(None)),
        (true, AccessLogFormat::Common)
    );
    assert_eq!(
        with(
            "access_log = false\naccess_log_format = \"common\"",
            flag(None)
        ),
        (false, AccessLogFormat::Common)
    );
    assert_eq!(
        with(
            "access_log = false\naccess_log_format = \"common\"",
            flag(json)
        ),
        (true, AccessLogFormat::Json),
        "a flag wins over the file"
    );
    let e = load_text(
        "lb.toml",
        "access_log_format = \"xml\"\nbackends = []\n",
        &flag(None),
    )
    .unwrap_err();
    assert!(e.to_string().contains("access_log_format: unknown variant `xml`, expected one of `common`, `combined`, `json`"), "{e}");
}

#[test]
fn bad_overrides_are_errors() {
    let bad = |o: Overrides| load_text("servers.json", SPEC, &o).unwrap_err();
    let e = bad(Overrides {
        workers: Some(0),
        ..Overrides::default()
    });
    assert_eq!(e, "--workers: must be at least 1, got 0");
    let e = bad(Overrides {
        interval: Some(Duration::ZERO),
        ..Overrides::default()
    });
    assert_eq!(e, "--interval: must be greater than 0");
    let e = bad(Overrides {
        host: Some(String::new()),
        ..Overrides::default()
    });
    assert_eq!(e, "--host: must not be empty, got \"\"");
}

#[test]
fn missing_file_names_the_file_and_the_os_error() {
    let path = std::env::temp_dir().join("lb-config-test-no-such-dir/servers.json");
    let e = load(&path, &Overrides::default()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn from_text_is_load_without_the_file() {
    let c = from_text("lb.toml", FULL_TOML, true, &Overrides::default()).unwrap();
    assert_eq!((c.port, c.clusters[0].backends.len()), (9000, 2));
    let e = from_text("x.json", "[]", false, &Overrides::default()).unwrap_err();
    assert_eq!(e.to_string(), "x.json:1:2: no backends");
}

#[test]
fn host_names_are_not_resolved_as_the_file_is_read() {
    let text = r#"[{"id": 1, "host": "localhost", "port": 1}, {"id": 2, "host": "[::1]", "port": 1},
        {"id": 3, "host": "nosuch.invalid", "port": 1, "resolve": "all"}]"#;
    let c = from_text("a.json", text, false, &Overrides::default()).unwrap();
    let backends = &c.clusters[0].backends;
    assert_eq!(backends[0].addr, super::UNRESOLVED);
    assert_eq!(backends[1].addr, "[::1]:1".parse().unwrap());
    assert_eq!(backends[1].ip(), Some("::1".parse().unwrap()));
    assert_eq!(
        (backends[2].ip(), backends[2].resolve),
        (None, super::Resolve::All)
    );
    assert_eq!(c.resolve_interval, std::time::Duration::from_secs(30));
    assert_eq!(c.resolver, None);

    let text = "resolver = '127.0.0.1:5353'\nresolve_interval = '5s'\n[[backends]]\nid = 1\nhost = 'api.test'\nport = 1\n";
    let c = from_text("lb.toml", text, true, &Overrides::default()).unwrap();
    assert_eq!(c.resolver, Some("127.0.0.1:5353".parse().unwrap()));
    assert_eq!(c.resolve_interval, std::time::Duration::from_secs(5));
    let c = from_text(
        "lb.toml",
        &text.replace(":5353", ""),
        true,
        &Overrides::default(),
    );
    assert_eq!(c.unwrap().resolver, Some("127.0.0.1:53".parse().unwrap()));
}

#[test]
fn control_characters_in_keys_are_escaped() {
    // Found by the config_json fuzz target: a key with a newline made the error two lines.
    let text = "{\"port\": 0, \"back\\n\\u001bds\": 1}";
    let e = from_text("lb.json", text, false, &Overrides::default()).unwrap_err();
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    assert!(!e.to_string().chars().any(char::is_control), "{e}");
    let want = "lb.json:1:28: back\\n\\u{1b}ds: unknown field `back\\n\\u{1b}ds`, expected one of";
    assert!(e.to_string().starts_with(want), "{e}");
}

#[test]
fn empty_files_are_errors() {
    let want = "servers.json: file is empty (expected a list of backends)";
    assert_eq!(
        load_text("servers.json", "", &Overrides::default()).unwrap_err(),
        want
    );
    assert_eq!(
        load_text("servers.json", " \n\t\n", &Overrides::default()).unwrap_err(),
        want
    );
    let want = "lb.toml: file is empty (expected a list of backends)";
    assert_eq!(
        load_text("lb.toml", "\n", &Overrides::default()).unwrap_err(),
        want
    );
}

/// Bad files, each with its whole error line.
mod error_lines {
    use super::*;

    const B: &str = r#"[{"id": 1, "host": "127.0.0.1", "port": 8001}]"#;

    /// `(file name, contents, the whole error line)`. In contents, `\n` stands for a newline and `{B}` for a valid
    /// backend list. An expected line ending in `...` is compared up to there (the rest comes from the OS resolver).
    #[rustfmt::skip]
    const CASES: &[(&str, &str, &str)] = &[
        // The spec's array form.
        ("servers.json", r#"[\n  {"id": 1, "host": "127.0.0.1", "port": 8001},\n  {"id": 2, "host": "127.0.0.1", "port": 70000}\n]"#, "servers.json:3:46: [1].port: port must be between 1 and 65535, got 70000"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 0}]"#, "servers.json:1:41: [0].port: port must be between 1 and 65535, got 0"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": -80}]"#, "servers.json:1:43: [0].port: port must be between 1 and 65535, got -80"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": "80"}]"#, r#"servers.json:1:44: [0].port: invalid type: string "80", expected an integer from 1 to 65535"#),
        ("servers.json", r#"[{"host": "127.0.0.1", "port": 80}]"#, "servers.json:1:34: [0]: missing field `id`"),
        ("servers.json", r#"[{"id": 1, "port": 80}]"#, "servers.json:1:22: [0]: missing field `host`"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1"}]"#, "servers.json:1:31: [0]: missing field `port`"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 80, "wieght": 2}]"#, "servers.json:1:52: [0].wieght: unknown field `wieght`, expected one of `id`, `host`, `port`, `protocol`, `tls`, `ca`, `sni`, `client_cert`, `client_key`, `send_proxy`, `weight`, `max_connections`, `resolve`"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 80, "port": 81}]"#, "servers.json:1:50: [0]: duplicate field `port`"),
        ("servers.json", r#"[{"id": "1", "host": "127.0.0.1", "port": 80}]"#, r#"servers.json:1:11: [0].id: invalid type: string "1", expected a backend id (a non-negative integer)"#),
        ("servers.json", r#"[{"id": -1, "host": "127.0.0.1", "port": 80}]"#, "servers.json:1:10: [0].id: id must not be negative, got -1"),
        ("servers.json", r#"[\n  {"id": 1, "host": "127.0.0.1", "port": 8001},\n  {"id": 1, "host": "127.0.0.1", "port": 8002}\n]"#, "servers.json:3:10: [1].id: duplicate id 1 (also [0])"),
        ("servers.json", r#"[\n  {"id": 1, "host": "127.0.0.1", "port": 8001},\n  {"id": 2, "host": "127.0.0.1", "port": 8001}\n]"#, "servers.json:3:46: [1]: duplicate backend 127.0.0.1:8001 (also [0])"),
        ("servers.json", r#"[\n  {"id": 1, "host": "[::1]", "port": 8001},\n  {"id": 2, "host": "0:0:0:0:0:0:0:1", "port": 8001}\n]"#, "servers.json:3:52: [1]: duplicate backend [0:0:0:0:0:0:0:1]:8001: same address [::1]:8001 as [0] ([::1]:8001)"),
        ("servers.json", r#"[{"id": 1, "host": "", "port": 80}]"#, "servers.json:1:21: [0].host: must not be empty"),
        ("servers.json", r#"[{"id": 1, "host": "api:8080", "port": 80}]"#, r#"servers.json:1:29: [0].host: "api:8080" is not a host name or IP address (the port goes in `port`)"#),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 80, "resolve": "some"}]"#, "servers.json:1:61: [0].resolve: unknown variant `some`, expected `first` or `all`"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 80}, 5]"#, "servers.json:1:46: [1]: invalid type: integer `5`, expected a backend with id, host and port"),
        ("servers.json", r#"[]"#, "servers.json:1:2: no backends"),
        ("servers.json", r#"[\n  {"id": 1, "host": "127.0.0.1", "port": 8001},\n]"#, "servers.json:3:1: trailing comma"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 80}] x"#, "servers.json:1:46: trailing characters"),
        ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 80}"#, "servers.json:1:43: EOF while parsing a list"),
        ("servers.json", r#""backends""#, r#"servers.json:1:10: invalid type: string "backends", expected a list of backends, or a config object with `backends`"#),
        // The full form in JSON.
        ("lb.json", r#"{"port": 8000}"#, "lb.json: missing field `backends`"),
        ("lb.json", r#"{"backends": []}"#, "lb.json:1:15: backends: no backends"),
        ("lb.json", r#"{"backends": {B}, "listen": "x"}"#, "lb.json:1:69: listen: unknown field `listen`, expected one of `host`, `port`, `workers`, `access_log`, `access_log_format`, `max_connections`, `backends`, `resolver`, `health_check`, `balance`, `hash_key`, `hash_bound`, `passive_health`, `slow_start`, `retries`, `resolve_interval`, `pools`, `routes`, `timeouts`, `pool`, `admin`, `admin_token`, `mode`, `tls`, `listeners`, `accept_proxy`"),
        ("lb.json", r#"{"backends": {B}, "host": ""}"#, "lb.json:1:72: host: must not be empty"),
        ("lb.json", r#"{"backends": {B}, "port": 65536}"#, "lb.json:1:74: port: port must be between 0 and 65535, got 65536"),
        ("lb.json", r#"{"backends": {B}, "workers": 0}"#, "lb.json:1:73: workers: must be at least 1, got 0"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"interval": -1}}"#, "lb.json:1:92: health_check.interval: must not be negative"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"interval": 0}}"#, "lb.json:1:91: health_check.interval: must be greater than 0"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"interval": "0ms"}}"#, "lb.json:1:95: health_check.interval: must be greater than 0"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"interval": "-2s"}}"#, "lb.json:1:95: health_check.interval: must not be negative"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"timeout": "soon"}}"#, r#"lb.json:1:95: health_check.timeout: invalid duration "soon" (use e.g. 10, 0.5, 500ms, 2s, 1m)"#),
        ("lb.json", r#"{"backends": {B}, "health_check": {"rise": 0}}"#, "lb.json:1:87: health_check.rise: must be at least 1, got 0"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"fall": 0}}"#, "lb.json:1:87: health_check.fall: must be at least 1, got 0"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"statuses": ["500-200"]}}"#, r#"lb.json:1:100: health_check.statuses[0]: bad status range "500-200": 500 is above 200"#),
        ("lb.json", r#"{"backends": {B}, "health_check": {"statuses": [99]}}"#, "lb.json:1:93: health_check.statuses[0]: status must be between 100 and 599, got 99"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"statuses": ["200-600"]}}"#, r#"lb.json:1:100: health_check.statuses[0]: bad status range "200-600": status must be between 100 and 599, got 600"#),
        ("lb.json", r#"{"backends": {B}, "health_check": {"statuses": ["ok"]}}"#, r#"lb.json:1:95: health_check.statuses[0]: bad status range "ok": expected a status such as 404 or a range such as "200-399""#),
        ("lb.json", r#"{"backends": {B}, "health_check": {"statuses": []}}"#, "lb.json:1:92: health_check.statuses: no statuses: no check could ever pass"),
        ("lb.json", r#"{"backends": {B}, "health_check": {"path": "health"}}"#, r#"lb.json:1:95: health_check.path: must start with '/', got "health""#),
        ("lb.json", r#"{"backends": {B}, "health_check": {"path": "/a b"}}"#, r#"lb.json:1:93: health_check.path: must not contain spaces or control characters, got "/a b""#),
        ("lb.json", r#"{"backends": {B}, "health_check": {"retries": 1}}"#, "lb.json:1:87: health_check.retries: unknown field `retries`, expected one of `path`, `interval`, `timeout`, `rise`, `fall`, `statuses`, `type`"),
        ("lb.json", r#"{"backends": {B}, "timeouts": {"connect": 0}}"#, "lb.json:1:86: timeouts.connect: must be greater than 0"),
        ("lb.json", r#"{"backends": {B}, "timeouts": {"drain": -1}}"#, "lb.json:1:85: timeouts.drain: must not be negative"),
        ("lb.json", r#"{"backends": {B}, "timeouts": {"idle": "5x"}}"#, r#"lb.json:1:86: timeouts.idle: unknown unit "x" in "5x" (use ms, s, m or h)"#),
        ("lb.json", r#"{"backends": {B}, "timeouts": {"idle": "200h"}}"#, "lb.json:1:88: timeouts.idle: too large: at most 168h (7 days)"),
        ("lb.json", r#"{"backends": {B}, "timeouts": {"request_body": 1e9}}"#, "lb.json:1:93: timeouts.request_body: too large: at most 168h (7 days)"),
        ("lb.json", r#"{"max_connections": 0, "backends": {B}}"#, "lb.json:1:21: max_connections: must be at least 1, got 0"),
        ("lb.json", r#"{"backends": {B}, "pool": {"idle_timeout": 0}}"#, "lb.json:1:87: pool.idle_timeout: must be greater than 0"),
        ("lb.json", r#"{"backends": {B}, "pool": {"max_idle": 5}}"#, "lb.json:1:80: pool.max_idle: unknown field `max_idle`, expected `max_idle_per_backend` or `idle_timeout`"),
        // TOML.
        ("lb.toml", r#"port = 8000\n\n[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 8001\n\n[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 8002\n"#, "lb.toml:9:6: backends[1].id: duplicate id 1 (also backends[0])"),
        ("lb.toml", r#"[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 70000\n"#, "lb.toml:4:8: backends[0].port: port must be between 1 and 65535, got 70000"),
        ("lb.toml", r#"[[backends]]\nid = 1\nhost = '127.0.0.1'\n"#, "lb.toml:1:1: backends[0]: missing field `port`"),
        ("lb.toml", r#"[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 1\nweight = 2\nmax_conns = 2\n"#, "lb.toml:6:1: backends[0].max_conns: unknown field `max_conns`, expected one of `id`, `host`, `port`, `protocol`, `tls`, `ca`, `sni`, `client_cert`, `client_key`, `send_proxy`, `weight`, `max_connections`, `resolve`"),
        ("lb.toml", r#"port = 'x'\n[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 1\n"#, r#"lb.toml:1:8: port: invalid type: string "x", expected an integer from 0 to 65535"#),
        ("lb.toml", r#"port = 8000\n[[backends]\n"#, "lb.toml:2:11: invalid table header; expected `.`, `]]`"),
        ("lb.toml", r#"port = 8000\n"#, "lb.toml: missing field `backends`"),
        ("lb.toml", r#"backends = []\n"#, "lb.toml:1:12: backends: no backends"),
        ("lb.toml", r#"backends = [{id = 1, host = '127.0.0.1', port = 1}]\n[health_check]\ninterval = '-1s'\n"#, "lb.toml:3:12: health_check.interval: must not be negative"),
        ("lb.toml", r#"backends = [{id = 1, host = '127.0.0.1', port = 1}]\n[health_check]\nstatuses = ['200-399', 600]\n"#, "lb.toml:3:24: health_check.statuses[1]: status must be between 100 and 599, got 600"),
        ("lb.toml", r#"resolver = 'dns.local'\nbackends = [{id = 1, host = '127.0.0.1', port = 1}]\n"#, r#"lb.toml:1:12: resolver: expected the DNS server's IP:PORT (e.g. 127.0.0.1:53, [::1]:5353) or IP, got "dns.local""#),
        ("lb.toml", r#"backends = [{id = 1, host = '127.0.0.1', port = 1}]\n[pool]\nmax_idle_per_backend = -1\n"#, "lb.toml:3:24: pool.max_idle_per_backend: must be at least 0, got -1"),
        // Upstream TLS: the files are read where they are named.
        ("lb.toml", r#"[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 1\ntls = true\nca = '/nonexistent/ca.pem'\n"#, "lb.toml:6:6: backends[0].ca: /nonexistent/ca.pem: cannot read: No such file or directory (os error 2)"),
        ("lb.json", r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 1, "tls": true, "client_cert": "/nonexistent/c.pem", "client_key": "/nonexistent/c.key"}]}"#, "lb.json:1:104: backends[0].client_cert: /nonexistent/c.pem: cannot read: No such file or directory (os error 2)"),
        ("lb.toml", r#"[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 1\nprotocol = 'h2c'\ntls = true\n"#, r#"lb.toml:1:1: backends[0]: protocol "h2c" is HTTP/2 in clear text and cannot have tls = true ("h2" is HTTP/2 over TLS)"#),
    ];

    #[test]
    fn each_bad_file_gives_one_precise_line() {
        let mut failures = Vec::new();
        for &(name, text, want) in CASES {
            let text = text.replace("\\n", "\n").replace("{B}", B);
            let got = match load_text(name, &text, &Overrides::default()) {
                Ok(_) => "loaded".to_string(),
                Err(e) => e,
            };
            let ok = match want.strip_suffix("...") {
                Some(prefix) => got.starts_with(prefix),
                None => got == want,
            };
            if !ok {
                failures.push(format!("{name} {text:?}\n  want: {want}\n  got:  {got}"));
            }
            assert_eq!(got.lines().count(), 1, "{got}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }
}

#[test]
fn a_missing_relative_file_names_the_directory_it_was_looked_for_in() {
    let path = Path::new("lb-config-test-no-such-dir/servers.json");
    let e = load(path, &Overrides::default()).unwrap_err().to_string();
    let dir = std::env::current_dir().unwrap();
    assert_eq!(
        e,
        format!(
            "lb-config-test-no-such-dir/servers.json: cannot read: No such file or directory (os error 2) (looked in {}; give the file with --config FILE)",
            dir.display()
        )
    );
}

#[test]
fn an_ipv6_backend_is_written_in_brackets() {
    let backend = BackendConfig {
        id: 1,
        host: "::1".into(),
        port: 8001,
        addr: "[::1]:8001".parse().unwrap(),
        options: Default::default(),
        weight: 1,
        max_connections: None,
        resolve: Default::default(),
    };
    assert_eq!(backend.authority(), "[::1]:8001");
}

#[test]
fn listener_combinations_not_served_yet_are_refused_with_one_line() {
    let backends = "[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 8001\n";
    let tls = "[tls]\ncert = 'c.pem'\nkey = 'k.pem'\n";
    let cases = [
        (
            format!("mode = 'tcp'\n{backends}{tls}"),
            "lb.toml: mode: TLS in TCP mode is not supported yet",
        ),
        (
            format!("{backends}[[listeners]]\naddress = '127.0.0.1:0'\nredirect_https = true\naccept_proxy = ['127.0.0.1']\n"),
            "lb.toml: listeners[0]: accept_proxy is not supported on a redirect_https listener yet",
        ),
        (
            format!("{backends}[[listeners]]\naddress = '127.0.0.1:0'\ntls = true\n"),
            "lb.toml: listeners[0]: tls = true needs certificates",
        ),
    ];
    for (text, want) in cases {
        let error = load_text("lb.toml", &text, &Overrides::default()).unwrap_err();
        assert!(
            error.contains(want),
            "{text}\n  want: {want}\n  got:  {error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

mod balancing;
