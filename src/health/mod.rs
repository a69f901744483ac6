//! Health checks: one task per backend, each on its own schedule.
//!
//! A check is `GET <path>` on a fresh connection, bounded by the check timeout; a status in the configured set
//! passes. The verdict goes through the rise/fall state machine (`state.rs`) and only a flip changes the backend's
//! shared `healthy` flag and writes a log line, with the reason. Before traffic is accepted every backend is checked
//! once (`check_once`), so the first requests already see the true state.

mod state;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::upstream::{describe_io, Backend};
use state::{Flip, HealthState};

/// Checks every backend once, concurrently, and sets each one's health from the result.
pub async fn check_once(backends: &[Arc<Backend>], config: &HealthConfig) {
    let checks = backends.iter().map(|backend| async move {
        let result = check(backend, config).await;
        if let Err(reason) = &result {
            tracing::warn!("{backend} down at startup: {reason}");
        }
        backend
            .state
            .healthy
            .store(result.is_ok(), Ordering::Relaxed);
    });
    futures_util::future::join_all(checks).await;
}

/// Checks `backend` every interval until `shutdown`, flipping its health per the rise/fall rules.
pub async fn watch(backend: Arc<Backend>, config: HealthConfig, shutdown: CancellationToken) {
    let mut state = HealthState::new(backend.is_healthy(), config.rise, config.fall);
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate, and `check_once` just did that check
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = check(&backend, &config) => result,
        };
        match state.record(result.is_ok()) {
            None => {}
            Some(Flip::Down(failures)) => {
                backend.state.healthy.store(false, Ordering::Relaxed);
                let last = result.err().unwrap_or_default();
                tracing::warn!("{backend} down: {failures} checks failed, last: {last}");
            }
            Some(Flip::Up(passes)) => {
                backend.state.healthy.store(true, Ordering::Relaxed);
                tracing::info!("{backend} up: {passes} checks passed");
            }
        }
    }
}

/// One check: `Ok` if the backend answered the health path with an accepted status in time, else why not.
async fn check(backend: &Backend, config: &HealthConfig) -> Result<(), String> {
    match tokio::time::timeout(config.timeout, probe(backend, config)).await {
        Err(_) => Err(format!("timed out after {:?}", config.timeout)),
        Ok(Err(reason)) => Err(reason),
        Ok(Ok(status)) if config.passes(status) => Ok(()),
        Ok(Ok(status)) => Err(format!("status {status}")),
    }
}

async fn probe(backend: &Backend, config: &HealthConfig) -> Result<u16, String> {
    let stream = TcpStream::connect(backend.addr)
        .await
        .map_err(|error| describe_io(&error))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    let request = Request::get(config.path.as_str())
        .header(header::HOST, backend.authority.as_str())
        .header(
            header::USER_AGENT,
            concat!("lb-health-check/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let mut exchange = std::pin::pin!(sender.send_request(request));
    // The connection is driven here rather than spawned, so a backend that hangs leaves nothing behind when the
    // check times out.
    let response = tokio::select! {
        biased;
        response = &mut exchange => response,
        ended = connection => match ended {
            Ok(()) => exchange.await,
            Err(error) => Err(error),
        },
    };
    response
        .map(|r| r.status().as_u16())
        .map_err(|error| error.to_string())
}
