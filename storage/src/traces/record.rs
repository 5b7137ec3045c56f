//! The stored form of a span: `origin id (u64 BE) | protobuf Span` without the trace and span
//! ids (they are the record's key, and random ids do not compress), and of an origin: a
//! `ResourceSpans` holding the resource and one `ScopeSpans` with the scope but no spans.
//! Spans of one SDK batch share their resource and scope, so storing those once per distinct
//! value keeps a span's record to the span itself. Owns encoding and attribute rendering.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::StorageError;

/// A span read back, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSpan {
    pub span: Span,
    pub origin: Arc<Origin>,
}

/// The resource and instrumentation scope a span was sent with.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    /// Resource and scope, with `scope_spans[0].spans` empty.
    pub skeleton: ResourceSpans,
}

impl Origin {
    pub(crate) fn new(rs: &ResourceSpans, ss: &ScopeSpans) -> Origin {
        Origin {
            skeleton: ResourceSpans {
                resource: rs.resource.clone(),
                schema_url: rs.schema_url.clone(),
                scope_spans: vec![ScopeSpans {
                    scope: ss.scope.clone(),
                    spans: Vec::new(),
                    schema_url: ss.schema_url.clone(),
                }],
            },
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Origin, StorageError> {
        let skeleton = ResourceSpans::decode(bytes)
            .map_err(|e| StorageError::Corrupt(format!("span origin: {e}")))?;
        Ok(Origin { skeleton })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        self.skeleton.encode_to_vec()
    }

    /// Content address: equal origins share one record.
    pub(crate) fn id(bytes: &[u8]) -> u64 {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    pub fn resource_attributes(&self) -> &[KeyValue] {
        self.skeleton
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[])
    }

    /// `service.name`, or OpenTelemetry's default for a resource without one.
    pub fn service_name(&self) -> &str {
        service_name(self.resource_attributes())
    }
}

/// `service.name` among resource attributes, or OpenTelemetry's default without one.
pub fn service_name(resource_attributes: &[KeyValue]) -> &str {
    resource_attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            },
        )
        .unwrap_or("unknown_service")
}

/// The encoded trace id and span id fields as prost writes them first (fields 1 and 2, length
/// delimited, 16 and 8 bytes), which a record leaves out.
const IDS_LEN: usize = 2 + 16 + 2 + 8;

pub(crate) fn encode_span(origin_id: u64, span: &Span) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + span.encoded_len());
    out.extend_from_slice(&origin_id.to_be_bytes());
    span.encode(&mut out).expect("a Vec grows as needed");
    // Encoding and then cutting the two fields costs a move of the rest; clearing them on a
    // clone would copy every attribute.
    if out.len() >= 8 + IDS_LEN && out[8..10] == [0x0a, 16] && out[26..28] == [0x12, 8] {
        out.drain(8..8 + IDS_LEN);
    }
    out
}

/// A record back into its span, with the ids from its key (records written before ids were
/// left out carry their own).
pub(crate) fn decode_span(
    bytes: &[u8],
    trace_id: &[u8],
    span_id: &[u8],
) -> Result<(u64, Span), StorageError> {
    let (id, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| StorageError::Corrupt("short span record".into()))?;
    let mut span =
        Span::decode(rest).map_err(|e| StorageError::Corrupt(format!("span record: {e}")))?;
    if span.trace_id.is_empty() {
        span.trace_id = trace_id.to_vec();
    }
    if span.span_id.is_empty() {
        span.span_id = span_id.to_vec();
    }
    Ok((u64::from_be_bytes(*id), span))
}

/// An attribute value as text for the index and for tag matching: strings as is, ints in
/// decimal, bools as `true`/`false`, doubles in Rust's shortest form. Arrays, maps and bytes
/// have no text form and are neither indexed nor matched.
pub fn value_text(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn span_records_round_trip(id in any::<u64>(), name in ".{0,20}", start in any::<u64>(), attr in any::<i64>()) {
            let span = Span {
                trace_id: vec![1; 16], span_id: vec![2; 8], name, start_time_unix_nano: start,
                attributes: vec![KeyValue { key: "k".into(), value: Some(AnyValue { value: Some(Value::IntValue(attr)) }), ..Default::default() }],
                ..Default::default()
            };
            let record = encode_span(id, &span);
            prop_assert!(!record.windows(8).any(|w| w == [2; 8]), "the ids are left out");
            let (id2, back) = decode_span(&record, &[1; 16], &[2; 8]).unwrap();
            prop_assert_eq!(id2, id);
            prop_assert_eq!(back, span);
        }
    }

    #[test]
    fn records_written_with_their_ids_keep_them() {
        let span = Span {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            name: "old".into(),
            ..Default::default()
        };
        let mut record = 5u64.to_be_bytes().to_vec();
        span.encode(&mut record).unwrap();
        assert_eq!(decode_span(&record, &[1; 16], &[2; 8]).unwrap(), (5, span));
    }

    #[test]
    fn truncated_records_are_corrupt_not_panics() {
        assert!(decode_span(&[1, 2, 3], &[1; 16], &[2; 8]).is_err());
        assert!(decode_span(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff], &[1; 16], &[2; 8]).is_err());
    }

    #[test]
    fn service_name_defaults_like_the_sdk() {
        let o = Origin {
            skeleton: ResourceSpans::default(),
        };
        assert_eq!(o.service_name(), "unknown_service");
    }
}
