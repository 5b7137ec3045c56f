//! OTLP spans → Jaeger's query-service JSON (`model/json`): one process per distinct
//! resource, typed tags, span events as logs, parent and links as references, and the tags
//! Jaeger's OTLP translator adds (`span.kind`, `otel.status_code`, `error`, scope name).

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::Serialize;
use serde_json::json;
use storage::traces::{Origin, StoredSpan};

use tracequery::hex;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub(crate) struct Tag {
    pub(crate) key: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) value: serde_json::Value,
}

impl Tag {
    fn str(key: &str, v: impl Into<String>) -> Tag {
        Tag {
            key: key.to_owned(),
            kind: "string",
            value: json!(v.into()),
        }
    }

    /// The value as Jaeger's tag filter compares it: the text form.
    pub(crate) fn text(&self) -> String {
        match &self.value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

pub(crate) fn tags(kvs: &[KeyValue]) -> Vec<Tag> {
    kvs.iter()
        .map(|kv| {
            let (kind, value) = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => ("string", json!(s)),
                Some(Value::BoolValue(b)) => ("bool", json!(b)),
                Some(Value::IntValue(i)) => ("int64", json!(i)),
                Some(Value::DoubleValue(d)) => ("float64", json!(d)),
                Some(Value::BytesValue(b)) => ("binary", json!(hex(b))),
                Some(other) => ("string", json!(any_to_json(other).to_string())),
                None => ("string", json!("")),
            };
            Tag {
                key: kv.key.clone(),
                kind,
                value,
            }
        })
        .collect()
}

fn any_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::StringValue(s) => json!(s),
        Value::BoolValue(b) => json!(b),
        Value::IntValue(i) => json!(i),
        Value::DoubleValue(d) => json!(d),
        Value::BytesValue(b) => json!(hex(b)),
        Value::ArrayValue(a) => a
            .values
            .iter()
            .filter_map(|v| v.value.as_ref().map(any_to_json))
            .collect(),
        Value::KvlistValue(l) => l
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map(any_to_json)
                        .unwrap_or_default(),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        // An index into a dictionary only profiles carry; spans never use it.
        Value::StringValueStrindex(i) => json!(i),
    }
}

pub(crate) fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "",
    }
}

/// The keys of the tags [`span_tags`] adds to a span's attributes.
pub(crate) const TRANSLATED_SPAN_TAGS: [&str; 7] = [
    "otel.scope.name",
    "otel.scope.version",
    "span.kind",
    "otel.status_code",
    "error",
    "otel.status_description",
    "w3c.tracestate",
];

/// A span's tags as Jaeger shows them: its attributes plus the translated OTLP fields.
pub(crate) fn span_tags(s: &StoredSpan) -> Vec<Tag> {
    let mut out = tags(&s.span.attributes);
    if let Some(scope) = s
        .origin
        .skeleton
        .scope_spans
        .first()
        .and_then(|ss| ss.scope.as_ref())
    {
        if !scope.name.is_empty() {
            out.push(Tag::str("otel.scope.name", &scope.name));
        }
        if !scope.version.is_empty() {
            out.push(Tag::str("otel.scope.version", &scope.version));
        }
    }
    let kind = kind_name(s.span.kind);
    if !kind.is_empty() {
        out.push(Tag::str("span.kind", kind));
    }
    if let Some(status) = &s.span.status {
        match StatusCode::try_from(status.code) {
            Ok(StatusCode::Error) => {
                out.push(Tag::str("otel.status_code", "ERROR"));
                out.push(Tag {
                    key: "error".into(),
                    kind: "bool",
                    value: json!(true),
                });
            }
            Ok(StatusCode::Ok) => out.push(Tag::str("otel.status_code", "OK")),
            _ => {}
        }
        if !status.message.is_empty() {
            out.push(Tag::str("otel.status_description", &status.message));
        }
    }
    if !s.span.trace_state.is_empty() {
        out.push(Tag::str("w3c.tracestate", &s.span.trace_state));
    }
    out
}

/// A process's tags: its resource's attributes but the service name, which is its own field.
pub(crate) fn process_tags(origin: &Origin) -> Vec<Tag> {
    tags(origin.resource_attributes())
        .into_iter()
        .filter(|t| t.key != "service.name")
        .collect()
}

/// A span event as a Jaeger log's fields: its name as `event`, then its attributes.
pub(crate) fn log_fields(e: &Event) -> Vec<Tag> {
    let mut fields = vec![Tag::str("event", &e.name)];
    fields.extend(tags(&e.attributes));
    fields
}

/// Jaeger prints 128-bit ids without the high half when it is zero.
pub(crate) fn trace_id_str(id: &[u8]) -> String {
    if id.len() == 16 && id[..8] == [0; 8] {
        hex(&id[8..])
    } else {
        hex(id)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Trace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<serde_json::Value>,
    processes: BTreeMap<String, serde_json::Value>,
    warnings: Option<Vec<String>>,
}

pub(crate) fn trace(spans: &[StoredSpan]) -> Trace {
    let mut process_ids: Vec<(Arc<Origin>, String)> = Vec::new();
    let mut processes = BTreeMap::new();
    let trace_id = spans
        .first()
        .map(|s| trace_id_str(&s.span.trace_id))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let pid = match process_ids.iter().find(|(o, _)| {
            Arc::ptr_eq(o, &s.origin) || o.skeleton.resource == s.origin.skeleton.resource
        }) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", process_ids.len() + 1);
                processes.insert(
                    id.clone(),
                    json!({ "serviceName": s.origin.service_name(), "tags": process_tags(&s.origin) }),
                );
                process_ids.push((s.origin.clone(), id.clone()));
                id
            }
        };
        let mut references = Vec::new();
        if !s.span.parent_span_id.is_empty() {
            references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id_str(&s.span.trace_id), "spanID": hex(&s.span.parent_span_id) }));
        }
        for l in &s.span.links {
            references.push(json!({ "refType": "FOLLOWS_FROM", "traceID": trace_id_str(&l.trace_id), "spanID": hex(&l.span_id) }));
        }
        let logs: Vec<_> = s
            .span
            .events
            .iter()
            .map(|e| json!({ "timestamp": e.time_unix_nano / 1000, "fields": log_fields(e) }))
            .collect();
        let start_us = s.span.start_time_unix_nano / 1000;
        let duration_us = s
            .span
            .end_time_unix_nano
            .saturating_sub(s.span.start_time_unix_nano)
            / 1000;
        out.push(json!({
            "traceID": trace_id_str(&s.span.trace_id),
            "spanID": hex(&s.span.span_id),
            "operationName": s.span.name,
            "references": references,
            "flags": s.span.flags & 0xff,
            "startTime": start_us,
            "duration": duration_us,
            "tags": span_tags(s),
            "logs": logs,
            "processID": pid,
            "warnings": null,
        }));
    }
    Trace {
        trace_id,
        spans: out,
        processes,
        warnings: None,
    }
}
