//! Which backends a request goes to, and how often: the retry policy.
//!
//! The rule (as Pingora's): a request may go to another backend whenever nothing of it was sent (the connection
//! could not be made). Once bytes reached a backend, it is resent only if its method is idempotent and it has no
//! body, and only once: a request that makes backends close without answering (a "query of death") reaches at most
//! two of them, not every backend in turn. The one resend goes to another backend, except when the failed
//! connection was a kept-alive one that failed before any answer (most likely closed by the backend's own idle
//! timeout just as it was lent): then it goes to the same backend on a new connection. A request that cannot be
//! resent goes only on a connection that was used very recently, or a new one (see `upstream::pool`).
//!
//! Failures to connect are the backend's (logged, at most one line per backend and reason a second), except a
//! local shortage (out of file descriptors), which no other backend would fix: that request gets 503 at once.
//!
//! Counted here, once per request: the answer a backend delivered (on that backend, by status class, with the time
//! from the start of its attempt to its response head: the first attempt starts when the request's head was read,
//! a later one when it begins), and every attempt after the first as a retry (the next backend after a failed
//! connect, or the resend after a failure before any answer, on another backend or on a new connection to the
//! same one). What `lb` answers itself is counted by the connection.

use std::sync::atomic::Ordering;

use http::Method;
use tokio::time::Instant;

use super::outcome::{Outcome, ProxyError, Record};
use super::relay::{relay, Attempt, Leg};
use crate::backend::outlier::Observed;
use crate::backend::stats::StatusClass;
use crate::balance::key::request_hash;
use crate::balance::Candidates;
use crate::failure::Failure;
use crate::h1::client::Client;
use crate::h1::request::RequestHead;
use crate::h1::transport::Transport;
use crate::h1::{write, BodyLength};
use crate::log_limit::{self, Subject};
use crate::upstream::{Backend, Cluster, Reuse, Snapshot};
use crate::worker::Worker;

/// The request on its way: its head, as parsed and as read, and when it was read.
pub struct Request<'a> {
    pub head: &'a RequestHead,
    pub raw: &'a [u8],
    pub started: Instant,
}

/// Sends the request to one backend after another, as the rule allows, until one answers.
pub async fn attempts<T: Transport>(
    worker: &Worker,
    snapshot: &Snapshot,
    client: &mut Client<T>,
    request: Request<'_>,
    out: &mut Vec<u8>,
    record: &mut Record,
) -> Outcome {
    let Request { head, raw, started } = request;
    let replayable = is_idempotent(&head.method) && head.body == BodyLength::Empty;
    let reuse = match replayable {
        true => Reuse::Any,
        false => Reuse::Safe,
    };
    let path = &raw[head.target.clone()];
    let path = path.split(|&b| b == b'?').next().unwrap_or(path);
    let host = head.host.clone().map(|host| &raw[host]);
    let Some(cluster) = snapshot.route(host, path) else {
        return Outcome::Failed(ProxyError::new(Failure::NoRoute, None, ""));
    };
    let key = cluster.hash_key.as_ref().map(|key| {
        let header = |name: &str| {
            head.headers
                .iter()
                .find(|h| raw[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|h| &raw[h.value.clone()])
        };
        request_hash(key, client.peer.ip(), path, header)
    });
    let backends = &cluster.backends;
    let mut tried = Tried::new(snapshot, cluster, key, worker.index());
    let mut last_failure: Option<ProxyError> = None;
    // Set when a kept-alive connection failed before any answer: the same backend, on a new connection.
    let mut again_on_new: Option<usize> = None;
    // Attempts whose bytes reached a backend.
    let mut reached = 0;
    loop {
        let (index, new_connection) = match again_on_new.take() {
            Some(index) => (index, true),
            None => {
                let Some(index) = tried.pick_next() else {
                    let error = last_failure
                        .unwrap_or_else(|| ProxyError::new(tried.nothing_left(), None, ""));
                    return Outcome::Failed(error);
                };
                (index, false)
            }
        };
        record.attempts += 1;
        let started = match record.attempts {
            1 => started,
            _ => {
                worker.count_retry();
                Instant::now()
            }
        };
        let backend = &backends[index];
        // Counts this attempt on the backend until the iteration ends, however: answered, failed, or dropped.
        let _in_flight = backend.state.enter();
        let timeout = snapshot.timeouts.connect;
        let lease = if new_connection {
            Box::pin(worker.pool().connect(backend, timeout)).await
        } else {
            worker.pool().lease(backend, timeout, reuse).await
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(error) => {
                let failure = error.failure();
                if failure == Failure::LocalShortage {
                    let key = log_limit::Key {
                        subject: Subject::Backends,
                        what: "connections not made",
                        reason: "out of local resources (file descriptors or socket buffers)",
                    };
                    if log_limit::first(key) {
                        tracing::warn!(%error, "cannot connect to backends: out of local resources; answering 503");
                    }
                    return Outcome::Failed(ProxyError::new(failure, None, error.to_string()));
                }
                backend
                    .state
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                cluster.observe(index, Observed::ConnectFailed);
                let key = log_limit::Key {
                    subject: Subject::Backend(backend.id),
                    what: "requests retried elsewhere",
                    reason: failure.as_str(),
                };
                if log_limit::first(key) {
                    tracing::warn!(
                        "{backend} unreachable ({error}): request retried on the next backend"
                    );
                }
                last_failure = Some(ProxyError::new(
                    failure,
                    Some(backend.id),
                    error.to_string(),
                ));
                continue;
            }
        };
        out.clear();
        let from = client.peer.ip();
        write::request_head(out, raw, head, from, T::SCHEME, &backend.authority);
        let reused = lease.reused;
        let mut up_buf = worker.buffers().bytes();
        let leg = Leg {
            snapshot,
            backend,
            head,
            replayable,
            upgrade: head.upgrade_value(raw),
            started,
            record,
        };
        let attempt = relay(worker, leg, lease, client, out, &mut up_buf).await;
        worker.buffers().recycle_bytes(up_buf);
        match attempt {
            Attempt::Delivered {
                status,
                keep_alive,
                request_read,
            } => {
                answered(worker, backend, StatusClass::of(status.as_u16()), record);
                if let Some(took) = record.upstream {
                    let status = status.as_u16();
                    cluster.observe(index, Observed::Answered { status, took });
                }
                return Outcome::Delivered {
                    status,
                    backend: backend.id,
                    keep_alive,
                    request_read,
                };
            }
            Attempt::Retry(mut error) => {
                cluster.observe(index, Observed::Failed);
                reached += 1;
                if reached >= 2 {
                    error.detail = format!("{}; sent twice, not resent again", error.detail).into();
                    return Outcome::Failed(error);
                }
                if reused {
                    tracing::debug!(backend = backend.id, %error, "kept-alive backend connection failed before answering, resending on a new one");
                    again_on_new = Some(index);
                } else {
                    resent_elsewhere(backend.id, &error);
                    last_failure = Some(error);
                }
            }
            Attempt::Fail(error) => {
                if error.failure.blames_backend() {
                    cluster.observe(index, Observed::Failed);
                }
                return Outcome::Failed(error);
            }
            Attempt::Broken(error) => return Outcome::Broken(error),
            Attempt::Tunneled { failed } => {
                answered(worker, backend, StatusClass::of(101), record);
                return Outcome::Tunneled {
                    backend: backend.id,
                    failed,
                };
            }
        }
    }
}

/// Says (at most once a second per backend and reason) that a request a backend failed is resent to the next one:
/// what the fast path and the generic path both log.
pub fn resent_elsewhere(backend: u64, error: &ProxyError) {
    let key = log_limit::Key {
        subject: Subject::Backend(backend),
        what: "requests resent elsewhere",
        reason: error.failure.as_str(),
    };
    if log_limit::first(key) {
        tracing::warn!("{error}: request resent to the next backend");
    }
}

/// Counts the answer `backend` delivered, and the time it took to its head.
fn answered(worker: &Worker, backend: &Backend, class: StatusClass, record: &Record) {
    let stats = &backend.state.stats;
    stats.count(worker.index(), class);
    if let Some(waited) = record.upstream {
        stats.time(worker.index(), waited);
    }
}

/// The backends one request already tried (the first inline, no allocation per request; the others, retries, in a
/// list), and what it picks from: its pool, its key, and the limits on retrying.
pub struct Tried<'s> {
    snapshot: &'s Snapshot,
    cluster: &'s Cluster,
    key: Option<u64>,
    worker: usize,
    first: Option<usize>,
    more: Vec<usize>,
    /// The last pick found nothing because every backend left was full.
    full: bool,
}

impl<'s> Tried<'s> {
    /// Nothing tried yet of `cluster` (of `snapshot`) by a request keyed by `key`, served by worker `worker`.
    pub fn new(
        snapshot: &'s Snapshot,
        cluster: &'s Cluster,
        key: Option<u64>,
        worker: usize,
    ) -> Self {
        Tried {
            snapshot,
            cluster,
            key,
            worker,
            first: None,
            more: Vec::new(),
            full: false,
        }
    }

    /// Why nothing is left to try: every backend left was full (`max_connections`), or none is eligible.
    pub fn nothing_left(&self) -> Failure {
        match self.full {
            true => Failure::Full,
            false => Failure::NoBackend,
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.first == Some(index) || self.more.contains(&index)
    }

    fn push(&mut self, index: usize) {
        if self.first.is_none() {
            self.first = Some(index);
        } else {
            self.more.push(index);
        }
    }

    /// How many backends were tried.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// The next backend to try (an index into the pool's backends), by the pool's balancer: an eligible one, not
    /// full, not tried yet, now counted as tried. `None` when there is none left, when the request made
    /// `max_attempts` attempts, or when a retry does not fit in the retry budget. (The fast path, the generic path
    /// and TCP mode all choose this way.)
    #[inline]
    pub fn pick_next(&mut self) -> Option<usize> {
        let (snapshot, cluster) = (self.snapshot, self.cluster);
        let attempts = self.len();
        if attempts > 0 {
            let retries = &snapshot.retries;
            if attempts >= retries.max_attempts as usize {
                tracing::debug!(attempts, "max_attempts reached: not retried");
                return None;
            }
            if !snapshot.budget.try_retry(retries.budget_percent) {
                let key = log_limit::Key {
                    subject: Subject::Backends,
                    what: "retries not made",
                    reason: "retry budget spent",
                };
                if log_limit::first(key) {
                    tracing::warn!(
                        "retry budget spent ({}% of recent requests): the error is answered instead of a retry",
                        retries.budget_percent
                    );
                }
                return None;
            }
        } else {
            snapshot.budget.request(self.worker);
        }
        let backends = &cluster.backends;
        let full = std::cell::Cell::new(false);
        let eligible = |i: usize| {
            let backend = &backends[i];
            let ok = backend.is_eligible() && !self.contains(i);
            if ok && backend.is_full() {
                full.set(true);
                return false;
            }
            ok
        };
        let candidates = Candidates {
            backends,
            key: self.key,
            eligible: &eligible,
        };
        let Some(index) = cluster.balancer.pick(&candidates) else {
            self.full = full.get();
            if full.get() {
                let key = log_limit::Key {
                    subject: Subject::Backends,
                    what: "requests refused",
                    reason: "every backend at max_connections",
                };
                if log_limit::first(key) {
                    tracing::warn!(
                        "every available backend of {} is at its max_connections: request refused",
                        cluster.describe()
                    );
                }
            }
            return None;
        };
        self.push(index);
        Some(index)
    }
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
