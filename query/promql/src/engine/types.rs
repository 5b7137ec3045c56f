//! The engine's intermediate values: every node is evaluated for all steps of its context at
//! once, so a vector is a set of series with one point per step where it has a value.

use std::collections::HashMap;

use storage::{Labels, Sample};

use crate::float_histogram::FloatHistogram;
use crate::value::{HistogramPoint, QueryError};

/// The evaluation steps of one node: `start, start+step, ..., end` (inclusive).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Ctx {
    pub fn steps(&self) -> usize {
        ((self.end - self.start) / self.step) as usize + 1
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    pub fn index_of(&self, t: i64) -> usize {
        ((t - self.start) / self.step) as usize
    }
}

/// A series with points. For instant vectors the point timestamps are step timestamps; for
/// range vectors (matrix results) they are the raw sample timestamps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series {
    pub labels: Labels,
    /// Prometheus 3's delayed name removal: `__name__` stays until the end of the query (or
    /// until an operation needs it) and is removed then if this is set.
    pub drop_name: bool,
    pub points: Vec<Sample>,
    /// Native histogram points; a timestamp has a float or a histogram, never both.
    pub hpoints: Vec<HistogramPoint>,
}

impl Series {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.hpoints.is_empty()
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Series>),
    Matrix(Vec<Series>),
}

/// One element of the vector at a step: which input series and its value (a float, or the
/// index of a histogram point of that series).
#[derive(Clone, Copy, Debug)]
pub(crate) struct El {
    pub series: usize,
    pub v: f64,
    pub h: Option<usize>,
}

impl El {
    pub fn hist<'s>(&self, series: &'s [Series]) -> Option<&'s FloatHistogram> {
        self.h.map(|i| &series[self.series].hpoints[i].h)
    }
}

/// Regroups an instant vector by step: `result[i]` holds the elements present at step `i`,
/// in series order.
pub(crate) fn by_step(series: &[Series], ctx: &Ctx) -> Vec<Vec<El>> {
    // Sized up front: growing thousands of step vectors one push at a time costs more in
    // reallocation and page faults than the regrouping itself.
    let mut sizes = vec![0usize; ctx.steps()];
    for s in series {
        for t in s
            .points
            .iter()
            .map(|p| p.t)
            .chain(s.hpoints.iter().map(|p| p.t))
        {
            sizes[ctx.index_of(t)] += 1;
        }
    }
    let mut out: Vec<Vec<El>> = sizes.into_iter().map(Vec::with_capacity).collect();
    for (si, s) in series.iter().enumerate() {
        for p in &s.points {
            out[ctx.index_of(p.t)].push(El {
                series: si,
                v: p.v,
                h: None,
            });
        }
        for (hi, p) in s.hpoints.iter().enumerate() {
            out[ctx.index_of(p.t)].push(El {
                series: si,
                v: 0.0,
                h: Some(hi),
            });
        }
    }
    out
}

/// Collects per-step outputs into series, keyed by label set. A label set produced twice at
/// the same step is Prometheus's "vector cannot contain metrics with the same labelset".
#[derive(Default)]
pub(crate) struct OutBuilder {
    index: HashMap<Labels, usize>,
    series: Vec<Series>,
    last_step: Vec<usize>,
    /// Slot of each caller key seen by [`OutBuilder::slot_keyed`]; `usize::MAX` for none yet.
    keyed: Vec<usize>,
}

pub(crate) const DUPLICATE_LABELSET: &str = "vector cannot contain metrics with the same labelset";

impl OutBuilder {
    pub fn push(
        &mut self,
        labels: &Labels,
        drop_name: bool,
        step: usize,
        t: i64,
        v: f64,
    ) -> Result<(), QueryError> {
        self.push_value(labels, drop_name, step, t, v, None)
    }

    /// Pushes a histogram when `h` is given (`v` is then ignored), else the float `v`.
    pub fn push_value(
        &mut self,
        labels: &Labels,
        drop_name: bool,
        step: usize,
        t: i64,
        v: f64,
        h: Option<FloatHistogram>,
    ) -> Result<(), QueryError> {
        let i = self.slot(labels, drop_name, step)?;
        self.push_at(i, t, v, h);
        Ok(())
    }

    /// The slot for `labels` at `step`, for a caller that numbers its label sets (a group,
    /// an input series): `key` always stands for the same `labels`, so they are hashed once
    /// per key rather than once per step, which dominates when every step adds a point per
    /// key. Then [`OutBuilder::push_at`] the point.
    pub fn slot_keyed(
        &mut self,
        key: usize,
        labels: &Labels,
        drop_name: bool,
        step: usize,
    ) -> Result<usize, QueryError> {
        if let Some(&i) = self.keyed.get(key).filter(|&&i| i != usize::MAX) {
            self.next_step(i, step)?;
            return Ok(i);
        }
        let i = self.slot(labels, drop_name, step)?;
        if self.keyed.len() <= key {
            self.keyed.resize(key + 1, usize::MAX);
        }
        self.keyed[key] = i;
        Ok(i)
    }

    /// Appends a point to the output series in slot `i`: a histogram when `h` is given, else
    /// the float `v`.
    pub fn push_at(&mut self, i: usize, t: i64, v: f64, h: Option<FloatHistogram>) {
        let series = &mut self.series[i];
        match h {
            Some(h) => series.hpoints.push(HistogramPoint { t, h }),
            None => series.points.push(Sample { t, v }),
        }
    }

    /// Notes that series `i` gets a point at `step`: a second one there is a duplicate.
    fn next_step(&mut self, i: usize, step: usize) -> Result<(), QueryError> {
        if self.last_step[i] == step {
            return Err(QueryError::Execution(DUPLICATE_LABELSET.into()));
        }
        self.last_step[i] = step;
        Ok(())
    }

    fn slot(&mut self, labels: &Labels, drop_name: bool, step: usize) -> Result<usize, QueryError> {
        match self.index.get(labels) {
            Some(&i) => {
                self.next_step(i, step)?;
                Ok(i)
            }
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.last_step.push(step);
                self.series.push(Series {
                    labels: labels.clone(),
                    drop_name,
                    ..Series::default()
                });
                Ok(self.series.len() - 1)
            }
        }
    }

    pub fn finish(self) -> Vec<Series> {
        self.series
    }
}

/// Merges series that ended up with the same label set (after a name was dropped or a label
/// rewritten). They may coexist only at different timestamps; a shared timestamp is
/// Prometheus's "vector cannot contain metrics with the same labelset".
pub(crate) fn merge_same_labels(series: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(series.len());
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    let mut merged = false;
    for s in series {
        match index.get(&s.labels) {
            Some(&i) => {
                out[i].points.extend(s.points);
                out[i].hpoints.extend(s.hpoints);
                merged = true;
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    if merged {
        for s in &mut out {
            s.points.sort_by_key(|p| p.t);
            s.hpoints.sort_by_key(|p| p.t);
            let mut ts: Vec<i64> = s
                .points
                .iter()
                .map(|p| p.t)
                .chain(s.hpoints.iter().map(|p| p.t))
                .collect();
            ts.sort_unstable();
            if ts.windows(2).any(|w| w[0] == w[1]) {
                return Err(QueryError::Execution(DUPLICATE_LABELSET.into()));
            }
        }
    }
    Ok(out)
}

/// Prometheus's float comparison order for sorting values: NaN sorts before everything.
pub(crate) fn cmp_nan_first(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Go's math.Max: NaN wins (unlike f64::max).
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's math.Min: NaN wins (unlike f64::min).
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Neumaier-compensated summation step, as Prometheus's kahanSumInc.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus's quantile over a set of values (linear interpolation between closest ranks).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| cmp_nan_first(*a, *b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}
