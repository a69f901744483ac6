//! The streaming chunked reader: fed in pieces, it must do exactly what it does fed whole (bytes taken, data, done
//! or error), never take more than it is given, and hand out data ranges inside each piece.
//!
//! Input: one byte that seeds the cuts, then the body.
#![no_main]

use lb::fuzzing::{ChunkError, ChunkedReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = feed(input, &[input.len()]);
    // Cut lengths from the seed: 1 byte, then varied lengths, as a socket would hand them out.
    let mut cuts = Vec::new();
    let mut state = u32::from(seed) | 1;
    let mut total = 0;
    while total < input.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let cut = match seed {
            0 => 1,
            _ => 1 + state as usize % 9,
        };
        cuts.push(cut);
        total += cut;
    }
    let pieces = feed(input, &cuts);
    assert_eq!(whole, pieces, "cuts {cuts:?}");
});

/// Feeds `input` in pieces of the given lengths, as `body.rs` does: what a call leaves is given again with more.
/// Returns the bytes taken, the data, and whether the body is done.
fn feed(input: &[u8], cuts: &[usize]) -> Result<(usize, Vec<u8>, bool), ChunkError> {
    let mut reader = ChunkedReader::default();
    let mut data = Vec::new();
    let mut taken = 0;
    let mut end = 0;
    for &cut in cuts {
        end = (end + cut).min(input.len());
        let piece = &input[taken..end];
        let used = reader.read(piece, |range| {
            assert!(range.start <= range.end && range.end <= piece.len());
            data.extend_from_slice(&piece[range]);
        })?;
        assert!(used <= piece.len());
        taken += used;
        if reader.is_done() {
            break;
        }
        assert_eq!(
            used,
            piece.len(),
            "an unfinished body takes all it is given"
        );
    }
    Ok((taken, data, reader.is_done()))
}
