//! `info(v, {selector})` (Prometheus 3, experimental): adds to each series of `v`, step by
//! step, the data labels of the info series (`target_info` unless the selector names others)
//! that share its identifying labels (`instance`, `job`). The info series are read at the
//! time `v`'s own samples come from, so `@` and `offset` inside `v` move that lookup too.

use promql_parser::label::{MatchOp, Matcher, Matchers};
use std::time::Duration;

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};
use storage::{Label, Labels, METRIC_NAME};

use super::eval::{offset_ms, unwrap_parens, Evaluator};
use super::labels::go_string;
use super::types::{by_step, Ctx, OutBuilder, Val};
use crate::value::QueryError;

/// The labels an info series and the series it describes must agree on.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// A label no series has. promql-parser refuses selectors whose matchers all accept the empty
/// string (`{data=~".*"}`), which info() allows; `!=""` on this label is added to info()'s
/// selector before parsing (see `parse`) and dropped here.
pub(crate) const SELECTOR_PLACEHOLDER: &str = "__novamon_info_selector__";

pub(crate) fn eval_info(ev: &mut Evaluator, args: &[&Expr], ctx: &Ctx) -> Result<Val, QueryError> {
    let base = ev.eval_vector(args[0], ctx)?;
    let selector = match args.get(1).map(|e| unwrap_parens(e)) {
        None => None,
        Some(Expr::VectorSelector(vs)) => Some(vs),
        Some(_) => {
            return Err(QueryError::Execution(
                "info(): the second argument must be a label selector".into(),
            ))
        }
    };
    let (names, data) = split_matchers(selector)?;
    let mut all = names.clone();
    all.extend(data.iter().cloned());
    let mut info_selector = VectorSelector::new(None, Matchers::new(all));
    let (at, offset) = time_shift(args[0]);
    info_selector.at = at;
    info_selector.offset = match offset {
        0 => None,
        ms if ms > 0 => Some(Offset::Pos(Duration::from_millis(ms as u64))),
        ms => Some(Offset::Neg(Duration::from_millis(ms.unsigned_abs()))),
    };
    let samples = ev.eval_vector_selector(&info_selector, ctx, false)?;
    if let Some(h) = samples.iter().find(|s| !s.hpoints.is_empty()) {
        return Err(QueryError::Execution(format!(
            "this should be an info metric, with float samples: {}",
            go_string(&h.labels)
        )));
    }
    // Read again with sample timestamps as values: of two series of one info metric, the
    // one sampled last describes the target.
    let infos = ev.eval_vector_selector(&info_selector, ctx, true)?;
    let info_steps = by_step(&infos, ctx);
    // Without any info series, a sample survives only if every data matcher accepts "".
    let unmatched_survives = data.iter().all(|m| m.is_match(""));
    let wanted: Option<Vec<&str>> =
        (!data.is_empty()).then(|| data.iter().map(|m| m.name.as_str()).collect());

    let mut out = OutBuilder::default();
    for s in &base {
        let name = s.labels.get(METRIC_NAME).unwrap_or("");
        // Info series are not enriched by themselves (or their peers).
        let is_info = names.iter().all(|m| m.is_match(name));
        let ids: Vec<(&str, &str)> = IDENTIFYING
            .iter()
            .filter_map(|&l| s.labels.get(l).map(|v| (l, v)))
            .collect();
        let points = s
            .points
            .iter()
            .map(|p| (p.t, p.v, None))
            .chain(s.hpoints.iter().map(|p| (p.t, 0.0, Some(p.h.clone()))));
        for (t, v, h) in points {
            let step = ctx.index_of(t);
            let mut matched: Vec<(&Labels, f64)> = Vec::new();
            if !is_info && !ids.is_empty() {
                for e in &info_steps[step] {
                    let l = &infos[e.series].labels;
                    if !ids.iter().all(|&(n, v)| l.get(n) == Some(v)) {
                        continue;
                    }
                    let metric = l.get(METRIC_NAME);
                    match matched
                        .iter_mut()
                        .find(|(m, _)| m.get(METRIC_NAME) == metric)
                    {
                        Some(latest) if latest.1 < e.v => *latest = (l, e.v),
                        Some(_) => {}
                        None => matched.push((l, e.v)),
                    }
                }
            }
            let matched: Vec<&Labels> = matched.into_iter().map(|(l, _)| l).collect();
            let labels = if is_info {
                s.labels.clone()
            } else if matched.is_empty() {
                if !unmatched_survives {
                    continue;
                }
                s.labels.clone()
            } else {
                enrich(&s.labels, &matched, wanted.as_deref())?
            };
            out.push_value(&labels, s.drop_name, step, t, v, h)?;
        }
    }
    Ok(Val::Vector(out.finish()))
}

/// The `@` and offset (ms) that take an evaluation time to the time `e`'s samples are read
/// at, following `e` down to its selector through what passes samples on.
fn time_shift(e: &Expr) -> (Option<AtModifier>, i64) {
    let (at, offset, inner) = match e {
        Expr::VectorSelector(vs) => (vs.at.clone(), offset_ms(&vs.offset), None),
        Expr::MatrixSelector(ms) => (ms.vs.at.clone(), offset_ms(&ms.vs.offset), None),
        Expr::Subquery(sq) => (sq.at.clone(), offset_ms(&sq.offset), Some(&*sq.expr)),
        Expr::Paren(p) => (None, 0, Some(&*p.expr)),
        Expr::Unary(u) => (None, 0, Some(&*u.expr)),
        Expr::Aggregate(a) => (None, 0, Some(&*a.expr)),
        Expr::Call(c) => (
            None,
            0,
            c.args
                .args
                .iter()
                .map(|a| a.as_ref())
                .find(|a| matches!(a.value_type(), ValueType::Vector | ValueType::Matrix)),
        ),
        _ => (None, 0, None),
    };
    match inner.map(time_shift) {
        Some((Some(inner_at), inner_offset)) => (Some(inner_at), inner_offset),
        Some((None, inner_offset)) => (at, offset + inner_offset),
        None => (at, offset),
    }
}

/// The selector's `__name__` matchers (defaulted as Prometheus does) and its data matchers.
fn split_matchers(
    selector: Option<&VectorSelector>,
) -> Result<(Vec<Matcher>, Vec<Matcher>), QueryError> {
    let mut names = Vec::new();
    let mut data = Vec::new();
    if let Some(vs) = selector {
        if let Some(n) = &vs.name {
            names.push(Matcher::new(MatchOp::Equal, METRIC_NAME, n));
        }
        for m in &vs.matchers.matchers {
            if m.name == SELECTOR_PLACEHOLDER {
                continue;
            }
            if m.name == METRIC_NAME {
                if vs.name.is_none() {
                    names.push(m.clone());
                }
            } else {
                data.push(m.clone());
            }
        }
    }
    let positive = |m: &Matcher| matches!(m.op, MatchOp::Equal | MatchOp::Re(_));
    if names.is_empty() {
        names.push(Matcher::new(MatchOp::Equal, METRIC_NAME, "target_info"));
    } else if !names.iter().any(positive) {
        // Only exclusions: the candidates are still info metrics.
        let re =
            regex::Regex::new("^(?:.+_info)$").map_err(|e| QueryError::Execution(e.to_string()))?;
        names.push(Matcher::new(MatchOp::Re(re), METRIC_NAME, ".+_info"));
    }
    Ok((names, data))
}

/// `base` plus the data labels of the matching info series it lacks (only those named by
/// the data matchers, when there are any).
fn enrich(base: &Labels, infos: &[&Labels], wanted: Option<&[&str]>) -> Result<Labels, QueryError> {
    let mut added: Vec<Label> = Vec::new();
    for info in infos {
        for l in info.iter() {
            let name = l.name.as_str();
            if name == METRIC_NAME
                || IDENTIFYING.contains(&name)
                || base.get(name).is_some()
                || wanted.is_some_and(|w| !w.contains(&name))
            {
                continue;
            }
            match added.iter().find(|a| a.name == l.name) {
                Some(a) if a.value != l.value => {
                    let (x, y) = if a.value < l.value {
                        (&a.value, &l.value)
                    } else {
                        (&l.value, &a.value)
                    };
                    let base = go_string(base);
                    return Err(QueryError::Execution(format!(
                        "conflicting label: {name} has values {x:?} and {y:?} in the info series of {base}"
                    )));
                }
                Some(_) => {}
                None => added.push(l.clone()),
            }
        }
    }
    let mut all: Vec<Label> = base.iter().cloned().collect();
    all.extend(added);
    Ok(Labels::new(all))
}
