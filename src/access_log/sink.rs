//! Where access lines go: stdout, written by a thread of its own, so that a reader that stops reading costs lines,
//! never traffic.
//!
//! Why not a write per line from the worker: stdout is often a pipe (a log shipper, `docker logs`, `| tee`), and a
//! pipe whose reader stalls fills in 64 KiB; the next `write` then blocks the worker thread, and every connection on
//! it stops (nginx behaves so with `access_log /dev/stdout`). Here a worker appends its line to a shared buffer (a
//! short lock, no system call) and the writer thread empties the buffer into stdout, many lines per `write`. When the
//! reader stalls, the buffer fills to [`CAPACITY`] and further lines are dropped and counted, as HAProxy drops log
//! lines it cannot send; the count is reported on stderr once stdout moves again.
//!
//! The writer is woken once per batch (when the buffer goes from empty to not), not once per line. [`flush`] waits
//! (boundedly) until what was appended has been written: the server calls it at the end of a shutdown, so the last
//! requests' lines are not lost when the process exits.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Lines waiting for stdout, at most (then lines are dropped).
const CAPACITY: usize = 4 << 20;

struct Pending {
    lines: Vec<u8>,
    /// Lines dropped since the last report.
    dropped: u64,
    /// Bytes appended and bytes written, ever: `flush` waits until the second catches up with the first.
    appended: u64,
    written: u64,
}

struct Sink {
    pending: Mutex<Pending>,
    /// Raised when lines arrive (for the writer) and when a batch was written (for `flush`).
    changed: Condvar,
}

static SINK: OnceLock<&'static Sink> = OnceLock::new();

fn sink() -> &'static Sink {
    SINK.get_or_init(|| {
        let sink: &'static Sink = Box::leak(Box::new(Sink {
            pending: Mutex::new(Pending {
                lines: Vec::new(),
                dropped: 0,
                appended: 0,
                written: 0,
            }),
            changed: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("lb-access-log".into())
            .spawn(move || write_forever(sink));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the access log's writer thread: access lines are lost");
        }
        sink
    })
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Queues one whole line (with its newline) for stdout; drops it when stdout is that far behind.
pub fn append(line: &[u8]) {
    let sink = sink();
    let mut pending = sink.lock();
    if pending.lines.len() + line.len() > CAPACITY {
        pending.dropped += 1;
        return;
    }
    let was_empty = pending.lines.is_empty();
    pending.lines.extend_from_slice(line);
    pending.appended += line.len() as u64;
    drop(pending);
    if was_empty {
        sink.changed.notify_all();
    }
}

/// Waits until every line appended so far is written, or `patience` has passed (stdout is stuck).
pub fn flush(patience: Duration) {
    let Some(sink) = SINK.get() else {
        return; // nothing was ever logged
    };
    let deadline = Instant::now() + patience;
    let mut pending = sink.lock();
    let target = pending.appended;
    while pending.written < target {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        pending = sink
            .changed
            .wait_timeout(pending, left)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

fn write_forever(sink: &'static Sink) {
    let mut batch = Vec::new();
    let mut stdout = std::io::stdout();
    loop {
        let dropped = {
            let mut pending = sink.lock();
            while pending.lines.is_empty() {
                pending = sink
                    .changed
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            std::mem::take(&mut pending.dropped)
        };
        // A closed stdout or a broken pipe is not the requests' problem: the lines are gone, traffic goes on.
        let _ = stdout.write_all(&batch).and_then(|()| stdout.flush());
        if dropped > 0 {
            tracing::warn!("access log: {dropped} lines dropped: stdout was not read fast enough");
        }
        let mut pending = sink.lock();
        pending.written += batch.len() as u64;
        drop(pending);
        sink.changed.notify_all();
        batch.clear();
        if batch.capacity() > CAPACITY {
            batch = Vec::new();
        }
    }
}
