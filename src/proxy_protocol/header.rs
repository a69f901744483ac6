//! What a PROXY header says, and why one is refused: the types the two versions' codecs share.

use std::net::SocketAddr;

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
