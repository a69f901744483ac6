//! The running health checkers: one task per backend, each with its own cancellation.
//!
//! A checker is keyed by its backend's identity (id + address, as snapshots carry state), so that the set of
//! checkers can follow the set of backends one by one: [`Checkers::sync`] starts a checker for each backend a
//! snapshot has and none had, stops those of backends it no longer has, restarts one whose check would differ (the
//! backend is now written another way, so the checks' Host changes; it is reached another way (`protocol`, `tls`,
//! `send_proxy`); it is a TLS backend, whose setup the new snapshot built afresh from files that may have been
//! renewed; or the check settings changed), and leaves every other checker running undisturbed, rise/fall streak
//! included. A restarted checker keeps the backend's health, only its streak starts over. A reload calls it with the new snapshot; the start
//! calls it with the first.
//!
//! Each checker's token is a child of the server's shutdown token: shutdown stops them all at once (as it did when
//! they all watched that token), and a single one can be stopped without touching the others.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Identity};
use crate::config::HealthConfig;
use crate::upstream::Snapshot;

/// The health checker tasks, one per backend of the routed snapshot.
#[derive(Debug)]
pub struct Checkers {
    /// Cancelled at shutdown; every checker's token is a child of it.
    shutdown: CancellationToken,
    running: HashMap<Identity, Checker>,
}

#[derive(Debug)]
struct Checker {
    backend: Arc<Backend>,
    config: HealthConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Checker {
    fn start(backend: &Arc<Backend>, config: &HealthConfig, shutdown: &CancellationToken) -> Self {
        let stop = shutdown.child_token();
        let task = tokio::spawn(super::check::watch(
            backend.clone(),
            config.clone(),
            stop.clone(),
        ));
        Checker {
            backend: backend.clone(),
            config: config.clone(),
            stop,
            task,
        }
    }

    /// Whether this checker checks `backend` the way `config` says to.
    fn checks_as(&self, backend: &Backend, config: &HealthConfig) -> bool {
        self.backend.authority == backend.authority
            && self.config == *config
            && self.backend.options == backend.options
            && backend.tls.is_none()
    }
}

impl Checkers {
    /// No checker yet; they stop when `shutdown` is cancelled (or when stopped one by one).
    pub fn new(shutdown: &CancellationToken) -> Self {
        Checkers {
            shutdown: shutdown.clone(),
            running: HashMap::new(),
        }
    }

    /// Makes exactly one checker run for each backend of `snapshot`, checking as its pool says. Must be called
    /// inside a tokio runtime, which runs the checkers.
    pub fn sync(&mut self, snapshot: &Snapshot) {
        self.running.retain(|identity, checker| {
            let keep = snapshot
                .backend(*identity)
                .is_some_and(|backend| checker.checks_as(backend, snapshot.health_of(backend)));
            if !keep {
                checker.stop.cancel();
            }
            keep
        });
        for backend in &snapshot.backends {
            self.running.entry(backend.identity()).or_insert_with(|| {
                Checker::start(backend, snapshot.health_of(backend), &self.shutdown)
            });
        }
    }

    /// Stops every checker and waits until each has.
    pub async fn shutdown(mut self) {
        let running = std::mem::take(&mut self.running);
        for checker in running.values() {
            checker.stop.cancel();
        }
        for (_, checker) in running {
            let _ = checker.task.await;
        }
    }
}

impl Drop for Checkers {
    /// Dropped without [`Checkers::shutdown`] (a server that was never shut down): the checkers stop all the same.
    fn drop(&mut self) {
        for checker in self.running.values() {
            checker.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{self, BackendConfig, Config, Overrides};

    /// A backend on loopback that answers every connection with 200 and counts them.
    struct Counted {
        addr: SocketAddr,
        checks: Arc<AtomicUsize>,
    }

    impl Counted {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let checks = Arc::new(AtomicUsize::new(0));
            let counter = checks.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let answer =
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                        let _ = stream.write_all(answer).await;
                    });
                }
            });
            Counted { addr, checks }
        }

        fn checks(&self) -> usize {
            self.checks.load(Ordering::SeqCst)
        }

        fn config(&self, id: u64) -> BackendConfig {
            BackendConfig {
                id,
                host: "127.0.0.1".into(),
                port: self.addr.port(),
                addr: self.addr,
                options: Default::default(),
                weight: 1,
                max_connections: None,
                resolve: Default::default(),
            }
        }
    }

    fn config(backends: Vec<BackendConfig>, interval: Duration) -> Config {
        let overrides = Overrides {
            interval: Some(interval),
            ..Default::default()
        };
        config::from_backends(backends, &overrides).expect("a valid config")
    }

    fn watching(checkers: &Checkers) -> Vec<u64> {
        let mut ids: Vec<u64> = checkers.running.keys().map(|i| i.id).collect();
        ids.sort();
        ids
    }

    fn task_of(checkers: &Checkers, id: u64) -> tokio::task::Id {
        let (_, checker) = checkers.running.iter().find(|(i, _)| i.id == id).unwrap();
        checker.task.id()
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn checkers_start_and_stop_one_by_one_as_backends_come_and_go() {
        let second = Duration::from_secs(1);
        let (one, two, three) = (
            Counted::start().await,
            Counted::start().await,
            Counted::start().await,
        );
        let shutdown = CancellationToken::new();
        let mut checkers = Checkers::new(&shutdown);

        let first = config(vec![one.config(1), two.config(2)], second);
        let before = Snapshot::build(&first, None);
        checkers.sync(&before);
        assert_eq!(watching(&checkers), [1, 2]);
        tokio::time::sleep(3 * second + second / 2).await;
        assert_eq!((one.checks(), two.checks(), three.checks()), (3, 3, 0));
        let kept_task = task_of(&checkers, 2);

        // Backend 1 goes, 3 comes, 2 stays.
        let next = config(vec![two.config(2), three.config(3)], second);
        let after = Snapshot::build(&next, Some(&before));
        checkers.sync(&after);
        assert_eq!(watching(&checkers), [2, 3]);
        assert_eq!(task_of(&checkers, 2), kept_task, "backend 2's checker kept");
        // (Sleeps end between ticks: at 6.25 s, backend 2 was checked at 4, 5 and 6 s, backend 3 at 4.5 and 5.5 s.)
        tokio::time::sleep(2 * second + 3 * second / 4).await;
        assert_eq!(one.checks(), 3, "backend 1 is no longer checked");
        assert_eq!((two.checks(), three.checks()), (6, 2));

        // The same backends with other check settings: each checker restarts with them.
        let slower = config(vec![two.config(2), three.config(3)], 2 * second);
        checkers.sync(&Snapshot::build(&slower, Some(&after)));
        assert_ne!(task_of(&checkers, 2), kept_task);
        tokio::time::sleep(4 * second + second / 2).await;
        assert_eq!((two.checks(), three.checks()), (8, 4));

        checkers.shutdown().await;
        tokio::time::sleep(10 * second).await;
        assert_eq!((one.checks(), two.checks(), three.checks()), (3, 8, 4));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_server_shutdown_token_stops_every_checker() {
        let backend = Counted::start().await;
        let shutdown = CancellationToken::new();
        let mut checkers = Checkers::new(&shutdown);
        let config = config(vec![backend.config(1)], Duration::from_secs(1));
        checkers.sync(&Snapshot::build(&config, None));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(backend.checks(), 1);

        shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(backend.checks(), 1);
        assert!(checkers.running.values().all(|c| c.task.is_finished()));
    }
}
