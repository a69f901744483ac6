//! `POST /api/backends/{id}/disable|enable|drain` (being written).

use http::StatusCode;

use super::answer::{self, Answer};
use super::Plane;

pub const ACTIONS: [&str; 3] = ["disable", "enable", "drain"];

pub async fn act(_plane: &Plane, _id: &str, _action: &str, _query: Option<&str>) -> Answer {
    answer::error(StatusCode::NOT_IMPLEMENTED, "backends: not yet")
}
