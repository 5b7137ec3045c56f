//! histogram_quantile and histogram_fraction over classic histograms (series of cumulative
//! `le` buckets) and native ones, with Prometheus's bucket clean-up (coalescing, precision and monotonicity
//! fixes) and annotations.

use std::collections::HashMap;

use promql_parser::parser::Expr;
use storage::{Labels, METRIC_NAME};

use super::aggregate::fmt_go;
use super::eval::{unwrap_parens, Evaluator};
use super::labels::{set, without};
use super::types::{by_step, Ctx, OutBuilder, Val};
use crate::float_histogram as fh;
use crate::value::QueryError;

const BUCKET_LABEL: &str = "le";

#[derive(Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

pub(crate) fn eval(
    ev: &mut Evaluator,
    name: &str,
    args: &[&Expr],
    ctx: &Ctx,
) -> Result<Val, QueryError> {
    // Which argument is the bucket vector, and the scalar parameters.
    let (vec_idx, params, label) = match name {
        "histogram_fraction" => (
            2,
            vec![ev.eval_scalar(args[0], ctx)?, ev.eval_scalar(args[1], ctx)?],
            None,
        ),
        "histogram_quantiles" => {
            let label = match unwrap_parens(args[1]) {
                Expr::StringLiteral(s) => s.val.clone(),
                _ => {
                    return Err(QueryError::Execution(
                        "histogram_quantiles requires a label name".into(),
                    ))
                }
            };
            let qs = args[2..]
                .iter()
                .map(|a| ev.eval_scalar(a, ctx))
                .collect::<Result<Vec<_>, _>>()?;
            (0, qs, Some(label))
        }
        _ => (1, vec![ev.eval_scalar(args[0], ctx)?], None),
    };
    let input = ev.eval_vector(args[vec_idx], ctx)?;
    if let Some(l) = &label {
        if input.iter().any(|s| s.labels.get(l).is_some()) {
            return Err(QueryError::Execution(format!(
                "label {l:?} already exists in the input series"
            )));
        }
    }
    let le_names = vec![BUCKET_LABEL.to_string()];
    let stripped: Vec<Labels> = input
        .iter()
        .map(|s| without(&s.labels, &le_names))
        .collect();
    let steps = by_step(&input, ctx);
    let vec_pos = ev.pos(name, Some(vec_idx));
    let mut out = OutBuilder::default();
    for (i, els) in steps.iter().enumerate() {
        if name != "histogram_fraction" {
            for q in params.iter().map(|p| p[i]) {
                if q.is_nan() || !(0.0..=1.0).contains(&q) {
                    let pos = ev.pos(name, Some(if vec_idx == 0 { 2 } else { 0 }));
                    ev.warn(format!(
                        "quantile value should be between 0 and 1, got {}{pos}",
                        fmt_go(q)
                    ));
                }
            }
        }
        let mut groups: Vec<(usize, Vec<Bucket>)> = Vec::new();
        let mut index: HashMap<&Labels, usize> = HashMap::new();
        let natives: Vec<&super::types::El> = els.iter().filter(|e| e.h.is_some()).collect();
        for e in els {
            if e.h.is_some() {
                continue;
            }
            let labels = &input[e.series].labels;
            let le = labels.get(BUCKET_LABEL).unwrap_or("");
            let Some(upper) = parse_le(le) else {
                ev.warn(format!(
                    "bucket label {:?} is missing or has a malformed value of {le:?} for metric name {:?}{vec_pos}",
                    BUCKET_LABEL,
                    labels.get(METRIC_NAME).unwrap_or("")
                ));
                continue;
            };
            let key = &stripped[e.series];
            let g = *index.entry(key).or_insert_with(|| {
                groups.push((e.series, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(Bucket { upper, count: e.v });
        }
        let mut mixed: Vec<&Labels> = Vec::new();
        for e in &natives {
            let key = &stripped[e.series];
            if index.contains_key(key) {
                mixed.push(key);
                ev.warn(format!(
                    "vector contains a mix of classic and native histograms for metric name {:?}{vec_pos}",
                    input[e.series].labels.get(METRIC_NAME).unwrap_or("")
                ));
                continue;
            }
            let Some(h) = e.hist(&input) else { continue };
            let metric = input[e.series].labels.get(METRIC_NAME).unwrap_or("");
            let nan_observed = h.has_nan_observations();
            if name == "histogram_fraction" {
                if nan_observed {
                    ev.info(format!(
                        "input to histogram_fraction has NaN observations, which are excluded from all fractions for metric name {metric:?}{vec_pos}"
                    ));
                }
                let v = fh::fraction(params[0][i], params[1][i], h);
                out.push(&input[e.series].labels, true, i, ctx.ts(i), v)?;
                continue;
            }
            for q in params.iter().map(|p| p[i]) {
                let v = fh::quantile(q, h);
                if nan_observed {
                    let effect = if v.is_nan() {
                        "is NaN"
                    } else {
                        "is skewed higher"
                    };
                    ev.info(format!(
                        "input to histogram_quantile has NaN observations, result {effect} for metric name {metric:?}{vec_pos}"
                    ));
                }
                let labels = match &label {
                    Some(l) => set(&input[e.series].labels, l, &fmt_quantile(q)),
                    None => input[e.series].labels.clone(),
                };
                out.push(&labels, true, i, ctx.ts(i), v)?;
            }
        }
        for (first, buckets) in groups {
            if mixed.contains(&&stripped[first]) {
                continue;
            }
            if name == "histogram_fraction" {
                let v = bucket_fraction(params[0][i], params[1][i], &mut buckets.clone());
                out.push(&stripped[first], true, i, ctx.ts(i), v)?;
                continue;
            }
            for q in params.iter().map(|p| p[i]) {
                let (v, forced) = bucket_quantile(q, &mut buckets.clone());
                if forced {
                    ev.info(format!(
                        "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}{vec_pos}",
                        input[first].labels.get(METRIC_NAME).unwrap_or("")
                    ));
                }
                let labels = match &label {
                    Some(l) => set(&stripped[first], l, &fmt_quantile(q)),
                    None => stripped[first].clone(),
                };
                out.push(&labels, true, i, ctx.ts(i), v)?;
            }
        }
    }
    Ok(Val::Vector(out.finish()))
}

/// The label value histogram_quantiles gives a quantile: always with a decimal point.
fn fmt_quantile(q: f64) -> String {
    if q.is_finite() && q.fract() == 0.0 {
        format!("{q:.1}")
    } else {
        fmt_go(q)
    }
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse::<f64>().ok(),
    }
}

/// Sorts, merges equal bounds and repairs non-monotonic counts; returns whether
/// monotonicity had to be forced. `None` if the buckets are unusable (no +Inf bucket).
fn prepare(buckets: &mut Vec<Bucket>) -> Option<bool> {
    if buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets[buckets.len() - 1].upper != f64::INFINITY {
        return None;
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    *buckets = merged;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let delta = (b.count - prev).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / b.count <= 1e-12 {
            b.count = prev;
        } else {
            prev = b.count;
        }
    }
    let mut forced = false;
    let mut max = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
            forced = true;
        }
    }
    Some(forced)
}

fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    let Some(forced) = prepare(buckets) else {
        return (f64::NAN, false);
    };
    if buckets.len() < 2 {
        return (f64::NAN, false);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, false);
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.count < rank);
    if b == n {
        return (buckets[n - 1].upper, forced);
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return (buckets[0].upper, forced);
    }
    let (mut start, end, mut count) = (0.0, buckets[b].upper, buckets[b].count);
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (start + (end - start) * (rank / count), forced)
}

fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if prepare(buckets).is_none() {
        return f64::NAN;
    }
    let total = buckets[buckets.len() - 1].count;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, b) in buckets.iter().enumerate() {
        let lo = if i == 0 {
            if b.upper > 0.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        } else {
            buckets[i - 1].upper
        };
        let hi = b.upper;
        let count = if i == 0 {
            b.count
        } else {
            b.count - buckets[i - 1].count
        };
        if !lower_set && lo >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lo >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lo < lower && hi > lower {
            lower_rank = rank + interpolate(count, lo, hi, lower);
            lower_set = true;
        }
        if !upper_set && lo < upper && hi > upper {
            upper_rank = rank + interpolate(count, lo, hi, upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += count;
    }
    if !lower_set || lower_rank > total {
        lower_rank = total;
    }
    if !upper_set || upper_rank > total {
        upper_rank = total;
    }
    (upper_rank - lower_rank) / total
}

/// The share of a bucket's count below `v`, assuming a uniform spread; an infinite bucket
/// edge puts everything on the finite side.
fn interpolate(count: f64, lo: f64, hi: f64, v: f64) -> f64 {
    if hi.is_infinite() {
        return 0.0;
    }
    if lo.is_infinite() {
        return count;
    }
    count * (v - lo) / (hi - lo)
}
