//! A strict, streaming reader of the chunked transfer coding (RFC 9112 §7.1).
//!
//! The proxy forwards chunked bodies as they are, byte for byte, but it must know exactly where a body ends: a
//! reader that disagrees with the backend about that boundary is how requests get smuggled. So every byte goes
//! through this state machine, which accepts only the grammar: hex sizes without sign, prefix or whitespace and
//! without overflow, CRLF line ends (a bare LF is an error), extensions after `;`, CRLF after each chunk's data,
//! and trailer fields after the last chunk up to the empty line.

use std::ops::Range;

/// Hex digits allowed in a chunk size: 15 keeps every size below 2^60.
const MAX_SIZE_DIGITS: u32 = 15;
/// Bytes allowed in one chunk-size line's extensions or one trailer line.
const MAX_LINE: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a size; `digits` so far.
    Size {
        digits: u32,
    },
    /// Whitespace after the size, which must lead to an extension.
    SizeSpace,
    /// After the size: extensions up to CR.
    Extension {
        length: u32,
    },
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside a chunk's data.
    Data,
    /// Expecting the CR after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name (a token, up to the colon).
    TrailerName {
        length: u32,
    },
    /// Inside a trailer field's value.
    Trailer {
        length: u32,
    },
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    Done,
}

/// Where a chunked body is, byte by byte.
#[derive(Debug, Clone)]
pub struct ChunkedReader {
    state: State,
    /// The size being read, then the data left in the current chunk.
    size: u64,
}

impl Default for ChunkedReader {
    fn default() -> Self {
        ChunkedReader {
            state: State::Size { digits: 0 },
            size: 0,
        }
    }
}

impl ChunkedReader {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads as much of `input` as belongs to the body. Returns how many bytes that was (the rest belongs to
    /// whatever follows the body) and calls `data` with the ranges of `input` that are chunk data.
    pub fn read(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            if self.state == State::Data {
                let take = (input.len() - at).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                data(at..at + take);
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[at])?;
            at += 1;
        }
        Ok(at)
    }

    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, byte) {
            (State::Size { digits }, _) if byte.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(ChunkError("chunk size too large"));
                }
                self.size = self.size * 16 + u64::from(hex_value(byte));
                State::Size { digits: digits + 1 }
            }
            (State::Size { digits: 0 }, _) => {
                return Err(ChunkError("chunk size is not a hex number"))
            }
            (State::Size { .. }, b';') => State::Extension { length: 1 },
            // Whitespace after the size is only allowed before an extension (`BWS ";"`, RFC 9112 §7.1.1).
            (State::Size { .. } | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::SizeSpace, b';') => State::Extension { length: 1 },
            (State::SizeSpace, _) => {
                return Err(ChunkError(
                    "chunk size followed by something else than an extension",
                ))
            }
            (State::Size { .. }, b'\r') => State::SizeLf,
            (State::Size { .. }, _) => return Err(ChunkError("chunk size is not a hex number")),
            (State::Extension { .. }, b'\r') => State::SizeLf,
            (State::Extension { length }, _) if is_line_byte(byte) => {
                if length >= MAX_LINE {
                    return Err(ChunkError("chunk extension too long"));
                }
                State::Extension { length: length + 1 }
            }
            (State::Extension { .. }, _) => return Err(ChunkError("bad byte in chunk extension")),
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data,
            (State::SizeLf, _) => return Err(ChunkError("chunk size line not ended by CRLF")),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr, _) => return Err(ChunkError("chunk data longer than its size")),
            (State::DataLf, b'\n') => {
                self.size = 0;
                State::Size { digits: 0 }
            }
            (State::DataLf, _) => return Err(ChunkError("chunk data not ended by CRLF")),
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart, b' ' | b'\t') => return Err(ChunkError("folded trailer line")),
            (State::TrailerStart, _) if is_token_byte(byte) => State::TrailerName { length: 1 },
            (State::TrailerName { length }, _) if length >= MAX_LINE => {
                return Err(ChunkError("trailer line too long"))
            }
            (State::TrailerName { length }, b':') => State::Trailer { length: length + 1 },
            (State::TrailerName { length }, _) if is_token_byte(byte) => {
                State::TrailerName { length: length + 1 }
            }
            (State::TrailerName { .. }, _) => {
                return Err(ChunkError("trailer line is not a header field"))
            }
            (State::Trailer { .. }, b'\r') => State::TrailerLf,
            (State::Trailer { length }, _) if is_line_byte(byte) => {
                if length >= MAX_LINE {
                    return Err(ChunkError("trailer line too long"));
                }
                State::Trailer { length: length + 1 }
            }
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerStart | State::Trailer { .. }, _) => {
                return Err(ChunkError("bad byte in trailer"))
            }
            (State::TrailerLf | State::EndLf, _) => {
                return Err(ChunkError("trailer line not ended by CRLF"))
            }
            (State::Data | State::Done, _) => unreachable!("handled by the caller"),
        };
        Ok(())
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

/// RFC 9110 `tchar`: what a field name is made of.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Visible characters, space, tab and obs-text: anything but controls (CR, LF, NUL...) and DEL.
fn is_line_byte(byte: u8) -> bool {
    byte == b'\t' || (byte >= 0x20 && byte != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns (bytes consumed, data, done).
    fn run(input: &[u8], step: usize) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut reader = ChunkedReader::default();
        let mut data = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step) {
            let used = reader.read(piece, |r| data.extend_from_slice(&piece[r]))?;
            consumed += used;
            if used < piece.len() {
                break;
            }
        }
        Ok((consumed, data, reader.is_done()))
    }

    #[test]
    fn reads_chunks_trailers_and_stops_at_the_end() {
        let body = b"5\r\nhello\r\n1 ;ext=1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            let (consumed, data, done) = run(body, step).unwrap();
            assert_eq!(
                &body[..consumed],
                b"5\r\nhello\r\n1 ;ext=1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n"
            );
            assert_eq!(data, b"hello!");
            assert!(done);
        }
    }

    #[test]
    fn upper_case_hex_and_long_chunks() {
        let mut body = b"1A\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 26]);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let (consumed, data, done) = run(&body, 5).unwrap();
        assert_eq!((consumed, data.len(), done), (body.len(), 26, true));
    }

    #[test]
    fn rejects_what_a_backend_might_read_differently() {
        for bad in [
            &b"-1\r\n"[..],
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5 7\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"\r\n",
            b"ffffffffffffffffff\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            b"0\r\nX : 1\r\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                run(bad, 1).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_trailer_line_is_at_most_max_line_bytes_colon_included() {
        let line = |name: usize, value: usize| {
            let mut body = b"0\r\n".to_vec();
            body.extend(std::iter::repeat_n(b'n', name));
            body.push(b':');
            body.extend(std::iter::repeat_n(b'v', value));
            body.extend_from_slice(b"\r\n\r\n");
            body
        };
        let max = MAX_LINE as usize;
        assert!(run(&line(max - 1, 0), 7).is_ok_and(|(_, _, done)| done));
        assert!(run(&line(1, max - 2), 7).is_ok_and(|(_, _, done)| done));
        // The colon was not counted: a name of MAX_LINE bytes made a line of MAX_LINE + 1.
        assert!(run(&line(max, 0), 7).is_err());
        assert!(run(&line(1, max - 1), 7).is_err());
    }

    #[test]
    fn incomplete_is_not_done() {
        let (consumed, _, done) = run(b"5\r\nhel", 100).unwrap();
        assert_eq!((consumed, done), (6, false));
    }
}
