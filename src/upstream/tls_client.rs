//! The TLS client setups of a snapshot's backends: one `rustls::ClientConfig` per distinct set of TLS settings,
//! built when the snapshot is (at start and on each reload), never per connection.
//!
//! Why per snapshot: a config holds parsed trust anchors, the client certificate and its key, and a session
//! resumption cache; building one per connection would parse PEM files on the data path and throw resumption away.
//! Rebuilding on reload is what makes a renewed `ca` or client certificate take effect. Backends with the same
//! trust, client certificate and protocol share one config (and so one resumption cache, keyed by server name); the
//! server name itself is per backend (`sni`, else its `host`).
//!
//! Trust is either the PEM bundle in `ca` (then only it) or the system's roots, loaded once per process when the
//! first backend needs them (`rustls-native-certs`), with a warning if none load. The provider is `ring`, the
//! versions TLS 1.3 and 1.2. ALPN says which HTTP the backend is to speak: `h2` for `protocol = "h2"` (the connector
//! refuses a backend that does not agree), `http/1.1` otherwise.
//!
//! The config was checked when it was loaded (`config::pem`: the files hold certificates and a matching key), and
//! the files are read again here with the same functions; should one have changed in between, the backend carries
//! the problem instead of a setup, and its connects (so its health checks) fail with it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::backend::TlsClient;
use crate::config::{pem, BackendConfig, ClientCertificate, Protocol};

/// The ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What makes two client configs the same: everything but the server name.
#[derive(PartialEq, Eq)]
struct Settings<'a> {
    ca: Option<&'a Path>,
    client: Option<&'a ClientCertificate>,
    protocol: Protocol,
}

/// The client configs built for one snapshot so far, shared by the backends with the same settings.
#[derive(Default)]
pub struct Configs<'a> {
    built: Vec<(Settings<'a>, Arc<ClientConfig>)>,
}

impl<'a> Configs<'a> {
    /// How `backend` is reached over TLS (`None`: it is not), or why that cannot be set up.
    pub fn for_backend(&mut self, backend: &'a BackendConfig) -> Option<Result<TlsClient, String>> {
        let tls = backend.options.tls.as_ref()?;
        let settings = Settings {
            ca: tls.ca.as_deref(),
            client: tls.client.as_ref(),
            protocol: backend.options.protocol,
        };
        let name = tls.sni.as_deref().unwrap_or(&backend.host);
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let server_name = match ServerName::try_from(name.to_owned()) {
            Ok(server_name) => server_name,
            Err(_) => return Some(Err(format!("{name:?} is not a name TLS can verify"))),
        };
        let config = match self.built.iter().find(|(built, _)| *built == settings) {
            Some((_, config)) => config.clone(),
            None => match build(&settings) {
                Ok(config) => {
                    let config = Arc::new(config);
                    self.built.push((settings, config.clone()));
                    config
                }
                Err(problem) => return Some(Err(problem)),
            },
        };
        Some(Ok(TlsClient {
            config,
            server_name,
        }))
    }
}

/// A client config for `settings`, or the problem with a file it names (naming the file).
fn build(settings: &Settings) -> Result<ClientConfig, String> {
    let roots = match settings.ca {
        Some(ca) => {
            let certificates = pem::certificates(ca).map_err(|p| named("ca", ca, &p))?;
            let mut roots = RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(certificates);
            if roots.is_empty() {
                let problem = format!("none of its {ignored} certificates can be a trust anchor");
                return Err(named("ca", ca, &problem));
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("TLS versions: {error}"))?
        .with_root_certificates(roots);
    let mut config = match settings.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = pem::certificates(&client.cert)
                .map_err(|p| named("client_cert", &client.cert, &p))?;
            let key =
                pem::private_key(&client.key).map_err(|p| named("client_key", &client.key, &p))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| named("client_key", &client.key, &error.to_string()))?
        }
    };
    config.alpn_protocols = vec![match settings.protocol {
        Protocol::H2 => ALPN_H2.to_vec(),
        Protocol::Http1 | Protocol::H2c => ALPN_HTTP1.to_vec(),
    }];
    Ok(config)
}

fn named(key: &str, path: &Path, problem: &str) -> String {
    format!("{key} {}: {problem}", path.display())
}

/// The system's trusted roots, loaded on first use and kept for the life of the process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a system root certificate could not be loaded");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            match roots.len() {
                0 => tracing::warn!(
                    "no system root certificates found: TLS backends without ca = \"FILE\" will fail verification"
                ),
                count => tracing::debug!(count, "system root certificates loaded"),
            }
            Arc::new(roots)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::config::{BackendOptions, UpstreamTls};

    fn backend(host: &str, options: BackendOptions) -> BackendConfig {
        BackendConfig {
            id: 1,
            host: host.to_owned(),
            port: 443,
            addr: ([127, 0, 0, 1], 443).into(),
            options,
            weight: 1,
            max_connections: None,
            resolve: Default::default(),
        }
    }

    fn tls(ca: Option<&Path>, sni: Option<&str>, protocol: Protocol) -> BackendOptions {
        BackendOptions {
            protocol,
            tls: Some(UpstreamTls {
                ca: ca.map(Path::to_path_buf),
                sni: sni.map(str::to_owned),
                client: None,
            }),
            send_proxy: None,
        }
    }

    #[test]
    fn configs_are_shared_by_settings_and_names_are_per_backend() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(ca.pem().as_bytes()).unwrap();
        let ca = Some(file.path());

        let backends = [
            backend("a.test", tls(ca, None, Protocol::Http1)),
            backend("127.0.0.1", tls(ca, Some("b.test"), Protocol::Http1)),
            backend("[::1]", tls(ca, None, Protocol::H2)),
            backend("c.test", BackendOptions::default()),
        ];
        let mut configs = Configs::default();
        let built: Vec<_> = backends.iter().map(|b| configs.for_backend(b)).collect();
        let [Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None] = &built[..] else {
            panic!("{built:?}");
        };
        assert!(
            Arc::ptr_eq(&a.config, &b.config),
            "same settings, one config"
        );
        assert!(!Arc::ptr_eq(&a.config, &c.config), "h2 is another ALPN");
        assert_eq!(a.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(c.config.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(a.server_name.to_str(), "a.test");
        assert_eq!(b.server_name.to_str(), "b.test", "sni wins over host");
        assert!(
            matches!(c.server_name, ServerName::IpAddress(_)),
            "an IP host is verified as an IP address"
        );
    }

    #[test]
    fn a_file_gone_since_the_config_was_checked_is_the_backends_problem() {
        let gone = Path::new("/nonexistent/ca.pem");
        let backend = backend("a.test", tls(Some(gone), None, Protocol::Http1));
        let problem = Configs::default()
            .for_backend(&backend)
            .unwrap()
            .unwrap_err();
        assert!(
            problem.starts_with("ca /nonexistent/ca.pem: cannot read: "),
            "{problem}"
        );
    }
}
