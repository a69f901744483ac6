//! Differential tests: small reference models of what the engine accepts, written to be read against the RFC rather
//! than to be fast, and run beside the real code on a few thousand generated inputs.
//!
//! - `chunked`: the chunked body grammar `ChunkedReader` reads (RFC 9112 §7.1 as `h1::chunked` states it), the
//!   model fed the whole body, the reader fed in random pieces.
//! - `request`: the request head rules of `request::parse` (where the head ends, line ends, method, target forms
//!   and bytes, version, Host, Content-Length / Transfer-Encoding, limits), with httparse's lexing written out.
//!
//! Inputs are built from grammar pieces (mostly valid), then mutated at random with bytes that sit on the grammar's
//! edges, and sometimes cut short, so that valid, invalid and incomplete inputs are all common. A fixed seed per
//! test keeps every run the same; a failure prints the input, which can go into a unit test as it is.

mod chunked;
mod request;

/// xorshift64*: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times out of 100.
    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Bytes on the edges of the grammars: line ends, whitespace, delimiters, hex digits and not, controls, non-ASCII.
const EDGY: &[u8] = b"\r\n \t:;,=\"\\/?#%@[]0aAfFgGxX-+_*\x00\x0b\x7f\x80\xc3\xa9\xff";

/// One to three random edits: a byte replaced, inserted or removed, a piece repeated.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        let byte = if rng.percent(80) {
            rng.pick(EDGY)
        } else {
            rng.next() as u8
        };
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                bytes.splice(at..at, piece);
            }
        }
    }
}

/// Shows bytes as a Rust byte string, to paste into a unit test.
fn shown(bytes: &[u8]) -> String {
    format!("b\"{}\"", bytes.escape_ascii())
}
