use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use storage::traces::{TraceStore, TraceStoreOptions};
use storage::{MatchOp, Matcher, Querier, Tsdb, TsdbOptions};
use tower::ServiceExt;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    traces: Arc<TraceStore>,
    tsdb: Arc<Tsdb>,
    app: Router,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let traces = Arc::new(
        TraceStore::open(&dir.path().join("traces"), TraceStoreOptions::default()).unwrap(),
    );
    let tsdb = Arc::new(Tsdb::open(&dir.path().join("tsdb"), TsdbOptions::default()).unwrap());
    let app = http_routes(OtlpState::new(traces.clone(), tsdb.clone(), 1 << 16));
    Fixture {
        _dir: dir,
        traces,
        tsdb,
        app,
    }
}

async fn post(
    app: &Router,
    path: &str,
    ct: &str,
    enc: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = Request::post(path).header("content-type", ct);
    if let Some(e) = enc {
        req = req.header("content-encoding", e);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        ct,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn trace_json(span_id: &str) -> Vec<u8> {
    let t = now_ns();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"cart"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{span_id}","name":"checkout","kind":2,
        "startTimeUnixNano":"{t}","endTimeUnixNano":"{}","status":{{"code":2,"message":"boom"}}}}]}}]}}]}}"#,
        t + 1000
    )
    .into_bytes()
}

#[tokio::test]
async fn json_traces_are_stored_and_answered_in_json() {
    let f = fixture();
    let (status, ct, body) = post(
        &f.app,
        "/v1/traces",
        "application/json",
        None,
        trace_json("eee19b7ec3c1b174"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/json");
    assert_eq!(body, b"{}");
    let trace = f
        .traces
        .trace(&[
            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
            0xc6, 0x0c,
        ])
        .unwrap();
    assert_eq!(trace.len(), 1);
    assert_eq!(trace[0].span.name, "checkout");
    assert_eq!(trace[0].origin.service_name(), "cart");
}

#[tokio::test]
async fn gzip_protobuf_with_a_bad_span_is_a_partial_success() {
    let f = fixture();
    let mut req: ExportTraceServiceRequest =
        serde_json::from_slice(&trace_json("eee19b7ec3c1b174")).unwrap();
    let mut bad = req.resource_spans[0].scope_spans[0].spans[0].clone();
    bad.span_id = vec![1, 2];
    req.resource_spans[0].scope_spans[0].spans.push(bad);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&req.encode_to_vec()).unwrap();
    let (status, ct, body) = post(
        &f.app,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(&body[..]).unwrap();
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert_eq!(partial.error_message, "span id must be 8 bytes");
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_status_and_wrong_types_415() {
    let f = fixture();
    let (status, _, body) = post(
        &f.app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0xff; 8],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let st = RpcStatus::decode(&body[..]).unwrap();
    assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
    assert!(st.message.starts_with("invalid protobuf"), "{}", st.message);
    let (status, _, body) = post(
        &f.app,
        "/v1/metrics",
        "application/json",
        None,
        b"{\"resourceMetrics\":".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("invalid OTLP/JSON"));
    let (status, _, _) = post(&f.app, "/v1/logs", "text/plain", None, b"x".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = post(
        &f.app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0; 1 << 17],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn json_metrics_reach_the_tsdb_under_prometheus_names() {
    let f = fixture();
    let t = now_ns();
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"cart"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"orders","sum":{{"aggregationTemporality":2,"isMonotonic":true,
        "dataPoints":[{{"timeUnixNano":"{t}","asInt":"7"}}]}}}}]}}]}}]}}"#
    );
    let (status, _, body) = post(
        &f.app,
        "/v1/metrics",
        "application/json",
        None,
        json.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let m = [Matcher::new(MatchOp::Equal, "__name__", "orders_total").unwrap()];
    let got = f
        .tsdb
        .select_decoded(&m, &storage::SelectHints::range(0, i64::MAX / 4, 100))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.get("job"), Some("cart"));
    assert_eq!(got[0].samples[0].v, 7.0);
}

/// Metric series are held to remote-write's label limits: one over them is rejected as
/// partial success with Mimir's words, the others are stored.
#[tokio::test]
async fn metric_series_over_the_label_limits_are_rejected() {
    let f = fixture();
    let limits = crate::Limits {
        max_labels_per_series: 3,
        ..crate::Limits::default()
    };
    let app = http_routes(
        OtlpState::new(f.traces.clone(), f.tsdb.clone(), 1 << 16).with_label_limits(limits),
    );
    let t = now_ns();
    let point =
        |attrs: &str| format!(r#"{{"timeUnixNano":"{t}","asDouble":1,"attributes":[{attrs}]}}"#);
    let attr = |k: &str| format!(r#"{{"key":"{k}","value":{{"stringValue":"v"}}}}"#);
    let json = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"wide","gauge":{{"dataPoints":[{},{}]}}}}]}}]}}]}}"#,
        point(&[attr("a"), attr("b")].join(",")),
        point(&[attr("a"), attr("b"), attr("c")].join(",")),
    );
    let (status, _, body) = post(&app, "/v1/metrics", "application/json", None, json.into()).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "1", "{v}");
    assert_eq!(
        v["partialSuccess"]["errorMessage"],
        "number of labels exceeds the limit (actual: 4, limit: 3): wide",
        "{v}"
    );
    let m = [Matcher::new(MatchOp::Equal, "__name__", "wide").unwrap()];
    let got = f
        .tsdb
        .select_decoded(&m, &storage::SelectHints::range(0, i64::MAX / 4, 100))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.get("c"), None);
}

#[tokio::test]
async fn json_logs_go_to_the_log_store_with_trace_ids_or_are_refused_without_one() {
    use storage::logs::{Direction, LogOptions, LogQuery, LogStore};
    let f = fixture();
    let t = now_ns();
    let json = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"cart"}}}}]}},
        "scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{t}","body":{{"stringValue":"payment failed"}},
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}}]}}]}}]}}"#
    );
    let (status, _, body) = post(
        &f.app,
        "/v1/logs",
        "application/json",
        None,
        json.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["partialSuccess"]["rejectedLogRecords"], "1",
        "no log store: refused, not dropped"
    );

    let logs =
        Arc::new(LogStore::open(&f._dir.path().join("logs"), LogOptions::default()).unwrap());
    let app = http_routes(
        OtlpState::new(f.traces.clone(), f.tsdb.clone(), 1 << 16).with_logs(logs.clone()),
    );
    let (status, _, body) = post(
        &app,
        "/v1/logs",
        "application/json",
        None,
        json.into_bytes(),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, b"{}".to_vec()));
    logs.sync().unwrap();
    let q = LogQuery {
        matchers: vec![Matcher::new(MatchOp::Equal, "service_name", "cart").unwrap()],
        start_ns: 0,
        end_ns: i64::MAX,
        contains: vec![],
    };
    let mut got = Vec::new();
    logs.scan(&q, Direction::Forward, &mut |r| {
        got.push(r);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line, "payment failed");
    assert!(got[0].metadata.contains(&(
        "trace_id".to_owned(),
        "5b8efff798038103d269b633813fc60c".to_owned()
    )));
    logs.close().unwrap();
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Empty ResourceSpans are 2 bytes each and about a hundred decoded: 16 KB of gzip held
/// gigabytes once decoded. The walk refuses the body before prost decodes it.
#[tokio::test]
async fn a_body_of_empty_items_is_refused_before_decoding() {
    let f = fixture();
    let app = http_routes(OtlpState::new(f.traces.clone(), f.tsdb.clone(), 16 << 20));
    for path in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        let body = gzip(&[0x0a, 0x00].repeat(8 << 20));
        assert!(body.len() < 64 << 10);
        let (status, _, body) =
            post(&app, path, "application/x-protobuf", Some("gzip"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let st = RpcStatus::decode(&body[..]).unwrap();
        assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
        assert!(
            st.message.contains("would decode to more than"),
            "{path}: {}",
            st.message
        );
    }
}

/// The same bomb in OTLP/JSON: `{}` is three bytes and a whole struct once serde decodes it.
/// The structural scan refuses it before serde runs; a real JSON export of the same size
/// still passes.
#[tokio::test]
async fn a_json_body_of_empty_items_is_refused_before_decoding() {
    let f = fixture();
    let app = http_routes(OtlpState::new(f.traces.clone(), f.tsdb.clone(), 16 << 20));
    let empties = vec!["{}"; 1 << 20].join(",");
    for (path, body) in [
        ("/v1/traces", format!(r#"{{"resourceSpans":[{empties}]}}"#)),
        (
            "/v1/metrics",
            format!(r#"{{"resourceMetrics":[{empties}]}}"#),
        ),
        (
            "/v1/logs",
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{empties}]}}]}}"#),
        ),
    ] {
        let (status, _, body) = post(
            &app,
            path,
            "application/json",
            Some("gzip"),
            gzip(body.as_bytes()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let st: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(st["code"], tonic::Code::InvalidArgument as i32);
        let msg = st["message"].as_str().unwrap();
        assert!(msg.contains("would decode to more than"), "{path}: {msg}");
    }
    // A body of real spans with short attributes, well past the small-body floor.
    let attrs = [r#"{"key":"k","value":{"intValue":"1"}}"#; 8].join(",");
    let span = format!(
        r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,"startTimeUnixNano":"{0}","endTimeUnixNano":"{0}","attributes":[{attrs}]}}"#,
        now_ns()
    );
    let spans = vec![span; 1000].join(",");
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    assert!(body.len() > 256 << 10);
    let (status, _, resp) = post(&app, "/v1/traces", "application/json", None, body.into()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
}

#[tokio::test]
async fn spans_over_the_per_request_limit_are_refused() {
    let f = fixture();
    let app =
        http_routes(OtlpState::new(f.traces.clone(), f.tsdb.clone(), 1 << 16).with_max_spans(2));
    let req = |n: u8| {
        ExportTraceServiceRequest {
            resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                    spans: (0..n)
                        .map(|i| opentelemetry_proto::tonic::trace::v1::Span {
                            trace_id: vec![1; 16],
                            span_id: vec![i + 1; 8],
                            name: "s".into(),
                            start_time_unix_nano: now_ns(),
                            end_time_unix_nano: now_ns() + 1,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let (status, _, _) = post(&app, "/v1/traces", "application/x-protobuf", None, req(2)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = post(&app, "/v1/traces", "application/x-protobuf", None, req(3)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let st = RpcStatus::decode(&body[..]).unwrap();
    assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
    assert_eq!(st.message, "request has 3 spans, more than the limit of 2");
}
