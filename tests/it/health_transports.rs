//! Health checks reach a backend the way requests will: over TLS for a `tls` backend (verified against `ca`, with
//! its SNI name and client certificate), in HTTP/2 for `protocol = "h2c"` and `"h2"`, and a `tcp` check of a TLS
//! backend does the handshake. A backend that fails any of it is down, and `/api/status` says why.

use tokio::net::TcpListener;

use crate::harness::{
    backend_entry, path_line, toml_config, wait_health, wait_until, TestCa, TestLb, TlsBackend,
    PATIENCE,
};

/// lb on this TOML config, with its admin plane.
async fn start(config: &str) -> TestLb {
    TestLb::from_file_with("lb.toml", config, &["--admin", "127.0.0.1:0"]).await
}

/// Waits until backend `id` is down; answers why (`/api/status`'s `reason`).
async fn down_because(lb: &TestLb, id: u64) -> String {
    let backend = wait_health(lb, id, "down").await;
    backend["reason"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_tls_backend_is_checked_over_tls_with_its_ca_and_sni_name() {
    let ca = TestCa::new("test-ca");
    let backend = TlsBackend::tls(1, &ca)
        .names(&["backend.test"])
        .start()
        .await;
    let entry = backend_entry(
        1,
        "127.0.0.1",
        backend.addr(),
        &[
            "tls = true".into(),
            path_line("ca", ca.path()),
            "sni = \"backend.test\"".into(),
        ],
    );
    let lb = start(&toml_config("", "", &[entry])).await;

    wait_health(&lb, 1, "up").await;
    let handshakes = backend.handshakes();
    assert!(!handshakes.is_empty());
    for handshake in handshakes {
        assert_eq!(handshake.sni.as_deref(), Some("backend.test"));
        assert_eq!(handshake.alpn.as_deref(), Some("http/1.1"));
        assert!(!handshake.client_cert);
    }
    assert!(backend
        .health_check_versions()
        .iter()
        .all(|v| v == "HTTP/1.1"));
}

#[tokio::test]
async fn an_ip_address_host_is_verified_against_the_certificates_ip_and_sends_no_sni() {
    let ca = TestCa::new("test-ca");
    let backend = TlsBackend::tls(1, &ca).names(&["127.0.0.1"]).start().await;
    let entry = backend_entry(
        1,
        "127.0.0.1",
        backend.addr(),
        &["tls = true".into(), path_line("ca", ca.path())],
    );
    let lb = start(&toml_config("", "", &[entry])).await;

    wait_health(&lb, 1, "up").await;
    let handshake = backend.handshakes().remove(0);
    assert_eq!(handshake.sni, None, "no SNI for an IP address");
}

#[tokio::test]
async fn a_certificate_for_another_name_or_from_another_ca_marks_the_backend_down_saying_why() {
    let (ca, stranger) = (TestCa::new("test-ca"), TestCa::new("stranger-ca"));
    let misnamed = TlsBackend::tls(1, &ca).names(&["other.test"]).start().await;
    let untrusted = TlsBackend::tls(2, &stranger)
        .names(&["backend.test"])
        .start()
        .await;
    let trusting = |id, backend: &TlsBackend| {
        backend_entry(
            id,
            "127.0.0.1",
            backend.addr(),
            &[
                "tls = true".into(),
                path_line("ca", ca.path()),
                "sni = \"backend.test\"".into(),
            ],
        )
    };
    let config = toml_config("", "", &[trusting(1, &misnamed), trusting(2, &untrusted)]);
    let lb = start(&config).await;

    let reason = down_because(&lb, 1).await;
    assert!(reason.contains("certificate verify failed: "), "{reason}");
    assert!(reason.contains("backend.test"), "names the name: {reason}");
    let reason = down_because(&lb, 2).await;
    assert!(reason.contains("certificate verify failed: "), "{reason}");
    assert!(
        reason.to_lowercase().contains("unknown issuer")
            || reason.to_lowercase().contains("unknownissuer"),
        "{reason}"
    );
    lb.wait_log("certificate verify failed", PATIENCE).await;
    // The backend saw a client give up on its certificate, not a finished handshake.
    assert!(misnamed.handshakes().is_empty());
}

#[tokio::test]
async fn a_backend_that_requires_a_client_certificate_is_up_only_for_the_one_given_it() {
    let (ca, clients) = (TestCa::new("test-ca"), TestCa::new("client-ca"));
    let client = clients.issue("lb-client", &["lb.test"]);
    let with = TlsBackend::tls(1, &ca)
        .require_client_cert(&clients)
        .start()
        .await;
    let without = TlsBackend::tls(2, &ca)
        .require_client_cert(&clients)
        .start()
        .await;
    let common = || {
        vec![
            "tls = true".to_owned(),
            path_line("ca", ca.path()),
            "sni = \"backend.test\"".to_owned(),
        ]
    };
    let mut lines = common();
    lines.push(path_line("client_cert", &client.cert_path));
    lines.push(path_line("client_key", &client.key_path));
    let entries = [
        backend_entry(1, "127.0.0.1", with.addr(), &lines),
        backend_entry(2, "127.0.0.1", without.addr(), &common()),
    ];
    let lb = start(&toml_config("", "", &entries)).await;

    wait_health(&lb, 1, "up").await;
    assert!(with.handshakes().iter().all(|h| h.client_cert));
    let reason = down_because(&lb, 2).await;
    assert!(
        reason.to_lowercase().contains("certificate"),
        "the backend's alert says what it wanted: {reason}"
    );
    wait_until("backend 2 refused a handshake", PATIENCE, async || {
        !without.failed_handshakes().is_empty()
    })
    .await;
    let refused = without.failed_handshakes().remove(0);
    assert!(
        refused.to_lowercase().contains("certificate"),
        "the backend refused for want of a certificate: {refused}"
    );
}

#[tokio::test]
async fn h2c_and_h2_backends_are_checked_over_http2() {
    let ca = TestCa::new("test-ca");
    let h2c = TlsBackend::h2c(1).await;
    let h2 = TlsBackend::tls(2, &ca).h2().start().await;
    let entries = [
        backend_entry(1, "127.0.0.1", h2c.addr(), &["protocol = \"h2c\"".into()]),
        backend_entry(
            2,
            "127.0.0.1",
            h2.addr(),
            &[
                "protocol = \"h2\"".into(),
                path_line("ca", ca.path()),
                "sni = \"backend.test\"".into(),
            ],
        ),
    ];
    let lb = start(&toml_config("", "", &entries)).await;

    wait_health(&lb, 1, "up").await;
    wait_health(&lb, 2, "up").await;
    for backend in [&h2c, &h2] {
        let versions = backend.health_check_versions();
        assert!(!versions.is_empty());
        assert!(versions.iter().all(|v| v == "HTTP/2.0"), "{versions:?}");
    }
    assert!(h2
        .handshakes()
        .iter()
        .all(|h| h.alpn.as_deref() == Some("h2")));
}

#[tokio::test]
async fn an_h2_backend_that_does_not_agree_to_h2_is_down() {
    let ca = TestCa::new("test-ca");
    // One knows nothing of ALPN (the handshake succeeds without a protocol), one speaks only HTTP/1.1 (it refuses
    // the handshake).
    let silent = TlsBackend::tls(1, &ca).alpn(&[]).start().await;
    let http1 = TlsBackend::tls(2, &ca).alpn(&["http/1.1"]).start().await;
    let entry = |id, backend: &TlsBackend| {
        backend_entry(
            id,
            "127.0.0.1",
            backend.addr(),
            &[
                "protocol = \"h2\"".into(),
                path_line("ca", ca.path()),
                "sni = \"backend.test\"".into(),
            ],
        )
    };
    let lb = start(&toml_config("", "", &[entry(1, &silent), entry(2, &http1)])).await;

    let reason = down_because(&lb, 1).await;
    assert!(
        reason.contains("the backend did not agree to HTTP/2 over TLS (ALPN none)"),
        "{reason}"
    );
    let reason = down_because(&lb, 2).await;
    assert!(
        reason.contains("TLS handshake failed: ") && reason.contains("NoApplicationProtocol"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_tcp_check_of_a_tls_backend_does_the_handshake() {
    let ca = TestCa::new("test-ca");
    let good = TlsBackend::tls(1, &ca).start().await;
    let misnamed = TlsBackend::tls(2, &ca).names(&["other.test"]).start().await;
    let entry = |id, backend: &TlsBackend| {
        backend_entry(
            id,
            "127.0.0.1",
            backend.addr(),
            &[
                "tls = true".into(),
                path_line("ca", ca.path()),
                "sni = \"backend.test\"".into(),
            ],
        )
    };
    let config = toml_config(
        "",
        "type = \"tcp\"",
        &[entry(1, &good), entry(2, &misnamed)],
    );
    let lb = start(&config).await;

    wait_health(&lb, 1, "up").await;
    assert!(!good.handshakes().is_empty(), "the check did the handshake");
    assert!(
        good.health_check_versions().is_empty(),
        "and asked for nothing"
    );
    let reason = down_because(&lb, 2).await;
    assert!(reason.contains("certificate verify failed: "), "{reason}");
}

#[tokio::test]
async fn a_handshake_that_never_ends_fails_the_check_in_time() {
    // Accepts connections and never says a word: the TLS handshake waits for a ServerHello that never comes.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let entry = backend_entry(
        1,
        "127.0.0.1",
        addr,
        &["tls = true".into(), "sni = \"backend.test\"".into()],
    );
    let config = toml_config("", "timeout = \"300ms\"", &[entry]);
    let lb = start(&config).await;

    let reason = down_because(&lb, 1).await;
    assert!(reason.contains("timed out after 300ms"), "{reason}");
    held.abort();
}
