//! TLS for tests: a test CA that issues certificates made on the spot with `rcgen` (written as PEM files for `lb`
//! to load), and a client (tokio-rustls, trusting only that CA) that connects with the SNI and ALPN a test chooses
//! and says which certificate the server presented.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A test certificate authority, and the directory its certificates are written to.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A certificate issued by a [`TestCa`]: its PEM files, and its DER form to recognise it by.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "lb test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa {
            issuer,
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    /// Issues a certificate for `names`, written to `<file>.pem` and `<file>.key` (replacing what was there).
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        self.issue_with(file, params)
    }

    /// Issues a certificate made from `params`.
    pub fn issue_with(&self, file: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A path in the CA's directory, for files a test writes itself.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A client trusting this CA only, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        self.client_with(alpn, rustls::DEFAULT_VERSIONS)
    }

    /// A client trusting this CA only, offering `alpn` and these TLS versions.
    pub fn client_with(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// A client that sends `sni` (none if `None`) but verifies the server's certificate as one for `verify_as`: to
    /// see which certificate a name the server has none for gets.
    pub fn client_verifying_as(&self, verify_as: &str, send_sni: bool) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let verifier = VerifyAs {
            inner,
            name: ServerName::try_from(verify_as.to_owned()).unwrap(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.enable_sni = send_sni;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// Connects to `addr` over TLS with `sni`, offering `http/1.1`; panics if the handshake fails.
    pub async fn connect(&self, addr: SocketAddr, sni: &str) -> TlsStream<TcpStream> {
        self.try_connect(addr, sni, &[b"http/1.1"])
            .await
            .unwrap_or_else(|error| panic!("TLS handshake with {addr} as {sni}: {error}"))
    }

    /// Connects to `addr` over TLS with `sni` and `alpn`.
    pub async fn try_connect(
        &self,
        addr: SocketAddr,
        sni: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_owned()).expect("a valid SNI");
        tokio::time::timeout(super::PATIENCE, self.client(alpn).connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))?
    }
}

/// The certificate the server presented on `stream` (its first, DER).
pub fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, connection) = stream.get_ref();
    let chain: &[CertificateDer<'_>] = connection
        .peer_certificates()
        .expect("a server certificate");
    chain[0].to_vec()
}

/// The protocol agreed by ALPN on `stream`.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// Verifies a server's certificate fully, but for a fixed name whatever name was asked for.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _asked: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
