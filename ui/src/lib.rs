//! The embedded web UI, compiled into the binary so an edge box needs no files at run time.
//! Owns the pages under `/`; it reads data only through the public HTTP APIs, like Grafana.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/index.html");

pub fn routes() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}
