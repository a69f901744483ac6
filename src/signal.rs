//! SIGINT (Ctrl+C) and SIGTERM as one future, so the rest of `lb` knows one way to be asked to stop; and SIGHUP,
//! which systemd's `ExecReload` and every ops habit send, caught so that it does not kill the process (its default
//! action) until reloading exists.

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

/// Catches SIGHUP from now on (the handler is installed before this returns) and logs each one; it changes nothing
/// else. Run the returned future for as long as `lb` runs.
pub fn catch_hangups() -> impl std::future::Future<Output = ()> {
    let hangups = signal(SignalKind::hangup());
    async move {
        let Ok(mut hangups) = hangups else {
            tracing::warn!("cannot install a SIGHUP handler; SIGHUP will stop lb");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: lb does not reload its config yet; nothing changed (restart lb to apply a new config)");
        }
    }
}
