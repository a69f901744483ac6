//! How a new connection to a backend is made, whatever the backend speaks: TCP, then (for a `tls` backend) a TLS
//! handshake verified as its config says, after a PROXY protocol header when the caller gives one. The generic
//! proxy path (`h2`) and the health checks connect through here; the HTTP/1.1 fast path keeps its own pool of
//! plain TCP connections (`pool`), as only plain backends are served by it.
//!
//! One timeout (the caller's connect timeout) covers all of it: a backend that accepts and then stalls the handshake
//! is as down as one that does not accept. The TLS setup (trust, client certificate, ALPN) was built with the
//! snapshot (`tls_client`); here it only costs an `Arc` clone. A failure says which step failed, in the words a
//! person debugging it needs ([`TlsError`]: `certificate verify failed: …` carries rustls' own reason), and counts as
//! a connect failure: nothing of a request was sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::tls_client::ALPN_H2;
use crate::backend::Backend;
use crate::config::Protocol;
use crate::failure::{describe_io, Failure};

/// A connection to a backend.
pub enum Upstream {
    Plain(TcpStream),
    /// Boxed: a TLS session (buffers, keys) is much larger than a socket, which the enum should not pay for.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Upstream {
    /// Whether the backend agreed to speak HTTP/2 on it (ALPN `h2` over TLS; `h2c` is known in advance).
    #[allow(dead_code)] // read by the generic path (issue 10, in progress)
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Upstream::Plain(_) => false,
            Upstream::Tls(stream) => stream.get_ref().1.alpn_protocol() == Some(ALPN_H2),
        }
    }
}

/// Why no connection to a backend could be had. Nothing of the request was sent in either case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("{}", describe_io(.0))]
    Io(io::Error),
    /// Connected, but TLS to the backend failed (`connector`).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ConnectError {
    pub fn failure(&self) -> Failure {
        match self {
            ConnectError::Timeout(_) => Failure::ConnectTimeout,
            ConnectError::Io(error) => Failure::of_io(error, true),
            ConnectError::Tls(error) => error.failure(),
        }
    }
}

/// Why TLS to a backend failed, once connected (or before, when it could not be set up).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The backend's certificate is not one we trust for its name (rustls says why).
    #[error("certificate verify failed: {0}")]
    Verify(rustls::Error),
    /// The handshake failed otherwise: an alert from the backend, no common version or cipher, garbage.
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// The connection failed during the handshake (reset, closed).
    #[error("TLS handshake failed: {}", describe_io(.0))]
    Io(io::Error),
    /// The connect timeout (which covers connect and handshake) ran out during the handshake.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// A backend with `protocol = "h2"` did not choose `h2` by ALPN.
    #[error("the backend did not agree to HTTP/2 over TLS (ALPN {}), which protocol \"h2\" needs", alpn(.0))]
    NoH2(Option<Vec<u8>>),
    /// The backend's TLS setup could not be built (see `tls_client`).
    #[error("TLS not set up: {0}")]
    Setup(String),
}

fn alpn(chosen: &Option<Vec<u8>>) -> String {
    match chosen {
        None => "none".to_owned(),
        Some(id) => format!("{:?}", String::from_utf8_lossy(id)),
    }
}

impl TlsError {
    /// The failure kind: a connect failure (nothing of a request was sent), or the socket's.
    pub fn failure(&self) -> Failure {
        match self {
            TlsError::Timeout(_) => Failure::ConnectTimeout,
            TlsError::Io(error) => Failure::of_io(error, true),
            TlsError::Verify(_)
            | TlsError::Handshake(_)
            | TlsError::NoH2(_)
            | TlsError::Setup(_) => Failure::ConnectFailed,
        }
    }

    /// What a handshake's I/O error means: tokio-rustls carries rustls' own errors inside `io::Error`.
    fn of_handshake(error: io::Error) -> TlsError {
        let Some(inner) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return TlsError::Io(error);
        };
        match inner {
            rustls::Error::InvalidCertificate(_) => TlsError::Verify(inner.clone()),
            _ => TlsError::Handshake(inner.clone()),
        }
    }
}

/// Connects to `backend`, sends `prelude` first if given (a PROXY protocol header), then does what the backend's
/// config asks (a TLS handshake, verified as its `tls` options say). `timeout` bounds all of it.
pub async fn connect(
    backend: &Backend,
    timeout: Duration,
    prelude: Option<&[u8]>,
) -> Result<Upstream, ConnectError> {
    let tls = match &backend.tls {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(problem)) => return Err(TlsError::Setup(problem.clone()).into()),
    };
    let deadline = Instant::now() + timeout;
    let connect = async {
        let mut stream = TcpStream::connect(backend.addr)
            .await
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        if let Some(prelude) = prelude {
            stream.write_all(prelude).await.map_err(ConnectError::Io)?;
        }
        Ok::<_, ConnectError>(stream)
    };
    let stream = tokio::time::timeout_at(deadline, connect)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    let Some(tls) = tls else {
        return Ok(Upstream::Plain(stream));
    };
    let handshake = TlsConnector::from(tls.config.clone()).connect(tls.server_name.clone(), stream);
    let stream = tokio::time::timeout_at(deadline, handshake)
        .await
        .map_err(|_| TlsError::Timeout(timeout))?
        .map_err(TlsError::of_handshake)?;
    let chosen = stream.get_ref().1.alpn_protocol();
    if backend.options.protocol == Protocol::H2 && chosen != Some(ALPN_H2) {
        return Err(TlsError::NoH2(chosen.map(<[u8]>::to_vec)).into());
    }
    Ok(Upstream::Tls(Box::new(stream)))
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Upstream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Upstream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Upstream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upstream::Plain(stream) => stream.is_write_vectored(),
            Upstream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Upstream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Upstream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::net::TcpListener;

    use super::*;
    use crate::backend::TlsClient;
    use crate::config::{BackendConfig, BackendOptions, UpstreamTls};
    use crate::upstream::tls_client::Configs;

    /// A TLS backend at `addr` trusting a CA of its own (which nothing it meets is signed by).
    fn tls_backend(addr: std::net::SocketAddr, ca: &std::path::Path) -> Backend {
        let config = BackendConfig {
            id: 1,
            host: "127.0.0.1".into(),
            port: addr.port(),
            addr,
            options: BackendOptions {
                tls: Some(UpstreamTls {
                    ca: Some(ca.to_path_buf()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            weight: 1,
            max_connections: None,
            resolve: Default::default(),
        };
        let tls = Configs::default().for_backend(&config);
        Backend::new(&config, None, 1).with_tls(tls)
    }

    fn ca_file() -> tempfile::NamedTempFile {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(ca.pem().as_bytes()).unwrap();
        file
    }

    async fn failed(backend: &Backend, timeout: Duration) -> ConnectError {
        match connect(backend, timeout, None).await {
            Ok(_) => panic!("connected"),
            Err(error) => error,
        }
    }

    #[tokio::test]
    async fn the_connect_timeout_covers_a_handshake_that_never_ends() {
        // Accepts and never answers: the ClientHello waits for a ServerHello that never comes.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = tls_backend(silent.local_addr().unwrap(), ca_file().path());
        assert!(matches!(backend.tls, Some(Ok(TlsClient { .. }))));

        let started = std::time::Instant::now();
        let error = failed(&backend, Duration::from_millis(200)).await;
        assert_eq!(error.to_string(), "TLS handshake timed out after 200ms");
        assert_eq!(error.failure(), Failure::ConnectTimeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_backend_whose_tls_could_not_be_set_up_fails_every_connect_saying_why() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = tls_backend(silent.local_addr().unwrap(), ca_file().path())
            .with_tls(Some(Err("ca /gone.pem: cannot read".to_owned())));
        let error = failed(&backend, Duration::from_secs(1)).await;
        assert_eq!(
            error.to_string(),
            "TLS not set up: ca /gone.pem: cannot read"
        );
        assert_eq!(error.failure(), Failure::ConnectFailed);
    }

    #[tokio::test]
    async fn a_plain_server_is_no_tls_backend() {
        // Answers the ClientHello with HTTP/1.1: not TLS at all.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = tls_backend(plain.local_addr().unwrap(), ca_file().path());
        tokio::spawn(async move {
            let (mut stream, _) = plain.accept().await.unwrap();
            let answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
            let _ = stream.write_all(answer).await;
        });
        let error = failed(&backend, Duration::from_secs(5)).await;
        assert!(
            error.to_string().starts_with("TLS handshake failed: "),
            "{error}"
        );
        assert_eq!(error.failure(), Failure::ConnectFailed);
    }
}
