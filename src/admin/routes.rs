//! Which path does what, and with which method: the admin plane's whole surface in one place.
//!
//! | path | method | what |
//! |---|---|---|
//! | `/` | GET | the dashboard (`dashboard`) |
//! | `/metrics` | GET | Prometheus text exposition (`metrics`) |
//! | `/api/status` | GET | backends, their state and why (`status`) |
//! | `/api/history` | GET | the last minutes of requests/s and latency per backend (`history`) |
//! | `/api/reload` | POST | re-read the config file (`reload`) |
//! | `/api/backends/{id}/disable`, `/enable`, `/drain` | POST | runtime control (`backends`) |
//!
//! Unknown paths get 404, a known path with another method 405 (with `Allow`), both as JSON errors.

use http::{Method, Request, StatusCode};

use super::answer::{self, Answer};
use super::history::History;
use super::{auth, backends, dashboard, metrics, reload, status, Plane};

pub async fn route<B>(plane: &Plane, history: &History, request: Request<B>) -> Answer {
    let (method, headers) = (request.method(), request.headers());
    if let Err(refused) = auth::check(plane.token.get().as_deref(), method, headers) {
        return *refused;
    }
    let get = matches!(*method, Method::GET | Method::HEAD);
    let post = *method == Method::POST;
    let path = request.uri().path();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        [""] if get => dashboard::page(),
        ["metrics"] if get => metrics::render(plane, headers),
        ["api", "status"] if get => status::render(plane),
        ["api", "history"] if get => history.render(),
        ["api", "reload"] if post => reload::run(plane).await,
        ["api", "backends", id, action] if post && backends::ACTIONS.contains(action) => {
            backends::act(plane, id, action, request.uri().query()).await
        }
        [""] | ["metrics"] | ["api", "status"] | ["api", "history"] => answer::wrong_method("GET"),
        ["api", "reload"] => answer::wrong_method("POST"),
        ["api", "backends", _, action] if backends::ACTIONS.contains(action) => {
            answer::wrong_method("POST")
        }
        _ => answer::error(
            StatusCode::NOT_FOUND,
            &format!("no such admin path: {path}"),
        ),
    }
}
