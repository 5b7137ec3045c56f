use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::admission::tests::open_gate;
use crate::trace_fixture::{fixture, TRACE_A, TRACE_B};

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body))),
    )
}

#[tokio::test]
async fn services_and_operations() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate(), None);
    let (st, v) = get_json(&app, "/jaeger/api/services").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v,
        json!({ "data": ["backend", "frontend"], "total": 2, "limit": 0, "offset": 0, "errors": null })
    );
    let (_, v) = get_json(&app, "/jaeger/api/services/frontend/operations").await;
    assert_eq!(v["data"], json!(["GET /checkout", "GET /health"]));
    let (_, v) = get_json(
        &app,
        "/jaeger/api/operations?service=backend&spanKind=client",
    )
    .await;
    assert_eq!(
        v["data"],
        json!([{ "name": "SELECT orders", "spanKind": "client" }])
    );
    let (_, v) = get_json(
        &app,
        "/jaeger/api/operations?service=backend&spanKind=server",
    )
    .await;
    assert_eq!(v["data"], json!([]));
    let (st, v) = get_json(&app, "/jaeger/api/operations").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["errors"][0]["msg"], "parameter 'service' is required");
}

#[tokio::test]
async fn trace_by_id_has_processes_references_typed_tags_and_logs() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate(), None);
    let (st, v) = get_json(&app, &format!("/jaeger/api/traces/{TRACE_A}")).await;
    assert_eq!(st, StatusCode::OK);
    let trace = &v["data"][0];
    assert_eq!(trace["traceID"], TRACE_A);
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let db = spans
        .iter()
        .find(|s| s["operationName"] == "SELECT orders")
        .unwrap();
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "GET /checkout")
        .unwrap();
    assert_eq!(
        db["references"],
        json!([{ "refType": "CHILD_OF", "traceID": TRACE_A, "spanID": "0101010101010101" }])
    );
    assert_eq!(db["duration"], 120_000);
    assert_eq!(db["startTime"], (f.t0 + 10_000_000) / 1000);
    let tags = db["tags"].as_array().unwrap();
    assert!(
        tags.contains(&json!({ "key": "error", "type": "bool", "value": true })),
        "{tags:?}"
    );
    assert!(tags.contains(&json!({ "key": "span.kind", "type": "string", "value": "client" })));
    assert!(tags.contains(
        &json!({ "key": "otel.status_description", "type": "string", "value": "deadlock" })
    ));
    assert_eq!(
        db["logs"],
        json!([{ "timestamp": (f.t0 + 20_000_000) / 1000, "fields": [
        { "key": "event", "type": "string", "value": "retry" }, { "key": "attempt", "type": "int64", "value": 2 }] }])
    );
    assert!(root["tags"]
        .as_array()
        .unwrap()
        .contains(&json!({ "key": "http.status_code", "type": "int64", "value": 500 })));
    let db_proc = &trace["processes"][db["processID"].as_str().unwrap()];
    assert_eq!(
        db_proc,
        &json!({ "serviceName": "backend", "tags": [{ "key": "host.name", "type": "string", "value": "node-1" }] })
    );
    assert_ne!(db["processID"], root["processID"]);

    let (_, v) = get_json(&app, "/jaeger/api/traces/beef").await;
    assert_eq!(
        v["data"][0]["traceID"], "000000000000beef",
        "short ids: Jaeger drops a zero high half"
    );
    assert_eq!(TRACE_B.len(), 32);
    let (st, v) = get_json(&app, "/jaeger/api/traces/123456789abcdef").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["errors"][0]["msg"], "trace not found");
    let (st, _) = get_json(&app, "/jaeger/api/traces/nothex").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn search_by_service_operation_tags_and_duration() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate(), None);
    let window = format!(
        "start={}&end={}",
        (f.t0 - 120_000_000_000) / 1000,
        (f.t0 + 1_000_000_000) / 1000
    );
    let ids = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&{window}"),
    )
    .await;
    assert_eq!(
        ids(&v),
        vec![TRACE_A.to_owned(), "000000000000beef".to_owned()],
        "newest first"
    );
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&limit=1&{window}"),
    )
    .await;
    assert_eq!(ids(&v), vec![TRACE_A]);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&operation=GET%20%2Fhealth&{window}"),
    )
    .await;
    assert_eq!(ids(&v), vec!["000000000000beef"]);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&minDuration=100ms&{window}"),
    )
    .await;
    assert_eq!(ids(&v), vec![TRACE_A]);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&maxDuration=10ms&{window}"),
    )
    .await;
    assert_eq!(ids(&v), vec!["000000000000beef"]);
    let tags = crate::trace_fixture::tests_enc(r#"{"error":"true"}"#);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=backend&tags={tags}&{window}"),
    )
    .await;
    assert_eq!(ids(&v), vec![TRACE_A]);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&tags=http.status_code%3A200&{window}"),
    )
    .await;
    assert_eq!(ids(&v), vec!["000000000000beef"]);
    let (_, v) = get_json(&app, "/jaeger/api/traces?service=frontend&lookback=1s").await;
    assert_eq!(
        ids(&v),
        Vec::<String>::new(),
        "both traces are older than the look-back"
    );
    let (st, _) = get_json(&app, "/jaeger/api/traces?service=frontend&minDuration=soon").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = get_json(&app, "/jaeger/api/traces").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["data"], Value::Null);
}

#[tokio::test]
async fn dependencies_link_parent_and_child_services() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate(), None);
    let (_, v) = get_json(&app, "/jaeger/api/dependencies?lookback=3600000").await;
    assert_eq!(
        v["data"],
        json!([{ "parent": "frontend", "child": "backend", "callCount": 1 }])
    );
}

#[tokio::test]
async fn search_and_dependencies_stop_at_the_scan_budget() {
    let f = fixture();
    let window = format!(
        "start={}&end={}",
        (f.t0 - 120_000_000_000) / 1000,
        (f.t0 + 1_000_000_000) / 1000
    );
    let one_span = TraceLimits {
        max_spans_inspected: 1,
        ..TraceLimits::default()
    };
    let app = routes(f.store.clone(), one_span, open_gate(), None);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&{window}"),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["data"][0]["traceID"], TRACE_A);
    // A partial result says so beside the traces it found.
    assert_eq!(v["errors"][0]["code"], 206, "{v}");
    let msg = v["errors"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("after reading 1 spans"), "{msg}");
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate(), None);
    let (_, v) = get_json(
        &app,
        &format!("/jaeger/api/traces?service=frontend&{window}"),
    )
    .await;
    assert_eq!(v["errors"], Value::Null, "{v}");
    let none = TraceLimits {
        max_spans_inspected: 0,
        ..TraceLimits::default()
    };
    let app = routes(f.store.clone(), none, open_gate(), None);
    let (_, v) = get_json(&app, "/jaeger/api/dependencies?lookback=3600000").await;
    assert_eq!(v["data"], json!([]));
}

/// With the metric store, dependencies are the service-graph counters' increase over the
/// window (the span walk would find one call); without counters in the window, the spans.
#[tokio::test]
async fn dependencies_come_from_the_service_graph_counters_when_there_are_any() {
    use storage::{AppendMode, Appendable, Labels, Sample, SeriesBatch};
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Arc::new(storage::Tsdb::open(dir.path(), Default::default()).unwrap());
    let end_ms = (f.t0 / 1_000_000) as i64 + 1000;
    let counter = |client: &str, server: &str, points: &[(i64, f64)]| SeriesBatch {
        labels: Labels::from_pairs([
            ("__name__", "traces_service_graph_request_total"),
            ("client", client),
            ("server", server),
            ("connection_type", ""),
        ]),
        samples: points
            .iter()
            .map(|&(ago, v)| Sample { t: end_ms - ago, v })
            .collect(),
        histograms: Vec::new(),
    };
    let mut app = tsdb.appender(AppendMode::AllOrNothing);
    // 40 before the last hour, 100 at its end: 60 calls in the hour.
    app.append(counter(
        "frontend",
        "backend",
        &[(3_700_000, 40.0), (1_800_000, 70.0), (0, 100.0)],
    ));
    // Only before the hour: no call in it.
    app.append(counter("user", "frontend", &[(3_650_000, 5.0)]));
    app.commit().unwrap();
    let metrics: Arc<dyn Querier> = tsdb;
    let app = routes(
        f.store.clone(),
        TraceLimits::default(),
        open_gate(),
        Some(metrics),
    );
    let hour = format!("/jaeger/api/dependencies?endTs={end_ms}&lookback=3600000");
    let (_, v) = get_json(&app, &hour).await;
    assert_eq!(
        v["data"],
        json!([{ "parent": "frontend", "child": "backend", "callCount": 60 }]),
        "{v}"
    );
    // A window before the counters: the spans answer.
    let (_, v) = get_json(
        &app,
        &format!(
            "/jaeger/api/dependencies?endTs={}&lookback=3600000",
            end_ms - 7_000_000
        ),
    )
    .await;
    assert_eq!(v["data"], json!([]), "{v}");
}

#[test]
fn tags_seek_the_index_only_where_it_holds_every_value_jaeger_would_match() {
    let any = |seek: Option<Seek>| match seek {
        Some(Seek::Any(members)) => members.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(any(tag_seek("http.status_code", "500")), 3);
    assert_eq!(any(tag_seek("order.id", "o-7")), 3);
    assert_eq!(any(tag_seek("error.kind", "true")), 3);
    // `event` is also an event's name.
    assert_eq!(any(tag_seek("event", "exception")), 4);
    // Doubles (Jaeger's `1.0`, the index's `1`), bytes as hex, arrays and maps as JSON, no
    // value as "", and the tags the OTLP translation adds are not in the index.
    for (k, v) in [
        ("x", "1.0"),
        ("x", "2.5e-7"),
        ("x", "null"),
        ("x", "0a1b"),
        ("x", "[1,2]"),
        ("x", "{\"a\":1}"),
        ("x", ""),
        ("span.kind", "server"),
        ("error", "true"),
        ("otel.status_code", "ERROR"),
    ] {
        assert_eq!(tag_seek(k, v), None, "{k}={v}");
    }
}
