//! The control plane's hold on routing: the published snapshot and the health checkers, which change together.
//!
//! [`Control::apply`] routes to a config's backends: it builds a snapshot that keeps the live state of every backend
//! the current one also has (by identity: id and address), checks the backends that are new once (so none gets
//! traffic before its first verdict, as at startup), brings the checkers in line (one per backend: new ones
//! started, removed ones stopped, the others left running) and publishes the snapshot. Requests already in flight
//! finish on the snapshot they started with.
//!
//! The start is `apply` on an empty routing. A reload will be `apply` on the current one; what it still needs (its
//! trigger, the settings it may not change, such as the listen address) is not built yet.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::Config;
use crate::health::{self, Checkers};
use crate::upstream::{Routing, Snapshot};

pub struct Control {
    routing: Arc<Routing>,
    checkers: Checkers,
}

impl Control {
    /// Routes nowhere yet (no backend) with `config`'s settings; checkers stop when `shutdown` is cancelled.
    pub fn new(config: &Config, shutdown: &CancellationToken) -> Self {
        let nothing = Config {
            backends: Vec::new(),
            ..config.clone()
        };
        Control {
            routing: Arc::new(Routing::new(Snapshot::build(&nothing, None))),
            checkers: Checkers::new(shutdown),
        }
    }

    /// What the workers read, per request.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Routes to `config`'s backends from now on (see the module doc). Runs the checkers on the caller's runtime.
    pub async fn apply(&mut self, config: &Config) {
        let current = self.routing.load_full();
        let next = Snapshot::build(config, Some(&current));
        let fresh: Vec<Arc<Backend>> = next
            .backends
            .iter()
            .filter(|backend| current.backend(backend.identity()).is_none())
            .cloned()
            .collect();
        health::check_once(&fresh, &config.health).await;
        self.checkers.sync(&next, &config.health);
        self.routing.publish(next);
    }

    /// Stops the health checkers and waits until they have.
    pub async fn shutdown(self) {
        self.checkers.shutdown().await;
    }
}
