//! Version 1: one line of text, `PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n` (`TCP6` with IPv6 addresses, or
//! `PROXY UNKNOWN…\r\n` when the sender cannot tell), at most 107 bytes with its CRLF.
//!
//! The parser takes exactly the spec's grammar: single spaces, an address of the family named, decimal ports
//! between 0 and 65535 without a sign or leading zeros. It reads nothing past the CRLF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::header::{Decoded, Header, Malformed, V1_MAX_LEN};

/// What a v1 header starts with.
pub const SIGNATURE: &[u8] = b"PROXY ";

/// The line saying `client` reached `local` (both of one family).
pub fn encode(client: SocketAddr, local: SocketAddr) -> Bytes {
    let family = match client {
        SocketAddr::V4(_) => "TCP4",
        SocketAddr::V6(_) => "TCP6",
    };
    let line = format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    );
    Bytes::from(line)
}

/// Decodes a v1 header at the start of `buf` (which starts with [`SIGNATURE`]): `None` until its CRLF came.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, Malformed> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return match buf.len() >= V1_MAX_LEN {
            true => Err(Malformed::TooLong),
            false => Ok(None),
        };
    };
    // A line ends with CRLF; a bare LF is not the protocol's.
    let end = match newline.checked_sub(1) {
        Some(cr) if buf[cr] == b'\r' => cr,
        _ => return Err(Malformed::Grammar),
    };
    let line = std::str::from_utf8(&buf[SIGNATURE.len()..end]).map_err(|_| Malformed::Grammar)?;
    if !line.is_ascii() || line.contains(['\r', '\n']) {
        return Err(Malformed::Grammar);
    }
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // "UNKNOWN", and whatever follows it up to the CRLF, which the receiver ignores.
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = fields.collect();
            let [source, destination, source_port, destination_port] = fields[..] else {
                return Err(Malformed::Grammar);
            };
            let ip = |text: &str| -> Result<IpAddr, Malformed> {
                let ip = match family {
                    "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => text.parse::<Ipv6Addr>().map(IpAddr::V6),
                };
                ip.map_err(|_| Malformed::Address)
            };
            Header::Proxied {
                source: SocketAddr::new(ip(source)?, port(source_port)?),
                destination: SocketAddr::new(ip(destination)?, port(destination_port)?),
            }
        }
        _ => return Err(Malformed::Grammar),
    };
    Ok(Some((header, end + 2)))
}

/// A port: 1 to 5 decimal digits, no leading zero (but `0` itself), at most 65535.
fn port(text: &str) -> Result<u16, Malformed> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(Malformed::Port);
    }
    text.parse().map_err(|_| Malformed::Port)
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_any;
    use super::*;

    #[test]
    fn encodes_both_families() {
        let line = encode(
            "192.0.2.7:51234".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        );
        assert_eq!(&line[..], b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n");
        let line = encode(
            "[2001:db8::7]:1".parse().unwrap(),
            "[::1]:80".parse().unwrap(),
        );
        assert_eq!(&line[..], b"PROXY TCP6 2001:db8::7 ::1 1 80\r\n");
    }

    #[test]
    fn unknown_keeps_the_real_peer() {
        assert_eq!(
            decode_any(b"PROXY UNKNOWN\r\nrest"),
            Ok(Some((Header::Local, 15)))
        );
        let with_fields = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(
            decode_any(with_fields),
            Ok(Some((Header::Local, with_fields.len())))
        );
    }

    #[test]
    fn the_longest_line_is_accepted_and_one_more_byte_is_not() {
        let longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX_LEN);
        assert!(matches!(decode_any(longest.as_bytes()), Ok(Some((_, 107)))));
        let unterminated = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(decode_any(&unterminated), Err(Malformed::TooLong));
        let late_crlf = [unterminated.as_slice(), b"\r\n"].concat();
        assert_eq!(decode_any(&late_crlf), Err(Malformed::TooLong));
    }

    #[test]
    fn malformed_lines_are_refused() {
        let cases: &[(&[u8], Malformed)] = &[
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Malformed::Grammar),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", Malformed::Grammar),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Malformed::Grammar),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Malformed::Grammar),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", Malformed::Grammar),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Malformed::Grammar),
            (b"PROXY \r\n", Malformed::Grammar),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", Malformed::Grammar),
            (
                b"PROXY TCP4 1.2.3.4\xff 5.6.7.8 1 2\r\n",
                Malformed::Grammar,
            ),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", Malformed::Address),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", Malformed::Address),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", Malformed::Address),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", Malformed::Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", Malformed::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", Malformed::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", Malformed::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", Malformed::Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n", Malformed::Port),
        ];
        for (bytes, want) in cases {
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(decode_any(bytes), Err(*want), "{text:?}");
        }
        assert_eq!(
            decode_any(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n"),
            Ok(Some((
                Header::Proxied {
                    source: "1.2.3.4:0".parse().unwrap(),
                    destination: "5.6.7.8:65535".parse().unwrap()
                },
                36
            )))
        );
    }
}
