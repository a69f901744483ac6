//! The built-in demo of `lb demo`: three tiny HTTP backends that say who they are.
//!
//! They run on the caller's runtime, beside the balancer, so that `./lb demo` shows round robin, health checks and
//! failover with nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts a demo backend answering `hello from backend <id>` on `addr`. Returns once it listens.
pub async fn start_backend(id: u64, addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_request| async move {
                    let mut response =
                        Response::new(Full::new(Bytes::from(format!("hello from backend {id}\n"))));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}
