//! The backend list as a file writes it: each entry read by a hand-written visitor that sees the entries before it
//! (duplicate ids and addresses are refused where they are written), and the optional per-backend settings (how the
//! backend is reached: `protocol`, `tls` with `ca`, `sni`, `client_cert` and `client_key`, `send_proxy`; how it is
//! balanced: `weight`, `max_connections`; how its name resolves: `resolve`). The PEM files a backend names are read as
//! they are written (`pem`), so a bad one is refused with the place that names it, and a client key must match its
//! certificate.
//!
//! A host written as an IP address is the backend's address; a host name is left for the control plane to resolve
//! (`dns`: at start, then again and again, `resolve` saying whether the first address or every one is a member),
//! with [`UNRESOLVED`] as its address meanwhile. So reading a config never waits on DNS, and a name that does not
//! resolve is a backend that starts down rather than a config that cannot load. Two backends on the same address are
//! refused when both are written as IP addresses; names may come to share one (identity is id and address).

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::numbers::{AtLeastOne, Port, Weight};
use super::paths::{FilePath, ServerName};
use super::transport::{BackendOptions, ClientCertificate, Protocol, ProxyVersion, UpstreamTls};
use super::{host_port, pem, BackendConfig, Resolve, UNRESOLVED};
/// The backend list of the full form (`backends[i]` in messages).
#[derive(Debug)]
pub struct Backends(pub Vec<BackendConfig>);

/// The spec's short form: the whole file is the backend list (`[i]` in messages).
pub struct ArrayForm(pub Vec<BackendConfig>);

impl<'de> Deserialize<'de> for Backends {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = BackendsVisitor {
            prefix: "backends".to_owned(),
            if_empty: "no backends".to_owned(),
        };
        deserializer.deserialize_seq(visitor).map(Backends)
    }
}

impl<'de> Deserialize<'de> for ArrayForm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = BackendsVisitor {
            prefix: String::new(),
            if_empty: "no backends".to_owned(),
        };
        deserializer.deserialize_seq(visitor).map(ArrayForm)
    }
}

/// The backend list of `[pools.NAME]`: read with [`DeserializeSeed`] so that its messages name the pool.
pub(super) struct PoolBackends<'a>(pub &'a str);

impl<'de> DeserializeSeed<'de> for PoolBackends<'_> {
    type Value = Vec<BackendConfig>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let visitor = BackendsVisitor {
            prefix: format!("pools.{}.backends", self.0),
            if_empty: format!("pool {} has no backends", self.0),
        };
        deserializer.deserialize_seq(visitor)
    }
}

struct BackendsVisitor {
    /// How messages name the list, to point at the earlier entry of a duplicate.
    prefix: String,
    /// The message for an empty list.
    if_empty: String,
}

impl<'de> Visitor<'de> for BackendsVisitor {
    type Value = Vec<BackendConfig>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of backends")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut backends = Vec::new();
        while let Some(backend) = seq.next_element_seed(BackendSeed {
            prefix: &self.prefix,
            earlier: &backends,
        })? {
            backends.push(backend);
        }
        if backends.is_empty() {
            return Err(de::Error::custom(self.if_empty));
        }
        Ok(backends)
    }
}

/// Deserializes one backend, checking it against the ones before it.
struct BackendSeed<'a> {
    prefix: &'a str,
    earlier: &'a [BackendConfig],
}

impl BackendSeed<'_> {
    fn name(&self, index: usize) -> String {
        format!("{}[{index}]", self.prefix)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum BackendField {
    Id,
    Host,
    Port,
    Protocol,
    Tls,
    Ca,
    Sni,
    ClientCert,
    ClientKey,
    SendProxy,
    Weight,
    MaxConnections,
    Resolve,
}

const BACKEND_FIELDS: &[&str] = &[
    "id",
    "host",
    "port",
    "protocol",
    "tls",
    "ca",
    "sni",
    "client_cert",
    "client_key",
    "send_proxy",
    "weight",
    "max_connections",
    "resolve",
];

impl<'de> DeserializeSeed<'de> for BackendSeed<'_> {
    type Value = BackendConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<BackendConfig, D::Error> {
        deserializer.deserialize_struct("backend", BACKEND_FIELDS, self)
    }
}

/// The optional settings of one backend as written, checked together once the entry is read.
#[derive(Default)]
struct Written {
    protocol: Option<Protocol>,
    tls: Option<bool>,
    ca: Option<FilePath>,
    sni: Option<ServerName>,
    client_cert: Option<FilePath>,
    client_key: Option<FilePath>,
    send_proxy: Option<ProxyVersion>,
    resolve: Option<Resolve>,
}

/// Stores a field's value, refusing a second one.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Stores a field's value read with `seed`, refusing a second one.
fn once_seed<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
    slot: &mut Option<S::Value>,
    name: &'static str,
    map: &mut A,
    seed: S,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value_seed(seed)?);
    Ok(())
}

/// A PEM file's path, and the file read to check that it holds what it must (not while [`offline`]): the error
/// then carries the place of the key that names it.
#[derive(Clone, Copy)]
enum PemSeed {
    Certificates,
    Key,
}

impl<'de> DeserializeSeed<'de> for PemSeed {
    type Value = FilePath;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<FilePath, D::Error> {
        let path = FilePath::deserialize(deserializer)?;
        if OFFLINE.with(Cell::get) {
            return Ok(path);
        }
        let checked = match self {
            PemSeed::Certificates => pem::certificates(&path.0).map(drop),
            PemSeed::Key => pem::private_key(&path.0).map(drop),
        };
        checked.map_err(|problem| de::Error::custom(format!("{}: {problem}", path.0.display())))?;
        Ok(path)
    }
}

/// The name a TLS backend without `sni` is verified as: its host (an IPv6 address without its brackets).
fn server_name(host: &str) -> Result<(), String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match rustls_pki_types::ServerName::try_from(bare) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "host {host:?} is not a name TLS can verify: set sni to the name in its certificate"
        )),
    }
}

impl Written {
    /// The backend's options, or why they do not fit together.
    fn options<E: de::Error>(self) -> Result<BackendOptions, E> {
        let protocol = self.protocol.unwrap_or_default();
        let tls = match (self.tls, protocol) {
            (Some(false), Protocol::H2) => {
                return Err(E::custom(
                    "protocol \"h2\" is HTTP/2 over TLS and cannot have tls = false (\"h2c\" is HTTP/2 in clear text)",
                ))
            }
            (Some(true), Protocol::H2c) => {
                return Err(E::custom(
                    "protocol \"h2c\" is HTTP/2 in clear text and cannot have tls = true (\"h2\" is HTTP/2 over TLS)",
                ))
            }
            (Some(tls), _) => tls,
            (None, protocol) => protocol == Protocol::H2,
        };
        let needs_tls = [
            ("ca", self.ca.is_some()),
            ("sni", self.sni.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
        ];
        if let Some((key, _)) = needs_tls.iter().find(|(_, set)| *set && !tls) {
            return Err(E::custom(format!(
                "{key} is a TLS setting: it needs tls = true"
            )));
        }
        let client = match (self.client_cert, self.client_key) {
            (Some(cert), Some(key)) => {
                if !OFFLINE.with(Cell::get) {
                    pem::key_matches(&cert.0, &key.0).map_err(E::custom)?;
                }
                Some(ClientCertificate {
                    cert: cert.0,
                    key: key.0,
                })
            }
            (None, None) => None,
            (Some(_), None) => return Err(E::custom("client_cert needs client_key too")),
            (None, Some(_)) => return Err(E::custom("client_key needs client_cert too")),
        };
        Ok(BackendOptions {
            protocol,
            tls: tls.then(|| UpstreamTls {
                ca: self.ca.map(|p| p.0),
                sni: self.sni.map(|n| n.0),
                client,
            }),
            send_proxy: self.send_proxy,
        })
    }
}

impl<'de> Visitor<'de> for BackendSeed<'_> {
    type Value = BackendConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend with id, host and port")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BackendConfig, A::Error> {
        let (mut id, mut host, mut port) = (None, None, None);
        let (mut weight, mut max_connections) = (None, None);
        let mut written = Written::default();
        while let Some(field) = map.next_key()? {
            match field {
                BackendField::Id if id.is_some() => return Err(de::Error::duplicate_field("id")),
                BackendField::Host if host.is_some() => {
                    return Err(de::Error::duplicate_field("host"))
                }
                BackendField::Port if port.is_some() => {
                    return Err(de::Error::duplicate_field("port"))
                }
                BackendField::Id => id = Some(map.next_value_seed(IdSeed(&self))?),
                BackendField::Host => host = Some(map.next_value_seed(HostSeed)?),
                BackendField::Port => port = Some(map.next_value::<Port>()?.0),
                BackendField::Protocol => once(&mut written.protocol, "protocol", &mut map)?,
                BackendField::Tls => once(&mut written.tls, "tls", &mut map)?,
                BackendField::Ca => {
                    once_seed(&mut written.ca, "ca", &mut map, PemSeed::Certificates)?
                }
                BackendField::Sni => once(&mut written.sni, "sni", &mut map)?,
                BackendField::ClientCert => once_seed(
                    &mut written.client_cert,
                    "client_cert",
                    &mut map,
                    PemSeed::Certificates,
                )?,
                BackendField::ClientKey => once_seed(
                    &mut written.client_key,
                    "client_key",
                    &mut map,
                    PemSeed::Key,
                )?,
                BackendField::SendProxy => once(&mut written.send_proxy, "send_proxy", &mut map)?,
                BackendField::Weight => once::<_, Weight>(&mut weight, "weight", &mut map)?,
                BackendField::MaxConnections => {
                    once::<_, AtLeastOne>(&mut max_connections, "max_connections", &mut map)?
                }
                BackendField::Resolve => once(&mut written.resolve, "resolve", &mut map)?,
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        let host: String = host.ok_or_else(|| de::Error::missing_field("host"))?;
        let port = port.ok_or_else(|| de::Error::missing_field("port"))?;
        let resolve = written.resolve.unwrap_or_default();
        let mut backend = BackendConfig {
            id,
            host,
            port,
            addr: UNRESOLVED,
            options: Default::default(),
            weight: weight.map_or(1, |w: Weight| w.0),
            max_connections: max_connections.map(|n: AtLeastOne| n.0 as usize),
            resolve,
        };
        let ip = backend.ip();
        if let Some(ip) = ip {
            backend.addr = SocketAddr::new(ip, port);
        }
        let (host, addr) = (&backend.host, backend.addr);
        for (i, other) in self.earlier.iter().enumerate() {
            let (this, that) = (host_port(host, port), host_port(&other.host, other.port));
            if this == that {
                let msg = format!("duplicate backend {this} (also {})", self.name(i));
                return Err(de::Error::custom(msg));
            }
            if ip.is_some() && other.addr == addr {
                let name = self.name(i);
                let msg =
                    format!("duplicate backend {this}: same address {addr} as {name} ({that})");
                return Err(de::Error::custom(msg));
            }
        }
        backend.options = written.options()?;
        if let Some(UpstreamTls { sni: None, .. }) = backend.options.tls {
            server_name(&backend.host).map_err(de::Error::custom)?;
        }
        Ok(backend)
    }
}

/// A backend id, unique within the list.
struct IdSeed<'a, 'b>(&'a BackendSeed<'b>);

impl<'de> DeserializeSeed<'de> for IdSeed<'_, '_> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_u64(self)
    }
}

impl Visitor<'_> for IdSeed<'_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a backend id (a non-negative integer)")
    }

    fn visit_u64<E: de::Error>(self, id: u64) -> Result<u64, E> {
        match self.0.earlier.iter().position(|b| b.id == id) {
            Some(i) => Err(E::custom(format!(
                "duplicate id {id} (also {})",
                self.0.name(i)
            ))),
            None => Ok(id),
        }
    }

    fn visit_i64<E: de::Error>(self, id: i64) -> Result<u64, E> {
        match u64::try_from(id) {
            Ok(id) => self.visit_u64(id),
            Err(_) => Err(E::custom(format!("id must not be negative, got {id}"))),
        }
    }
}

/// A backend host: an IP address (`[::1]` too) or a host name, which is not resolved here (see the module doc).
struct HostSeed;

impl<'de> DeserializeSeed<'de> for HostSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for HostSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a host name or IP address")
    }

    fn visit_str<E: de::Error>(self, host: &str) -> Result<Self::Value, E> {
        if host.trim().is_empty() {
            return Err(E::custom("must not be empty"));
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Ok(host.to_string());
        }
        if host.contains(':') {
            return Err(E::custom(format!(
                "{host:?} is not a host name or IP address (the port goes in `port`)"
            )));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(E::custom(format!(
                "{host:?} is not a host name or IP address"
            )));
        }
        Ok(host.to_string())
    }
}

thread_local! {
    /// Set while [`offline`] runs: PEM files are not read.
    static OFFLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` without reading the files a config names (its PEM files are taken as written). The fuzzer loads configs
/// this way. (Reading a config never sends a DNS query: host names are resolved by the control plane.)
pub(crate) fn offline<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            OFFLINE.with(|offline| offline.set(self.0));
        }
    }
    let _reset = Reset(OFFLINE.with(|offline| offline.replace(true)));
    f()
}
