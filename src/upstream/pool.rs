//! Keep-alive connections to backends, one pool per worker thread.
//!
//! Each worker owns its pool (`Rc`, no locks): a connection is only ever used by the thread that opened it. A
//! connection is lent for one exchange and given back only when that exchange ended cleanly with both sides
//! agreeing to keep it open. Idle connections are reused newest first; before reuse, one that the backend closed
//! in the meantime is noticed (from its readiness when it was idle only briefly, with a non-blocking read
//! otherwise) and dropped, and any idle for longer than [`MAX_IDLE`] is not trusted at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long an idle backend connection is kept for reuse.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// A connection idle for less than this is trusted to be open unless the reactor saw it become readable.
const TRUST_READINESS: Duration = Duration::from_millis(100);
/// Idle connections kept per backend per worker; more are closed when they come back.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// Why no connection to a backend could be had. Nothing of the request was sent in either case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("{}", describe_io(.0))]
    Io(io::Error),
}

/// A short, lowercase description of a socket error, as logs show it (`connection refused`).
pub fn describe_io(error: &io::Error) -> String {
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

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// The backend connections of one worker thread.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
}

/// A connection for one exchange; `reused` says it served an exchange before (so it may have been closed by the
/// backend since, which is why a failure on it may be retried).
pub struct Lease {
    pub stream: TcpStream,
    pub reused: bool,
}

impl Pool {
    /// An idle connection to `addr` that still looks open, or a new one.
    pub async fn lease(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Lease, ConnectError> {
        if let Some(stream) = self.take_idle(addr) {
            return Ok(Lease {
                stream,
                reused: true,
            });
        }
        self.connect(addr, connect_timeout).await
    }

    /// A new connection to `addr`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Lease, ConnectError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout(connect_timeout)),
            Ok(Err(error)) => return Err(ConnectError::Io(error)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        Ok(Lease {
            stream,
            reused: false,
        })
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            let idle_for = entry.since.elapsed();
            if idle_for < MAX_IDLE && looks_open(&entry.stream, idle_for) {
                return Some(entry.stream);
            }
        }
        None
    }

    /// Takes back a connection whose last exchange ended cleanly and that may serve another.
    pub fn give_back(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        // The oldest come first: close those past their time (a backend may have closed them long ago) and any
        // beyond the limit, so that connections not reused do not pile up.
        let stale = list
            .iter()
            .take_while(|entry| entry.since.elapsed() >= MAX_IDLE)
            .count()
            .max((list.len() + 1).saturating_sub(MAX_IDLE_PER_BACKEND));
        list.drain(..stale);
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
    }
}

/// An idle connection has nothing to read: if it became readable, the backend closed it (or sent something
/// unasked), and it must not carry a request. A connection lent again within [`TRUST_READINESS`] is judged by
/// the readiness the reactor already has (no system call: this is the busy case); one idle for longer gets a
/// non-blocking read, which also sees a close the reactor has not reported yet (a backend's own idle timeout
/// firing just now).
fn looks_open(stream: &TcpStream, idle_for: Duration) -> bool {
    let readable = stream.try_io(Interest::READABLE, || Ok(())).is_ok();
    if !readable && idle_for < TRUST_READINESS {
        return true;
    }
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
