//! Functions over range vectors (rate, increase, delta, irate, idelta, deriv, predict_linear,
//! resets, changes, the *_over_time family, double_exponential_smoothing): each step sees the
//! samples of its left-open window `(end - range, end]`.

use promql_parser::parser::Expr;
use storage::{Sample, METRIC_NAME};

use super::aggregate::fmt_go;
use super::eval::Evaluator;
use super::functions::absent_labels;
use super::types::{kahan_inc, quantile, Ctx, Series, Val};
use crate::float_histogram::{
    mean_from_sum, AddOutcome, CounterResetHint, FloatHistogram, HistogramError, KahanSum,
    ResetHints,
};
use crate::value::{HistogramPoint, QueryError};

/// How many window samples are processed between two looks at the query deadline.
const DEADLINE_CHECK_SAMPLES: usize = 1 << 14;

pub(crate) fn eval(
    ev: &mut Evaluator,
    name: &str,
    args: &[&Expr],
    ctx: &Ctx,
) -> Result<Val, QueryError> {
    let mut out: Vec<Series> = Vec::new();
    each(ev, name, args, ctx, &mut |s| {
        out.push(s);
        Ok(())
    })?;
    if name == "absent_over_time" {
        return Ok(Val::Vector(absent_over_time(&out, args[0], ctx)));
    }
    Ok(Val::Vector(out))
}

/// Whether [`each`] can hand out the function's result series by series.
pub(crate) fn streams(name: &str) -> bool {
    is_range_function(name) && name != "absent_over_time"
}

/// Evaluates a range function and hands each result series to `sink` as soon as it is
/// computed from its input series, which is then dropped.
pub(crate) fn each(
    ev: &mut Evaluator,
    name: &str,
    args: &[&Expr],
    ctx: &Ctx,
    sink: &mut dyn FnMut(Series) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let matrix_arg = match name {
        "quantile_over_time" => 1,
        _ => 0,
    };
    if !is_range_function(name) {
        return Err(QueryError::Execution(format!(
            "function {name:?} is not supported"
        )));
    }
    let mut scalars: Vec<Vec<f64>> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i != matrix_arg {
            scalars.push(ev.eval_scalar(a, ctx)?);
        }
    }
    if name == "double_exponential_smoothing" {
        for (what, v) in [("smoothing", &scalars[0]), ("trend", &scalars[1])] {
            if let Some(bad) = v.iter().find(|f| !(**f > 0.0 && **f < 1.0)) {
                return Err(QueryError::Execution(format!(
                    "invalid {what} factor. Expected: 0 < {} < 1, got: {bad:.6}",
                    if what == "smoothing" { "sf" } else { "tf" }
                )));
            }
        }
    }
    let ri = ev.range_input(args[matrix_arg], ctx)?;
    let place = ri.place;
    let range_secs = place.range as f64 / 1000.0;
    // These pass a sample through unchanged, so the name (or a pending drop) is kept.
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let mut warned_quantile = false;
    let mut total = 0usize;
    // Annotations point at the function's range argument; locating it scans the query text,
    // so that is done once here rather than for every window.
    let pos = ev.pos(name, Some(matrix_arg));
    let with_histograms = handles_histograms(name);
    // Samples looked at since the deadline was last checked: one series' windows can be long
    // enough to outlast the timeout, but reading the clock at every step costs more than
    // a short window's arithmetic.
    let mut unchecked = 0usize;
    for s in ri.series {
        let s = s?;
        let metric = s.labels.get(METRIC_NAME).unwrap_or("");
        let mut points = Vec::new();
        let mut hpoints = Vec::new();
        let mut windows = place.windows(&s);
        // Counters mostly never decrease: then no window of the series can hold a reset and
        // rate & co. skip looking for one.
        let float_resets = s.points.windows(2).any(|p| p[1].v < p[0].v);
        for (i, ts) in (0..ctx.steps()).map(|i| (i, ctx.ts(i))) {
            let (w, hw) = windows.at(ts);
            unchecked += w.len() + hw.len() + 1;
            if unchecked >= DEADLINE_CHECK_SAMPLES {
                ev.check_deadline()?;
                unchecked = 0;
            }
            if w.is_empty() && hw.is_empty() {
                continue;
            }
            let end = place.window_end(ts);
            if with_histograms {
                let r = histogram_aware(
                    ev,
                    name,
                    w,
                    hw,
                    (end - place.range, end, range_secs, float_resets),
                    metric,
                    &pos,
                );
                match r {
                    Some(Outcome::Float(v)) => points.push(Sample { t: ts, v }),
                    Some(Outcome::Hist(h)) => hpoints.push(HistogramPoint { t: ts, h }),
                    None => {}
                }
                continue;
            }
            if !hw.is_empty() {
                if w.is_empty() {
                    continue;
                }
                ev.info(format!(
                    "ignored histograms in a range containing both floats and histograms for metric name {metric:?}{pos}"
                ));
            }
            let v = match name {
                "deriv" => (w.len() >= 2).then(|| linear_regression(w, w[0].t).0),
                "predict_linear" => (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, ts);
                    slope * scalars[0][i] + intercept
                }),
                "min_over_time" => {
                    Some(
                        w.iter()
                            .skip(1)
                            .fold(w[0].v, |m, p| if p.v < m || m.is_nan() { p.v } else { m }),
                    )
                }
                "max_over_time" => {
                    Some(
                        w.iter()
                            .skip(1)
                            .fold(w[0].v, |m, p| if p.v > m || m.is_nan() { p.v } else { m }),
                    )
                }
                "ts_of_min_over_time" => Some(ts_of_extreme(w, |a, b| a < b)),
                "ts_of_max_over_time" => Some(ts_of_extreme(w, |a, b| a > b)),
                "stddev_over_time" => Some(variance(w).sqrt()),
                "stdvar_over_time" => Some(variance(w)),
                "quantile_over_time" => {
                    let q = scalars[0][i];
                    if (q.is_nan() || !(0.0..=1.0).contains(&q)) && !warned_quantile {
                        warned_quantile = true;
                        let pos = ev.pos(name, Some(0));
                        ev.warn(format!(
                            "quantile value should be between 0 and 1, got {}{pos}",
                            fmt_go(q)
                        ));
                    }
                    let mut vals: Vec<f64> = w.iter().map(|p| p.v).collect();
                    Some(quantile(q, &mut vals))
                }
                "mad_over_time" if w.iter().any(|p| p.v.is_nan()) => Some(f64::NAN),
                "mad_over_time" => {
                    let mut vals: Vec<f64> = w.iter().map(|p| p.v).collect();
                    let median = quantile(0.5, &mut vals);
                    let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
                    Some(quantile(0.5, &mut dev))
                }
                "double_exponential_smoothing" => smoothing(w, scalars[0][i], scalars[1][i]),
                _ => None,
            };
            if let Some(v) = v {
                points.push(Sample { t: ts, v });
            }
        }
        if points.is_empty() && hpoints.is_empty() {
            continue;
        }
        if matches!(name, "rate" | "increase") && s.hpoints.is_empty() {
            if let Some(metric) = s.labels.get(METRIC_NAME) {
                if !["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suf| metric.ends_with(suf))
                {
                    ev.info(format!(
                        "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}{pos}"
                    ));
                }
            }
        }
        total += points.len() + hpoints.len();
        ev.check_points(total)?;
        sink(Series {
            drop_name: !keep_name || s.drop_name,
            points,
            hpoints,
            ..s
        })?;
    }
    Ok(())
}

/// 1 at every step where no series of the function's input had a window with samples.
fn absent_over_time(present_series: &[Series], arg: &Expr, ctx: &Ctx) -> Vec<Series> {
    let mut present = vec![false; ctx.steps()];
    for s in present_series {
        for t in s
            .points
            .iter()
            .map(|p| p.t)
            .chain(s.hpoints.iter().map(|p| p.t))
        {
            present[ctx.index_of(t)] = true;
        }
    }
    let points: Vec<Sample> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(i, _)| Sample {
            t: ctx.ts(i),
            v: 1.0,
        })
        .collect();
    if points.is_empty() {
        return vec![];
    }
    vec![Series {
        labels: absent_labels(arg),
        drop_name: true,
        points,
        hpoints: Vec::new(),
    }]
}

enum Outcome {
    Float(f64),
    Hist(FloatHistogram),
}

/// Functions that take histogram samples into account (the others see floats only).
fn handles_histograms(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "resets"
            | "changes"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "last_over_time"
            | "first_over_time"
            | "ts_of_last_over_time"
            | "ts_of_first_over_time"
            | "present_over_time"
            | "absent_over_time"
    )
}

/// A float or histogram sample in time order, for functions walking both kinds.
enum Any<'a> {
    F(f64),
    H(&'a FloatHistogram),
}

fn merged<'a>(w: &'a [Sample], hw: &'a [HistogramPoint]) -> Vec<(i64, Any<'a>)> {
    let mut all: Vec<(i64, Any<'a>)> = w
        .iter()
        .map(|p| (p.t, Any::F(p.v)))
        .chain(hw.iter().map(|p| (p.t, Any::H(&p.h))))
        .collect();
    all.sort_by_key(|x| x.0);
    all
}

/// One window of a function in `handles_histograms`; `(range_start, range_end, range_secs)`
/// place the window, `float_resets` tells whether the series' floats ever decrease, `pos` is
/// the annotation position of the range argument.
fn histogram_aware(
    ev: &mut Evaluator,
    name: &str,
    w: &[Sample],
    hw: &[HistogramPoint],
    (range_start, range_end, range_secs, float_resets): (i64, i64, f64, bool),
    metric: &str,
    pos: &str,
) -> Option<Outcome> {
    let mixed = !w.is_empty() && !hw.is_empty();
    let warn_mixed = |ev: &mut Evaluator| {
        ev.warn(format!(
            "encountered a mix of histograms and floats for metric name {metric:?}{pos}"
        ))
    };
    match name {
        "rate" | "increase" | "delta" => {
            if mixed {
                warn_mixed(ev);
                return None;
            }
            if hw.is_empty() {
                let counter = name != "delta";
                return extrapolated_rate(
                    w,
                    range_start,
                    range_end,
                    range_secs,
                    counter,
                    float_resets,
                    name == "rate",
                )
                .map(Outcome::Float);
            }
            histogram_rate(
                ev,
                hw,
                range_start,
                range_end,
                range_secs,
                name,
                metric,
                pos,
            )
            .map(Outcome::Hist)
        }
        "irate" | "idelta" => {
            let rate = name == "irate";
            let all = merged(w, hw);
            if all.len() < 2 {
                return None;
            }
            let (pt, prev) = &all[all.len() - 2];
            let (lt, last) = &all[all.len() - 1];
            let interval = lt - pt;
            match (prev, last) {
                (Any::F(_), Any::F(_)) => instant_delta(w, rate).map(Outcome::Float),
                (Any::H(p), Any::H(l)) => {
                    let mut h = (*l).clone();
                    let gauge =
                        |x: &FloatHistogram| x.counter_reset_hint == CounterResetHint::Gauge;
                    if rate && (gauge(p) || gauge(l)) {
                        ev.warn(format!(
                            "this native histogram metric is not a counter: {metric:?}{pos}"
                        ));
                    }
                    if !(rate || gauge(p) && gauge(l)) {
                        ev.warn(format!(
                            "this native histogram metric is not a gauge: {metric:?}{pos}"
                        ));
                    }
                    if !rate || !l.detect_reset(p) {
                        combined(ev, h.sub(p), "subtraction", metric, pos)?;
                    }
                    h.counter_reset_hint = CounterResetHint::Gauge;
                    h.compact();
                    if rate {
                        if interval == 0 {
                            return None;
                        }
                        h.div(interval as f64 / 1000.0);
                    }
                    Some(Outcome::Hist(h))
                }
                _ => {
                    warn_mixed(ev);
                    None
                }
            }
        }
        "resets" | "changes" => {
            let all = merged(w, hw);
            let mut n = 0usize;
            for pair in all.windows(2) {
                let hit = match (&pair[0].1, &pair[1].1) {
                    (Any::F(a), Any::F(b)) => {
                        if name == "resets" {
                            b < a
                        } else {
                            a != b && !(a.is_nan() && b.is_nan())
                        }
                    }
                    (Any::H(a), Any::H(b)) => {
                        if name == "resets" {
                            b.detect_reset(a)
                        } else {
                            !b.equals(a)
                        }
                    }
                    _ => true,
                };
                n += usize::from(hit);
            }
            Some(Outcome::Float(n as f64))
        }
        "sum_over_time" | "avg_over_time" => {
            if mixed {
                warn_mixed(ev);
                return None;
            }
            if hw.is_empty() {
                return Some(Outcome::Float(if name == "sum_over_time" {
                    let (s, c) = w.iter().fold((0.0, 0.0), |(s, c), p| kahan_inc(p.v, s, c));
                    s + c
                } else {
                    avg(w)
                }));
            }
            let mut acc = KahanSum::new(&hw[0].h);
            let mut reconciled = false;
            let mut hints = ResetHints::default();
            hints.see(&hw[0].h);
            for p in &hw[1..] {
                hints.see(&p.h);
                match acc.add(&p.h) {
                    Ok(o) => reconciled |= o.nhcb_reconciled,
                    Err(HistogramError::IncompatibleSchema) => {
                        warn_mixed_schema(ev, metric, pos);
                        return None;
                    }
                }
            }
            if hints.conflicting() {
                ev.warn(format!(
                    "conflicting counter resets during histogram aggregation{pos}"
                ));
            }
            if reconciled {
                ev.info(format!(
                    "mismatched custom buckets were reconciled during aggregation{pos}"
                ));
            }
            let mut sum = acc.finish();
            if name == "avg_over_time" {
                let parts = hw.iter().map(|p| &p.h);
                match mean_from_sum(sum, parts, hw.len() as f64) {
                    Ok(m) => sum = m,
                    Err(_) => return None,
                }
            }
            sum.compact();
            Some(Outcome::Hist(sum))
        }
        "count_over_time" => Some(Outcome::Float((w.len() + hw.len()) as f64)),
        "present_over_time" | "absent_over_time" => Some(Outcome::Float(1.0)),
        "last_over_time" | "ts_of_last_over_time" | "first_over_time" | "ts_of_first_over_time" => {
            let all = merged(w, hw);
            let (t, v) = if name.contains("last") {
                all.last()?
            } else {
                all.first()?
            };
            if name.starts_with("ts_of") {
                return Some(Outcome::Float(*t as f64 / 1000.0));
            }
            Some(match v {
                Any::F(f) => Outcome::Float(*f),
                Any::H(h) => Outcome::Hist((*h).clone()),
            })
        }
        _ => None,
    }
}

/// Warns that `metric` mixes exponential and custom bucket schemas, which drops its sample.
fn warn_mixed_schema(ev: &mut Evaluator, metric: &str, pos: &str) {
    ev.warn(format!(
        "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {metric:?}{pos}"
    ));
}

/// Checks the outcome of a histogram `op` (subtraction or addition) on `metric`: `None`, after
/// the warning, on a schema mix; reconciled custom buckets are noted.
fn combined(
    ev: &mut Evaluator,
    outcome: Result<AddOutcome, HistogramError>,
    op: &str,
    metric: &str,
    pos: &str,
) -> Option<()> {
    match outcome {
        Err(_) => {
            warn_mixed_schema(ev, metric, pos);
            None
        }
        Ok(o) => {
            if o.nhcb_reconciled {
                ev.info(format!(
                    "mismatched custom buckets were reconciled during {op}{pos}"
                ));
            }
            Some(())
        }
    }
}

/// Prometheus's histogramRate plus the extrapolation of extrapolatedRate.
#[allow(clippy::too_many_arguments)]
fn histogram_rate(
    ev: &mut Evaluator,
    hw: &[HistogramPoint],
    range_start: i64,
    range_end: i64,
    range_secs: f64,
    name: &str,
    metric: &str,
    pos: &str,
) -> Option<FloatHistogram> {
    if hw.len() < 2 {
        return None;
    }
    let counter = name != "delta";
    let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
    let last = &hw[hw.len() - 1].h;
    let mut prev = hw[0].h.clone();
    let mut not_counter = counter && (gauge(&prev) || gauge(last));
    if counter && hw[1].h.detect_reset(&prev) {
        prev = FloatHistogram {
            schema: hw[1].h.schema,
            custom_values: hw[1].h.custom_values.clone(),
            ..FloatHistogram::default()
        };
    }
    if last.uses_custom_buckets() != prev.uses_custom_buckets() {
        warn_mixed_schema(ev, metric, pos);
        return None;
    }
    let mut min_schema = last.schema.min(prev.schema);
    for p in &hw[1..hw.len() - 1] {
        if !counter {
            continue;
        }
        not_counter |= gauge(&p.h);
        min_schema = min_schema.min(p.h.schema);
        if p.h.uses_custom_buckets() != prev.uses_custom_buckets() {
            warn_mixed_schema(ev, metric, pos);
            return None;
        }
    }
    if not_counter {
        ev.warn(format!(
            "this native histogram metric is not a counter: {metric:?}{pos}"
        ));
    }
    let mut h = last.copy_to_schema(min_schema);
    combined(ev, h.sub(&prev), "subtraction", metric, pos)?;
    if counter {
        let mut before = prev.clone();
        for p in &hw[1..] {
            if p.h.detect_reset(&before) {
                combined(ev, h.add(&before), "addition", metric, pos)?;
            }
            before = p.h.clone();
        }
    } else if !gauge(&hw[0].h) || !gauge(last) {
        ev.warn(format!(
            "this native histogram metric is not a gauge: {metric:?}{pos}"
        ));
    }
    h.counter_reset_hint = CounterResetHint::Gauge;
    h.compact();

    let first_t = hw[0].t;
    let last_t = hw[hw.len() - 1].t;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled / (hw.len() - 1) as f64;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last_t) as f64 / 1000.0;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter && h.count > 0.0 && hw[0].h.count >= 0.0 {
        let to_zero = sampled * (hw[0].h.count / h.count);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if name == "rate" {
        factor /= range_secs;
    }
    h.mul(factor);
    Some(h)
}

fn is_range_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "resets"
            | "changes"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "first_over_time"
            | "ts_of_last_over_time"
            | "ts_of_first_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "present_over_time"
            | "absent_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "quantile_over_time"
            | "mad_over_time"
            | "double_exponential_smoothing"
    )
}

/// Prometheus's extrapolatedRate: the change over the window, extrapolated towards the window
/// edges (at most half a sample interval beyond the first/last sample, never below zero for
/// counters). Without `resets` the samples are known never to decrease.
fn extrapolated_rate(
    w: &[Sample],
    range_start: i64,
    range_end: i64,
    range_secs: f64,
    counter: bool,
    resets: bool,
    rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.v - first.v;
    if counter && resets {
        let mut prev = first.v;
        for p in &w[1..] {
            if p.v < prev {
                result += prev;
            }
            prev = p.v;
        }
    }
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg_between = sampled / (w.len() - 1) as f64;
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.t) as f64 / 1000.0;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= range_secs;
    }
    Some(result * factor)
}

fn instant_delta(w: &[Sample], rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let last = w[w.len() - 1];
    let prev = w[w.len() - 2];
    let mut result = if rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares fit of value over time (seconds relative to `intercept_t`): (slope, intercept).
fn linear_regression(w: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = w[0].v;
    let mut const_y = true;
    for (i, p) in w.iter().enumerate() {
        if const_y && i > 0 && p.v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn avg(w: &[Sample]) -> f64 {
    let (mut sum, mut mean, mut c) = (w[0].v, 0.0, 0.0);
    let mut incremental = false;
    let mut count = 1.0;
    for p in &w[1..] {
        count += 1.0;
        if !incremental {
            let (s, nc) = kahan_inc(p.v, sum, c);
            if !s.is_infinite() {
                (sum, c) = (s, nc);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if p.v.is_infinite() && (mean > 0.0) == (p.v > 0.0) {
                continue;
            }
            if !p.v.is_infinite() && !p.v.is_nan() {
                continue;
            }
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(p.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

/// Timestamp (seconds) of the first sample that `better` prefers over all earlier ones.
fn ts_of_extreme(w: &[Sample], better: impl Fn(f64, f64) -> bool) -> f64 {
    let mut best = w[0];
    for p in &w[1..] {
        if better(p.v, best.v) || best.v.is_nan() {
            best = *p;
        }
    }
    best.t as f64 / 1000.0
}

fn variance(w: &[Sample]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in w {
        count += 1.0;
        let delta = p.v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (p.v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

fn smoothing(w: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, w[0].v);
    let mut b = w[1].v - w[0].v;
    for (i, p) in w.iter().enumerate().skip(1) {
        let x = sf * p.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, x + y);
    }
    Some(s1)
}
