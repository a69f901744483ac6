//! Version 2: a binary header. A 12-byte signature, a byte for the version (2) and the command (LOCAL or PROXY), a
//! byte for the address family and transport, a 16-bit length (big-endian) of what follows: the addresses (12 bytes
//! for IPv4, 36 for IPv6: source, destination, source port, destination port), then optional TLVs, which `lb`
//! skips.
//!
//! Accepted: version 2; LOCAL with any family (the sender's own connection: the real peer stays); PROXY over TCP
//! (`AF_INET`/`AF_INET6` with `STREAM`), or `AF_UNSPEC` (the sender could not tell: the real peer stays). Refused:
//! any other version, command, family or transport (UDP, UNIX sockets), an address block shorter than its family
//! needs, and a length past [`V2_MAX_LEN`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{Decoded, Header, Malformed, V2_MAX_LEN};

/// What a v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part: signature, version and command, family and transport, length.
const FIXED: usize = 16;
const VERSION_2: u8 = 0x20;
const LOCAL: u8 = 0x0;
const PROXY: u8 = 0x1;
const UNSPEC: u8 = 0x00;
const TCP_IPV4: u8 = 0x11;
const TCP_IPV6: u8 = 0x21;
const IPV4_BLOCK: usize = 12;
const IPV6_BLOCK: usize = 36;

/// The header saying `client` reached `local` (both of one family), over TCP, without TLVs.
pub fn encode(client: SocketAddr, local: SocketAddr) -> Bytes {
    let mut out = BytesMut::with_capacity(FIXED + IPV6_BLOCK);
    out.put_slice(&SIGNATURE);
    out.put_u8(VERSION_2 | PROXY);
    match (client, local) {
        (SocketAddr::V4(client), SocketAddr::V4(local)) => {
            out.put_u8(TCP_IPV4);
            out.put_u16(IPV4_BLOCK as u16);
            out.put_slice(&client.ip().octets());
            out.put_slice(&local.ip().octets());
        }
        _ => {
            let v6 = |addr: SocketAddr| match addr {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            out.put_u8(TCP_IPV6);
            out.put_u16(IPV6_BLOCK as u16);
            out.put_slice(&v6(client).octets());
            out.put_slice(&v6(local).octets());
        }
    }
    out.put_u16(client.port());
    out.put_u16(local.port());
    out.freeze()
}

/// Decodes a v2 header at the start of `buf` (which starts with [`SIGNATURE`]): `None` until all of it came; the
/// fixed part is checked as soon as it is there.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, Malformed> {
    let Some(fixed) = buf.get(..FIXED) else {
        return Ok(None);
    };
    if fixed[12] & 0xF0 != VERSION_2 {
        return Err(Malformed::Version);
    }
    let command = fixed[12] & 0x0F;
    let family = fixed[13];
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let total = FIXED + len;
    if total > V2_MAX_LEN {
        return Err(Malformed::Length);
    }
    let needed = match (command, family) {
        (LOCAL, _) | (PROXY, UNSPEC) => 0,
        (PROXY, TCP_IPV4) => IPV4_BLOCK,
        (PROXY, TCP_IPV6) => IPV6_BLOCK,
        (PROXY, _) => return Err(Malformed::Family),
        _ => return Err(Malformed::Command),
    };
    if len < needed {
        return Err(Malformed::Length);
    }
    let Some(block) = buf.get(FIXED..total) else {
        return Ok(None);
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let header = match (command, family) {
        (PROXY, TCP_IPV4) => {
            let ip = |at: usize| Ipv4Addr::from(<[u8; 4]>::try_from(&block[at..at + 4]).unwrap());
            Header::Proxied {
                source: SocketAddr::from((ip(0), port(8))),
                destination: SocketAddr::from((ip(4), port(10))),
            }
        }
        (PROXY, TCP_IPV6) => {
            let ip = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&block[at..at + 16]).unwrap());
            Header::Proxied {
                source: SocketAddr::from((ip(0), port(32))),
                destination: SocketAddr::from((ip(16), port(34))),
            }
        }
        _ => Header::Local,
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_any;
    use super::*;

    /// A header with this version-and-command byte, family byte and length, then `rest`.
    fn raw(version_command: u8, family: u8, len: u16, rest: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend([version_command, family]);
        out.extend(len.to_be_bytes());
        out.extend(rest);
        out
    }

    #[test]
    fn encodes_the_spec_layout() {
        let header = encode(
            "192.0.2.7:51234".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        );
        let want = raw(
            0x21,
            0x11,
            12,
            &[192, 0, 2, 7, 10, 0, 0, 1, 0xC8, 0x22, 0x01, 0xBB],
        );
        assert_eq!(&header[..], &want[..]);
        let header = encode("[::1]:1".parse().unwrap(), "[::2]:2".parse().unwrap());
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(header[13], 0x21);
    }

    #[test]
    fn local_and_unspec_keep_the_real_peer_and_tlvs_are_skipped() {
        let local = raw(0x20, 0x00, 0, b"rest");
        assert_eq!(decode_any(&local), Ok(Some((Header::Local, 16))));
        // LOCAL with an address block (HAProxy's health checks send one): skipped whole.
        let local = raw(0x20, 0x11, 12, &[0; 12]);
        assert_eq!(decode_any(&local), Ok(Some((Header::Local, 28))));
        let unspec = raw(0x21, 0x00, 3, b"abc");
        assert_eq!(decode_any(&unspec), Ok(Some((Header::Local, 19))));
        // An IPv4 block followed by a TLV (type 0x04 NOOP, length 2).
        let block = [1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187, 0x04, 0, 2, 0, 0];
        let with_tlv = raw(0x21, 0x11, block.len() as u16, &block);
        let want = Header::Proxied {
            source: "1.2.3.4:80".parse().unwrap(),
            destination: "5.6.7.8:443".parse().unwrap(),
        };
        assert_eq!(decode_any(&with_tlv), Ok(Some((want, 16 + 17))));
    }

    #[test]
    fn malformed_headers_are_refused_from_their_fixed_part() {
        let cases: &[(Vec<u8>, Malformed)] = &[
            (raw(0x11, 0x11, 12, &[]), Malformed::Version),
            (raw(0x31, 0x11, 12, &[]), Malformed::Version),
            (raw(0x22, 0x11, 12, &[]), Malformed::Command),
            (raw(0x21, 0x12, 12, &[]), Malformed::Family),
            (raw(0x21, 0x22, 36, &[]), Malformed::Family),
            (raw(0x21, 0x31, 216, &[]), Malformed::Family),
            (raw(0x21, 0x11, 11, &[]), Malformed::Length),
            (raw(0x21, 0x21, 12, &[]), Malformed::Length),
            (raw(0x21, 0x11, 2049, &[]), Malformed::Length),
            (raw(0x20, 0x00, u16::MAX, &[]), Malformed::Length),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_any(bytes), Err(*want), "{bytes:?}");
        }
        // The longest accepted length, and a truncated one waiting for its bytes.
        assert_eq!(
            decode_any(&raw(0x20, 0x00, 2048, &[0; 2048])),
            Ok(Some((Header::Local, 16 + 2048)))
        );
        assert_eq!(decode_any(&raw(0x21, 0x11, 12, &[1, 2, 3])), Ok(None));
    }
}
