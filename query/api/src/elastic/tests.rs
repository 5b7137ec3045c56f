//! The routes over a real log store: version and probes, Grafana's multi-search, listings,
//! errors in Elasticsearch's shape, the product header on every answer.

use std::sync::Arc;

use serde_json::{json, Value};
use storage::logs::{LogRecord, LogStore};
use storage::Labels;
use tower::ServiceExt;

use super::*;

const T0: i64 = 1_700_000_000_000;

fn app(dir: &std::path::Path) -> Router {
    // The fixed 2023 timestamps must outlive retention.
    let opts = storage::logs::LogOptions {
        retention: std::time::Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let logs = Arc::new(LogStore::open(dir, opts).unwrap());
    let rec = |ms: i64, index: &str, host: &str, line: &str| LogRecord {
        ts_ns: ms * 1_000_000,
        labels: Labels::from_pairs([("index", index), ("host", host)]),
        line: line.into(),
        metadata: vec![],
    };
    logs.append(&[
        rec(T0, "web", "a", "GET / 200"),
        rec(T0 + 1500, "web", "b", "GET /x 500 error"),
        rec(T0 + 2500, "web", "a", "POST /y 500 error"),
        rec(T0 + 2600, "db", "c", "slow query"),
    ])
    .unwrap();
    logs.sync().unwrap();
    let searcher = Searcher::new(logs.clone(), elastic::SearchOptions::default());
    let refresh: Refresh = Arc::new(move || logs.sync());
    routes(
        ElasticState::new(
            searcher,
            crate::admission::tests::open_gate(),
            "node-1",
            refresh,
        ),
        Router::new(),
    )
}

async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (u16, Option<String>, String) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let product = resp
        .headers()
        .get("x-elastic-product")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, product, String::from_utf8_lossy(&body).into_owned())
}

/// The one node of `_nodes/stats`.
async fn node_stats(app: &Router) -> Value {
    let (_, v) = json_of(app, "GET", "/_nodes/stats", "").await;
    let nodes = v["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    nodes.values().next().unwrap().clone()
}

async fn json_of(app: &Router, method: &str, uri: &str, body: &str) -> (u16, Value) {
    let (status, product, text) = call(app, method, uri, body).await;
    assert_eq!(product.as_deref(), Some("Elasticsearch"), "{uri}");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{uri}: {e}: {text}")),
    )
}

#[tokio::test]
async fn version_probes_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let (s, v) = json_of(&app, "GET", "/", "").await;
    assert_eq!(s, 200);
    assert!(v["version"]["number"].as_str().unwrap().starts_with("8."));
    assert_eq!(v["version"]["build_flavor"], "default");
    let (s, p, _) = call(&app, "HEAD", "/", "").await;
    assert_eq!((s, p.as_deref()), (200, Some("Elasticsearch")));
    assert_eq!(json_of(&app, "POST", "/web/_refresh", "").await.0, 200);
    for uri in [
        "/_license",
        "/_xpack",
        "/_ilm/policy",
        "/_ilm/policy/p",
        "/_index_template",
        "/_index_template/t",
        "/_template/t",
        "/_ingest/pipeline/x",
        "/_nodes",
        "/_nodes/http",
    ] {
        assert_eq!(json_of(&app, "GET", uri, "").await.0, 200, "{uri}");
    }
    assert_eq!(
        json_of(&app, "PUT", "/_index_template/t", "{}").await.1["acknowledged"],
        true
    );
    assert_eq!(
        json_of(&app, "GET", "/_license", "").await.1["license"]["status"],
        "active"
    );
    let (s, v) = json_of(&app, "GET", "/_nope/x/y", "").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "illegal_argument_exception");
    assert_eq!(
        v["error"]["root_cause"][0]["type"],
        "illegal_argument_exception"
    );
}

/// The body Grafana's backend builds for a date histogram split by terms, and its header.
#[tokio::test]
async fn grafana_msearch() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let header =
        json!({"ignore_unavailable": true, "index": "web", "search_type": "query_then_fetch"});
    let body = json!({
        "size": 0,
        "query": {"bool": {"filter": [
            {"range": {"@timestamp": {"gte": T0, "lte": T0 + 3999, "format": "epoch_millis"}}},
            {"query_string": {"analyze_wildcard": true, "query": "error"}}
        ]}},
        "aggs": {"3": {
            "terms": {"field": "host", "size": 10, "order": {"_count": "desc"}, "min_doc_count": 1},
            "aggs": {"2": {"date_histogram": {"field": "@timestamp", "min_doc_count": 0,
                "extended_bounds": {"min": T0, "max": T0 + 3999}, "format": "epoch_millis", "fixed_interval": "1000ms"}}}
        }}
    });
    let nd = format!(
        "{header}\n{body}\n{}\n{}\n",
        json!({"index": "nope"}),
        json!({})
    );
    let (s, v) = json_of(
        &app,
        "POST",
        "/_msearch?max_concurrent_shard_requests=5",
        &nd,
    )
    .await;
    assert_eq!(s, 200);
    let r = &v["responses"][0];
    assert_eq!(r["status"], 200);
    assert_eq!(r["hits"]["total"]["value"], 2);
    let hosts = r["aggregations"]["3"]["buckets"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    let b = hosts.iter().find(|h| h["key"] == "b").unwrap();
    let times = b["2"]["buckets"].as_array().unwrap();
    assert_eq!(times.len(), 4);
    assert_eq!(times[1]["key"], T0 + 1000);
    assert_eq!(times[1]["doc_count"], 1);
    assert_eq!(times[0]["doc_count"], 0);
    assert_eq!(v["responses"][1]["status"], 404);
    assert_eq!(
        v["responses"][1]["error"]["type"],
        "index_not_found_exception"
    );
    let (s, v) = json_of(&app, "POST", "/_msearch", "{}\n").await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn search_and_listings() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let (s, v) = json_of(
        &app,
        "GET",
        "/web/_search?q=host:a&size=1&rest_total_hits_as_int=true",
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["hits"]["total"], 2);
    assert_eq!(
        v["hits"]["hits"][0]["_source"]["message"],
        "POST /y 500 error"
    );
    let (s, v) = json_of(&app, "POST", "/web/_search", "{\"query\": {\"nope\": {}}}").await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (400, Some("parsing_exception"))
    );
    assert_eq!(v["status"], 400);
    let (s, v) = json_of(&app, "POST", "/web/_search", "{").await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (400, Some("x_content_parse_exception"))
    );
    let (_, v) = json_of(&app, "GET", "/web/_mapping", "").await;
    assert_eq!(
        v["web"]["mappings"]["properties"]["@timestamp"]["type"],
        "date"
    );
    assert_eq!(
        v["web"]["mappings"]["properties"]["message"]["fields"]["keyword"]["type"],
        "keyword"
    );
    let (_, v) = json_of(&app, "GET", "/_field_caps?fields=*", "").await;
    assert_eq!(v["fields"]["host.keyword"]["keyword"]["aggregatable"], true);
    let (_, v) = json_of(&app, "GET", "/_cluster/health?wait_for_status=yellow", "").await;
    assert_eq!(v["status"], "green");
    let node = node_stats(&app).await;
    assert_eq!(node["indices"]["docs"]["count"], 4);
    let (_, v) = json_of(
        &app,
        "GET",
        "/_cat/indices?format=json&s=docs.count:desc",
        "",
    )
    .await;
    assert_eq!(v[0]["index"], "web");
    assert_eq!(v[0]["docs.count"], "3");
    let (s, _, text) = call(
        &app,
        "GET",
        "/_cat/indices?v&s=store.size:desc&h=index,docs.count",
        "",
    )
    .await;
    assert_eq!(s, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["index docs.count", "web   3", "db    1"]);
    let (s, v) = json_of(&app, "GET", "/_cat/indices?s=nope", "").await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (400, Some("illegal_argument_exception"))
    );
    let (s, v) = json_of(&app, "GET", "/nope/_mapping", "").await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (404, Some("index_not_found_exception"))
    );
}

#[tokio::test]
async fn delete_index_by_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let (s, v) = json_of(&app, "DELETE", "/nope", "").await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        v["error"]["root_cause"][0]["type"],
        "index_not_found_exception"
    );
    assert_eq!(v["error"]["index"], "nope");
    assert_eq!(v["status"], 404);
    let (s, v) = json_of(&app, "DELETE", "/nope*?allow_no_indices=false", "").await;
    assert_eq!(
        (s, v["error"]["reason"].as_str()),
        (404, Some("no such index [nope*]"))
    );
    let (s, v) = json_of(&app, "DELETE", "/nope*", "").await;
    assert_eq!((s, v), (200, json!({"acknowledged": true})));
    let (s, v) = json_of(&app, "DELETE", "/web?ignore_unavailable=maybe", "").await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (400, Some("illegal_argument_exception"))
    );
    let (s, v) = json_of(&app, "DELETE", "/w*,nope?ignore_unavailable", "").await;
    assert_eq!((s, v), (200, json!({"acknowledged": true})));
    let (_, v) = json_of(
        &app,
        "GET",
        "/_cat/indices?format=json&h=index,docs.count,docs.deleted",
        "",
    )
    .await;
    assert_eq!(
        v,
        json!([{"index": "db", "docs.count": "1", "docs.deleted": "0"}])
    );
    let (s, _) = json_of(&app, "GET", "/web/_search", "").await;
    assert_eq!(s, 404);
    let node = node_stats(&app).await;
    assert_eq!(node["indices"]["docs"], json!({"count": 1, "deleted": 0}));
    assert!(node["indices"]["store"]["size_in_bytes"].as_u64().unwrap() > 1000);
}
