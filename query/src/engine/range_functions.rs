//! Functions over range vectors (rate, increase, delta, irate, idelta, deriv, predict_linear,
//! resets, changes, the *_over_time family, double_exponential_smoothing): each step sees the
//! samples of its left-open window `(end - range, end]`.

use promql_parser::parser::Expr;
use storage::{Sample, METRIC_NAME};

use super::aggregate::fmt_go;
use super::eval::Evaluator;
use super::functions::absent_labels;
use super::types::{kahan_inc, quantile, Ctx, Series, Val};
use crate::value::QueryError;

pub(crate) fn eval(
    ev: &mut Evaluator,
    name: &str,
    args: &[&Expr],
    ctx: &Ctx,
) -> Result<Val, QueryError> {
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
    let range_secs = ri.range as f64 / 1000.0;
    // These pass a sample through unchanged, so the name (or a pending drop) is kept.
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let mut out: Vec<Series> = Vec::with_capacity(ri.series.len());
    let mut warned_quantile = false;
    let mut total = 0usize;
    for s in &ri.series {
        ev.check_deadline()?;
        let mut points = Vec::new();
        for (i, ts) in (0..ctx.steps()).map(|i| (i, ctx.ts(i))) {
            let w = ri.window(&s.points, ts);
            if w.is_empty() {
                continue;
            }
            let end = ri.window_end(ts);
            let v = match name {
                "rate" => extrapolated_rate(w, end - ri.range, end, range_secs, true, true),
                "increase" => extrapolated_rate(w, end - ri.range, end, range_secs, true, false),
                "delta" => extrapolated_rate(w, end - ri.range, end, range_secs, false, false),
                "irate" => instant_delta(w, true),
                "idelta" => instant_delta(w, false),
                "deriv" => (w.len() >= 2).then(|| linear_regression(w, w[0].t).0),
                "predict_linear" => (w.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(w, ts);
                    slope * scalars[0][i] + intercept
                }),
                "resets" => Some(w.windows(2).filter(|p| p[1].v < p[0].v).count() as f64),
                "changes" => Some(
                    w.windows(2)
                        .filter(|p| p[1].v != p[0].v && !(p[1].v.is_nan() && p[0].v.is_nan()))
                        .count() as f64,
                ),
                "avg_over_time" => Some(avg(w)),
                "sum_over_time" => {
                    let (s, c) = w.iter().fold((0.0, 0.0), |(s, c), p| kahan_inc(p.v, s, c));
                    Some(s + c)
                }
                "count_over_time" => Some(w.len() as f64),
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
                "last_over_time" => Some(w[w.len() - 1].v),
                "first_over_time" => Some(w[0].v),
                "ts_of_last_over_time" => Some(w[w.len() - 1].t as f64 / 1000.0),
                "ts_of_first_over_time" => Some(w[0].t as f64 / 1000.0),
                "ts_of_min_over_time" => Some(ts_of_extreme(w, |a, b| a < b)),
                "ts_of_max_over_time" => Some(ts_of_extreme(w, |a, b| a > b)),
                "present_over_time" | "absent_over_time" => Some(1.0),
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
        if points.is_empty() {
            continue;
        }
        if matches!(name, "rate" | "increase") {
            if let Some(metric) = s.labels.get(METRIC_NAME) {
                if !["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suf| metric.ends_with(suf))
                {
                    let pos = ev.pos(name, Some(0));
                    ev.info(format!(
                        "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}{pos}"
                    ));
                }
            }
        }
        total += points.len();
        ev.check_points(total)?;
        out.push(Series {
            labels: s.labels.clone(),
            drop_name: !keep_name || s.drop_name,
            points,
        });
    }
    if name == "absent_over_time" {
        let mut present = vec![false; ctx.steps()];
        for s in &out {
            for p in &s.points {
                present[ctx.index_of(p.t)] = true;
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
        let series = if points.is_empty() {
            vec![]
        } else {
            vec![Series {
                labels: absent_labels(args[0]),
                drop_name: true,
                points,
            }]
        };
        return Ok(Val::Vector(series));
    }
    Ok(Val::Vector(out))
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
/// counters).
fn extrapolated_rate(
    w: &[Sample],
    range_start: i64,
    range_end: i64,
    range_secs: f64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.v - first.v;
    if counter {
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
