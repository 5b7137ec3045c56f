//! Elasticsearch's REST API over the log store, as far as shippers, Grafana's Elasticsearch
//! data source and runbooks use it: the probes shippers make before sending (`GET /`,
//! `_license`, `_xpack`, `_ilm/policy`, `_index_template`, `_template`, `_ingest/pipeline`,
//! `_nodes`, index existence), search (`_search`, `_msearch`, `_mapping`, `_field_caps`)
//! and operations (`_cat/indices`, `_cluster/health`, `_nodes/stats`, `DELETE /<index>`).
//! Routes are relative to the API's mount point (a path prefix on the HTTP port, or the root of its own
//! listener); `_bulk` comes from `ingest::elastic` and is merged in by [`routes`], so every
//! answer, bulk included, carries `X-Elastic-Product: Elasticsearch` (the official clients
//! refuse servers without it). Errors become Elasticsearch's error body in one place,
//! [`respond`]; what a search means is `elastic`'s.
//!
//! - `info`: the version document and the probe endpoints' minimal, valid answers.
//! - `search`: search, multi-search, mappings, field capabilities and the listings.

mod info;
mod search;

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use elastic::{EsError, Searcher};
use serde_json::Value;

use crate::admission::QueryGate;

/// Makes everything appended so far searchable (`_refresh`): the log store's `sync`.
pub type Refresh = Arc<dyn Fn() -> Result<(), storage::StorageError> + Send + Sync>;

/// What the routes share. Cheap to clone.
#[derive(Clone)]
pub struct ElasticState {
    searcher: Arc<Searcher>,
    gate: QueryGate,
    /// The node's name in `_nodes` and `GET /` (the host's name, as Elasticsearch's default).
    node_name: Arc<str>,
    refresh: Refresh,
}

impl ElasticState {
    pub fn new(
        searcher: Searcher,
        gate: QueryGate,
        node_name: &str,
        refresh: Refresh,
    ) -> ElasticState {
        ElasticState {
            searcher: Arc::new(searcher),
            gate,
            node_name: node_name.into(),
            refresh,
        }
    }
}

const PRODUCT: HeaderName = HeaderName::from_static("x-elastic-product");

/// The API's routes with `bulk` (the ingest side's `_bulk` routes) merged in.
pub fn routes(state: ElasticState, bulk: Router) -> Router {
    let any_template = get(info::templates)
        .put(info::acknowledged)
        .post(info::acknowledged)
        .delete(info::acknowledged);
    Router::new()
        .route("/", get(info::root))
        .route("/_license", get(info::license))
        .route("/_xpack", get(info::xpack))
        .route("/_ilm/policy", get(info::empty_object))
        .route(
            "/_ilm/policy/{name}",
            get(info::ilm_policy).put(info::acknowledged),
        )
        .route("/_index_template", any_template.clone())
        .route("/_index_template/{name}", any_template.clone())
        .route("/_template", any_template.clone())
        .route("/_template/{name}", any_template.clone())
        .route("/_component_template", any_template.clone())
        .route("/_component_template/{name}", any_template)
        .route("/_ingest/pipeline", get(info::empty_object))
        .route(
            "/_ingest/pipeline/{id}",
            get(info::pipeline).put(info::acknowledged),
        )
        .route("/_nodes", get(info::nodes))
        .route("/_nodes/stats", get(search::nodes_stats))
        .route("/_nodes/{selector}", get(info::nodes))
        .route("/_nodes/{selector}/stats", get(search::nodes_stats))
        .route("/_cluster/health", get(search::cluster_health))
        .route("/_cluster/health/{index}", get(search::cluster_health))
        .route("/_search", get(search::search_all).post(search::search_all))
        .route(
            "/{index}/_search",
            get(search::search_index).post(search::search_index),
        )
        .route(
            "/_msearch",
            get(search::msearch_all).post(search::msearch_all),
        )
        .route(
            "/{index}/_msearch",
            get(search::msearch_index).post(search::msearch_index),
        )
        .route("/_mapping", get(search::mapping_all))
        .route("/{index}/_mapping", get(search::mapping_index))
        .route(
            "/_field_caps",
            get(search::field_caps_all).post(search::field_caps_all),
        )
        .route(
            "/{index}/_field_caps",
            get(search::field_caps_index).post(search::field_caps_index),
        )
        .route("/_cat/indices", get(search::cat_indices_all))
        .route("/_cat/indices/{index}", get(search::cat_indices_index))
        .route(
            "/{index}",
            get(search::index_info)
                .put(info::create_index)
                .delete(search::delete_index),
        )
        .route("/_refresh", post(search::refresh).get(search::refresh))
        .route(
            "/{index}/_refresh",
            post(search::refresh).get(search::refresh),
        )
        .with_state(state)
        .merge(bulk)
        .fallback(no_handler)
        .layer(axum::middleware::map_response(product_header))
}

async fn product_header(mut r: Response) -> Response {
    r.headers_mut()
        .insert(PRODUCT, HeaderValue::from_static("Elasticsearch"));
    r
}

async fn no_handler(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    respond(Err(EsError::IllegalArgument(format!(
        "no handler found for uri [{}] and method [{method}]",
        uri.path()
    ))))
}

/// The one place an answer of this API becomes a response: JSON, or Elasticsearch's error
/// body with its status.
pub(crate) fn respond(result: Result<Value, EsError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => {
            if e.status() >= 500 {
                tracing::warn!("elasticsearch API: {e}");
            }
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(e.body())).into_response()
        }
    }
}

/// Runs a store read on the blocking pool once the query gate admits it.
async fn blocking<T, F>(state: &ElasticState, f: F) -> Result<T, EsError>
where
    T: Send + 'static,
    F: FnOnce(&Searcher) -> Result<T, EsError> + Send + 'static,
{
    let _slot = state
        .gate
        .admit(None)
        .await
        .map_err(|e| EsError::Rejected(e.to_string()))?;
    let searcher = state.searcher.clone();
    tokio::task::spawn_blocking(move || f(&searcher))
        .await
        .map_err(|e| EsError::Internal(format!("search task failed: {e}")))?
}

#[cfg(test)]
mod tests;
