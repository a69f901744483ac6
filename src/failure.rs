//! What went wrong, as a kind that logs, answers and (later) metrics and passive health branch on.
//!
//! A failure has a side: the backend's (it refused, reset, answered garbage or too late), the client's (it went
//! away, sent a broken or too slow body) or ours (out of file descriptors or buffers). Only the backend's failures
//! blame a backend; a client that goes away is a debug line, not a warning; a local shortage is never taken as a
//! sign that a backend is down.

use std::io;

use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No backend is healthy (or every healthy one was tried).
    NoBackend,
    /// No route takes the request, and there is no default pool (404).
    NoRoute,
    /// Every backend that could take the request has `max_connections` requests in flight (503).
    Full,
    /// This process is out of file descriptors, socket buffers or memory: nobody's fault but ours.
    LocalShortage,
    Refused,
    ConnectTimeout,
    Unreachable,
    /// Connecting failed for another reason.
    ConnectFailed,
    /// The backend reset the connection.
    Reset,
    /// The backend closed the connection before its answer was complete.
    Closed,
    /// No response head within `backend_response`.
    ResponseTimeout,
    /// A response that cannot be forwarded safely.
    BadResponse,
    /// The response body stopped moving for `backend_response`.
    Stalled,
    /// The client closed or reset its connection.
    ClientGone,
    /// The client's request body was malformed or cut short.
    ClientBody,
    /// The client sent its request body too slowly (`timeouts.request_body`) or stopped reading the answer.
    ClientTooSlow,
}

impl Failure {
    /// The kind of a failed socket operation on a backend connection (connecting, or once connected).
    pub fn of_io(error: &io::Error, connecting: bool) -> Failure {
        if is_local_shortage(error) {
            return Failure::LocalShortage;
        }
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::TimedOut if connecting => Failure::ConnectTimeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Failure::Unreachable
            }
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Failure::Reset,
            io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => Failure::Closed,
            _ if connecting => Failure::ConnectFailed,
            _ => Failure::Reset,
        }
    }

    /// Whether the backend is to blame (worth a warning, and later a mark against it).
    pub fn blames_backend(self) -> bool {
        !matches!(
            self,
            Failure::NoBackend
                | Failure::NoRoute
                | Failure::Full
                | Failure::LocalShortage
                | Failure::ClientGone
                | Failure::ClientBody
                | Failure::ClientTooSlow
        )
    }

    /// What the client is answered; 499 (nginx's "client closed request") is only ever logged.
    pub fn status(self) -> StatusCode {
        match self {
            Failure::NoBackend | Failure::Full | Failure::LocalShortage => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Failure::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::NoRoute => StatusCode::NOT_FOUND,
            Failure::ClientBody => StatusCode::BAD_REQUEST,
            Failure::ClientTooSlow => StatusCode::REQUEST_TIMEOUT,
            Failure::ClientGone => CLIENT_CLOSED_REQUEST,
            Failure::Refused
            | Failure::ConnectTimeout
            | Failure::Unreachable
            | Failure::ConnectFailed
            | Failure::Reset
            | Failure::Closed
            | Failure::BadResponse
            | Failure::Stalled => StatusCode::BAD_GATEWAY,
        }
    }

    /// Short, lowercase, for log lines: `connection refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoBackend => "no healthy backend",
            Failure::NoRoute => "no route",
            Failure::Full => "every backend at max_connections",
            Failure::LocalShortage => "out of local resources",
            Failure::Refused => "connection refused",
            Failure::ConnectTimeout => "connect timed out",
            Failure::Unreachable => "unreachable",
            Failure::ConnectFailed => "connect failed",
            Failure::Reset => "connection reset",
            Failure::Closed => "closed without a complete answer",
            Failure::ResponseTimeout => "no response in time",
            Failure::BadResponse => "bad response",
            Failure::Stalled => "response stalled",
            Failure::ClientGone => "client went away",
            Failure::ClientBody => "bad request body",
            Failure::ClientTooSlow => "client too slow",
        }
    }
}

/// nginx's 499: the client closed the connection before the answer. Logged, never sent.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Whether a socket operation failed because this process or host ran short (file descriptors, socket buffers,
/// memory) rather than because of the peer.
pub fn is_local_shortage(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A short, lowercase description of a socket error, as logs show it (`connection refused`).
pub fn describe_io(error: &io::Error) -> String {
    if is_local_shortage(error) {
        return describe_io_static(error).to_owned();
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::BrokenPipe => "connection closed".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        _ => error.to_string(),
    }
}

/// [`describe_io`] for the few errors that are logged through [`crate::log_limit`], whose keys are static.
pub fn describe_io_static(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EMFILE) => "too many open files",
        Some(libc::ENFILE) => "too many open files in the system",
        Some(libc::ENOBUFS | libc::ENOMEM) => "out of socket buffers",
        _ => match error.kind() {
            io::ErrorKind::ConnectionAborted => "connection aborted",
            io::ErrorKind::ConnectionReset => "connection reset",
            _ => "other error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_shortages_are_nobodys_fault_but_ours() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_local_shortage(&emfile));
        assert_eq!(Failure::of_io(&emfile, true), Failure::LocalShortage);
        assert!(!Failure::LocalShortage.blames_backend());
        assert_eq!(describe_io(&emfile), "too many open files");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(!is_local_shortage(&refused));
        assert_eq!(Failure::of_io(&refused, true), Failure::Refused);
        assert!(Failure::Refused.blames_backend());
        assert!(!Failure::ClientGone.blames_backend());
        assert_eq!(Failure::ClientGone.status().as_u16(), 499);
    }
}
