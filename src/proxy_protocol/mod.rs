//! The PROXY protocol (HAProxy's spec, versions 1 and 2): a header a proxy sends before the first byte of a
//! connection, saying who the client is and which address it reached, since the receiver's own peer is the proxy.
//!
//! - Encoding ([`header`]): `lb` sends it to a backend with `send_proxy = "v1" | "v2"`, in TCP mode and HTTP mode
//!   alike (the HTTP generic path calls it too). It carries the client's address and the address the client
//!   reached (the listener's local address, or what a trusted PROXY header said it was).
//! - Decoding ([`decode`]): a listener with `accept_proxy` reads it from trusted sources, strictly: v1 is one line of
//!   at most 107 bytes in the exact grammar (single spaces, addresses of the family named, decimal ports without
//!   leading zeros); v2 has its signature, version 2, a command of LOCAL or PROXY, and a length bounded by
//!   [`V2_MAX_LEN`]. Anything else is [`Malformed`] and the connection is closed: a header is trusted only because
//!   its sender is, and a sender that cannot write one is not one to guess about.
//! - Detection ([`Sniff`]): a source outside `accept_proxy` must not start with a header (it would be lying about
//!   its address); whether the first bytes are one is decided from the signatures alone, as soon as they tell.
//!
//! The codec is pure (bytes in, bytes out); `read.rs` reads a header off a socket with a deadline.

mod read;
mod v1;
mod v2;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

pub use read::{read_header, sniff_first_bytes, Refused};

use crate::config::ProxyVersion;

/// The longest v1 header, its CRLF included (the spec's figure).
pub const V1_MAX_LEN: usize = 107;
/// The longest v2 header `lb` accepts, its 16-byte fixed part included: room for the address block and some TLVs
/// (the spec allows 64 KiB; senders such as HAProxy and the cloud balancers send a few hundred bytes at most).
pub const V2_MAX_LEN: usize = 16 + 2048;

/// What a header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection: the client (`source`) reached `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender's own connection (v2 LOCAL, such as a health check), or one it could not describe (v1 `UNKNOWN`,
    /// v2 `AF_UNSPEC`): the real peer stays the peer.
    Local,
}

/// Why bytes are not a header `lb` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("no PROXY protocol signature")]
    Signature,
    #[error("PROXY v1 line longer than 107 bytes")]
    TooLong,
    #[error("PROXY v1 line not in the protocol's grammar")]
    Grammar,
    #[error("PROXY header address not valid")]
    Address,
    #[error("PROXY header port not valid")]
    Port,
    #[error("PROXY v2 version not 2")]
    Version,
    #[error("PROXY v2 command neither LOCAL nor PROXY")]
    Command,
    #[error("PROXY v2 address family or transport not supported")]
    Family,
    #[error("PROXY v2 length out of bounds")]
    Length,
}

/// A decoded header and how many bytes it took.
pub type Decoded = (Header, usize);

/// Decodes the header at the start of `buf`: `Ok(None)` while `buf` is a prefix of a header that may still be
/// valid (read more), `Malformed` as soon as it cannot be one.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, Malformed> {
    match sniff(buf) {
        Sniff::V1 => v1::decode(buf),
        Sniff::V2 => v2::decode(buf),
        Sniff::Undecided => Ok(None),
        Sniff::NotHeader => Err(Malformed::Signature),
    }
}

/// What the first bytes of a connection are, as far as the PROXY protocol goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// They start as a v1 header (`PROXY `).
    V1,
    /// They start with the v2 signature.
    V2,
    /// Too few bytes to tell: they are a prefix of a signature.
    Undecided,
    /// Not a header.
    NotHeader,
}

/// Tells from the first bytes whether a connection starts with a PROXY header.
pub fn sniff(buf: &[u8]) -> Sniff {
    let prefix_of = |signature: &[u8]| {
        let n = buf.len().min(signature.len());
        buf[..n] == signature[..n]
    };
    match (prefix_of(v1::SIGNATURE), prefix_of(&v2::SIGNATURE)) {
        (true, _) if buf.len() >= v1::SIGNATURE.len() => Sniff::V1,
        (_, true) if buf.len() >= v2::SIGNATURE.len() => Sniff::V2,
        (false, false) => Sniff::NotHeader,
        _ => Sniff::Undecided,
    }
}

/// The header of `version` saying that `client` reached `local`: what a backend with `send_proxy` gets first.
/// When one address is IPv4 and the other IPv6, the IPv4 one is written as IPv4-mapped IPv6 (a header has one
/// family); an IPv4-mapped address is written as IPv4 when both are.
pub fn header(version: ProxyVersion, client: SocketAddr, local: SocketAddr) -> Bytes {
    let (client, local) = same_family(client, local);
    match version {
        ProxyVersion::V1 => v1::encode(client, local),
        ProxyVersion::V2 => v2::encode(client, local),
    }
}

/// Both addresses in one family (see [`header`]).
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let (a, b) = (canonical(a), canonical(b));
    let mapped = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    };
    match a.is_ipv4() == b.is_ipv4() {
        true => (a, b),
        false => (mapped(a), mapped(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn both_versions_round_trip() {
        let pairs = [
            ("192.0.2.7:51234", "10.0.0.1:443"),
            ("[2001:db8::7]:51234", "[2001:db8::1]:8080"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
        ];
        for (client, local) in pairs {
            let (client, local) = (addr(client), addr(local));
            for version in [ProxyVersion::V1, ProxyVersion::V2] {
                let mut bytes = header(version, client, local).to_vec();
                let len = bytes.len();
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
                let want = Header::Proxied {
                    source: client,
                    destination: local,
                };
                assert_eq!(decode(&bytes), Ok(Some((want, len))), "{version:?}");
                for cut in 0..len {
                    assert_eq!(decode(&bytes[..cut]), Ok(None), "{version:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn mixed_families_are_written_as_one() {
        let v4 = addr("192.0.2.7:1000");
        let v6 = addr("[2001:db8::1]:443");
        let mapped = addr("[::ffff:192.0.2.7]:1000");
        let v1 = header(ProxyVersion::V1, v4, v6);
        assert_eq!(
            &v1[..],
            b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 1000 443\r\n"
        );
        let v1 = header(ProxyVersion::V1, mapped, addr("127.0.0.1:80"));
        assert_eq!(&v1[..], b"PROXY TCP4 192.0.2.7 127.0.0.1 1000 80\r\n");
    }

    #[test]
    fn sniffing_decides_as_soon_as_the_bytes_tell() {
        assert_eq!(sniff(b""), Sniff::Undecided);
        assert_eq!(sniff(b"P"), Sniff::Undecided);
        assert_eq!(sniff(b"PROXY"), Sniff::Undecided);
        assert_eq!(sniff(b"PROXY "), Sniff::V1);
        assert_eq!(sniff(b"PO"), Sniff::NotHeader);
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::NotHeader);
        assert_eq!(sniff(b"\r\n\r\n"), Sniff::Undecided);
        assert_eq!(sniff(b"\r\n\r\n\0\r\nQUIT\n"), Sniff::V2);
        assert_eq!(sniff(b"\r\n\r\n\0\r\nQUIT\r"), Sniff::NotHeader);
        assert_eq!(decode(b"HELLO"), Err(Malformed::Signature));
    }
}
