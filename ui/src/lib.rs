//! The embedded web UI, compiled into the binary so an edge box needs no files at run time.
//! Owns the pages under `/` and `/ui/`, and `/graph` (Prometheus's links into its own UI). It
//! reads data through the public HTTP APIs, like Grafana, except for the few figures no API
//! exposes (store sizes and counts, the `remote_write` and `forward` queues), which the server hands in through [`StatusSource`] and
//! [`routes`] serves at `/ui/api/status`.

mod assets;
mod links;
mod status;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

pub use status::{Count, Forward, RemoteWrite, StatusSource, Store};

/// The UI's pages, assets and status endpoint. Compresses the assets once, here.
pub fn routes(status: Arc<dyn StatusSource>) -> Router {
    let assets = Arc::new(assets::Assets::load());
    Router::new()
        .route("/", get(assets::index).with_state(assets.clone()))
        .route("/ui/{file}", get(assets::file).with_state(assets))
        .route("/ui/api/status", get(status::serve).with_state(status))
        .route("/graph", get(links::graph))
}
