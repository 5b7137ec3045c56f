//! Aggregation operators (sum, avg, min, max, count, group, stddev, stdvar, quantile, topk,
//! bottomk, limitk, limit_ratio, count_values) with by/without grouping.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use storage::Labels;

use super::eval::{unwrap_parens, Evaluator};
use super::labels::{drop_name, keep, set, signature, without};
use super::types::{by_step, kahan_inc, quantile, Ctx, El, OutBuilder, Series, Val};
use crate::float_histogram::{mean_from_sum, FloatHistogram, KahanSum, ResetHints};
use crate::value::QueryError;

struct Grouping {
    without: bool,
    names: Vec<String>,
}

impl Grouping {
    fn key(&self, l: &Labels) -> String {
        signature(l, !self.without, &self.names)
    }

    fn labels(&self, l: &Labels) -> Labels {
        if self.without {
            drop_name(&without(l, &self.names))
        } else {
            keep(l, &self.names)
        }
    }
}

pub(crate) fn eval_aggregate(
    ev: &mut Evaluator,
    a: &AggregateExpr,
    ctx: &Ctx,
) -> Result<Val, QueryError> {
    let op = a.op.to_string();
    let mut grouping = match &a.modifier {
        Some(LabelModifier::Include(ls)) => Grouping {
            without: false,
            names: ls.labels.clone(),
        },
        Some(LabelModifier::Exclude(ls)) => Grouping {
            without: true,
            names: ls.labels.clone(),
        },
        None => Grouping {
            without: false,
            names: vec![],
        },
    };
    if op == "count_values" {
        let label = match a.param.as_deref().map(unwrap_parens) {
            Some(Expr::StringLiteral(s)) => s.val.clone(),
            _ => {
                return Err(QueryError::Execution(
                    "count_values requires a string parameter".into(),
                ))
            }
        };
        if !super::functions::valid_label_name(ev, &label) {
            // Characters from `\xNN` escapes stand for raw bytes, as Go prints them.
            let quoted: String = label
                .chars()
                .map(|c| {
                    if ('\u{80}'..='\u{ff}').contains(&c) {
                        format!("\\x{:02x}", c as u32)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            return Err(QueryError::Execution(format!(
                "invalid label name \"{quoted}\""
            )));
        }
        if !grouping.without {
            grouping.names.push(label.clone());
        }
        let input = ev.eval_vector(&a.expr, ctx)?;
        return count_values(&input, &grouping, &label, ctx).map(Val::Vector);
    }
    let params = match &a.param {
        Some(p) => Some(ev.eval_scalar(p, ctx)?),
        None => None,
    };
    let selects_k = matches!(op.as_str(), "topk" | "bottomk" | "limitk" | "limit_ratio");
    let mut taken = Input::new(&grouping, &op, ctx);
    if selects_k {
        for s in ev.eval_vector(&a.expr, ctx)? {
            taken.add(s, false);
        }
    } else {
        ev.eval_vector_each(&a.expr, ctx, &mut |s| {
            taken.add(s, true);
            Ok(())
        })?;
    }
    let Input {
        series: input,
        group_of,
        group_labels,
        group_drop,
        folded,
        ..
    } = taken;
    match op.as_str() {
        "topk" | "bottomk" | "limitk" | "limit_ratio" => {
            let params = params.unwrap_or_default();
            let steps = by_step(&input, ctx);
            select_k(
                ev,
                &op,
                &input,
                &group_of,
                group_labels.len(),
                &steps,
                &params,
                ctx,
            )
            .map(Val::Vector)
        }
        _ => {
            let params = params.unwrap_or_default();
            let groups = group_labels.len();
            let points: usize = input.iter().map(|s| s.points.len()).sum();
            // Floats only, and fewer group-step slots than points: accumulating series by
            // series skips regrouping every point by step, which costs more than the sums.
            // Series folded while they arrived are already accumulated; what was held (series
            // with histograms among them) is regrouped by step.
            let (mut floats, input, group_of) = match folded {
                Some(f) => (Some(f), input, group_of),
                None if input.iter().all(|s| s.hpoints.is_empty())
                    && worth_folding(groups, ctx, points) =>
                {
                    (
                        Some(float_accs(&op, &input, &group_of, ctx)),
                        vec![],
                        vec![],
                    )
                }
                None => (None, input, group_of),
            };
            if let Some(f) = &mut floats {
                f.resize_with(groups, || empty_slots(ctx));
            }
            let steps = by_step(&input, ctx);
            let mut out = OutBuilder::default();
            let pos = ev.pos(&op, None);
            let expr_pos = ev.pos(&op, Some(0));
            for i in 0..ctx.steps() {
                ev.check_deadline()?;
                let els = steps.get(i).map_or(&[][..], Vec::as_slice);
                let mut accs: Vec<Option<Acc>> = match &mut floats {
                    Some(f) => f.iter_mut().map(|slots| slots[i].take()).collect(),
                    None => (0..groups).map(|_| None).collect(),
                };
                let mut hists: Vec<Option<HistAcc>> =
                    (0..group_labels.len()).map(|_| None).collect();
                for e in els {
                    let g = group_of[e.series];
                    let v = match e.hist(&input) {
                        Some(h) => match op.as_str() {
                            "sum" | "avg" => {
                                match &mut hists[g] {
                                    None => hists[g] = Some(HistAcc::new(h)),
                                    Some(acc) => acc.add(h),
                                }
                                continue;
                            }
                            "count" | "group" => 0.0,
                            _ => {
                                ev.info(format!("ignored histogram in {op} aggregation{pos}"));
                                continue;
                            }
                        },
                        None => e.v,
                    };
                    match &mut accs[g] {
                        None => accs[g] = Some(Acc::new(&op, v)),
                        Some(acc) => acc.add(&op, v),
                    }
                }
                for (g, h) in hists.into_iter().enumerate() {
                    let Some(h) = h else { continue };
                    if accs[g].take().is_some() {
                        ev.warn(format!(
                            "encountered a mix of histograms and floats for aggregation{pos}"
                        ));
                        continue;
                    }
                    if h.incompatible {
                        ev.warn(format!("vector contains a mix of histograms with exponential and custom buckets schemas for metric name \"\"{pos}"));
                        continue;
                    }
                    // Prometheus places these at the aggregated expression.
                    if h.hints.conflicting() {
                        ev.warn(format!(
                            "conflicting counter resets during histogram aggregation{expr_pos}"
                        ));
                    }
                    if h.reconciled {
                        ev.info(format!(
                            "mismatched custom buckets were reconciled during aggregation{expr_pos}"
                        ));
                    }
                    let mut sum = h.sum.finish();
                    if op == "avg" {
                        let parts = els
                            .iter()
                            .filter(|e| group_of[e.series] == g)
                            .filter_map(|e| e.hist(&input));
                        match mean_from_sum(sum, parts, h.count) {
                            Ok(m) => sum = m,
                            Err(_) => continue,
                        }
                    }
                    sum.compact();
                    let slot = out.slot_keyed(g, &group_labels[g], group_drop[g], i)?;
                    out.push_at(slot, ctx.ts(i), 0.0, Some(sum));
                }
                let q = params.get(i).copied().unwrap_or(f64::NAN);
                if op == "quantile" && (q.is_nan() || !(0.0..=1.0).contains(&q)) {
                    let pos = ev.pos(&op, Some(0));
                    ev.warn(format!(
                        "quantile value should be between 0 and 1, got {}{pos}",
                        fmt_go(q)
                    ));
                }
                for (g, acc) in accs.into_iter().enumerate() {
                    if let Some(acc) = acc {
                        let slot = out.slot_keyed(g, &group_labels[g], group_drop[g], i)?;
                        out.push_at(slot, ctx.ts(i), acc.result(&op, q), None);
                    }
                }
            }
            Ok(Val::Vector(out.finish()))
        }
    }
}

/// Float points an aggregation holds as series before it starts folding float-only series
/// into accumulators as they arrive: below it, holding costs little and regrouping by step
/// stays possible.
const FOLD_AFTER_POINTS: usize = 1 << 16;

/// Whether accumulating `points` series by series into a slot per group and step is cheaper
/// than regrouping them by step.
fn worth_folding(groups: usize, ctx: &Ctx, points: usize) -> bool {
    groups.saturating_mul(ctx.steps()).saturating_mul(2) <= points
}

/// An aggregation's input, taken series by series: each series' group is found as it
/// arrives; the series are held, unless, past [`FOLD_AFTER_POINTS`] float points with no
/// histogram yet and fewer group-step slots than points, float-only series are folded into
/// their group's accumulators (see [`float_accs`]) and dropped.
struct Input<'g> {
    grouping: &'g Grouping,
    op: &'g str,
    ctx: &'g Ctx,
    series: Vec<Series>,
    group_of: Vec<usize>,
    /// Float points of the held series.
    points: usize,
    held_histograms: bool,
    index: HashMap<String, usize>,
    group_labels: Vec<Labels>,
    /// A group loses its name if any member would.
    group_drop: Vec<bool>,
    folded: Option<Vec<Vec<Option<Acc>>>>,
}

impl<'g> Input<'g> {
    fn new(grouping: &'g Grouping, op: &'g str, ctx: &'g Ctx) -> Input<'g> {
        Input {
            grouping,
            op,
            ctx,
            series: Vec::new(),
            group_of: Vec::new(),
            points: 0,
            held_histograms: false,
            index: HashMap::new(),
            group_labels: Vec::new(),
            group_drop: Vec::new(),
            folded: None,
        }
    }

    fn add(&mut self, s: Series, may_fold: bool) {
        let key = self.grouping.key(&s.labels);
        let g = *self.index.entry(key).or_insert_with(|| {
            self.group_labels.push(self.grouping.labels(&s.labels));
            self.group_drop.push(false);
            self.group_labels.len() - 1
        });
        self.group_drop[g] |= s.drop_name;
        if let Some(accs) = &mut self.folded {
            if s.hpoints.is_empty() {
                fold(accs, g, &s, self.op, self.ctx);
                return;
            }
        }
        self.points += s.points.len();
        self.held_histograms |= !s.hpoints.is_empty();
        self.series.push(s);
        self.group_of.push(g);
        if may_fold
            && self.folded.is_none()
            && !self.held_histograms
            && self.points >= FOLD_AFTER_POINTS
            && worth_folding(self.group_labels.len(), self.ctx, self.points)
        {
            self.folded = Some(float_accs(self.op, &self.series, &self.group_of, self.ctx));
            self.series.clear();
            self.group_of.clear();
            self.points = 0;
        }
    }
}

/// One group's accumulators, one slot per step.
fn empty_slots(ctx: &Ctx) -> Vec<Option<Acc>> {
    (0..ctx.steps()).map(|_| None).collect()
}

/// Adds the points of series `s` to the accumulators of its group `g`.
fn fold(accs: &mut Vec<Vec<Option<Acc>>>, g: usize, s: &Series, op: &str, ctx: &Ctx) {
    if accs.len() <= g {
        accs.resize_with(g + 1, || empty_slots(ctx));
    }
    let slots = &mut accs[g];
    for p in &s.points {
        match &mut slots[ctx.index_of(p.t)] {
            Some(acc) => acc.add(op, p.v),
            slot => *slot = Some(Acc::new(op, p.v)),
        }
    }
}

/// The float accumulators of every group at every step (`[group][step]`), filled series by
/// series. Each slot still sees its members in series order, as the walk step by step adds
/// them, so the results are the same to the bit.
fn float_accs(op: &str, input: &[Series], group_of: &[usize], ctx: &Ctx) -> Vec<Vec<Option<Acc>>> {
    let mut accs = Vec::new();
    for (s, &g) in input.iter().zip(group_of) {
        fold(&mut accs, g, s, op, ctx);
    }
    accs
}

/// Running histogram sum of one group at one step.
struct HistAcc {
    sum: KahanSum,
    count: f64,
    incompatible: bool,
    hints: ResetHints,
    reconciled: bool,
}

impl HistAcc {
    fn new(h: &FloatHistogram) -> HistAcc {
        let mut hints = ResetHints::default();
        hints.see(h);
        HistAcc {
            sum: KahanSum::new(h),
            count: 1.0,
            incompatible: false,
            hints,
            reconciled: false,
        }
    }

    fn add(&mut self, h: &FloatHistogram) {
        self.count += 1.0;
        if self.incompatible {
            return;
        }
        self.hints.see(h);
        match self.sum.add(h) {
            Ok(o) => self.reconciled |= o.nhcb_reconciled,
            Err(_) => self.incompatible = true,
        }
    }
}

/// Running state of one group at one step.
struct Acc {
    value: f64,
    mean: f64,
    c: f64,
    count: f64,
    incremental: bool,
    values: Vec<f64>,
}

impl Acc {
    fn new(op: &str, f: f64) -> Acc {
        let mut a = Acc {
            value: f,
            mean: f,
            c: 0.0,
            count: 1.0,
            incremental: false,
            values: Vec::new(),
        };
        match op {
            "stddev" | "stdvar" => {
                a.value = if f.is_nan() || f.is_infinite() {
                    f64::NAN
                } else {
                    0.0
                }
            }
            "quantile" => a.values.push(f),
            "group" => a.value = 1.0,
            _ => {}
        }
        a
    }

    fn add(&mut self, op: &str, f: f64) {
        match op {
            "sum" => (self.value, self.c) = kahan_inc(f, self.value, self.c),
            "avg" => {
                self.count += 1.0;
                if !self.incremental {
                    let (v, c) = kahan_inc(f, self.value, self.c);
                    if !v.is_infinite() {
                        (self.value, self.c) = (v, c);
                        return;
                    }
                    self.incremental = true;
                    self.mean = self.value / (self.count - 1.0);
                    self.c /= self.count - 1.0;
                }
                if self.mean.is_infinite() {
                    if f.is_infinite() && (self.mean > 0.0) == (f > 0.0) {
                        return;
                    }
                    if !f.is_infinite() && !f.is_nan() {
                        return;
                    }
                }
                let current = self.mean + self.c;
                (self.mean, self.c) =
                    kahan_inc(f / self.count - current / self.count, self.mean, self.c);
            }
            "max" if self.value < f || self.value.is_nan() => self.value = f,
            "min" if self.value > f || self.value.is_nan() => self.value = f,
            "count" => self.count += 1.0,
            "stddev" | "stdvar" => {
                self.count += 1.0;
                let delta = f - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (f - self.mean);
            }
            "quantile" => self.values.push(f),
            _ => {}
        }
    }

    fn result(mut self, op: &str, q: f64) -> f64 {
        match op {
            "sum" => self.value + self.c,
            "avg" if self.incremental => self.mean + self.c,
            "avg" => (self.value + self.c) / self.count,
            "count" => self.count,
            "stdvar" => self.value / self.count,
            "stddev" => (self.value / self.count).sqrt(),
            "quantile" => quantile(q, &mut self.values),
            _ => self.value,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn select_k(
    ev: &mut Evaluator,
    op: &str,
    input: &[Series],
    group_of: &[usize],
    groups: usize,
    steps: &[Vec<El>],
    params: &[f64],
    ctx: &Ctx,
) -> Result<Vec<Series>, QueryError> {
    let mut out = OutBuilder::default();
    for (i, els) in steps.iter().enumerate() {
        let p = params.get(i).copied().unwrap_or(f64::NAN);
        let mut per_group: Vec<Vec<El>> = vec![Vec::new(); groups];
        for e in els {
            if e.h.is_some() && matches!(op, "topk" | "bottomk") {
                let pos = ev.pos(op, None);
                ev.info(format!("ignored histogram in {op} aggregation{pos}"));
                continue;
            }
            per_group[group_of[e.series]].push(*e);
        }
        let mut order: Vec<usize> = Vec::new();
        for e in els
            .iter()
            .filter(|e| e.h.is_none() || !matches!(op, "topk" | "bottomk"))
        {
            let g = group_of[e.series];
            if !order.contains(&g) {
                order.push(g);
            }
        }
        let chosen: Vec<Vec<El>> = if op == "limit_ratio" {
            if p.is_nan() {
                return Err(QueryError::Execution(format!(
                    "Ratio value is {}",
                    fmt_go(p)
                )));
            }
            let ratio = p.clamp(-1.0, 1.0);
            if ratio != p {
                let pos = ev.pos(op, Some(0));
                ev.warn(format!(
                    "ratio value should be between -1 and 1, got {}, capping to {}{pos}",
                    fmt_go(p),
                    fmt_go(ratio)
                ));
            }
            order
                .iter()
                .map(|&g| {
                    per_group[g]
                        .iter()
                        .filter(|e| ratio != 0.0 && ratio_selected(ratio, &input[e.series].labels))
                        .copied()
                        .collect()
                })
                .collect()
        } else {
            if p.is_nan() {
                return Err(QueryError::Execution("Parameter value is NaN".into()));
            }
            if p.abs() >= 9.223_372_036_854_776e18 {
                return Err(QueryError::Execution(format!(
                    "Scalar value {} overflows int64",
                    fmt_go(p)
                )));
            }
            let k = p.trunc();
            if k < 1.0 {
                continue;
            }
            let k = k as usize;
            let cmp = match op {
                "topk" => Some(cmp_desc_nan_last as fn(f64, f64) -> std::cmp::Ordering),
                "bottomk" => Some(cmp_asc_nan_last as fn(f64, f64) -> std::cmp::Ordering),
                _ => None,
            };
            order
                .iter()
                .map(|&g| match cmp {
                    Some(cmp) => first_k(&per_group[g], k, cmp),
                    None => per_group[g].iter().take(k).copied().collect(),
                })
                .collect()
        };
        for e in chosen.into_iter().flatten() {
            let s = &input[e.series];
            let h = e.hist(input).cloned();
            let slot = out.slot_keyed(e.series, &s.labels, s.drop_name, i)?;
            out.push_at(slot, ctx.ts(i), e.v, h);
        }
    }
    Ok(out.finish())
}

/// The first `k` of `els` in the stable order of `cmp` on their values, in that order: what
/// sorting them all and keeping `k` gives, at the cost of a selection plus sorting `k`. A
/// dashboard's `topk(10, ...)` over hundreds of series per step spent a third of its time
/// sorting them all.
fn first_k(els: &[El], k: usize, cmp: fn(f64, f64) -> std::cmp::Ordering) -> Vec<El> {
    // Ties broken by position, as the stable sort breaks them: the same k, in the same order.
    let order = |(i, a): &(usize, El), (j, b): &(usize, El)| cmp(a.v, b.v).then(i.cmp(j));
    let mut keyed: Vec<(usize, El)> = els.iter().copied().enumerate().collect();
    if keyed.len() > k {
        keyed.select_nth_unstable_by(k, order);
        keyed.truncate(k);
    }
    keyed.sort_unstable_by(order);
    keyed.into_iter().map(|(_, e)| e).collect()
}

fn cmp_desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn cmp_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Prometheus's deterministic sampling for limit_ratio: a series' offset in [0, 1] is the hash
/// of its label set; positive ratios take the low end, negative ones the complementary high end.
fn ratio_selected(ratio: f64, labels: &Labels) -> bool {
    let offset = super::hash::labels_hash(labels) as f64 / u64::MAX as f64;
    (ratio >= 0.0 && offset < ratio) || (ratio < 0.0 && offset >= 1.0 + ratio)
}

fn count_values(
    input: &[Series],
    grouping: &Grouping,
    label: &str,
    ctx: &Ctx,
) -> Result<Vec<Series>, QueryError> {
    let steps = by_step(input, ctx);
    let mut out = OutBuilder::default();
    for (i, els) in steps.iter().enumerate() {
        let mut counts: Vec<(Labels, f64)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for e in els {
            let value = match e.hist(input) {
                Some(h) => histogram_string(h),
                None => fmt_value(e.v),
            };
            let metric = set(&input[e.series].labels, label, &value);
            let key = grouping.key(&metric);
            match index.get(&key) {
                Some(&g) => counts[g].1 += 1.0,
                None => {
                    index.insert(key, counts.len());
                    counts.push((grouping.labels(&metric), 1.0));
                }
            }
        }
        for (l, c) in counts {
            out.push(&l, false, i, ctx.ts(i), c)?;
        }
    }
    Ok(out.finish())
}

/// Prometheus's FloatHistogram.String(): count, sum and the non-empty buckets with their
/// bounds, e.g. `{count:2, sum:3, [-1,-0.5):1, (0.5,1]:1}`.
fn histogram_string(h: &FloatHistogram) -> String {
    let mut out = format!("{{count:{}, sum:{}", fmt_go(h.count), fmt_go(h.sum));
    for b in h.buckets().iter().filter(|b| b.count != 0.0) {
        out.push_str(&format!(
            ", {}{},{}{}:{}",
            if b.lower_inclusive { '[' } else { '(' },
            fmt_go(b.lower),
            fmt_go(b.upper),
            if b.upper_inclusive { ']' } else { ')' },
            fmt_go(b.count)
        ));
    }
    out.push('}');
    out
}

pub(crate) use gocompat::fmt::{fixed as fmt_value, shortest as fmt_go};

#[cfg(test)]
mod tests {
    use super::{cmp_asc_nan_last, cmp_desc_nan_last, first_k, El};

    /// `first_k` keeps what a stable sort of all and a truncation keep, in the same order:
    /// over vectors full of ties and NaNs, for every k.
    #[test]
    fn first_k_is_the_stable_sort_truncated() {
        let values = [1.0, 2.0, 2.0, f64::NAN, -1.0, 0.0, 2.0, f64::INFINITY];
        let mut seed = 7u64;
        for len in 0..24 {
            for _ in 0..20 {
                let els: Vec<El> = (0..len)
                    .map(|series| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let v = values[(seed >> 33) as usize % values.len()];
                        El { series, v, h: None }
                    })
                    .collect();
                for cmp in [cmp_desc_nan_last as fn(f64, f64) -> _, cmp_asc_nan_last] {
                    let mut sorted = els.clone();
                    sorted.sort_by(|a, b| cmp(a.v, b.v));
                    for k in 0..=len + 1 {
                        let want: Vec<usize> = sorted.iter().take(k).map(|e| e.series).collect();
                        let got: Vec<usize> =
                            first_k(&els, k, cmp).iter().map(|e| e.series).collect();
                        assert_eq!(got, want, "k={k} of {:?}", els);
                    }
                }
            }
        }
    }
}
