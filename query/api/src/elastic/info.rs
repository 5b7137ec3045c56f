//! The version document (`GET /`) and the endpoints shippers probe before sending: minimal,
//! valid answers that let Beats, Logstash, Fluent Bit, Fluentd, Vector and the official
//! clients go on to `_bulk`. Templates, ILM policies and pipelines are accepted and not kept:
//! novamon's log store has no per-index settings for them to change.

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{respond, ElasticState};

/// The cluster's name in every answer that has one.
pub(super) const CLUSTER_NAME: &str = "novamon";
/// A fixed cluster and node id: one node, one cluster, the same across restarts.
pub(super) const CLUSTER_UUID: &str = "bm92YW1vbi1jbHVzdGVy";
pub(super) const NODE_ID: &str = "bm92YW1vbi1ub2RlMDAw";

pub(super) async fn root(State(s): State<ElasticState>) -> Response {
    respond(Ok(json!({
        "name": &*s.node_name,
        "cluster_name": CLUSTER_NAME,
        "cluster_uuid": CLUSTER_UUID,
        "version": {
            "number": elastic::VERSION,
            "build_flavor": "default",
            "build_type": "tar",
            "build_hash": "novamon",
            "build_date": "2023-10-11T22:04:35.506990650Z",
            "build_snapshot": false,
            "lucene_version": elastic::LUCENE_VERSION,
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    })))
}

pub(super) async fn license() -> Response {
    respond(Ok(json!({"license": license_body()})))
}

fn license_body() -> Value {
    json!({
        "status": "active",
        "uid": "00000000-0000-0000-0000-000000000000",
        "type": "basic",
        "issue_date": "2023-01-01T00:00:00.000Z",
        "issue_date_in_millis": 1_672_531_200_000i64,
        "max_nodes": 1000,
        "max_resource_units": null,
        "issued_to": CLUSTER_NAME,
        "issuer": "elasticsearch",
        "start_date_in_millis": -1,
    })
}

pub(super) async fn xpack() -> Response {
    respond(Ok(json!({
        "build": {"hash": "novamon", "date": "2023-10-11T22:04:35.506990650Z"},
        "license": {"uid": "00000000-0000-0000-0000-000000000000", "type": "basic", "mode": "basic", "status": "active"},
        "features": {},
        "tagline": "You know, for X",
    })))
}

pub(super) async fn empty_object() -> Response {
    respond(Ok(json!({})))
}

pub(super) async fn acknowledged() -> Response {
    respond(Ok(json!({"acknowledged": true})))
}

pub(super) async fn create_index(Path(index): Path<String>) -> Response {
    respond(
        elastic::index::validate_name(&index)
            .map(|()| json!({"acknowledged": true, "shards_acknowledged": true, "index": index})),
    )
}

/// Any ILM policy exists (with no phases): shippers that check for theirs then skip
/// creating it.
pub(super) async fn ilm_policy(Path(name): Path<String>) -> Response {
    respond(Ok(json!({ name: {
        "version": 1,
        "modified_date": "2023-01-01T00:00:00.000Z",
        "policy": {"phases": {}},
    }})))
}

/// Template listings: none kept, every named one "exists" with an empty body (shippers
/// that check for their template then skip installing it).
pub(super) async fn templates(name: Option<Path<String>>) -> Response {
    respond(Ok(match name {
        None => json!({"index_templates": []}),
        Some(Path(name)) => json!({
            "index_templates": [{"name": name, "index_template": {
                "index_patterns": ["*"], "template": {}, "composed_of": [],
            }}],
            "component_templates": [{"name": name, "component_template": {"template": {}}}],
            name: {"order": 0, "index_patterns": ["*"], "settings": {}, "mappings": {}, "aliases": {}},
        }),
    }))
}

pub(super) async fn pipeline(Path(id): Path<String>) -> Response {
    respond(Ok(json!({ id: {"description": "", "processors": []} })))
}

/// `_nodes` (and `_nodes/http`, `_nodes/_local`…): the one node.
pub(super) async fn nodes(State(s): State<ElasticState>) -> Response {
    respond(Ok(json!({
        "_nodes": {"total": 1, "successful": 1, "failed": 0},
        "cluster_name": CLUSTER_NAME,
        "nodes": { NODE_ID: {
            "name": &*s.node_name,
            "version": elastic::VERSION,
            "build_flavor": "default",
            "build_type": "tar",
            "roles": ["data", "ingest", "master"],
            "attributes": {},
        }},
    })))
}
