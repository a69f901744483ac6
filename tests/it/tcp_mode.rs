//! TCP mode (`mode = "tcp"`): each connection balanced whole over the backends, connects retried on another
//! backend, half-close passed on, an idle timeout, and a graceful drain that lets open connections finish.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{
    goodbye, greeting, pattern, same_bytes, tally, wait_until, TcpBackend, TestLb, PATIENCE,
};

/// The backends list of a config.
fn backends(list: &[&TcpBackend]) -> Value {
    let list: Vec<Value> = list
        .iter()
        .map(|b| json!({"id": b.id, "host": "127.0.0.1", "port": b.addr().port()}))
        .collect();
    Value::Array(list)
}

/// `lb` in TCP mode over `list`.
fn tcp_lb(list: &[&TcpBackend]) -> crate::harness::LbBuilder {
    TestLb::builder()
        .set("mode", "tcp")
        .set("backends", backends(list))
}

/// Connects through `lb` and answers the stream and the id of the backend that greeted.
async fn greeted(lb: &TestLb) -> (BufReader<TcpStream>, u64) {
    let stream = TcpStream::connect(lb.addr()).await.expect("connect to lb");
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
        .await
        .expect("a greeting in time")
        .expect("read the greeting");
    let id = line
        .strip_prefix("hello from tcp backend ")
        .and_then(|id| id.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not a greeting: {line:?}\n{}", lb.logs().join("\n")));
    assert_eq!(line, greeting(id));
    (stream, id)
}

/// Greeting ids of `count` connections, one after the other.
async fn greetings(lb: &TestLb, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(greeted(lb).await.1);
    }
    ids
}

#[tokio::test]
async fn connections_go_round_robin_over_two_backends() {
    let (one, two) = (TcpBackend::start(1).await, TcpBackend::start(2).await);
    let lb = tcp_lb(&[&one, &two]).start().await;
    let ids = greetings(&lb, 6).await;
    assert_eq!(tally(ids.clone()), [(1, 3), (2, 3)].into(), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "in turn: {ids:?}");
}

#[tokio::test]
async fn a_killed_backend_gets_no_connection_once_the_tcp_checks_notice() {
    let (one, two) = (TcpBackend::start(1).await, TcpBackend::start(2).await);
    let lb = tcp_lb(&[&one, &two]).start().await;
    assert_eq!(tally(greetings(&lb, 2).await), [(1, 1), (2, 1)].into());

    two.stop().await;
    let down = format!("backend 2 {} down", two.addr());
    lb.wait_log(&down, PATIENCE).await;
    let before = lb.count_logs("tcp connection sent to the next backend");
    assert_eq!(greetings(&lb, 6).await, vec![1; 6]);
    assert_eq!(
        lb.count_logs("tcp connection sent to the next backend"),
        before,
        "no connect was tried on the backend marked down"
    );
}

#[tokio::test]
async fn a_failed_connect_goes_to_the_other_backend_at_once() {
    let (one, two) = (TcpBackend::start(1).await, TcpBackend::start(2).await);
    // Checked once at start, then not for an hour: only the connect can tell backend 2 is gone.
    let lb = tcp_lb(&[&one, &two])
        .health("interval", "1h")
        .health("timeout", "1s")
        .start()
        .await;
    two.stop().await;
    let started = Instant::now();
    assert_eq!(greetings(&lb, 4).await, vec![1; 4]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "retried at once"
    );
    lb.wait_log("tcp connection sent to the next backend", PATIENCE)
        .await;
}

#[tokio::test]
async fn a_half_closed_connection_still_gets_its_answer() {
    let one = TcpBackend::start(1).await;
    let lb = tcp_lb(&[&one]).start().await;
    let (mut stream, id) = greeted(&lb).await;
    assert_eq!(id, 1);
    stream.write_all(b"ping").await.unwrap();
    stream.get_mut().shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut rest))
        .await
        .expect("the answer in time")
        .expect("read the answer");
    assert_eq!(rest, format!("ping{}", goodbye(1)));
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let one = TcpBackend::start(1).await;
    let lb = tcp_lb(&[&one])
        .timeout("tunnel_idle", "300ms")
        .start()
        .await;
    let (mut stream, _) = greeted(&lb).await;
    let quiet = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("closed within the idle timeout")
        .expect("a clean close");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(quiet.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn with_no_backend_up_a_connection_is_closed_and_logged() {
    let one = TcpBackend::start(1).await;
    let lb = tcp_lb(&[&one]).start().await;
    one.stop().await;
    lb.wait_log("down: 3 checks failed", PATIENCE).await;
    let mut stream = TcpStream::connect(lb.addr()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
    assert!(read.expect("closed at once").is_ok() && got.is_empty());
    lb.wait_log("tcp connection closed: no backend available", PATIENCE)
        .await;
}

#[tokio::test]
async fn shutdown_lets_an_open_connection_finish() {
    let one = TcpBackend::start(1).await;
    let mut lb = tcp_lb(&[&one]).start().await;
    let (mut stream, _) = greeted(&lb).await;

    lb.signal("TERM").await;
    wait_until("new connections are refused", PATIENCE, async || {
        TcpStream::connect(lb.addr()).await.is_err()
    })
    .await;
    stream.write_all(b"still here").await.unwrap();
    stream.get_mut().shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut rest))
        .await
        .expect("the answer in time")
        .expect("read the answer");
    assert_eq!(rest, format!("still here{}", goodbye(1)));
    let status = lb.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn megabytes_both_ways_arrive_whole() {
    let one = TcpBackend::start(1).await;
    let lb = tcp_lb(&[&one]).start().await;
    let (stream, _) = greeted(&lb).await;
    let (mut read, mut write) = stream.into_inner().into_split();
    let sent = pattern(8 << 20);
    let upload = {
        let sent = sent.clone();
        tokio::spawn(async move {
            write.write_all(&sent).await.unwrap();
            write.shutdown().await.unwrap();
        })
    };
    let mut echoed = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut echoed))
        .await
        .expect("the echo in time")
        .unwrap();
    upload.await.unwrap();
    let bye = goodbye(1);
    assert!(echoed.ends_with(bye.as_bytes()));
    same_bytes(&echoed[..echoed.len() - bye.len()], &sent, "the echo");
}

/// The value of the sample `name{backend="1"}` in `lb`'s metrics.
async fn backend_gauge(lb: &TestLb, name: &str) -> f64 {
    let (status, body) = lb.admin().await.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    let prefix = format!("{name}{{backend=\"1\"}} ");
    let line = body.lines().find(|line| line.starts_with(&prefix));
    let value = line.and_then(|line| line[prefix.len()..].trim().parse().ok());
    value.unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
}

#[tokio::test]
async fn an_open_connection_counts_as_in_flight_on_its_backend() {
    let one = TcpBackend::start(1).await;
    let lb = tcp_lb(&[&one]).admin().start().await;
    let (first, _) = greeted(&lb).await;
    let (second, _) = greeted(&lb).await;
    wait_until("two in flight on two connections", PATIENCE, async || {
        backend_gauge(&lb, "lb_backend_in_flight").await == 2.0
            && backend_gauge(&lb, "lb_backend_connections").await == 2.0
    })
    .await;
    drop((first, second));
    wait_until("none in flight", PATIENCE, async || {
        backend_gauge(&lb, "lb_backend_in_flight").await == 0.0
            && backend_gauge(&lb, "lb_backend_connections").await == 0.0
    })
    .await;
}
