//! Where a head ends, found by looking at each byte once.
//!
//! A head may arrive a byte at a time; parsing it again from its start after every read is quadratic work (a 64 KiB
//! head: two billion byte visits). [`HeadScan`] remembers how far it looked and tells when a parse is worth it.

/// Finds where a head ends, looking at each byte once however the head arrives: a head that trickles in a byte at
/// a time is not parsed again from its start after every read (quadratic work for a 64 KiB head).
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadScan {
    /// Bytes of the buffer already looked at.
    scanned: usize,
    /// The first line has ended.
    line_seen: bool,
}

impl HeadScan {
    /// Whether `buf` (the same buffer as before, grown) is worth parsing now: it is the first look (most heads
    /// arrive whole), its first line just ended (so a malformed start is refused without waiting for the rest), or
    /// an empty line ends a head. Linear overall.
    pub fn ready(&mut self, buf: &[u8]) -> bool {
        let start = self.scanned.min(buf.len());
        let mut ready = self.scanned == 0 && !buf.is_empty();
        self.scanned = buf.len();
        for (at, _) in buf[start..].iter().enumerate().filter(|(_, &b)| b == b'\n') {
            let i = start + at;
            if !self.line_seen {
                self.line_seen = true;
                ready = true;
            }
            let blank = (i >= 1 && buf[i - 1] == b'\n')
                || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n');
            ready |= blank;
        }
        ready
    }

    /// Whether the first line has ended.
    pub fn line_seen(&self) -> bool {
        self.line_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_ready_at_its_first_line_and_at_its_end_however_it_arrives() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in [1, 2, 3, 5, head.len()] {
            let mut scan = HeadScan::default();
            let mut readies = Vec::new();
            for end in (step..=head.len()).step_by(step).chain([head.len()]) {
                if scan.ready(&head[..end]) {
                    readies.push(end);
                }
            }
            assert!(readies.contains(&head.len()), "step {step}: {readies:?}");
            assert!(readies.len() <= 3, "step {step}: {readies:?}");
            assert!(scan.line_seen());
        }
        let mut scan = HeadScan::default();
        assert!(scan.ready(b"GET / HTTP/1.1"), "the first look");
        assert!(!scan.ready(b"GET / HTTP/1.1 "));
        assert!(!scan.line_seen());
        assert!(scan.ready(b"GET / HTTP/1.1 \n"), "the first line ended");
        assert!(!scan.ready(b"GET / HTTP/1.1 \nHost: x"));
        assert!(
            scan.ready(b"GET / HTTP/1.1 \nHost: x\n\n"),
            "a bare LF end is parsed (and refused)"
        );
    }
}
