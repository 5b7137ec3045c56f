//! TraceQL search as Tempo answers it: the newest traces in a window that satisfy a query,
//! each with its root, time span and the spans that matched (the spanset), carrying the
//! attributes the query names. Owns the search loop; the JSON shape is the Tempo API's.

use storage::traces::{StoredSpan, TraceReader};
use storage::StorageError;

use crate::search::find_traces;
use crate::traceql::{field_value, Field, Query};

/// One span of a spanset.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanMatch {
    pub span_id: Vec<u8>,
    pub name: String,
    pub service_name: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// The attributes the query names, other than `service.name`: (key, value as text).
    pub attributes: Vec<(String, String)>,
}

/// One trace that satisfied the query.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceMatch {
    pub trace_id: Vec<u8>,
    /// The root span's service and name, when the root span has arrived.
    pub root: Option<(String, String)>,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// How many spans matched; `spans` holds the first `spans_per_spanset` of them.
    pub matched: usize,
    pub spans: Vec<SpanMatch>,
}

/// The traces found, newest first, and how much was read to find them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpansetSearch {
    pub traces: Vec<TraceMatch>,
    pub inspected_traces: usize,
    pub inspected_spans: usize,
}

/// At most `limit` traces with spans that started in [start, end] ns and satisfy `query`,
/// reading at most `max_spans` candidate spans. Candidate spans satisfy some filter of the
/// query; their whole trace is then checked.
pub fn search_spansets(
    store: &dyn TraceReader,
    query: &Query,
    start_ns: u64,
    end_ns: u64,
    limit: usize,
    spans_per_spanset: usize,
    max_spans: usize,
) -> Result<SpansetSearch, StorageError> {
    let mut fields = Vec::new();
    query.fields(&mut fields);
    let mut out = SpansetSearch::default();
    let seek = query.seek();
    let found = find_traces(
        store,
        &seek,
        start_ns,
        end_ns,
        limit,
        max_spans,
        &mut |span| {
            if !query.candidate(span) {
                return Ok(false);
            }
            out.inspected_traces += 1;
            let trace = store.trace(&span.span.trace_id)?;
            let Some(matched) = query.eval(&trace) else {
                return Ok(false);
            };
            out.traces
                .push(trace_match(&trace, &matched, &fields, spans_per_spanset));
            Ok(true)
        },
    )?;
    out.inspected_spans = found.spans_inspected;
    Ok(out)
}

fn trace_match(
    trace: &[StoredSpan],
    matched: &[&StoredSpan],
    fields: &[Field],
    spans_per_spanset: usize,
) -> TraceMatch {
    let start = trace
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let end = trace
        .iter()
        .map(|s| s.span.end_time_unix_nano)
        .max()
        .unwrap_or(start);
    let root = trace.iter().find(|s| s.span.parent_span_id.is_empty());
    let spans = matched
        .iter()
        .take(spans_per_spanset)
        .map(|s| SpanMatch {
            span_id: s.span.span_id.clone(),
            name: s.span.name.clone(),
            service_name: s.origin.service_name().to_owned(),
            start_ns: s.span.start_time_unix_nano,
            duration_ns: s
                .span
                .end_time_unix_nano
                .saturating_sub(s.span.start_time_unix_nano),
            attributes: fields
                .iter()
                .filter_map(|f| field_value(s, f))
                .filter(|(k, _)| k != "service.name")
                .collect(),
        })
        .collect();
    TraceMatch {
        trace_id: trace
            .first()
            .map(|s| s.span.trace_id.clone())
            .unwrap_or_default(),
        root: root.map(|r| (r.origin.service_name().to_owned(), r.span.name.clone())),
        start_ns: start,
        duration_ns: end - start,
        matched: matched.len(),
        spans,
    }
}
