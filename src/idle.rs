//! Deadlines for connections waiting for their next request, kept by one sweeper per worker instead of a timer
//! in every connection.
//!
//! What a proxy with thousands of keep-alive clients mostly holds is connections waiting. tokio's `Sleep` is
//! 112 bytes inside each waiting connection's future, and tokio allocates a task in steps of 128 bytes: the timer
//! alone decides whether an idle connection costs 384 or 512 bytes of task. Here a wait is a slot (a deadline and
//! a waker) in the worker's [`IdleTimers`], and one sweeper task per worker times out the waits past their
//! deadline every `tick`: a deadline is kept to within one tick, which is all an idle timeout needs (the worker
//! ticks at an eighth of its shorter wait, between 10 ms and 1 s). While nothing waits, the sweeper sleeps.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The waits of one worker's connections.
#[derive(Default)]
pub struct IdleTimers {
    slots: RefCell<Slab<Slot>>,
    /// Raised when the first wait comes in, so that the sweeper only ticks while something waits.
    armed: Notify,
}

struct Slot {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

/// The wait ran out.
#[derive(Debug)]
pub struct Elapsed;

impl IdleTimers {
    /// Waits until `stream` has something to read (or an error to report): `Ok`; or until `wait` has passed:
    /// `Err(Elapsed)`. A socket already readable costs no slot.
    pub fn readable<'a>(&'a self, stream: &'a TcpStream, wait: Duration) -> Readable<'a> {
        Readable {
            timers: self,
            stream,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            slot: NO_SLOT,
        }
    }

    /// Times out the waits past their deadline, every `tick()`, for as long as it is polled.
    pub async fn sweep(&self, tick: impl Fn() -> Duration) {
        loop {
            if self.slots.borrow().is_empty() {
                self.armed.notified().await;
            }
            tokio::time::sleep(tick()).await;
            let now = Instant::now();
            for (_, slot) in self.slots.borrow_mut().iter_mut() {
                if !slot.expired && slot.deadline <= now {
                    slot.expired = true;
                    slot.waker.wake_by_ref();
                }
            }
        }
    }

    fn insert(&self, deadline: Instant, waker: Waker) -> u32 {
        let mut slots = self.slots.borrow_mut();
        if slots.is_empty() {
            self.armed.notify_one();
        }
        let key = slots.insert(Slot {
            deadline,
            waker,
            expired: false,
        });
        // Four billion waits at once would need terabytes of sockets first.
        u32::try_from(key).expect("fewer than 2^32 waiting connections")
    }

    /// Whether the wait in `key` ran out; if not, it will wake `waker`.
    fn expired(&self, key: u32, waker: &Waker) -> bool {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[key as usize];
        if !slot.expired && !slot.waker.will_wake(waker) {
            slot.waker = waker.clone();
        }
        slot.expired
    }
}

/// See [`IdleTimers::readable`]. Written by hand rather than as an `async fn`, and compact (24 bytes): it is what
/// every waiting connection holds, and with it a connection's task fits tokio's 256-byte allocation step.
pub struct Readable<'a> {
    timers: &'a IdleTimers,
    stream: &'a TcpStream,
    wait_ms: u32,
    /// The slot in `timers` once the wait has one, else [`NO_SLOT`].
    slot: u32,
}

const NO_SLOT: u32 = u32::MAX;
/// Slots an empty slab may keep.
const SHRINK_ABOVE: usize = 1024;

impl Future for Readable<'_> {
    type Output = Result<(), Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.stream.poll_read_ready(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        if self.slot == NO_SLOT {
            let deadline = Instant::now() + Duration::from_millis(self.wait_ms.into());
            self.slot = self.timers.insert(deadline, cx.waker().clone());
        } else if self.timers.expired(self.slot, cx.waker()) {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

impl Drop for Readable<'_> {
    fn drop(&mut self) {
        if self.slot != NO_SLOT {
            let mut slots = self.timers.slots.borrow_mut();
            slots.remove(self.slot as usize);
            // A slab keeps its peak size (and the sweeper visits every entry): start afresh once a burst of
            // waiting connections is gone.
            if slots.is_empty() && slots.capacity() > SHRINK_ABOVE {
                *slots = Slab::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    /// Runs `body` on a LocalSet next to a sweeper ticking every 10 ms.
    async fn with_sweeper<F: Future>(body: impl FnOnce(Rc<IdleTimers>) -> F) -> F::Output {
        let timers = Rc::new(IdleTimers::default());
        let local = tokio::task::LocalSet::new();
        let sweeper = timers.clone();
        local.spawn_local(async move { sweeper.sweep(|| Duration::from_millis(10)).await });
        local.run_until(body(timers)).await
    }

    #[tokio::test]
    async fn a_wait_with_nothing_coming_runs_out_within_a_tick() {
        with_sweeper(|timers| async move {
            let (_near, far) = pair().await;
            // A fresh socket counts as readable until a read finds nothing.
            let nothing = far.try_read(&mut [0u8; 1]).unwrap_err();
            assert_eq!(nothing.kind(), std::io::ErrorKind::WouldBlock);
            let started = std::time::Instant::now();
            let outcome = timers.readable(&far, Duration::from_millis(100)).await;
            assert!(outcome.is_err());
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(100), "{waited:?}");
            assert!(waited < Duration::from_secs(2), "{waited:?}");
            assert!(timers.slots.borrow().is_empty(), "the slot is given back");
        })
        .await;
    }

    #[tokio::test]
    async fn bytes_arriving_end_the_wait_and_free_the_slot() {
        with_sweeper(|timers| async move {
            let (mut near, far) = pair().await;
            let waiting = tokio::task::spawn_local({
                let timers = timers.clone();
                async move {
                    let mut probe = [0u8; 1];
                    loop {
                        timers
                            .readable(&far, Duration::from_secs(30))
                            .await
                            .unwrap();
                        if far.try_read(&mut probe).is_ok() {
                            return probe[0];
                        }
                    }
                }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                timers.slots.borrow().len(),
                1,
                "the connection waits in a slot"
            );
            near.write_all(b"x").await.unwrap();
            assert_eq!(waiting.await.unwrap(), b'x');
            assert!(timers.slots.borrow().is_empty());
        })
        .await;
    }
}
