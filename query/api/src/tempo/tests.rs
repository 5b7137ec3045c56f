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

/// The structural and trace-level forms Grafana's query builder and Traces Drilldown send.
#[tokio::test]
async fn traceql_search_structure_trace_intrinsics_and_pipelines() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let q = |s: &str| format!("q={}", tests_enc(s));
    let a = vec![TRACE_A.to_owned()];
    for query in [
        r#"{ name = "GET /checkout" } > { status = error }"#,
        r#"{ resource.service.name = "frontend" } >> { resource.service.name = "backend" }"#,
        r#"{ rootServiceName = "frontend" && name = "SELECT orders" }"#,
        r#"{ trace:rootName = "GET /checkout" && trace:duration = 300ms && kind = client }"#,
        r#"{ event:name = "retry" && event.attempt = 2 }"#,
        "{ nestedSetParent<0 && span.http.status_code = 500 } | count() > 0 | select(span.http.method)",
        r#"{ } | by(resource.service.name) | count() = 1 | avg(duration) > 100ms"#,
    ] {
        assert_eq!(search_ids(&app, &f, &q(query)).await, a, "{query}");
    }
    let start = (f.t0 - 120_000_000_000) / 1_000_000_000;
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/search?start={start}&end={}&{}",
            start + 200,
            q("{ nestedSetParent<0 } | select(span.http.method)")
        ),
    )
    .await;
    let span = &v["traces"][0]["spanSets"][0]["spans"][0];
    assert!(
        span["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({ "key": "span.http.method", "value": { "stringValue": "GET" } })),
        "{span}"
    );
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/search?start={start}&end={}&{}",
            start + 200,
            q("{ } | by(resource.service.name)")
        ),
    )
    .await;
    let sets = v["traces"][0]["spanSets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{v}");
    assert_eq!(
        sets[0]["attributes"],
        json!([{ "key": "by(resource.service.name)", "value": { "stringValue": "backend" } }])
    );
}

/// Tag names and values narrowed by a TraceQL `q`, as Grafana's editor asks for the span names
/// of one service.
#[tokio::test]
async fn tag_names_and_values_v2_narrowed_by_a_query() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let q = |s: &str| tests_enc(s);
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/v2/search/tag/name/values?q={}",
            q(r#"{resource.service.name="backend"}"#)
        ),
    )
    .await;
    assert_eq!(
        v["tagValues"],
        json!([{ "type": "string", "value": "SELECT orders" }])
    );
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/v2/search/tag/span.http.status_code/values?q={}",
            q(r#"{name="GET /health"}"#)
        ),
    )
    .await;
    assert_eq!(v["tagValues"], json!([{ "type": "int", "value": "200" }]));
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/v2/search/tags?scope=span&q={}",
            q(r#"{resource.service.name="frontend"}"#)
        ),
    )
    .await;
    assert_eq!(
        v,
        json!({ "scopes": [{ "name": "span", "tags": ["http.method", "http.status_code"] }] })
    );
    let v = get_json(&app, "/tempo/api/v2/search/tags?scope=intrinsic").await;
    let intrinsics = v["scopes"][0]["tags"].as_array().unwrap();
    for name in [
        "rootServiceName",
        "trace:rootService",
        "traceDuration",
        "span:parentID",
    ] {
        assert!(intrinsics.contains(&json!(name)), "{name}: {v}");
    }
    // `{}` narrows nothing: the catalog answers.
    let v = get_json(
        &app,
        &format!("/tempo/api/v2/search/tag/name/values?q={}", q("{}")),
    )
    .await;
    assert_eq!(v["tagValues"].as_array().unwrap().len(), 3);
}

/// Grafana's Tempo data source (pkg/tsdb/tempo `createMetricsQuery`): `GET
/// /api/metrics/query_range` with `q`, `start`, `end` (seconds), `step` and `exemplars`, the
/// answer decoded by `jsonpb` into `tempopb.QueryRangeResponse`; `/api/metrics/query` for
/// instant queries into `QueryInstantResponse`, which rejects unknown fields.
#[tokio::test]
async fn traceql_metrics_in_the_shapes_grafana_decodes() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let (t0s, t0ms) = (f.t0 / 1_000_000_000, (f.t0 / 1_000_000) as i64);
    let range_with = |q: &str, step: &str| {
        format!(
            "/tempo/api/metrics/query_range?end={}&exemplars=10&q={}&start={}&step={step}",
            t0s + 60,
            tests_enc(q),
            t0s - 300
        )
    };
    let range = |q: &str, _: &str| range_with(q, "60s");
    let v = get_json(
        &app,
        &range(
            r#"{ resource.service.name = "frontend" } | rate() by (span.http.status_code)"#,
            "",
        ),
    )
    .await;
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), ["metrics", "series"]);
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{v}");
    let with_code = |code: &str| {
        series
            .iter()
            .find(|s| {
                s["labels"]
                    == json!([{ "key": "span.http.status_code", "value": { "intValue": code } }])
            })
            .unwrap_or_else(|| panic!("no series for {code}: {v}"))
    };
    let s500 = with_code("500");
    assert_eq!(keys(s500), ["exemplars", "labels", "samples"]);
    // One span per minute: 1/60 in the step that holds it, 0 in the others.
    let samples = s500["samples"].as_array().unwrap();
    let hits: Vec<_> = samples
        .iter()
        .filter(|s| s["value"].as_f64().unwrap() > 0.0)
        .collect();
    assert_eq!(hits.len(), 1, "{samples:?}");
    assert!((hits[0]["value"].as_f64().unwrap() - 1.0 / 60.0).abs() < 1e-12);
    let ts: i64 = hits[0]["timestampMs"].as_str().unwrap().parse().unwrap();
    assert!(ts >= t0ms && ts < t0ms + 60_000, "{ts} vs {t0ms}");
    let exemplar = &s500["exemplars"][0];
    assert_eq!(
        exemplar["labels"][0],
        json!({ "key": "trace:id", "value": { "stringValue": TRACE_A } })
    );
    assert_eq!(exemplar["timestampMs"], json!(t0ms.to_string()));
    assert_eq!(exemplar["value"], hits[0]["value"]);
    assert_eq!(v["metrics"]["inspectedSpans"], "2");
    let bytes: u64 = v["metrics"]["inspectedBytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes > 0, "{v}");
    assert_eq!(v["metrics"]["totalJobs"], 1);
    with_code("200");

    // Traces Drilldown's panels: root-span rate, errors (none here), duration quantiles,
    // the heatmap.
    let v = get_json(
        &app,
        &range(
            "{nestedSetParent<0 && true} | rate() by(resource.service.name)",
            "",
        ),
    )
    .await;
    assert_eq!(v["series"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["series"][0]["labels"],
        json!([{ "key": "resource.service.name", "value": { "stringValue": "frontend" } }])
    );
    let v = get_json(
        &app,
        &range("{nestedSetParent<0 && true && status=error} | rate() ", ""),
    )
    .await;
    assert_eq!(v["series"], json!([]));
    let v = get_json(
        &app,
        &range(
            "{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9) ",
            "",
        ),
    )
    .await;
    assert_eq!(
        v["series"][0]["labels"],
        json!([{ "key": "p", "value": { "doubleValue": 0.9 } }])
    );
    let v = get_json(
        &app,
        &range(
            "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)",
            "",
        ),
    )
    .await;
    let buckets: Vec<&Value> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["labels"][0]["value"]["doubleValue"])
        .collect();
    // 2 ms and 300 ms round up to 2^21 ns and 2^29 ns.
    assert!(buckets.contains(&&json!(0.002097152)), "{v}");
    assert!(buckets.contains(&&json!(0.536870912)), "{v}");

    // Instant: one value per series over the whole window, no unknown fields.
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/metrics/query?end={}&q={}&start={}",
            t0s + 60,
            tests_enc("{ } | count_over_time() by (resource.service.name)"),
            t0s - 300
        ),
    )
    .await;
    let mut got: Vec<(String, f64)> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(keys(s), ["labels", "value"]);
            (
                s["labels"][0]["value"]["stringValue"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, vec![("backend".into(), 1.0), ("frontend".into(), 2.0)]);

    // Errors answer 400 in plain text, as Tempo's do.
    for (uri, says) in [
        (range("{ } | rate(", ""), "invalid TraceQL query"),
        (range("{ }", ""), "not a metrics query"),
        (range_with("{ } | rate()", "1ms"), "too small"),
        (
            "/tempo/api/metrics/query_range?q=%7B%7D%20%7C%20rate()&start=20&end=10".into(),
            "end must be greater than start",
        ),
        ("/tempo/api/metrics/query_range".into(), "query is required"),
    ] {
        let (st, body) = get(&app, &uri, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            String::from_utf8_lossy(&body).contains(says),
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    // A scan budget that runs out says so.
    let limited = routes(
        f.store.clone(),
        TraceLimits {
            max_spans_inspected: 1,
            ..TraceLimits::default()
        },
        open_gate(),
    );
    let v = get_json(&limited, &range("{ } | rate()", "")).await;
    assert_eq!(v["status"], "PARTIAL");
    assert!(v["message"].as_str().unwrap().contains("1 spans"), "{v}");
    assert_eq!(
        (&v["metrics"]["completedJobs"], &v["metrics"]["totalJobs"]),
        (&json!(1), &json!(2)),
        "{v}"
    );
}

/// `compare()` as Traces Drilldown's Comparison tab asks for it (`{…} | compare({…}, 10)`,
/// `step` the whole range, no `exemplars`): series labelled `__meta_type` then the attribute,
/// totals with the attribute's value `"nil"` (Tempo's nil static), exemplars on the totals
/// with the value `"NaN"`, as `jsonpb` writes a NaN double.
#[tokio::test]
async fn compare_in_the_shape_grafana_decodes() {
    let f = fixture();
    let app = routes(f.store.clone(), TraceLimits::default(), open_gate());
    let t0s = f.t0 / 1_000_000_000;
    let (start, end) = (t0s - 300, t0s + 60);
    let v = get_json(
        &app,
        &format!(
            "/tempo/api/metrics/query_range?end={end}&q={}&start={start}&step={}s",
            tests_enc("{true && true} | compare({status = error}, 10)"),
            end - start
        ),
    )
    .await;
    let series = v["series"].as_array().unwrap();
    let find = |kind: &str, key: &str, value: Value| {
        series
            .iter()
            .find(|s| {
                s["labels"]
                    == json!([
                        { "key": "__meta_type", "value": { "stringValue": kind } },
                        { "key": key, "value": value },
                    ])
            })
            .unwrap_or_else(|| panic!("no {kind} {key}: {v}"))
    };
    let sum = |s: &Value| -> f64 {
        s["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["value"].as_f64().unwrap())
            .sum()
    };
    // The backend span is the one error: the selection.
    let s = find(
        "selection",
        "statusMessage",
        json!({ "stringValue": "deadlock" }),
    );
    assert_eq!(sum(s), 1.0);
    assert!(s.get("exemplars").is_none());
    let root = json!({ "stringValue": "GET /checkout" });
    assert_eq!(sum(find("selection", "rootName", root.clone())), 1.0);
    assert_eq!(sum(find("baseline", "rootName", root)), 1.0);
    let code = |c: &str| json!({ "intValue": c });
    assert_eq!(
        sum(find("baseline", "span.http.status_code", code("500"))),
        1.0
    );
    assert_eq!(
        sum(find("baseline", "span.http.status_code", code("200"))),
        1.0
    );
    let nil = json!({ "stringValue": "nil" });
    assert_eq!(sum(find("baseline_total", "name", nil.clone())), 2.0);
    let total = find("selection_total", "resource.host.name", nil);
    assert_eq!(sum(total), 1.0);
    assert_eq!(total["exemplars"][0]["value"], "NaN");
    assert_eq!(
        total["exemplars"][0]["labels"][0],
        json!({ "key": "trace:id", "value": { "stringValue": TRACE_A } })
    );
    // No `by()` or second stage after compare(), and its arguments are checked.
    let (st, body) = get(
        &app,
        &format!(
            "/tempo/api/metrics/query_range?q={}",
            tests_enc("{} | compare({}, 0)")
        ),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("between 1 and 1000"));
}
