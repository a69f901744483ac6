//! The PROXY protocol (HAProxy's spec, versions 1 and 2): a header a proxy sends before the first byte of a
//! connection, saying who the client is and which address it reached, since the receiver's own peer is the proxy.
//!
//! - Encoding ([`header`]): `lb` sends it to a backend with `send_proxy = "v1" | "v2"`, in TCP mode and HTTP mode
//!   alike (the HTTP generic path calls it too). It carries the client's address and the address the client
//!   reached (the listener's local address, or what a trusted PROXY header said it was).
//! - Decoding ([`decode`]): a listener with `accept_proxy` reads it from trusted sources, strictly: v1 is one line of
//!   at most 107 bytes in the exact grammar (single spaces, addresses of the family named, decimal ports without
//!   leading zeros); v2 has its signature, version 2, a command of LOCAL or PROXY, and a length bounded by
//!   [`header::V2_MAX_LEN`]. Anything else is [`Malformed`] and the connection is closed: a header is trusted only because
//!   its sender is, and a sender that cannot write one is not one to guess about.
//! - Detection ([`Sniff`]): a source outside `accept_proxy` must not start with a header (it would be lying about
//!   its address); whether the first bytes are one is decided from the signatures alone, as soon as they tell.
//!
//! The codec is pure (bytes in, bytes out); `read.rs` reads a header off a socket with a deadline.

mod decode;
mod header;
mod read;
mod v1;
mod v2;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

pub use decode::{decode, sniff, Sniff};
pub use header::{Header, Malformed};
pub use read::{read_header, sniff_first_bytes, Refused};

use crate::config::ProxyVersion;

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

/// The header of `version` that names no client: the sender's own connection (a health check). v1 says `PROXY
/// UNKNOWN`, v2 sends the LOCAL command; a receiver keeps the connection's real addresses (as HAProxy's
/// `check-send-proxy` does, so that a backend that requires a header accepts the checks too).
pub fn local_header(version: ProxyVersion) -> Bytes {
    match version {
        ProxyVersion::V1 => Bytes::from_static(b"PROXY UNKNOWN\r\n"),
        ProxyVersion::V2 => {
            let mut out = v2::SIGNATURE.to_vec();
            // Version 2, LOCAL; AF_UNSPEC; no address block.
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            Bytes::from(out)
        }
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
    use super::header::*;
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn local_headers_decode_as_local() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let bytes = local_header(version);
            let (header, len) = decode(&bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len(), "{version:?}");
            assert!(
                !matches!(header, Header::Proxied { .. }),
                "{version:?}: {header:?}"
            );
        }
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
