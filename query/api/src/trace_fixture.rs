//! A store holding two known traces, for the Jaeger and Tempo API tests.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use storage::traces::{TraceStore, TraceStoreOptions};

pub(crate) const TRACE_A: &str = "0af7651916cd43dd8448eb211c80319c";
pub(crate) const TRACE_B: &str = "0000000000000000000000000000beef";

pub(crate) fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) store: Arc<TraceStore>,
    /// Start of trace A, ns.
    pub(crate) t0: u64,
}

fn span(
    trace: &str,
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    start: u64,
    dur_ms: u64,
) -> Span {
    Span {
        trace_id: tracequery::parse_trace_id(trace).unwrap().to_vec(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ms * 1_000_000,
        ..Default::default()
    }
}

fn batch(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(service)), kv("host.name", s("node-1"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

/// Trace A: frontend `GET /checkout` (server, 300ms, http.status_code 500) → backend
/// `SELECT orders` (client, 120ms, error status, an event). Trace B, a minute earlier:
/// frontend `GET /health` (server, 2ms, 200).
pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let t0 = now - 600_000_000_000;
    let mut root = span(TRACE_A, 1, None, "GET /checkout", 2, t0, 300);
    root.attributes = vec![
        kv("http.status_code", Value::IntValue(500)),
        kv("http.method", s("GET")),
    ];
    let mut db = span(
        TRACE_A,
        2,
        Some(1),
        "SELECT orders",
        3,
        t0 + 10_000_000,
        120,
    );
    db.status = Some(Status {
        code: 2,
        message: "deadlock".into(),
    });
    db.events = vec![Event {
        time_unix_nano: t0 + 20_000_000,
        name: "retry".into(),
        attributes: vec![kv("attempt", Value::IntValue(2))],
        dropped_attributes_count: 0,
    }];
    let mut health = span(TRACE_B, 3, None, "GET /health", 2, t0 - 60_000_000_000, 2);
    health.attributes = vec![kv("http.status_code", Value::IntValue(200))];
    let report = store
        .write(&[
            batch("frontend", vec![root, health]),
            batch("backend", vec![db]),
        ])
        .unwrap();
    assert_eq!(report.rejected, 0);
    Fixture {
        _dir: dir,
        store,
        t0,
    }
}

/// Percent-encodes a query parameter value.
pub(crate) fn tests_enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
