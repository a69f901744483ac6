//! TLS termination: the server config (rustls with the `ring` provider), the certificates chosen by SNI, the
//! handshake, and the TLS transport the HTTP/1.1 engine runs over; and the listener that redirects plain HTTP to
//! https.
//!
//! **Why `ring` rather than `aws-lc-rs`.** Both are rustls' providers, and for what a balancer does per request and
//! per handshake (AES-GCM and ChaCha20-Poly1305 records, X25519/P-256 key exchange, ECDSA signatures) both run
//! assembly of the same BoringSSL lineage: the bulk cost is about the same. `ring` is a small C and assembly build
//! (rcgen, a dev-dependency, needs it too); `aws-lc-rs` builds all of AWS-LC (no cmake needed any more on
//! x86-64/aarch64 Linux since 1.7, but a C++ compiler and several times the build time, which a two-core CI machine
//! feels). What `aws-lc-rs` adds (FIPS, post-quantum key exchange by default) is not asked of
//! `lb` yet; switching is one line below and one feature in `Cargo.toml`.
//!
//! A connection on a TLS listener: the handshake (bounded by `timeouts.client_header`, as a request head is), then
//! the protocol the client chose by ALPN (`h2`, then `http/1.1`: [`ADVERTISE_H2`]); a failed
//! handshake is a debug line, never an error of `lb`'s. A client that speaks plain HTTP to the TLS port gets
//! `400` in clear text and a close, as nginx answers (its 497), so that `curl http://` on the https port says what
//! is wrong instead of failing on garbage.

mod certificates;
mod redirect;
mod transport;

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::ServerConfig;
use rustls::ServerConnection;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use certificates::{CertificateError, Certificates};
pub use redirect::serve as serve_redirect;
use transport::Session;
pub use transport::TlsStream;

use crate::config::TlsConfig;

/// Whether `h2` is offered by ALPN (before `http/1.1`): the HTTP/2 front end (`h2::serve`) serves what it gets.
pub const ADVERTISE_H2: bool = true;

/// What every TLS listener shares: the rustls config and the certificates it resolves through.
#[derive(Debug, Clone)]
pub struct Acceptor {
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
}

impl Acceptor {
    /// Loads the certificates (any problem is the error: one line naming the file) and builds the rustls config:
    /// TLS 1.3 and 1.2, ALPN `http/1.1` (and `h2` when [`ADVERTISE_H2`]).
    pub fn new(config: &TlsConfig) -> Result<Self, CertificateError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = Arc::new(Certificates::load(config, provider.clone())?);
        let mut server = server_config(provider)
            .map_err(|error| CertificateError(format!("tls: {error}")))?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        // Stateless session tickets (keys rotated by rustls, shared by every worker through this one config): a
        // client that comes back resumes without a full handshake, whichever worker it lands on.
        server.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|error| CertificateError(format!("tls: session tickets: {error}")))?;
        server.alpn_protocols = match ADVERTISE_H2 {
            true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            false => vec![b"http/1.1".to_vec()],
        };
        Ok(Acceptor {
            config: Arc::new(server),
            certificates,
        })
    }

    /// Re-reads the certificates (see [`Certificates::reload`]): new handshakes use them, established connections
    /// are not touched. Answers the certificates that failed (each kept its previous version, if it had one).
    pub fn reload(&self, config: &TlsConfig) -> Vec<CertificateError> {
        self.certificates.reload(config)
    }

    /// Makes the TLS handshake on `tcp` within `timeout`. `None` when it failed (logged at debug, or answered
    /// with `400` when it was plain HTTP).
    /// `already`: bytes of the connection read before (past a PROXY protocol header), the handshake's start.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        already: &[u8],
        peer: std::net::SocketAddr,
        timeout: Duration,
    ) -> Option<TlsStream> {
        match tokio::time::timeout(timeout, self.handshake_inner(tcp, already)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(Failed::PlainHttp(mut tcp))) => {
                tracing::debug!(%peer, "plain HTTP on a TLS listener: 400");
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), tcp.write_all(PLAIN_HTTP_ANSWER))
                        .await;
                crate::h1::client::linger_close(&mut tcp).await;
                None
            }
            Ok(Err(Failed::Io(error))) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not done in time");
                None
            }
        }
    }

    async fn handshake_inner(&self, tcp: TcpStream, already: &[u8]) -> Result<TlsStream, Failed> {
        // The first byte of a TLS connection is a handshake record's (22); a letter is an HTTP method. One peek per
        // new connection: nothing next to a handshake's cost.
        let mut first = [0u8; 1];
        match already.first() {
            Some(byte) => first[0] = *byte,
            None => match tcp.peek(&mut first).await {
                Ok(_) => {}
                Err(error) => return Err(Failed::Io(error)),
            },
        }
        if first[0].is_ascii_uppercase() {
            return Err(Failed::PlainHttp(tcp));
        }
        let mut tls = ServerConnection::new(self.config.clone())
            .map_err(|error| Failed::Io(io::Error::other(error)))?;
        // What was read before (after a PROXY header) is the handshake's start: rustls takes it first.
        let mut rest = already;
        while !rest.is_empty() {
            tls.read_tls(&mut rest).map_err(Failed::Io)?;
            tls.process_new_packets()
                .map_err(|error| Failed::Io(io::Error::new(io::ErrorKind::InvalidData, error)))?;
        }
        let mut session = Session::new(tcp, tls);
        poll_fn(|cx| loop {
            std::task::ready!(session.poll_flush_tls(cx))?;
            if !session.tls.is_handshaking() {
                return std::task::Poll::Ready(Ok(()));
            }
            match session.read_tls_now() {
                Ok(0) => {
                    return std::task::Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed during the handshake",
                    )))
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(session.tcp.poll_read_ready(cx))?
                }
                Err(error) => return std::task::Poll::Ready(Err(error)),
            }
        })
        .await
        .map_err(Failed::Io)?;
        Ok(TlsStream::new(session))
    }
}

enum Failed {
    PlainHttp(TcpStream),
    Io(io::Error),
}

/// What a plain HTTP request on a TLS listener gets.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 49\r\nconnection: close\r\n\r\nThis port speaks HTTPS: use https:// to reach it\n";

fn server_config(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, rustls::Error> {
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_http_answer_says_its_length() {
        let answer = std::str::from_utf8(super::PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
