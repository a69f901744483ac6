//! The task that keeps the routing up with DNS: it sleeps until some backend host name is due to be resolved again
//! (every `resolve_interval`, or its answer's shorter TTL: see `dns`), looks the due names up, and hands the answers
//! to the control plane, which applies them as a reload when a backend moved (`Control::resolved`).
//!
//! Lookups run without holding the control plane, so a slow or silent DNS server delays no reload (and each lookup
//! is bounded anyway); the data plane never waits on any of it. The task ends when the server's shutdown token is
//! cancelled, whatever it is doing.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::Control;

/// Starts resolving `control`'s backend names again as they fall due, until `shutdown`.
pub fn spawn(control: Arc<Mutex<Control>>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            () = run(&control) => {}
        }
    })
}

async fn run(control: &Mutex<Control>) {
    loop {
        let due = control.lock().await.due(Instant::now());
        if due.hosts.is_empty() {
            // Until the next name is due, or a reload changes the names.
            match due.next {
                Some(next) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        () = due.renamed.notified() => {}
                    }
                }
                None => due.renamed.notified().await,
            }
            continue;
        }
        let lookups = due
            .hosts
            .iter()
            .map(|host| async { (host.clone(), due.resolver.lookup(host).await) });
        let answers = futures_util::future::join_all(lookups).await;
        control.lock().await.resolved(answers, Instant::now()).await;
    }
}
