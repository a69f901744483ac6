//! `POST /api/reload`: the same reload as SIGHUP, asked of the main task (which owns the server and the config
//! file's name). 200 with the diff (`{"generation":4,"added":[5],"removed":[2],"changed":[3]}`), or 400 with the
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
        Ok(Ok(reloaded)) => answer::json(
            StatusCode::OK,
            &serde_json::json!({
                "generation": reloaded.generation,
                "added": reloaded.added,
                "removed": reloaded.removed,
                "changed": reloaded.changed,
                "certificate_errors": reloaded.certificate_errors,
            }),
        ),
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
