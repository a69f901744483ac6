//! Health checks: one task per backend, each on its own schedule and with its own cancellation.
//!
//! A check is `GET <path>` on a fresh connection, bounded by the check timeout; a status in the configured set
//! passes. The verdict goes through the rise/fall state machine (`state.rs`) and only a flip changes the backend's
//! shared `healthy` flag and writes a log line (info or warn), with the reason. Every check made is also recorded in
//! the backend's live state (counters; the last checks, since when and why it is down: `backend::history`, which
//! the admin plane shows) and logged at debug. A backend is checked once before it gets traffic
//! (`check::check_once`: every backend before the server accepts, a new one before the snapshot that adds it is
//! published), so the first requests already see the true state.
//!
//! The tasks are started and stopped by [`Checkers`] (`checkers.rs`), one per backend of the routed snapshot, so a
//! reload can add and remove backends one by one. Only health is checked: a backend disabled or draining by the
//! operator is still checked, so that its health is known when it comes back.
//!
//! A check that cannot even be made for a local reason (this process is out of file descriptors or socket
//! buffers) says nothing about the backend: it is not counted, it is tried again shortly, and it is logged at
//! most once a second. Otherwise a flood of clients would take every backend down at once.

mod check;
mod checkers;
mod state;

pub use check::check_once;
pub use checkers::Checkers;
