//! What a protocol switch must look like to be relayed (RFC 9110 §7.8, §15.2.2): an `Upgrade` made of
//! `protocol[/version]` tokens on the request, and on the backend's `101` an HTTP/1.1 status line and one `Upgrade`
//! naming only protocols the client offered. Anything else is not a tunnel: a malformed offer is not forwarded (the
//! request goes on as plain HTTP/1.1) and a bad `101` is a `502`.

use crate::harness::{
    assert_not_asked_to_upgrade, RawConn, ScriptedBackend, Step, TestBackend, TestLb, PATIENCE,
};

/// A backend that answers every request with `answer`, then holds the connection.
async fn answering(answer: &'static [u8]) -> (ScriptedBackend, TestLb) {
    let backend =
        ScriptedBackend::start(move |_| vec![Step::write(answer), Step::Sleep(PATIENCE)]).await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    (backend, lb)
}

const ASKS_FOR_WEBSOCKET: &[u8] = b"GET /chat HTTP/1.1\r\nHost: shop.example\r\nConnection: upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn a_bad_101_to_an_upgrade_request_is_a_502_not_a_tunnel() {
    let bad: [(&str, &'static [u8]); 4] = [
        (
            "from an HTTP/1.0 server",
            b"HTTP/1.0 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
        (
            "without Upgrade",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
        ),
        (
            "to h2c, which the client did not offer (and lb never forwards)",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        ),
        (
            "with two Upgrade headers",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n\r\n",
        ),
    ];
    for (what, answer) in bad {
        let (_backend, lb) = answering(answer).await;
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(ASKS_FOR_WEBSOCKET).await;
        let response = conn.response().await;
        assert_eq!(response.status, 502, "a 101 {what}: {response:?}");
    }
}

#[tokio::test]
async fn a_101_to_an_offered_protocol_in_another_case_is_relayed() {
    let (_backend, lb) = answering(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
    )
    .await;
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(ASKS_FOR_WEBSOCKET).await;
    let response = conn.response().await;
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("upgrade"), Some("WebSocket"));
}

#[tokio::test]
async fn a_malformed_upgrade_offer_is_not_forwarded_and_the_request_goes_on() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    // (Empty list elements are allowed, RFC 9110 §5.6.1: `websocket, ` offers websocket; `, ` offers nothing.)
    for offer in ["web socket", "websocket/", "/1", "x-echo/1/2", "ws\"", ", "] {
        let mut conn = RawConn::connect(lb.addr()).await;
        let request = format!(
            "GET /plain HTTP/1.1\r\nHost: shop.example\r\nConnection: upgrade\r\nUpgrade: {offer}\r\n\r\n"
        );
        conn.send(request.as_bytes()).await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "Upgrade: {offer:?}: {response:?}");
        assert_not_asked_to_upgrade(&backend.last_seen(), &format!("Upgrade: {offer:?}"));
    }
}
