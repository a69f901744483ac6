//! Senders that use Nagle's algorithm (no TCP_NODELAY: Python's `http.server`, many clients) send a small body
//! only once their head is acknowledged. A connection that acknowledges late (a kept-alive one, or a new one whose
//! listener turned quick acknowledgements off) would hold every such request 40 ms or more; lb acknowledges at
//! once when a head came without its body, on both sides.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::TestLb;

/// The shortest delayed acknowledgement Linux makes.
const DELAYED_ACK: Duration = Duration::from_millis(40);

#[tokio::test]
async fn heads_and_bodies_written_apart_are_not_held_up() {
    let backend = nagle_echo_backend().await;
    let lb = TestLb::builder()
        .backend_at(1, backend)
        .health("interval", "10s")
        .start()
        .await;

    let mut slow = Vec::new();
    for i in 0..6 {
        let mut client = TcpStream::connect(lb.addr()).await.expect("connect");
        let started = Instant::now();
        // Two writes, Nagle on: the body leaves only when the head is acknowledged.
        client
            .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        client.write_all(b"0123456789").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let took = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\n0123456789"), "{answer}");
        if took >= DELAYED_ACK {
            slow.push((i, took));
        }
    }
    // A late acknowledgement holds up every request; one slow request is the machine, not lb.
    assert!(slow.len() <= 1, "requests held up: {slow:?}");
}

/// A backend without TCP_NODELAY that reads a whole request, then writes its answer's head and body in two writes
/// (as Python's `http.server` does); `GET` (the health check) gets a bodiless 200.
async fn nagle_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    addr
}

async fn echo(mut stream: TcpStream) {
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => input.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&input[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap_or(0));
        while input.len() < end + 4 + length {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => input.extend_from_slice(&buf[..n]),
            }
        }
        let body: Vec<u8> = input.drain(..end + 4 + length).skip(end + 4).collect();
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
    }
}
