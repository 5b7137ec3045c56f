//! Logs and spans as their receivers read them: Loki's push (snappy `logproto.PushRequest`,
//! labels as a selector string, structured metadata kept), OTLP logs (a resource per
//! stream: its labels as resource attributes, structured metadata as log attributes) and
//! OTLP traces (the `ResourceSpans` as they were received), as messages for gRPC and
//! encoded for HTTP. Owns only the encoding.

use std::collections::HashMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1 as otlp_logs;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use storage::logs::LogRecord;
use storage::Labels;

use super::send::snappy;
use crate::logs::loki_push::proto;

/// One thing to send: a log line, or a resource's selected spans.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    Line(LogRecord),
    Spans(ResourceSpans),
}

impl Item {
    /// Lines or spans: what batches and counters count.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Item::Line(_) => 1,
            Item::Spans(rs) => rs.scope_spans.iter().map(|s| s.spans.len()).sum(),
        }
    }

    /// Nanoseconds since the epoch of the newest line or span start.
    pub(crate) fn newest_ns(&self) -> i64 {
        match self {
            Item::Line(r) => r.ts_ns,
            Item::Spans(rs) => rs
                .scope_spans
                .iter()
                .flat_map(|s| s.spans.iter().map(|s| s.start_time_unix_nano as i64))
                .max()
                .unwrap_or(0),
        }
    }
}

/// Labels as a Loki stream selector, `{a="b", c="d"}`, values quoted as Go quotes them.
pub(crate) fn selector_string(labels: &Labels) -> String {
    let mut out = String::from("{");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&l.name);
        out.push_str("=\"");
        for c in l.value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The lines grouped by stream, in order of first appearance, each stream's lines in order.
fn by_stream(items: &[Item]) -> Vec<(&Labels, Vec<&LogRecord>)> {
    let mut out: Vec<(&Labels, Vec<&LogRecord>)> = Vec::new();
    let mut index: HashMap<&Labels, usize> = HashMap::new();
    for item in items {
        let Item::Line(r) = item else { continue };
        let i = *index.entry(&r.labels).or_insert_with(|| {
            out.push((&r.labels, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(r);
    }
    out
}

/// A snappy `logproto.PushRequest` of the lines.
pub(crate) fn encode_loki(items: &[Item]) -> Bytes {
    let req = proto::PushRequest {
        streams: by_stream(items)
            .into_iter()
            .map(|(labels, lines)| proto::Stream {
                labels: selector_string(labels),
                entries: lines
                    .into_iter()
                    .map(|r| proto::Entry {
                        timestamp: Some(proto::Timestamp {
                            seconds: r.ts_ns.div_euclid(1_000_000_000),
                            nanos: r.ts_ns.rem_euclid(1_000_000_000) as i32,
                        }),
                        line: r.line.clone(),
                        structured_metadata: r
                            .metadata
                            .iter()
                            .map(|(name, value)| proto::LabelPair {
                                name: name.clone(),
                                value: value.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    snappy(&req.encode_to_vec())
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// An OTLP `ExportLogsServiceRequest` of the lines: one resource per stream.
pub(crate) fn otlp_logs(items: &[Item]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: by_stream(items)
            .into_iter()
            .map(|(labels, lines)| otlp_logs::ResourceLogs {
                resource: Some(Resource {
                    attributes: labels
                        .iter()
                        .map(|l| string_kv(&l.name, &l.value))
                        .collect(),
                    ..Resource::default()
                }),
                scope_logs: vec![otlp_logs::ScopeLogs {
                    log_records: lines
                        .into_iter()
                        .map(|r| otlp_logs::LogRecord {
                            time_unix_nano: r.ts_ns as u64,
                            observed_time_unix_nano: r.ts_ns as u64,
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(r.line.clone())),
                            }),
                            attributes: r.metadata.iter().map(|(k, v)| string_kv(k, v)).collect(),
                            ..otlp_logs::LogRecord::default()
                        })
                        .collect(),
                    ..otlp_logs::ScopeLogs::default()
                }],
                ..otlp_logs::ResourceLogs::default()
            })
            .collect(),
    }
}

/// An OTLP `ExportTraceServiceRequest` of the spans.
pub(crate) fn otlp_traces(items: &[Item]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: items
            .iter()
            .filter_map(|i| match i {
                Item::Spans(rs) => Some(rs.clone()),
                Item::Line(_) => None,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts_ns: i64, stream: &str, text: &str) -> Item {
        Item::Line(LogRecord {
            ts_ns,
            labels: Labels::from_pairs([("app", stream), ("q", "a\"b\\c\nd")]),
            line: text.into(),
            metadata: vec![("trace_id".into(), "abc".into())],
        })
    }

    /// What novamon's own Loki push decoder reads back is what was sent, stream by stream
    /// in order.
    #[test]
    fn loki_push_round_trips_through_the_receivers_decoder() {
        let items = [
            line(1_500_000_001, "x", "one"),
            line(-1, "y", "two"),
            line(3, "x", "three"),
        ];
        let body = encode_loki(&items);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = proto::PushRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.streams.len(), 2);
        assert_eq!(req.streams[0].labels, r#"{app="x", q="a\"b\\c\nd"}"#);
        let lines: Vec<&str> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(lines, ["one", "three"]);
        let t = req.streams[1].entries[0].timestamp.unwrap();
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_999));
        use crate::logs::loki_push::{decode, Budget, Format};
        let budget = Budget {
            max_bytes: 1 << 20,
            max_expansion: crate::DEFAULT_MAX_EXPANSION,
        };
        let back = decode(Format::Protobuf, "", &body, budget).unwrap();
        let want: Vec<LogRecord> = [&items[0], &items[2], &items[1]]
            .into_iter()
            .map(|i| match i {
                Item::Line(r) => r.clone(),
                Item::Spans(_) => unreachable!(),
            })
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn otlp_logs_put_streams_in_resources() {
        let req = otlp_logs(&[line(5, "x", "one"), line(6, "x", "two")]);
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        assert_eq!(
            rl.resource.as_ref().unwrap().attributes[0],
            string_kv("app", "x")
        );
        let recs = &rl.scope_logs[0].log_records;
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].time_unix_nano, 6);
        assert_eq!(recs[0].attributes, [string_kv("trace_id", "abc")]);
    }
}
