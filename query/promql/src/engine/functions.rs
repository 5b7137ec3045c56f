//! Function calls on instant vectors and scalars (math, clamping, rounding, date functions,
//! label manipulation, sorting, absent, scalar/vector conversion, timestamp); range-vector
//! functions are delegated to `range_functions`, classic histograms to `histogram`.

use std::cmp::Ordering;
use std::collections::HashSet;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr};
use regex::Regex;
use storage::{Label, Labels, Sample, METRIC_NAME};

use super::eval::{unwrap_parens, Evaluator};
use super::labels::set;
use super::types::{by_step, go_max, go_min, merge_same_labels, Ctx, Series, Val};
use super::{histogram, range_functions};
use crate::float_histogram::{self as fh, FloatHistogram};
use crate::value::QueryError;

pub(crate) fn eval_call(ev: &mut Evaluator, c: &Call, ctx: &Ctx) -> Result<Val, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    match name {
        "time" => Ok(Val::Scalar(
            (0..ctx.steps())
                .map(|i| ctx.ts(i) as f64 / 1000.0)
                .collect(),
        )),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; ctx.steps()])),
        "start" | "end" | "step" | "range" => {
            let (start, end, step) = ev.query_bounds();
            let v = match name {
                "start" => start,
                "end" => end,
                "step" => step,
                _ => end - start,
            };
            Ok(Val::Scalar(vec![v as f64 / 1000.0; ctx.steps()]))
        }
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(args[0], ctx)?;
            let b = ev.eval_scalar(args[1], ctx)?;
            let f = if name == "min_of" { go_min } else { go_max };
            Ok(Val::Scalar(
                a.iter().zip(b.iter()).map(|(&x, &y)| f(x, y)).collect(),
            ))
        }
        "vector" => {
            let v = ev.eval_scalar(args[0], ctx)?;
            Ok(Val::Vector(vec![Series {
                labels: Labels::default(),
                drop_name: false,
                hpoints: Vec::new(),
                points: v
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Sample { t: ctx.ts(i), v })
                    .collect(),
            }]))
        }
        "scalar" => {
            let series = ev.eval_vector(args[0], ctx)?;
            let steps = by_step(&series, ctx);
            Ok(Val::Scalar(
                steps
                    .iter()
                    .map(|els| {
                        let mut floats = els.iter().filter(|e| e.h.is_none());
                        match (floats.next(), floats.next()) {
                            (Some(e), None) => e.v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let mut series = match unwrap_parens(args[0]) {
                Expr::VectorSelector(vs) => ev.eval_vector_selector(vs, ctx, true)?,
                other => {
                    let mut s = ev.eval_vector(other, ctx)?;
                    for x in &mut s {
                        let hist_times = x.hpoints.drain(..).map(|p| Sample { t: p.t, v: 0.0 });
                        x.points.extend(hist_times.collect::<Vec<_>>());
                        x.points.sort_by_key(|p| p.t);
                        for p in &mut x.points {
                            p.v = p.t as f64 / 1000.0;
                        }
                    }
                    s
                }
            };
            for s in &mut series {
                s.drop_name = true;
            }
            Ok(Val::Vector(series))
        }
        "label_replace" => label_replace(ev, &args, ctx),
        "label_join" => label_join(ev, &args, ctx),
        "absent" => {
            let series = ev.eval_vector(args[0], ctx)?;
            let steps = by_step(&series, ctx);
            let labels = absent_labels(args[0]);
            let points: Vec<Sample> = steps
                .iter()
                .enumerate()
                .filter(|(_, els)| els.is_empty())
                .map(|(i, _)| Sample {
                    t: ctx.ts(i),
                    v: 1.0,
                })
                .collect();
            Ok(Val::Vector(if points.is_empty() {
                vec![]
            } else {
                vec![Series {
                    labels,
                    drop_name: false,
                    points,
                    hpoints: Vec::new(),
                }]
            }))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => sort(ev, name, &args, ctx),
        "histogram_quantile" | "histogram_fraction" | "histogram_quantiles" => {
            histogram::eval(ev, name, &args, ctx)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            let series = ev.eval_vector(args[0], ctx)?;
            let f = |h: &FloatHistogram| match name {
                "histogram_count" => h.count,
                "histogram_sum" => h.sum,
                "histogram_avg" => h.sum / h.count,
                "histogram_stddev" => fh::variance(h).sqrt(),
                _ => fh::variance(h),
            };
            Ok(Val::Vector(
                series
                    .into_iter()
                    .filter_map(|mut s| {
                        s.points = s
                            .hpoints
                            .iter()
                            .map(|p| Sample { t: p.t, v: f(&p.h) })
                            .collect();
                        s.hpoints.clear();
                        s.drop_name = true;
                        (!s.points.is_empty()).then_some(s)
                    })
                    .collect(),
            ))
        }
        "clamp" | "clamp_min" | "clamp_max" | "round" => {
            let series = ev.eval_vector(args[0], ctx)?;
            let a1 = match args.get(1) {
                Some(a) => ev.eval_scalar(a, ctx)?,
                None => vec![1.0; ctx.steps()],
            };
            let a2 = match args.get(2) {
                Some(a) => ev.eval_scalar(a, ctx)?,
                None => vec![],
            };
            Ok(Val::Vector(map_values(series, ctx, |v, i| match name {
                "clamp" => (a2[i].partial_cmp(&a1[i]) != Some(Ordering::Less))
                    .then(|| go_max(a1[i], go_min(a2[i], v))),
                "clamp_min" => Some(go_max(a1[i], v)),
                "clamp_max" => Some(go_min(a1[i], v)),
                _ => {
                    let inv = 1.0 / a1[i];
                    Some((v * inv + 0.5).floor() / inv)
                }
            })))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let series = match args.first() {
                Some(a) => ev.eval_vector(a, ctx)?,
                None => vec![Series {
                    labels: Labels::default(),
                    drop_name: false,
                    hpoints: Vec::new(),
                    points: (0..ctx.steps())
                        .map(|i| Sample {
                            t: ctx.ts(i),
                            v: (ctx.ts(i) / 1000) as f64,
                        })
                        .collect(),
                }],
            };
            Ok(Val::Vector(map_values(series, ctx, |v, _| {
                date_part(name, v)
            })))
        }
        "info" => super::info::eval_info(ev, &args, ctx),
        _ => {
            if let Some(f) = math_fn(name) {
                let series = ev.eval_vector(args[0], ctx)?;
                return Ok(Val::Vector(map_values(series, ctx, |v, _| Some(f(v)))));
            }
            range_functions::eval(ev, name, &args, ctx)
        }
    }
}

/// Applies `f(value, step index)` to every point; the results lose the metric name.
fn map_values(
    series: Vec<Series>,
    ctx: &Ctx,
    f: impl Fn(f64, usize) -> Option<f64>,
) -> Vec<Series> {
    series
        .into_iter()
        .filter_map(|mut s| {
            s.points = s
                .points
                .iter()
                .filter_map(|p| f(p.v, ctx.index_of(p.t)).map(|v| Sample { t: p.t, v }))
                .collect();
            // Float functions skip histogram samples.
            s.hpoints.clear();
            s.drop_name = true;
            (!s.points.is_empty()).then_some(s)
        })
        .collect()
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

/// Civil date parts (UTC) of a Unix time in seconds, as Prometheus's date functions.
fn date_part(name: &str, secs: f64) -> Option<f64> {
    if secs.is_nan() || secs.is_infinite() {
        return None;
    }
    let secs = secs as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    Some(match name {
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (month_days[..(m - 1) as usize].iter().sum::<i64>() + d) as f64,
        "days_in_month" => month_days[(m - 1) as usize] as f64,
        "hour" => (sod / 3600) as f64,
        "minute" => (sod % 3600 / 60) as f64,
        "month" => m as f64,
        _ => y as f64,
    })
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn string_arg(e: &Expr) -> Result<String, QueryError> {
    match unwrap_parens(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => Err(QueryError::Execution(
            "expected a string literal argument".into(),
        )),
    }
}

/// Prometheus accepts any valid UTF-8 label name. promql-parser decodes `\xNN` escapes as code
/// points where Go produces raw bytes, so a name with such a character coming from a `\x`
/// escape of a high byte is invalid UTF-8 in Prometheus.
pub(crate) fn valid_label_name(ev: &Evaluator, name: &str) -> bool {
    let raw_byte = name.chars().any(|c| ('\u{80}'..='\u{ff}').contains(&c));
    !(name.is_empty() || raw_byte && ev.query_has_raw_byte_escape())
}

fn label_replace(ev: &mut Evaluator, args: &[&Expr], ctx: &Ctx) -> Result<Val, QueryError> {
    let dst = string_arg(args[1])?;
    let repl = string_arg(args[2])?;
    let src = string_arg(args[3])?;
    let re_str = string_arg(args[4])?;
    let re = Regex::new(&format!("^(?s:{re_str})$")).map_err(|_| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {re_str}"
        ))
    })?;
    if !valid_label_name(ev, &dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let mut series = ev.eval_vector(args[0], ctx)?;
    for s in &mut series {
        let value = s.labels.get(&src).unwrap_or("").to_string();
        if let Some(caps) = re.captures(&value) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            s.labels = set(&s.labels, &dst, &res);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    Ok(Val::Vector(merge_same_labels(series)?))
}

fn label_join(ev: &mut Evaluator, args: &[&Expr], ctx: &Ctx) -> Result<Val, QueryError> {
    let dst = string_arg(args[1])?;
    let sep = string_arg(args[2])?;
    let srcs = args[3..]
        .iter()
        .map(|a| string_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    if !valid_label_name(ev, &dst) {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let mut series = ev.eval_vector(args[0], ctx)?;
    for s in &mut series {
        let joined = srcs
            .iter()
            .map(|n| s.labels.get(n).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(&sep);
        s.labels = set(&s.labels, &dst, &joined);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    Ok(Val::Vector(merge_same_labels(series)?))
}

/// The labels `absent()` reports: the argument's equality matchers (a label matched more than
/// once is left out).
pub(crate) fn absent_labels(arg: &Expr) -> Labels {
    let vs = match unwrap_parens(arg) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut out: Vec<Label> = Vec::new();
    let mut has: HashSet<&str> = HashSet::new();
    let all = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    for m in all {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && !has.contains(m.name.as_str()) {
            out.retain(|l| l.name != m.name);
            out.push(Label::new(m.name.clone(), m.value.clone()));
            has.insert(&m.name);
        } else {
            out.retain(|l| l.name != m.name);
        }
    }
    Labels::new(out)
}

fn sort(ev: &mut Evaluator, name: &str, args: &[&Expr], ctx: &Ctx) -> Result<Val, QueryError> {
    let mut series = ev.eval_vector(args[0], ctx)?;
    let label_names = args[1..]
        .iter()
        .map(|a| string_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    // Only an instant result has an order; a range result is a set of series.
    if ev.query_bounds().2 != 0 {
        let pos = ev.pos(name, None);
        ev.warn(format!(
            "sort is ineffective for range queries since results are always ordered by labels{pos}"
        ));
    }
    if ctx.steps() != 1 {
        return Ok(Val::Vector(series));
    }
    if matches!(name, "sort" | "sort_desc") {
        // Sorting by value only applies to floats; histogram samples are dropped.
        series.retain(|s| !s.points.is_empty());
        for s in &mut series {
            s.hpoints.clear();
        }
    }
    let value = |s: &Series| s.points.first().map(|p| p.v).unwrap_or(f64::NAN);
    match name {
        "sort" | "sort_desc" => {
            let desc = name == "sort_desc";
            series.sort_by(|a, b| {
                let (x, y) = (value(a), value(b));
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    _ if desc => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                    _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                }
            });
        }
        _ => {
            let desc = name == "sort_by_label_desc";
            series.sort_by(|a, b| {
                for l in &label_names {
                    let o =
                        natural_cmp(a.labels.get(l).unwrap_or(""), b.labels.get(l).unwrap_or(""));
                    if o != Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                let o = a.labels.cmp(&b.labels);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            });
        }
    }
    Ok(Val::Vector(series))
}

/// Natural order: digit runs compare as numbers, everything else bytewise.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    while !x.is_empty() && !y.is_empty() {
        let xd = x[0].is_ascii_digit();
        let yd = y[0].is_ascii_digit();
        let xl = x
            .iter()
            .position(|c| c.is_ascii_digit() != xd)
            .unwrap_or(x.len());
        let yl = y
            .iter()
            .position(|c| c.is_ascii_digit() != yd)
            .unwrap_or(y.len());
        let (xc, yc) = (&x[..xl], &y[..yl]);
        let o = if xd && yd {
            let xt = trim_zeros(xc);
            let yt = trim_zeros(yc);
            xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
        } else {
            xc.cmp(yc)
        };
        if o != Ordering::Equal {
            return o;
        }
        x = &x[xl..];
        y = &y[yl..];
    }
    x.len().cmp(&y.len())
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}
