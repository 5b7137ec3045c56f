//! Trace search over the trace store, shared by the Jaeger and Tempo APIs: walks the index
//! the caller picked, newest first, and keeps the traces that have a span satisfying the
//! caller's predicate. Owns the scan budget; the query languages are the callers'.

use std::collections::HashSet;
use std::ops::ControlFlow;

use storage::traces::{Seek, StoredSpan, TraceStore};
use storage::StorageError;

/// Most spans one search reads before answering with what it found.
const MAX_SPANS_INSPECTED: usize = 200_000;

pub(crate) struct SearchOutcome {
    /// Newest first.
    pub(crate) trace_ids: Vec<[u8; 16]>,
    pub(crate) spans_inspected: usize,
}

pub(crate) fn find_traces(
    store: &TraceStore,
    seek: &Seek,
    start_ns: u64,
    end_ns: u64,
    limit: usize,
    matches: &mut dyn FnMut(&StoredSpan) -> Result<bool, StorageError>,
) -> Result<SearchOutcome, StorageError> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut inspected = 0;
    store.scan(seek, start_ns, end_ns, &mut |c| {
        if found.len() >= limit {
            return Ok(ControlFlow::Break(()));
        }
        if seen.contains(&c.trace_id) {
            return Ok(ControlFlow::Continue(()));
        }
        inspected += 1;
        if inspected > MAX_SPANS_INSPECTED {
            tracing::debug!(
                limit = MAX_SPANS_INSPECTED,
                "trace search stopped at its scan budget"
            );
            return Ok(ControlFlow::Break(()));
        }
        if let Some(span) = c.load()? {
            if matches(&span)? {
                seen.insert(c.trace_id);
                found.push(c.trace_id);
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(SearchOutcome {
        trace_ids: found,
        spans_inspected: inspected.min(MAX_SPANS_INSPECTED),
    })
}

/// Lower-case hex of an id.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace id from hex, left-padded to 16 bytes (Jaeger and Tempo accept short ids).
pub(crate) fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>32}");
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Go-style durations as both APIs take them (`1.5s`, `100ms`, `250us`, `2m`, `1h`), in ns:
/// LogQL's duration parser, which also takes `d` and `w`, limited to non-negative values.
pub(crate) fn parse_go_duration(s: &str) -> Option<u64> {
    crate::logql::parse_go_duration(s.trim()).and_then(|ns| u64::try_from(ns).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_durations_parse() {
        assert_eq!(parse_trace_id("1").unwrap()[15], 1);
        assert_eq!(
            hex(&parse_trace_id("5b8efff798038103d269b633813fc60c").unwrap()),
            "5b8efff798038103d269b633813fc60c"
        );
        assert!(parse_trace_id("xyz").is_none());
        assert!(parse_trace_id(&"a".repeat(33)).is_none());
        assert_eq!(parse_go_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("100"), None);
        assert_eq!(parse_go_duration("5x"), None);
    }
}

/// A store holding two known traces, for the API tests.
#[cfg(test)]
pub(crate) mod fixture {
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
            trace_id: super::parse_trace_id(trace).unwrap().to_vec(),
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
}

/// Percent-encodes a query parameter value (tests only).
#[cfg(test)]
pub(crate) fn tests_enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
