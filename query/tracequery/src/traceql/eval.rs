//! Evaluating TraceQL on stored spans. Owns field lookup (intrinsics, scoped attributes, the
//! trace-level values a [`TraceView`] computes once per trace), comparison semantics (a missing
//! attribute satisfies only `!=` and `= nil`; numbers, durations and strings compare within
//! their kind; tag search's strings compare with other types as text), the spanset operators
//! over the span tree and the pipeline stages. A condition checked on a span alone answers
//! "unknown" for trace-level fields, so callers can filter candidates before loading traces.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use regex::Regex;
use storage::traces::StoredSpan;

use super::ast::*;
use crate::search::hex;

/// A trace's spans with what TraceQL derives from their tree: parents, root, time span and
/// nested-set numbers (Tempo's `nestedSetLeft/Right/Parent`, root spans have parent -1).
pub struct TraceView<'a> {
    pub spans: &'a [StoredSpan],
    parent: Vec<Option<usize>>,
    root: Option<usize>,
    start_ns: u64,
    end_ns: u64,
    /// (left, right, parent's left or -1) per span.
    nested: Vec<(i64, i64, i64)>,
}

impl<'a> TraceView<'a> {
    pub fn new(spans: &'a [StoredSpan]) -> TraceView<'a> {
        let index: HashMap<&[u8], usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span.span_id.as_slice(), i))
            .collect();
        let parent: Vec<Option<usize>> = spans
            .iter()
            .map(|s| index.get(s.span.parent_span_id.as_slice()).copied())
            .collect();
        let root = spans.iter().position(|s| s.span.parent_span_id.is_empty());
        let start_ns = spans
            .iter()
            .map(|s| s.span.start_time_unix_nano)
            .min()
            .unwrap_or(0);
        let end_ns = spans
            .iter()
            .map(|s| s.span.end_time_unix_nano)
            .max()
            .unwrap_or(start_ns);
        let mut view = TraceView {
            spans,
            parent,
            root,
            start_ns,
            end_ns,
            nested: vec![(0, 0, -1); spans.len()],
        };
        view.number_nested_sets();
        view
    }

    /// Depth-first numbering, children in start-time order, iterative (traces can be deep).
    fn number_nested_sets(&mut self) {
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.spans.len()];
        let mut tops = Vec::new();
        for (i, p) in self.parent.iter().enumerate() {
            match p {
                Some(p) if *p != i => children[*p].push(i),
                _ => tops.push(i),
            }
        }
        let start = |i: &usize| self.spans[*i].span.start_time_unix_nano;
        for c in &mut children {
            c.sort_by_key(start);
        }
        tops.sort_by_key(start);
        let mut next = 1i64;
        let mut visited = vec![false; self.spans.len()];
        for top in tops {
            // (span, parent's left, whether its children were pushed)
            let mut stack = vec![(top, -1i64, false)];
            while let Some((i, parent_left, expanded)) = stack.pop() {
                if expanded {
                    self.nested[i].1 = next;
                    next += 1;
                    continue;
                }
                if visited[i] {
                    continue;
                }
                visited[i] = true;
                self.nested[i] = (next, 0, parent_left);
                next += 1;
                stack.push((i, parent_left, true));
                let left = self.nested[i].0;
                for &c in children[i].iter().rev() {
                    stack.push((c, left, false));
                }
            }
        }
    }

    /// Every span as one spanset: the input of a pipeline.
    pub fn all(&self) -> Spanset {
        Spanset {
            spans: (0..self.spans.len()).collect(),
            attributes: Vec::new(),
        }
    }

    fn ancestors(&self, mut i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut steps = 0;
        std::iter::from_fn(move || {
            let p = self.parent[i]?;
            // A malformed trace can have a parent cycle; a chain longer than the trace is one.
            steps += 1;
            if steps > self.spans.len() {
                return None;
            }
            i = p;
            Some(p)
        })
    }
}

/// Spans of one trace that matched, with the attributes of how they were grouped (`by(…)`) and
/// scalar results (`count()`, `avg(…)`) as Tempo reports them with a spanset.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanset {
    /// Indexes into the trace's spans, ascending.
    pub spans: Vec<usize>,
    pub attributes: Vec<(String, Value)>,
}

/// A span being checked, with its trace when known.
#[derive(Clone, Copy)]
pub struct SpanRef<'a> {
    pub span: &'a StoredSpan,
    pub trace: Option<(&'a TraceView<'a>, usize)>,
}

impl<'a> SpanRef<'a> {
    pub fn alone(span: &'a StoredSpan) -> SpanRef<'a> {
        SpanRef { span, trace: None }
    }

    pub fn in_trace(view: &'a TraceView<'a>, i: usize) -> SpanRef<'a> {
        SpanRef {
            span: &view.spans[i],
            trace: Some((view, i)),
        }
    }
}

fn any_value(v: &Any) -> Value {
    match v {
        Any::StringValue(s) => Value::Str(s.clone()),
        Any::IntValue(i) => Value::Int(*i),
        Any::DoubleValue(d) => Value::Float(*d),
        Any::BoolValue(b) => Value::Bool(*b),
        _ => Value::Nil,
    }
}

fn find(kvs: &[KeyValue], key: &str) -> Option<Value> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(any_value)
}

/// TraceQL's name of a span's status (`error`, `ok`, `unset`).
pub fn status(s: &StoredSpan) -> &'static str {
    match s
        .span
        .status
        .as_ref()
        .map(|st| StatusCode::try_from(st.code))
    {
        Some(Ok(StatusCode::Error)) => "error",
        Some(Ok(StatusCode::Ok)) => "ok",
        _ => "unset",
    }
}

/// TraceQL's name of a span's kind (`server`, `client`, …, `unspecified`).
pub fn kind(s: &StoredSpan) -> &'static str {
    match SpanKind::try_from(s.span.kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "unspecified",
    }
}

pub(crate) fn duration_ns(s: &StoredSpan) -> u64 {
    s.span
        .end_time_unix_nano
        .saturating_sub(s.span.start_time_unix_nano)
}

/// What a field holds on a span: `Some(values)` (several for events and links, `[Nil]` when
/// missing), or `None` when it depends on a trace the span was not given with.
pub fn field_values(f: &Field, r: SpanRef<'_>) -> Option<Vec<Value>> {
    let s = r.span;
    let one = |v: Value| Some(vec![v]);
    let resource = || s.origin.resource_attributes();
    let scope = || {
        s.origin
            .skeleton
            .scope_spans
            .first()
            .and_then(|ss| ss.scope.as_ref())
    };
    let or_nil = |vs: Vec<Value>| {
        if vs.is_empty() {
            vec![Value::Nil]
        } else {
            vs
        }
    };
    match f {
        Field::Intrinsic(i) => match i {
            Intrinsic::Name => one(Value::Str(s.span.name.clone())),
            Intrinsic::Status => one(Value::Status(status(s))),
            Intrinsic::StatusMessage => one(Value::Str(
                s.span
                    .status
                    .as_ref()
                    .map(|x| x.message.clone())
                    .unwrap_or_default(),
            )),
            Intrinsic::Kind => one(Value::Kind(kind(s))),
            Intrinsic::Duration => one(Value::Duration(duration_ns(s))),
            Intrinsic::SpanId => one(Value::Str(hex(&s.span.span_id))),
            Intrinsic::ParentId => one(if s.span.parent_span_id.is_empty() {
                Value::Nil
            } else {
                Value::Str(hex(&s.span.parent_span_id))
            }),
            Intrinsic::TraceId => one(Value::Str(hex(&s.span.trace_id))),
            Intrinsic::EventName => Some(or_nil(
                s.span
                    .events
                    .iter()
                    .map(|e| Value::Str(e.name.clone()))
                    .collect(),
            )),
            Intrinsic::EventTimeSinceStart => Some(or_nil(
                s.span
                    .events
                    .iter()
                    .map(|e| {
                        Value::Duration(
                            e.time_unix_nano.saturating_sub(s.span.start_time_unix_nano),
                        )
                    })
                    .collect(),
            )),
            Intrinsic::LinkTraceId => Some(or_nil(
                s.span
                    .links
                    .iter()
                    .map(|l| Value::Str(hex(&l.trace_id)))
                    .collect(),
            )),
            Intrinsic::LinkSpanId => Some(or_nil(
                s.span
                    .links
                    .iter()
                    .map(|l| Value::Str(hex(&l.span_id)))
                    .collect(),
            )),
            Intrinsic::ScopeName => {
                one(scope().map_or(Value::Nil, |sc| Value::Str(sc.name.clone())))
            }
            Intrinsic::ScopeVersion => {
                one(scope().map_or(Value::Nil, |sc| Value::Str(sc.version.clone())))
            }
            trace_level => {
                let (view, i) = r.trace?;
                let root = view.root.map(|x| &view.spans[x]);
                one(match trace_level {
                    Intrinsic::TraceDuration => Value::Duration(view.end_ns - view.start_ns),
                    Intrinsic::RootName => {
                        root.map_or(Value::Nil, |x| Value::Str(x.span.name.clone()))
                    }
                    Intrinsic::RootService => root.map_or(Value::Nil, |x| {
                        Value::Str(x.origin.service_name().to_owned())
                    }),
                    Intrinsic::NestedSetLeft => Value::Int(view.nested[i].0),
                    Intrinsic::NestedSetRight => Value::Int(view.nested[i].1),
                    _ => Value::Int(view.nested[i].2),
                })
            }
        },
        Field::Attr { scope: sc, key } => one(match sc {
            Scope::Span => find(&s.span.attributes, key).unwrap_or(Value::Nil),
            Scope::Resource => find(resource(), key).unwrap_or(Value::Nil),
            Scope::Any => find(&s.span.attributes, key)
                .or_else(|| find(resource(), key))
                .unwrap_or(Value::Nil),
            Scope::Instrumentation => scope()
                .and_then(|sc| find(&sc.attributes, key))
                .unwrap_or(Value::Nil),
            Scope::Event => {
                return Some(or_nil(
                    s.span
                        .events
                        .iter()
                        .filter_map(|e| find(&e.attributes, key))
                        .collect(),
                ))
            }
            Scope::Link => {
                return Some(or_nil(
                    s.span
                        .links
                        .iter()
                        .filter_map(|l| find(&l.attributes, key))
                        .collect(),
                ))
            }
        }),
    }
}

/// The one value a field has on a span (the first of several), `Nil` when missing or unknown.
pub fn field_value(f: &Field, r: SpanRef<'_>) -> Value {
    field_values(f, r)
        .and_then(|vs| vs.into_iter().next())
        .unwrap_or(Value::Nil)
}

fn cmp_ord(o: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        Op::Re | Op::NotRe => false,
    }
}

fn cmp_str(a: &str, op: Op, b: &str, re: Option<&Regex>) -> bool {
    match op {
        Op::Re => re.is_some_and(|r| r.is_match(a)),
        Op::NotRe => re.is_some_and(|r| !r.is_match(a)),
        _ => cmp_ord(a.cmp(b), op),
    }
}

/// `a op b` with TraceQL's typing rules.
pub fn compare(a: &Value, op: Op, b: &Value, re: Option<&Regex>) -> bool {
    match (a, b) {
        (Value::Nil, Value::Nil) => op == Op::Eq,
        (Value::Nil, _) | (_, Value::Nil) => op == Op::Ne,
        (Value::Str(x), Value::Str(y)) => cmp_str(x, op, y, re),
        (Value::Bool(x), Value::Bool(y)) => match op {
            Op::Eq => x == y,
            Op::Ne => x != y,
            _ => false,
        },
        (Value::Status(x), Value::Status(y)) | (Value::Kind(x), Value::Kind(y)) => match op {
            Op::Eq => x == y,
            Op::Ne => x != y,
            _ => false,
        },
        // Tag search sends every value as a string: compare other types as their text.
        (x, Value::Str(y)) => cmp_str(&x.text(), op, y, re),
        (Value::Str(x), y) => cmp_str(x, op, &y.text(), re),
        (x, y) => match (x.number(), y.number()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).is_some_and(|o| cmp_ord(o, op)),
            _ => false,
        },
    }
}

/// Kleene logic: `None` is unknown.
fn and3(a: Option<bool>, b: impl FnOnce() -> Option<bool>) -> Option<bool> {
    match a {
        Some(false) => Some(false),
        a => match (a, b()) {
            (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
    }
}

fn or3(a: Option<bool>, b: impl FnOnce() -> Option<bool>) -> Option<bool> {
    match a {
        Some(true) => Some(true),
        a => match (a, b()) {
            (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
    }
}

fn operand_values(o: &Operand, r: SpanRef<'_>) -> Option<Vec<Value>> {
    match o {
        Operand::Value(v) => Some(vec![v.clone()]),
        Operand::Field(f) => field_values(f, r),
    }
}

impl Cond {
    /// Whether the span satisfies the condition; `None` when that depends on the trace and
    /// the span was given alone.
    pub fn check(&self, r: SpanRef<'_>) -> Option<bool> {
        match self {
            Cond::And(a, b) => and3(a.check(r), || b.check(r)),
            Cond::Or(a, b) => or3(a.check(r), || b.check(r)),
            Cond::Not(c) => c.check(r).map(|b| !b),
            Cond::Bare(o) => {
                let vs = operand_values(o, r)?;
                Some(vs.contains(&Value::Bool(true)))
            }
            Cond::Cmp { lhs, op, rhs, re } => {
                if let Some(known) = root_shortcut(lhs, *op, rhs, r) {
                    return Some(known);
                }
                let a = operand_values(lhs, r)?;
                let b = operand_values(rhs, r)?;
                Some(
                    a.iter()
                        .any(|x| b.iter().any(|y| compare(x, *op, y, re.as_ref()))),
                )
            }
        }
    }

    pub fn matches(&self, r: SpanRef<'_>) -> bool {
        self.check(r) == Some(true)
    }

    /// Fields named by the comparisons, for the matched spans' attributes in results.
    pub fn fields(&self, out: &mut Vec<Field>) {
        match self {
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Cond::Not(c) => c.fields(out),
            Cond::Bare(o) => push_operand(o, out),
            Cond::Cmp { lhs, rhs, .. } => {
                push_operand(lhs, out);
                push_operand(rhs, out);
            }
        }
    }
}

fn push_operand(o: &Operand, out: &mut Vec<Field>) {
    if let Operand::Field(f) = o {
        if !out.contains(f) {
            out.push(f.clone());
        }
    }
}

/// `nestedSetParent < 0` is how Grafana's Traces Drilldown asks for root spans. Alone, a span
/// knows whether it is a root (−1) and that otherwise its parent's number is at least 1: enough
/// to answer most comparisons with a constant without the trace.
fn root_shortcut(lhs: &Operand, op: Op, rhs: &Operand, r: SpanRef<'_>) -> Option<bool> {
    if r.trace.is_some() {
        return None;
    }
    let (Operand::Field(Field::Intrinsic(Intrinsic::NestedSetParent)), Operand::Value(v)) =
        (lhs, rhs)
    else {
        return None;
    };
    let x = v.number()?;
    if r.span.span.parent_span_id.is_empty() {
        return Some(compare(&Value::Int(-1), op, &Value::Float(x), None));
    }
    // The value is some n ≥ 1: answer only when every such n gives the same answer.
    match op {
        Op::Lt if x <= 1.0 => Some(false),
        Op::Le | Op::Eq if x < 1.0 => Some(false),
        Op::Ne | Op::Gt if x < 1.0 => Some(true),
        Op::Ge if x <= 1.0 => Some(true),
        _ => None,
    }
}

fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = a.iter().chain(b).copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The spans of `rhs` that stand in `rel` to some span of `lhs`.
fn related(view: &TraceView<'_>, rel: Relation, lhs: &[usize], rhs: &[usize]) -> Vec<bool> {
    let n = view.spans.len();
    let mut in_lhs = vec![false; n];
    for &i in lhs {
        in_lhs[i] = true;
    }
    match rel {
        Relation::Child => rhs
            .iter()
            .map(|&i| view.parent[i].is_some_and(|p| in_lhs[p]))
            .collect(),
        Relation::Descendant => rhs
            .iter()
            .map(|&i| view.ancestors(i).any(|p| in_lhs[p]))
            .collect(),
        Relation::Parent | Relation::Ancestor => {
            let mut marked = vec![false; n];
            for &i in lhs {
                if rel == Relation::Parent {
                    if let Some(p) = view.parent[i] {
                        marked[p] = true;
                    }
                } else {
                    for p in view.ancestors(i) {
                        marked[p] = true;
                    }
                }
            }
            rhs.iter().map(|&i| marked[i]).collect()
        }
        Relation::Sibling => {
            let mut per_parent: HashMap<usize, usize> = HashMap::new();
            for &i in lhs {
                if let Some(p) = view.parent[i] {
                    *per_parent.entry(p).or_default() += 1;
                }
            }
            rhs.iter()
                .map(|&i| {
                    view.parent[i].is_some_and(|p| {
                        per_parent.get(&p).copied().unwrap_or(0) > usize::from(in_lhs[i])
                    })
                })
                .collect()
        }
    }
}

fn pick(spans: &[usize], keep: &[bool], want: bool) -> Vec<usize> {
    spans
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k == want)
        .map(|(i, _)| *i)
        .collect()
}

impl SpansetExpr {
    /// The spans of `input` the expression selects.
    pub fn eval(&self, view: &TraceView<'_>, input: &Spanset) -> Vec<usize> {
        match self {
            SpansetExpr::Filter(c) => input
                .spans
                .iter()
                .copied()
                .filter(|&i| c.matches(SpanRef::in_trace(view, i)))
                .collect(),
            SpansetExpr::Pipeline(p) => {
                let sets = p.eval(view, vec![input.clone()]);
                let mut out: Vec<usize> = sets.into_iter().flat_map(|s| s.spans).collect();
                out.sort_unstable();
                out.dedup();
                out
            }
            SpansetExpr::Op(op, a, b) => {
                let l = a.eval(view, input);
                let r = b.eval(view, input);
                match op {
                    SetOp::And if l.is_empty() || r.is_empty() => Vec::new(),
                    SetOp::And | SetOp::Or => union(&l, &r),
                    SetOp::Child
                    | SetOp::Parent
                    | SetOp::Descendant
                    | SetOp::Ancestor
                    | SetOp::Sibling => {
                        let rel = match op {
                            SetOp::Child => Relation::Child,
                            SetOp::Parent => Relation::Parent,
                            SetOp::Descendant => Relation::Descendant,
                            SetOp::Ancestor => Relation::Ancestor,
                            _ => Relation::Sibling,
                        };
                        pick(&r, &related(view, rel, &l, &r), true)
                    }
                    SetOp::Not(rel) => pick(&r, &related(view, *rel, &l, &r), false),
                    SetOp::Union(rel) => union(
                        &pick(&r, &related(view, *rel, &l, &r), true),
                        &pick(&l, &related(view, rel.reverse(), &r, &l), true),
                    ),
                }
            }
        }
    }

    /// Whether a span could be among the selected ones (some filter of the expression may
    /// hold on it): spans failing this need not be read further.
    pub fn candidate(&self, r: SpanRef<'_>) -> bool {
        match self {
            SpansetExpr::Filter(c) => c.check(r) != Some(false),
            SpansetExpr::Pipeline(p) => p.candidate(r),
            SpansetExpr::Op(_, a, b) => a.candidate(r) || b.candidate(r),
        }
    }

    pub fn fields(&self, out: &mut Vec<Field>) {
        match self {
            SpansetExpr::Filter(c) => c.fields(out),
            SpansetExpr::Pipeline(p) => p.fields(out),
            SpansetExpr::Op(_, a, b) => {
                a.fields(out);
                b.fields(out);
            }
        }
    }
}

fn aggregate(agg: Agg, field: Option<&Field>, view: &TraceView<'_>, spans: &[usize]) -> f64 {
    if agg == Agg::Count {
        return spans.len() as f64;
    }
    let values: Vec<f64> = spans
        .iter()
        .filter_map(|&i| field.and_then(|f| field_value(f, SpanRef::in_trace(view, i)).number()))
        .collect();
    if values.is_empty() {
        return f64::NAN;
    }
    match agg {
        Agg::Avg => values.iter().sum::<f64>() / values.len() as f64,
        Agg::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Agg::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => values.iter().sum(),
    }
}

impl Pipeline {
    /// Runs the stages over a trace's spansets; what is left matched.
    pub fn eval(&self, view: &TraceView<'_>, mut sets: Vec<Spanset>) -> Vec<Spanset> {
        for stage in &self.stages {
            sets = match stage {
                Stage::Spanset(e) => sets
                    .into_iter()
                    .filter_map(|s| {
                        let spans = e.eval(view, &s);
                        (!spans.is_empty()).then_some(Spanset {
                            spans,
                            attributes: s.attributes,
                        })
                    })
                    .collect(),
                Stage::Scalar {
                    agg,
                    field,
                    op,
                    value,
                } => sets
                    .into_iter()
                    .filter_map(|mut s| {
                        let v = aggregate(*agg, field.as_ref(), view, &s.spans);
                        if !compare(&Value::Float(v), *op, &Value::Float(*value), None) {
                            return None;
                        }
                        let name = match field {
                            Some(f) => format!("{}({})", agg.name(), f.label()),
                            None => format!("{}()", agg.name()),
                        };
                        s.attributes.push((name, Value::Float(v)));
                        Some(s)
                    })
                    .collect(),
                Stage::By(f) => {
                    let mut out = Vec::new();
                    for s in sets {
                        let mut groups: BTreeMap<String, (Value, Vec<usize>)> = BTreeMap::new();
                        for &i in &s.spans {
                            let v = field_value(f, SpanRef::in_trace(view, i));
                            groups
                                .entry(format!("{v:?}"))
                                .or_insert_with(|| (v, Vec::new()))
                                .1
                                .push(i);
                        }
                        for (_, (v, spans)) in groups {
                            let mut attributes = s.attributes.clone();
                            attributes.push((format!("by({})", f.label()), v));
                            out.push(Spanset { spans, attributes });
                        }
                    }
                    out
                }
                Stage::Select(_) => sets,
                Stage::Coalesce => {
                    let spans = sets.iter().fold(Vec::new(), |acc, s| union(&acc, &s.spans));
                    if spans.is_empty() {
                        Vec::new()
                    } else {
                        vec![Spanset {
                            spans,
                            attributes: Vec::new(),
                        }]
                    }
                }
            };
            if sets.is_empty() {
                break;
            }
        }
        sets
    }

    /// Whether a span could be part of a match: it may satisfy a filter of the first stage
    /// (later stages only narrow what the first selected).
    pub fn candidate(&self, r: SpanRef<'_>) -> bool {
        match self.stages.first() {
            Some(Stage::Spanset(e)) => e.candidate(r),
            _ => true,
        }
    }

    /// The fields a result span shows: those compared on and those selected.
    pub fn fields(&self, out: &mut Vec<Field>) {
        for stage in &self.stages {
            match stage {
                Stage::Spanset(e) => e.fields(out),
                Stage::Select(fs) => {
                    for f in fs {
                        if !out.contains(f) {
                            out.push(f.clone());
                        }
                    }
                }
                Stage::By(f) | Stage::Scalar { field: Some(f), .. } if !out.contains(f) => {
                    out.push(f.clone());
                }
                _ => {}
            }
        }
    }

    /// With only one filter, a span alone decides (when its fields are its own).
    pub fn single_filter(&self) -> Option<&Cond> {
        match self.stages.as_slice() {
            [Stage::Spanset(SpansetExpr::Filter(c))] => Some(c),
            _ => None,
        }
    }
}
