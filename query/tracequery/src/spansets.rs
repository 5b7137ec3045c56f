//! TraceQL search as Tempo answers it: the newest traces in a window that satisfy a query,
//! each with its root, time span and the spansets that matched, carrying the attributes the
//! query names. Owns the search loop; the JSON shape is the Tempo API's.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use prost::Message;

use storage::traces::{StoredSpan, TraceReader};
use storage::StorageError;

use crate::search::find_traces;
use crate::traceql::{duration_ns, field_value, Field, Query, SpanRef, Spanset, TraceView, Value};

/// One span of a spanset.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanMatch {
    pub span_id: Vec<u8>,
    pub name: String,
    pub service_name: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// The fields the query names or selects, other than `service.name` and the span's name,
    /// as (label, value); missing ones left out.
    pub attributes: Vec<(String, Value)>,
}

/// One group of matching spans of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct SpansetMatch {
    /// How many spans matched; `spans` holds the first `spans_per_spanset` of them.
    pub matched: usize,
    pub spans: Vec<SpanMatch>,
    /// `by(…)` groups and scalar results, as (label, value).
    pub attributes: Vec<(String, Value)>,
}

/// One trace that satisfied the query.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceMatch {
    pub trace_id: Vec<u8>,
    /// The root span's service and name, when the root span has arrived.
    pub root: Option<(String, String)>,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub spansets: Vec<SpansetMatch>,
}

/// The traces found, newest first, and how much was read to find them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpansetSearch {
    pub traces: Vec<TraceMatch>,
    pub inspected_traces: usize,
    pub inspected_spans: usize,
    /// Encoded size of the candidate spans and the traces read.
    pub inspected_bytes: u64,
    /// The scan budget ran out before `limit` traces were found: older matches may exist.
    pub truncated: bool,
}

/// At most `limit` traces with spans that started in [start, end] ns and satisfy `query`,
/// reading at most `max_spans` candidate spans. Candidate spans may satisfy some filter of the
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
    let found = find_traces(
        store,
        &query.seek(),
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
            out.inspected_bytes += encoded_len(&trace);
            let sets = query.eval(&trace);
            if sets.is_empty() {
                return Ok(false);
            }
            out.traces
                .push(trace_match(&trace, &sets, &fields, spans_per_spanset));
            Ok(true)
        },
    )?;
    out.inspected_spans = found.spans_inspected;
    out.inspected_bytes += found.bytes_inspected;
    out.truncated = found.truncated;
    Ok(out)
}

fn encoded_len(trace: &[StoredSpan]) -> u64 {
    trace.iter().map(|s| s.span.encoded_len() as u64).sum()
}

fn trace_match(
    trace: &[StoredSpan],
    sets: &[Spanset],
    fields: &[Field],
    spans_per_spanset: usize,
) -> TraceMatch {
    let view = TraceView::new(trace);
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
    let span_match = |i: usize| {
        let s = &trace[i];
        SpanMatch {
            span_id: s.span.span_id.clone(),
            name: s.span.name.clone(),
            service_name: s.origin.service_name().to_owned(),
            start_ns: s.span.start_time_unix_nano,
            duration_ns: duration_ns(s),
            attributes: fields
                .iter()
                .filter(|f| !is_shown_anyway(f))
                .map(|f| (f.label(), field_value(f, SpanRef::in_trace(&view, i))))
                .filter(|(_, v)| *v != Value::Nil)
                .collect(),
        }
    };
    TraceMatch {
        trace_id: trace
            .first()
            .map(|s| s.span.trace_id.clone())
            .unwrap_or_default(),
        root: root.map(|r| (r.origin.service_name().to_owned(), r.span.name.clone())),
        start_ns: start,
        duration_ns: end - start,
        spansets: sets
            .iter()
            .map(|set| SpansetMatch {
                matched: set.spans.len(),
                spans: set
                    .spans
                    .iter()
                    .take(spans_per_spanset)
                    .map(|&i| span_match(i))
                    .collect(),
                attributes: set.attributes.clone(),
            })
            .collect(),
    }
}

/// Fields every result span carries in its own slot (Tempo's `name`, `service.name`, duration).
fn is_shown_anyway(f: &Field) -> bool {
    use crate::traceql::{Intrinsic, Scope};
    matches!(f, Field::Intrinsic(Intrinsic::Name | Intrinsic::Duration))
        || matches!(f, Field::Attr { scope: Scope::Resource, key } if key == "service.name")
}

/// What [`for_each_result_span`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultScan {
    pub spans_inspected: usize,
    pub traces_read: usize,
    /// Encoded size of the candidate spans and the traces read.
    pub bytes_inspected: u64,
    /// The budget ran out: spans older than the last one read were not visited.
    pub truncated: bool,
}

/// Visits every span that started in [start, end] ns and is in the query's result (metrics,
/// tag values of matching spans), newest first, reading at most `max_spans` candidates.
///
/// Candidates come from the index every result span is under ([`Query::result_seek`]). A span
/// that a lone filter decides on its own is visited or not directly; otherwise its trace is
/// read once and evaluated whole, and the span visited if the trace's result holds it.
pub fn for_each_result_span(
    store: &dyn TraceReader,
    query: &Query,
    start_ns: u64,
    end_ns: u64,
    max_spans: usize,
    visit: &mut dyn FnMut(&StoredSpan),
) -> Result<ResultScan, StorageError> {
    try_for_each_result_span(store, query, start_ns, end_ns, max_spans, &mut |span| {
        visit(span);
        Ok(())
    })
}

/// [`for_each_result_span`] with a visitor that reads the store too: its first error ends the
/// scan.
pub fn try_for_each_result_span(
    store: &dyn TraceReader,
    query: &Query,
    start_ns: u64,
    end_ns: u64,
    max_spans: usize,
    visit: &mut dyn FnMut(&StoredSpan) -> Result<(), StorageError>,
) -> Result<ResultScan, StorageError> {
    let single = query.pipeline.single_filter();
    // Per trace read: the ids of its result spans.
    let mut traces: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    let mut out = ResultScan::default();
    store.scan(&query.result_seek(), start_ns, end_ns, &mut |c| {
        if out.spans_inspected == max_spans {
            out.truncated = true;
            return Ok(ControlFlow::Break(()));
        }
        out.spans_inspected += 1;
        let Some(span) = c.load()? else {
            return Ok(ControlFlow::Continue(()));
        };
        out.bytes_inspected += span.span.encoded_len() as u64;
        if !query.candidate(&span) {
            return Ok(ControlFlow::Continue(()));
        }
        let in_result = match single.and_then(|cond| cond.check(SpanRef::alone(&span))) {
            Some(decided) => decided,
            None => {
                let ids = match traces.get(&span.span.trace_id) {
                    Some(ids) => ids,
                    None => {
                        let trace = store.trace(&span.span.trace_id)?;
                        out.bytes_inspected += encoded_len(&trace);
                        let ids: HashSet<Vec<u8>> = query
                            .eval(&trace)
                            .iter()
                            .flat_map(|set| {
                                set.spans.iter().map(|&i| trace[i].span.span_id.clone())
                            })
                            .collect();
                        traces.entry(span.span.trace_id.clone()).or_insert(ids)
                    }
                };
                ids.contains(&span.span.span_id)
            }
        };
        if in_result {
            visit(&span)?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    out.traces_read = traces.len();
    Ok(out)
}
