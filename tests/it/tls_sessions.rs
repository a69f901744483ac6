//! How a TLS session with `lb` begins again and ends: a client that comes back resumes with a ticket, and a
//! connection that closes after its answer ends with `close_notify`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestBackend, PATIENCE};
use crate::tls::{lb_with, two_certificates};

#[tokio::test]
async fn a_client_that_comes_back_resumes_its_session() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        // One client config: its session cache carries the ticket from one connection to the next.
        let client = certs.ca.client_with(&[b"http/1.1"], &[version]);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(lb.addr()).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
            let mut stream = client.connect(name, tcp).await.expect("a handshake");
            // A request, so that TLS 1.3's tickets (sent after the handshake) are read.
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
            assert!(answer.starts_with(b"HTTP/1.1 200 "), "{answer:?}");
            kinds.push(format!("{:?}", stream.get_ref().1.handshake_kind()));
        }
        assert_eq!(
            kinds,
            ["Some(Full)", "Some(Resumed)"],
            "{:?}",
            version.version
        );
    }
}

/// A connection that ends after its answer (`Connection: close`, an HTTP/1.0 client) ends with TLS's `close_notify`:
/// without it a client cannot tell the end of a body delimited by the close from a cut, and strict clients (rustls,
/// OpenSSL 3 without the ragged-EOF option) report the end as an error.
#[tokio::test]
async fn a_connection_that_ends_after_its_answer_ends_with_close_notify() {
    let backend = TestBackend::start(1).await;
    let certs = two_certificates();
    let lb = lb_with(&backend, &certs).await;
    for request in [
        "GET /a HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        "GET /b HTTP/1.0\r\nHost: shop.test\r\n\r\n",
    ] {
        let mut stream = certs.ca.connect(lb.addr(), "a.test").await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
            .await
            .expect("closed in time");
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 200 "), "{request:?}: {text:?}");
        // tokio-rustls reports a close without `close_notify` as `UnexpectedEof`.
        read.unwrap_or_else(|error| panic!("{request:?}: not a clean TLS close: {error}"));
    }
}
