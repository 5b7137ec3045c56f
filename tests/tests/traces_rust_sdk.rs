//! The official Rust OpenTelemetry SDK (`opentelemetry-otlp`) as a real client: a trace across
//! two services with an event and an error status, a counter and a log line in the trace's
//! context, over OTLP/gRPC; another trace over OTLP/HTTP (protobuf). All are found again through
//! the Jaeger, Tempo, Prometheus and Loki APIs.

use std::time::Duration;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use e2e::{enc, Json, Novamon};

fn resource(service: &str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service.to_owned())
        .build()
}

fn tracer_provider(exporter: SpanExporter, service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build()
}

fn grpc_span_exporter(n: &Novamon) -> SpanExporter {
    SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&n.otlp_grpc_url)
        .build()
        .expect("gRPC span exporter")
}

/// A root span in `frontend` and its client child in `backend` (with an event and an error
/// status); returns the root span's context.
fn emit_checkout(frontend: &SdkTracerProvider, backend: &SdkTracerProvider) -> SpanContext {
    let root = frontend.tracer("checkout").start("GET /checkout");
    let cx = Context::new().with_span(root);
    let backend = backend.tracer("db");
    let mut child = backend
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("db.rows", 7)])
        .start_with_context(&backend, &cx);
    child.add_event("cache miss", vec![KeyValue::new("cache.key", "cart-42")]);
    child.set_status(Status::error("timeout"));
    child.end();
    cx.span().end();
    cx.span().span_context().clone()
}

/// One error log line from `frontend-rs`, logged inside `root` so it carries its trace context.
fn emit_declined_log(n: &Novamon, root: &SpanContext) {
    let logs = SdkLoggerProvider::builder()
        .with_batch_exporter(
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(&n.otlp_grpc_url)
                .build()
                .expect("gRPC log exporter"),
        )
        .with_resource(resource("frontend-rs"))
        .build();
    let logger = logs.logger("checkout");
    let mut record = logger.create_log_record();
    record.set_body(AnyValue::from("payment declined"));
    record.set_severity_number(Severity::Error);
    record.set_severity_text("ERROR");
    record.set_trace_context(root.trace_id(), root.span_id(), Some(root.trace_flags()));
    logger.emit(record);
    logs.shutdown().expect("log export");
}

/// The Loki streams `query` selects over the last hour.
fn loki_streams(n: &Novamon, query: &str) -> Vec<Json> {
    let end = e2e::now_ns() + 60_000_000_000;
    let start = end - 3_660_000_000_000;
    let r = n.get_ok(&format!(
        "/loki/api/v1/query_range?query={}&start={start}&end={end}&limit=10",
        enc(query)
    ));
    r["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn trace_spans(n: &Novamon, trace_id: &str) -> (Json, Vec<Json>) {
    let trace = n.get_ok(&format!("/jaeger/api/traces/{trace_id}"))["data"][0].clone();
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    (trace, spans)
}

#[test]
fn rust_sdk_signals_are_found_through_jaeger_tempo_loki_and_prometheus() {
    // With the whole workspace built together, reqwest (under the SDK's HTTP exporter) has no
    // crypto provider of its own: the query crate picks ring for its notifications.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    // tonic's channel needs a Tokio runtime to run on; the SDK's batch processors export from
    // their own threads and block on the futures.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = rt.enter();

    let frontend = tracer_provider(grpc_span_exporter(&n), "frontend-rs");
    let backend = tracer_provider(grpc_span_exporter(&n), "backend-rs");
    let meters = SdkMeterProvider::builder()
        .with_periodic_exporter(
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&n.otlp_grpc_url)
                .build()
                .expect("gRPC metric exporter"),
        )
        .with_resource(resource("frontend-rs"))
        .build();
    let root_cx = emit_checkout(&frontend, &backend);
    let grpc_trace = root_cx.trace_id().to_string();
    emit_declined_log(&n, &root_cx);
    let orders = meters.meter("checkout").u64_counter("orders").build();
    orders.add(2, &[KeyValue::new("payment", "card")]);
    orders.add(1, &[KeyValue::new("payment", "card")]);

    let http = tracer_provider(
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", n.otlp_http_url))
            .build()
            .expect("HTTP span exporter"),
        "http-rs",
    );
    let mut span = http.tracer("http").start("POST /pay");
    span.end();
    let http_trace = span.span_context().trace_id().to_string();

    for p in [&frontend, &backend, &http] {
        p.shutdown().expect("trace export");
    }
    meters.shutdown().expect("metric export");

    let (trace, spans) = trace_spans(&n, &grpc_trace);
    assert_eq!(spans.len(), 2, "{trace}");
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s["operationName"] == name)
            .unwrap_or_else(|| panic!("no {name} in {trace}"))
    };
    let (root, db) = (by_name("GET /checkout"), by_name("SELECT orders"));
    assert_eq!(root["references"], serde_json::json!([]));
    assert_eq!(db["references"][0]["refType"], "CHILD_OF");
    assert_eq!(db["references"][0]["spanID"], root["spanID"]);
    assert_eq!(db["references"][0]["traceID"], grpc_trace.as_str());
    let service = |span: &Json| {
        trace["processes"][span["processID"].as_str().unwrap()]["serviceName"].clone()
    };
    assert_eq!(service(root), "frontend-rs");
    assert_eq!(service(db), "backend-rs");
    let tags = db["tags"].as_array().unwrap();
    assert!(
        tags.contains(&serde_json::json!({ "key": "error", "type": "bool", "value": true })),
        "{tags:?}"
    );
    assert!(
        !root["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "error"),
        "{root}"
    );
    assert_eq!(
        db["logs"][0]["fields"],
        serde_json::json!([
            { "key": "event", "type": "string", "value": "cache miss" },
            { "key": "cache.key", "type": "string", "value": "cart-42" },
        ])
    );

    let (trace, spans) = trace_spans(&n, &http_trace);
    assert_eq!(spans.len(), 1, "{trace}");
    assert_eq!(spans[0]["operationName"], "POST /pay");
    assert_eq!(
        trace["processes"][spans[0]["processID"].as_str().unwrap()]["serviceName"],
        "http-rs"
    );

    let services = n.get_ok("/jaeger/api/services");
    for s in ["frontend-rs", "backend-rs", "http-rs"] {
        assert!(
            services["data"].as_array().unwrap().iter().any(|v| v == s),
            "{s} not in {services}"
        );
    }

    let r = n.get_ok(&format!(
        "/api/v1/query?query={}",
        enc(r#"orders_total{job="frontend-rs"}"#)
    ));
    let result = r["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{r}");
    assert_eq!(result[0]["metric"]["payment"], "card");
    assert_eq!(result[0]["value"][1], "3");

    let tempo = n.get_ok(&format!("/tempo/api/traces/{grpc_trace}"));
    let mut names: Vec<&str> = tempo["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["scopeSpans"].as_array().unwrap())
        .flat_map(|s| s["spans"].as_array().unwrap())
        .inspect(|s| assert_eq!(s["traceId"], grpc_trace.as_str(), "{tempo}"))
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["GET /checkout", "SELECT orders"], "{tempo}");

    let selector = r#"{service_name="frontend-rs"}"#;
    let mut streams = Vec::new();
    e2e::wait_until(Duration::from_secs(10), || {
        streams = loki_streams(&n, selector);
        !streams.is_empty()
    });
    assert_eq!(streams.len(), 1, "{streams:?}");
    let stream = &streams[0];
    assert_eq!(
        stream["values"].as_array().map(Vec::len),
        Some(1),
        "{stream}"
    );
    assert_eq!(stream["values"][0][1], "payment declined", "{stream}");
    assert_eq!(
        stream["stream"]["trace_id"],
        grpc_trace.as_str(),
        "{stream}"
    );
    assert_eq!(
        stream["stream"]["span_id"],
        root_cx.span_id().to_string().as_str(),
        "{stream}"
    );
    let by_trace = loki_streams(&n, &format!(r#"{selector} | trace_id="{grpc_trace}""#));
    assert_eq!(by_trace.len(), 1, "found by its trace id: {by_trace:?}");
}
