//! A worker's spare buffers, handed out per exchange and taken back after.
//!
//! Every exchange needs a few buffers (the client's bytes, the backend's bytes, the head being written); a
//! connection between exchanges needs none. Recycling them per worker thread (no locks: `RefCell`) keeps
//! `malloc` off the hot path and keeps idle connections free of buffers, so memory follows the exchanges in
//! flight, not the connections open.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size buffers are made with; they may grow while in use.
const INITIAL: usize = 4 * 1024;
/// Buffers that grew beyond this are not kept (a 1 MiB body should not pin 1 MiB per spare buffer).
const MAX_KEPT_CAPACITY: usize = 64 * 1024;
/// The capacity of spare buffers kept per kind: enough for a few hundred exchanges in flight to take theirs
/// without `malloc` (at 4 KiB each).
const MAX_SPARE_BYTES: usize = 1024 * 1024;
/// What is kept per kind once the worker is quiet (see [`Buffers::trim`]).
const QUIET_SPARE_BYTES: usize = 64 * 1024;

#[derive(Default)]
pub struct Buffers {
    bytes: RefCell<Spare<BytesMut>>,
    vecs: RefCell<Spare<Vec<u8>>>,
}

/// Spare buffers of one kind and their total capacity.
struct Spare<B> {
    buffers: Vec<B>,
    capacity: usize,
}

impl<B> Default for Spare<B> {
    fn default() -> Self {
        Spare {
            buffers: Vec::new(),
            capacity: 0,
        }
    }
}

impl<B> Spare<B> {
    fn trim(&mut self, capacity: impl Fn(&B) -> usize) {
        while self.capacity > QUIET_SPARE_BYTES {
            let Some(buf) = self.buffers.pop() else { break };
            self.capacity -= capacity(&buf);
        }
        if self.buffers.capacity() > 2 * self.buffers.len().max(16) {
            self.buffers.shrink_to_fit();
        }
    }

    fn take(&mut self, capacity: impl Fn(&B) -> usize) -> Option<B> {
        let buf = self.buffers.pop()?;
        self.capacity -= capacity(&buf);
        Some(buf)
    }

    fn keep(&mut self, buf: B, capacity: usize) {
        if capacity <= MAX_KEPT_CAPACITY && self.capacity + capacity <= MAX_SPARE_BYTES {
            self.capacity += capacity;
            self.buffers.push(buf);
        }
    }
}

impl Buffers {
    /// An empty read buffer.
    pub fn bytes(&self) -> BytesMut {
        self.bytes
            .borrow_mut()
            .take(BytesMut::capacity)
            .unwrap_or_else(|| BytesMut::with_capacity(INITIAL))
    }

    /// Takes back a read buffer whose contents are no longer needed.
    pub fn recycle_bytes(&self, mut buf: BytesMut) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        // After `advance`, a buffer's spare room starts midway; reserving moves it back to the start when the
        // buffer is not shared (and allocates anew when it is, which is then not worth keeping).
        buf.reserve(INITIAL);
        let capacity = buf.capacity();
        self.bytes.borrow_mut().keep(buf, capacity);
    }

    /// An empty write buffer.
    pub fn vec(&self) -> Vec<u8> {
        self.vecs
            .borrow_mut()
            .take(Vec::capacity)
            .unwrap_or_else(|| Vec::with_capacity(INITIAL))
    }

    /// Gives spare buffers beyond a few back to the allocator: after a burst, a quiet worker should not keep what
    /// only the burst needed.
    pub fn trim(&self) {
        self.bytes.borrow_mut().trim(BytesMut::capacity);
        self.vecs.borrow_mut().trim(Vec::capacity);
    }

    pub fn recycle_vec(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        let capacity = buf.capacity();
        self.vecs.borrow_mut().keep(buf, capacity);
    }
}
