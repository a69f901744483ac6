//! Moving one message body from one socket to the other, in its framing, without holding it whole.
//!
//! The bytes already read past a head sit in the connection's buffer; they go first, written together with the
//! head when there is one (one write instead of two), and then the body streams through the buffer. Whatever was
//! read beyond the body's end stays in the buffer for the next message on that connection.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::chunked::{ChunkError, ChunkedReader};
use super::socket::{read_into, ReadInto};
use super::stall::{Pace, Stall};
use super::BodyLength;

/// Room for a head's read: heads are small, and most responses that follow them too.
const HEAD_READ: usize = 4 * 1024;
/// A body's reads start at this size and double while they come back full, up to [`MAX_READ`]: a small body
/// costs a small buffer, a large one few system calls. [`MAX_READ`] is also what an exchange holds at most while
/// the receiving side does not take what was read (a client that stops reading a download): nothing more is read
/// until it is written, so a stalled exchange costs one read's buffer, and TCP's own buffers hold the rest. The
/// sizes were chosen by measurement (`bench/README.md`, Design figures).
const FIRST_BODY_READ: usize = 16 * 1024;
const MAX_READ: usize = 32 * 1024;
/// A head written before a body is sent in the same write as up to this much of the body.
const COALESCE: usize = 16 * 1024;

/// Whether a body of `length`, of which `buffered` bytes are already read, goes out in the same single write as its
/// head.
pub fn fits_one_write(length: BodyLength, buffered: usize) -> bool {
    match length {
        BodyLength::Empty => true,
        BodyLength::Length(length) => length <= buffered as u64 && length <= COALESCE as u64,
        BodyLength::Chunked | BodyLength::UntilClose => false,
    }
}

/// Whether a body of `length`, of which `buffered` bytes are read, has a small rest still to come: one that a sender
/// using Nagle's algorithm may hold back until what it sent before is acknowledged (see
/// `socket::acknowledge_now`). Bodies of unknown length are not counted: acknowledging each of their first
/// segments at once costs a large body dearly (`bench/README.md`, Design figures).
pub fn small_rest_to_come(length: BodyLength, buffered: usize) -> bool {
    match length {
        BodyLength::Length(length) => {
            length > buffered as u64 && length - buffered as u64 <= SMALL_REST
        }
        BodyLength::Empty | BodyLength::Chunked | BodyLength::UntilClose => false,
    }
}

/// See [`small_rest_to_come`].
const SMALL_REST: u64 = 64 * 1024;

/// Where a body could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the body failed: {0}")]
    Read(io::Error),
    #[error("the sender closed before the body ended")]
    Truncated,
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("writing the body failed: {0}")]
    Write(io::Error),
}

impl BodyError {
    /// True when the side that sent the body is at fault (as opposed to the side receiving it).
    pub fn is_source(&self) -> bool {
        !matches!(self, BodyError::Write(_))
    }

    /// True when a side was too slow (stalled, or behind its pace), as opposed to closed, reset or malformed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Read(e) | BodyError::Write(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

/// How a body is passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Byte for byte, in its own framing.
    AsIs,
    /// A chunked body as plain data (for HTTP/1.0 clients, whose body then ends with the connection).
    Dechunked,
}

/// How long each side may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Either side making no progress for this long ends the body.
    pub stall: Duration,
    /// The rate the source must keep on average, if any.
    pub pace: Option<Pace>,
}

/// Reads more of a head from `src` into `buf`; `Ok(0)` at the end of the stream.
pub async fn fill<R: ReadInto>(src: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    fill_up_to(src, buf, HEAD_READ).await
}

async fn fill_up_to<R: ReadInto>(
    src: &mut R,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < want {
        if buf.is_empty() && buf.capacity() < want {
            // Exactly the room asked for: growing in place would also keep the bytes already consumed (a buffer
            // of 1.5 times the read or more), and what a stalled exchange holds is this buffer.
            *buf = BytesMut::with_capacity(want);
        } else {
            buf.reserve(want);
        }
    }
    read_into(src, buf).await
}

/// The size of a body's next read: doubles while reads come back full and the receiving side takes what was read
/// without making us wait; back to the first size when it made us wait (a slow reader gets small reads, so what
/// waits for it in our buffer stays small).
struct ReadSize(usize);

impl ReadSize {
    fn new() -> Self {
        ReadSize(FIRST_BODY_READ)
    }

    async fn fill<R: ReadInto>(
        &mut self,
        src: &mut R,
        buf: &mut BytesMut,
        writes_waited: bool,
    ) -> io::Result<usize> {
        if writes_waited {
            self.0 = FIRST_BODY_READ;
        }
        let read = fill_up_to(src, buf, self.0).await?;
        if read >= self.0 {
            self.0 = (self.0 * 2).min(MAX_READ);
        }
        Ok(read)
    }
}

/// Writes `prefix` (a head, possibly empty) and then the body of the given length from `src` to `dst`, coded as
/// `coding` says. A side that breaks `limits` ends the body with an error. While the body fails before anything
/// was written, `prefix` still holds the head (so the caller can tell that nothing reached `dst`).
pub async fn forward<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    prefix: &mut Vec<u8>,
    length: BodyLength,
    coding: Coding,
    limits: Limits,
) -> Result<(), BodyError>
where
    R: ReadInto,
    W: AsyncWrite + Unpin,
{
    let src = &mut Stall::paced(src, limits.stall, limits.pace);
    let dst = &mut Stall::new(dst, limits.stall);
    match length {
        BodyLength::Empty => flush(dst, prefix).await,
        BodyLength::Length(length) => forward_length(src, buf, dst, prefix, length).await,
        BodyLength::Chunked => {
            let dechunk = coding == Coding::Dechunked;
            forward_chunked(src, buf, dst, prefix, dechunk).await
        }
        BodyLength::UntilClose => forward_until_close(src, buf, dst, prefix).await,
    }
}

async fn flush<W: AsyncWrite + Unpin>(dst: &mut W, pending: &mut Vec<u8>) -> Result<(), BodyError> {
    if !pending.is_empty() {
        dst.write_all(pending).await.map_err(BodyError::Write)?;
        pending.clear();
    }
    Ok(())
}

/// Sends `pending` and then `bytes`, in one write when `pending` is small (a head with the body's start).
async fn send<W: AsyncWrite + Unpin>(
    dst: &mut W,
    pending: &mut Vec<u8>,
    bytes: &[u8],
) -> Result<(), BodyError> {
    if pending.is_empty() {
        return dst.write_all(bytes).await.map_err(BodyError::Write);
    }
    if bytes.len() <= COALESCE {
        pending.extend_from_slice(bytes);
        return flush(dst, pending).await;
    }
    flush(dst, pending).await?;
    dst.write_all(bytes).await.map_err(BodyError::Write)
}

async fn read_more<R: ReadInto>(
    src: &mut R,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    writes_waited: bool,
) -> Result<(), BodyError> {
    match size.fill(src, buf, writes_waited).await {
        Ok(0) => Err(BodyError::Truncated),
        Ok(_) => Ok(()),
        Err(error) => Err(BodyError::Read(error)),
    }
}

async fn forward_length<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut Stall<W>,
    pending: &mut Vec<u8>,
    mut remaining: u64,
) -> Result<(), BodyError>
where
    R: ReadInto,
    W: AsyncWrite + Unpin,
{
    let mut size = ReadSize::new();
    loop {
        let take = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        send(dst, pending, &buf[..take]).await?;
        buf.advance(take);
        remaining -= take as u64;
        if remaining == 0 {
            return Ok(());
        }
        read_more(src, buf, &mut size, dst.take_waited()).await?;
    }
}

async fn forward_chunked<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut Stall<W>,
    pending: &mut Vec<u8>,
    dechunk: bool,
) -> Result<(), BodyError>
where
    R: ReadInto,
    W: AsyncWrite + Unpin,
{
    let mut reader = ChunkedReader::default();
    let mut size = ReadSize::new();
    // Where the data lies in the buffer, when the chunk framing is taken off: written from there, not copied.
    let mut data = Vec::new();
    loop {
        let used = if dechunk {
            data.clear();
            // A malformed body leaves `pending` as it was: still the head when nothing was written.
            let used = reader.read(&buf[..], |range| data.push(range))?;
            for range in data.drain(..) {
                send(dst, pending, &buf[range]).await?;
            }
            flush(dst, pending).await?;
            used
        } else {
            let used = reader.read(&buf[..], |_| {})?;
            send(dst, pending, &buf[..used]).await?;
            used
        };
        buf.advance(used);
        if reader.is_done() {
            return Ok(());
        }
        read_more(src, buf, &mut size, dst.take_waited()).await?;
    }
}

async fn forward_until_close<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut Stall<W>,
    pending: &mut Vec<u8>,
) -> Result<(), BodyError>
where
    R: ReadInto,
    W: AsyncWrite + Unpin,
{
    let mut size = ReadSize::new();
    loop {
        send(dst, pending, &buf[..]).await?;
        buf.clear();
        match size.fill(src, buf, dst.take_waited()).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) => return Err(BodyError::Read(error)),
        }
    }
}
