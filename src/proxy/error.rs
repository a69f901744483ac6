//! Why a request could not be proxied, and the status the client gets for it.

use std::time::Duration;

use http::StatusCode;

use crate::h1::body::BodyError;
use crate::h1::response::BadResponse;

/// Where a request's journey ended without a backend's response reaching the client.
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
    UpstreamTimeout { backend: u64, after: Duration },
    /// The backend broke the exchange after the request was sent, and it may not be resent.
    #[error("backend {backend} failed: {reason}")]
    Upstream { backend: u64, reason: String },
    /// The backend's response head cannot be forwarded safely.
    #[error("backend {backend}: {error}")]
    BadResponse { backend: u64, error: BadResponse },
    /// The client's request body was malformed or cut short.
    #[error("client request body: {0}")]
    ClientBody(BodyError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHealthyBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::AllAttemptsFailed(_)
            | ProxyError::Upstream { .. }
            | ProxyError::BadResponse { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
        }
    }
}
