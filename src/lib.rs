//! `lb`: an HTTP load balancer.
//!
//! # Layout
//! Data flows one way: listener → connection → proxy → balancer → upstream pool → backend. Imports run one way
//! too: `server` → `connection` → `access_log`/`proxy` → `worker` → `upstream`/`timers`; `server` → `reresolve` →
//! `control` → `dns`/`health` → `upstream` → `balance` → `backend`; any module may use `h1`, `config`, `failure`. Nothing imports
//! back up.
//!
//! - [`cli`]: the command line (the spec's flags, the `demo` subcommand).
//! - [`config`]: the file formats and the one validation step that builds a [`config::Config`].
//! - `server`: worker threads (one current-thread runtime per core), listeners, graceful drain. The public
//!   [`Server`] handle starts everything and reports the bound address; [`Server::start_local`] runs one worker on
//!   the caller's runtime instead, for in-process tests.
//! - `control`: the control plane's hold on routing: builds and publishes each snapshot, keeps one health checker
//!   per backend (what a reload will change), and routes to the config with its backend names resolved.
//! - `dns`: backend host names as addresses: the resolver (the system's, or the config's `resolver`), the last
//!   answer of each name and when to ask again, and the config expanded with them (`resolve = "first"|"all"`).
//! - `reresolve`: the task that asks the names again as they fall due and hands moves to `control`.
//! - `admission`: how many client connections may be open at once (`max_connections`), derived from the fd limit.
//! - `worker`: one worker thread's context (routing handle, pool, buffers, timers, drain state) and its counters,
//!   which other threads read.
//! - `connection`: one client connection: read a head, hand it to the proxy, act on the outcome (the only place
//!   that answers on its own and ends a connection), keep-alive, the 408 and idle timeouts.
//! - `access_log`: the access log line of each answer (common, combined or JSON, on stdout) and the failure line.
//! - `timers`: coarse deadlines (idle waits, backend answers), one sweeper per worker instead of a timer each.
//! - `h1`: our HTTP/1.1 engine: strict head parsing, chunked framing, head rewriting, body streaming, and the
//!   client connection behind a `Transport` (plain TCP; TLS in `tls`).
//! - `h2`: the generic path on hyper: HTTP/2 clients (h2c by its preface, h2 by ALPN), HTTP/1.1 clients when
//!   some backend is not plain HTTP/1.1, and backends over HTTP/2 (gRPC); same balancer, retries, counts and logs.
//! - `proxy`: one request's journey: pick a backend, forward, retry, relay the answer or the tunnel of an
//!   upgrade; returns an outcome (it never answers on its own).
//! - `tcp`: TCP mode (L4): a connection balanced whole to a backend (connect retried on the next one), bytes copied
//!   both ways with half-close and an idle timeout.
//! - `proxy_protocol`: the PROXY protocol header (v1 text, v2 binary): encoded for `send_proxy` backends, read
//!   strictly from `accept_proxy` sources.
//! - `failure`: what went wrong, as a kind (whose fault, which status); `log_limit`: failure lines that cannot
//!   flood (the first in full, the rest summed up once a second).
//! - `balance`: the selection API (a balancer built per snapshot, asked per request with the candidates: backends,
//!   a request key, a filter for health, admin state and retries) and its algorithms (round robin, smooth weighted
//!   round robin, least request and peak EWMA by two random choices, weighted random, Maglev).
//! - `upstream`: the routing snapshot (carried over by backend identity, published atomically) and the per-thread
//!   connection pool.
//! - `backend`: a backend's identity and its live state (health, admin state, requests in flight with their RAII
//!   guard, a latency slot, counters), below both `balance` and `upstream`.
//! - `health`: one checker task per backend, started and stopped one by one, and the pure rise/fall state machine.
//! - [`demo`]: the built-in demo backends of `lb demo`.
//! - `tls`: TLS termination (rustls, `ring`): certificates chosen by SNI and re-read on reload, the handshake,
//!   the TLS transport under the HTTP/1.1 engine; and the redirect-to-https listener.
//! - `signal`: SIGINT/SIGTERM as one shutdown future; SIGHUP caught and logged.
//! - `fuzzing` (hidden): what the cargo-fuzz targets in `fuzz/` call.

mod access_log;
pub mod admin;
mod admission;
mod backend;
mod balance;
pub mod cli;
pub mod config;
mod connection;
mod control;
pub mod demo;
mod dns;
mod failure;
mod front;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2;
mod health;
mod log_limit;
mod proxy;
mod proxy_protocol;
mod reresolve;
mod server;
pub mod signal;
mod tcp;
mod timers;
mod tls;
mod upstream;
mod worker;

pub use server::{Drained, ReloadError, Reloaded, Server, StartError};

/// What the `pick` microbenchmark (`bench/pick.rs`) measures: a balancer over test backends. Not an API.
#[doc(hidden)]
pub use balance::testing::PickBench;
