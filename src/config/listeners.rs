//! What the balancer listens on and how it speaks there: the main listener (`host`, `port`; TLS when `[tls]` is
//! given; `mode`), the extra `[[listeners]]` (a plain, TLS, redirect-to-HTTPS or TCP listener each), the
//! certificates of `[tls]` (chosen by SNI), and the sources trusted to send a PROXY protocol header.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::paths::FilePath;

/// How a listener's connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP: requests are read and balanced one by one (the default).
    #[default]
    Http,
    /// TCP (L4): each connection goes whole to a backend, bytes copied both ways.
    Tcp,
}

/// What a listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// HTTP/1.1 (and HTTP/2 with prior knowledge) in clear text, or TCP in TCP mode.
    Plain,
    /// TLS first (certificates from `[tls]`), then HTTP/1.1 or HTTP/2 by ALPN, or TCP in TCP mode.
    Tls,
    /// Answers every request with `301` to the same URL on `https://` (the main listener's port).
    RedirectHttps,
}

/// One listener, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Host (IP or name) and port as given; the server resolves and binds them.
    pub host: String,
    pub port: u16,
    pub kind: ListenerKind,
    pub mode: Mode,
    /// Sources allowed (and then required) to start with a PROXY protocol header; empty: none is read.
    pub accept_proxy: Vec<Cidr>,
}

impl ListenerConfig {
    /// Why this listener cannot be served (a combination not built yet), if so.
    pub fn unsupported(&self) -> Option<&'static str> {
        match (self.kind, self.mode) {
            (ListenerKind::Tls, Mode::Tcp) => Some(
                "TLS in TCP mode is not supported yet: terminate TLS in HTTP mode, or pass TLS through on a plain tcp listener",
            ),
            (ListenerKind::RedirectHttps, _) if !self.accept_proxy.is_empty() => {
                Some("accept_proxy is not supported on a redirect_https listener yet")
            }
            _ => None,
        }
    }
}

/// The certificates TLS listeners present: the first is the default, the others are chosen by SNI from the names
/// in each certificate (an exact name before a wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub certificates: Vec<CertificatePaths>,
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An address block: `127.0.0.1/32`, `10.0.0.0/8`, `::1/128`; a bare address is the block of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("expected an address or block such as 127.0.0.1/32 or ::1/128, got {text:?}")
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of TLS settings (cert, key, certificates)"
)]
pub struct FileTls {
    pub cert: Option<FilePath>,
    pub key: Option<FilePath>,
    #[serde(default)]
    pub certificates: Vec<FileCertificate>,
}

/// One of `[[tls.certificates]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a certificate with cert and key")]
pub struct FileCertificate {
    pub cert: FilePath,
    pub key: FilePath,
}

/// One of `[[listeners]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener with an address")]
pub struct FileListener {
    /// `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` or `:PORT` (every address, as nginx's `listen 80`).
    pub address: ListenAddress,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub redirect_https: bool,
    pub mode: Option<Mode>,
    pub accept_proxy: Option<Vec<Cidr>>,
}

/// A listener's address: host and port.
#[derive(Debug, Clone)]
pub struct ListenAddress {
    pub host: String,
    pub port: u16,
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8443, :80), got {text:?}"
            ))
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = match host {
            "" | "*" => "0.0.0.0",
            host => host,
        };
        Ok(ListenAddress {
            host: host.to_owned(),
            port,
        })
    }
}

impl FileListener {
    /// The validated listener, or why it is not one. `tls` says whether `[tls]` gave certificates.
    pub fn resolve(
        self,
        mode: Mode,
        accept_proxy: &[Cidr],
        tls: bool,
    ) -> Result<ListenerConfig, String> {
        let kind = match (self.tls, self.redirect_https) {
            (true, true) => {
                return Err("a listener cannot both speak TLS and redirect to https".to_owned())
            }
            (true, false) if !tls => {
                return Err(
                    "tls = true needs certificates: add a [tls] table with cert and key".to_owned(),
                )
            }
            (true, false) => ListenerKind::Tls,
            (false, true) => ListenerKind::RedirectHttps,
            (false, false) => ListenerKind::Plain,
        };
        let mode = self.mode.unwrap_or(mode);
        if kind == ListenerKind::RedirectHttps && mode == Mode::Tcp {
            return Err(
                "a redirect_https listener speaks HTTP: it cannot have mode = \"tcp\"".to_owned(),
            );
        }
        Ok(ListenerConfig {
            host: self.address.host,
            port: self.address.port,
            kind,
            mode,
            accept_proxy: self.accept_proxy.unwrap_or_else(|| accept_proxy.to_vec()),
        })
    }
}

impl FileTls {
    /// The certificates in order (`cert`/`key` first, the default), or why the table is incomplete.
    pub fn resolve(self) -> Result<TlsConfig, String> {
        let mut certificates = Vec::new();
        match (self.cert, self.key) {
            (Some(cert), Some(key)) => certificates.push(CertificatePaths {
                cert: cert.0,
                key: key.0,
            }),
            (None, None) => {}
            (Some(_), None) => return Err("tls: cert needs key too".to_owned()),
            (None, Some(_)) => return Err("tls: key needs cert too".to_owned()),
        }
        certificates.extend(self.certificates.into_iter().map(|c| CertificatePaths {
            cert: c.cert.0,
            key: c.key.0,
        }));
        if certificates.is_empty() {
            return Err(
                "tls: no certificate (give cert and key, or [[tls.certificates]])".to_owned(),
            );
        }
        Ok(TlsConfig { certificates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_their_addresses() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("::1/129".parse::<Cidr>().is_err());
        assert!("localhost/8".parse::<Cidr>().is_err());
    }
}
