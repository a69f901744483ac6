//! The config forms `lb` accepts, each run for real: the spec's JSON array, and the full form in TOML.

use crate::harness::{assert_fair, TestBackend, TestLb};

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
