//! One client connection: hyper's HTTP/1 server, our proxy as its service, and the connection's timeouts.
//!
//! hyper's own header-read timer closes a slow connection without a word and starts at the end of the previous
//! response, so it cannot tell a slowloris from an idle keep-alive client. We keep the two apart by watching the
//! connection's phase: *Head* (reading a request head: the first bytes of a request arrived, or the connection is
//! new), *Busy* (a request is being proxied) and *Idle* (between requests). A head that does not arrive within
//! `client_header` gets `408` and a close; an idle connection is closed silently after `idle`; a busy one has no
//! deadline here (the proxy bounds the wait for the backend). On shutdown hyper is told to finish the request in
//! flight and then close.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::config::Timeouts;
use crate::proxy::{ClientBody, Proxy};

/// The largest request head accepted (request line and headers); beyond it hyper answers 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in one request; beyond it hyper answers 431.
const MAX_HEADERS: usize = 128;

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 20\r\nconnection: close\r\n\r\n408 Request Timeout\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Busy,
    Idle,
}

/// The phase of one connection, shared by its stream, its service and its response bodies (all on one thread).
struct Watch {
    phase: Cell<Phase>,
    since: Cell<Instant>,
    /// Whether the client sent anything yet: a connection that never did is closed without a 408.
    spoke: Cell<bool>,
}

impl Watch {
    fn set(&self, phase: Phase) {
        self.phase.set(phase);
        self.since.set(Instant::now());
    }

    /// When the current phase runs out, if it can.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        match self.phase.get() {
            Phase::Head => Some(self.since.get() + timeouts.client_header),
            Phase::Idle => Some(self.since.get() + timeouts.idle),
            Phase::Busy => None,
        }
    }
}

/// Serves one client connection until it closes, times out, or finishes its last request after shutdown.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Rc<Proxy>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let watch = Rc::new(Watch {
        phase: Cell::new(Phase::Head),
        since: Cell::new(Instant::now()),
        spoke: Cell::new(false),
    });
    let service = {
        let watch = watch.clone();
        service_fn(move |request| {
            watch.set(Phase::Busy);
            let proxy = proxy.clone();
            let watch = watch.clone();
            async move {
                let response = proxy.handle(request, peer).await;
                Ok::<_, std::convert::Infallible>(response.map(|body| WatchedBody {
                    inner: body,
                    watch: Some(watch),
                }))
            }
        })
    };
    let io = TokioIo::new(WatchedStream {
        stream,
        watch: watch.clone(),
    });
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(io, service);

    let mut cancelled = pin!(shutdown.cancelled());
    let mut draining = false;
    let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::ZERO));
    let ended = poll_fn(|cx| {
        if !draining && cancelled.as_mut().poll(cx).is_ready() {
            draining = true;
            Pin::new(&mut connection).graceful_shutdown();
        }
        if let Poll::Ready(result) = Pin::new(&mut connection).poll(cx) {
            return Poll::Ready(End::Closed(result));
        }
        // The phase may have changed while hyper ran: re-arm the timer for the phase we are in now.
        let Some(deadline) = watch.deadline(&timeouts) else {
            return Poll::Pending;
        };
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(End::TimedOut(watch.phase.get())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;

    match ended {
        End::Closed(Ok(())) => {}
        End::Closed(Err(error)) => tracing::debug!(%peer, %error, "client connection error"),
        End::TimedOut(Phase::Head) if watch.spoke.get() => {
            tracing::debug!(%peer, "client sent no complete request head in time: 408");
            let mut stream = connection.into_parts().io.into_inner().stream;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                stream.write_all(REQUEST_TIMEOUT).await?;
                stream.shutdown().await
            })
            .await;
        }
        End::TimedOut(phase) => tracing::debug!(%peer, ?phase, "client connection timed out"),
    }
}

enum End {
    Closed(Result<(), hyper::Error>),
    TimedOut(Phase),
}

pin_project! {
    /// The client's socket, noting when the first bytes of a new request head arrive.
    struct WatchedStream {
        #[pin]
        stream: TcpStream,
        watch: Rc<Watch>,
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.spoke.set(true);
            if this.watch.phase.get() == Phase::Idle {
                this.watch.set(Phase::Head);
            }
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

/// A response body that marks the connection idle once it has been sent (or dropped).
struct WatchedBody {
    inner: ClientBody,
    watch: Option<Rc<Watch>>,
}

impl WatchedBody {
    fn done(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.set(Phase::Idle);
        }
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.done();
    }
}
