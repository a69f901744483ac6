//! Backends reached over TLS (`tls = true`, `protocol = "h2"`): the files a backend names are checked at startup
//! and on reload, re-read on reload, and requests go through lb to TLS backends verified against `ca`, with the
//! SNI name and client certificate the config gives.
//!
//! The request tests need the generic proxy path (hyper over `upstream::connector`), which serves every snapshot
//! with a TLS backend; they are ignored until it lands.

use std::path::Path;

use crate::harness::{
    backend_entry, client, config_file, path_line, run_lb, toml_config, wait_health, TestCa,
    TestLb, TlsBackend, PATIENCE,
};

/// lb on this TOML config, with its admin plane.
async fn start(config: &str) -> TestLb {
    TestLb::from_file_with("lb.toml", config, &["--admin", "127.0.0.1:0"]).await
}

/// Runs lb on the TOML `config`, which it must refuse; answers the error line.
async fn refused(config: &str) -> String {
    let (_dir, path) = config_file("lb.toml", config);
    let run = run_lb(&["--host", "127.0.0.1", "--port", "0", "--config", &path]).await;
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    let line = run.last_error_line().to_owned();
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains("lb.toml:"), "names the config: {line}");
    assert_eq!(
        run.stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "one line: {}",
        run.stderr
    );
    line
}

fn tls_entry(port_of: std::net::SocketAddr, lines: &[String]) -> String {
    let mut all = vec!["tls = true".to_owned()];
    all.extend_from_slice(lines);
    backend_entry(1, "127.0.0.1", port_of, &all)
}

#[tokio::test]
async fn a_bad_ca_client_cert_or_client_key_stops_startup_naming_the_file_and_the_problem() {
    let (ca, other) = (TestCa::new("test-ca"), TestCa::new("other-ca"));
    let client = ca.issue("client", &["lb.test"]);
    let stranger = other.issue("stranger", &["lb.test"]);
    let addr = "127.0.0.1:9".parse().unwrap();
    let missing = ca.path().with_file_name("missing.pem");

    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec![path_line("ca", &missing)],
            vec![
                "backends[0].ca".into(),
                missing.display().to_string(),
                "cannot read".into(),
            ],
        ),
        (
            vec![path_line("ca", &client.key_path)],
            vec![
                "backends[0].ca".into(),
                client.key_path.display().to_string(),
                "no certificate in it".into(),
            ],
        ),
        (
            vec![
                path_line("client_cert", &client.cert_path),
                path_line("client_key", &client.cert_path),
            ],
            vec![
                "backends[0].client_key".into(),
                client.cert_path.display().to_string(),
                "no private key in it".into(),
            ],
        ),
        (
            vec![
                path_line("client_cert", &client.cert_path),
                path_line("client_key", &stranger.key_path),
            ],
            vec![
                "backends[0]".into(),
                stranger.key_path.display().to_string(),
                "is not the key of client_cert".into(),
            ],
        ),
    ];
    for (lines, needles) in cases {
        let line = refused(&toml_config("", "", &[tls_entry(addr, &lines)])).await;
        for needle in needles {
            assert!(line.contains(&needle), "{needle:?} missing from: {line}");
        }
    }

    let h2c_over_tls = backend_entry(
        1,
        "127.0.0.1",
        addr,
        &["protocol = \"h2c\"".into(), "tls = true".into()],
    );
    let line = refused(&toml_config("", "", &[h2c_over_tls])).await;
    assert!(line.contains("\"h2c\" is HTTP/2 in clear text"), "{line}");
}

#[tokio::test]
async fn a_reload_with_a_bad_ca_is_refused_and_one_that_renews_the_ca_takes_effect() {
    let (ca, new_ca) = (TestCa::new("test-ca"), TestCa::new("new-ca"));
    // The backend's certificate comes from the new CA; lb trusts the old one at first: down.
    let backend = TlsBackend::tls(1, &new_ca).start().await;
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.pem");
    std::fs::copy(ca.path(), &trusted).unwrap();
    let config = |ca: &Path| {
        let lines = [path_line("ca", ca), "sni = \"backend.test\"".to_owned()];
        toml_config("", "", &[tls_entry(backend.addr(), &lines)])
    };
    let lb = start(&config(&trusted)).await;
    let down = wait_health(&lb, 1, "down").await;
    assert!(
        down["reason"]
            .as_str()
            .unwrap()
            .contains("certificate verify failed"),
        "{down}"
    );

    let missing = dir.path().join("missing.pem");
    lb.rewrite_config(&config(&missing));
    lb.signal("HUP").await;
    let line = lb.wait_log("reload failed", PATIENCE).await;
    assert!(line.contains("backends[0].ca"), "{line}");
    assert!(line.contains(&missing.display().to_string()), "{line}");

    // The same config again, but the file it names now holds the new CA: a reload reads it afresh.
    std::fs::copy(new_ca.path(), &trusted).unwrap();
    lb.rewrite_config(&config(&trusted));
    lb.signal("HUP").await;
    lb.wait_log("config reloaded", PATIENCE).await;
    wait_health(&lb, 1, "up").await;
}

#[tokio::test]
async fn requests_reach_a_tls_backend_verified_with_the_ca_by_its_host_name() {
    let ca = TestCa::new("test-ca");
    let backend = TlsBackend::tls(1, &ca).names(&["localhost"]).start().await;
    // No sni: the host name is the name sent and verified.
    let entry = backend_entry(
        1,
        "localhost",
        backend.addr(),
        &["tls = true".into(), path_line("ca", ca.path())],
    );
    let lb = start(&toml_config("", "", &[entry])).await;
    wait_health(&lb, 1, "up").await;

    for _ in 0..3 {
        let (status, body) = lb.get("/").await;
        assert_eq!((status, body.as_str()), (200, "hello from backend 1"));
    }
    assert_eq!(backend.request_versions().len(), 3);
    assert!(backend
        .handshakes()
        .iter()
        .all(|h| h.sni.as_deref() == Some("localhost")));
}

#[tokio::test]
async fn requests_carry_the_sni_name_and_the_client_certificate_the_backend_asks_for() {
    let (ca, clients) = (TestCa::new("test-ca"), TestCa::new("client-ca"));
    let client_cert = clients.issue("lb-client", &["lb.test"]);
    let backend = TlsBackend::tls(1, &ca)
        .names(&["api.internal.test"])
        .require_client_cert(&clients)
        .start()
        .await;
    let lines = [
        path_line("ca", ca.path()),
        "sni = \"api.internal.test\"".to_owned(),
        path_line("client_cert", &client_cert.cert_path),
        path_line("client_key", &client_cert.key_path),
    ];
    let lb = start(&toml_config("", "", &[tls_entry(backend.addr(), &lines)])).await;
    wait_health(&lb, 1, "up").await;

    let (status, body) = lb.get("/").await;
    assert_eq!((status, body.as_str()), (200, "hello from backend 1"));
    assert!(backend
        .handshakes()
        .iter()
        .all(|h| { h.sni.as_deref() == Some("api.internal.test") && h.client_cert }));
    assert!(backend.failed_handshakes().is_empty());
}

#[tokio::test]
async fn a_backend_with_a_certificate_for_another_name_is_down_and_gets_no_requests() {
    let ca = TestCa::new("test-ca");
    let good = TlsBackend::tls(1, &ca).start().await;
    let misnamed = TlsBackend::tls(2, &ca).names(&["other.test"]).start().await;
    let lines = [
        path_line("ca", ca.path()),
        "sni = \"backend.test\"".to_owned(),
    ];
    let entries = [
        backend_entry(
            1,
            "127.0.0.1",
            good.addr(),
            &[&["tls = true".to_owned()][..], &lines].concat(),
        ),
        backend_entry(
            2,
            "127.0.0.1",
            misnamed.addr(),
            &[&["tls = true".to_owned()][..], &lines].concat(),
        ),
    ];
    let lb = start(&toml_config("", "", &entries)).await;
    let down = wait_health(&lb, 2, "down").await;
    assert!(
        down["reason"]
            .as_str()
            .unwrap()
            .contains("certificate verify failed"),
        "{down}"
    );

    let spread = lb.spread(6).await;
    assert_eq!(
        spread.keys().copied().collect::<Vec<_>>(),
        [1],
        "{spread:?}"
    );
    assert!(misnamed.request_versions().is_empty());
}

#[tokio::test]
async fn requests_reach_an_h2_backend_over_tls_in_http2() {
    let ca = TestCa::new("test-ca");
    let backend = TlsBackend::tls(1, &ca).h2().start().await;
    let lines = [
        "protocol = \"h2\"".to_owned(),
        path_line("ca", ca.path()),
        "sni = \"backend.test\"".to_owned(),
    ];
    let entry = backend_entry(1, "127.0.0.1", backend.addr(), &lines);
    let lb = start(&toml_config("", "", &[entry])).await;
    wait_health(&lb, 1, "up").await;

    // An HTTP/1.1 client; lb speaks HTTP/2 to the backend.
    let response = client().get(lb.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello from backend 1");
    assert_eq!(backend.request_versions(), ["HTTP/2.0"]);
}
