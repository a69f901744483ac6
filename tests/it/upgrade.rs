//! Protocol upgrades (RFC 9110 §7.8) with a made-up protocol whose bytes the test writes by hand
//! ([`HandoffBackend`], [`RawConn`]): a request with `Connection: upgrade` and `Upgrade: <proto>` reaches the backend
//! with both; a `101` answer turns the exchange into a tunnel that copies bytes both ways until both sides have closed
//! (half-close respected), with its own idle timeout (`timeouts.tunnel_idle`), no pooling of its backend
//! connection, the drain deadline, and bounded memory. Any other answer is an ordinary response; `Upgrade: h2c`
//! and the `Upgrade` of an HTTP/1.0 request are dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{
    assert_not_asked_to_upgrade, pattern, pattern_chunks, peak_memory_kib, same_bytes, tokens,
    wait_until, Handed, HandoffBackend, Head, RawConn, ScriptedBackend, Step, TestBackend, TestLb,
    PATIENCE,
};

const UPGRADE_REQUEST: &[u8] = b"GET /tunnel HTTP/1.1\r\n\
    Host: shop.example\r\n\
    Connection: Upgrade\r\n\
    Upgrade: x-echo/1\r\n\
    \r\n";

const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
    Connection: upgrade\r\n\
    Upgrade: x-echo/1\r\n\
    \r\n";

fn assert_asks_to_upgrade(head: &Head, protocol: &str) {
    assert_eq!(
        (head.method.as_str(), head.version.as_str()),
        ("GET", "HTTP/1.1"),
        "{head:?}"
    );
    assert_eq!(
        head.header_values("upgrade"),
        [protocol],
        "the backend got no (or another) Upgrade: {head:?}"
    );
    assert!(
        head.connection_tokens().contains(&"upgrade".to_owned()),
        "the backend got no Connection: upgrade: {head:?}"
    );
}

/// Sends [`UPGRADE_REQUEST`], has the backend answer [`SWITCHING`] and `extra` bytes in the same write, and checks
/// that the client gets the 101: answers both ends of the tunnel.
async fn open_tunnel(
    addr: SocketAddr,
    backend: &mut HandoffBackend,
    extra: &[u8],
) -> (RawConn, Handed) {
    let mut client = RawConn::connect(addr).await;
    client.send(UPGRADE_REQUEST).await;
    let mut server = backend.next().await;
    assert_asks_to_upgrade(&server.head, "x-echo/1");
    server.write(&[SWITCHING, extra].concat()).await;
    let response = client.response().await;
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("upgrade"), Some("x-echo/1"), "{response:?}");
    (client, server)
}

async fn tunnel_setup() -> (HandoffBackend, TestLb) {
    let backend = HandoffBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    (backend, lb)
}

#[tokio::test]
async fn a_raw_upgrade_tunnels_bytes_both_ways_and_respects_half_close() {
    let (mut backend, lb) = tunnel_setup().await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"welcome\n").await;
    // What the backend wrote with its 101 head is the tunnel's first bytes.
    assert_eq!(client.read_exactly(8).await, b"welcome\n");

    client.send(b"ping 1").await;
    assert_eq!(server.read_exactly(6).await, b"ping 1");
    server.write(b"pong 1").await;
    assert_eq!(client.read_exactly(6).await, b"pong 1");

    // 256 KiB one way, then back.
    let big = pattern(256 * 1024);
    client.send(&big).await;
    let got = server.read_exactly(big.len()).await;
    same_bytes(&got, &big, "client to backend");
    server.write(&got).await;
    same_bytes(
        &client.read_exactly(big.len()).await,
        &big,
        "backend to client",
    );

    // Half-close: the client is done sending; the backend sees the end and may still answer.
    client.shutdown_write().await;
    assert_eq!(
        server.read_until_eof(PATIENCE).await,
        b"",
        "the backend did not see the client's FIN"
    );
    server.write(b"after your FIN\n").await;
    assert_eq!(client.read_exactly(15).await, b"after your FIN\n");
    server.write(b"and more").await;
    assert_eq!(client.read_exactly(8).await, b"and more");
    // The backend closes: the client sees the end, and lb closes its connection (no keep-alive after a tunnel).
    drop(server);
    assert_eq!(client.read_until_closed(PATIENCE).await, b"");
}

#[tokio::test]
async fn the_backend_half_closes_first_and_the_client_may_still_send() {
    let (mut backend, lb) = tunnel_setup().await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    server.write(b"last words").await;
    server.shutdown_write().await;
    assert_eq!(client.read_exactly(10).await, b"last words");
    // The client's read side ends; its write side still works.
    assert_eq!(client.read_until_closed(PATIENCE).await, b"");
    client.send(b"one more thing").await;
    assert_eq!(server.read_exactly(14).await, b"one more thing");
    client.shutdown_write().await;
    assert_eq!(server.read_until_eof(PATIENCE).await, b"");
}

#[tokio::test]
async fn any_other_answer_to_an_upgrade_request_is_an_ordinary_response() {
    let backend = ScriptedBackend::start(|request| {
        let answer: &[u8] = match request.target.as_str() {
            "/refuse" => b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: x-echo/2\r\nContent-Length: 9\r\n\r\nno thanks",
            "/ignore" => b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nignored",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain",
        };
        vec![Step::write(answer)]
    })
    .await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;
    let upgrade = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: x-echo/1\r\n\r\n")
    };

    conn.send(upgrade("/refuse").as_bytes()).await;
    let refused = conn.try_response().await.expect("an answer");
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (426, "no thanks")
    );
    assert!(!conn.last_said_close(), "{refused:?}");

    conn.send(upgrade("/ignore").as_bytes()).await;
    let ignored = conn.try_response().await.expect("an answer");
    assert_eq!((ignored.status, ignored.text().as_str()), (200, "ignored"));
    assert!(!conn.last_said_close(), "{ignored:?}");

    // The same connection carries a plain request afterwards: no tunnel was made of it.
    conn.send(b"GET /next HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let plain = conn.try_response().await.expect("an answer");
    assert_eq!((plain.status, plain.text().as_str()), (200, "plain"));
    assert_eq!(backend.hits(), 3);
}

#[tokio::test]
async fn upgrade_h2c_is_dropped_and_the_request_goes_on_as_http_1_1() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(
        b"GET /echo/h2c HTTP/1.1\r\n\
          Host: shop.example\r\n\
          Connection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAAQAAP__\r\n\
          \r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.status_line.starts_with("HTTP/1.1 200"),
        "{response:?}"
    );
    let seen = backend.last_seen();
    assert_eq!(
        seen.header_values("upgrade"),
        Vec::<&str>::new(),
        "{seen:?}"
    );
    assert_eq!(
        seen.header_values("http2-settings"),
        Vec::<&str>::new(),
        "{seen:?}"
    );
    let connection = tokens(seen.header_values("connection"));
    assert!(
        !connection
            .iter()
            .any(|t| t == "upgrade" || t == "http2-settings"),
        "{seen:?}"
    );
    // Still plain HTTP/1.1 with keep-alive.
    conn.send(b"GET /after HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(backend.hits(), 2);
}

#[tokio::test]
async fn an_http_1_0_request_cannot_upgrade() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(
        b"GET /echo/old HTTP/1.0\r\n\
          Host: shop.example\r\n\
          Connection: upgrade\r\n\
          Upgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\
          \r\n",
    )
    .await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_not_asked_to_upgrade(&backend.last_seen(), "an HTTP/1.0 upgrade");
}

#[tokio::test]
async fn a_101_the_client_did_not_ask_for_is_a_502() {
    let backend =
        ScriptedBackend::start(|_| vec![Step::write(SWITCHING), Step::Sleep(PATIENCE)]).await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .start()
        .await;
    let requests: [&[u8]; 2] = [
        b"GET /plain HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        // An HTTP/1.0 request's Upgrade is dropped, so the backend was not asked either.
        b"GET /old HTTP/1.0\r\nHost: shop.example\r\nConnection: upgrade\r\nUpgrade: x-echo/1\r\n\r\n",
    ];
    for request in requests {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(request).await;
        let response = conn.response().await;
        assert_eq!(
            response.status,
            502,
            "{}: {response:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_tunnel_idle() {
    let mut backend = HandoffBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("tunnel_idle", "300ms")
        .start()
        .await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    let opened = Instant::now();
    assert_eq!(client.read_until_closed(Duration::from_secs(5)).await, b"");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(200),
        "closed after {after:?}, before tunnel_idle"
    );
    assert_eq!(server.read_until_eof(PATIENCE).await, b"");
}

#[tokio::test]
async fn a_tunnel_with_bytes_one_way_only_is_not_idle() {
    let mut backend = HandoffBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("tunnel_idle", "300ms")
        .start()
        .await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    // A byte every 100 ms from the backend for 1.5 s, five times tunnel_idle; the client sends nothing.
    for tick in 0..15u8 {
        server.write(&[b'a' + tick]).await;
        assert_eq!(client.read_exactly(1).await, [b'a' + tick], "tick {tick}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still open both ways.
    client.send(b"still here").await;
    assert_eq!(server.read_exactly(10).await, b"still here");
    // Then silence closes it.
    assert_eq!(client.read_until_closed(Duration::from_secs(5)).await, b"");
}

#[tokio::test]
async fn a_quiet_tunnel_outlives_the_http_timeouts() {
    let mut backend = HandoffBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("idle", "300ms")
        .timeout("backend_response", "300ms")
        .timeout("client_header", "300ms")
        .start()
        .await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    // Four times the HTTP timeouts of silence; tunnel_idle is its default (1 h).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client.send(b"anyone?").await;
    assert_eq!(server.read_exactly(7).await, b"anyone?");
    server.write(b"yes").await;
    assert_eq!(client.read_exactly(3).await, b"yes");
}

#[tokio::test]
async fn a_tunnels_backend_connection_is_never_reused() {
    let mut backend = HandoffBackend::start().await;
    let lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("tunnel_idle", "300ms")
        // One worker, so one pool: the next request could not miss a connection kept by another.
        .set("workers", 1)
        .start()
        .await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    client.send(b"ping").await;
    assert_eq!(server.read_exactly(4).await, b"ping");
    server.write(b"pong").await;
    assert_eq!(client.read_exactly(4).await, b"pong");
    // lb ends the silent tunnel while its backend connection is open both ways, in the middle of a protocol that
    // is not HTTP: put back in the pool, it would carry the next request.
    assert_eq!(client.read_until_closed(PATIENCE).await, b"");
    let mut next = RawConn::connect(lb.addr()).await;
    next.send(b"GET /after HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    let fresh = backend.try_next(Duration::from_secs(5)).await;
    let Some(mut fresh) = fresh else {
        let old = server.read_until_eof(Duration::from_secs(1)).await;
        panic!(
            "the next request came on no new backend connection; the tunnel's got {:?}",
            String::from_utf8_lossy(&old)
        );
    };
    assert_eq!(fresh.head.target, "/after");
    assert_eq!(fresh.head.header("host"), Some("shop.example"));
    fresh
        .write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
        .await;
    let response = next.response().await;
    assert_eq!((response.status, response.text().as_str()), (200, "fresh"));
    // The tunnel's connection was closed, with nothing after the tunnel's bytes.
    assert_eq!(server.read_until_eof(PATIENCE).await, b"");
    assert_eq!(backend.connections(), 2);
}

async fn wait_refused(addr: SocketAddr) {
    wait_until("new connections are refused", PATIENCE, async || {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn on_sigterm_a_tunnel_works_until_the_drain_deadline_then_closes_and_lb_exits_0() {
    let mut backend = HandoffBackend::start().await;
    let mut lb = TestLb::builder()
        .backend_at(1, backend.addr())
        .timeout("drain", "1s")
        .start()
        .await;
    let (mut client, mut server) = open_tunnel(lb.addr(), &mut backend, b"").await;

    lb.signal("TERM").await;
    let signalled = Instant::now();
    wait_refused(lb.addr()).await;
    // The tunnel still carries bytes both ways during the drain.
    client.send(b"during the drain").await;
    assert_eq!(server.read_exactly(16).await, b"during the drain");
    server.write(b"still served").await;
    assert_eq!(client.read_exactly(12).await, b"still served");

    assert_eq!(client.read_until_closed(PATIENCE).await, b"");
    let closed = signalled.elapsed();
    assert!(
        closed >= Duration::from_millis(900),
        "the tunnel was closed {closed:?} after SIGTERM, before the 1 s drain deadline"
    );
    assert!(
        closed < Duration::from_secs(4),
        "the tunnel was closed {closed:?} after SIGTERM, long after the 1 s drain deadline"
    );
    assert_eq!(server.read_until_eof(PATIENCE).await, b"");
    let status = lb.wait_exit(PATIENCE).await;
    assert_eq!(
        status.code(),
        Some(0),
        "a tunnel closed by the drain is a clean exit"
    );
}

#[tokio::test]
async fn a_tunnel_flooded_toward_a_client_that_does_not_read_holds_little_memory() {
    const FLOOD: u64 = 64 * 1024 * 1024;
    let (mut backend, lb) = tunnel_setup().await;
    let (mut client, server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    let baseline = peak_memory_kib(lb.pid());

    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let sent = sent.clone();
        let (mut stream, _) = server.into_parts();
        tokio::spawn(async move {
            let mut chunks = Box::pin(pattern_chunks(FLOOD));
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.expect("a pattern chunk");
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            let _ = stream.shutdown().await;
        })
    };
    // Wait until the backend is held back (nothing more leaves it for half a second), or has sent everything.
    let mut last = (0, Instant::now());
    wait_until("the backend is held back", PATIENCE, async || {
        let now = sent.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        }
        now == FLOOD || (now > 0 && last.1.elapsed() >= Duration::from_millis(500))
    })
    .await;
    let held = sent.load(Ordering::SeqCst);
    let peak = peak_memory_kib(lb.pid());
    assert!(
        peak < baseline + 8 * 1024,
        "lb's peak memory went from {baseline} KiB to {peak} KiB while {held} bytes were in flight"
    );
    assert!(
        held < FLOOD,
        "the backend wrote all {FLOOD} bytes without the client reading any"
    );

    // Then the client reads it all, intact.
    let mut expected = Box::pin(pattern_chunks(FLOOD));
    let mut offset = 0;
    while let Some(chunk) = expected.next().await {
        let chunk = chunk.expect("a pattern chunk");
        let got = client.read_exactly(chunk.len()).await;
        if got != chunk {
            same_bytes(&got, &chunk, &format!("the chunk at {offset}"));
        }
        offset += chunk.len();
    }
    assert_eq!(client.read_until_closed(PATIENCE).await, b"");
    flood.await.expect("the flood task");
}

#[tokio::test]
async fn bytes_the_client_sends_before_the_101_reach_the_backend_after_it() {
    let (mut backend, lb) = tunnel_setup().await;
    let mut client = RawConn::connect(lb.addr()).await;
    // A client that does not wait for the switch: its first tunnel bytes come right behind the request head.
    client
        .send(&[UPGRADE_REQUEST, b"early bytes".as_slice()].concat())
        .await;
    let mut server = backend.next().await;
    server.write(SWITCHING).await;
    assert_eq!(client.response().await.status, 101);
    assert_eq!(server.read_exactly(11).await, b"early bytes");
    server.write(b"seen").await;
    assert_eq!(client.read_exactly(4).await, b"seen");
}

#[tokio::test]
async fn h2c_is_taken_out_of_a_list_of_protocols_and_the_rest_is_offered() {
    let (mut backend, lb) = tunnel_setup().await;
    let mut client = RawConn::connect(lb.addr()).await;
    client
        .send(
            b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c, x-echo/1\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        )
        .await;
    let mut server = backend.next().await;
    assert_eq!(server.head.header("upgrade"), Some("x-echo/1"));
    assert_eq!(server.head.header("http2-settings"), None);
    assert_eq!(server.head.connection_tokens(), ["upgrade"]);
    server.write(SWITCHING).await;
    assert_eq!(client.response().await.status, 101);
    client.send(b"through").await;
    assert_eq!(server.read_exactly(7).await, b"through");
}

/// A tunnel's small writes go out as they come, on the connection's first exchange too: Nagle's algorithm must not
/// hold a second small write until the client acknowledges the first (a delayed ACK: 40 ms on Linux). Interactive
/// protocols (a WebSocket server that answers one message with two) otherwise pay 40 ms per round trip. A
/// connection whose first request was a plain one has TCP_NODELAY already (set on the way to keep-alive), which is
/// why this uses an upgrade on a new connection.
#[tokio::test]
async fn a_tunnel_on_a_new_connection_passes_small_writes_on_without_a_delayed_ack_stall() {
    let (mut backend, lb) = tunnel_setup().await;
    let (mut client, server) = open_tunnel(lb.addr(), &mut backend, b"").await;
    let (mut server, rest) = server.into_parts();
    assert!(rest.is_empty());
    // The test's own backend must not be the one delaying.
    server.set_nodelay(true).unwrap();
    let mut rounds = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        client.send(b"?").await;
        let mut asked = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut asked)
            .await
            .expect("the backend reads the question");
        server.write_all(b"first").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        server.write_all(b"second").await.unwrap();
        assert_eq!(client.read_exactly(11).await, b"firstsecond");
        rounds.push(started.elapsed());
    }
    rounds.sort();
    let median = rounds[rounds.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "a round trip of two small writes took {median:?} (median; all: {rounds:?}): Nagle's algorithm is on for the \
         tunnel's client side"
    );
}

/// A backend that resets a tunnel makes lb reset the client's connection too, as for a cut HTTP answer: a clean
/// close (FIN) would tell the client that the backend ended its stream on purpose, which for a protocol framed by
/// the end of the stream makes a truncated stream look complete.
#[tokio::test]
async fn a_backend_that_resets_a_tunnel_makes_the_client_see_a_reset_not_a_clean_end() {
    let (mut backend, lb) = tunnel_setup().await;
    let mut client = TcpStream::connect(lb.addr()).await.expect("connect to lb");
    client.write_all(UPGRADE_REQUEST).await.unwrap();
    let server = backend.next().await;
    let (mut server, _) = server.into_parts();
    server
        .write_all(&[SWITCHING, b"partial"].concat())
        .await
        .unwrap();
    // The client has the 101 and the tunnel's first bytes...
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.ends_with(b"partial") {
        let n = tokio::time::timeout(
            PATIENCE,
            tokio::io::AsyncReadExt::read(&mut client, &mut buf),
        )
        .await
        .expect("the 101 and the first bytes within the patience")
        .expect("read from lb");
        assert!(n > 0, "lb closed before the tunnel's first bytes");
        received.extend_from_slice(&buf[..n]);
    }
    // ...then the backend resets its connection.
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    let ended = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read(&mut client, &mut buf),
    )
    .await
    .expect("the tunnel ends within the patience");
    match ended {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(0) => panic!("the backend reset the tunnel, but the client saw a clean end of stream"),
        other => panic!("after the backend's reset the client read {other:?}"),
    }
}
