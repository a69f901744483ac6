//! The task that keeps the routing up with DNS: it sleeps until some backend host name is due to be resolved again
//! (every `resolve_interval`, or its answer's shorter TTL: see `dns`), looks the due names up, and hands the answers
//! to the control plane, which applies them as a reload when a backend moved (`Control::resolved`).
//!
//! Lookups run without holding the control plane, each in its own task, so a slow or silent DNS server delays no
//! reload and a name that hangs delays no other name (and each lookup is bounded anyway); the data plane never waits
//! on any of it. The task ends when the server's shutdown token is
//! cancelled, whatever it is doing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::dns::Answer;

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
    // Lookups in flight, each its own task (aborted with this future at shutdown), so that a name whose server
    // does not answer delays no other (the review saw every name wait for one hanging lookup's 5 s timeout).
    let mut lookups: JoinSet<(String, Result<Answer, String>)> = JoinSet::new();
    let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
    loop {
        let now = Instant::now();
        let due = control.lock().await.due(now);
        for host in due.hosts {
            if in_flight.values().any(|asked| *asked == host) {
                continue;
            }
            let resolver = due.resolver.clone();
            let lookup = {
                let host = host.clone();
                async move {
                    let answer = resolver.lookup(&host).await;
                    (host, answer)
                }
            };
            in_flight.insert(lookups.spawn(lookup).id(), host);
        }
        // Until the next name is due (while some lookup is out, the names it holds are due already: look again
        // a moment later rather than at once), a lookup ends, or a reload changes the names.
        let wake = due.next.map(|next| match in_flight.is_empty() {
            true => next,
            false => next.max(now + RECHECK),
        });
        tokio::select! {
            Some(done) = lookups.join_next_with_id(), if !lookups.is_empty() => {
                let (id, answer) = match done {
                    Ok((id, (host, answer))) => (id, Some((host, answer))),
                    Err(error) => (error.id(), None),
                };
                in_flight.remove(&id);
                if let Some(answer) = answer {
                    control.lock().await.resolved(vec![answer], Instant::now()).await;
                }
            }
            () = sleep_until(wake) => {}
            () = due.renamed.notified() => {}
        }
    }
}

/// How soon the names are looked at again while some lookup is out.
const RECHECK: Duration = Duration::from_millis(250);

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
