//! Who answers what a host name resolves to: the system's resolver, or the DNS server the config names.
//!
//! The system's (getaddrinfo, through tokio's blocking pool) is the default: it resolves names as every other
//! program on the machine does (`/etc/hosts`, `search` domains, NSS), which is what Docker's and Kubernetes' name
//! services are set up for; it does not tell an answer's TTL, so names are asked again every `resolve_interval`.
//! With `resolver = "IP:PORT"`, names are asked of that server alone (hickory's resolver, over UDP with TCP when an
//! answer is truncated), and an answer's TTL shortens the wait before the next question. Either way both A and
//! AAAA addresses are asked for, and every lookup is bounded by [`LOOKUP_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// The longest a lookup may take, whoever answers: a resolver that does not answer must not hold a start, a reload
/// or the next lookups for long.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its addresses, in the resolver's order, without duplicates; never empty.
    pub addrs: Vec<IpAddr>,
    /// How long the answer may be kept, when the resolver says (a DNS server does, getaddrinfo does not).
    pub ttl: Option<Duration>,
}

/// Resolves host names (cheap to clone: lookups run outside the control plane's lock).
#[derive(Clone)]
pub enum Resolver {
    /// getaddrinfo.
    System,
    /// The DNS server of the config's `resolver`.
    Server {
        addr: SocketAddr,
        client: Box<TokioResolver>,
    },
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolver::System => f.write_str("the system's resolver"),
            Resolver::Server { addr, .. } => write!(f, "the DNS server {addr}"),
        }
    }
}

impl Resolver {
    /// Asks `server`, or the system's resolver when there is none.
    pub fn new(server: Option<SocketAddr>) -> Resolver {
        let Some(addr) = server else {
            return Resolver::System;
        };
        let connection = |mut config: ConnectionConfig| {
            config.port = addr.port();
            config
        };
        let server = NameServerConfig::new(
            addr.ip(),
            true,
            vec![
                connection(ConnectionConfig::udp()),
                connection(ConnectionConfig::tcp()),
            ],
        );
        let config = ResolverConfig::from_name_servers(vec![server]);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let options = builder.options_mut();
        options.timeout = LOOKUP_TIMEOUT / 2;
        options.attempts = 1;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Only what the server says: `/etc/hosts` is the system resolver's business.
        options.use_hosts_file = ResolveHosts::Never;
        match builder.build() {
            Ok(client) => Resolver::Server {
                addr,
                client: Box::new(client),
            },
            Err(error) => {
                tracing::error!(%error, "cannot set up the resolver {addr}: using the system's");
                Resolver::System
            }
        }
    }

    /// Whether this asks `server` (`None`: the system's resolver).
    pub fn asks(&self, server: Option<SocketAddr>) -> bool {
        match self {
            Resolver::System => server.is_none(),
            Resolver::Server { addr, .. } => server == Some(*addr),
        }
    }

    /// The addresses of `host`, or why there are none (a lookup that found no address is a failure too).
    pub async fn lookup(&self, host: &str) -> Result<Answer, String> {
        let looked_up = tokio::time::timeout(LOOKUP_TIMEOUT, self.ask(host)).await;
        let answer =
            looked_up.unwrap_or_else(|_| Err(format!("no answer in {LOOKUP_TIMEOUT:?}")))?;
        match answer.addrs.is_empty() {
            true => Err("no addresses".to_owned()),
            false => Ok(answer),
        }
    }

    async fn ask(&self, host: &str) -> Result<Answer, String> {
        let mut addrs: Vec<IpAddr> = Vec::new();
        let ttl = match self {
            Resolver::System => {
                let found = tokio::net::lookup_host((host, 0))
                    .await
                    .map_err(|error| error.to_string())?;
                addrs.extend(found.map(|addr| addr.ip()));
                None
            }
            Resolver::Server { client, .. } => {
                let found = client
                    .lookup_ip(host)
                    .await
                    .map_err(|error| error.to_string())?;
                addrs.extend(found.iter());
                Some(
                    found
                        .valid_until()
                        .saturating_duration_since(Instant::now()),
                )
            }
        };
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|ip| seen.insert(*ip));
        Ok(Answer { addrs, ttl })
    }
}
