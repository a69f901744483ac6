//! Why a request could not be proxied, and the answer the client gets for it.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// Where a request's journey ended without a backend's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No backend is healthy (or every healthy one was already tried).
    #[error("no healthy backend")]
    NoHealthyBackend,
    /// Every backend tried failed; the last failure is kept for the log.
    #[error("all backends failed, last: {0}")]
    AllAttemptsFailed(String),
    /// The backend did not send its response head in time.
    #[error("no response from backend {backend} within {after:?}")]
    UpstreamTimeout {
        backend: u64,
        after: std::time::Duration,
    },
    /// The backend broke the exchange after the request was sent, and it may not be resent.
    #[error("backend {backend} failed: {reason}")]
    Upstream { backend: u64, reason: String },
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    /// The request is malformed in a way hyper lets through (e.g. a missing or repeated Host).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHealthyBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::AllAttemptsFailed(_) | ProxyError::Upstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A short plain-text answer: the status line's words, nothing about the backends.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status.is_client_error() {
            // The rest of what this client sent cannot be trusted to be framed as it thinks.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
