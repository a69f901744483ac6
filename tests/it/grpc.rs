//! gRPC through `lb`: a tonic client, `lb`, tonic servers as `protocol = "h2c"` backends. Unary and server
//! streaming calls work end to end, with their trailers (`grpc-status`), and errors reach the client as gRPC
//! statuses.

use http::uri::PathAndQuery;
use serde_json::json;

use crate::harness::{grpc_client, GrpcBackend, RawCodec, TestLb};

async fn lb_over_grpc(backends: &[&GrpcBackend]) -> TestLb {
    let backends: Vec<_> = backends
        .iter()
        .map(|b| json!({"id": b.id, "host": "127.0.0.1", "port": b.addr().port(), "protocol": "h2c"}))
        .collect();
    // A tonic server speaks only HTTP/2: its health is checked by a connect.
    let config = json!({
        "backends": backends,
        "health_check": {"type": "tcp", "interval": "100ms", "fall": 1, "rise": 1},
        "workers": 2,
    });
    TestLb::from_file("lb.json", &config.to_string()).await
}

#[tokio::test]
async fn a_unary_call_goes_through_in_turn() {
    let one = GrpcBackend::start(1).await;
    let two = GrpcBackend::start(2).await;
    let lb = lb_over_grpc(&[&one, &two]).await;
    let mut grpc = grpc_client(lb.addr()).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        grpc.ready().await.unwrap();
        let request = tonic::Request::new(b"world".to_vec());
        let path = PathAndQuery::from_static("/test.Greeter/Hello");
        let response = grpc
            .unary(request, path, RawCodec)
            .await
            .expect("a gRPC answer");
        let seen = response.metadata().get("x-seen-forwarded-for").cloned();
        assert_eq!(seen.unwrap(), "127.0.0.1");
        answers.push(String::from_utf8(response.into_inner()).unwrap());
    }
    answers.sort();
    assert_eq!(
        answers,
        [
            "hello world from backend 1",
            "hello world from backend 1",
            "hello world from backend 2",
            "hello world from backend 2"
        ]
    );
}

#[tokio::test]
async fn a_grpc_error_status_reaches_the_client() {
    let one = GrpcBackend::start(1).await;
    let lb = lb_over_grpc(&[&one]).await;
    let mut grpc = grpc_client(lb.addr()).await;
    grpc.ready().await.unwrap();
    let request = tonic::Request::new(b"missing".to_vec());
    let path = PathAndQuery::from_static("/test.Greeter/Hello");
    let status = grpc.unary(request, path, RawCodec).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no such name");
}

#[tokio::test]
async fn a_server_streaming_call_ends_with_its_trailers() {
    let one = GrpcBackend::start(7).await;
    let lb = lb_over_grpc(&[&one]).await;
    let mut grpc = grpc_client(lb.addr()).await;
    grpc.ready().await.unwrap();
    let request = tonic::Request::new(b"5".to_vec());
    let path = PathAndQuery::from_static("/test.Greeter/Count");
    let response = grpc
        .server_streaming(request, path, RawCodec)
        .await
        .expect("a stream");
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(message) = stream.message().await.expect("a message or the end") {
        got.push(String::from_utf8(message).unwrap());
    }
    assert_eq!(got, ["7:1", "7:2", "7:3", "7:4", "7:5"]);
    // The end came with the trailers, `grpc-status: 0`: tonic reports a missing status as an error above.
    let trailers = stream.trailers().await.expect("trailers");
    assert!(trailers.is_some());
}
