//! `POST /api/reload`: the same reload as SIGHUP, asked of the main task (which owns the server and the config
//! file's name). 200 with the diff (`{"generation":4,"added":[5],"removed":[2],"changed":[3]}`, plus
//! `"certificate_errors"` when a TLS certificate failed to load and kept its previous version), or 400 with the
//! one-line error when the file is bad or changes the listener (the running config stays).

use http::StatusCode;
use tokio::sync::oneshot;

use super::answer::{self, Answer};
use super::{Command, Plane};

pub async fn run(plane: &Plane) -> Answer {
    let (reply, answered) = oneshot::channel();
    if plane.commands.send(Command::Reload(reply)).await.is_err() {
        return stopping();
    }
    match answered.await {
        Ok(Ok(reloaded)) => {
            let mut diff = serde_json::json!({
                "generation": reloaded.generation,
                "added": reloaded.added,
                "removed": reloaded.removed,
                "changed": reloaded.changed,
            });
            if !reloaded.certificate_errors.is_empty() {
                // Certificates that failed to load (each kept the one loaded before); the rest was applied.
                diff["certificate_errors"] = reloaded.certificate_errors.into();
            }
            answer::json(StatusCode::OK, &diff)
        }
        Ok(Err(error)) => answer::error(StatusCode::BAD_REQUEST, &error),
        Err(_) => stopping(),
    }
}

fn stopping() -> Answer {
    answer::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "lb is shutting down: no reload",
    )
}
