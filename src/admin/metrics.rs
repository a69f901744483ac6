//! `GET /metrics` (being written).

use http::StatusCode;

use super::answer::{self, Answer};
use super::Plane;

pub fn render(_plane: &Plane) -> Answer {
    answer::error(StatusCode::NOT_IMPLEMENTED, "metrics: not yet")
}
