//! Prometheus's native histogram value as PromQL sees it (float counts, absolute buckets):
//! layout (exponential schemas -4..8 and the custom-bucket schema -53), arithmetic with
//! Prometheus's reconciliation rules (schema reduction, zero-bucket widening, custom-bound
//! intersection), compaction, counter-reset detection and bucket iteration. Pure value logic:
//! knows nothing of series, storage or the engine.

use std::collections::BTreeMap;

use gocompat::fmt::shortest as go_g;

mod trim;
pub(crate) use trim::TrimSide;

/// The schema of native histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// A run of consecutive buckets; `offset` is the gap (in bucket indices) before it, relative to
/// the end of the previous span (or absolute, for the first span).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CounterResetHint {
    #[default]
    Unknown,
    CounterReset,
    NotCounterReset,
    Gauge,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatHistogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<Span>,
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (schema -53), without the implicit +Inf.
    pub custom_values: Vec<f64>,
}

/// One bucket with its bounds, as iterated for quantiles and the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
    pub count: f64,
}

/// Why two histograms cannot be combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    #[error("cannot apply this operation on histograms with a mix of exponential and custom bucket schemas")]
    IncompatibleSchema,
}

/// Side information of an addition or subtraction that callers turn into annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// One operand said "counter reset", the other "not a counter reset".
    pub counter_reset_collision: bool,
    /// Custom bounds differed and both operands were mapped onto their intersection.
    pub nhcb_reconciled: bool,
}

/// Expanded buckets: (index, count) sorted by index.
type Expanded = Vec<(i32, f64)>;

fn expand(spans: &[Span], buckets: &[f64]) -> Expanded {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx = 0i32;
    let mut b = 0usize;
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            if let Some(&c) = buckets.get(b) {
                out.push((idx, c));
            }
            b += 1;
            idx += 1;
        }
    }
    out
}

/// Builds spans from sorted indices; consecutive indices share a span.
fn collapse(exp: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut buckets = Vec::with_capacity(exp.len());
    let mut next = 0i32;
    for (i, &(idx, c)) in exp.iter().enumerate() {
        if i > 0 && idx == next {
            if let Some(last) = spans.last_mut() {
                last.length += 1;
            }
        } else {
            let offset = if i == 0 { idx } else { idx - next };
            spans.push(Span { offset, length: 1 });
        }
        buckets.push(c);
        next = idx + 1;
    }
    (spans, buckets)
}

/// The bucket index at a lower resolution that contains bucket `idx` of `from`.
fn reduce_index(idx: i32, from: i32, to: i32) -> i32 {
    ((idx - 1) >> (from - to)) + 1
}

fn reduce(exp: &[(i32, f64)], from: i32, to: i32) -> Expanded {
    if from <= to {
        return exp.to_vec();
    }
    let mut out: Expanded = Vec::with_capacity(exp.len());
    for &(idx, c) in exp {
        let t = reduce_index(idx, from, to);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

/// Upper bound of exponential bucket `idx` (absolute value for negative buckets).
pub(crate) fn exponential_bound(idx: i32, schema: i32) -> f64 {
    if schema <= 0 {
        let exp = (idx as i64) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return pow2(exp);
    }
    let per = 1i64 << schema;
    let frac_idx = (idx as i64).rem_euclid(per);
    let whole = (idx as i64).div_euclid(per);
    if frac_idx == 0 && whole == 1024 {
        return f64::MAX;
    }
    pow2(whole) * 2f64.powf(frac_idx as f64 / per as f64)
}

fn pow2(e: i64) -> f64 {
    if e > 1100 {
        f64::INFINITY
    } else if e < -1100 {
        0.0
    } else {
        2f64.powi(e as i32)
    }
}

fn merge(a: &[(i32, f64)], b: &[(i32, f64)], sign: f64) -> Expanded {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i].0 < b[j].0) {
            out.push(a[i]);
            i += 1;
        } else if i >= a.len() || b[j].0 < a[i].0 {
            out.push((b[j].0, sign * b[j].1));
            j += 1;
        } else {
            out.push((a[i].0, a[i].1 + sign * b[j].1));
            i += 1;
            j += 1;
        }
    }
    out
}

impl FloatHistogram {
    /// Some count or the sum is infinite.
    fn overflowed(&self) -> bool {
        [self.count, self.sum, self.zero_count]
            .iter()
            .chain(&self.positive_buckets)
            .chain(&self.negative_buckets)
            .any(|v| v.is_infinite())
    }

    /// No observations, same layout parameters (schema, zero threshold, bounds).
    fn empty_like(&self) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            custom_values: self.custom_values.clone(),
            ..FloatHistogram::default()
        }
    }

    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// The histogram in the test notation, as Prometheus's `TestExpression` prints it (what
    /// promtool compares and shows): fields that are not zero, then each side's buckets as one
    /// span from its first to its last non-empty bucket.
    pub fn test_expression(&self) -> String {
        let mut out = Vec::new();
        if self.schema != 0 {
            out.push(format!("schema:{}", self.schema));
        }
        for (name, v) in [
            ("count", self.count),
            ("sum", self.sum),
            ("z_bucket", self.zero_count),
            ("z_bucket_w", self.zero_threshold),
        ] {
            if v != 0.0 {
                out.push(format!("{name}:{}", go_g(v)));
            }
        }
        if self.uses_custom_buckets() {
            out.push(format!(
                "custom_values:[{}]",
                go_g_list(&self.custom_values)
            ));
        }
        match self.counter_reset_hint {
            CounterResetHint::Unknown => {}
            CounterResetHint::CounterReset => out.push("counter_reset_hint:reset".into()),
            CounterResetHint::NotCounterReset => out.push("counter_reset_hint:not_reset".into()),
            CounterResetHint::Gauge => out.push("counter_reset_hint:gauge".into()),
        }
        for (side, prefix) in [(self.positive(), ""), (self.negative(), "n_")] {
            let Some(first) = side.iter().position(|b| b.1 != 0.0) else {
                continue;
            };
            let last = side.iter().rposition(|b| b.1 != 0.0).unwrap_or(first);
            let (lo, hi) = (side[first].0, side[last].0);
            let mut counts = vec![0.0; (hi - lo) as usize + 1];
            for &(i, c) in &side[first..=last] {
                counts[(i - lo) as usize] = c;
            }
            if lo != 0 {
                out.push(format!("{prefix}offset:{lo}"));
            }
            out.push(format!("{prefix}buckets:[{}]", go_g_list(&counts)));
        }
        format!("{{{{{}}}}}", out.join(" "))
    }

    fn positive(&self) -> Expanded {
        expand(&self.positive_spans, &self.positive_buckets)
    }

    fn negative(&self) -> Expanded {
        expand(&self.negative_spans, &self.negative_buckets)
    }

    fn set_positive(&mut self, exp: &[(i32, f64)]) {
        (self.positive_spans, self.positive_buckets) = collapse(exp);
    }

    fn set_negative(&mut self, exp: &[(i32, f64)]) {
        (self.negative_spans, self.negative_buckets) = collapse(exp);
    }

    /// Upper bound of positive bucket `idx`.
    fn upper(&self, idx: i32) -> f64 {
        if self.uses_custom_buckets() {
            match usize::try_from(idx) {
                Ok(i) if i < self.custom_values.len() => self.custom_values[i],
                Ok(_) => f64::INFINITY,
                Err(_) => f64::NEG_INFINITY,
            }
        } else {
            exponential_bound(idx, self.schema)
        }
    }

    pub fn mul(&mut self, f: f64) {
        self.zero_count *= f;
        self.count *= f;
        self.sum *= f;
        self.positive_buckets.iter_mut().for_each(|b| *b *= f);
        self.negative_buckets.iter_mut().for_each(|b| *b *= f);
        if f < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    pub fn div(&mut self, f: f64) {
        self.zero_count /= f;
        self.count /= f;
        self.sum /= f;
        if f == 0.0 {
            self.positive_spans.clear();
            self.positive_buckets.clear();
            self.negative_spans.clear();
            self.negative_buckets.clear();
            return;
        }
        self.positive_buckets.iter_mut().for_each(|b| *b /= f);
        self.negative_buckets.iter_mut().for_each(|b| *b /= f);
        if f < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    fn adjust_counter_reset(&mut self, other: &FloatHistogram) -> bool {
        use CounterResetHint::*;
        let (a, b) = (self.counter_reset_hint, other.counter_reset_hint);
        if a == b || a == Gauge || a == Unknown {
            return false;
        }
        if b == Gauge || b == Unknown {
            self.counter_reset_hint = b;
            return false;
        }
        self.counter_reset_hint = Unknown;
        true
    }

    pub fn add(&mut self, other: &FloatHistogram) -> Result<AddOutcome, HistogramError> {
        self.combine(other, 1.0)
    }

    pub fn sub(&mut self, other: &FloatHistogram) -> Result<AddOutcome, HistogramError> {
        self.combine(other, -1.0)
    }

    fn combine(&mut self, other: &FloatHistogram, sign: f64) -> Result<AddOutcome, HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        let mut outcome = AddOutcome {
            counter_reset_collision: self.adjust_counter_reset(other),
            nhcb_reconciled: false,
        };
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() {
            if self.custom_values == other.custom_values {
                let merged = merge(&self.positive(), &other.positive(), sign);
                self.set_positive(&merged);
            } else {
                outcome.nhcb_reconciled = true;
                let bounds = intersect_bounds(&self.custom_values, &other.custom_values);
                let mut target = vec![0.0; bounds.len() + 1];
                map_custom(
                    &self.positive(),
                    &self.custom_values,
                    &bounds,
                    1.0,
                    &mut target,
                );
                map_custom(
                    &other.positive(),
                    &other.custom_values,
                    &bounds,
                    sign,
                    &mut target,
                );
                let exp: Expanded = target
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c != 0.0)
                    .map(|(i, c)| (i as i32, *c))
                    .collect();
                self.set_positive(&exp);
                self.custom_values = bounds;
            }
            return Ok(outcome);
        }
        let other_zero = self.reconcile_zero_buckets(other);
        self.zero_count += sign * other_zero;
        let schema = self.schema.min(other.schema);
        let threshold = self.zero_threshold;
        let skip_low = |exp: Expanded| -> Expanded {
            exp.into_iter()
                .skip_while(|(idx, _)| exponential_bound(*idx, schema) <= threshold)
                .collect()
        };
        let (mut hp, mut hn) = (self.positive(), self.negative());
        if schema < self.schema {
            hp = reduce(&hp, self.schema, schema);
            hn = reduce(&hn, self.schema, schema);
        }
        let op = skip_low(reduce(&other.positive(), other.schema, schema));
        let on = skip_low(reduce(&other.negative(), other.schema, schema));
        self.schema = schema;
        self.set_positive(&merge(&hp, &op, sign));
        self.set_negative(&merge(&hn, &on, sign));
        Ok(outcome)
    }

    /// Widens the zero buckets of `self` and (virtually) `other` to a common threshold;
    /// returns the zero count `other` has at that threshold.
    fn reconcile_zero_buckets(&mut self, other: &FloatHistogram) -> f64 {
        let mut other_zero = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        let mut guard = 0;
        while other_threshold != self.zero_threshold && guard < 64 {
            guard += 1;
            if self.zero_threshold > other_threshold {
                (other_zero, other_threshold) =
                    other.zero_count_for_larger_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                let (zc, th) = self.zero_count_for_larger_threshold(other_threshold);
                self.zero_count = zc;
                self.zero_threshold = th;
                self.trim_buckets_in_zero_bucket();
            }
        }
        other_zero
    }

    fn zero_count_for_larger_threshold(&self, larger: f64) -> (f64, f64) {
        let mut larger = larger;
        if larger == self.zero_threshold {
            return (self.zero_count, larger);
        }
        let pos = self.positive();
        let neg = self.negative();
        'outer: loop {
            let mut count = self.zero_count;
            for &(idx, c) in &pos {
                let upper = self.upper(idx);
                let lower = self.upper(idx - 1);
                if lower >= larger {
                    break;
                }
                count += c;
                if upper > larger {
                    if c != 0.0 {
                        larger = upper;
                    }
                    break;
                }
            }
            for &(idx, c) in &neg {
                let upper = self.upper(idx);
                let lower = self.upper(idx - 1);
                if lower >= larger {
                    break;
                }
                count += c;
                if upper > larger {
                    if c != 0.0 {
                        larger = upper;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (count, larger);
        }
    }

    fn trim_buckets_in_zero_bucket(&mut self) {
        let th = self.zero_threshold;
        let keep = |h: &FloatHistogram, exp: Expanded| -> Expanded {
            exp.into_iter()
                .filter(|(idx, c)| h.upper(idx - 1) >= th && *c != 0.0)
                .collect()
        };
        let p = keep(self, self.positive());
        let n = keep(self, self.negative());
        self.set_positive(&p);
        self.set_negative(&n);
    }

    /// A copy at a lower (or equal) resolution.
    pub fn copy_to_schema(&self, schema: i32) -> FloatHistogram {
        let mut h = self.clone();
        if schema < self.schema && !self.uses_custom_buckets() {
            h.set_positive(&reduce(&self.positive(), self.schema, schema));
            h.set_negative(&reduce(&self.negative(), self.schema, schema));
            h.schema = schema;
        }
        h
    }

    /// Prometheus's Compact(0): drops empty buckets (and the spans that only held them).
    pub fn compact(&mut self) {
        let p: Expanded = self.positive().into_iter().filter(|b| b.1 != 0.0).collect();
        let n: Expanded = self.negative().into_iter().filter(|b| b.1 != 0.0).collect();
        self.set_positive(&p);
        self.set_negative(&n);
    }

    /// Exact equality of the represented histograms (bucket layouts compared after
    /// normalising adjacent and empty spans, as Prometheus's Equals does).
    /// NaN observations land in no bucket but in the count (and make the sum NaN).
    pub fn has_nan_observations(&self) -> bool {
        self.sum.is_nan() && self.nan_observations() > 0.0
    }

    fn nan_observations(&self) -> f64 {
        let in_buckets: f64 = self.zero_count
            + self.positive_buckets.iter().sum::<f64>()
            + self.negative_buckets.iter().sum::<f64>();
        self.count - in_buckets
    }

    pub fn equals(&self, other: &FloatHistogram) -> bool {
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
        self.schema == other.schema
            && same(self.zero_threshold, other.zero_threshold)
            && same(self.zero_count, other.zero_count)
            && same(self.count, other.count)
            && same(self.sum, other.sum)
            && (!self.uses_custom_buckets() || self.custom_values == other.custom_values)
            && self.positive() == other.positive()
            && self.negative() == other.negative()
    }

    /// Whether `self` (the later sample) shows a counter reset compared to `prev`.
    pub fn detect_reset(&self, prev: &FloatHistogram) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < prev.count {
            return true;
        }
        if self.uses_custom_buckets() != prev.uses_custom_buckets() {
            return true;
        }
        if self.uses_custom_buckets() {
            if self.custom_values != prev.custom_values {
                // Differing bounds are compared on their common bounds, as subtraction does.
                let bounds = intersect_bounds(&self.custom_values, &prev.custom_values);
                let (mut cur, mut old) = (vec![0.0; bounds.len() + 1], vec![0.0; bounds.len() + 1]);
                map_custom(
                    &self.positive(),
                    &self.custom_values,
                    &bounds,
                    1.0,
                    &mut cur,
                );
                map_custom(
                    &prev.positive(),
                    &prev.custom_values,
                    &bounds,
                    1.0,
                    &mut old,
                );
                return cur.iter().zip(&old).any(|(c, o)| c < o);
            }
        } else {
            if self.schema > prev.schema || self.zero_threshold < prev.zero_threshold {
                return true;
            }
            let (prev_zero, th) = prev.zero_count_for_larger_threshold(self.zero_threshold);
            if th != self.zero_threshold || self.zero_count < prev_zero {
                return true;
            }
        }
        let threshold = self.zero_threshold;
        let lowered = |h: &FloatHistogram, exp: Expanded| -> Expanded {
            let r = if h.uses_custom_buckets() {
                exp
            } else {
                reduce(&exp, h.schema, self.schema)
            };
            r.into_iter()
                .filter(|(idx, _)| {
                    self.uses_custom_buckets() || exponential_bound(*idx, self.schema) > threshold
                })
                .collect()
        };
        for (cur, old) in [
            (
                lowered(self, self.positive()),
                lowered(prev, prev.positive()),
            ),
            (
                lowered(self, self.negative()),
                lowered(prev, prev.negative()),
            ),
        ] {
            let map: BTreeMap<i32, f64> = cur.into_iter().collect();
            for (idx, c) in old {
                match map.get(&idx) {
                    Some(&now) if now < c => return true,
                    None if c != 0.0 => return true,
                    _ => {}
                }
            }
        }
        false
    }

    /// All buckets from the most negative to the most positive, the zero bucket in between
    /// (when it has a width or a count).
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::new();
        let custom = self.uses_custom_buckets();
        for &(idx, count) in self.negative().iter().rev() {
            out.push(Bucket {
                lower: -self.upper(idx),
                upper: -self.upper(idx - 1),
                lower_inclusive: true,
                upper_inclusive: false,
                count,
            });
        }
        if !custom && (self.zero_threshold != 0.0 || self.zero_count != 0.0) {
            out.push(Bucket {
                lower: -self.zero_threshold,
                upper: self.zero_threshold,
                lower_inclusive: true,
                upper_inclusive: true,
                count: self.zero_count,
            });
        }
        for &(idx, count) in &self.positive() {
            let lower = self.upper(idx - 1);
            out.push(Bucket {
                lower,
                upper: self.upper(idx),
                lower_inclusive: custom && idx == 0,
                upper_inclusive: true,
                count,
            });
        }
        out
    }

    /// Positive buckets only, ascending.
    pub fn positive_bucket_list(&self) -> Vec<Bucket> {
        let custom = self.uses_custom_buckets();
        self.positive()
            .iter()
            .map(|&(idx, count)| Bucket {
                lower: self.upper(idx - 1),
                upper: self.upper(idx),
                lower_inclusive: custom && idx == 0,
                upper_inclusive: true,
                count,
            })
            .collect()
    }

    /// Negative buckets only, from the one nearest zero outwards.
    pub fn negative_bucket_list(&self) -> Vec<Bucket> {
        self.negative()
            .iter()
            .map(|&(idx, count)| Bucket {
                lower: -self.upper(idx),
                upper: -self.upper(idx - 1),
                lower_inclusive: true,
                upper_inclusive: false,
                count,
            })
            .collect()
    }

    /// The histogram with all non-empty buckets in canonical order, for comparisons that
    /// must ignore layout (Prometheus's test harness compares Compact(0) results).
    pub fn canonical_buckets(&self) -> (Expanded, Expanded) {
        let keep = |e: Expanded| -> Expanded { e.into_iter().filter(|b| b.1 != 0.0).collect() };
        (keep(self.positive()), keep(self.negative()))
    }
}

/// A Kahan-compensated running sum of histograms, as Prometheus sums them in `sum`, `avg`,
/// `sum_over_time` and `avg_over_time`: `comp` holds the low-order parts lost to rounding,
/// in the same layout as `sum`, and is added back at the end.
#[derive(Clone, Debug)]
pub(crate) struct KahanSum {
    sum: FloatHistogram,
    comp: FloatHistogram,
}

impl KahanSum {
    pub(crate) fn new(h: &FloatHistogram) -> KahanSum {
        KahanSum {
            sum: h.clone(),
            comp: h.empty_like(),
        }
    }

    pub(crate) fn add(&mut self, other: &FloatHistogram) -> Result<AddOutcome, HistogramError> {
        if self.sum.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        if self.sum.uses_custom_buckets() && self.sum.custom_values != other.custom_values {
            // Reconciling bounds merges buckets: fold the compensation in and sum plainly.
            self.fold();
            let outcome = self.sum.add(other)?;
            self.comp = self.sum.empty_like();
            return Ok(outcome);
        }
        let outcome = AddOutcome {
            counter_reset_collision: self.sum.adjust_counter_reset(other),
            nhcb_reconciled: false,
        };
        let step = |v: &mut f64, c: &mut f64, inc: f64| {
            (*v, *c) = crate::engine::kahan_inc(inc, *v, *c);
        };
        step(&mut self.sum.count, &mut self.comp.count, other.count);
        step(&mut self.sum.sum, &mut self.comp.sum, other.sum);
        if self.sum.uses_custom_buckets() {
            let merged = kahan_merge(
                self.sum.positive(),
                self.comp.positive(),
                &other.positive(),
                step,
            );
            self.sum.set_positive(&merged.0);
            self.comp.set_positive(&merged.1);
            return Ok(outcome);
        }
        let other_zero = self.sum.reconcile_zero_buckets(other);
        self.comp.reconcile_zero_buckets(&self.sum);
        step(
            &mut self.sum.zero_count,
            &mut self.comp.zero_count,
            other_zero,
        );
        let schema = self.sum.schema.min(other.schema);
        let threshold = self.sum.zero_threshold;
        let mine = |h: &FloatHistogram, positive: bool| {
            let exp = if positive { h.positive() } else { h.negative() };
            reduce(&exp, h.schema, schema)
        };
        let theirs = |positive: bool| -> Expanded {
            let exp = if positive {
                other.positive()
            } else {
                other.negative()
            };
            reduce(&exp, other.schema, schema)
                .into_iter()
                .skip_while(|(idx, _)| exponential_bound(*idx, schema) <= threshold)
                .collect()
        };
        let pos = kahan_merge(
            mine(&self.sum, true),
            mine(&self.comp, true),
            &theirs(true),
            step,
        );
        let neg = kahan_merge(
            mine(&self.sum, false),
            mine(&self.comp, false),
            &theirs(false),
            step,
        );
        self.sum.schema = schema;
        self.comp.schema = schema;
        self.sum.set_positive(&pos.0);
        self.comp.set_positive(&pos.1);
        self.sum.set_negative(&neg.0);
        self.comp.set_negative(&neg.1);
        Ok(outcome)
    }

    fn fold(&mut self) {
        self.comp.counter_reset_hint = self.sum.counter_reset_hint;
        // Same layout by construction, so this cannot fail.
        let _ = self.sum.add(&self.comp);
    }

    /// The compensated sum.
    pub(crate) fn finish(mut self) -> FloatHistogram {
        self.fold();
        self.sum
    }
}

/// Turns the (Kahan) sum of `n` histograms into their mean. Dividing the sum once is the
/// precise way; when the sum overflowed, each histogram is divided first instead (Prometheus
/// falls back to an incremental mean then).
pub(crate) fn mean_from_sum<'a>(
    mut sum: FloatHistogram,
    hs: impl Iterator<Item = &'a FloatHistogram>,
    n: f64,
) -> Result<FloatHistogram, HistogramError> {
    if !sum.overflowed() {
        sum.div(n);
        return Ok(sum);
    }
    let mut acc: Option<KahanSum> = None;
    for h in hs {
        let mut h = h.clone();
        h.div(n);
        match &mut acc {
            None => acc = Some(KahanSum::new(&h)),
            Some(a) => {
                a.add(&h)?;
            }
        }
    }
    Ok(acc.map_or(sum, KahanSum::finish))
}

/// Adds `other` into `sum` bucket by bucket with Kahan compensation in `comp`; all three are
/// expanded at the same schema. Returns the new (sum, comp) on the union of indices.
fn kahan_merge(
    sum: Expanded,
    comp: Expanded,
    other: &[(i32, f64)],
    step: impl Fn(&mut f64, &mut f64, f64),
) -> (Expanded, Expanded) {
    let mut acc: BTreeMap<i32, (f64, f64)> = sum.into_iter().map(|(i, v)| (i, (v, 0.0))).collect();
    for (i, c) in comp {
        acc.entry(i).or_insert((0.0, 0.0)).1 += c;
    }
    for &(i, inc) in other {
        let e = acc.entry(i).or_insert((0.0, 0.0));
        step(&mut e.0, &mut e.1, inc);
    }
    acc.into_iter().map(|(i, (v, c))| ((i, v), (i, c))).unzip()
}

/// The counter-reset hints met while summing histograms: a sum over both a `reset` and a
/// `not_reset` histogram is conflicting, whatever gauge or unknown ones came in between.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ResetHints {
    reset: bool,
    not_reset: bool,
}

impl ResetHints {
    pub(crate) fn see(&mut self, h: &FloatHistogram) {
        match h.counter_reset_hint {
            CounterResetHint::CounterReset => self.reset = true,
            CounterResetHint::NotCounterReset => self.not_reset = true,
            _ => {}
        }
    }

    pub(crate) fn conflicting(&self) -> bool {
        self.reset && self.not_reset
    }
}

impl CounterResetHint {
    fn from_wire(v: u8) -> Self {
        match v {
            1 => CounterResetHint::CounterReset,
            2 => CounterResetHint::NotCounterReset,
            3 => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        }
    }

    pub(crate) fn to_wire(self) -> u8 {
        match self {
            CounterResetHint::Unknown => 0,
            CounterResetHint::CounterReset => 1,
            CounterResetHint::NotCounterReset => 2,
            CounterResetHint::Gauge => 3,
        }
    }
}

impl From<storage::Histogram> for FloatHistogram {
    fn from(h: storage::Histogram) -> Self {
        let spans = |v: Vec<storage::HistogramSpan>| {
            v.into_iter()
                .map(|s| Span {
                    offset: s.offset,
                    length: s.length,
                })
                .collect()
        };
        FloatHistogram {
            counter_reset_hint: CounterResetHint::from_wire(h.counter_reset_hint),
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count,
            count: h.count,
            sum: h.sum,
            positive_spans: spans(h.positive_spans),
            positive_buckets: h.positive_buckets,
            negative_spans: spans(h.negative_spans),
            negative_buckets: h.negative_buckets,
            custom_values: h.custom_values,
        }
    }
}

impl From<&FloatHistogram> for storage::Histogram {
    fn from(h: &FloatHistogram) -> Self {
        let spans = |v: &[Span]| {
            v.iter()
                .map(|s| storage::HistogramSpan {
                    offset: s.offset,
                    length: s.length,
                })
                .collect()
        };
        storage::Histogram {
            counter_reset_hint: h.counter_reset_hint.to_wire(),
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count,
            count: h.count,
            sum: h.sum,
            positive_spans: spans(&h.positive_spans),
            positive_buckets: h.positive_buckets.clone(),
            negative_spans: spans(&h.negative_spans),
            negative_buckets: h.negative_buckets.clone(),
            custom_values: h.custom_values.clone(),
        }
    }
}

/// Prometheus's HistogramQuantile for native histograms: exponential interpolation inside
/// exponential buckets, linear in custom buckets and the zero bucket.
pub fn quantile(q: f64, h: &FloatHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    if h.has_nan_observations() && q * h.count > h.count - h.nan_observations() {
        return f64::NAN;
    }
    let forward = h.sum.is_nan() || q < 0.5;
    let mut all = h.buckets();
    if !forward {
        all.reverse();
    }
    let mut rank = if forward {
        q * h.count
    } else {
        (1.0 - q) * h.count
    };
    let mut count = 0.0;
    let mut bucket = Bucket {
        lower: 0.0,
        upper: 0.0,
        lower_inclusive: false,
        upper_inclusive: false,
        count: 0.0,
    };
    for b in all {
        if b.count == 0.0 {
            continue;
        }
        bucket = b;
        count += b.count;
        if count >= rank {
            break;
        }
    }
    let custom = h.uses_custom_buckets();
    if !custom && bucket.lower < 0.0 && bucket.upper > 0.0 {
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            bucket.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            bucket.upper = 0.0;
        }
    } else if custom {
        if bucket.lower == f64::NEG_INFINITY {
            if bucket.upper <= 0.0 {
                return bucket.upper;
            }
            bucket.lower = 0.0;
        } else if bucket.upper == f64::INFINITY {
            return bucket.lower;
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        return bucket.upper;
    }
    if forward {
        rank -= count - bucket.count;
    } else {
        rank = count - rank;
    }
    let fraction = rank / bucket.count;
    if custom || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
        return bucket.lower + (bucket.upper - bucket.lower) * fraction;
    }
    let log_lower = bucket.lower.abs().log2();
    let log_upper = bucket.upper.abs().log2();
    if bucket.lower > 0.0 {
        return (log_lower + (log_upper - log_lower) * fraction).exp2();
    }
    -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
}

/// Prometheus's HistogramFraction: the share of observations between `lower` and `upper`.
pub fn fraction(lower: f64, upper: f64, h: &FloatHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let custom = h.uses_custom_buckets();
    for mut b in h.buckets() {
        let mut zero_bucket = false;
        if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        // An infinite custom bound puts the whole bucket on its finite side.
        let linear = |v: f64| {
            if b.lower == f64::NEG_INFINITY {
                rank + b.count
            } else if b.upper == f64::INFINITY {
                rank
            } else {
                rank + b.count * (v - b.lower) / (b.upper - b.lower)
            }
        };
        let exponential = |v: f64| {
            let (ll, lu, lv) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
            let f = if v > 0.0 {
                (lv - ll) / (lu - ll)
            } else {
                1.0 - ((lv - lu) / (ll - lu))
            };
            rank + b.count * f
        };
        let interp = |v: f64| {
            if custom || zero_bucket {
                linear(v)
            } else {
                exponential(v)
            }
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interp(lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interp(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    // NaN observations are in no bucket: they count in the total, never in a fraction.
    let in_buckets = if h.has_nan_observations() {
        h.count - h.nan_observations()
    } else {
        h.count
    };
    if !lower_set || lower_rank > in_buckets {
        lower_rank = in_buckets;
    }
    if !upper_set || upper_rank > in_buckets {
        upper_rank = in_buckets;
    }
    (upper_rank - lower_rank) / h.count
}

/// The estimated variance of the observations (bucket midpoints: arithmetic for custom
/// buckets and the zero bucket, geometric for exponential buckets).
pub fn variance(h: &FloatHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut var, mut c) = (0.0, 0.0);
    for b in h.buckets() {
        if b.count == 0.0 {
            continue;
        }
        let val = if h.uses_custom_buckets() {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let v = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 {
                -v
            } else {
                v
            }
        };
        let delta = val - mean;
        (var, c) = crate::engine::kahan_sum_inc(b.count * delta * delta, var, c);
    }
    (var + c) / h.count
}

fn intersect_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Adds `sign * count` of each custom bucket into the bucket of `target` (laid out by
/// `bounds` plus +Inf) whose upper bound is the first at or above the source bucket's.
fn map_custom(exp: &[(i32, f64)], src: &[f64], bounds: &[f64], sign: f64, target: &mut [f64]) {
    for &(idx, c) in exp {
        let t = match usize::try_from(idx).ok().and_then(|i| src.get(i)) {
            Some(&upper) => bounds
                .iter()
                .position(|&b| b >= upper)
                .unwrap_or(bounds.len()),
            None => bounds.len(),
        };
        target[t] += sign * c;
    }
}

/// Go's `%g` of each value, space-separated as Go prints a slice.
fn go_g_list(v: &[f64]) -> String {
    v.iter().map(|&x| go_g(x)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(schema: i32, buckets: &[f64]) -> FloatHistogram {
        FloatHistogram {
            schema,
            count: buckets.iter().sum(),
            positive_spans: vec![Span {
                offset: 0,
                length: buckets.len() as u32,
            }],
            positive_buckets: buckets.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn bounds() {
        assert_eq!(exponential_bound(0, 0), 1.0);
        assert_eq!(exponential_bound(1, 0), 2.0);
        assert_eq!(exponential_bound(-1, 0), 0.5);
        assert!((exponential_bound(1, 1) - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(exponential_bound(1, -1), 4.0);
    }

    #[test]
    fn add_reduces_schema() {
        let mut a = h(0, &[1.0, 2.0]);
        let b = h(1, &[1.0, 1.0, 1.0, 1.0]);
        a.add(&b).expect("compatible");
        assert_eq!(a.schema, 0);
        // schema 1 buckets 0..3 map to schema 0 buckets 0, 1, 1, 2.
        assert_eq!(a.positive(), vec![(0, 2.0), (1, 4.0), (2, 1.0)]);
        assert_eq!(a.count, 7.0);
    }

    #[test]
    fn sub_and_compact() {
        let mut a = h(0, &[1.0, 2.0, 3.0]);
        a.sub(&h(0, &[1.0, 0.0, 3.0])).expect("compatible");
        a.compact();
        assert_eq!(
            a.positive_spans,
            vec![Span {
                offset: 1,
                length: 1
            }]
        );
        assert_eq!(a.positive_buckets, vec![2.0]);
    }

    #[test]
    fn custom_bounds_are_intersected() {
        let mut a = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![5.0, 10.0],
            ..h(CUSTOM_BUCKETS_SCHEMA, &[1.0, 1.0, 1.0])
        };
        let b = FloatHistogram {
            custom_values: vec![10.0],
            ..h(CUSTOM_BUCKETS_SCHEMA, &[1.0, 1.0])
        };
        let out = a.add(&b).expect("compatible");
        assert!(out.nhcb_reconciled);
        assert_eq!(a.custom_values, vec![10.0]);
        assert_eq!(a.positive(), vec![(0, 3.0), (1, 2.0)]);
        let exp = FloatHistogram {
            schema: 0,
            ..Default::default()
        };
        assert_eq!(a.add(&exp), Err(HistogramError::IncompatibleSchema));
    }

    #[test]
    fn detects_resets() {
        let a = h(0, &[1.0, 2.0]);
        let b = h(0, &[1.0, 1.0, 5.0]);
        assert!(b.detect_reset(&a));
        assert!(!h(0, &[1.0, 2.0, 5.0]).detect_reset(&a));
    }

    #[test]
    fn kahan_sum_keeps_what_plain_addition_loses() {
        let parts = [h(0, &[1e100, 1.0]), h(0, &[1.0, 1.0]), h(0, &[-1e100, 1.0])];
        let mut plain = parts[0].clone();
        let mut kahan = KahanSum::new(&parts[0]);
        for p in &parts[1..] {
            plain.add(p).expect("compatible");
            kahan.add(p).expect("compatible");
        }
        assert_eq!(plain.positive_buckets, vec![0.0, 3.0]);
        let sum = kahan.finish();
        assert_eq!(sum.positive_buckets, vec![1.0, 3.0]);
        // The counts were 1e100, 2 and -1e100 (the 1s were absorbed already): plain gives 0.
        assert_eq!(plain.count, 0.0);
        assert_eq!(sum.count, 2.0);
        // A lower schema in a later operand still lines the compensation up.
        let mut k = KahanSum::new(&h(1, &[1.0, 1.0]));
        k.add(&h(0, &[2.0])).expect("compatible");
        let sum = k.finish();
        assert_eq!((sum.schema, sum.positive_buckets), (0, vec![3.0, 1.0]));
    }

    #[test]
    fn nan_observations_count_but_fall_in_no_bucket() {
        // 15 observations, 3 of them NaN: one bucket (0.5, 1] holds the other 12.
        let mut x = h(0, &[12.0]);
        x.count = 15.0;
        x.sum = f64::NAN;
        assert!(x.has_nan_observations());
        assert_eq!(quantile(0.8, &x), 1.0);
        assert!(quantile(0.81, &x).is_nan());
        assert_eq!(fraction(f64::NEG_INFINITY, f64::INFINITY, &x), 0.8);
        assert!((fraction(f64::NEG_INFINITY, 0.5f64.sqrt(), &x) - 0.4).abs() < 1e-12);
        assert!(!h(0, &[12.0]).has_nan_observations());
    }

    #[test]
    fn reset_across_custom_bounds_is_judged_on_common_bounds() {
        let custom = |bounds: &[f64], buckets: &[f64]| FloatHistogram {
            custom_values: bounds.to_vec(),
            ..h(CUSTOM_BUCKETS_SCHEMA, buckets)
        };
        let prev = custom(&[2.0, 4.0], &[1.0, 2.0, 3.0]);
        // Finer bounds, every common-bound bucket grew: no reset.
        assert!(!custom(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 1.0, 3.0]).detect_reset(&prev));
        // The bucket up to 4 shrank from 2 to 1.
        assert!(custom(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 0.0, 1.0, 5.0]).detect_reset(&prev));
    }

    #[test]
    fn mean_survives_an_overflowing_sum() {
        let parts = [h(0, &[1.5e308]), h(0, &[1.5e308]), h(0, &[3.0])];
        let mut acc = KahanSum::new(&parts[0]);
        for p in &parts[1..] {
            acc.add(p).expect("compatible");
        }
        let sum = acc.finish();
        assert!(sum.count.is_infinite());
        let m = mean_from_sum(sum, parts.iter(), 3.0).expect("compatible");
        assert_eq!(m.count, 1e308 + 1.0);
        assert_eq!(m.positive_buckets, vec![1e308 + 1.0]);
        // Without overflow it is the plain quotient.
        let m = mean_from_sum(h(0, &[6.0]), [h(0, &[2.0])].iter(), 3.0).expect("compatible");
        assert_eq!(m.positive_buckets, vec![2.0]);
    }

    #[test]
    fn test_expression_prints_as_prometheus() {
        let h = crate::promqltest::parse_series([
            "{} {{schema:1 sum:-0.3 count:32.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5}}",
        ])
        .unwrap();
        let crate::promqltest::SeqValue::Histogram(h) = &h[0].values[0] else {
            panic!("not a histogram");
        };
        assert_eq!(
            h.test_expression(),
            "{{schema:1 count:32.1 sum:-0.3 z_bucket:7.1 z_bucket_w:0.05 offset:-3 buckets:[5.1 10 7] n_offset:-5 n_buckets:[4.1 5]}}"
        );
        let h = FloatHistogram {
            count: 1234567.0,
            sum: 0.00001,
            positive_spans: vec![
                Span {
                    offset: 1,
                    length: 2,
                },
                Span {
                    offset: 2,
                    length: 1,
                },
            ],
            positive_buckets: vec![0.0, 1e6, 3.0],
            counter_reset_hint: CounterResetHint::NotCounterReset,
            ..FloatHistogram::default()
        };
        assert_eq!(
            h.test_expression(),
            "{{count:1.234567e+06 sum:1e-05 counter_reset_hint:not_reset offset:2 buckets:[1e+06 0 0 3]}}"
        );
    }
}
