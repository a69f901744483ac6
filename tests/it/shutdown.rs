//! Graceful shutdown: on SIGINT or SIGTERM `lb` refuses new connections, lets the requests in flight finish, closes
//! idle connections and exits 0; the drain deadline bounds the wait (and what it cuts makes the exit status 1), and a
//! second SIGINT ends it at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::harness::{client, wait_until, RawConn, TestBackend, TestLb, PATIENCE};

/// Starts a GET of `path` and waits until the backend has it: from then on the request is in flight.
async fn in_flight(
    lb: &TestLb,
    backend: &TestBackend,
    path: &str,
) -> JoinHandle<reqwest::Result<(u16, String)>> {
    let url = lb.url(path);
    let request = tokio::spawn(async move {
        let response = client().get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    });
    wait_until("the backend has the request", PATIENCE, async || {
        backend.hits() == 1
    })
    .await;
    request
}

async fn wait_refused(addr: SocketAddr) {
    wait_until("new connections are refused", PATIENCE, async || {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn sigint_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder().backend(&backend).start().await;
    let request = in_flight(&lb, &backend, "/slow?ms=1500").await;

    lb.signal("INT").await;
    let signalled = Instant::now();
    wait_refused(lb.addr()).await;

    let answer = request
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(answer, (200, "hello from backend 1".to_owned()));
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "the drain waited for its 5 s deadline"
    );
}

#[tokio::test]
async fn sigterm_drains_the_same_way() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder().backend(&backend).start().await;
    let request = in_flight(&lb, &backend, "/slow?ms=800").await;

    lb.signal("TERM").await;
    wait_refused(lb.addr()).await;

    let answer = request
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(answer, (200, "hello from backend 1".to_owned()));
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_the_exit() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder()
        .backend(&backend)
        .timeout("drain", "10s")
        .start()
        .await;
    let mut idle = RawConn::connect(lb.addr()).await;
    idle.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    assert_eq!(idle.response().await.status, 200);

    let signalled = Instant::now();
    lb.signal("INT").await;

    assert_eq!(
        idle.read_until_closed(PATIENCE).await,
        b"",
        "the idle connection was not closed"
    );
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "an idle connection held lb until the deadline"
    );
}

#[tokio::test]
async fn the_drain_deadline_bounds_the_wait() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder()
        .backend(&backend)
        .arg("--drain-timeout")
        .arg("1s")
        .start()
        .await;
    let _request = in_flight(&lb, &backend, "/slow?ms=30000").await;

    let signalled = Instant::now();
    lb.signal("INT").await;
    let status = lb.wait_exit(PATIENCE).await;

    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "exited after {waited:?}, before the deadline"
    );
    assert!(
        waited < Duration::from_secs(4),
        "exited after {waited:?}, long after the 1 s deadline"
    );
    assert_eq!(status.code(), Some(1), "a cut request is a failed drain");
    lb.wait_log("1 request still in flight cut", PATIENCE).await;
}

#[tokio::test]
async fn a_second_sigint_exits_at_once_with_130() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder()
        .backend(&backend)
        .timeout("drain", "20s")
        .start()
        .await;
    let _request = in_flight(&lb, &backend, "/slow?ms=30000").await;
    lb.signal("INT").await;
    wait_refused(lb.addr()).await;

    let again = Instant::now();
    lb.signal("INT").await;
    let status = lb.wait_exit(PATIENCE).await;

    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        again.elapsed() < Duration::from_secs(2),
        "took {:?}",
        again.elapsed()
    );
}

#[tokio::test]
async fn sigterm_under_load_answers_every_request_that_was_sent() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder().backend(&backend).start().await;
    let addr = lb.addr();
    // 32 clients, each on its own keep-alive connection, sending one request after another until an answer says
    // `connection: close`. A request sent and never answered is what a drain must not do.
    let clients: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = RawConn::connect(addr).await;
                let mut answered = 0;
                loop {
                    let sent = conn
                        .try_send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
                        .await;
                    if sent.is_err() {
                        return Err(format!("send failed after {answered} answers"));
                    }
                    match conn.try_response().await {
                        Ok(response) if response.status == 200 => answered += 1,
                        Ok(response) => return Err(format!("answered {response:?}")),
                        Err(error) => return Err(format!("no answer after {answered}: {error}")),
                    }
                    if conn.last_said_close() {
                        return Ok(answered);
                    }
                }
            })
        })
        .collect();
    wait_until("traffic flows", PATIENCE, async || backend.hits() > 500).await;
    lb.signal("TERM").await;
    let mut total = 0;
    for client in clients {
        total += client
            .await
            .unwrap()
            .expect("every request sent was answered");
    }
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
    assert!(total > 500);
}

#[tokio::test]
async fn sighup_changes_nothing_and_cuts_nothing() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder().backend(&backend).start().await;
    let request = in_flight(&lb, &backend, "/slow?ms=500").await;
    lb.signal("HUP").await;
    lb.wait_log("SIGHUP received", PATIENCE).await;
    let answer = request
        .await
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(answer, (200, "hello from backend 1".to_owned()));
    assert_eq!(lb.get("/").await.0, 200, "still serving");
    lb.signal("TERM").await;
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_head_still_arriving_at_shutdown_gets_408_after_the_grace_and_cuts_nothing() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder()
        .backend(&backend)
        .timeout("client_header", "30s")
        .timeout("drain", "20s")
        .start()
        .await;
    let mut slow = RawConn::connect(lb.addr()).await;
    slow.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n").await;
    let signalled = Instant::now();
    lb.signal("TERM").await;
    assert_eq!(slow.response().await.status, 408);
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "a head is not a request cut: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the slow head held lb for {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn connections_queued_at_max_connections_are_served_by_the_drain() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder()
        .backend(&backend)
        .set("max_connections", 1)
        .start()
        .await;
    let mut holder = RawConn::connect(lb.addr()).await;
    holder
        .send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await;
    assert_eq!(holder.response().await.status, 200);
    // Six more wait at the limit: in the kernel's queues, or accepted and waiting for a place.
    let mut waiting = Vec::new();
    for _ in 0..6 {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
            .await;
        waiting.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    lb.signal("TERM").await;
    for (i, conn) in waiting.iter_mut().enumerate() {
        let answer = conn.try_response().await;
        assert!(
            matches!(&answer, Ok(r) if r.status == 200),
            "waiting client {i}: {answer:?}"
        );
    }
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn pipelined_requests_already_sent_at_shutdown_are_all_answered() {
    let backend = TestBackend::start(1).await;
    let mut lb = TestLb::builder().backend(&backend).start().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(
        b"GET /slow?ms=400 HTTP/1.1\r\nHost: shop.example\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: shop.example\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )
    .await;
    wait_until("the first is in flight", PATIENCE, async || {
        backend.hits() == 1
    })
    .await;
    lb.signal("TERM").await;
    let mut closes = Vec::new();
    for which in ["first", "second", "third"] {
        let answer = conn.try_response().await;
        assert!(
            matches!(&answer, Ok(r) if r.status == 200),
            "{which}: {answer:?}"
        );
        closes.push(conn.last_said_close());
    }
    assert_eq!(closes, [false, false, true], "only the last answer closes");
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
}
