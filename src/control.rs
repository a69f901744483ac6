//! The control plane's hold on routing: the published snapshot and the health checkers, which change together.
//!
//! [`Control::apply`] routes to a config's backends: it builds a snapshot that keeps the live state of every backend
//! the current one also has (by identity: id and address), checks the backends that are new once (so none gets
//! traffic before its first verdict, as at startup), brings the checkers in line (one per backend: new ones
//! started, removed ones stopped, the others left running) and publishes the snapshot. Requests already in flight
//! finish on the snapshot they started with.
//!
//! The start is `apply` on an empty routing; a reload ([`Control::reload`]) is `apply` on the current one, and says
//! what changed. Which settings a reload may not change (the listener's) is the server's to check.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::Config;
use crate::health::{self, Checkers};
use crate::upstream::{Routing, Snapshot};

pub struct Control {
    routing: Arc<Routing>,
    checkers: Checkers,
    /// How many configs have been applied (the start is 1).
    generation: u64,
}

/// What a reload changed, by backend id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    /// Backends the new config has and the old one had not.
    pub added: Vec<u64>,
    /// Backends the old config had and the new one has not.
    pub removed: Vec<u64>,
    /// Backends of both whose address (or the way it is written) changed: new ones for all they know.
    pub changed: Vec<u64>,
    /// Certificates that failed to load, one line each: each kept the version loaded before (the rest of the
    /// config was applied).
    pub certificate_errors: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    /// `generation 2: added [5], removed [2], changed [3]`, the form of the log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generation {}: added {:?}, removed {:?}, changed {:?}",
            self.generation, self.added, self.removed, self.changed
        )?;
        for error in &self.certificate_errors {
            write!(f, "; kept the certificate loaded before: {error}")?;
        }
        Ok(())
    }
}

impl Control {
    /// Routes nowhere yet (no backend) with `config`'s settings; checkers stop when `shutdown` is cancelled.
    pub fn new(config: &Config, shutdown: &CancellationToken) -> Self {
        let mut nothing = config.clone();
        for cluster in &mut nothing.clusters {
            cluster.backends.clear();
        }
        Control {
            routing: Arc::new(Routing::new(Snapshot::build(&nothing, None))),
            checkers: Checkers::new(shutdown),
            generation: 0,
        }
    }

    /// What the workers read, per request.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Routes to `config`'s backends from now on (see the module doc). Runs the checkers on the caller's runtime.
    pub async fn apply(&mut self, config: &Config) {
        let current = self.routing.load_full();
        let mut next = Snapshot::build(config, Some(&current));
        next.generation = self.generation + 1;
        let fresh: Vec<Arc<Backend>> = next
            .backends
            .iter()
            .filter(|backend| current.backend(backend.identity()).is_none())
            .cloned()
            .collect();
        health::check_once(&fresh, &next).await;
        self.checkers.sync(&next);
        self.routing.publish(next);
        self.generation += 1;
    }

    /// Routes to `config`'s backends from now on, as [`Control::apply`] does, and says what changed.
    pub async fn reload(&mut self, config: &Config) -> Reloaded {
        let current = self.routing.load_full();
        let before = |id: u64| current.backends.iter().find(|b| b.id == id);
        let mut reloaded = Reloaded {
            generation: 0,
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            certificate_errors: Vec::new(),
        };
        for new in config.backends() {
            match before(new.id) {
                None => reloaded.added.push(new.id),
                Some(old) => {
                    if old.addr != new.addr || old.authority != new.authority() {
                        reloaded.changed.push(new.id);
                    }
                }
            }
        }
        for old in &current.backends {
            if !config.backends().any(|b| b.id == old.id) {
                reloaded.removed.push(old.id);
            }
        }
        self.apply(config).await;
        // A backend whose identity the new routing no longer has is done with: its connections go as they come back.
        let next = self.routing.load_full();
        for old in &current.backends {
            if next.backend(old.identity()).is_none() {
                old.state.retired.store(true, Ordering::Relaxed);
            }
        }
        reloaded.generation = self.generation;
        reloaded
    }

    /// Stops the health checkers and waits until they have.
    pub async fn shutdown(self) {
        self.checkers.shutdown().await;
    }
}
