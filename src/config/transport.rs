//! How a backend is reached beyond its address: the HTTP version spoken to it, TLS (with what trust, which name,
//! which client certificate) and the PROXY protocol header that tells it who the client is.

use std::path::PathBuf;

use serde::Deserialize;

/// How a backend is reached, beyond its address. The default is what `lb` always did: HTTP/1.1 in clear text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendOptions {
    pub protocol: Protocol,
    /// `tls = true` (implied by `protocol = "h2"`): the connection is TLS, verified as set here.
    pub tls: Option<UpstreamTls>,
    /// `send_proxy = "v1" | "v2"`: each new connection to the backend starts with a PROXY protocol header.
    pub send_proxy: Option<ProxyVersion>,
}

impl BackendOptions {
    /// Whether the backend is reached as it always was (HTTP/1.1, clear text, no PROXY header): the fast path.
    pub fn is_plain(&self) -> bool {
        self.protocol == Protocol::Http1 && self.tls.is_none() && self.send_proxy.is_none()
    }
}

/// The HTTP version spoken to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 (the default).
    #[default]
    #[serde(rename = "http1", alias = "http/1.1")]
    Http1,
    /// HTTP/2 in clear text, with prior knowledge.
    #[serde(rename = "h2c")]
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    #[serde(rename = "h2")]
    H2,
}

impl Protocol {
    /// Whether requests are multiplexed over one connection (HTTP/2).
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }
}

/// TLS to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// PEM file of the certificates to trust; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified in the certificate; `None`: the backend's `host`.
    pub sni: Option<String>,
    /// A client certificate to present, when the backend asks for one.
    pub client: Option<ClientCertificate>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The PROXY protocol version (HAProxy's spec): v1 is one text line, v2 a binary header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}
