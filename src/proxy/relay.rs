//! One attempt on one backend: send the request head and body, bring back the response, decide whether the backend
//! connection can serve again.
//!
//! The request body and the response travel at the same time, for as long as both last: a backend may answer
//! before it has read the whole body (and keep reading it), and `Expect: 100-continue` needs the 100 to reach the
//! client before the body comes. The outcome says which side failed and whether anything reached the client yet,
//! because that decides everything after: a retry, an error answer, or a cut connection.
//!
//! The relay's second mode: a request that asks to upgrade (`Connection: upgrade` + `Upgrade`) and gets `101
//! Switching Protocols` becomes a tunnel (`tunnel`) once the `101` is relayed; the backend connection is then never
//! pooled. Any other answer to such a request is an ordinary response.

use std::pin::pin;
use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};

use tokio::time::Instant;

use super::informational::{receive_head, Asked, Receive};
use super::metered::Metered;
use super::outcome::{ProxyError, Record};
use super::tunnel::{self, Ended, Side};
use crate::config::MIN_BODY_RATE;
use crate::failure::Failure;
use crate::h1::body::{self, BodyError, Coding, Limits};
use crate::h1::client::{no_delay, Client};
use crate::h1::request::RequestHead;
use crate::h1::socket::{self, Unread};
use crate::h1::stall::Pace;
use crate::h1::transport::{ClientWrite, Transport};
use crate::h1::write::{self, ClientFraming};
use crate::h1::BodyLength;
use crate::log_limit::{self, Subject};
use crate::upstream::{Backend, KeepAlive, Lease, Snapshot};
use crate::worker::Worker;

/// What one attempt is about.
pub struct Leg<'a> {
    pub snapshot: &'a Snapshot,
    pub backend: &'a Backend,
    pub head: &'a RequestHead,
    /// The request may be sent again if this attempt fails before an answer (idempotent, no body).
    pub replayable: bool,
    /// The protocols the request asks to switch to (its `Upgrade` value), if it does.
    pub upgrade: Option<&'a [u8]>,
    /// When this attempt started (the time to the response head counts from here).
    pub started: Instant,
    /// Where the attempt notes the time to the final response head and the body bytes the client was sent.
    pub record: &'a mut Record,
}

/// How an attempt ended.
pub enum Attempt {
    Delivered {
        status: StatusCode,
        /// The client connection can carry another request.
        keep_alive: bool,
        /// The whole request was read from the client.
        request_read: bool,
    },
    /// The request reached the backend, which failed before answering; it may be sent again.
    Retry(ProxyError),
    /// Nothing was written to the client yet: answer with the error's status (unless the client is gone).
    Fail(ProxyError),
    /// The response had started, or the client is gone: the client connection must end.
    Broken(ProxyError),
    /// The backend switched protocols and the tunnel after it has ended (`failed`: with a reset, passed on).
    Tunneled { failed: bool },
}

/// What a delivered response left behind.
struct Relayed {
    status: StatusCode,
    keep_alive: bool,
    backend_keep_alive: bool,
    request_sent: bool,
    keep: KeepAlive,
    /// The answer was `101 Switching Protocols`: a tunnel follows.
    upgraded: bool,
}

/// Sends the request (its head is `request_head`) over `lease` and relays the answer to `client`.
pub async fn relay<T: Transport>(
    worker: &Worker,
    mut leg: Leg<'_>,
    lease: Lease,
    client: &mut Client<T>,
    request_head: &mut Vec<u8>,
    up_buf: &mut BytesMut,
) -> Attempt {
    let mut lease = lease;
    let mut response_out = worker.buffers().vec();
    let relayed = exchange(
        worker,
        &mut leg,
        &mut lease,
        client,
        request_head,
        up_buf,
        &mut response_out,
    )
    .await;
    worker.buffers().recycle_vec(response_out);
    let relayed = match relayed {
        Ok(relayed) => relayed,
        Err(attempt) => return attempt,
    };
    if relayed.upgraded {
        // What the exchange will not need again is given back: a tunnel may stay open for hours.
        worker.buffers().recycle_vec(std::mem::take(request_head));
        // Small writes both ways from now on: none may wait for the acknowledgement of the one before.
        client.no_delay();
        let _open = worker.tunnel();
        let idle = leg.snapshot.timeouts.tunnel_idle;
        let ended = tunnel::run(worker.buffers(), client, &mut lease.stream, up_buf, idle).await;
        let failed = matches!(ended, Ended::Failed(_));
        if let Ended::Failed(side) = ended {
            // The failure is passed on as it came: a reset, not a clean end, on the other side too (the client's
            // by the connection).
            let _ =
                socket2::SockRef::from(&lease.stream).set_linger(Some(std::time::Duration::ZERO));
            if side == Side::Backend {
                let key = log_limit::Key {
                    subject: Subject::Backend(leg.backend.id),
                    what: "tunnels failed",
                    reason: "the backend reset or closed its connection",
                };
                if log_limit::first(key) {
                    tracing::warn!("{}: a tunnel (101) failed on the backend's side: the client's connection is reset", leg.backend);
                }
            }
        }
        tracing::debug!(peer = %client.peer, backend = leg.backend.id, ?ended, "tunnel ended");
        return Attempt::Tunneled { failed };
    }
    let retired = leg.backend.state.retired.load(Ordering::Relaxed);
    if relayed.backend_keep_alive && relayed.request_sent && up_buf.is_empty() && !retired {
        worker.keep(leg.backend.addr, lease, relayed.keep, &leg.snapshot.pool);
    }
    Attempt::Delivered {
        status: relayed.status,
        keep_alive: relayed.keep_alive,
        request_read: relayed.request_sent,
    }
}

async fn exchange<T: Transport>(
    worker: &Worker,
    leg: &mut Leg<'_>,
    lease: &mut Lease,
    client: &mut Client<T>,
    request_head: &mut Vec<u8>,
    up_buf: &mut BytesMut,
    response_out: &mut Vec<u8>,
) -> Result<Relayed, Attempt> {
    let Leg {
        snapshot,
        backend,
        head,
        replayable,
        upgrade,
        started,
        ..
    } = *leg;
    let timeouts = &snapshot.timeouts;
    let head_request = head.method == Method::HEAD;
    let http11 = head.minor == 1;
    let asked = Asked {
        head_request,
        http11,
        upgrade,
    };
    let request_limits = Limits {
        stall: timeouts.idle,
        pace: Some(Pace {
            base: timeouts.request_body,
            bytes_per_second: MIN_BODY_RATE,
        }),
    };
    let mut request_sent = false;
    // Bytes of the client's next request (pipelined) were already read with this one's.
    let mut pipelined = false;
    let mut send_failed: Option<BodyError> = None;
    let reused = lease.reused;
    let (mut up_read, mut up_write) = lease.stream.split();
    let (mut client_read, mut client_write) = client.stream.split();
    let client_buf = &mut client.buf;
    let mut send = pin!(async {
        let length = head.body;
        let sent = body::forward(
            &mut client_read,
            &mut *client_buf,
            &mut up_write,
            request_head,
            length,
            Coding::AsIs,
            request_limits,
        );
        sent.await.map(|()| !client_buf.is_empty())
    });
    let received = {
        let mut receive = pin!(receive_head(&mut up_read, up_buf, asked, &mut client_write));

        // The backend has `backend_response` to answer once it has the whole request, or once it stopped taking
        // the body; until then, the body moving at all is what counts (its own limits). The deadline is polled only
        // from then on, and counts from its first poll.
        let mut deadline = pin!(worker.timers().deadline(timeouts.backend_response));
        loop {
            tokio::select! {
                biased;
                received = &mut receive => break received,
                sent = &mut send, if !request_sent && send_failed.is_none() => match sent {
                    Ok(more) => (request_sent, pipelined) = (true, more),
                    Err(error) if error.is_source() => {
                        return Err(Attempt::Fail(ProxyError::client_body(backend.id, &error)))
                    }
                    // The backend stopped reading: it may still have answered; the response read tells.
                    Err(error) if reused && replayable => {
                        let failure = match &error {
                            BodyError::Write(io) => Failure::of_io(io, false),
                            _ => Failure::Closed,
                        };
                        return Err(Attempt::Retry(ProxyError::new(failure, Some(backend.id), error.to_string())));
                    }
                    Err(error) => send_failed = Some(error),
                },
                () = &mut deadline, if request_sent || send_failed.is_some() => {
                    break Err(Receive::TimedOut)
                }

            }
        }
    };
    let (response, head_length) = received.map_err(|failure| match failure {
        Receive::TimedOut => Attempt::Fail(ProxyError::new(
            Failure::ResponseTimeout,
            Some(backend.id),
            format!("no response head within {:?}", timeouts.backend_response),
        )),
        // Named for the access log (the backend it was waiting for); a client that left blames no backend.
        Receive::ClientGone => {
            Attempt::Broken(ProxyError::new(Failure::ClientGone, Some(backend.id), ""))
        }
        Receive::Bad(error) => Attempt::Fail(ProxyError::new(
            Failure::BadResponse,
            Some(backend.id),
            error.0,
        )),
        Receive::Closed {
            failure,
            detail,
            answered,
        } => {
            let error = ProxyError::new(failure, Some(backend.id), detail);
            if replayable && !answered {
                Attempt::Retry(error)
            } else {
                Attempt::Fail(error)
            }
        }
    })?;
    leg.record.upstream = Some(started.elapsed());
    let upgraded = response.status == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded && !request_sent {
        // The tunnel starts where the request ends: the rest of its body goes first.
        let sent = match send_failed.take() {
            Some(error) => Err(error),
            None => (&mut send).await,
        };
        match sent {
            Ok(more) => (request_sent, pipelined) = (true, more),
            Err(error) if error.is_source() => {
                return Err(Attempt::Fail(ProxyError::client_body(backend.id, &error)))
            }
            Err(error) => {
                let detail = format!("switched protocols before taking the whole request: {error}");
                return Err(Attempt::Fail(ProxyError::new(
                    Failure::Closed,
                    Some(backend.id),
                    detail,
                )));
            }
        }
    }

    // The response head goes to the client together with the body's first bytes. Keep-alive is decided now: only
    // when the whole request is already sent can the connection be trusted for the next one.
    let has_body = response.body != BodyLength::Empty;
    if response.transfer_codings && has_body && !http11 {
        let detail = "a transfer coding (other than chunked) cannot reach an HTTP/1.0 client";
        return Err(Attempt::Fail(ProxyError::new(
            Failure::BadResponse,
            Some(backend.id),
            detail,
        )));
    }
    let coding = match !http11 && response.body == BodyLength::Chunked {
        true => Coding::Dechunked,
        false => Coding::AsIs,
    };
    // While draining, the answer closes the connection, unless the client's next request is already here (it must
    // be answered too, and a `close` would forbid that: RFC 9112 §9.6).
    let closing = worker.draining() && !pipelined && client_write.unread() != Unread::Pending;
    let keep_alive = head.keep_alive
        && request_sent
        && !closing
        && coding == Coding::AsIs
        && response.body != BodyLength::UntilClose;
    let framing = ClientFraming {
        chunked: http11 && response.body == BodyLength::Chunked,
        keep_alive,
        http10: !http11,
        codings: http11 && response.transfer_codings && has_body,
    };
    write::response_head(response_out, &up_buf[..head_length], &response, framing);
    up_buf.advance(head_length);
    if body::small_rest_to_come(response.body, up_buf.len()) {
        socket::acknowledge_now(up_read.as_ref());
    }
    if !body::fits_one_write(response.body, up_buf.len()) {
        no_delay(&client_write, &mut client.nodelay);
    }
    let response_limits = Limits {
        stall: timeouts.backend_response,
        pace: None,
    };
    // What reaches the client past the head is the body (the head goes out with its first bytes).
    let head_bytes = response_out.len() as u64;
    let mut metered = Metered::new(&mut client_write);
    // `Err`: the request body, too slow to wait for while the answer streams, ends both sides (once what was
    // written of the answer is counted).
    let forwarded = {
        let mut forward = pin!(body::forward(
            &mut up_read,
            up_buf,
            &mut metered,
            response_out,
            response.body,
            coding,
            response_limits,
        ));
        loop {
            tokio::select! {
                biased;
                forwarded = &mut forward => break Ok(forwarded),
                sent = &mut send, if !request_sent && send_failed.is_none() => match sent {
                    // The head already went out saying whether the connection stays: nothing to add.
                    Ok(_) => request_sent = true,
                    Err(error) if error.is_source() && error.is_timeout() => break Err(error),
                    Err(error) => send_failed = Some(error),
                },
            }
        }
    };
    leg.record.body_bytes = metered.written.saturating_sub(head_bytes);
    let forwarded = match forwarded {
        Ok(forwarded) => forwarded,
        Err(slow) => return Err(Attempt::Broken(ProxyError::client_body(backend.id, &slow))),
    };
    if let Err(error) = forwarded {
        let failed = ProxyError::response_body(backend.id, &error);
        // A malformed first chunk is found before the head is written: the client can still get a 502.
        let nothing_sent = error.is_source() && !response_out.is_empty();
        return Err(match nothing_sent {
            true => Attempt::Fail(failed),
            false => Attempt::Broken(failed),
        });
    }
    Ok(Relayed {
        status: response.status,
        keep_alive,
        backend_keep_alive: response.keep_alive,
        request_sent,
        upgraded,
        keep: KeepAlive {
            announced: response
                .keep_alive_timeout
                .map(|seconds| std::time::Duration::from_secs(seconds.into())),
            discard: head_request
                || response.status == StatusCode::NO_CONTENT
                || response.status == StatusCode::NOT_MODIFIED,
        },
    })
}
