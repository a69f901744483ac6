//! The chunked body grammar as a model, against `ChunkedReader` fed in pieces.
//!
//! ```text
//! chunked-body = *chunk last-chunk *trailer-line CRLF
//! chunk        = size [ext] CRLF data CRLF            ; data: exactly `size` bytes, anything
//! last-chunk   = size [ext] CRLF                      ; a size of value 0 (any number of zeros)
//! size         = 1*15HEXDIG                           ; no sign, no 0x, no whitespace
//! ext          = *( SP / HTAB ) ";" *line-byte        ; ";" and what follows: at most 4096 bytes
//! trailer-line = 1*tchar ":" *line-byte CRLF          ; at most 4096 bytes before the CRLF
//! line-byte    = HTAB / %x20-7E / %x80-FF
//! ```
//!
//! What follows the final CRLF is not the body's. Bytes running out is "more to come"; a byte outside the grammar is
//! an error at once, even when the line it is on is not over.

use super::{mutate, shown, Rng};
use crate::h1::chunked::ChunkedReader;

/// What the model makes of a whole input.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ends after `consumed` bytes.
    Done {
        consumed: usize,
        data: Vec<u8>,
    },
    /// All of it belongs to a body not over yet.
    More {
        data: Vec<u8>,
    },
    Error,
}

const MAX_LINE: usize = 4096;

enum Stop {
    /// The input ran out.
    More,
    Error,
}

struct Cursor<'a> {
    input: &'a [u8],
    at: usize,
    data: Vec<u8>,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.input.get(self.at).copied().ok_or(Stop::More)
    }

    fn expect(&mut self, byte: u8) -> Result<(), Stop> {
        if self.peek()? != byte {
            return Err(Stop::Error);
        }
        self.at += 1;
        Ok(())
    }

    fn crlf(&mut self) -> Result<(), Stop> {
        self.expect(b'\r')?;
        self.expect(b'\n')
    }
}

fn model(input: &[u8]) -> Outcome {
    let mut cursor = Cursor {
        input,
        at: 0,
        data: Vec::new(),
    };
    match body(&mut cursor) {
        Ok(()) => Outcome::Done {
            consumed: cursor.at,
            data: cursor.data,
        },
        Err(Stop::More) => Outcome::More { data: cursor.data },
        Err(Stop::Error) => Outcome::Error,
    }
}

fn body(c: &mut Cursor) -> Result<(), Stop> {
    loop {
        let size = size_line(c)?;
        if size == 0 {
            return trailer_section(c);
        }
        let available = (c.input.len() - c.at) as u64;
        let take = size.min(available) as usize;
        c.data.extend_from_slice(&c.input[c.at..c.at + take]);
        c.at += take;
        if (take as u64) < size {
            return Err(Stop::More);
        }
        c.crlf()?;
    }
}

fn size_line(c: &mut Cursor) -> Result<u64, Stop> {
    let mut size: u64 = 0;
    let mut digits = 0;
    while let Some(value) = (c.peek()? as char).to_digit(16) {
        if digits == 15 {
            return Err(Stop::Error);
        }
        size = size * 16 + u64::from(value);
        digits += 1;
        c.at += 1;
    }
    if digits == 0 {
        return Err(Stop::Error);
    }
    let mut whitespace = false;
    while matches!(c.peek()?, b' ' | b'\t') {
        whitespace = true;
        c.at += 1;
    }
    match c.peek()? {
        b';' => {
            let start = c.at;
            c.at += 1;
            while c.peek()? != b'\r' {
                if !is_line_byte(c.peek()?) || c.at - start >= MAX_LINE {
                    return Err(Stop::Error);
                }
                c.at += 1;
            }
        }
        b'\r' if !whitespace => {}
        _ => return Err(Stop::Error),
    }
    c.crlf()?;
    Ok(size)
}

fn trailer_section(c: &mut Cursor) -> Result<(), Stop> {
    loop {
        if c.peek()? == b'\r' {
            return c.crlf();
        }
        let start = c.at;
        while c.peek()? != b':' {
            if !is_tchar(c.peek()?) || c.at - start >= MAX_LINE {
                return Err(Stop::Error);
            }
            c.at += 1;
        }
        if c.at == start || c.at - start >= MAX_LINE {
            return Err(Stop::Error);
        }
        c.at += 1;
        while c.peek()? != b'\r' {
            if !is_line_byte(c.peek()?) || c.at - start >= MAX_LINE {
                return Err(Stop::Error);
            }
            c.at += 1;
        }
        c.crlf()?;
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_line_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// The real reader, given `input` in pieces of the lengths `cuts` yields (what it leaves is given again with
/// more, as `body.rs` does).
fn real(input: &[u8], cuts: &mut impl FnMut() -> usize) -> Outcome {
    let mut reader = ChunkedReader::default();
    let mut data = Vec::new();
    let mut taken = 0;
    let mut end = 0;
    while end < input.len() {
        end = end.saturating_add(cuts()).min(input.len());
        let piece = &input[taken..end];
        match reader.read(piece, |range| data.extend_from_slice(&piece[range])) {
            Ok(used) => taken += used,
            Err(_) => return Outcome::Error,
        }
        if reader.is_done() {
            return Outcome::Done {
                consumed: taken,
                data,
            };
        }
        assert_eq!(taken, end, "an unfinished body takes all it is given");
    }
    Outcome::More { data }
}

/// A chunked body from grammar pieces: mostly valid, with lines near their limits now and then.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(4) {
        let data: Vec<u8> = (0..rng.below(20))
            .map(|_| match rng.percent(80) {
                true => b'a' + rng.below(26) as u8,
                false => rng.pick(super::EDGY),
            })
            .collect();
        write_size_line(rng, &mut out, data.len());
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    }
    write_size_line(rng, &mut out, 0);
    for _ in 0..rng.below(3) {
        let mut name = rng
            .pick(&["X-Sum", "A", "x_y", "Trailer-Name", "!#$%&'*+-.^_`|~"])
            .to_string();
        if rng.percent(3) {
            name = "n".repeat(MAX_LINE - 1 + rng.below(3));
        }
        let value = rng.pick(&["1", "", " spaced out ", "a\tb", "caf\u{e9}", ": colon"]);
        out.extend_from_slice(format!("{name}:{value}").as_bytes());
        if rng.percent(3) {
            let line = MAX_LINE - 2 + rng.below(4);
            let pad = line.saturating_sub(name.len() + 1 + value.len());
            out.extend(std::iter::repeat_n(b'v', pad));
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if rng.percent(30) {
        out.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    }
    out
}

fn write_size_line(rng: &mut Rng, out: &mut Vec<u8>, size: usize) {
    let mut digits = match rng.percent(50) {
        true => format!("{size:x}"),
        false => format!("{size:X}"),
    };
    if rng.percent(10) {
        let width = digits.len() + rng.below(17);
        digits = format!("{digits:0>width$}");
    }
    out.extend_from_slice(digits.as_bytes());
    if rng.percent(25) {
        let ext = rng.pick(&[";a=b", " ;x", "\t; y=\"q;r\"", ";", "  \t;name", " ", "\t"]);
        out.extend_from_slice(ext.as_bytes());
        if rng.percent(10) {
            let semicolon = ext.find(';').unwrap_or(0);
            let length = MAX_LINE - 2 + rng.below(4);
            let pad = length.saturating_sub(ext.len() - semicolon);
            out.extend(std::iter::repeat_n(b'e', pad));
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[test]
fn the_chunked_reader_agrees_with_the_grammar() {
    let mut rng = Rng::new(7);
    let mut seen = [0usize; 3];
    for case in 0..3000 {
        let mut input = generate(&mut rng);
        if rng.percent(50) {
            mutate(&mut rng, &mut input);
        }
        if rng.percent(20) {
            input.truncate(rng.below(input.len() + 1));
        }
        let want = model(&input);
        let step = 1 + rng.below(9);
        let mut cut_rng = Rng::new(case);
        let pieces = real(&input, &mut || match step {
            1 => 1,
            _ => 1 + cut_rng.below(step),
        });
        let whole = real(&input, &mut || usize::MAX);
        assert_eq!(
            pieces,
            want,
            "case {case}, pieces up to {step}: {}",
            shown(&input)
        );
        assert_eq!(whole, want, "case {case}, whole: {}", shown(&input));
        seen[match want {
            Outcome::Done { .. } => 0,
            Outcome::More { .. } => 1,
            Outcome::Error => 2,
        }] += 1;
    }
    // Each outcome must be common, or the test says little.
    assert!(
        seen.iter().all(|&n| n > 300),
        "done / more / error: {seen:?}"
    );
}

#[test]
fn the_model_reads_the_unit_tests_cases_as_the_reader_does() {
    assert_eq!(
        model(b"5\r\nhello\r\n1 ;ext=1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\nGET"),
        Outcome::Done {
            consumed: 38,
            data: b"hello!".to_vec()
        }
    );
    assert_eq!(
        model(b"5\r\nhel"),
        Outcome::More {
            data: b"hel".to_vec()
        }
    );
    for bad in [&b"0x5\r\n"[..], b"5 \r\n", b"0\r\nX : 1\r\n", b"0\r\n\n"] {
        assert_eq!(model(bad), Outcome::Error, "{}", shown(bad));
    }
}
