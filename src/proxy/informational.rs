//! Reading a backend's answer up to its final head, passing the informational (1xx) answers before it on to the
//! client: `100 Continue` (the client may send its body now), `103 Early Hints`. They reach an HTTP/1.1 client only
//! (HTTP/1.0 has no 1xx); a `101 Switching Protocols` is final when the request asked to upgrade, and a backend
//! error otherwise.

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::ReadHalf;

use crate::failure::{describe_io, Failure};
use crate::h1::body;
use crate::h1::request;
use crate::h1::response::{self, ResponseHead};
use crate::h1::transport::ClientWrite;
use crate::h1::write::{self, ClientFraming};
use crate::h1::HeadScan;

/// Why no final response head came back.
pub enum Receive {
    /// The backend had the whole request and did not answer within `backend_response`.
    TimedOut,
    /// The backend closed or reset the connection; `answered`: some response bytes had arrived.
    Closed {
        failure: Failure,
        detail: String,
        answered: bool,
    },
    Bad(response::BadResponse),
    /// Forwarding an informational response to the client failed.
    ClientGone,
}

/// What the request allows the answer to be.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    /// The request was HEAD (no body follows the answer's head).
    pub head_request: bool,
    /// The client speaks HTTP/1.1 (1xx answers reach it).
    pub http11: bool,
    /// The request asked to switch protocols (to these, an `Upgrade` value as forwarded): a `101` to one of them
    /// is its final answer.
    pub upgrade: Option<&'a [u8]>,
}

/// Why a backend's `101` to an upgrade request cannot be relayed, if it cannot (RFC 9110 §7.8, §15.2.2): an HTTP/1.0
/// server cannot switch, a `101` must say to what in one `Upgrade`, and only to protocols the client offered (so
/// never to `h2c`, which is not forwarded).
fn refused_switch(head: &ResponseHead, buf: &[u8], offered: &[u8]) -> Option<&'static str> {
    if head.minor != 1 {
        return Some("101 Switching Protocols from an HTTP/1.0 backend");
    }
    let mut upgrades = head
        .headers
        .iter()
        .filter(|h| buf[h.name.clone()].eq_ignore_ascii_case(b"upgrade"));
    let (Some(upgrade), None) = (upgrades.next(), upgrades.next()) else {
        return Some("101 Switching Protocols without one Upgrade header");
    };
    let mut chosen = request::protocols(&buf[upgrade.value.clone()]).peekable();
    let was_offered =
        |p: &[u8]| request::upgrade_protocols(offered).any(|o| o.eq_ignore_ascii_case(p));
    if chosen.peek().is_none() || !chosen.all(was_offered) {
        return Some("101 Switching Protocols to a protocol the client did not offer");
    }
    None
}

/// Reads the backend's final response head into `up_buf`; answers it and its length.
pub async fn receive_head<W: ClientWrite>(
    up_read: &mut ReadHalf<'_>,
    up_buf: &mut BytesMut,
    asked: Asked<'_>,
    client: &mut W,
) -> Result<(ResponseHead, usize), Receive> {
    let mut answered = false;
    let mut scan = HeadScan::default();
    loop {
        if !up_buf.is_empty() {
            answered = true;
        }
        // Only a buffer that holds a whole head (or has grown past the limit) is parsed: a head that trickles in
        // costs linear work, not a parse per read.
        if scan.ready(up_buf) || up_buf.len() >= response::MAX_HEAD {
            if let Some((head, length)) =
                response::parse(up_buf, asked.head_request).map_err(Receive::Bad)?
            {
                if !head.status.is_informational() {
                    return Ok((head, length));
                }
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    let refused = match asked.upgrade {
                        Some(offered) => refused_switch(&head, &up_buf[..length], offered),
                        // The request did not ask to upgrade: the backend is not speaking to us.
                        None => {
                            Some("101 Switching Protocols to a request that did not ask to upgrade")
                        }
                    };
                    return match refused {
                        None => Ok((head, length)),
                        Some(why) => Err(Receive::Bad(response::BadResponse(why))),
                    };
                }
                let mut out = Vec::with_capacity(length);
                if asked.http11 {
                    let framing = ClientFraming {
                        chunked: false,
                        keep_alive: true,
                        http10: false,
                        codings: false,
                    };
                    write::response_head(&mut out, &up_buf[..length], &head, framing);
                }
                up_buf.advance(length);
                scan = HeadScan::default();
                if asked.http11 {
                    // The final answer follows this one: it must not wait for this one's acknowledgement.
                    client.set_nodelay();
                    client
                        .write_all(&out)
                        .await
                        .map_err(|_| Receive::ClientGone)?;
                }
                continue;
            }
        }
        match body::fill(up_read, up_buf).await {
            Ok(0) => {
                return Err(Receive::Closed {
                    failure: Failure::Closed,
                    detail: "backend closed the connection without a response".to_owned(),
                    answered,
                })
            }
            Ok(_) => {}
            Err(error) => {
                return Err(Receive::Closed {
                    failure: Failure::of_io(&error, false),
                    detail: describe_io(&error),
                    answered,
                })
            }
        }
    }
}
