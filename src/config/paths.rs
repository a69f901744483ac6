//! File paths and names a config gives for TLS: checked for form as they are read (the files themselves are read
//! where they are loaded, which names the file and the problem).

use serde::Deserialize;

/// A path to a file (a certificate, a key, a CA bundle): not empty. Whether it can be read is checked where it is
/// loaded, which names the file and the problem.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct FilePath(pub std::path::PathBuf);

impl TryFrom<String> for FilePath {
    type Error = &'static str;

    fn try_from(path: String) -> Result<Self, Self::Error> {
        match path.trim().is_empty() {
            true => Err("must not be empty"),
            false => Ok(FilePath(path.into())),
        }
    }
}

/// A TLS server name (SNI): a DNS name or an IP address.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct ServerName(pub String);

impl TryFrom<String> for ServerName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match rustls_pki_types::ServerName::try_from(name.as_str()) {
            Ok(_) => Ok(ServerName(name)),
            Err(_) => Err(format!("not a DNS name or IP address: {name:?}")),
        }
    }
}
