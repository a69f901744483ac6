//! Telling a PROXY header from other bytes, and decoding one of either version.

use super::header::{Decoded, Malformed};
use super::{v1, v2};

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
