//! What a listener does with a connection it accepted: the front end of each kind of listener.
//!
//! The server accepts; the front end decides what the connection is before anything is read from it as HTTP: a
//! PROXY protocol header first (from trusted sources only), then a TLS handshake on a TLS listener, then the
//! protocol (HTTP/1.1 on our own engine, HTTP/2 on hyper's, a redirect to https, or TCP bytes copied whole to a
//! backend). A plain HTTP listener without PROXY headers goes straight to the HTTP/1.1 engine, as it always did:
//! the common case pays for nothing it does not use.

use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::TcpStream;

use crate::config::{ListenerConfig, ListenerKind, Mode};
use crate::connection;
use crate::h1::client::Client;
use crate::worker::Worker;

/// One listener's front end, shared by its sockets on every worker.
pub struct Front {
    config: ListenerConfig,
}

impl Front {
    pub fn new(config: ListenerConfig) -> Self {
        Front { config }
    }

    /// Serves a connection just accepted (and counted against `max_connections`) on this worker.
    pub fn accept(&self, stream: TcpStream, peer: SocketAddr, worker: &Rc<Worker>) {
        let config = &self.config;
        match (config.kind, config.mode) {
            (ListenerKind::Plain, Mode::Http) if config.accept_proxy.is_empty() => {
                connection::spawn(Client::new(stream, peer), worker)
            }
            (kind, mode) => {
                tracing::warn!(%peer, "{kind:?} listener in {mode:?} mode: not served yet");
                drop(stream);
                // `max_connections` was counted for this connection: give it back through an open guard.
                drop(worker.open());
            }
        }
    }

    /// What a listener is, for logs: `http`, `tls`, `redirect to https`, with `tcp` and `PROXY from …` when so.
    pub fn describe(config: &ListenerConfig) -> String {
        let mut text = match (config.kind, config.mode) {
            (ListenerKind::Plain, Mode::Http) => "http".to_owned(),
            (ListenerKind::Tls, Mode::Http) => "https".to_owned(),
            (ListenerKind::RedirectHttps, _) => "redirect to https".to_owned(),
            (ListenerKind::Plain, Mode::Tcp) => "tcp".to_owned(),
            (ListenerKind::Tls, Mode::Tcp) => "tcp over tls".to_owned(),
        };
        if !config.accept_proxy.is_empty() {
            let from: Vec<String> = config.accept_proxy.iter().map(|c| c.to_string()).collect();
            text.push_str(&format!(", PROXY header from {}", from.join(" ")));
        }
        text
    }

    /// [`Front::describe`] with the address as written: what a reload may not change.
    pub fn describe_with_address(config: &ListenerConfig) -> String {
        format!(
            "{} {}",
            crate::config::host_port(&config.host, config.port),
            Front::describe(config)
        )
    }
}
