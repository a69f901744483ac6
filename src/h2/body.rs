//! The bodies the generic path gives hyper to send to a client: a backend's, passed through frame by frame
//! (trailers included: gRPC's status travels in them) while it is counted, or a short one of `lb`'s own (an error).
//!
//! A backend's body reports how it ended ([`Ended`]) to the exchange that is waiting for it: whole, broken (by the
//! backend), or dropped before its end (the client went away or reset its stream). The exchange holds the
//! request's in-flight guards and writes its access log line only then, as the fast path does at the end of an
//! answer.
//!
//! A backend's body that stops moving for `timeouts.backend_response` (the fast path's stall limit) is cut: the
//! client sees it fail (a reset stream, or a connection closed mid-body), never a short body taken for whole.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// Why a body failed, for hyper (which ends the client's stream or connection on it).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What the client is sent as a body.
pub type ClientBody = Either<Tracked, Full<Bytes>>;

/// How a backend's body ended, with the body bytes the client was given.
#[derive(Debug)]
pub enum Ended {
    Whole(u64),
    /// The backend's side failed in the middle.
    Broken(u64, String),
    /// The backend's side stood still for too long.
    Stalled(u64, String),
    /// Dropped before its end: the client is gone.
    Dropped(u64),
}

/// A backend's body on its way to the client, counted.
pub struct Tracked {
    inner: Incoming,
    bytes: u64,
    report: Option<oneshot::Sender<Ended>>,
    /// How long the body may stand still, and until when it may now.
    stall: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Tracked {
    /// `inner`, cut when it stands still for `stall`.
    pub fn new(inner: Incoming, stall: Duration) -> (Self, oneshot::Receiver<Ended>) {
        let (report, ended) = oneshot::channel();
        let tracked = Tracked {
            inner,
            bytes: 0,
            report: Some(report),
            stall,
            deadline: Box::pin(tokio::time::sleep(stall)),
        };
        (tracked, ended)
    }

    fn end(&mut self, ended: impl FnOnce(u64) -> Ended) {
        if let Some(report) = self.report.take() {
            let _ = report.send(ended(self.bytes));
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                let next = Instant::now() + self.stall;
                self.deadline.as_mut().reset(next);
                // hyper may not poll again after the frame that ends the stream.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.end(Ended::Whole);
                }
            }
            Poll::Ready(None) => self.end(Ended::Whole),
            // The client's side sees the body cut (a reset stream, or a connection closed mid-body).
            Poll::Ready(Some(Err(error))) => {
                let detail = error.to_string();
                self.end(|bytes| Ended::Broken(bytes, detail));
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    let detail = format!("the response body stood still for {:?}", self.stall);
                    self.end(|bytes| Ended::Stalled(bytes, detail.clone()));
                    return Poll::Ready(Some(Err(detail.into())));
                }
            }
        }
        polled.map(|frame| frame.map(|frame| frame.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.end(Ended::Dropped);
    }
}

/// An answer of `lb`'s own, as the fast path writes it (`h1::write::error_response`): `503 Service Unavailable`
/// as text, with `Retry-After: 1` on a 503.
pub fn own_answer(status: StatusCode) -> Response<ClientBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let text = format!("{} {reason}\n", status.as_u16());
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The request body's pace was too slow (`timeouts.request_body`, `timeouts.idle`): the client's fault.
#[derive(Debug)]
pub struct TooSlow;

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body came too slowly")
    }
}

impl std::error::Error for TooSlow {}

/// A client's request body on its way to a backend, held to the fast path's pace: it must have arrived within
/// `timeouts.request_body` plus a second for every `MIN_BODY_RATE` bytes, and may not stand still for
/// `timeouts.idle`. Past either it fails with [`TooSlow`], and says so in `slow` (the exchange answers 408).
pub struct Paced {
    inner: Incoming,
    started: Instant,
    base: Duration,
    stall: Duration,
    bytes: u64,
    deadline: Pin<Box<Sleep>>,
    slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set when the client's body failed to read (malformed chunks, a length it did not keep to, a cut): the
    /// client's fault too (the exchange answers 400, as the fast path does), not the backend's.
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Paced {
    pub fn new(
        inner: Incoming,
        base: Duration,
        stall: Duration,
        slow: std::sync::Arc<std::sync::atomic::AtomicBool>,
        broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let started = Instant::now();
        Paced {
            inner,
            started,
            base,
            stall,
            bytes: 0,
            deadline: Box::pin(tokio::time::sleep_until(started + base.min(stall))),
            slow,
            broken,
        }
    }

    /// When the body must have moved again by, given what it carried so far.
    fn next_deadline(&self) -> Instant {
        let earned = Duration::from_secs(self.bytes / crate::config::MIN_BODY_RATE);
        (self.started + self.base + earned).min(Instant::now() + self.stall)
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                let next = self.next_deadline();
                self.deadline.as_mut().reset(next);
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.slow.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(TooSlow))));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.broken
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Poll::Ready(None) => {}
        }
        polled.map(|frame| frame.map(|frame| frame.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
