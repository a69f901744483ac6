//! Bodies stream both ways and are never buffered whole: 100 MiB down and 100 MiB up arrive intact (same SHA-256,
//! same length) while `lb`'s peak memory stays far below 100 MiB.

use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::harness::{
    pattern_chunks, pattern_sha256, peak_memory_kib, RawConn, TestBackend, TestLb,
};

const SIZE: u64 = 100 * 1024 * 1024;
const MAX_PEAK_KIB: u64 = 80 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mib_each_way_arrives_intact_through_bounded_memory() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder().backend(&backend).start().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let expected = tokio::task::spawn_blocking(|| pattern_sha256(SIZE));

    let download = client
        .get(lb.url(&format!("/download?bytes={SIZE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let (mut hasher, mut length) = (Sha256::new(), 0u64);
    let mut body = download.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the download body");
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let expected = expected.await.unwrap();
    assert_eq!(length, SIZE, "download length");
    assert_eq!(
        format!("{:x}", hasher.finalize()),
        expected,
        "download checksum"
    );

    let upload = reqwest::Body::wrap_stream(pattern_chunks(SIZE));
    let answer = client
        .post(lb.url("/upload"))
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.text().await.unwrap(),
        format!("{expected} {SIZE}"),
        "upload checksum and length"
    );

    let peak = peak_memory_kib(lb.pid());
    assert!(
        peak < MAX_PEAK_KIB,
        "lb peaked at {} MiB: bodies were buffered",
        peak / 1024
    );
}

#[tokio::test]
async fn an_upload_slower_than_backend_response_still_arrives_while_it_keeps_moving() {
    let backend = TestBackend::start(1).await;
    let lb = TestLb::builder()
        .backend(&backend)
        .timeout("backend_response", "400ms")
        .start()
        .await;
    let mut conn = RawConn::connect(lb.addr()).await;

    conn.send(b"POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: 8\r\n\r\n")
        .await;
    for byte in b"dribbled" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        conn.send(&[*byte]).await;
    }
    let response = conn.response().await;

    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.text().ends_with(" 8"),
        "the backend got all 8 bytes: {}",
        response.text()
    );
}
