//! Binary operators: arithmetic, comparisons (filtering and `bool`), set operators, and
//! vector matching (on/ignoring, group_left/group_right) with Prometheus's cardinality errors.

use std::collections::HashMap;

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};
use storage::{Labels, Sample};

use crate::float_histogram::{CounterResetHint, FloatHistogram, TrimSide};
use crate::value::HistogramPoint;

use super::eval::Evaluator;
use super::labels::{drop_name, go_string, keep, match_labels, set, signature, without};
use super::parse::{T_TRIM_LOWER, T_TRIM_UPPER};
use super::types::{by_step, Ctx, El, OutBuilder, Series, Val};
use crate::value::QueryError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
    TrimUpper,
    TrimLower,
}

impl Op {
    fn of(b: &BinaryExpr) -> Option<Op> {
        match b.op.id() {
            T_TRIM_UPPER => Some(Op::TrimUpper),
            T_TRIM_LOWER => Some(Op::TrimLower),
            _ => Op::parse(&b.op.to_string()),
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Mod => "%",
            Op::Pow => "^",
            Op::Atan2 => "atan2",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::And => "and",
            Op::Or => "or",
            Op::Unless => "unless",
            Op::TrimUpper => "</",
            Op::TrimLower => ">/",
        }
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    /// Arithmetic results are no longer the measured metric, so they lose its name.
    fn drops_name(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow | Op::Atan2
        )
    }
}

/// Applies `op` to two floats: (value, keep). Comparisons keep the left value when true.
fn elem(op: Op, l: f64, r: f64) -> (f64, bool) {
    match op {
        Op::Add => (l + r, true),
        Op::Sub => (l - r, true),
        Op::Mul => (l * r, true),
        Op::Div => (l / r, true),
        Op::Mod => (l % r, true),
        Op::Pow => (l.powf(r), true),
        Op::Atan2 => (l.atan2(r), true),
        Op::Eq => (l, l == r),
        Op::Ne => (l, l != r),
        Op::Gt => (l, l > r),
        Op::Lt => (l, l < r),
        Op::Ge => (l, l >= r),
        Op::Le => (l, l <= r),
        // Trimming needs buckets: float samples have none and are dropped.
        Op::And | Op::Or | Op::Unless | Op::TrimUpper | Op::TrimLower => (f64::NAN, false),
    }
}

/// A result element: float, or histogram.
struct Elem {
    v: f64,
    h: Option<FloatHistogram>,
}

/// Notes an element operation raises (Prometheus's annotations), emitted by the caller.
#[derive(Default)]
struct Notes {
    warnings: Vec<String>,
    infos: Vec<String>,
}

impl Notes {
    fn flush(self, ev: &mut Evaluator) {
        let pos = ev.expr_pos();
        for w in self.warnings {
            ev.warn(format!("{w}{pos}"));
        }
        for i in self.infos {
            ev.info(format!("{i}{pos}"));
        }
    }
}

/// Applies `op` to two samples, either of which may be a histogram; `None` drops the element.
fn elem_any(
    op: Op,
    return_bool: bool,
    (l, lh): (f64, Option<&FloatHistogram>),
    (r, rh): (f64, Option<&FloatHistogram>),
    notes: &mut Notes,
) -> Option<Elem> {
    let name = op.name();
    let incompatible = |notes: &mut Notes, a: &str, b: &str| {
        notes.infos.push(format!(
            "incompatible sample types encountered for binary operator {name:?}: {a} {name} {b}"
        ));
        None
    };
    let (v, h, keep) = match (lh, rh) {
        (None, None) => {
            let (v, keep) = elem(op, l, r);
            (v, None, keep)
        }
        (None, Some(h)) => match op {
            Op::Mul => {
                let mut h = h.clone();
                h.mul(l);
                h.compact();
                (0.0, Some(h), true)
            }
            _ => return incompatible(notes, "float", "histogram"),
        },
        (Some(h), None) => match op {
            Op::TrimUpper => (0.0, Some(h.trim(r, TrimSide::KeepBelow)), true),
            Op::TrimLower => (0.0, Some(h.trim(r, TrimSide::KeepAbove)), true),
            Op::Mul | Op::Div => {
                let mut h = h.clone();
                if op == Op::Mul {
                    h.mul(r);
                } else {
                    h.div(r);
                }
                h.compact();
                (0.0, Some(h), true)
            }
            _ => return incompatible(notes, "histogram", "float"),
        },
        (Some(a), Some(b)) => match op {
            Op::Add | Op::Sub => {
                let mut res = a.clone();
                let what = if op == Op::Add {
                    "addition"
                } else {
                    "subtraction"
                };
                let outcome = if op == Op::Add {
                    res.add(b)
                } else {
                    res.sub(b)
                };
                match outcome {
                    Err(_) => {
                        notes.warnings.push("vector contains a mix of histograms with exponential and custom buckets schemas for metric name \"\"".into());
                        return None;
                    }
                    Ok(o) => {
                        if o.counter_reset_collision {
                            notes.warnings.push(format!(
                                "conflicting counter resets during histogram {what}"
                            ));
                        }
                        if o.nhcb_reconciled {
                            notes.infos.push(format!(
                                "mismatched custom buckets were reconciled during {what}"
                            ));
                        }
                    }
                }
                if op == Op::Sub {
                    res.counter_reset_hint = CounterResetHint::Gauge;
                }
                res.compact();
                (0.0, Some(res), true)
            }
            Op::Eq | Op::Ne => {
                let mut x = a.clone();
                let mut y = b.clone();
                x.compact();
                y.compact();
                let same = x.equals(&y);
                (
                    0.0,
                    Some(a.clone()),
                    if op == Op::Eq { same } else { !same },
                )
            }
            _ => return incompatible(notes, "histogram", "histogram"),
        },
    };
    if return_bool {
        return Some(Elem {
            v: if keep { 1.0 } else { 0.0 },
            h: None,
        });
    }
    keep.then_some(Elem { v, h })
}

fn scalar_op(op: Op, l: f64, r: f64) -> f64 {
    let (v, keep) = elem(op, l, r);
    if op.is_comparison() {
        if keep {
            1.0
        } else {
            0.0
        }
    } else {
        v
    }
}

pub(crate) fn eval_binary(
    ev: &mut Evaluator,
    b: &BinaryExpr,
    ctx: &Ctx,
) -> Result<Val, QueryError> {
    let op = Op::of(b)
        .ok_or_else(|| QueryError::Execution(format!("unsupported binary operator {}", b.op)))?;
    let modifier = b.modifier.clone().unwrap_or_default();
    let lhs = ev.eval(&b.lhs, ctx)?;
    let rhs = ev.eval(&b.rhs, ctx)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(r.iter())
                .map(|(&a, &b)| scalar_op(op, a, b))
                .collect(),
        )),
        (Val::Vector(l), Val::Scalar(r)) => Ok(Val::Vector(vector_scalar(
            ev,
            op,
            l,
            &r,
            false,
            modifier.return_bool,
            ctx,
        ))),
        (Val::Scalar(l), Val::Vector(r)) => Ok(Val::Vector(vector_scalar(
            ev,
            op,
            r,
            &l,
            true,
            modifier.return_bool,
            ctx,
        ))),
        (Val::Vector(l), Val::Vector(r)) => match op {
            Op::And | Op::Or | Op::Unless => set_op(op, &l, &r, &modifier, ctx).map(Val::Vector),
            _ => vector_vector(ev, op, &l, &r, &modifier, ctx).map(Val::Vector),
        },
        _ => Err(QueryError::Execution(
            "binary operators are only defined on scalars and instant vectors".into(),
        )),
    }
}

fn vector_scalar(
    ev: &mut Evaluator,
    op: Op,
    series: Vec<Series>,
    scalar: &[f64],
    swap: bool,
    return_bool: bool,
    ctx: &Ctx,
) -> Vec<Series> {
    let mut out = Vec::with_capacity(series.len());
    let mut notes = Notes::default();
    for mut s in series {
        let mut points = Vec::with_capacity(s.points.len());
        for p in &s.points {
            let sv = scalar[ctx.index_of(p.t)];
            let (l, r) = if swap { (sv, p.v) } else { (p.v, sv) };
            let (mut v, mut keep) = elem(op, l, r);
            if op.is_comparison() && swap {
                v = r;
            }
            if return_bool {
                v = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                points.push(Sample { t: p.t, v });
            }
        }
        let mut hpoints = Vec::new();
        for p in &s.hpoints {
            let sv = (scalar[ctx.index_of(p.t)], None);
            let hv = (0.0, Some(&p.h));
            let (l, r) = if swap { (sv, hv) } else { (hv, sv) };
            if let Some(e) = elem_any(op, return_bool, l, r, &mut notes) {
                match e.h {
                    Some(h) => hpoints.push(HistogramPoint { t: p.t, h }),
                    None => points.push(Sample { t: p.t, v: e.v }),
                }
            }
        }
        points.sort_by_key(|p| p.t);
        if !points.is_empty() || !hpoints.is_empty() {
            s.points = points;
            s.hpoints = hpoints;
            if op.drops_name() || return_bool {
                s.drop_name = true;
            }
            out.push(s);
        }
    }
    notes.flush(ev);
    out
}

fn matching(m: &BinModifier) -> (bool, Vec<String>) {
    match &m.matching {
        Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
        Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
        None => (false, Vec::new()),
    }
}

fn set_op(
    op: Op,
    lhs: &[Series],
    rhs: &[Series],
    m: &BinModifier,
    ctx: &Ctx,
) -> Result<Vec<Series>, QueryError> {
    let (on, names) = matching(m);
    let lsig: Vec<String> = lhs
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let rsig: Vec<String> = rhs
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let lsteps = by_step(lhs, ctx);
    let rsteps = by_step(rhs, ctx);
    let mut out = OutBuilder::default();
    for i in 0..ctx.steps() {
        let (l, r) = (&lsteps[i], &rsteps[i]);
        let t = ctx.ts(i);
        let mut push = |side: &[Series], e: &El| {
            let s = &side[e.series];
            out.push_value(&s.labels, s.drop_name, i, t, e.v, e.hist(side).cloned())
        };
        match op {
            Op::And => {
                if l.is_empty() || r.is_empty() {
                    continue;
                }
                let sigs: std::collections::HashSet<&str> =
                    r.iter().map(|e| rsig[e.series].as_str()).collect();
                for e in l.iter().filter(|e| sigs.contains(lsig[e.series].as_str())) {
                    push(lhs, e)?;
                }
            }
            Op::Or => {
                let sigs: std::collections::HashSet<&str> =
                    l.iter().map(|e| lsig[e.series].as_str()).collect();
                for e in l {
                    push(lhs, e)?;
                }
                for e in r.iter().filter(|e| !sigs.contains(rsig[e.series].as_str())) {
                    push(rhs, e)?;
                }
            }
            _ => {
                let sigs: std::collections::HashSet<&str> =
                    r.iter().map(|e| rsig[e.series].as_str()).collect();
                for e in l.iter().filter(|e| !sigs.contains(lsig[e.series].as_str())) {
                    push(lhs, e)?;
                }
            }
        }
    }
    Ok(out.finish())
}

fn vector_vector(
    ev: &mut Evaluator,
    op: Op,
    lhs: &[Series],
    rhs: &[Series],
    m: &BinModifier,
    ctx: &Ctx,
) -> Result<Vec<Series>, QueryError> {
    let (on, names) = matching(m);
    let (card_one_to_one, one_to_many, include) = match &m.card {
        VectorMatchCardinality::ManyToOne(ls) => (false, false, ls.labels.clone()),
        VectorMatchCardinality::OneToMany(ls) => (false, true, ls.labels.clone()),
        _ => (true, false, Vec::new()),
    };
    // The "many" side is always handled as the left one; values are swapped back below.
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let msig: Vec<String> = many
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let osig: Vec<String> = one
        .iter()
        .map(|s| signature(&s.labels, on, &names))
        .collect();
    let msteps = by_step(many, ctx);
    let osteps = by_step(one, ctx);
    let fill = &m.fill_values;
    let (fill_many, fill_one) = if one_to_many {
        (fill.rhs, fill.lhs)
    } else {
        (fill.lhs, fill.rhs)
    };
    let mut metrics: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut out = OutBuilder::default();
    let mut notes = Notes::default();
    for i in 0..ctx.steps() {
        ev.check_deadline()?;
        let (ml, ol) = (&msteps[i], &osteps[i]);
        if (ml.is_empty() && fill_many.is_none()) || (ol.is_empty() && fill_one.is_none()) {
            continue;
        }
        let t = ctx.ts(i);
        let mut one_by_sig: HashMap<&str, El> = HashMap::with_capacity(ol.len());
        for e in ol {
            let sig = osig[e.series].as_str();
            if let Some(prev) = one_by_sig.get(sig) {
                let side = if one_to_many { "left" } else { "right" };
                let mut pair = [
                    go_string(&one[e.series].labels),
                    go_string(&one[prev.series].labels),
                ];
                pair.sort();
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    go_string(&match_labels(&one[e.series].labels, on, &names)),
                    pair[0],
                    pair[1],
                )));
            }
            one_by_sig.insert(sig, *e);
        }
        let mut matched: HashMap<&str, Vec<Labels>> = HashMap::new();
        for e in ml {
            let sig = msig[e.series].as_str();
            let Some(oe) = one_by_sig.get(sig).copied() else {
                if let Some(fv) = fill_one {
                    let (l, r) = if one_to_many { (fv, e.v) } else { (e.v, fv) };
                    emit(
                        &mut out,
                        op,
                        m.return_bool,
                        l,
                        r,
                        &many[e.series].labels,
                        &many[e.series].labels,
                        i,
                        t,
                        on,
                        &names,
                        card_one_to_one,
                        &include,
                        true,
                    )?;
                }
                continue;
            };
            let metric = metrics
                .entry((e.series, oe.series))
                .or_insert_with(|| {
                    result_metric(
                        &many[e.series].labels,
                        &one[oe.series].labels,
                        op,
                        on,
                        &names,
                        card_one_to_one,
                        &include,
                    )
                })
                .clone();
            // Cardinality is checked before comparisons filter anything out.
            let seen = matched.entry(sig).or_default();
            if card_one_to_one {
                if !seen.is_empty() {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
            } else if seen.contains(&metric) {
                return Err(QueryError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
            seen.push(metric.clone());
            let me = (e.v, e.hist(many));
            let oe_v = (oe.v, oe.hist(one));
            let (l, r) = if one_to_many { (oe_v, me) } else { (me, oe_v) };
            if let Some(res) = elem_any(op, m.return_bool, l, r, &mut notes) {
                out.push_value(&metric, m.return_bool, i, t, res.v, res.h)?;
            }
        }
        if let Some(fv) = fill_many {
            let many_sigs: std::collections::HashSet<&str> =
                ml.iter().map(|e| msig[e.series].as_str()).collect();
            for e in ol {
                if many_sigs.contains(osig[e.series].as_str()) {
                    continue;
                }
                let (l, r) = if one_to_many { (e.v, fv) } else { (fv, e.v) };
                emit(
                    &mut out,
                    op,
                    m.return_bool,
                    l,
                    r,
                    &one[e.series].labels,
                    &one[e.series].labels,
                    i,
                    t,
                    on,
                    &names,
                    card_one_to_one,
                    &include,
                    false,
                )?;
            }
        }
    }
    notes.flush(ev);
    Ok(out.finish())
}

/// Emits a result for an element matched against a fill value (the `fill` modifiers).
#[allow(clippy::too_many_arguments)]
fn emit(
    out: &mut OutBuilder,
    op: Op,
    return_bool: bool,
    l: f64,
    r: f64,
    base: &Labels,
    other: &Labels,
    step: usize,
    t: i64,
    on: bool,
    names: &[String],
    one_to_one: bool,
    include: &[String],
    base_is_many: bool,
) -> Result<(), QueryError> {
    let (mut v, keep) = elem(op, l, r);
    if return_bool {
        v = if keep { 1.0 } else { 0.0 };
    } else if !keep {
        return Ok(());
    }
    // A "one" side series without any "many" partner stands for its whole match group, so
    // it keeps only the labels that define that group (plus group_x's included ones).
    let mut metric = if base_is_many {
        result_metric(base, other, op, on, names, one_to_one, &[])
    } else {
        match_labels(base, on, names)
    };
    if !base_is_many {
        for ln in include {
            metric = set(&metric, ln, base.get(ln).unwrap_or(""));
        }
    }
    out.push(&metric, return_bool, step, t, v)
}

fn result_metric(
    many: &Labels,
    one: &Labels,
    op: Op,
    on: bool,
    names: &[String],
    one_to_one: bool,
    include: &[String],
) -> Labels {
    let mut l = if op.drops_name() {
        drop_name(many)
    } else {
        many.clone()
    };
    if one_to_one {
        l = if on {
            keep(&l, names)
        } else {
            without(&l, names)
        };
    }
    for ln in include {
        l = set(&l, ln, one.get(ln).unwrap_or(""));
    }
    l
}
