//! SIGINT (Ctrl+C) and SIGTERM as one future, so the rest of `lb` knows one way to be asked to stop.

use tokio::signal::unix::{signal, SignalKind};

/// Waits for the next SIGINT or SIGTERM and returns its name.
pub async fn shutdown() -> &'static str {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers there is nothing to wait for: never resolve rather than stop at once.
        tracing::warn!("cannot install signal handlers; stop lb with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
