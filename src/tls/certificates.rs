//! The certificates a TLS listener presents, chosen by SNI, and their reload.
//!
//! Each `[tls]` certificate is read from its PEM files (the chain, then the key, which must match the chain's
//! first certificate) and indexed by the DNS names it is valid for (its subject alternative names; its common name
//! only when it has none). A handshake's SNI picks an exact name first, then a wildcard (`*.example.com` covers one
//! label: `a.example.com`, not `a.b.example.com` nor `example.com`); no SNI, or a name no certificate has, gets the
//! first certificate, the default. Among certificates with the same name, the first wins.
//!
//! The set is immutable and swapped whole ([`ArcSwap`]): a reload builds a new set and new handshakes use it, while
//! connections already established keep theirs. A certificate that fails to load on reload keeps the version
//! loaded before (same cert and key paths), so a half-written file during a renewal never takes a name down.
//!
//! Startup is strict instead: any problem (unreadable file, not PEM, no key, a key that does not match) is one line
//! naming the file and the problem, and `lb` does not start. An expired certificate loads (it may be the only one
//! there is while a renewal runs) with a warning.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificatePaths, TlsConfig};

/// The certificates of every TLS listener (they share them), chosen by SNI per handshake.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<Set>,
    provider: Arc<CryptoProvider>,
}

/// One loaded set: what a handshake chooses from.
#[derive(Debug)]
struct Set {
    /// In the config's order: the first is the default.
    entries: Vec<Entry>,
    /// A lowercase DNS name → the first entry valid for it.
    exact: HashMap<String, usize>,
    /// `*.example.com` as `example.com` → the first entry with that wildcard.
    wildcard: HashMap<String, usize>,
}

#[derive(Debug)]
struct Entry {
    paths: CertificatePaths,
    key: Arc<CertifiedKey>,
    /// The names it is for (kept for a reload that keeps it).
    names: Vec<String>,
}

/// A certificate that could not be loaded: one line naming the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertificateError(pub String);

impl Certificates {
    /// Loads every certificate of `config`: the first problem is the error.
    pub fn load(
        config: &TlsConfig,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, CertificateError> {
        let mut entries = Vec::with_capacity(config.certificates.len());
        for paths in &config.certificates {
            let (key, names) = load_one(paths, &provider)?;
            entries.push((paths.clone(), key, names));
        }
        Ok(Certificates {
            current: ArcSwap::from_pointee(Set::new(entries)),
            provider,
        })
    }

    /// Re-reads every certificate of `config`. One that fails keeps its previous version (same paths) if there is
    /// one, and is left out otherwise; if none is left, the whole previous set stays. Answers the problems (each is
    /// logged here too).
    pub fn reload(&self, config: &TlsConfig) -> Vec<CertificateError> {
        let old = self.current.load();
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(config.certificates.len());
        for paths in &config.certificates {
            match load_one(paths, &self.provider) {
                Ok((key, names)) => entries.push((paths.clone(), key, names)),
                Err(error) => {
                    let kept = old.entries.iter().find(|entry| entry.paths == *paths);
                    match kept {
                        Some(entry) => {
                            tracing::error!("reload: {error}: the certificate loaded before stays");
                            entries.push((paths.clone(), entry.key.clone(), entry.names.clone()));
                        }
                        None => tracing::error!("reload: {error}: left out"),
                    }
                    problems.push(error);
                }
            }
        }
        if entries.is_empty() {
            tracing::error!("reload: no certificate could be loaded: the ones loaded before stay");
            return problems;
        }
        self.current.store(Arc::new(Set::new(entries)));
        problems
    }

    /// The certificate for a handshake that asked for `name` (`None`: no SNI).
    fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let index = name.and_then(|name| set.find(name)).unwrap_or(0);
        set.entries.get(index).map(|entry| entry.key.clone())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

impl Set {
    fn new(loaded: Vec<(CertificatePaths, Arc<CertifiedKey>, Vec<String>)>) -> Self {
        let mut set = Set {
            entries: Vec::with_capacity(loaded.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (index, (paths, key, names)) in loaded.into_iter().enumerate() {
            for name in &names {
                match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_owned()).or_insert(index),
                    None => set.exact.entry(name.clone()).or_insert(index),
                };
            }
            set.entries.push(Entry { paths, key, names });
        }
        set
    }

    /// The entry for an SNI name: exact, then a wildcard covering its first label.
    fn find(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(index) = self.exact.get(&name) {
            return Some(*index);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

/// Reads one certificate chain and its key, checks that they match, and says which names the certificate is for.
fn load_one(
    paths: &CertificatePaths,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), CertificateError> {
    let problem =
        |path: &Path, what: String| CertificateError(format!("tls: {}: {what}", path.display()));
    let cert_pem = read(&paths.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            problem(
                &paths.cert,
                format!("not a PEM certificate file: {}", pem_problem(&error)),
            )
        })?;
    if chain.is_empty() {
        return Err(problem(
            &paths.cert,
            "no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)".to_owned(),
        ));
    }
    let names = inspect(&paths.cert, &chain[0])?;
    let key_pem = read(&paths.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        pem::Error::NoItemsFound => problem(
            &paths.key,
            "no private key in it (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)".to_owned(),
        ),
        error => problem(&paths.key, format!("not a PEM key file: {}", pem_problem(&error))),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| problem(&paths.key, format!("unusable private key: {error}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(problem(
                &paths.key,
                format!(
                    "this key does not match the certificate in {}",
                    paths.cert.display()
                ),
            ))
        }
        Err(error) => {
            return Err(problem(
                &paths.cert,
                format!("unusable certificate: {error}"),
            ))
        }
    }
    Ok((Arc::new(certified), names))
}

fn read(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|error| {
        CertificateError(format!(
            "tls: {}: cannot read: {}",
            path.display(),
            describe_io(&error)
        ))
    })
}

fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".to_owned(),
        error => error.to_string(),
    }
}

/// The DNS names a certificate is for (lowercase); warns when it is expired or not valid yet.
fn inspect(path: &Path, der: &CertificateDer<'_>) -> Result<Vec<String>, CertificateError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|error| {
        CertificateError(format!(
            "tls: {}: not a valid X.509 certificate: {error}",
            path.display()
        ))
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        tracing::warn!(
            "tls: {}: expired on {} (loaded anyway: clients will refuse it)",
            path.display(),
            validity.not_after
        );
    } else if validity.not_before > now {
        tracing::warn!(
            "tls: {}: not valid before {} (loaded anyway: clients will refuse it until then)",
            path.display(),
            validity.not_before
        );
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(name) = name {
                names.push(name.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Only a certificate without any DNS subject alternative name is taken at its common name (as browsers
        // did before they required SANs).
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&[&str]]) -> Set {
        let mut loaded = Vec::new();
        for (i, names) in names.iter().enumerate() {
            loaded.push((
                CertificatePaths {
                    cert: format!("{i}.pem").into(),
                    key: format!("{i}.key").into(),
                },
                unusable_key(),
                names.iter().map(|n| n.to_string()).collect(),
            ));
        }
        Set::new(loaded)
    }

    /// A `CertifiedKey` whose contents do not matter for choosing (only its index does).
    fn unusable_key() -> Arc<CertifiedKey> {
        #[derive(Debug)]
        struct NoKey;
        impl rustls::sign::SigningKey for NoKey {
            fn choose_scheme(
                &self,
                _: &[rustls::SignatureScheme],
            ) -> Option<Box<dyn rustls::sign::Signer>> {
                None
            }
            fn algorithm(&self) -> rustls::SignatureAlgorithm {
                rustls::SignatureAlgorithm::ECDSA
            }
        }
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![0u8])],
            Arc::new(NoKey),
        ))
    }

    #[test]
    fn exact_before_wildcard_and_wildcards_cover_one_label() {
        let set = set(&[
            &["default.test"],
            &["*.b.test"],
            &["x.b.test"],
            &["a.test", "*.b.test"],
        ]);
        assert_eq!(
            set.find("x.b.test"),
            Some(2),
            "exact beats an earlier wildcard"
        );
        assert_eq!(set.find("y.b.test"), Some(1), "the first wildcard wins");
        assert_eq!(
            set.find("Y.B.Test."),
            Some(1),
            "case and a final dot do not matter"
        );
        assert_eq!(set.find("z.y.b.test"), None, "a wildcard covers one label");
        assert_eq!(set.find("b.test"), None, "nor the parent itself");
        assert_eq!(set.find("a.test"), Some(3));
        assert_eq!(set.find("unknown.test"), None);
    }
}
