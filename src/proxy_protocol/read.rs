//! Reading the start of a connection on a listener with `accept_proxy`, before anything else reads it: the header
//! of a trusted source ([`read_header`]), or the first bytes of any other, enough to tell they are not a header
//! ([`sniff_first_bytes`]). Both within a deadline (`timeouts.client_header`: a sender that trickles its header
//! is a slowloris like any other), and both leave every byte read past the header in the caller's buffer for the
//! protocol that follows.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::decode::{decode, sniff, Sniff};
use super::header::{Header, Malformed};

/// Why a connection's start was refused (the connection is then closed).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error("PROXY header from a source not in accept_proxy")]
    Untrusted,
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before its PROXY header")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How much a read asks for at a time: a header and, usually, the request that follows it.
const READ: usize = 2048;

/// Reads the header a trusted source must start with; what came after it stays in `buf`.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Header, Refused> {
    let read = async {
        loop {
            if let Some((header, len)) = decode(buf)? {
                let _ = buf.split_to(len);
                return Ok(header);
            }
            fill(stream, buf).await?;
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Refused::Timeout(timeout))?
}

/// Reads the first bytes of a source outside `accept_proxy` until they tell whether they are a PROXY header: an
/// error when they are (or the connection closed first); otherwise they stay in `buf`.
pub async fn sniff_first_bytes<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<(), Refused> {
    let read = async {
        loop {
            match sniff(buf) {
                Sniff::NotHeader => return Ok(()),
                Sniff::V1 | Sniff::V2 => return Err(Refused::Untrusted),
                Sniff::Undecided => fill(stream, buf).await?,
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Refused::Timeout(timeout))?
}

/// Reads once more into `buf`; the end of the stream is [`Refused::Closed`].
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<(), Refused> {
    buf.reserve(READ);
    match stream.read_buf(buf).await? {
        0 => Err(Refused::Closed),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_after_the_header_are_kept() {
        let mut input: &[u8] = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n";
        let mut buf = BytesMut::new();
        let header = read_header(&mut input, &mut buf, Duration::from_secs(1)).await;
        assert!(matches!(header, Ok(Header::Proxied { .. })));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_header_cut_short_is_refused() {
        let mut input: &[u8] = b"PROXY TCP4 1.2.3.4";
        let mut buf = BytesMut::new();
        let header = read_header(&mut input, &mut buf, Duration::from_secs(1)).await;
        assert!(matches!(header, Err(Refused::Closed)), "{header:?}");
    }

    #[tokio::test]
    async fn untrusted_sources_may_not_send_one() {
        let mut buf = BytesMut::new();
        let mut input: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21";
        let sniffed = sniff_first_bytes(&mut input, &mut buf, Duration::from_secs(1)).await;
        assert!(matches!(sniffed, Err(Refused::Untrusted)));
        let mut buf = BytesMut::new();
        let mut input: &[u8] = b"POST / HTTP/1.1\r\n";
        let sniffed = sniff_first_bytes(&mut input, &mut buf, Duration::from_secs(1)).await;
        assert!(sniffed.is_ok());
        assert_eq!(&buf[..], b"POST / HTTP/1.1\r\n");
    }
}
