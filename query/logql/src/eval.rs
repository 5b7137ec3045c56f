//! Evaluating LogQL over the log store: log queries (streams, limit, direction) and metric
//! queries (range aggregations over pipeline output, vector aggregations, binary operations)
//! at Loki's step semantics: the window of a step at t is (t - range - offset, t - offset].
//! Owns evaluation; the API's parameter handling and JSON are the `api` crate's.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use storage::logs::{Buckets, Direction, LogQuery, LogReader};
use storage::MatchOp;

use crate::ast::*;
use crate::pipeline::{
    apply_label_filter, index_needles, set_error, unwrap_value, LabelMap, Pipeline, ERROR_LABEL,
    SAMPLE_EXTRACTION_ERR,
};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Parse(#[from] crate::parser::ParseError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Storage(#[from] storage::StorageError),
    #[error("the query would read too many log lines (more than {0}); narrow the time range or the selector")]
    TooManyEntries(usize),
    /// A metric query whose samples carry `__error__`: Loki's text, word for word.
    #[error("{0}")]
    Pipeline(String),
    /// A log query asking for more lines than `max_entries_limit_per_query`: Loki's text.
    #[error("max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {max})")]
    EntriesLimit { limit: usize, max: usize },
    /// A metric query answering more series than `max_query_series`: Loki's text.
    #[error("maximum number of series ({0}) reached for a single query; consider reducing query cardinality by adding more specific stream selectors, reducing the time range, or aggregating results with functions like sum(), count() or topk()")]
    SeriesLimit(usize),
}

impl storage::Classify for EvalError {
    fn class(&self) -> storage::ErrorClass {
        use storage::ErrorClass;
        match self {
            EvalError::Parse(_)
            | EvalError::BadRequest(_)
            | EvalError::Pipeline(_)
            | EvalError::EntriesLimit { .. }
            | EvalError::SeriesLimit(_) => ErrorClass::BadInput,
            EvalError::TooManyEntries(_) => ErrorClass::TooLarge,
            EvalError::Storage(e) => e.class(),
        }
    }
}

/// Loki's PipelineError text, with the series as Prometheus prints labels.
fn pipeline_error(kind: &str, labels: &LabelMap) -> String {
    let series: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!(
        "pipeline error: '{kind}' for series: '{{{}}}'.\n\
         Use a label filter to intentionally skip this error. (e.g | __error__!=\"{kind}\").\n\
         To skip all potential errors you can match empty errors.(e.g __error__=\"\")\n\
         The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )\n",
        series.join(", ")
    )
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    pub labels: LabelMap,
    /// (ns, line) in the query's direction.
    pub entries: Vec<(i64, String)>,
}

/// A stream of a categorized select (Loki's `categorize-labels` encoding): grouped by the
/// stream labels alone, each entry carrying its structured metadata and parsed labels apart.
#[derive(Clone, Debug, PartialEq)]
pub struct CategorizedStream {
    pub labels: LabelMap,
    /// In the query's direction.
    pub entries: Vec<CategorizedEntry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CategorizedEntry {
    pub ts_ns: i64,
    pub line: String,
    pub structured_metadata: LabelMap,
    /// Labels the query's pipeline added (parsers, `label_format`, `pattern` captures).
    pub parsed: LabelMap,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: LabelMap,
    /// (ns, value), ascending.
    pub points: Vec<(i64, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Streams(Vec<Stream>),
    Matrix(Vec<Series>),
}

/// What one query may cost. Zero turns a bound off.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    /// Log lines a metric query may read.
    pub max_lines: usize,
    /// Lines a log query may ask for (`limit`): Loki's `max_entries_limit_per_query`.
    pub max_entries: usize,
    /// Series a metric query may answer: Loki's `max_query_series`.
    pub max_series: usize,
}

impl Default for QueryLimits {
    /// Loki's defaults for the entries and series limits.
    fn default() -> Self {
        QueryLimits {
            max_lines: 5_000_000,
            max_entries: 5000,
            max_series: 500,
        }
    }
}

/// Evaluation over one store within a query's [`QueryLimits`].
#[derive(Clone)]
pub struct LogEngine {
    store: Arc<dyn LogReader>,
    limits: QueryLimits,
}

/// The steps of a query: `start..=end` by `step` (one step for instant queries).
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
}

impl Steps {
    fn iter(self) -> impl Iterator<Item = i64> {
        let step = self.step_ns.max(1);
        (0..)
            .map(move |i| self.start_ns + i * step)
            .take_while(move |t| *t <= self.end_ns)
    }
}

impl LogEngine {
    pub fn new(store: Arc<dyn LogReader>, limits: QueryLimits) -> LogEngine {
        LogEngine { store, limits }
    }

    /// The most lines one log query may return (`usize::MAX` when unbounded).
    pub fn max_entries(&self) -> usize {
        match self.limits.max_entries {
            0 => usize::MAX,
            n => n,
        }
    }

    /// The most series one metric query may answer (`usize::MAX` when unbounded).
    pub fn max_series(&self) -> usize {
        match self.limits.max_series {
            0 => usize::MAX,
            n => n,
        }
    }

    pub fn store(&self) -> &Arc<dyn LogReader> {
        &self.store
    }

    /// Log lines of `expr` in [start, end), at most `limit`, grouped into streams by all
    /// their labels (stream labels, structured metadata and parsed labels alike).
    pub fn select_logs(
        &self,
        expr: &LogExpr,
        start_ns: i64,
        end_ns: i64,
        limit: usize,
        direction: Direction,
    ) -> Result<Vec<Stream>, EvalError> {
        let mut streams: BTreeMap<LabelMap, Vec<(i64, String)>> = BTreeMap::new();
        self.each_line(expr, start_ns, end_ns, limit, direction, |line| {
            streams
                .entry(line.labels)
                .or_default()
                .push((line.ts_ns, line.line));
        })?;
        Ok(streams
            .into_iter()
            .map(|(labels, entries)| Stream { labels, entries })
            .collect())
    }

    /// [`LogEngine::select_logs`] grouped by stream labels only, the other labels kept per
    /// entry: a label is a stream label if the record's stream has it, structured metadata
    /// if the record carries it as such, and parsed otherwise (as Loki's categorized labels
    /// iterator splits them, after the pipeline's filters, drops and keeps).
    pub fn select_logs_categorized(
        &self,
        expr: &LogExpr,
        start_ns: i64,
        end_ns: i64,
        limit: usize,
        direction: Direction,
    ) -> Result<Vec<CategorizedStream>, EvalError> {
        let mut streams: BTreeMap<LabelMap, Vec<CategorizedEntry>> = BTreeMap::new();
        self.each_line(expr, start_ns, end_ns, limit, direction, |line| {
            let mut entry = CategorizedEntry {
                ts_ns: line.ts_ns,
                line: line.line,
                structured_metadata: LabelMap::new(),
                parsed: LabelMap::new(),
            };
            let mut stream = LabelMap::new();
            for (k, v) in line.labels {
                let kind = if line.stream.get(&k).is_some() {
                    &mut stream
                } else if line.metadata.iter().any(|(m, _)| *m == k) {
                    &mut entry.structured_metadata
                } else {
                    &mut entry.parsed
                };
                kind.insert(k, v);
            }
            streams.entry(stream).or_default().push(entry);
        })?;
        Ok(streams
            .into_iter()
            .map(|(labels, entries)| CategorizedStream { labels, entries })
            .collect())
    }

    /// Hands every line of `expr` in [start, end) through the pipeline to `f`, at most
    /// `limit` of them, in `direction`.
    fn each_line(
        &self,
        expr: &LogExpr,
        start_ns: i64,
        end_ns: i64,
        limit: usize,
        direction: Direction,
        mut f: impl FnMut(SelectedLine<'_>),
    ) -> Result<(), EvalError> {
        let max = self.limits.max_entries;
        if max > 0 && limit > max {
            return Err(EvalError::EntriesLimit { limit, max });
        }
        let pipeline = Pipeline::new(&expr.stages);
        let q = LogQuery {
            matchers: expr.matchers.clone(),
            start_ns,
            end_ns,
            contains: index_needles(&expr.stages),
        };
        let mut n = 0;
        self.store.scan(&q, direction, &mut |r| {
            if n >= limit {
                return ControlFlow::Break(());
            }
            if let Some((line, labels)) =
                pipeline.process(r.ts_ns, r.line, labels_of(&r.labels, &r.metadata))
            {
                f(SelectedLine {
                    ts_ns: r.ts_ns,
                    line,
                    labels,
                    stream: &r.labels,
                    metadata: &r.metadata,
                });
                n += 1;
            }
            ControlFlow::Continue(())
        })?;
        Ok(())
    }

    /// A metric query's series, at most `max_series` of them (Loki counts the answer, not
    /// the series inside an aggregation: those are bounded by the lines read).
    pub fn eval_metric(&self, expr: &MetricExpr, steps: Steps) -> Result<Vec<Series>, EvalError> {
        let series = self.metric(expr, steps)?;
        let max = self.limits.max_series;
        if max > 0 && series.len() > max {
            return Err(EvalError::SeriesLimit(max));
        }
        Ok(series)
    }

    fn metric(&self, expr: &MetricExpr, steps: Steps) -> Result<Vec<Series>, EvalError> {
        match expr {
            MetricExpr::Paren(e) => self.metric(e, steps),
            MetricExpr::Literal(v) | MetricExpr::VectorLiteral(v) => Ok(vec![Series {
                labels: LabelMap::new(),
                points: steps.iter().map(|t| (t, *v)).collect(),
            }]),
            MetricExpr::Range(r) => self.range(r, steps),
            MetricExpr::Vector {
                op,
                param,
                grouping,
                inner,
            } => {
                let input = self.metric(inner, steps)?;
                Ok(vector_agg(*op, *param, grouping.as_ref(), &input, steps))
            }
            MetricExpr::Binary {
                op,
                bool_modifier,
                matching,
                lhs,
                rhs,
            } => {
                let l = self.metric(lhs, steps)?;
                let r = self.metric(rhs, steps)?;
                let l_scalar = matches!(strip(lhs), MetricExpr::Literal(_));
                let r_scalar = matches!(strip(rhs), MetricExpr::Literal(_));
                if l_scalar || r_scalar {
                    return Ok(scalar_binary(*op, *bool_modifier, l, r, r_scalar));
                }
                vector_binary(*op, *bool_modifier, matching.as_ref(), &l, &r)
            }
        }
    }

    fn range(&self, expr: &RangeExpr, steps: Steps) -> Result<Vec<Series>, EvalError> {
        let pipeline = Pipeline::new(&expr.log.stages);
        // Windows are left-open: (t - range, t].
        let q = LogQuery {
            matchers: expr.log.matchers.clone(),
            start_ns: steps.start_ns - expr.offset_ns - expr.range_ns + 1,
            end_ns: steps.end_ns - expr.offset_ns + 1,
            contains: index_needles(&expr.log.stages),
        };
        let mut samples: BTreeMap<LabelMap, Vec<(i64, f64)>> = BTreeMap::new();
        let mut n = 0usize;
        let mut too_many = false;
        // Without stages, unwrap or byte counts nothing reads a line: the store can skip them
        // and count records per time bucket instead (only counting functions get here without
        // an unwrap; the guard keeps it so).
        let needs_lines = !expr.log.stages.is_empty()
            || expr.unwrap.is_some()
            || !matches!(
                expr.func,
                RangeFn::CountOverTime | RangeFn::Rate | RangeFn::AbsentOverTime
            );
        // A record's series and value; without lines, a pure function of its stream and metadata.
        let sample = |r: storage::logs::LogRecord| -> Option<(LabelMap, f64)> {
            let (line, mut labels) =
                pipeline.process(r.ts_ns, r.line, labels_of(&r.labels, &r.metadata))?;
            let value = match (expr.func, &expr.unwrap) {
                (_, Some(u)) => {
                    let v = unwrap_value(u, &labels);
                    labels.remove(&u.label);
                    v.unwrap_or_else(|details| {
                        set_error(&mut labels, SAMPLE_EXTRACTION_ERR, details);
                        0.0
                    })
                }
                (RangeFn::BytesOverTime | RangeFn::BytesRate, None) => line.len() as f64,
                _ => 1.0,
            };
            if !expr
                .post_filters
                .iter()
                .all(|f| apply_label_filter(f, &mut labels))
            {
                return None;
            }
            let labels = match &expr.grouping {
                Some(g) => group_labels(&labels, g),
                None => labels,
            };
            Some((labels, value))
        };
        let mut push = |ts_ns: i64, labels: &LabelMap, value: f64| match samples.get_mut(labels) {
            Some(v) => v.push((ts_ns, value)),
            None => {
                samples.insert(labels.clone(), vec![(ts_ns, value)]);
            }
        };
        if needs_lines {
            self.store.scan(&q, Direction::Forward, &mut |r| {
                n += 1;
                if n > self.limits.max_lines {
                    too_many = true;
                    return ControlFlow::Break(());
                }
                let ts_ns = r.ts_ns;
                if let Some((labels, value)) = sample(r) {
                    push(ts_ns, &labels, value);
                }
                ControlFlow::Continue(())
            })?;
        } else {
            // The store counts each stream's records per bucket: its series is worked out
            // once per partition, and samples are gathered by position, not by label set. A
            // sample is a bucket's end with its count as the weight; the buckets' grid holds
            // every window's ends (range and step are multiples of its width), so summing the
            // weights inside a window counts its records exactly.
            let buckets = Buckets {
                origin_ns: steps.start_ns - expr.offset_ns,
                width_ns: gcd(expr.range_ns, steps.step_ns).max(1),
            };
            type StreamKey = (storage::Labels, Vec<(String, String)>);
            let mut series: HashMap<StreamKey, Option<(usize, f64)>> = HashMap::new();
            let mut gathered: Vec<(LabelMap, Vec<(i64, f64)>)> = Vec::new();
            // The store refuses a selection over the line budget while collecting it.
            let scanned = self.store.scan_streams(
                &q,
                buckets,
                self.limits.max_lines,
                &mut |labels, metadata, counts| {
                    let Some(first) = counts.first() else {
                        return ControlFlow::Continue(());
                    };
                    let first = first.end_ns;
                    let s = match series.entry((labels.clone(), metadata.to_vec())) {
                        Entry::Occupied(e) => *e.get(),
                        Entry::Vacant(e) => {
                            let (labels, metadata) = e.key().clone();
                            let s = sample(storage::logs::LogRecord {
                                ts_ns: first,
                                labels,
                                line: String::new(),
                                metadata,
                            })
                            .map(|(labels, value)| {
                                gathered.push((labels, Vec::new()));
                                (gathered.len() - 1, value)
                            });
                            *e.insert(s)
                        }
                    };
                    if let Some((i, value)) = s {
                        gathered[i]
                            .1
                            .extend(counts.iter().map(|c| (c.end_ns, value * c.records as f64)));
                    }
                    ControlFlow::Continue(())
                },
            );
            match scanned {
                Err(storage::StorageError::TooManyRecords { .. }) => too_many = true,
                other => other?,
            }
            for (labels, points) in gathered {
                samples.entry(labels).or_default().extend(points);
            }
            // Counts come in no particular order.
            for points in samples.values_mut() {
                points.sort_unstable_by_key(|p| p.0);
            }
        }
        if too_many {
            return Err(EvalError::TooManyEntries(self.limits.max_lines));
        }
        // Errors are not allowed in metrics unless a label filter dropped them (Loki's rule).
        if let Some((labels, kind)) = samples.keys().find_map(|l| Some((l, l.get(ERROR_LABEL)?))) {
            return Err(EvalError::Pipeline(pipeline_error(kind, labels)));
        }
        let range_secs = expr.range_ns as f64 / 1e9;
        if expr.func == RangeFn::AbsentOverTime {
            let labels: LabelMap = expr
                .log
                .matchers
                .iter()
                .filter(|m| m.op == MatchOp::Equal)
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            let points = steps
                .iter()
                .filter(|t| {
                    let (lo, hi) = (t - expr.offset_ns - expr.range_ns, t - expr.offset_ns);
                    !samples
                        .values()
                        .any(|s| s.iter().any(|(ts, _)| *ts > lo && *ts <= hi))
                })
                .map(|t| (t, 1.0))
                .collect::<Vec<_>>();
            return Ok(if points.is_empty() {
                vec![]
            } else {
                vec![Series { labels, points }]
            });
        }
        let mut out = Vec::new();
        for (labels, pts) in samples {
            let mut points = Vec::new();
            for t in steps.iter() {
                let (lo, hi) = (t - expr.offset_ns - expr.range_ns, t - expr.offset_ns);
                let a = pts.partition_point(|(ts, _)| *ts <= lo);
                let b = pts.partition_point(|(ts, _)| *ts <= hi);
                if a == b {
                    continue;
                }
                let value = if needs_lines {
                    let window: Vec<f64> = pts[a..b].iter().map(|(_, v)| *v).collect();
                    range_value(
                        expr.func,
                        expr.param,
                        &window,
                        range_secs,
                        expr.unwrap.is_some(),
                    )
                } else {
                    // Weighted by bucket counts: `count_over_time` or `rate`.
                    let n: f64 = pts[a..b].iter().map(|(_, v)| *v).sum();
                    if expr.func == RangeFn::Rate {
                        n / range_secs
                    } else {
                        n
                    }
                };
                points.push((t, value));
            }
            if !points.is_empty() {
                out.push(Series { labels, points });
            }
        }
        Ok(out)
    }
}

/// The greatest common divisor of two durations (0 when both are).
fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    i64::try_from(a).unwrap_or(i64::MAX)
}

fn strip(e: &MetricExpr) -> &MetricExpr {
    match e {
        MetricExpr::Paren(inner) => strip(inner),
        other => other,
    }
}

/// A line through the pipeline, with the record's own labels to tell the result's apart.
struct SelectedLine<'r> {
    ts_ns: i64,
    line: String,
    labels: LabelMap,
    stream: &'r storage::Labels,
    metadata: &'r [(String, String)],
}

fn labels_of(stream: &storage::Labels, metadata: &[(String, String)]) -> LabelMap {
    let mut m: LabelMap = stream
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    for (k, v) in metadata {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    m
}

fn group_labels(labels: &LabelMap, g: &Grouping) -> LabelMap {
    labels
        .iter()
        .filter(|(k, _)| g.labels.iter().any(|l| l == *k) != g.without)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn range_value(
    func: RangeFn,
    param: Option<f64>,
    w: &[f64],
    range_secs: f64,
    unwrapped: bool,
) -> f64 {
    let n = w.len() as f64;
    let sum: f64 = w.iter().sum();
    let var = || {
        let mean = sum / n;
        w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
    };
    match func {
        RangeFn::CountOverTime => n,
        RangeFn::Rate if unwrapped => sum / range_secs,
        RangeFn::Rate => n / range_secs,
        RangeFn::BytesOverTime => sum,
        RangeFn::BytesRate => sum / range_secs,
        RangeFn::AbsentOverTime => 1.0,
        RangeFn::SumOverTime => sum,
        RangeFn::AvgOverTime => sum / n,
        RangeFn::MinOverTime => w.iter().copied().fold(f64::INFINITY, f64::min),
        RangeFn::MaxOverTime => w.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        RangeFn::StddevOverTime => var().sqrt(),
        RangeFn::StdvarOverTime => var(),
        RangeFn::FirstOverTime => w[0],
        RangeFn::LastOverTime => w[w.len() - 1],
        RangeFn::QuantileOverTime => quantile(param.unwrap_or(0.5), w),
    }
}

/// Prometheus's quantile: linear interpolation between closest ranks.
fn quantile(q: f64, values: &[f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = q * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let weight = rank - lo as f64;
    v[lo] * (1.0 - weight) + v[hi] * weight
}

fn vector_agg(
    op: AggOp,
    param: Option<f64>,
    g: Option<&Grouping>,
    input: &[Series],
    steps: Steps,
) -> Vec<Series> {
    let mut out: BTreeMap<LabelMap, Vec<(i64, f64)>> = BTreeMap::new();
    for t in steps.iter() {
        let at: Vec<(&LabelMap, f64)> = input
            .iter()
            .filter_map(|s| {
                s.points
                    .binary_search_by_key(&t, |p| p.0)
                    .ok()
                    .map(|i| (&s.labels, s.points[i].1))
            })
            .collect();
        let mut groups: BTreeMap<LabelMap, Vec<(&LabelMap, f64)>> = BTreeMap::new();
        for (labels, v) in at {
            let key = match g {
                Some(g) => group_labels(labels, g),
                None => LabelMap::new(),
            };
            groups.entry(key).or_default().push((labels, v));
        }
        for (key, members) in groups {
            if matches!(op, AggOp::Topk | AggOp::Bottomk) {
                let k = param.unwrap_or(0.0).max(0.0) as usize;
                let mut sorted = members;
                sorted.sort_by(|a, b| {
                    if op == AggOp::Topk {
                        b.1.total_cmp(&a.1)
                    } else {
                        a.1.total_cmp(&b.1)
                    }
                });
                for (labels, v) in sorted.into_iter().take(k) {
                    out.entry(labels.clone()).or_default().push((t, v));
                }
                continue;
            }
            let vals: Vec<f64> = members.iter().map(|m| m.1).collect();
            let n = vals.len() as f64;
            let sum: f64 = vals.iter().sum();
            let var = || vals.iter().map(|v| (v - sum / n).powi(2)).sum::<f64>() / n;
            let v = match op {
                AggOp::Sum => sum,
                AggOp::Avg => sum / n,
                AggOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                AggOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                AggOp::Count => n,
                AggOp::Stddev => var().sqrt(),
                AggOp::Stdvar => var(),
                AggOp::Topk | AggOp::Bottomk => continue,
            };
            out.entry(key).or_default().push((t, v));
        }
    }
    out.into_iter()
        .map(|(labels, points)| Series { labels, points })
        .collect()
}

fn apply(op: BinOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Pow => a.powf(b),
        BinOp::Eq => f64::from(u8::from(a == b)),
        BinOp::Ne => f64::from(u8::from(a != b)),
        BinOp::Gt => f64::from(u8::from(a > b)),
        BinOp::Ge => f64::from(u8::from(a >= b)),
        BinOp::Lt => f64::from(u8::from(a < b)),
        BinOp::Le => f64::from(u8::from(a <= b)),
        BinOp::And | BinOp::Or | BinOp::Unless => return None,
    })
}

/// A vector and a number (`r_scalar`: the number is on the right).
fn scalar_binary(
    op: BinOp,
    bool_mod: bool,
    l: Vec<Series>,
    r: Vec<Series>,
    r_scalar: bool,
) -> Vec<Series> {
    let (vecs, scalar) = if r_scalar { (l, r) } else { (r, l) };
    let Some(scalar) = scalar.into_iter().next() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in vecs {
        let points: Vec<_> = s
            .points
            .iter()
            .filter_map(|&(t, v)| {
                let k = point_at(&scalar, t)?;
                let (a, b) = if r_scalar { (v, k) } else { (k, v) };
                element(op, bool_mod, a, b, v).map(|x| (t, x))
            })
            .collect();
        if !points.is_empty() {
            out.push(Series {
                labels: s.labels,
                points,
            });
        }
    }
    out
}

fn point_at(s: &Series, t: i64) -> Option<f64> {
    s.points
        .binary_search_by_key(&t, |p| p.0)
        .ok()
        .map(|i| s.points[i].1)
}

/// `a op b`; a comparison without `bool` filters, keeping `keep`.
fn element(op: BinOp, bool_mod: bool, a: f64, b: f64, keep: f64) -> Option<f64> {
    let v = apply(op, a, b)?;
    if op.is_comparison() && !bool_mod {
        (v == 1.0).then_some(keep)
    } else {
        Some(v)
    }
}

/// The labels two series are matched on.
fn signature(labels: &LabelMap, m: Option<&VectorMatching>) -> LabelMap {
    match m {
        Some(m) => labels
            .iter()
            .filter(|(k, _)| m.labels.contains(k) == m.on)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => labels.clone(),
    }
}

fn labels_text(l: &LabelMap) -> String {
    let items: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Two vectors, step by step, with PromQL's vector matching and its errors.
fn vector_binary(
    op: BinOp,
    bool_mod: bool,
    m: Option<&VectorMatching>,
    l: &[Series],
    r: &[Series],
) -> Result<Vec<Series>, EvalError> {
    let times: std::collections::BTreeSet<i64> = l
        .iter()
        .chain(r)
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let mut out: BTreeMap<LabelMap, Vec<(i64, f64)>> = BTreeMap::new();
    for t in times {
        for (labels, v) in instant_binary(op, bool_mod, m, &instant(l, t), &instant(r, t))? {
            out.entry(labels).or_default().push((t, v));
        }
    }
    Ok(out
        .into_iter()
        .map(|(labels, points)| Series { labels, points })
        .collect())
}

type Instant<'a> = [(&'a LabelMap, f64)];

/// The series of `side` that have a point at `t`, with that point's value.
fn instant(side: &[Series], t: i64) -> Vec<(&LabelMap, f64)> {
    side.iter()
        .filter_map(|s| Some((&s.labels, point_at(s, t)?)))
        .collect()
}

fn instant_binary(
    op: BinOp,
    bool_mod: bool,
    m: Option<&VectorMatching>,
    l: &Instant,
    r: &Instant,
) -> Result<Vec<(LabelMap, f64)>, EvalError> {
    let sigs = |side: &Instant| -> std::collections::HashSet<LabelMap> {
        side.iter()
            .map(|(labels, _)| signature(labels, m))
            .collect()
    };
    let copy = |side: &Instant| -> Vec<(LabelMap, f64)> {
        side.iter()
            .map(|(labels, v)| ((*labels).clone(), *v))
            .collect()
    };
    match op {
        BinOp::And | BinOp::Unless => {
            let right = sigs(r);
            let keep = op == BinOp::And;
            return Ok(copy(l)
                .into_iter()
                .filter(|(labels, _)| right.contains(&signature(labels, m)) == keep)
                .collect());
        }
        BinOp::Or => {
            let left = sigs(l);
            let mut out = copy(l);
            out.extend(
                copy(r)
                    .into_iter()
                    .filter(|(labels, _)| !left.contains(&signature(labels, m))),
            );
            return Ok(out);
        }
        _ => {}
    }
    let group = m.and_then(|m| m.group.as_ref());
    // The "many" side is walked, the "one" side looked up; one-to-one treats the left as many.
    let (many, one, many_side, one_side) = match group {
        Some((GroupSide::Right, _)) => (r, l, "right", "left"),
        _ => (l, r, "left", "right"),
    };
    let mut ones: HashMap<LabelMap, (&LabelMap, f64)> = HashMap::new();
    for (labels, v) in one {
        if let Some((first, _)) = ones.insert(signature(labels, m), (labels, *v)) {
            return Err(EvalError::BadRequest(format!(
                "found duplicate series for the match group {} on the {one_side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                labels_text(&signature(labels, m)),
                labels_text(first),
                labels_text(labels)
            )));
        }
    }
    let mut matched = std::collections::HashSet::new();
    let mut results = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (labels, v) in many {
        let sig = signature(labels, m);
        let Some((one_labels, ov)) = ones.get(&sig) else {
            continue;
        };
        if group.is_none() && !matched.insert(sig.clone()) {
            return Err(EvalError::BadRequest(format!(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right) (duplicates on the {many_side} hand-side for {})",
                labels_text(&sig)
            )));
        }
        let (a, b) = match group {
            Some((GroupSide::Right, _)) => (*ov, *v),
            _ => (*v, *ov),
        };
        let Some(value) = element(op, bool_mod, a, b, a) else {
            continue;
        };
        let mut res: LabelMap = match (group, m) {
            (None, Some(_)) => sig,
            _ => (*labels).clone(),
        };
        if let Some((_, include)) = group {
            for name in include {
                match one_labels.get(name) {
                    Some(val) => res.insert(name.clone(), val.clone()),
                    None => res.remove(name),
                };
            }
        }
        if !results.insert(res.clone()) {
            return Err(EvalError::BadRequest(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push((res, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
