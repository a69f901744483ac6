//! `lb`: an HTTP load balancer.
//!
//! # Layout
//! Data flows one way: listener → connection → proxy → balancer → upstream pool → backend. Below the proxy,
//! imports run one way too: `control` → `health` → `upstream` → `balance` → `backend` (and the proxy uses
//! `upstream` and `balance`); any module may use `h1`, `config`, `failure`.
//!
//! - [`cli`]: the command line (the spec's flags, the `demo` subcommand).
//! - [`config`]: the file formats and the one validation step that builds a [`config::Config`].
//! - `server`: worker threads (one current-thread runtime per core), listeners, graceful drain. The public
//!   [`Server`] handle starts everything and reports the bound address; [`Server::start_local`] runs one worker on
//!   the caller's runtime instead, for in-process tests.
//! - `control`: the control plane's hold on routing: builds and publishes each snapshot, keeps one health checker
//!   per backend (what a reload will change).
//! - `admission`: how many client connections may be open at once (`max_connections`), derived from the fd limit.
//! - `connection`: one client connection: read a head, hand it to the proxy, keep-alive, the 408 and idle timeouts.
//! - `timers`: coarse deadlines (idle waits, backend answers), one sweeper per worker instead of a timer each.
//! - `h1`: our HTTP/1.1 engine: strict head parsing, chunked framing, head rewriting, body streaming.
//! - `proxy`: one request's journey: pick a backend, forward, retry, answer 502/503/504.
//! - `failure`: what went wrong, as a kind (whose fault, which status); `log_limit`: failure lines that cannot
//!   flood (the first in full, the rest summed up once a second).
//! - `balance`: the selection API (a balancer built per snapshot, asked per request with the candidates: backends,
//!   a request key, a filter for health, admin state and retries) and its algorithms (round robin).
//! - `upstream`: the routing snapshot (carried over by backend identity, published atomically) and the per-thread
//!   connection pool.
//! - `backend`: a backend's identity and its live state (health, admin state, requests in flight with their RAII
//!   guard, a latency slot, counters), below both `balance` and `upstream`.
//! - `health`: one checker task per backend, started and stopped one by one, and the pure rise/fall state machine.
//! - [`demo`]: the built-in demo backends of `lb demo`.
//! - `signal`: SIGINT/SIGTERM as one shutdown future; SIGHUP caught and logged.
//! - `fuzzing` (hidden): what the cargo-fuzz targets in `fuzz/` call.

mod access_log;
mod admission;
mod backend;
mod balance;
pub mod cli;
pub mod config;
mod connection;
mod control;
pub mod demo;
mod failure;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod health;
mod log_limit;
mod proxy;
mod server;
pub mod signal;
mod timers;
mod upstream;
mod worker;

pub use server::{Drained, Server, StartError};
