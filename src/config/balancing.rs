//! How requests are spread: the balancing settings of a pool, passive health, slow start, the retry budget, named
//! pools and the routes to them (issue 11). Validated runtime types; what the file may contain is in `file.rs`.
//!
//! A *pool* of the config (`[pools.NAME]`, or the top-level `backends`, the default pool) is called a cluster in
//! the code, as Envoy does, to keep it apart from the connection pool (`[pool]`, `upstream::pool`).

use std::time::Duration;

use super::{BackendConfig, HealthConfig};

/// The selection algorithm of a pool (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's): plain round robin when every weight is equal.
    #[default]
    RoundRobin,
    /// Power of two random choices over requests in flight, weighted.
    LeastRequest,
    /// Power of two random choices over a decaying peak EWMA of response times × (in flight + 1).
    PeakEwma,
    /// Weighted random.
    Random,
    /// Maglev over a request key (`hash_key`), weighted, optionally with bounded load (`hash_bound`).
    ConsistentHash,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastRequest => "least_request",
            Algorithm::PeakEwma => "peak_ewma",
            Algorithm::Random => "random",
            Algorithm::ConsistentHash => "consistent_hash",
        }
    }
}

/// What a request is hashed by for `consistent_hash` (`hash_key`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client's IP address (after a PROXY header, the client it names).
    #[default]
    ClientIp,
    /// The value of a request header (`header:NAME`; NAME lowercase). A request without it hashes as empty.
    Header(String),
    /// The value of a cookie (`cookie:NAME`). A request without it hashes as empty.
    Cookie(String),
    /// The request's path (without the query).
    Path,
}

/// How one pool balances.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BalanceConfig {
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    /// For `consistent_hash`: no backend takes a request while it has more than this × the average in flight
    /// (`hash_bound`, > 1); `None`: unbounded.
    pub hash_bound: Option<f64>,
}

/// Outlier ejection from real traffic (`[passive_health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealth {
    /// 5xx answers or connect/reset/timeout failures in a row that eject a backend.
    pub consecutive_failures: u32,
    /// Ejected for this × the times it was ejected before (capped at [`MAX_EJECTION`]).
    pub base_ejection: Duration,
    /// Never more than this share of the pool ejected at once (0–100).
    pub max_ejected_percent: u8,
}

/// The longest ejection, however often a backend was ejected before.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Connect failures in a row that take a backend out until its next passed health check, with or without
/// `[passive_health]`.
pub const CONNECT_FAILURES_TO_EXCLUDE: u32 = 3;

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        }
    }
}

/// How much retrying is allowed (`[retries]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Retries may add at most this % on top of recent requests (with a floor of [`RETRY_FLOOR_PER_SECOND`]).
    pub budget_percent: u32,
    /// Attempts per request, counting the first.
    pub max_attempts: u32,
}

/// Retries always allowed per second, whatever the budget says (so a quiet balancer can still retry).
pub const RETRY_FLOOR_PER_SECOND: u32 = 3;

impl Default for Retries {
    fn default() -> Self {
        Retries {
            budget_percent: 20,
            max_attempts: 3,
        }
    }
}

/// A pool of backends with its own balancing and health settings: the default pool (top-level `backends`) or a
/// `[pools.NAME]` table.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `""` for the default pool, else the table's NAME.
    pub name: String,
    pub backends: Vec<BackendConfig>,
    pub balance: BalanceConfig,
    pub health: HealthConfig,
    pub passive_health: Option<PassiveHealth>,
    /// A backend that comes up (or is added) ramps from 10% to its full weight over this window.
    pub slow_start: Option<Duration>,
}

/// Which requests a `[[routes]]` entry takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub host: Option<HostMatch>,
    /// Matches a path that starts with it (compared as bytes).
    pub path_prefix: Option<String>,
    /// The index of the pool in [`super::Config::clusters`].
    pub cluster: usize,
}

/// A route's `host`: exact (`api.example.com`) or a wildcard suffix (`*.example.com`: any name ending in
/// `.example.com`), lowercase, without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// The suffix, with its leading dot (`.example.com`).
    Suffix(String),
}

/// Which addresses of a backend given by host name are members of its pool (`resolve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolve {
    /// One address: the first the resolver answers, kept while the name still resolves to it.
    #[default]
    First,
    /// Every A and AAAA address of the name (a Kubernetes headless service): one member per address, all with the
    /// backend's id and settings.
    All,
}
