//! `GET /`: the dashboard (being written).

use http::StatusCode;

use super::answer::{self, Answer};

pub fn page() -> Answer {
    answer::with(
        StatusCode::OK,
        "text/html; charset=utf-8",
        "<!doctype html><title>lb</title>",
    )
}
