//! The TraceQL syntax tree: fields, values, conditions inside `{ … }`, spanset expressions with
//! their logical and structural operators, pipeline stages and the metrics stage. Owns the
//! shapes and their names as Tempo prints them (series labels, result attributes); parsing is
//! `parse`'s, evaluation `eval`'s.

use regex::Regex;

/// A typed value: a literal of the query or what a field holds on a span.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A missing attribute, or the literal `nil`.
    Nil,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(u64),
    /// `error`, `ok`, `unset`.
    Status(&'static str),
    /// `server`, `client`, `producer`, `consumer`, `internal`, `unspecified`.
    Kind(&'static str),
}

impl Value {
    /// The value as a number, for numeric comparisons and aggregates (durations in ns).
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Duration(d) => Some(*d as f64),
            _ => None,
        }
    }

    /// The value as text the way tag search compares non-string attributes.
    pub fn text(&self) -> String {
        match self {
            Value::Nil => "nil".into(),
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Duration(d) => gocompat::units::format_go_duration(*d as i64),
            Value::Status(s) | Value::Kind(s) => (*s).to_owned(),
        }
    }
}

/// The status keywords, sorted.
pub const STATUSES: [&str; 3] = ["error", "ok", "unset"];
/// The span kind keywords, sorted.
pub const KINDS: [&str; 6] = [
    "client",
    "consumer",
    "internal",
    "producer",
    "server",
    "unspecified",
];

/// Fields TraceQL computes rather than reads from attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    SpanId,
    ParentId,
    TraceId,
    TraceDuration,
    RootName,
    RootService,
    NestedSetParent,
    NestedSetLeft,
    NestedSetRight,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    ScopeName,
    ScopeVersion,
}

impl Intrinsic {
    /// Every spelling TraceQL accepts, with the intrinsic it names.
    pub(crate) const SPELLINGS: [(&'static str, Intrinsic); 31] = [
        ("name", Intrinsic::Name),
        ("span:name", Intrinsic::Name),
        ("status", Intrinsic::Status),
        ("span:status", Intrinsic::Status),
        ("statusMessage", Intrinsic::StatusMessage),
        ("span:statusMessage", Intrinsic::StatusMessage),
        ("kind", Intrinsic::Kind),
        ("span:kind", Intrinsic::Kind),
        ("duration", Intrinsic::Duration),
        ("span:duration", Intrinsic::Duration),
        ("span:id", Intrinsic::SpanId),
        ("span:parentID", Intrinsic::ParentId),
        ("trace:id", Intrinsic::TraceId),
        ("traceDuration", Intrinsic::TraceDuration),
        ("trace:duration", Intrinsic::TraceDuration),
        ("rootName", Intrinsic::RootName),
        ("trace:rootName", Intrinsic::RootName),
        ("rootServiceName", Intrinsic::RootService),
        ("trace:rootService", Intrinsic::RootService),
        ("nestedSetParent", Intrinsic::NestedSetParent),
        ("nestedSetLeft", Intrinsic::NestedSetLeft),
        ("nestedSetRight", Intrinsic::NestedSetRight),
        ("event:name", Intrinsic::EventName),
        ("event:timeSinceStart", Intrinsic::EventTimeSinceStart),
        ("link:traceID", Intrinsic::LinkTraceId),
        ("link:spanID", Intrinsic::LinkSpanId),
        ("instrumentation:name", Intrinsic::ScopeName),
        ("instrumentation:version", Intrinsic::ScopeVersion),
        // Older spellings Tempo still accepts.
        ("parent:id", Intrinsic::ParentId),
        ("span:parentId", Intrinsic::ParentId),
        ("trace:rootServiceName", Intrinsic::RootService),
    ];

    /// The names Tempo lists in its intrinsic tag scope (what Grafana offers to autocomplete).
    pub const LISTED: [&'static str; 25] = [
        "duration",
        "event:name",
        "event:timeSinceStart",
        "instrumentation:name",
        "instrumentation:version",
        "kind",
        "link:spanID",
        "link:traceID",
        "name",
        "rootName",
        "rootServiceName",
        "span:duration",
        "span:id",
        "span:kind",
        "span:name",
        "span:parentID",
        "span:status",
        "span:statusMessage",
        "status",
        "statusMessage",
        "trace:duration",
        "trace:id",
        "trace:rootName",
        "trace:rootService",
        "traceDuration",
    ];

    /// Whether the value depends on the trace around the span, not on the span alone.
    pub fn trace_level(self) -> bool {
        matches!(
            self,
            Intrinsic::TraceDuration
                | Intrinsic::RootName
                | Intrinsic::RootService
                | Intrinsic::NestedSetParent
                | Intrinsic::NestedSetLeft
                | Intrinsic::NestedSetRight
        )
    }
}

/// Where an attribute is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `.x`: the span's attribute, else the resource's.
    Any,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Intrinsic(Intrinsic),
    Attr { scope: Scope, key: String },
}

impl Field {
    /// The field as Tempo prints it: series labels of `by(…)`, result attributes.
    pub fn label(&self) -> String {
        match self {
            Field::Intrinsic(i) => Intrinsic::SPELLINGS
                .iter()
                .find(|(_, x)| x == i)
                .map(|(s, _)| (*s).to_owned())
                .unwrap_or_default(),
            Field::Attr { scope, key } => {
                let prefix = match scope {
                    Scope::Any => "",
                    Scope::Span => "span",
                    Scope::Resource => "resource",
                    Scope::Event => "event",
                    Scope::Link => "link",
                    Scope::Instrumentation => "instrumentation",
                };
                let key = if key
                    .chars()
                    .all(|c| c.is_alphanumeric() || "._-/".contains(c))
                {
                    key.clone()
                } else {
                    format!("{key:?}")
                };
                format!("{prefix}.{key}")
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    NotRe,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Field(Field),
    Value(Value),
}

/// A condition inside `{ … }`, checked on one span.
#[derive(Debug)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp {
        lhs: Operand,
        op: Op,
        rhs: Operand,
        /// The compiled pattern of `=~` / `!~` (anchored at both ends, as Tempo does).
        re: Option<Regex>,
    },
    /// A lone operand: `true`, `false`, or a boolean attribute that must be true.
    Bare(Operand),
}

impl Cond {
    /// `{}`: every span.
    pub fn all() -> Cond {
        Cond::Bare(Operand::Value(Value::Bool(true)))
    }
}

/// Operators between spansets: logical, and structural over the trace's span tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    And,
    Or,
    /// `>`: right spans whose parent is a left span.
    Child,
    /// `<`: right spans that are the parent of a left span.
    Parent,
    /// `>>`: right spans with an ancestor among the left spans.
    Descendant,
    /// `<<`: right spans that are an ancestor of a left span.
    Ancestor,
    /// `~`: right spans with a sibling among the left spans.
    Sibling,
    /// `!>`, `!<`, `!>>`, `!<<`, `!~`: right spans without that relation.
    Not(Relation),
    /// `&>`, `&<`, `&>>`, `&<<`, `&~`: the spans of both sides that are in that relation.
    Union(Relation),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
}

impl Relation {
    /// The same relation seen from the other side.
    pub fn reverse(self) -> Relation {
        match self {
            Relation::Child => Relation::Parent,
            Relation::Parent => Relation::Child,
            Relation::Descendant => Relation::Ancestor,
            Relation::Ancestor => Relation::Descendant,
            Relation::Sibling => Relation::Sibling,
        }
    }
}

#[derive(Debug)]
pub enum SpansetExpr {
    Filter(Cond),
    /// A parenthesised pipeline used as an operand.
    Pipeline(Pipeline),
    Op(SetOp, Box<SpansetExpr>, Box<SpansetExpr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl Agg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
        }
    }
}

#[derive(Debug)]
pub enum Stage {
    Spanset(SpansetExpr),
    /// `count() > 2`, `avg(duration) > 1s`: keeps the spansets whose aggregate compares true.
    Scalar {
        agg: Agg,
        field: Option<Field>,
        op: Op,
        value: f64,
    },
    /// `by(field)`: splits each spanset by the field's value.
    By(Field),
    /// `select(fields)`: adds the fields to the result spans' attributes.
    Select(Vec<Field>),
    /// `coalesce()`: merges the spansets of a trace into one.
    Coalesce,
}

#[derive(Debug)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetricsFn {
    Rate,
    CountOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    AvgOverTime,
    QuantileOverTime(Vec<f64>),
    HistogramOverTime,
}

impl MetricsFn {
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFn::Rate => "rate",
            MetricsFn::CountOverTime => "count_over_time",
            MetricsFn::MinOverTime => "min_over_time",
            MetricsFn::MaxOverTime => "max_over_time",
            MetricsFn::SumOverTime => "sum_over_time",
            MetricsFn::AvgOverTime => "avg_over_time",
            MetricsFn::QuantileOverTime(_) => "quantile_over_time",
            MetricsFn::HistogramOverTime => "histogram_over_time",
        }
    }
}

/// What follows the metrics function: `| topk(n)`, `| bottomk(n)`, or a filter on the values.
#[derive(Clone, Debug, PartialEq)]
pub enum SecondStage {
    TopK(usize),
    BottomK(usize),
    Filter(Op, f64),
}

/// `| rate() by (…)` and the like: turns the matching spans into time series.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub func: MetricsFn,
    /// The field aggregated (`duration`, an attribute); none for `rate` and `count_over_time`.
    pub field: Option<Field>,
    pub by: Vec<Field>,
    pub second: Vec<SecondStage>,
}

/// `compare({filter}, topN, start, end)`: splits the query's spans into a selection (those the
/// filter matches, that started within the window when one is given) and a baseline (the rest),
/// and counts each attribute value in both.
#[derive(Debug)]
pub struct Compare {
    pub selection: Cond,
    /// Values kept per attribute and group, the most frequent first (Tempo's default 10).
    pub top_n: usize,
    /// `(start, end]` in Unix ns: only spans that started within it can be selected.
    pub window: Option<(u64, u64)>,
}

/// What turns a query's spans into series.
#[derive(Debug)]
pub enum MetricsStage {
    /// `rate()`, the `_over_time` family, with `by(…)` and second stages.
    Aggregate(Metrics),
    Compare(Compare),
}

/// A whole query: a spanset pipeline, optionally turned into metrics, with `with(…)` hints.
#[derive(Debug)]
pub struct Query {
    pub pipeline: Pipeline,
    pub metrics: Option<MetricsStage>,
    pub hints: Vec<(String, Value)>,
}

impl Query {
    /// A hint's value, from `with(name=value)`.
    pub fn hint(&self, name: &str) -> Option<&Value> {
        self.hints.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}
