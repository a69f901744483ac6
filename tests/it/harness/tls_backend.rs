//! Backends that speak what a plain [`super::TestBackend`] does not: TLS (a hyper server over tokio-rustls, with a
//! certificate from a [`TestCa`] made with rcgen, optionally requiring a client certificate) and HTTP/2 (by ALPN
//! over TLS, or h2c with prior knowledge in clear text). Each records what a test wants to assert on: the SNI name
//! the client sent, the ALPN protocol chosen, the client certificate it presented, the HTTP version of each request.
//!
//! Routes: [`HEALTH_PATH`] answers 200 (counted); anything else `hello from backend <id>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::HEALTH_PATH;

/// A certificate authority made for one test: its certificate in a PEM file (what lb's `ca` names), and the
/// certificates it signs for backends and clients.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// A certificate and its key, in memory and in PEM files.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Issued {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write the CA");
        TestCa {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
            dir,
            path,
        }
    }

    /// The PEM file of the CA's certificate.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA, written as `<stem>.pem` and
    /// `<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, stem);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let cert_path = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        Issued {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_path,
            key_path,
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("the CA as a root");
        roots
    }
}

/// What the backend saw of one connection.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The SNI name the client sent (`None`: none, as for an IP address).
    pub sni: Option<String>,
    /// The ALPN protocol chosen.
    pub alpn: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

#[derive(Default)]
struct Shared {
    handshakes: Mutex<Vec<Handshake>>,
    /// Handshakes that failed, with rustls' reason.
    failed: Mutex<Vec<String>>,
    /// The HTTP version of each request (`HTTP/1.1`, `HTTP/2.0`) and whether it was a health check.
    requests: Mutex<Vec<(String, bool)>>,
}

/// How a [`TlsBackend`] speaks.
pub struct TlsBackendBuilder<'a> {
    id: u64,
    ca: Option<&'a TestCa>,
    names: Vec<String>,
    client_ca: Option<&'a TestCa>,
    h2: bool,
    alpn: Option<Vec<&'static str>>,
}

impl<'a> TlsBackendBuilder<'a> {
    /// Its certificate is for these names (default: `backend.test`).
    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// It refuses a client without a certificate signed by `ca`.
    pub fn require_client_cert(mut self, ca: &'a TestCa) -> Self {
        self.client_ca = Some(ca);
        self
    }

    /// It speaks HTTP/2 only: `h2` by ALPN over TLS, or h2c with prior knowledge without TLS.
    pub fn h2(mut self) -> Self {
        self.h2 = true;
        self
    }

    /// It offers exactly these ALPN protocols (default: `h2` when HTTP/2, else `http/1.1`).
    pub fn alpn(mut self, protocols: &[&'static str]) -> Self {
        self.alpn = Some(protocols.to_vec());
        self
    }

    pub async fn start(self) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let acceptor = self.ca.map(|ca| {
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            let issued = ca.issue(&format!("backend-{}", self.id), &names);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("TLS versions");
            let builder = match self.client_ca {
                None => builder.with_no_client_auth(),
                Some(client_ca) => {
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(client_ca.roots()),
                        provider,
                    )
                    .build()
                    .expect("a client verifier");
                    builder.with_client_cert_verifier(verifier)
                }
            };
            let mut config = builder
                .with_single_cert(issued.chain.clone(), issued.key())
                .expect("the backend's certificate");
            let alpn = self.alpn.clone().unwrap_or(match self.h2 {
                true => vec!["h2"],
                false => vec!["http/1.1"],
            });
            config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        });
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, acceptor, self.h2, self.id, shared.clone()));
        TlsBackend {
            addr,
            shared,
            server,
        }
    }
}

/// A backend behind TLS and/or HTTP/2 (see the module doc).
pub struct TlsBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl TlsBackend {
    /// A TLS backend with a certificate signed by `ca`.
    pub fn tls(id: u64, ca: &TestCa) -> TlsBackendBuilder<'_> {
        TlsBackendBuilder {
            id,
            ca: Some(ca),
            names: vec!["backend.test".to_owned()],
            client_ca: None,
            h2: false,
            alpn: None,
        }
    }

    /// An HTTP/2 backend in clear text (h2c, prior knowledge).
    pub async fn h2c(id: u64) -> TlsBackend {
        let builder = TlsBackendBuilder {
            id,
            ca: None,
            names: Vec::new(),
            client_ca: None,
            h2: true,
            alpn: None,
        };
        builder.start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.shared.handshakes.lock().unwrap().clone()
    }

    pub fn failed_handshakes(&self) -> Vec<String> {
        self.shared.failed.lock().unwrap().clone()
    }

    /// The HTTP versions of the health checks received.
    pub fn health_check_versions(&self) -> Vec<String> {
        let requests = self.shared.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(_, health)| *health)
            .map(|(version, _)| version.clone())
            .collect()
    }

    /// The HTTP versions of the requests received, health checks excluded.
    pub fn request_versions(&self) -> Vec<String> {
        let requests = self.shared.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(_, health)| !*health)
            .map(|(version, _)| version.clone())
            .collect()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    h2: bool,
    id: u64,
    shared: Arc<Shared>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_http(stream, h2, id, shared).await;
            };
            match acceptor.accept(stream).await {
                Ok(stream) => {
                    let session = stream.get_ref().1;
                    let handshake = Handshake {
                        sni: session.server_name().map(str::to_owned),
                        alpn: session
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        client_cert: session.peer_certificates().is_some_and(|c| !c.is_empty()),
                    };
                    let h2 = handshake.alpn.as_deref() == Some("h2");
                    shared.handshakes.lock().unwrap().push(handshake);
                    serve_http(stream, h2, id, shared).await;
                }
                Err(error) => shared.failed.lock().unwrap().push(error.to_string()),
            }
        });
    }
}

async fn serve_http<S>(stream: S, h2: bool, id: u64, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            let health = request.uri().path() == HEALTH_PATH;
            let version = format!("{:?}", request.version());
            shared.requests.lock().unwrap().push((version, health));
            let body = match health {
                true => "ok".to_owned(),
                false => format!("hello from backend {id}"),
            };
            let response = Response::builder()
                .header("x-backend-id", id.to_string())
                .body(Full::new(Bytes::from(body)))
                .expect("a response");
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(stream);
    let _ = match h2 {
        true => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
        false => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
        }
    };
}

/// A `[[backends]]` entry of a TOML config: `id`, `host`, the port of `addr`, then `extra` lines as written
/// (`tls = true`, `ca = "..."`).
pub fn backend_entry(id: u64, host: &str, addr: SocketAddr, extra: &[String]) -> String {
    let mut entry = format!(
        "[[backends]]\nid = {id}\nhost = {host:?}\nport = {}\n",
        addr.port()
    );
    for line in extra {
        entry.push_str(line);
        entry.push('\n');
    }
    entry
}

/// `key = "path"` for a TOML config.
pub fn path_line(key: &str, path: &Path) -> String {
    format!("{key} = {:?}", path.to_str().expect("a UTF-8 path"))
}

/// A TOML config for lb with these backend entries: one worker, checks of [`HEALTH_PATH`] every 100 ms (timeout 2 s
/// unless `health` sets one) that flip at the first pass or failure (so a state shows quickly), `health` lines added
/// to `[health_check]`, and `extra` lines before the tables (top-level keys, then whole tables).
pub fn toml_config(extra: &str, health: &str, backends: &[String]) -> String {
    let timeout = match health.contains("timeout") {
        true => "",
        false => "timeout = \"2s\"\n",
    };
    format!(
        "workers = 1\n{extra}\n[health_check]\npath = \"{HEALTH_PATH}\"\ninterval = \"100ms\"\n{timeout}rise = 1\nfall = 1\n{health}\n\n{}",
        backends.join("\n")
    )
}

/// Waits until backend `id`'s health in `/api/status` is `health` (`up`/`down`); answers the backend's entry
/// (`reason` says why it is down). lb must run with an admin plane.
pub async fn wait_health(lb: &super::TestLb, id: u64, health: &str) -> serde_json::Value {
    let admin = lb.admin().await;
    let mut seen = serde_json::Value::Null;
    super::wait_until(
        &format!("backend {id} is {health}"),
        super::PATIENCE,
        async || {
            let status = admin.json("/api/status").await;
            let backends = status["backends"].as_array().cloned().unwrap_or_default();
            seen = backends
                .into_iter()
                .find(|b| b["id"] == id)
                .unwrap_or_default();
            seen["health"] == health
        },
    )
    .await;
    seen
}
