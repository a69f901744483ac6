//! What a listener does with a connection it accepted: the front end of each kind of listener.
//!
//! The server accepts; the front end decides what the connection is before anything is read from it as HTTP: a
//! PROXY protocol header first (from trusted sources only), then a TLS handshake on a TLS listener, then the
//! protocol (HTTP/1.1 on our own engine, HTTP/2 on hyper's, a redirect to https, or TCP bytes copied whole to a
//! backend). A plain HTTP listener without PROXY headers goes straight to the HTTP/1.1 engine, as it always did:
//! the common case pays for nothing it does not use.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::config::{ListenerConfig, ListenerKind, Mode};
use crate::connection;
use crate::h1::client::Client;
use crate::h2;
use crate::log_limit::{self, Subject};
use crate::proxy_protocol::{self, Header, Refused};
use crate::tcp::{self, Ends, FirstBytes};
use crate::tls;
use crate::worker::{Open, Worker};

/// One listener's front end, shared by its sockets on every worker.
pub struct Front {
    config: ListenerConfig,
    /// The TLS config and certificates, on a TLS listener.
    tls: Option<tls::Acceptor>,
    /// The port a redirect listener sends clients to (the TLS listener's actual port).
    https_port: u16,
}

impl Front {
    pub fn new(config: ListenerConfig) -> Self {
        Front {
            config,
            tls: None,
            https_port: 443,
        }
    }

    /// Serves TLS with `acceptor` (on a TLS listener).
    pub fn with_tls(mut self, acceptor: Option<tls::Acceptor>) -> Self {
        self.tls = acceptor;
        self
    }

    /// Redirects to https on `port` (on a redirect listener).
    pub fn with_https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// Serves a connection just accepted (and counted against `max_connections`) on this worker.
    pub fn accept(&self, stream: TcpStream, peer: SocketAddr, worker: &Rc<Worker>) {
        let config = &self.config;
        match (config.kind, config.mode) {
            (ListenerKind::Plain, Mode::Http) if config.accept_proxy.is_empty() => {
                connection::spawn(Client::new(stream, peer), worker)
            }
            (ListenerKind::Plain, mode) => {
                let start = self.start(peer);
                tokio::task::spawn_local(plain(stream, peer, mode, start, worker.open()));
            }
            (ListenerKind::Tls, Mode::Http) if self.tls.is_some() => {
                if let Some(acceptor) = &self.tls {
                    let start = self.start(peer);
                    serve_tls(acceptor.clone(), stream, peer, start, worker);
                }
            }
            (ListenerKind::RedirectHttps, Mode::Http) if config.accept_proxy.is_empty() => {
                let open = worker.open();
                let timeout = worker.routing().load().timeouts.client_header;
                tokio::task::spawn_local(tls::serve_redirect(
                    stream,
                    self.https_port,
                    timeout,
                    open,
                ));
            }
            (kind, mode) => {
                tracing::warn!(%peer, "{kind:?} listener in {mode:?} mode: not served yet");
                drop(stream);
                // `max_connections` was counted for this connection: give it back through an open guard.
                drop(worker.open());
            }
        }
    }

    /// What this listener reads first from a connection from `peer`.
    fn start(&self, peer: SocketAddr) -> Start {
        let sources = &self.config.accept_proxy;
        match sources.is_empty() {
            true => Start::Protocol,
            false if sources.iter().any(|block| block.contains(peer.ip())) => Start::Header,
            false => Start::NoHeader,
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

/// A connection on a TLS listener: the handshake, then HTTP/1.1 on our engine, or HTTP/2 on hyper's (by ALPN).
/// With `accept_proxy`, the PROXY header comes first (before the TLS handshake, as load balancers send it).
fn serve_tls(
    acceptor: tls::Acceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    start: Start,
    worker: &Rc<Worker>,
) {
    let open = worker.open();
    tokio::task::spawn_local(async move {
        let timeout = open.worker().routing().load().timeouts.client_header;
        let (peer, already) = match start {
            Start::Protocol => (peer, BytesMut::new()),
            Start::Header | Start::NoHeader => {
                match read_start(&mut stream, peer, start, Mode::Http, timeout).await {
                    Some((ends, already)) => (ends.peer, already),
                    None => return,
                }
            }
        };
        let Some(stream) = acceptor.handshake(stream, &already, peer, timeout).await else {
            return;
        };
        if stream.alpn_is(b"h2") {
            // HTTP/2 is served by hyper over the same transport (read through `Rewind`, one copy off the fast path).
            let ends = h2::Ends {
                peer,
                local: crate::h1::transport::Transport::local_addr(&stream),
                https: true,
            };
            let io = h2::Rewind::new(stream, bytes::BytesMut::new());
            return h2::serve(io, ends, open).await;
        }
        connection::serve(Client::new(stream, peer), open).await
    });
}

/// What a connection must start with (see `accept_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The protocol: the listener reads no PROXY header.
    Protocol,
    /// A PROXY header (the source is trusted to send one, and must).
    Header,
    /// Anything but a PROXY header (the source is not trusted to send one).
    NoHeader,
}

/// Serves a connection on a plain listener that is not the fast path's: the PROXY header step first when the
/// listener has one, then HTTP (our engine, with the header's client as the peer) or TCP mode.
async fn plain(mut stream: TcpStream, peer: SocketAddr, mode: Mode, start: Start, open: Open) {
    let timeout = open.worker().routing().load().timeouts.client_header;
    let Some((ends, buf)) = read_start(&mut stream, peer, start, mode, timeout).await else {
        return;
    };
    match mode {
        Mode::Http => {
            let mut client = Client::new(stream, ends.peer);
            client.buf = buf;
            connection::serve(client, open).await
        }
        Mode::Tcp => {
            let first = match start {
                Start::NoHeader => FirstBytes::Checked,
                Start::Header | Start::Protocol => FirstBytes::Unchecked,
            };
            tcp::serve(stream, ends, buf, first, open).await
        }
    }
}

/// The PROXY header step of a listener with `accept_proxy`: who the connection is from (the header's client, or
/// the peer), and the bytes read past the header. `None`: the connection was refused (and logged).
async fn read_start(
    stream: &mut TcpStream,
    peer: SocketAddr,
    start: Start,
    mode: Mode,
    timeout: Duration,
) -> Option<(Ends, BytesMut)> {
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::debug!(%peer, %error, "client connection error");
            return None;
        }
    };
    let mut ends = Ends { peer, local };
    let mut buf = BytesMut::new();
    let read = match (start, mode) {
        (Start::Header, _) => proxy_protocol::read_header(stream, &mut buf, timeout)
            .await
            .map(|header| {
                if let Header::Proxied {
                    source,
                    destination,
                } = header
                {
                    ends = Ends {
                        peer: source,
                        local: destination,
                    };
                }
            }),
        // HTTP clients speak first: their first bytes are read here. In TCP mode the relay checks them as they
        // come (a server may speak first).
        (Start::NoHeader, Mode::Http) => {
            proxy_protocol::sniff_first_bytes(stream, &mut buf, timeout).await
        }
        (Start::NoHeader | Start::Protocol, _) => Ok(()),
    };
    match read {
        Ok(()) => Some((ends, buf)),
        Err(refused) => {
            refuse(peer, &refused, timeout);
            None
        }
    }
}

/// Logs a connection closed at its start: a header that is malformed or from a source not trusted with one is a
/// warning (at most one a second, then a sum: it is either a misconfigured peer or someone lying about addresses);
/// a client that closed or went quiet is its own business.
fn refuse(peer: SocketAddr, refused: &Refused, timeout: Duration) {
    let reason = match refused {
        Refused::Malformed(_) => "malformed PROXY header: connection closed",
        Refused::Untrusted => "PROXY header from a source not in accept_proxy: connection closed",
        Refused::Timeout(_) | Refused::Closed | Refused::Io(_) => {
            return tracing::debug!(%peer, ?timeout, "connection closed before its start was read: {refused}")
        }
    };
    let key = log_limit::Key {
        subject: Subject::Accept,
        what: "connections refused",
        reason,
    };
    if log_limit::first(key) {
        tracing::warn!(%peer, "{refused}: connection closed");
    }
}
