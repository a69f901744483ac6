//! WebSocket through `lb` with a real client and server (tokio-tungstenite): the handshake reaches the backend with
//! `Upgrade` and `Connection: upgrade` (and no other hop-by-hop header), messages of every size echo through the
//! tunnel, the close handshake works from either side, and a reload that keeps the backend does not cut the tunnel.
//! The tunnel's mechanics (half-close, idle, drain, memory) are in `upgrade.rs`, with a made-up protocol whose bytes
//! the test writes by hand.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::harness::{
    pattern, same_bytes, tokens, wait_until, RawConn, TestLb, WsEchoBackend, BYE, BYE_CODE,
    BYE_REASON, PATIENCE,
};

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket client session to `path` through lb.
async fn ws_connect(lb: &TestLb, path: &str) -> Ws {
    let stream = TcpStream::connect(lb.addr()).await.expect("connect to lb");
    let url = format!("ws://{}{path}", lb.addr());
    let handshake = tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, stream));
    match handshake
        .await
        .expect("a handshake answer within the patience")
    {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            ws
        }
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            panic!(
                "the WebSocket handshake got {} instead of 101 Switching Protocols: {:?}",
                response.status(),
                String::from_utf8_lossy(body)
            )
        }
        Err(e) => panic!("the WebSocket handshake failed: {e}"),
    }
}

/// The next message; panics if the session ends or nothing comes within the patience.
async fn next_message(ws: &mut Ws) -> Message {
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(e))) => panic!("the session failed: {e}"),
        Ok(None) => panic!("the session ended"),
        Err(_) => panic!("no message within the patience"),
    }
}

/// Sends `message` and checks that the same comes back.
async fn echo(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).await.expect("send a message");
    let back = next_message(ws).await;
    match (&message, &back) {
        (Message::Binary(sent), Message::Binary(got)) if got != sent => {
            same_bytes(got, sent, "binary echo")
        }
        _ => assert_eq!(back, message),
    }
}

/// After the close handshake the stream ends: the connection closes.
async fn assert_ends(ws: &mut Ws) {
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(None) => {}
        Ok(Some(other)) => panic!("after the close handshake: {other:?}"),
        Err(_) => panic!("the connection stayed open after the close handshake"),
    }
}

/// A WebSocket echo backend and lb in front of it, serving.
async fn ws_setup() -> (WsEchoBackend, TestLb) {
    let backend = WsEchoBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    (backend, lb)
}

#[tokio::test]
async fn text_and_binary_messages_echo_through_lb_and_the_client_closes() {
    let (backend, lb) = ws_setup().await;
    let mut ws = ws_connect(&lb, "/chat").await;

    for text in ["hello", "", "héllo wörld ✓", &"long line ".repeat(2000)] {
        echo(&mut ws, Message::text(text)).await;
    }
    for len in [1, 64 * 1024, 1024 * 1024] {
        echo(&mut ws, Message::binary(pattern(len))).await;
    }
    // A control frame goes through as well: tungstenite's server answers the ping.
    ws.send(Message::Ping(b"are you there"[..].into()))
        .await
        .expect("send a ping");
    assert_eq!(
        next_message(&mut ws).await,
        Message::Pong(b"are you there"[..].into())
    );

    let ours = CloseFrame {
        code: CloseCode::Library(4001),
        reason: "done for today".into(),
    };
    ws.close(Some(ours.clone())).await.expect("send Close");
    // The server echoes the Close frame it received: code and reason crossed lb both ways.
    assert_eq!(next_message(&mut ws).await, Message::Close(Some(ours)));
    assert_ends(&mut ws).await;
    wait_until("the server got the Close frame", PATIENCE, async || {
        backend.closes_received() == 1 && backend.ended() == 1
    })
    .await;
}

#[tokio::test]
async fn the_server_closes_and_the_client_sees_the_close_frame_and_the_end() {
    let (backend, lb) = ws_setup().await;
    let mut ws = ws_connect(&lb, "/chat").await;
    echo(&mut ws, Message::text("hi")).await;

    ws.send(Message::text(BYE)).await.expect("send bye");
    let close = next_message(&mut ws).await;
    let expected = CloseFrame {
        code: BYE_CODE,
        reason: BYE_REASON.into(),
    };
    assert_eq!(close, Message::Close(Some(expected)));
    // Reading on sends the client's reply (tungstenite does), then the server closes the connection.
    assert_ends(&mut ws).await;
    wait_until(
        "the server got the client's Close reply and ended",
        PATIENCE,
        async || backend.closes_received() == 1 && backend.ended() == 1,
    )
    .await;
}

#[tokio::test]
async fn sessions_at_once_each_get_their_own_echoes() {
    let (_backend, lb) = ws_setup().await;
    let sessions = (0..8).map(|id| {
        let lb = &lb;
        async move {
            let mut ws = ws_connect(lb, &format!("/chat/{id}")).await;
            for n in 0..20 {
                echo(&mut ws, Message::text(format!("session {id} message {n}"))).await;
            }
            ws.close(None).await.expect("send Close");
            assert_eq!(next_message(&mut ws).await, Message::Close(None));
            assert_ends(&mut ws).await;
        }
    });
    futures_util::future::join_all(sessions).await;
}

#[tokio::test]
async fn the_handshake_reaches_the_backend_without_the_other_hop_by_hop_headers() {
    let (backend, lb) = ws_setup().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(
        b"GET /chat?room=1 HTTP/1.1\r\n\
          Host: shop.example\r\n\
          Connection: Upgrade, X-Secret\r\n\
          Upgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\
          Origin: http://shop.example\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Secret: 1\r\n\
          \r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 101, "{response:?}");
    let upgrade = response.header("upgrade").unwrap_or_default();
    assert!(upgrade.eq_ignore_ascii_case("websocket"), "{response:?}");
    let connection = tokens(response.header("connection"));
    assert!(connection.contains(&"upgrade".to_owned()), "{response:?}");
    // RFC 6455 §1.3's example key and its answer.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{response:?}"
    );

    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 1);
    let seen = &handshakes[0];
    let values = |name: &str| -> Vec<&str> {
        let found = seen.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str()).collect()
    };
    assert_eq!(values("upgrade"), ["websocket"], "{seen:?}");
    let connection = tokens(values("connection"));
    assert_eq!(connection, ["upgrade"], "Connection as forwarded: {seen:?}");
    assert_eq!(
        values("sec-websocket-key"),
        ["dGhlIHNhbXBsZSBub25jZQ=="],
        "{seen:?}"
    );
    assert_eq!(values("sec-websocket-version"), ["13"], "{seen:?}");
    assert_eq!(values("origin"), ["http://shop.example"], "{seen:?}");
    assert_eq!(values("host"), ["shop.example"], "{seen:?}");
    assert_eq!(values("x-forwarded-for"), ["127.0.0.1"], "{seen:?}");
    for hop in ["keep-alive", "te", "proxy-connection", "x-secret"] {
        assert_eq!(values(hop), Vec::<&str>::new(), "{hop} was forwarded");
    }

    // The tunnel carries frames: a masked text frame (mask 0), echoed unmasked.
    conn.send(&[0x81, 0x85, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'])
        .await;
    assert_eq!(conn.read_exactly(7).await, b"\x81\x05hello");
}

#[tokio::test]
async fn a_tunnels_access_log_line_says_101() {
    let backend = WsEchoBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .set("access_log", true)
        .start()
        .await;
    let mut ws = ws_connect(&lb, "/chat").await;
    echo(&mut ws, Message::text("hi")).await;
    ws.close(None).await.expect("send Close");
    assert_eq!(next_message(&mut ws).await, Message::Close(None));
    assert_ends(&mut ws).await;
    // The tunnel ends when both sides have closed: the client closes its socket too.
    drop(ws);
    let line = lb.wait_log("\"GET /chat HTTP/1.1\" 101 ", PATIENCE).await;
    assert!(line.contains(" backend=1 "), "{line}");
}

#[tokio::test]
async fn a_tunnel_survives_a_reload_that_keeps_its_backend() {
    let (_backend, lb) = ws_setup().await;
    let mut ws = ws_connect(&lb, "/chat").await;
    echo(&mut ws, Message::text("before the reload")).await;

    // The reload keeps backend 1 (same id and address) and adds another one.
    let other = crate::harness::TestBackend::start(2).await;
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lb.config_path()).unwrap()).unwrap();
    config["backends"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 2, "host": "127.0.0.1", "port": other.addr().port()}));
    lb.rewrite_config(&config.to_string());
    lb.signal("HUP").await;
    lb.wait_log("config reloaded", PATIENCE).await;

    // The tunnel was not cut: messages still cross it both ways.
    echo(&mut ws, Message::text("after the reload")).await;
    echo(&mut ws, Message::binary(pattern(100_000))).await;
}
