//! OTLP log records → log-store records, following Loki's OTLP mapping: the resource
//! attributes Loki indexes by default become stream labels (dots → underscores, a missing
//! `service.name` → `service_name="unknown_service"`); every other resource, scope and record
//! attribute, plus `trace_id`/`span_id` (hex, so Grafana can link to the trace), severity and
//! scope name, become structured metadata. The body is the line (non-strings as JSON). Pure
//! conversion; writing is the caller's.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use storage::logs::LogRecord;
use storage::traces::value_text;
use storage::Labels;

use super::metric_names::label_chars;

/// Loki's default `otlp_config` index labels.
const STREAM_ATTRIBUTES: [&str; 17] = [
    "cloud.availability_zone",
    "cloud.region",
    "container.name",
    "deployment.environment",
    "k8s.cluster.name",
    "k8s.container.name",
    "k8s.cronjob.name",
    "k8s.daemonset.name",
    "k8s.deployment.name",
    "k8s.job.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.replicaset.name",
    "k8s.statefulset.name",
    "service.instance.id",
    "service.name",
    "service.namespace",
];

fn text(v: &AnyValue) -> String {
    value_text(v).unwrap_or_else(|| json(v).to_string())
}

fn json(v: &AnyValue) -> serde_json::Value {
    match &v.value {
        Some(Value::ArrayValue(a)) => a.values.iter().map(json).collect(),
        Some(Value::KvlistValue(l)) => l
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map(json).unwrap_or_default(),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Some(Value::BytesValue(b)) => b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into(),
        _ => value_text(v)
            .map(serde_json::Value::String)
            .unwrap_or_default(),
    }
}

fn pairs(kvs: &[KeyValue]) -> impl Iterator<Item = (String, String)> + '_ {
    kvs.iter()
        .filter_map(|kv| Some((label_chars(&kv.key), text(kv.value.as_ref()?))))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn convert(resources: &[ResourceLogs]) -> Vec<LogRecord> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let mut out = Vec::new();
    for rl in resources {
        let attrs = rl
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let (stream, other): (Vec<&KeyValue>, Vec<&KeyValue>) = attrs
            .iter()
            .partition(|kv| STREAM_ATTRIBUTES.contains(&kv.key.as_str()));
        let mut labels: Vec<(String, String)> = stream
            .iter()
            .filter_map(|kv| Some((label_chars(&kv.key), text(kv.value.as_ref()?))))
            .collect();
        if !labels.iter().any(|(k, _)| k == "service_name") {
            labels.push(("service_name".to_owned(), "unknown_service".to_owned()));
        }
        let labels = Labels::from_pairs(labels);
        let resource_md: Vec<(String, String)> = other
            .iter()
            .filter_map(|kv| Some((label_chars(&kv.key), text(kv.value.as_ref()?))))
            .collect();
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref();
            for r in &sl.log_records {
                let mut md = resource_md.clone();
                if let Some(s) = scope {
                    md.extend(pairs(&s.attributes));
                    if !s.name.is_empty() {
                        md.push(("scope_name".to_owned(), s.name.clone()));
                    }
                }
                md.extend(pairs(&r.attributes));
                if !r.trace_id.is_empty() {
                    md.push(("trace_id".to_owned(), hex(&r.trace_id)));
                }
                if !r.span_id.is_empty() {
                    md.push(("span_id".to_owned(), hex(&r.span_id)));
                }
                if !r.severity_text.is_empty() {
                    md.push(("severity_text".to_owned(), r.severity_text.clone()));
                }
                if r.severity_number != 0 {
                    md.push(("severity_number".to_owned(), r.severity_number.to_string()));
                }
                md.retain(|(_, v)| !v.is_empty());
                md.sort();
                md.dedup_by(|a, b| a.0 == b.0);
                let ts = [r.time_unix_nano, r.observed_time_unix_nano]
                    .into_iter()
                    .find(|t| *t > 0)
                    .map(|t| t as i64)
                    .unwrap_or(now);
                out.push(LogRecord {
                    ts_ns: ts,
                    labels: labels.clone(),
                    line: r.body.as_ref().map(text).unwrap_or_default(),
                    metadata: md,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLog, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn resource_attributes_split_into_stream_and_metadata_and_trace_ids_kept() {
        let rl = ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("cart".into())),
                    kv("host.name", Value::StringValue("h1".into())),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app.log".into(),
                    ..Default::default()
                }),
                log_records: vec![OtlpLog {
                    time_unix_nano: 42,
                    severity_text: "ERROR".into(),
                    severity_number: 17,
                    body: Some(AnyValue {
                        value: Some(Value::StringValue("payment failed".into())),
                    }),
                    attributes: vec![kv("order.id", Value::IntValue(7))],
                    trace_id: vec![0xab; 16],
                    span_id: vec![0xcd; 8],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        };
        let recs = convert(&[rl]);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.ts_ns, 42);
        assert_eq!(r.line, "payment failed");
        assert_eq!(r.labels, Labels::from_pairs([("service_name", "cart")]));
        let md: std::collections::HashMap<_, _> = r.metadata.iter().cloned().collect();
        assert_eq!(md["host_name"], "h1");
        assert_eq!(md["order_id"], "7");
        assert_eq!(md["trace_id"], "ab".repeat(16));
        assert_eq!(md["span_id"], "cd".repeat(8));
        assert_eq!(md["severity_text"], "ERROR");
        assert_eq!(md["scope_name"], "app.log");
    }

    #[test]
    fn missing_service_and_structured_bodies() {
        let rl = ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![OtlpLog {
                    observed_time_unix_nano: 9,
                    body: Some(AnyValue {
                        value: Some(Value::IntValue(3)),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = &convert(&[rl])[0];
        assert_eq!(r.labels.get("service_name"), Some("unknown_service"));
        assert_eq!((r.ts_ns, r.line.as_str()), (9, "3"));
    }
}
