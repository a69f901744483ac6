//! SIGINT (Ctrl+C) and SIGTERM as one future, so the rest of `lb` knows one way to be asked to stop; and SIGHUP,
//! which systemd's `ExecReload` and every ops habit send to reload the config.

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

/// SIGHUPs, caught from the moment this is made (so that one never kills the process, its default action).
pub struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    pub fn catch() -> Self {
        let hangups = signal(SignalKind::hangup());
        if hangups.is_err() {
            tracing::warn!("cannot install a SIGHUP handler; SIGHUP will stop lb");
        }
        Hangups(hangups.ok())
    }

    /// Waits for the next SIGHUP (forever, without a handler).
    pub async fn next(&mut self) {
        let received = match &mut self.0 {
            Some(hangups) => hangups.recv().await.is_some(),
            None => false,
        };
        if !received {
            std::future::pending::<()>().await;
        }
    }
}
