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
/// Spare buffers kept per kind.
const MAX_SPARE: usize = 16;

#[derive(Default)]
pub struct Buffers {
    bytes: RefCell<Vec<BytesMut>>,
    vecs: RefCell<Vec<Vec<u8>>>,
}

impl Buffers {
    /// An empty read buffer.
    pub fn bytes(&self) -> BytesMut {
        self.bytes
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(INITIAL))
    }

    /// Takes back a read buffer whose contents are no longer needed.
    pub fn recycle_bytes(&self, mut buf: BytesMut) {
        buf.clear();
        // After `advance`, a buffer's spare room starts midway; reserving moves it back to the start when the
        // buffer is not shared (and allocates anew when it is, which is then not worth keeping).
        buf.reserve(INITIAL);
        let mut spare = self.bytes.borrow_mut();
        if buf.capacity() <= MAX_KEPT_CAPACITY && spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    }

    /// An empty write buffer.
    pub fn vec(&self) -> Vec<u8> {
        self.vecs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(INITIAL))
    }

    pub fn recycle_vec(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.vecs.borrow_mut();
        if buf.capacity() <= MAX_KEPT_CAPACITY && spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    }
}
