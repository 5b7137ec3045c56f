//! TraceQL's `compare()` as Tempo computes it (`MetricsCompare`): the query's spans split into
//! a selection (the filter matches, and the span started within the window when one is given)
//! and a baseline (the rest); per group, each attribute value's spans counted per step, the top
//! N values kept, and each attribute's total (the group's spans that have it). Owns which
//! attributes a span shows (Tempo's "select all") and the series' `__meta_type` labels, which
//! Grafana's Traces Drilldown groups by.

use std::collections::{BTreeSet, HashMap, HashSet};

use prost::Message;
use storage::traces::{StoredSpan, TraceReader};
use storage::StorageError;

use super::{Exemplar, MetricsRequest, Series, Steps};
use crate::spansets::{try_for_each_result_span, ResultScan};
use crate::traceql::{
    field_value, Compare, Field, Intrinsic, Query, Scope, SpanRef, TraceView, Value,
};

/// The label naming a series' group and kind.
const META_TYPE: &str = "__meta_type";

/// `__meta_type` of the value series and of the totals, baseline first (a group's index).
const GROUPS: [(&str, &str); 2] = [
    ("baseline", "baseline_total"),
    ("selection", "selection_total"),
];

/// Intrinsics every span shows, as Tempo's select-all reads them (the scope's name and version
/// only when the span has a scope).
const INTRINSICS: [Intrinsic; 6] = [
    Intrinsic::Name,
    Intrinsic::Status,
    Intrinsic::StatusMessage,
    Intrinsic::Kind,
    Intrinsic::ScopeName,
    Intrinsic::ScopeVersion,
];

/// A value's spans per step, kept sparse: `(step, count)` runs in the order spans come (newest
/// first, so a value's step mostly repeats), summed when made dense. A high-cardinality
/// attribute (an id per span) then costs one run per span, not one cell per step per value.
#[derive(Default)]
struct Counts {
    total: f64,
    runs: Vec<(usize, f64)>,
}

impl Counts {
    fn add(&mut self, step: usize) {
        self.total += 1.0;
        match self.runs.last_mut() {
            Some((s, n)) if *s == step => *n += 1.0,
            _ => self.runs.push((step, 1.0)),
        }
    }

    fn dense(&self, steps: usize) -> Vec<f64> {
        let mut out = vec![0.0; steps];
        for &(s, n) in &self.runs {
            out[s] += n;
        }
        out
    }
}

/// One attribute in one group: each value (keyed by value and type, as Tempo's map key is) and
/// the spans that have the attribute at all.
#[derive(Default)]
struct Attribute {
    values: HashMap<String, (Value, Counts)>,
    total: Counts,
}

/// What a read trace tells about its spans: its root's name and service, and which spans the
/// selection filter matches (for filters a span alone cannot decide, such as `rootName`).
struct TraceFacts {
    root: Option<(String, String)>,
    selected: HashSet<Vec<u8>>,
}

struct Comparison<'a> {
    c: &'a Compare,
    steps: Steps,
    req: MetricsRequest,
    /// Per group: attributes by label.
    groups: [HashMap<String, Attribute>; 2],
    /// Per group: exemplars with the labels of the attributes their span shows (Tempo puts an
    /// exemplar on the total of each of them), and the window's parts that have one.
    exemplars: [Vec<(Exemplar, Vec<String>)>; 2],
    exemplar_slots: [HashSet<usize>; 2],
    traces: HashMap<Vec<u8>, TraceFacts>,
    bytes_read: u64,
}

impl Comparison<'_> {
    fn observe(&mut self, store: &dyn TraceReader, span: &StoredSpan) -> Result<(), StorageError> {
        let ts = span.span.start_time_unix_nano;
        let Some(step) = self.steps.index(ts) else {
            return Ok(());
        };
        // Tempo's window is right-closed, as its steps are.
        let in_window = self.c.window.is_none_or(|(s, e)| ts > s && ts <= e);
        let alone = if in_window {
            self.c.selection.check(SpanRef::alone(span))
        } else {
            Some(false)
        };
        let is_root = span.span.parent_span_id.is_empty();
        let facts = if is_root && alone.is_some() {
            None
        } else {
            Some(self.facts(store, span)?)
        };
        let selected =
            alone.unwrap_or_else(|| facts.is_some_and(|f| f.selected.contains(&span.span.span_id)));
        let root = if is_root {
            Some((span.span.name.as_str(), span.origin.service_name()))
        } else {
            facts
                .and_then(|f| f.root.as_ref())
                .map(|(name, service)| (name.as_str(), service.as_str()))
        };
        let shown = attributes(span, root);
        let g = usize::from(selected);
        if let Some(slot) = self.steps.exemplar_slot(ts, self.req.exemplars) {
            if self.exemplar_slots[g].insert(slot) {
                let exemplar = Exemplar {
                    trace_id: span.span.trace_id.clone(),
                    span_id: span.span.span_id.clone(),
                    // Tempo gives compare()'s exemplars no value.
                    value: f64::NAN,
                    timestamp_ms: (ts / 1_000_000) as i64,
                };
                let labels = shown.iter().map(|(l, _)| l.clone()).collect();
                self.exemplars[g].push((exemplar, labels));
            }
        }
        for (label, value) in shown {
            let attr = self.groups[g].entry(label).or_default();
            attr.total.add(step);
            attr.values
                .entry(format!("{value:?}"))
                .or_insert_with(|| (value, Counts::default()))
                .1
                .add(step);
        }
        Ok(())
    }

    /// The facts of the span's trace, read once per trace.
    fn facts(
        &mut self,
        store: &dyn TraceReader,
        span: &StoredSpan,
    ) -> Result<&TraceFacts, StorageError> {
        let id = &span.span.trace_id;
        if !self.traces.contains_key(id) {
            let trace = store.trace(id)?;
            self.bytes_read += trace
                .iter()
                .map(|s| s.span.encoded_len() as u64)
                .sum::<u64>();
            let view = TraceView::new(&trace);
            let selected = (0..trace.len())
                .filter(|&i| self.c.selection.matches(SpanRef::in_trace(&view, i)))
                .map(|i| trace[i].span.span_id.clone())
                .collect();
            let root = trace
                .iter()
                .find(|s| s.span.parent_span_id.is_empty())
                .map(|r| (r.span.name.clone(), r.origin.service_name().to_owned()));
            self.traces
                .insert(id.clone(), TraceFacts { root, selected });
        }
        Ok(&self.traces[id])
    }

    /// The series: per attribute in name order, each group's top values, then each group's
    /// total; attributes past the series limit are left out whole (the bool says so).
    fn finish(self) -> (Vec<Series>, bool) {
        let steps = self.steps;
        let series = |kind: &str, name: &str, value: Value, values: Vec<f64>, exemplars| Series {
            labels: vec![
                (META_TYPE.to_owned(), Value::Str(kind.to_owned())),
                (name.to_owned(), value),
            ],
            // Every step, zeros included: Tempo's counts start at zero, and only NaN is left out.
            samples: values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (steps.timestamp_ms(i), v))
                .collect(),
            exemplars,
        };
        let mut exemplars: [HashMap<&str, Vec<Exemplar>>; 2] = Default::default();
        for (g, list) in self.exemplars.iter().enumerate() {
            for (e, labels) in list {
                for l in labels {
                    exemplars[g].entry(l).or_default().push(e.clone());
                }
            }
        }
        let names: BTreeSet<&String> = self.groups.iter().flat_map(|g| g.keys()).collect();
        let mut out = Vec::new();
        for name in names {
            let mut these = Vec::new();
            for (g, &(values_type, _)) in GROUPS.iter().enumerate() {
                let Some(attr) = self.groups[g].get(name) else {
                    continue;
                };
                for (value, counts) in top(attr, self.c.top_n) {
                    these.push(series(
                        values_type,
                        name,
                        value.clone(),
                        counts.dense(steps.count),
                        Vec::new(),
                    ));
                }
            }
            for (g, &(_, total_type)) in GROUPS.iter().enumerate() {
                let Some(attr) = self.groups[g].get(name) else {
                    continue;
                };
                // A total's attribute label has no value: Tempo prints it as "nil".
                let e = exemplars[g].remove(name.as_str()).unwrap_or_default();
                these.push(series(
                    total_type,
                    name,
                    Value::Nil,
                    attr.total.dense(steps.count),
                    e,
                ));
            }
            if out.len() + these.len() > self.req.max_series {
                return (out, true);
            }
            out.extend(these);
        }
        (out, false)
    }
}

/// The `n` most frequent values of an attribute, as Tempo ranks them (by count over the whole
/// range); ties, which Tempo leaves to an unstable sort, go to the smaller value text.
fn top(attr: &Attribute, n: usize) -> Vec<&(Value, Counts)> {
    let mut values: Vec<&(Value, Counts)> = attr.values.values().collect();
    values.sort_by(|a, b| {
        b.1.total
            .total_cmp(&a.1.total)
            .then_with(|| a.0.text().cmp(&b.0.text()))
    });
    values.truncate(n);
    values
}

/// The attributes a span shows to `compare()`, named as Tempo prints them: what Tempo's
/// select-all reads (span intrinsics, the trace's root name and service when its root is
/// known, the scope's, resource and span attributes). Left out as Tempo leaves them out:
/// durations, ids, start times and nested-set numbers; events and links (select-all reads
/// them only for a condition on them). Values that are not scalars (arrays, maps, bytes) are
/// left out too.
fn attributes(span: &StoredSpan, root: Option<(&str, &str)>) -> Vec<(String, Value)> {
    let alone = SpanRef::alone(span);
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut show = |f: Field| {
        let v = field_value(&f, alone);
        if v != Value::Nil {
            out.push((f.label(), v));
        }
    };
    for i in INTRINSICS {
        show(Field::Intrinsic(i));
    }
    let scope = span
        .origin
        .skeleton
        .scope_spans
        .first()
        .and_then(|ss| ss.scope.as_ref());
    let scoped = [
        (Scope::Instrumentation, scope.map(|s| &s.attributes[..])),
        (Scope::Resource, Some(span.origin.resource_attributes())),
        (Scope::Span, Some(&span.span.attributes[..])),
    ];
    for (scope, kvs) in scoped {
        for kv in kvs.unwrap_or_default() {
            show(Field::Attr {
                scope,
                key: kv.key.clone(),
            });
        }
    }
    if let Some((name, service)) = root {
        out.push((
            Field::Intrinsic(Intrinsic::RootName).label(),
            Value::Str(name.to_owned()),
        ));
        out.push((
            Field::Intrinsic(Intrinsic::RootService).label(),
            Value::Str(service.to_owned()),
        ));
    }
    out
}

/// `compare()`'s series over the spans of `query`'s result, whether some were left out, and
/// what was read.
pub(super) fn evaluate(
    store: &dyn TraceReader,
    query: &Query,
    c: &Compare,
    steps: Steps,
    req: MetricsRequest,
) -> Result<(Vec<Series>, bool, ResultScan), StorageError> {
    let mut cmp = Comparison {
        c,
        steps,
        req,
        groups: Default::default(),
        exemplars: Default::default(),
        exemplar_slots: Default::default(),
        traces: HashMap::new(),
        bytes_read: 0,
    };
    let (lo, hi) = steps.window();
    let mut read = try_for_each_result_span(store, query, lo, hi, req.max_spans, &mut |span| {
        cmp.observe(store, span)
    })?;
    read.traces_read += cmp.traces.len();
    read.bytes_inspected += cmp.bytes_read;
    let (series, dropped) = cmp.finish();
    Ok((series, dropped, read))
}
