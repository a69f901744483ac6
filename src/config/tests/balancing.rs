//! The keys of issue 11: how pools balance, passive health, slow start, retries, per-backend weights and limits,
//! named pools and the routes to them; what they load to, what pools inherit, and the one error line of each bad
//! value.

use super::*;

const BACKEND: &str = "[[backends]]\nid = 1\nhost = '127.0.0.1'\nport = 8001\n";

/// Loads a TOML file that must be valid.
fn toml(text: &str) -> Config {
    load_text("lb.toml", text, &Overrides::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn without_the_new_keys_everything_is_as_before() {
    let c = toml(BACKEND);
    assert_eq!(c.clusters.len(), 1);
    let default = c.default_cluster();
    assert_eq!(default.name, "");
    assert_eq!(default.balance, BalanceConfig::default());
    assert_eq!(default.balance.algorithm, Algorithm::RoundRobin);
    assert_eq!(default.passive_health, None);
    assert_eq!(default.slow_start, None);
    assert_eq!(default.health, c.health);
    assert!(c.routes.is_empty());
    assert_eq!(c.retries, Retries::default());
    assert_eq!((c.retries.budget_percent, c.retries.max_attempts), (20, 3));
    assert_eq!(c.resolve_interval, secs(30.0));
    let b = &default.backends[0];
    assert_eq!(
        (b.weight, b.max_connections, b.resolve),
        (1, None, Resolve::First)
    );
}

#[test]
fn the_issues_example_loads_every_key() {
    let text = r#"
balance = "consistent_hash"
hash_key = "header:X-User"
hash_bound = 1.25
resolve_interval = "10s"

[[backends]]
id = 1
host = "127.0.0.1"
port = 8001
weight = 3
max_connections = 100
resolve = "all"

[[backends]]
id = 2
host = "127.0.0.1"
port = 8002
weight = 0

[passive_health]
consecutive_failures = 7
base_ejection = "10s"
max_ejected_percent = 100

[slow_start]
window = "1m"

[retries]
budget_percent = 0
max_attempts = 1
"#;
    let c = toml(text);
    let d = c.default_cluster();
    assert_eq!(
        d.balance,
        BalanceConfig {
            algorithm: Algorithm::ConsistentHash,
            hash_key: HashKey::Header("x-user".to_owned()),
            hash_bound: Some(1.25),
        }
    );
    let passive = d.passive_health.clone().unwrap();
    assert_eq!(
        (
            passive.consecutive_failures,
            passive.base_ejection,
            passive.max_ejected_percent
        ),
        (7, secs(10.0), 100)
    );
    assert_eq!(d.slow_start, Some(secs(60.0)));
    assert_eq!((c.retries.budget_percent, c.retries.max_attempts), (0, 1));
    assert_eq!(c.resolve_interval, secs(10.0));
    let (b1, b2) = (&d.backends[0], &d.backends[1]);
    assert_eq!(
        (b1.weight, b1.max_connections, b1.resolve),
        (3, Some(100), Resolve::All)
    );
    assert_eq!(
        (b2.weight, b2.max_connections, b2.resolve),
        (0, None, Resolve::First)
    );
}

#[test]
fn empty_tables_take_the_defaults() {
    let c = toml(&format!(
        "{BACKEND}[passive_health]\n[slow_start]\n[retries]\n"
    ));
    let d = c.default_cluster();
    assert_eq!(d.passive_health, Some(PassiveHealth::default()));
    assert_eq!(d.slow_start, Some(secs(30.0)));
    assert_eq!(c.retries, Retries::default());
}

#[test]
fn hash_keys_are_parsed_and_header_names_lowercased() {
    let cases = [
        ("client_ip", HashKey::ClientIp),
        ("path", HashKey::Path),
        (
            "header:X-Tenant_ID",
            HashKey::Header("x-tenant_id".to_owned()),
        ),
        ("cookie:SessionID", HashKey::Cookie("SessionID".to_owned())),
    ];
    for (written, key) in cases {
        let text = format!("balance = 'consistent_hash'\nhash_key = '{written}'\n{BACKEND}");
        assert_eq!(
            toml(&text).default_cluster().balance.hash_key,
            key,
            "{written}"
        );
    }
    let text = format!("balance = 'consistent_hash'\nhash_bound = 2\n{BACKEND}");
    let balance = toml(&text).default_cluster().balance.clone();
    assert_eq!(
        (&balance.hash_key, balance.hash_bound),
        (&HashKey::ClientIp, Some(2.0))
    );
}

#[test]
fn the_bare_array_takes_the_per_backend_keys() {
    let text = r#"[{"id": 1, "host": "127.0.0.1", "port": 8001, "weight": 5, "max_connections": 2, "resolve": "first"},
                   {"id": 2, "host": "127.0.0.1", "port": 8002}]"#;
    let c = load_text("servers.json", text, &Overrides::default()).unwrap();
    let weights: Vec<u32> = c.backends().map(|b| b.weight).collect();
    assert_eq!(weights, [5, 1]);
    assert_eq!(c.default_cluster().backends[0].max_connections, Some(2));
}

const POOLS: &str = r#"
balance = "least_request"
[health_check]
path = "/health"
interval = "1s"

[[backends]]
id = 1
host = "127.0.0.1"
port = 8001

[passive_health]
consecutive_failures = 3

[pools.zeta]
backends = [{ id = 5, host = "127.0.0.1", port = 8005 }]
balance = "consistent_hash"
hash_key = "path"
[pools.zeta.health_check]
interval = "10s"
type = "tcp"
[pools.zeta.slow_start]
window = "5s"

[pools.alpha]
backends = [{ id = 6, host = "127.0.0.1", port = 8001, weight = 2 }]
[pools.alpha.passive_health]
base_ejection = "1m"

[[routes]]
host = "API.example.com"
pool = "zeta"

[[routes]]
host = "*.example.com"
path_prefix = "/static/"
pool = "alpha"

[[routes]]
path_prefix = "/public"
pool = "default"
"#;

#[test]
fn pools_come_in_the_files_order_after_the_default_pool() {
    let c = toml(POOLS);
    let names: Vec<&str> = c.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["", "zeta", "alpha"]);
    let ids: Vec<u64> = c.backends().map(|b| b.id).collect();
    assert_eq!(ids, [1, 5, 6]);
    // The same address may serve two pools, as two backends.
    assert_eq!(
        c.clusters[0].backends[0].addr,
        c.clusters[2].backends[0].addr
    );
    assert_eq!(c.clusters[2].backends[0].weight, 2);
}

#[test]
fn a_pool_takes_what_it_does_not_write_from_the_top_level() {
    let c = toml(POOLS);
    let (top, zeta, alpha) = (&c.clusters[0], &c.clusters[1], &c.clusters[2]);
    assert_eq!(top.balance.algorithm, Algorithm::LeastRequest);
    assert_eq!(
        zeta.balance,
        BalanceConfig {
            algorithm: Algorithm::ConsistentHash,
            hash_key: HashKey::Path,
            hash_bound: None,
        }
    );
    assert_eq!(alpha.balance.algorithm, Algorithm::LeastRequest);
    // Health: the pool's keys, else the top level's; the timeout follows the pool's own interval.
    assert_eq!(
        (
            zeta.health.path.as_str(),
            zeta.health.interval,
            zeta.health.timeout
        ),
        ("/health", secs(10.0), secs(2.0))
    );
    assert_eq!(zeta.health.kind, HealthKind::Tcp);
    assert_eq!(alpha.health, top.health);
    assert_eq!(
        (top.health.interval, top.health.timeout),
        (secs(1.0), secs(1.0))
    );
    // Passive health and slow start: the pool's own table, else the top level's.
    let passive = |c: &ClusterConfig| c.passive_health.clone().unwrap();
    assert_eq!(passive(zeta), passive(top));
    assert_eq!(passive(top).consecutive_failures, 3);
    assert_eq!(
        (
            passive(alpha).consecutive_failures,
            passive(alpha).base_ejection
        ),
        (5, secs(60.0)),
        "a pool's own table does not merge key by key with the top level's"
    );
    assert_eq!(
        (top.slow_start, zeta.slow_start, alpha.slow_start),
        (None, Some(secs(5.0)), None)
    );
}

#[test]
fn a_pool_health_check_inherits_a_written_timeout_and_the_flags_interval() {
    let text = format!(
        "{BACKEND}[health_check]\ntimeout = '3s'\n[pools.a]\nbackends = [{{id = 2, host = '127.0.0.1', port = 8002}}]\n\
         [pools.b]\nbackends = [{{id = 3, host = '127.0.0.1', port = 8003}}]\n[pools.b.health_check]\ninterval = '20s'\n\
         [[routes]]\npath_prefix = '/a'\npool = 'a'\n"
    );
    let o = Overrides {
        interval: Some(secs(0.5)),
        ..Overrides::default()
    };
    let c = load_text("lb.toml", &text, &o).unwrap();
    let checks: Vec<(Duration, Duration)> = c
        .clusters
        .iter()
        .map(|c| (c.health.interval, c.health.timeout))
        .collect();
    assert_eq!(
        checks,
        [
            (secs(0.5), secs(3.0)),
            (secs(0.5), secs(3.0)),
            (secs(20.0), secs(3.0))
        ],
        "--interval is the top level's; a pool's own interval wins over it"
    );
}

#[test]
fn a_hashing_pool_inherits_the_top_levels_key_only_when_the_top_level_hashes() {
    let pool = "[pools.p]\nbackends = [{id = 2, host = '127.0.0.1', port = 8002}]\n";
    let text = format!(
        "balance = 'consistent_hash'\nhash_key = 'cookie:s'\nhash_bound = 1.5\n{BACKEND}{pool}"
    );
    assert_eq!(
        toml(&text).clusters[1].balance,
        toml(&text).clusters[0].balance
    );
    let text = format!("{BACKEND}{pool}balance = 'consistent_hash'\n");
    assert_eq!(
        toml(&text).clusters[1].balance,
        BalanceConfig {
            algorithm: Algorithm::ConsistentHash,
            ..BalanceConfig::default()
        }
    );
    let text = format!(
        "balance = 'consistent_hash'\nhash_key = 'path'\n{BACKEND}{pool}balance = 'random'\n"
    );
    assert_eq!(
        toml(&text).clusters[1].balance,
        BalanceConfig {
            algorithm: Algorithm::Random,
            ..BalanceConfig::default()
        },
        "no hash key kept for a pool that does not hash"
    );
}

#[test]
fn routes_name_their_pool_by_index_with_lowercase_hosts() {
    let c = toml(POOLS);
    let routes = [
        RouteConfig {
            host: Some(HostMatch::Exact("api.example.com".to_owned())),
            path_prefix: None,
            cluster: 1,
        },
        RouteConfig {
            host: Some(HostMatch::Suffix(".example.com".to_owned())),
            path_prefix: Some("/static/".to_owned()),
            cluster: 2,
        },
        RouteConfig {
            host: None,
            path_prefix: Some("/public".to_owned()),
            cluster: 0,
        },
    ];
    assert_eq!(c.routes, routes);
}

#[test]
fn pools_and_routes_without_top_level_backends() {
    let text = "[pools.api]\nbackends = [{id = 1, host = '127.0.0.1', port = 8001}]\n\
                [[routes]]\nhost = 'api.example.com'\npool = 'api'\n";
    let c = toml(text);
    assert!(c.default_cluster().backends.is_empty());
    assert_eq!(c.clusters[1].backends.len(), 1);
    let json = r#"{"pools": {"api": {"backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}], "balance": "peak_ewma"}},
                   "routes": [{"path_prefix": "/", "pool": "api"}], "retries": {"max_attempts": 2}}"#;
    let c = load_text("lb.json", json, &Overrides::default()).unwrap();
    assert_eq!(c.clusters[1].balance.algorithm, Algorithm::PeakEwma);
    assert_eq!(c.retries.max_attempts, 2);
}

/// `(file name, contents, the whole error line)`, as in `error_lines`: `\n` stands for a newline, `{B}` for a
/// top-level backend, `{P}` for a valid pool `api`.
#[rustfmt::skip]
const CASES: &[(&str, &str, &str)] = &[
    // Balancing keys, read with their position.
    ("lb.toml", r#"balance = 'fastest'\n{B}"#, "lb.toml:1:11: balance: unknown variant `fastest`, expected one of `round_robin`, `least_request`, `peak_ewma`, `random`, `consistent_hash`"),
    ("lb.toml", r#"balance = 'consistent_hash'\nhash_key = 'header:X User'\n{B}"#, "lb.toml:2:12: hash_key: \"X User\" is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"),
    ("lb.toml", r#"balance = 'consistent_hash'\nhash_key = 'cookie:a=b'\n{B}"#, "lb.toml:2:12: hash_key: \"a=b\" is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"),
    ("lb.toml", r#"balance = 'consistent_hash'\nhash_key = 'header:'\n{B}"#, "lb.toml:2:12: hash_key: header: needs a name after the colon, e.g. header:x-user"),
    ("lb.toml", r#"balance = 'consistent_hash'\nhash_key = 'query:x'\n{B}"#, "lb.toml:2:12: hash_key: expected client_ip, path, header:NAME or cookie:NAME, got \"query:x\""),
    ("lb.toml", r#"balance = 'consistent_hash'\nhash_bound = 1\n{B}"#, "lb.toml:2:14: hash_bound: must be a number greater than 1 (1.25: at most 1.25 × the average load), got 1"),
    ("lb.toml", r#"balance = 'consistent_hash'\nhash_bound = nan\n{B}"#, "lb.toml:2:14: hash_bound: must be a number greater than 1 (1.25: at most 1.25 × the average load), got NaN"),
    ("lb.toml", r#"{B}[passive_health]\nconsecutive_failures = 0\n"#, "lb.toml:6:24: passive_health.consecutive_failures: must be at least 1, got 0"),
    ("lb.toml", r#"{B}[passive_health]\nbase_ejection = 0\n"#, "lb.toml:6:17: passive_health.base_ejection: must be greater than 0"),
    ("lb.toml", r#"{B}[passive_health]\nmax_ejected_percent = 101\n"#, "lb.toml:6:23: passive_health.max_ejected_percent: must be at most 100, got 101"),
    ("lb.toml", r#"{B}[passive_health]\nfailures = 1\n"#, "lb.toml:6:1: passive_health.failures: unknown field `failures`, expected one of `consecutive_failures`, `base_ejection`, `max_ejected_percent`"),
    ("lb.toml", r#"{B}[slow_start]\nwindow = '0s'\n"#, "lb.toml:6:10: slow_start.window: must be greater than 0"),
    ("lb.toml", r#"{B}[retries]\nbudget_percent = 1001\n"#, "lb.toml:6:18: retries.budget_percent: must be at most 1000, got 1001"),
    ("lb.toml", r#"{B}[retries]\nmax_attempts = 0\n"#, "lb.toml:6:16: retries.max_attempts: must be at least 1, got 0"),
    ("lb.toml", r#"resolve_interval = 0\n{B}"#, "lb.toml:1:20: resolve_interval: must be greater than 0"),
    // Per backend.
    ("lb.toml", r#"{B}weight = 1001\n"#, "lb.toml:5:10: backends[0].weight: weight must be between 0 and 1000, got 1001"),
    ("lb.toml", r#"{B}weight = -1\n"#, "lb.toml:5:10: backends[0].weight: weight must be between 0 and 1000, got -1"),
    ("lb.toml", r#"{B}max_connections = 0\n"#, "lb.toml:5:19: backends[0].max_connections: must be at least 1, got 0"),
    ("lb.toml", r#"{B}resolve = 'some'\n"#, "lb.toml:5:11: backends[0].resolve: unknown variant `some`, expected `first` or `all`"),
    ("servers.json", r#"[{"id": 1, "host": "127.0.0.1", "port": 8001, "weight": 1.5}]"#, "servers.json:1:59: [0].weight: invalid type: floating point `1.5`, expected an integer from 0 to 1000"),
    ("lb.json", r#"{"pools": {"api": {"backends": [{"id": 2, "host": "127.0.0.1", "port": 8002, "weight": 5000}]}}}"#, "lb.json:1:91: pools.api.backends[0].weight: weight must be between 0 and 1000, got 5000"),
    // Keys that need another key.
    ("lb.toml", r#"hash_key = 'header:X-User'\n{B}"#, "lb.toml: hash_key: applies only to balance = \"consistent_hash\" (the balance here is \"round_robin\")"),
    ("lb.json", r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}], "balance": "least_request", "hash_bound": 2}"#, "lb.json: hash_bound: applies only to balance = \"consistent_hash\" (the balance here is \"least_request\")"),
    ("lb.toml", r#"{B}{P}hash_key = 'path'\n"#, "lb.toml: pools.api.hash_key: applies only to balance = \"consistent_hash\" (the balance here is \"round_robin\")"),
    // Pools.
    ("lb.toml", r#"{B}[pools.api]\nbackends = []\n"#, "lb.toml:6:12: pools.api.backends: pool api has no backends"),
    ("lb.toml", r#"{B}[pools.api]\nbalance = 'random'\n"#, "lb.toml:5:1: pools.api: pool api has no backends"),
    ("lb.toml", r#"{B}[pools.'a b']\nbackends = []\n"#, "lb.toml:5:8: pools.a b: pool name \"a b\": use letters, digits, '_' and '-' only"),
    ("lb.toml", r#"{B}[pools.default]\nbackends = []\n"#, "lb.toml:5:8: pools.default: pool name \"default\" is reserved: it names the top-level backends in routes"),
    ("lb.toml", r#"{B}[pools.api]\nbackend = []\n"#, "lb.toml:6:1: pools.api.backend: unknown field `backend`, expected one of `backends`, `balance`, `hash_key`, `hash_bound`, `health_check`, `passive_health`, `slow_start`"),
    ("lb.toml", r#"{B}[pools.api]\nbackends = [{id = 2, host = '127.0.0.1', port = 8002}, {id = 2, host = '127.0.0.1', port = 8003}]\n"#, "lb.toml:6:62: pools.api.backends[1].id: duplicate id 2 (also pools.api.backends[0])"),
    ("lb.toml", r#"{B}[pools.api]\nbackends = [{id = 1, host = '127.0.0.1', port = 8002}]\n"#, "lb.toml: pools.api.backends[0].id: duplicate id 1 (also backends[0]): ids are unique across pools"),
    ("lb.json", r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}], "pools": {"api": {"backends": [{"id": 2, "host": "127.0.0.1", "port": 8002}]}, "api": {}}}"#, "lb.json:1:145: pools: duplicate pool \"api\""),
    ("lb.json", r#"{"backends": [{"id": 1, "host": "127.0.0.1", "port": 8001}], "pools": {"api": {"backends": [{"id": 2, "host": "127.0.0.1", "port": 8002}], "health_check": {"rise": 0}}}}"#, "lb.json:1:165: pools.api.health_check.rise: must be at least 1, got 0"),
    ("lb.toml", r#"{P}"#, "lb.toml: missing field `backends`: without the top-level backends, [[routes]] must send requests to the pools (else every request would get 404)"),
    // Routes.
    ("lb.toml", r#"{B}{P}[[routes]]\npool = 'api'\n"#, "lb.toml:7:1: routes[0]: a route needs host or path_prefix (requests no route takes go to the top-level backends)"),
    ("lb.toml", r#"{B}{P}[[routes]]\nhost = 'api.example.com:80'\npool = 'api'\n"#, "lb.toml:8:8: routes[0].host: \"api.example.com:80\": a route's host has no port (requests are compared without theirs)"),
    ("lb.toml", r#"{B}{P}[[routes]]\nhost = 'api..com'\npool = 'api'\n"#, "lb.toml:8:8: routes[0].host: \"api..com\" is not a host name: expected e.g. api.example.com or *.example.com"),
    ("lb.toml", r#"{B}{P}[[routes]]\npath_prefix = 'api'\npool = 'api'\n"#, "lb.toml:8:15: routes[0].path_prefix: must start with '/', got \"api\""),
    ("lb.toml", r#"{B}{P}[[routes]]\npath_prefix = '/a?b'\npool = 'api'\n"#, "lb.toml:8:15: routes[0].path_prefix: must be a path without spaces, control characters, '?' or '#', got \"/a?b\""),
    ("lb.toml", r#"{B}{P}[[routes]]\npath_prefix = '/api'\n"#, "lb.toml:7:1: routes[0]: missing field `pool`"),
    ("lb.toml", r#"{B}{P}[[routes]]\npath_prefix = '/api'\npool = 'api'\nport = 3\n"#, "lb.toml:10:1: routes[0].port: unknown field `port`, expected one of `host`, `path_prefix`, `pool`"),
    ("lb.toml", r#"{B}{P}[[routes]]\npath_prefix = '/api'\npool = 'apii'\n"#, "lb.toml: routes[0].pool: unknown pool \"apii\" (known: \"api\", \"default\" (the top-level backends))"),
    ("lb.toml", r#"{B}[[routes]]\npath_prefix = '/api'\npool = 'api'\n"#, "lb.toml: routes[0].pool: unknown pool \"api\" (known: \"default\" (the top-level backends))"),
    ("lb.toml", r#"{P}[[routes]]\npath_prefix = '/api'\npool = 'default'\n"#, "lb.toml: routes[0].pool: \"default\" is the top-level backends, and there are none"),
    ("lb.toml", r#"{B}{P}[[routes]]\npath_prefix = '/api'\npool = 'api'\n[[routes]]\npath_prefix = '/api'\npool = 'default'\n"#, "lb.toml: routes[1]: same host and path_prefix as routes[0], which takes its requests"),
    // TCP mode.
    ("lb.toml", r#"mode = 'tcp'\n{B}{P}[[routes]]\npath_prefix = '/api'\npool = 'api'\n"#, "lb.toml: routes: routes choose by host and path, and no listener speaks HTTP (mode = \"tcp\")"),
    ("lb.toml", r#"{P}[[routes]]\npath_prefix = '/api'\npool = 'api'\n[[listeners]]\naddress = '127.0.0.1:0'\nmode = 'tcp'\n"#, "lb.toml: listeners[0]: TCP mode sends every connection to the top-level backends, and there are none (pools and routes are HTTP)"),
];

#[test]
fn each_bad_balancing_key_gives_one_precise_line() {
    let backend = BACKEND.replace('\n', "\\n");
    let pool = "[pools.api]\\nbackends = [{id = 2, host = '127.0.0.1', port = 8002}]\\n";
    let mut failures = Vec::new();
    for &(name, text, want) in CASES {
        let text = text
            .replace("{B}", &backend)
            .replace("{P}", pool)
            .replace("\\n", "\n");
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
