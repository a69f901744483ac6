//! Coarse deadlines, kept by one sweeper per worker instead of a timer in every connection and every exchange.
//!
//! What a proxy with thousands of keep-alive clients mostly holds is connections waiting. tokio's `Sleep` sits
//! inside each waiting connection's future and is large next to the rest of it (tokio allocates tasks in steps,
//! so it decides which step an idle connection costs: `bench/README.md`, Design figures). And a `Sleep` armed per request that
//! becomes the worker's earliest timer (always, with one connection) wakes the event loop through its eventfd: a
//! system call and an extra `epoll_wait` per request. Here a wait is a slot (a deadline and a waker) in the
//! worker's [`Timers`], and one sweeper task per worker fires the deadlines that have passed every `tick`: a
//! deadline is kept to within one tick, which is all these timeouts need (the worker ticks at an eighth of its
//! shortest one, between 10 ms and 1 s). While nothing waits, the sweeper sleeps (unless the worker has other
//! chores for it: idle backend connections to close).
//!
//! On shutdown ([`Timers::drain`]), waits for a client's next request are cut short to a grace period: a request
//! already on its way is still answered, and idle connections close soon after.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

use crate::h1::transport::Transport;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The deadlines of one worker.
#[derive(Default)]
pub struct Timers {
    slots: RefCell<Slab<Slot>>,
    /// Raised when the first wait comes in, so that the sweeper only ticks while something waits.
    armed: Notify,
    /// Once draining: no wait for a client's request lasts beyond this.
    idle_cap: Cell<Option<Instant>>,
}

struct Slot {
    deadline: Instant,
    waker: Waker,
    expired: bool,
    /// A wait for a client's next request (cut short by a drain), as opposed to a deadline of an exchange.
    idle: bool,
}

/// The wait ran out.
#[derive(Debug)]
pub struct Elapsed;

impl Timers {
    /// Waits until `stream` has something to read (or an error to report): `Ok`; or until `wait` has passed:
    /// `Err(Elapsed)`. A stream already readable costs no slot.
    pub fn readable<'a, T: Transport>(&'a self, stream: &'a T, wait: Duration) -> Readable<'a, T> {
        Readable {
            stream,
            deadline: self.deadline(wait),
        }
    }

    /// Completes once `after` has passed since its first poll, or once a drain's grace has: for a client's
    /// request head, which is cut short by a drain like a wait for a request is.
    pub fn head_deadline(&self, after: Duration) -> HeadDeadline<'_> {
        HeadDeadline(self.deadline(after))
    }

    /// Completes once `after` has passed since its first poll.
    pub fn deadline(&self, after: Duration) -> Deadline<'_> {
        Deadline {
            timers: self,
            after_ms: u32::try_from(after.as_millis()).unwrap_or(u32::MAX),
            slot: NO_SLOT,
        }
    }

    /// Fires the deadlines that have passed, every `tick()`, for as long as it is polled; runs `chores` on every
    /// tick too, which answer whether they still need ticks while no deadline waits (see [`Timers::arm`]).
    pub async fn sweep(
        &self,
        tick: impl Fn() -> Duration,
        mut chores: impl FnMut(Instant) -> bool,
    ) {
        let mut busy = false;
        loop {
            if !busy && self.slots.borrow().is_empty() {
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
            busy = chores(now);
        }
    }

    /// Wakes a sleeping sweeper: its chores have something to watch again.
    pub fn arm(&self) {
        self.armed.notify_one();
    }

    /// Cuts every wait for a client's next request, now and from now on, to at most `grace`.
    pub fn drain(&self, grace: Duration) {
        let cap = Instant::now() + grace;
        self.idle_cap.set(Some(cap));
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if slot.idle && slot.deadline > cap {
                slot.deadline = cap;
            }
        }
        self.arm();
    }

    fn insert(&self, mut deadline: Instant, waker: Waker, idle: bool) -> u32 {
        if let Some(cap) = self.idle_cap.get().filter(|_| idle) {
            deadline = deadline.min(cap);
        }
        let mut slots = self.slots.borrow_mut();
        if slots.is_empty() {
            self.armed.notify_one();
        }
        let key = slots.insert(Slot {
            deadline,
            waker,
            expired: false,
            idle,
        });
        // Four billion waits at once would need terabytes of sockets first.
        u32::try_from(key).expect("fewer than 2^32 waiting connections")
    }

    fn remove(&self, key: u32) {
        if key == NO_SLOT {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        slots.remove(key as usize);
        // A slab keeps its peak size (and the sweeper visits every entry): start afresh once a burst of waiting
        // connections is gone.
        if slots.is_empty() && slots.capacity() > SHRINK_ABOVE {
            *slots = Slab::new();
        }
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

/// See [`Timers::readable`]. Written by hand rather than as an `async fn`, and compact (a reference and a
/// [`Deadline`]): it is what every waiting connection holds.
pub struct Readable<'a, T> {
    stream: &'a T,
    deadline: Deadline<'a>,
}

// What every waiting connection holds stays this small (checked when the crate builds).
const _: () = assert!(std::mem::size_of::<Deadline<'static>>() == 16);
const _: () = assert!(std::mem::size_of::<Readable<'static, tokio::net::TcpStream>>() == 24);

const NO_SLOT: u32 = u32::MAX;
/// Slots an empty slab may keep.
const SHRINK_ABOVE: usize = 1024;

impl<T: Transport> Future for Readable<'_, T> {
    type Output = Result<(), Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.stream.poll_readable(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        self.deadline.poll_kind(cx, true).map(|()| Err(Elapsed))
    }
}

/// See [`Timers::deadline`]. Milliseconds and a slot number as `u32`: it sits in every waiting connection's
/// [`Readable`].
pub struct Deadline<'a> {
    timers: &'a Timers,
    after_ms: u32,
    /// The slot in `timers` once the deadline has one, else [`NO_SLOT`].
    slot: u32,
}

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_kind(cx, false)
    }
}

/// See [`Timers::head_deadline`].
pub struct HeadDeadline<'a>(Deadline<'a>);

impl Future for HeadDeadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_kind(cx, true)
    }
}

impl Deadline<'_> {
    /// Polls the deadline; `idle`: it bounds a wait for a client's next request.
    fn poll_kind(&mut self, cx: &mut Context<'_>, idle: bool) -> Poll<()> {
        if self.slot == NO_SLOT {
            let deadline = Instant::now() + Duration::from_millis(self.after_ms.into());
            self.slot = self.timers.insert(deadline, cx.waker().clone(), idle);
            Poll::Pending
        } else if self.timers.expired(self.slot, cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Deadline<'_> {
    fn drop(&mut self) {
        self.timers.remove(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::socket::loopback_pair;
    use std::rc::Rc;
    use tokio::io::AsyncWriteExt;

    /// Runs `body` on a LocalSet next to a sweeper ticking every 10 ms.
    async fn with_sweeper<F: Future>(body: impl FnOnce(Rc<Timers>) -> F) -> F::Output {
        let timers = Rc::new(Timers::default());
        let local = tokio::task::LocalSet::new();
        let sweeper = timers.clone();
        local.spawn_local(
            async move { sweeper.sweep(|| Duration::from_millis(10), |_| false).await },
        );
        local.run_until(body(timers)).await
    }

    #[tokio::test]
    async fn a_wait_with_nothing_coming_runs_out_within_a_tick() {
        with_sweeper(|timers| async move {
            let (_near, far) = loopback_pair().await;
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
    async fn a_deadline_fires_after_its_time_from_the_first_poll() {
        with_sweeper(|timers| async move {
            let started = std::time::Instant::now();
            timers.deadline(Duration::from_millis(100)).await;
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
            let (mut near, far) = loopback_pair().await;
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
