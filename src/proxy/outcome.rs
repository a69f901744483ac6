//! How a request's journey ended ([`Outcome`]), why a request could not be proxied ([`ProxyError`]: a
//! [`Failure`] kind, the backend it happened on, and a detail for the log), and what the access log and the metrics
//! learn of the journey besides ([`Record`]).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::failure::Failure;
use crate::h1::body::BodyError;

/// How a request's journey ended.
pub enum Outcome {
    /// A backend's answer reached the client whole (for an upgrade: the `101`, and the tunnel after it ended).
    Delivered {
        status: StatusCode,
        backend: u64,
        /// The answer left the client connection able to carry another request (and said so).
        keep_alive: bool,
        /// The whole request (its body too) was read from the client.
        request_read: bool,
    },
    /// Nothing reached the client: it gets the error's status (unless it is gone).
    Failed(ProxyError),
    /// The answer had started and broke, or the client is gone: the connection must end, with a reset.
    Broken(ProxyError),
    /// The backend switched protocols (`101`) and the tunnel after it has ended; the connection ends too, with a
    /// reset if the tunnel `failed` (a side reset it, or went away).
    Tunneled { backend: u64, failed: bool },
}

/// What a journey recorded on its way, whatever its outcome (the access log's `attempts`, `upstream_ms` and `bytes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    /// Attempts made: backends picked, and the resend on a new connection (0: no backend was picked). Each one
    /// after the first is a retry (`lb_retries_total`).
    pub attempts: u32,
    /// From the start of the attempt that got the final response head to that head (`None`: no head came).
    pub upstream: Option<Duration>,
    /// Bytes of the response body written to the client (as on the wire: chunked framing included; 0 for a `101`).
    pub body_bytes: u64,
}

/// Where a request's journey ended without a backend's whole response reaching the client.
#[derive(Debug)]
pub struct ProxyError {
    pub failure: Failure,
    /// The backend it happened on, if any.
    pub backend: Option<u64>,
    /// What the log adds to the failure's name (may be empty).
    pub detail: Cow<'static, str>,
}

impl ProxyError {
    pub fn new(
        failure: Failure,
        backend: Option<u64>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        ProxyError {
            failure,
            backend,
            detail: detail.into(),
        }
    }

    /// A failure of the client's request body, while it was being sent to `backend` (named for the access log; it
    /// is not to blame). A body cut short by the client's close is a client gone (nginx's 499), not a request to
    /// answer.
    pub fn client_body(backend: u64, error: &BodyError) -> Self {
        let failure = match error {
            _ if error.is_timeout() => Failure::ClientTooSlow,
            BodyError::Read(_) | BodyError::Truncated => Failure::ClientGone,
            BodyError::Chunk(_) | BodyError::Write(_) => Failure::ClientBody,
        };
        ProxyError::new(failure, Some(backend), error.to_string())
    }

    /// A failure while the response body was moving from `backend` to the client (the backend is named whoever
    /// failed, for the access log; only a failure of its own blames it).
    pub fn response_body(backend: u64, error: &BodyError) -> Self {
        let failure = match error {
            BodyError::Write(_) if error.is_timeout() => Failure::ClientTooSlow,
            BodyError::Write(_) => Failure::ClientGone,
            BodyError::Read(_) if error.is_timeout() => Failure::Stalled,
            BodyError::Read(io) => Failure::of_io(io, false),
            BodyError::Truncated => Failure::Closed,
            BodyError::Chunk(_) => Failure::BadResponse,
        };
        ProxyError::new(failure, Some(backend), error.to_string())
    }

    pub fn status(&self) -> StatusCode {
        self.failure.status()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.backend {
            write!(f, "backend {id}: ")?;
        }
        f.write_str(self.failure.as_str())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {}
