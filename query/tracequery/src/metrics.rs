//! TraceQL metrics as Tempo computes them: the spans a query selects in a window, counted or
//! aggregated per step into series (`rate`, `count_over_time`, `min/max/sum/avg_over_time`,
//! `quantile_over_time`, `histogram_over_time`), grouped `by(…)`, with exemplars, then second
//! stages (`topk`, `bottomk`, value filters); `compare()`'s selection against its baseline is
//! the `compare` module's. Owns step alignment (Tempo's: steps cover `(t − step, t]`, one
//! extra step before the aligned start), the power-of-two duration buckets and the quantile
//! interpolation over them, and the series and scan budgets. The response shapes are the
//! Tempo API's.

use std::collections::{HashMap, HashSet};

use storage::traces::TraceReader;
use storage::StorageError;

use crate::spansets::{for_each_result_span, ResultScan};
use crate::traceql::{
    duration_ns, field_value, Field, Intrinsic, Metrics, MetricsFn, MetricsStage, Query,
    SecondStage, SpanRef, Value,
};

mod compare;

/// The window and resolution asked for.
#[derive(Clone, Copy, Debug)]
pub struct MetricsRequest {
    pub start_ns: u64,
    pub end_ns: u64,
    pub step_ns: u64,
    /// One value over the whole window (`/api/metrics/query`).
    pub instant: bool,
    /// Exemplars kept per series.
    pub exemplars: usize,
    /// Series beyond this many are dropped and the answer marked partial.
    pub max_series: usize,
    /// Spans read at most; beyond, the answer is marked partial.
    pub max_spans: usize,
}

/// A span standing for a value of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub value: f64,
    pub timestamp_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, Value)>,
    /// (timestamp ms, value), oldest first, NaN steps left out.
    pub samples: Vec<(i64, f64)>,
    pub exemplars: Vec<Exemplar>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsResult {
    pub series: Vec<Series>,
    pub inspected_spans: usize,
    pub inspected_traces: usize,
    pub inspected_bytes: u64,
    /// Why the answer is incomplete, if it is: Tempo's `PARTIAL` status and message.
    pub partial: Option<String>,
}

/// Steps as Tempo's interval mapper lays them out.
#[derive(Clone, Copy, Debug)]
struct Steps {
    start: u64,
    end: u64,
    step: u64,
    count: usize,
    instant: bool,
}

/// More steps than this is refused, as Prometheus refuses more than 11,000 points a series.
pub const MAX_STEPS: u64 = 11_000;

/// Steps × series one query may hold (32 bytes each): 1,000 series of 1,000 steps.
const MAX_CELLS: usize = 1_000_000;

impl Steps {
    fn new(r: &MetricsRequest) -> Result<Steps, String> {
        if r.end_ns <= r.start_ns {
            return Err("end must be greater than start".into());
        }
        if r.instant {
            return Ok(Steps {
                start: r.start_ns,
                end: r.end_ns,
                step: r.end_ns - r.start_ns,
                count: 1,
                instant: true,
            });
        }
        let step = r.step_ns;
        if step == 0 {
            return Err("step must be positive".into());
        }
        let mut start = r.start_ns - r.start_ns % step;
        if start > step {
            // One step before the aligned start, so the first sample covers the start.
            start -= step;
        }
        let end = match r.end_ns % step {
            0 => r.end_ns,
            m => r.end_ns.saturating_add(step - m),
        };
        let count = (end - start) / step;
        if count > MAX_STEPS {
            return Err(format!(
                "step of {}s is too small for the range: more than {MAX_STEPS} steps",
                step as f64 / 1e9
            ));
        }
        Ok(Steps {
            start,
            end,
            step,
            count: count as usize,
            instant: false,
        })
    }

    /// The step a span starting at `ts` falls in: `(t − step, t]` for ranges, the closed
    /// window for instants.
    fn index(&self, ts: u64) -> Option<usize> {
        if self.instant {
            return (self.start..=self.end).contains(&ts).then_some(0);
        }
        if ts <= self.start || ts > self.end {
            return None;
        }
        Some(((ts - self.start - 1) / self.step) as usize)
    }

    fn timestamp_ms(&self, i: usize) -> i64 {
        let ns = if self.instant {
            self.end
        } else {
            self.start + (i as u64 + 1) * self.step
        };
        (ns / 1_000_000) as i64
    }

    /// Which of `n` equal parts of the window a span starting at `ts` falls in: one exemplar is
    /// kept per part, so exemplars spread over the range. None for instants (no exemplars).
    fn exemplar_slot(&self, ts: u64, n: usize) -> Option<usize> {
        if n == 0 || self.instant {
            return None;
        }
        let (lo, hi) = self.window();
        Some((ts.saturating_sub(lo) as u128 * n as u128 / (hi - lo + 1) as u128) as usize)
    }

    /// The start times a span may have to be counted, inclusive.
    fn window(&self) -> (u64, u64) {
        if self.instant {
            (self.start, self.end)
        } else {
            (self.start + 1, self.end)
        }
    }
}

/// Per step: what every function needs.
#[derive(Clone, Copy)]
struct Cell {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

struct Acc {
    labels: Labels,
    cells: Vec<Cell>,
    exemplars: Vec<Exemplar>,
    /// The exemplar slot (window split in `exemplars` parts) each exemplar took.
    exemplar_slots: HashSet<usize>,
}

/// Tempo's power-of-two bucket a value falls in (the next power of two ≥ v), none below 2.
fn log2_bucket(v: u64) -> Option<f64> {
    (v >= 2).then(|| (1u128 << (128 - (v as u128 - 1).leading_zeros())) as f64)
}

/// Tempo's quantile over power-of-two buckets `(upper bound, count)`, ascending: the bucket
/// holding the `ceil(p × total)`th value, interpolated exponentially inside it.
pub fn log2_quantile(p: f64, buckets: &[(f64, f64)]) -> f64 {
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    if p.is_nan() || !(0.0..=1.0).contains(&p) || total <= 0.0 {
        return 0.0;
    }
    let wanted = (p * total).ceil().max(1.0);
    let mut seen = 0.0;
    let mut at = 0;
    for (i, b) in buckets.iter().enumerate() {
        at = i;
        if seen + b.1 > wanted {
            break;
        }
        seen += b.1;
        if seen == wanted {
            return b.0;
        }
    }
    let interp = (wanted - seen) / buckets[at].1;
    let hi = buckets[at].0.log2();
    let lo = if at > 0 {
        buckets[at - 1].0.log2()
    } else {
        hi - 1.0
    };
    2f64.powf(lo + (hi - lo) * interp)
}

/// The value a span contributes: durations in seconds, numeric attributes as they are.
fn span_number(f: &Field, r: SpanRef<'_>) -> Option<f64> {
    match f {
        Field::Intrinsic(Intrinsic::Duration) => Some(duration_ns(r.span) as f64 / 1e9),
        f => match field_value(f, r) {
            Value::Duration(d) => Some(d as f64 / 1e9),
            v => v.number(),
        },
    }
}

/// The `__bucket` a span falls in for histograms and quantiles.
fn span_bucket(f: &Field, r: SpanRef<'_>) -> Option<f64> {
    match f {
        Field::Intrinsic(Intrinsic::Duration) => Some(log2_bucket(duration_ns(r.span))? / 1e9),
        f => match field_value(f, r) {
            Value::Duration(d) => Some(log2_bucket(d)? / 1e9),
            Value::Int(i) => log2_bucket(u64::try_from(i).ok()?),
            _ => None,
        },
    }
}

struct Evaluator<'q> {
    m: &'q Metrics,
    steps: Steps,
    req: MetricsRequest,
    series: HashMap<String, Acc>,
    dropped_series: bool,
}

impl Evaluator<'_> {
    fn observe(&mut self, r: SpanRef<'_>) {
        let ts = r.span.span.start_time_unix_nano;
        let Some(i) = self.steps.index(ts) else {
            return;
        };
        let m = self.m;
        let mut labels: Labels = Vec::with_capacity(m.by.len() + 1);
        for f in &m.by {
            // `.x` reads the span's attribute, else the resource's, as Tempo's `by` does.
            let v = field_value(f, r);
            if v != Value::Nil {
                labels.push((f.label(), v));
            }
        }
        if labels.is_empty() {
            if let Some(f) = m.by.first() {
                labels.push((f.label(), Value::Nil));
            }
        }
        let value = match &m.func {
            MetricsFn::Rate | MetricsFn::CountOverTime => None,
            MetricsFn::QuantileOverTime(_) | MetricsFn::HistogramOverTime => {
                let f = m.field.as_ref().expect("parsed with a field");
                let Some(b) = span_bucket(f, r) else { return };
                labels.push(("__bucket".into(), Value::Float(b)));
                None
            }
            _ => {
                let f = m.field.as_ref().expect("parsed with a field");
                let Some(v) = span_number(f, r) else { return };
                Some(v)
            }
        };
        if m.by.is_empty() && labels.is_empty() {
            labels.push(("__name__".into(), Value::Str(m.func.name().into())));
        }
        let key = format!("{labels:?}");
        if !self.series.contains_key(&key) {
            if self.series.len() >= self.req.max_series {
                self.dropped_series = true;
                return;
            }
            self.series.insert(
                key.clone(),
                Acc {
                    labels,
                    cells: vec![Cell::default(); self.steps.count],
                    exemplars: Vec::new(),
                    exemplar_slots: HashSet::new(),
                },
            );
        }
        let acc = self.series.get_mut(&key).expect("inserted above");
        let c = &mut acc.cells[i];
        c.count += 1.0;
        if let Some(v) = value {
            c.sum += v;
            c.min = c.min.min(v);
            c.max = c.max.max(v);
        }
        if let Some(slot) = self.steps.exemplar_slot(ts, self.req.exemplars) {
            if acc.exemplar_slots.insert(slot) {
                let value = match m.func {
                    MetricsFn::QuantileOverTime(_) | MetricsFn::HistogramOverTime => {
                        span_number(m.field.as_ref().expect("parsed with a field"), r)
                    }
                    _ => value,
                };
                acc.exemplars.push(Exemplar {
                    trace_id: r.span.span.trace_id.clone(),
                    span_id: r.span.span.span_id.clone(),
                    value: value.unwrap_or(f64::NAN),
                    timestamp_ms: (ts / 1_000_000) as i64,
                });
            }
        }
    }

    fn finish(self) -> (Vec<Series>, bool) {
        let steps = self.steps;
        let value = |func: &MetricsFn, c: &Cell| -> f64 {
            match func {
                MetricsFn::Rate => c.count / (steps.step as f64 / 1e9),
                MetricsFn::CountOverTime | MetricsFn::HistogramOverTime => c.count,
                _ if c.count == 0.0 => f64::NAN,
                MetricsFn::MinOverTime => c.min,
                MetricsFn::MaxOverTime => c.max,
                MetricsFn::SumOverTime => c.sum,
                MetricsFn::AvgOverTime => c.sum / c.count,
                MetricsFn::QuantileOverTime(_) => c.count,
            }
        };
        let mut out: Vec<Row> = Vec::new();
        if let MetricsFn::QuantileOverTime(qs) = &self.m.func {
            // Regroup the per-bucket counts by the labels without `__bucket`.
            // Per label set without `__bucket`: (bound, count) per step, and the exemplars.
            let mut groups: HashMap<String, (Labels, Vec<Buckets>, Vec<Exemplar>)> = HashMap::new();
            for acc in self.series.into_values() {
                let mut labels = acc.labels;
                let Some((_, Value::Float(bucket))) = labels.pop() else {
                    continue;
                };
                let g = groups
                    .entry(format!("{labels:?}"))
                    .or_insert_with(|| (labels, vec![Vec::new(); steps.count], Vec::new()));
                for (i, c) in acc.cells.iter().enumerate() {
                    if c.count > 0.0 {
                        g.1[i].push((bucket, c.count));
                    }
                }
                g.2.extend(acc.exemplars);
            }
            for (_, (labels, mut per_step, exemplars)) in groups {
                for b in &mut per_step {
                    b.sort_by(|x, y| x.0.total_cmp(&y.0));
                }
                for &q in qs {
                    let mut l = labels.clone();
                    l.push(("p".into(), Value::Float(q)));
                    let values = per_step.iter().map(|b| log2_quantile(q, b)).collect();
                    out.push(Row {
                        labels: l,
                        values,
                        exemplars: exemplars.clone(),
                    });
                }
            }
        } else {
            for acc in self.series.into_values() {
                let values = acc.cells.iter().map(|c| value(&self.m.func, c)).collect();
                out.push(Row {
                    labels: acc.labels,
                    values,
                    exemplars: acc.exemplars,
                });
            }
        }
        apply_second_stages(&self.m.second, &mut out);
        let series = out
            .into_iter()
            .filter_map(
                |Row {
                     labels,
                     values,
                     exemplars,
                 }| {
                    let samples: Vec<(i64, f64)> = values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !v.is_nan())
                        .map(|(i, v)| (steps.timestamp_ms(i), *v))
                        .collect();
                    if samples.is_empty() {
                        return None;
                    }
                    let exemplars = exemplars
                        .into_iter()
                        .filter_map(|mut e| {
                            // Exemplars of counts carry no value of their own: they show the
                            // series' value at their step, as Tempo places them.
                            let i = steps.index(e.timestamp_ms as u64 * 1_000_000 + 1)?;
                            let v = values.get(i).copied().filter(|v| !v.is_nan())?;
                            if e.value.is_nan() {
                                e.value = v;
                            }
                            Some(e)
                        })
                        .collect();
                    Some(Series {
                        labels,
                        samples,
                        exemplars,
                    })
                },
            )
            .collect();
        (series, self.dropped_series)
    }
}

type Labels = Vec<(String, Value)>;
/// (upper bound, count) of the power-of-two buckets of one step, ascending.
type Buckets = Vec<(f64, f64)>;

/// A series before its NaN steps are dropped: one value per step.
struct Row {
    labels: Labels,
    values: Vec<f64>,
    exemplars: Vec<Exemplar>,
}

fn apply_second_stages(stages: &[SecondStage], rows: &mut [Row]) {
    for stage in stages {
        match stage {
            SecondStage::Filter(op, x) => {
                for row in rows.iter_mut() {
                    for v in row.values.iter_mut() {
                        if !crate::traceql::compare(&Value::Float(*v), *op, &Value::Float(*x), None)
                        {
                            *v = f64::NAN;
                        }
                    }
                }
            }
            SecondStage::TopK(k) | SecondStage::BottomK(k) => {
                let top = matches!(stage, SecondStage::TopK(_));
                let steps = rows.first().map_or(0, |r| r.values.len());
                for i in 0..steps {
                    let mut ranked: Vec<(usize, f64)> = rows
                        .iter()
                        .enumerate()
                        .map(|(s, r)| (s, r.values[i]))
                        .filter(|(_, v)| !v.is_nan())
                        .collect();
                    ranked.sort_by(|a, b| {
                        let o = a.1.total_cmp(&b.1);
                        if top {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                    for (s, _) in ranked.into_iter().skip(*k) {
                        rows[s].values[i] = f64::NAN;
                    }
                }
            }
        }
    }
}

/// Each series holds a cell per step: fewer series when there are many steps.
fn series_cap(max_series: usize, steps: usize) -> usize {
    max_series.min((MAX_CELLS / steps.max(1)).max(1))
}

/// Evaluates a metrics query over the spans that started in the request's window.
pub fn evaluate(
    store: &dyn TraceReader,
    query: &Query,
    req: MetricsRequest,
) -> Result<Result<MetricsResult, String>, StorageError> {
    let Some(stage) = query.metrics.as_ref() else {
        return Ok(Err(
            "not a metrics query: end it with a function such as | rate()".into(),
        ));
    };
    let steps = match Steps::new(&req) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let req = MetricsRequest {
        max_series: series_cap(req.max_series, steps.count),
        ..req
    };
    let (series, dropped, read) = match stage {
        MetricsStage::Aggregate(m) => aggregate(store, query, m, steps, req)?,
        MetricsStage::Compare(c) => compare::evaluate(store, query, c, steps, req)?,
    };
    let partial = if read.truncated {
        Some(format!(
            "stopped after reading {} spans (limits.trace_search_max_spans): older spans of the range are not counted",
            req.max_spans
        ))
    } else if dropped {
        Some(format!(
            "more than {} series: the rest are left out",
            req.max_series
        ))
    } else {
        None
    };
    Ok(Ok(MetricsResult {
        series,
        inspected_spans: read.spans_inspected,
        inspected_traces: read.traces_read,
        inspected_bytes: read.bytes_inspected,
        partial,
    }))
}

/// The series of an aggregate, whether some were dropped, and what was read.
fn aggregate(
    store: &dyn TraceReader,
    query: &Query,
    m: &Metrics,
    steps: Steps,
    req: MetricsRequest,
) -> Result<(Vec<Series>, bool, ResultScan), StorageError> {
    let mut ev = Evaluator {
        m,
        steps,
        req,
        series: HashMap::new(),
        dropped_series: false,
    };
    let (lo, hi) = steps.window();
    let read = for_each_result_span(store, query, lo, hi, req.max_spans, &mut |span| {
        ev.observe(SpanRef::alone(span))
    })?;
    let (series, dropped) = ev.finish();
    Ok((series, dropped, read))
}

/// Tempo's default step for a range: about 240 points, rounded down to a whole granularity
/// (1h, 5m, 1m, 15s, 5s, 1s; 50ms multiples under a minute).
pub fn default_step(start_ns: u64, end_ns: u64) -> u64 {
    let delta = end_ns.saturating_sub(start_ns);
    let baseline = delta / 240;
    const S: u64 = 1_000_000_000;
    if delta < 60 * S {
        let g = 50_000_000;
        return if baseline > g { baseline / g * g } else { g };
    }
    for g in [3600 * S, 300 * S, 60 * S, 15 * S, 5 * S, S] {
        if baseline > g {
            return baseline / g * g;
        }
    }
    S
}

#[cfg(test)]
mod tests;
