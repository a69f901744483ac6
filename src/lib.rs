//! `lb`: an HTTP load balancer.
//!
//! # Layout
//! Data flows one way: listener → connection → proxy → balancer → upstream pool → backend.
//!
//! - [`cli`]: the command line (the spec's flags, the `demo` subcommand).
//! - [`config`]: the file formats and the one validation step that builds a [`config::Config`].
//! - [`server`]: worker threads (one current-thread runtime per core), listeners, graceful drain. The public
//!   [`Server`] handle starts everything and reports the bound address.
//! - `admission`: how many client connections may be open at once (`max_connections`), derived from the fd limit.
//! - `connection`: one client connection: read a head, hand it to the proxy, keep-alive, the 408 and idle timeouts.
//! - `timers`: coarse deadlines (idle waits, backend answers), one sweeper per worker instead of a timer each.
//! - `h1`: our HTTP/1.1 engine: strict head parsing, chunked framing, head rewriting, body streaming.
//! - `proxy`: one request's journey: pick a backend, forward, retry, answer 502/503/504.
//! - `failure`: what went wrong, as a kind (whose fault, which status); `log_limit`: failure lines that cannot
//!   flood (the first in full, the rest summed up once a second).
//! - `balance`: how a backend is chosen (round robin), given a filter for health and retries.
//! - `upstream`: backend identity and live state, the routing snapshot, the per-thread connection pool.
//! - `health`: one checker task per backend and the pure rise/fall state machine.
//! - [`demo`]: the built-in demo backends of `lb demo`.
//! - `signal`: SIGINT/SIGTERM as one shutdown future; SIGHUP caught and logged.
//! - `fuzzing` (hidden): what the cargo-fuzz targets in `fuzz/` call.

mod access_log;
mod admission;
mod balance;
pub mod cli;
pub mod config;
mod connection;
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
