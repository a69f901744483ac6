//! The integration tests: real backends, the real `lb` binary, real sockets on loopback. See `harness` for the tools.

mod access_log;
mod acks;
mod admin;
mod blame;
mod bounds;
mod cli;
mod clients;
mod config_errors;
mod config_forms;
mod failures;
mod framing;
mod harness;
mod headers;
mod health;
mod honest;
mod in_process;
mod limits;
mod metrics;
mod reload;
mod rotation;
mod shutdown;
mod streaming;
mod upgrade;
mod upgrade_checks;
mod websocket;
