//! Reading the PEM files a config names (a backend's `ca`, `client_cert` and `client_key`): the certificates or the
//! key in each, or what is wrong with it in words a user can act on (`no certificate in it`, `cannot read: …`).
//!
//! The config checks these files when it is loaded, so a bad one stops startup and a reload is refused; whoever then
//! builds a TLS setup from them (`upstream::tls_client`, for every snapshot) reads them again with the same
//! functions, so what was checked is what is used.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;

/// Every certificate in the PEM file `path` (at least one), or the problem, without the file's name.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| not_pem(&error))?;
    if certificates.is_empty() {
        return Err("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certificates)
}

/// The private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1: the first one), or the problem.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = read(path)?;
    match PrivateKeyDer::from_pem_slice(&text) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(
            "no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
                .to_owned(),
        ),
        Err(error) => Err(not_pem(&error)),
    }
}

/// Whether the key in `key` is the one of the first certificate in `cert` (both read as above), or the problem with
/// either file, naming it.
pub fn key_matches(cert: &Path, key: &Path) -> Result<(), String> {
    let chain = certificates(cert).map_err(|problem| format!("{}: {problem}", cert.display()))?;
    let private = private_key(key).map_err(|problem| format!("{}: {problem}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|error| format!("{}: unusable private key: {error}", key.display()))?;
    match CertifiedKey::new(chain, signing).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
            "client_key {} is not the key of client_cert {}",
            key.display(),
            cert.display()
        )),
        Err(error) => Err(format!("{}: {error}", cert.display())),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read: {error}"))
}

fn not_pem(error: &pem::Error) -> String {
    format!("not a valid PEM file: {error}")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn certificates_and_keys_are_read_or_refused_with_the_reason() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let both = file(&format!("{}{}", cert.pem(), key.serialize_pem()));
        assert_eq!(certificates(both.path()).unwrap().len(), 1);
        assert!(private_key(both.path()).is_ok());

        let empty = file("");
        let no_cert = certificates(empty.path()).unwrap_err();
        assert!(no_cert.starts_with("no certificate in it"), "{no_cert}");
        let no_key = private_key(file(&cert.pem()).path()).unwrap_err();
        assert!(no_key.starts_with("no private key in it"), "{no_key}");

        let cut = file("-----BEGIN CERTIFICATE-----\nAAAA\n");
        let broken = certificates(cut.path()).unwrap_err();
        assert!(broken.starts_with("not a valid PEM file: "), "{broken}");

        let other = rcgen::KeyPair::generate().unwrap();
        let other = file(&other.serialize_pem());
        let cert_file = file(&cert.pem());
        assert!(key_matches(cert_file.path(), both.path()).is_ok());
        let mismatch = key_matches(cert_file.path(), other.path()).unwrap_err();
        assert!(
            mismatch.contains("is not the key of client_cert"),
            "{mismatch}"
        );

        let missing = certificates(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(missing.starts_with("cannot read: "), "{missing}");
    }
}
