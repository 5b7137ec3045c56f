use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::admission::tests::open_gate;
use crate::trace_fixture::tests_enc;
use crate::trace_fixture::{fixture, TRACE_A, TRACE_B};

async fn get(app: &Router, uri: &str, accept: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::get(uri);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

async fn get_json(app: &Router, uri: &str) -> Value {
    let (st, body) = get(app, uri, None).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn trace_by_id_as_otlp_json_and_protobuf() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let v = get_json(&app, &format!("/tempo/api/traces/{TRACE_A}")).await;
    let batches = v["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2, "one batch per resource");
    let names: Vec<&str> = batches
        .iter()
        .flat_map(|b| b["scopeSpans"][0]["spans"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"SELECT orders"));
    assert_eq!(batches[0]["scopeSpans"][0]["spans"][0]["traceId"], TRACE_A);

    let v = get_json(&app, &format!("/tempo/api/v2/traces/{TRACE_A}")).await;
    assert_eq!(v["trace"]["resourceSpans"].as_array().unwrap().len(), 2);

    let (st, body) = get(
        &app,
        &format!("/tempo/api/traces/{TRACE_A}"),
        Some("application/protobuf"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let t = TempoTrace::decode(&body[..]).unwrap();
    assert_eq!(
        t.batches
            .iter()
            .map(|b| b.scope_spans[0].spans.len())
            .sum::<usize>(),
        2
    );
    let (_, body) = get(
        &app,
        &format!("/tempo/api/v2/traces/{TRACE_A}"),
        Some("application/protobuf"),
    )
    .await;
    assert_eq!(
        TraceByIdResponse::decode(&body[..])
            .unwrap()
            .trace
            .unwrap()
            .batches
            .len(),
        2
    );

    let (st, _) = get(&app, "/tempo/api/traces/abc123", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = get(&app, "/tempo/api/traces/zz", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

async fn search_ids(app: &Router, f: &crate::trace_fixture::Fixture, params: &str) -> Vec<String> {
    let start = (f.t0 - 120_000_000_000) / 1_000_000_000;
    let end = f.t0 / 1_000_000_000 + 10;
    let v = get_json(
        app,
        &format!("/tempo/api/search?start={start}&end={end}&{params}"),
    )
    .await;
    v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn traceql_search_common_forms() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let q = |s: &str| format!("q={}", tests_enc(s));
    let (a, b) = (TRACE_A.to_owned(), TRACE_B.to_owned());
    assert_eq!(
        search_ids(&app, &f, &q(r#"{ resource.service.name = "frontend" }"#)).await,
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        search_ids(
            &app,
            &f,
            &q(r#"{ resource.service.name = "frontend" && span.http.status_code >= 500 }"#)
        )
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        search_ids(&app, &f, &q("{ duration > 100ms }")).await,
        vec![a.clone()]
    );
    assert_eq!(
        search_ids(&app, &f, &q("{ status = error }")).await,
        vec![a.clone()]
    );
    assert_eq!(
        search_ids(&app, &f, &q(r#"{ name =~ "GET /h.*" }"#)).await,
        vec![b.clone()]
    );
    assert_eq!(
        search_ids(
            &app,
            &f,
            &q(r#"{ name = "GET /health" } || { status = error }"#)
        )
        .await,
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        search_ids(
            &app,
            &f,
            &q(r#"{ resource.service.name = "backend" } && { span.http.method = "GET" }"#)
        )
        .await,
        vec![a.clone()]
    );
    assert_eq!(
        search_ids(
            &app,
            &f,
            &q(r#"{ resource.service.name = "backend" } && { name = "GET /health" }"#)
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        search_ids(&app, &f, &format!("{}&limit=1", q("{}"))).await,
        vec![a.clone()]
    );

    let start = (f.t0 - 120_000_000_000) / 1_000_000_000;
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/search?start={start}&end={}&{}",
            start + 200,
            q("{ status = error }")
        ),
    )
    .await;
    let t = &v["traces"][0];
    assert_eq!(t["rootServiceName"], "frontend");
    assert_eq!(t["rootTraceName"], "GET /checkout");
    assert_eq!(t["durationMs"], 300);
    assert_eq!(t["startTimeUnixNano"], f.t0.to_string());
    assert_eq!(t["spanSet"]["matched"], 1);
    assert_eq!(t["spanSet"]["spans"][0]["name"], "SELECT orders");
    assert_eq!(t["spanSet"]["spans"][0]["durationNanos"], "120000000");
    assert_eq!(t["spanSets"][0], t["spanSet"]);

    let (st, body) = get(&app, &format!("/tempo/api/search?{}", q("{ .a = ")), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).starts_with("invalid TraceQL query"));
}

#[tokio::test]
async fn tag_search_and_durations() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    assert_eq!(
        search_ids(
            &app,
            &f,
            &format!("tags={}", tests_enc("service.name=backend"))
        )
        .await,
        vec![TRACE_A.to_owned()]
    );
    assert_eq!(
        search_ids(
            &app,
            &f,
            &format!("tags={}&maxDuration=5ms", tests_enc("http.status_code=200"))
        )
        .await,
        vec![TRACE_B.to_owned()]
    );
    assert_eq!(
        search_ids(&app, &f, "minDuration=1s").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn tag_names_and_values_v1_and_v2() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let v = get_json(&app, "/tempo/api/search/tags").await;
    assert_eq!(
        v["tagNames"],
        json!([
            "host.name",
            "http.method",
            "http.status_code",
            "service.name"
        ])
    );
    let v = get_json(&app, "/tempo/api/v2/search/tags?scope=resource").await;
    assert_eq!(
        v,
        json!({ "scopes": [{ "name": "resource", "tags": ["host.name", "service.name"] }] })
    );
    let v = get_json(&app, "/tempo/api/v2/search/tags").await;
    assert_eq!(v["scopes"].as_array().unwrap().len(), 3);
    let v = get_json(&app, "/tempo/api/search/tag/service.name/values").await;
    assert_eq!(v["tagValues"], json!(["backend", "frontend"]));
    let v = get_json(
        &app,
        "/tempo/api/v2/search/tag/resource.service.name/values",
    )
    .await;
    assert_eq!(
        v["tagValues"],
        json!([{ "type": "string", "value": "backend" }, { "type": "string", "value": "frontend" }])
    );
    let v = get_json(
        &app,
        "/tempo/api/v2/search/tag/span.http.status_code/values",
    )
    .await;
    assert_eq!(
        v["tagValues"],
        json!([{ "type": "int", "value": "200" }, { "type": "int", "value": "500" }])
    );
    let v = get_json(&app, "/tempo/api/v2/search/tag/status/values").await;
    assert_eq!(
        v["tagValues"][0],
        json!({ "type": "keyword", "value": "error" })
    );
    let v = get_json(&app, "/tempo/api/v2/search/tag/name/values").await;
    assert_eq!(v["tagValues"].as_array().unwrap().len(), 3);
    let (st, body) = get(&app, "/tempo/api/echo", None).await;
    assert_eq!((st, body), (StatusCode::OK, b"echo".to_vec()));
}
