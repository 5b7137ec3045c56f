//! Traces with a known shape for the engine's tests: spans, their tree, and a store holding
//! them.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use storage::traces::{Origin, StoredSpan};

pub(crate) const MS: u64 = 1_000_000;

pub(crate) fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// One span: (letter id, parent letter, service, name, kind, start ms, duration ms, error,
/// span attributes).
pub(crate) struct S<'a> {
    pub id: u8,
    pub parent: Option<u8>,
    pub service: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub start_ms: u64,
    pub dur_ms: u64,
    pub error: bool,
    pub attrs: Vec<KeyValue>,
}

pub(crate) fn resource_spans(trace: u8, t0: u64, spans: Vec<S<'_>>) -> Vec<ResourceSpans> {
    spans
        .into_iter()
        .map(|s| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(s.service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![trace; 16],
                    span_id: vec![s.id; 8],
                    parent_span_id: s.parent.map(|p| vec![p; 8]).unwrap_or_default(),
                    name: s.name.into(),
                    kind: s.kind,
                    start_time_unix_nano: t0 + s.start_ms * MS,
                    end_time_unix_nano: t0 + (s.start_ms + s.dur_ms) * MS,
                    attributes: s.attrs,
                    status: s.error.then(|| Status {
                        code: StatusCode::Error as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        })
        .collect()
}

/// The spans of `resource_spans` as the store reads them back.
pub(crate) fn stored(batches: &[ResourceSpans]) -> Vec<StoredSpan> {
    batches
        .iter()
        .map(|rs| {
            let mut skeleton = rs.clone();
            let span = skeleton.scope_spans[0].spans.remove(0);
            StoredSpan {
                span,
                origin: Arc::new(Origin { skeleton }),
            }
        })
        .collect()
}

/// A checkout trace (kinds: 1 internal, 2 server, 3 client):
///
/// ```text
/// a frontend "GET /"    server   0 ms +100
/// ├─ b frontend "call-api" client  5 ms +80
/// │  └─ c api "GET /api"   server 10 ms +70  error, http.status_code 500
/// │     ├─ d db "query"     client 20 ms +10  db.system postgres
/// │     └─ e api "cache"    internal 40 ms +5
/// └─ f frontend "render"  internal 90 ms +10
/// ```
pub(crate) fn checkout(trace: u8, t0: u64) -> Vec<ResourceSpans> {
    let s = |id, parent, service, name, kind, start_ms, dur_ms| S {
        id,
        parent,
        service,
        name,
        kind,
        start_ms,
        dur_ms,
        error: false,
        attrs: Vec::new(),
    };
    let mut c = s(b'c', Some(b'b'), "api", "GET /api", 2, 10, 70);
    c.error = true;
    c.attrs = vec![kv("http.status_code", Value::IntValue(500))];
    let mut d = s(b'd', Some(b'c'), "db", "query", 3, 20, 10);
    d.attrs = vec![kv("db.system", Value::StringValue("postgres".into()))];
    resource_spans(
        trace,
        t0,
        vec![
            s(b'a', None, "frontend", "GET /", 2, 0, 100),
            s(b'b', Some(b'a'), "frontend", "call-api", 3, 5, 80),
            c,
            d,
            s(b'e', Some(b'c'), "api", "cache", 1, 40, 5),
            s(b'f', Some(b'a'), "frontend", "render", 1, 90, 10),
        ],
    )
}
