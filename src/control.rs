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
//!
//! Backends given by host name (see `dns`): `apply` resolves every name of the config (concurrently, each lookup
//! bounded), keeping the last addresses of a name that fails now, and routes to the config *expanded* with what the
//! names resolved to. The config as written is kept, so that [`Control::resolved`], which the re-resolution task
//! (`reresolve`) calls with fresh answers, can expand it again and apply the result as a reload without a file when
//! some backend moved, logging each move. An admin action by id acts on every member of a `resolve = "all"` backend.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::Config;
use crate::dns::{self, Answer, Names, Resolver};
use crate::health::{self, Checkers};
use crate::upstream::{Routing, Snapshot};

pub struct Control {
    routing: Arc<Routing>,
    checkers: Checkers,
    /// How many configs have been applied (the start is 1; a move of a backend's name counts as one).
    generation: u64,
    /// What the backends' host names resolved to.
    names: Names,
    resolver: Resolver,
    /// The config last applied, as written (names unresolved), and its expansion, which the routing follows.
    written: Config,
    expanded: Config,
    /// Told when a reload changed the names, so the re-resolution task looks at them again.
    renamed: Arc<Notify>,
}

/// Names whose turn to be resolved again has come, and whom to ask: what the re-resolution task looks up without
/// holding the control plane.
pub struct Due {
    pub resolver: Resolver,
    pub hosts: Vec<String>,
    /// When the next name is due, once these are (`None`: no backend is given by name).
    pub next: Option<Instant>,
    /// Told when a reload changes the names (and so when they are due).
    pub renamed: Arc<Notify>,
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
            names: Names::default(),
            resolver: Resolver::new(config.resolver),
            written: nothing.clone(),
            expanded: nothing,
            renamed: Arc::new(Notify::new()),
        }
    }

    /// What the workers read, per request.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Routes to `config`'s backends from now on (see the module doc), their names resolved again. Runs the checkers
    /// on the caller's runtime.
    pub async fn apply(&mut self, config: &Config) {
        if !self.resolver.asks(config.resolver) {
            self.resolver = Resolver::new(config.resolver);
        }
        let hosts = dns::names_of(config);
        self.names.retain(&hosts);
        let lookups = hosts.iter().map(|host| async {
            let answer = self.resolver.lookup(host).await;
            (host.clone(), answer)
        });
        let answers = futures_util::future::join_all(lookups).await;
        let now = Instant::now();
        for (host, answer) in answers {
            self.names
                .record(&host, answer, now, config.resolve_interval);
        }
        self.written = config.clone();
        self.expanded = dns::expand(config, &self.names);
        self.route().await;
        self.renamed.notify_one();
    }

    /// The names due to be resolved again at `now`.
    pub fn due(&self, now: Instant) -> Due {
        Due {
            resolver: self.resolver.clone(),
            hosts: self.names.due(now),
            next: self.names.next_due(),
            renamed: self.renamed.clone(),
        }
    }

    /// Records fresh `answers` (names looked up at `now`, see [`Control::due`]) and, when a backend moved, routes to
    /// the config as written expanded with them: a reload without a file. Answers the moves (also logged).
    pub async fn resolved(
        &mut self,
        answers: Vec<(String, Result<Answer, String>)>,
        now: Instant,
    ) -> Vec<dns::Moved> {
        let interval = self.written.resolve_interval;
        let names = dns::names_of(&self.written);
        let mut changed = false;
        for (host, answer) in answers {
            // A name the config no longer has (a reload came between the lookup and now) is not recorded.
            if names.contains(&host) {
                changed |= self.names.record(&host, answer, now, interval);
            }
        }
        if !changed {
            return Vec::new();
        }
        let expanded = dns::expand(&self.written, &self.names);
        let moves = dns::moves(&self.expanded, &expanded);
        if moves.is_empty() {
            return moves;
        }
        for moved in &moves {
            tracing::info!(backend = moved.id, "{moved}");
        }
        self.expanded = expanded;
        self.route().await;
        moves
    }

    /// Routes to the expanded config from now on.
    async fn route(&mut self) {
        let config = &self.expanded;
        let current = self.routing.load_full();
        let mut next = Snapshot::build(config, Some(&current));
        next.generation = self.generation + 1;
        let fresh: Vec<Arc<Backend>> = next
            .backends
            .iter()
            .filter(|backend| current.backend(backend.identity()).is_none())
            .cloned()
            .collect();
        // A backend at a new address of its name is the same backend to the operator: it keeps a disable or a drain.
        for backend in &fresh {
            if let Some(known) = current.backends.iter().find(|b| b.id == backend.id) {
                backend.state.set_admin(known.state.admin());
            }
        }
        health::check_once(&fresh, &next).await;
        self.checkers.sync(&next);
        self.routing.publish(next);
        self.generation += 1;
        // A backend whose identity the new routing no longer has is done with: its connections go as they come back.
        let next = self.routing.load_full();
        for old in &current.backends {
            if next.backend(old.identity()).is_none() {
                old.state.retired.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Routes to `config`'s backends from now on, as [`Control::apply`] does, and says what changed (by id: the
    /// members of a `resolve = "all"` backend are one backend here).
    pub async fn reload(&mut self, config: &Config) -> Reloaded {
        let current = self.routing.load_full();
        self.apply(config).await;
        let next = self.routing.load_full();
        let members = |snapshot: &Snapshot, id: u64| -> Vec<(std::net::SocketAddr, String)> {
            let members = snapshot.backends.iter().filter(|b| b.id == id);
            members.map(|b| (b.addr, b.authority.clone())).collect()
        };
        let ids = |snapshot: &Snapshot| -> Vec<u64> {
            let mut ids: Vec<u64> = Vec::new();
            for backend in &snapshot.backends {
                if !ids.contains(&backend.id) {
                    ids.push(backend.id);
                }
            }
            ids
        };
        let (old_ids, new_ids) = (ids(&current), ids(&next));
        let mut reloaded = Reloaded {
            generation: self.generation,
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            certificate_errors: Vec::new(),
        };
        for &id in &new_ids {
            if !old_ids.contains(&id) {
                reloaded.added.push(id);
            } else if members(&current, id) != members(&next, id) {
                reloaded.changed.push(id);
            }
        }
        reloaded.removed = old_ids
            .into_iter()
            .filter(|id| !new_ids.contains(id))
            .collect();
        reloaded
    }

    /// Stops the health checkers and waits until they have.
    pub async fn shutdown(&mut self) {
        let stopped = Checkers::new(&CancellationToken::new());
        std::mem::replace(&mut self.checkers, stopped)
            .shutdown()
            .await;
    }
}
