//! The evaluator: walks the AST, loads selector data (once per selector and context) and
//! dispatches to the operator and function modules. Owns selector semantics (lookback,
//! staleness, offset, @, subquery step alignment) and the query-wide limits.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AtModifier, Expr, LabelModifier, Offset, SubqueryExpr, VectorSelector,
};
use storage::{
    is_stale_nan, Labels, MatchOp, Matcher, Querier, Sample, SelectHints, SeriesSamples, SeriesSet,
    StorageError, METRIC_NAME,
};

use super::labels::drop_name;
use super::types::{merge_same_labels, Ctx, Series, Val};
use super::{
    aggregate, binary, functions, range_functions, EngineOptions, DEFAULT_SUBQUERY_STEP_MS,
};
use crate::float_histogram::{CounterResetHint, FloatHistogram};
use crate::value::{HistogramPoint, QueryError, QueryResult, Value};

pub(crate) struct Evaluator<'a> {
    storage: &'a dyn Querier,
    opts: &'a EngineOptions,
    deadline: Instant,
    query: &'a str,
    query_start: i64,
    query_end: i64,
    /// 0 for instant queries, as Prometheus's `step()` reports.
    query_step: i64,
    /// Samples read from the store so far (shared with the selectors' streams).
    loaded: Rc<Cell<usize>>,
    /// Inside histogram_count/sum/avg: selectors hint counter resets as Prometheus's
    /// HistogramStatsIterator does (unless `stats_blocked`).
    stats_wanted: bool,
    /// Inside a subquery or a function needing whole buckets, which turn that off.
    stats_blocked: bool,
    /// Where the selector being evaluated sits, for the store's select hints.
    path: PathHints,
    warnings: Vec<String>,
    infos: Vec<String>,
}

/// What the expressions enclosing a selector tell the store, as Prometheus's engine derives
/// them from the path to the selector: the nearest function or aggregation (none across a
/// binary operator) and the nearest aggregation's grouping.
#[derive(Clone, Default)]
struct PathHints {
    func: Option<String>,
    grouping: Vec<String>,
    by: bool,
}

/// A selector's series, decoded, as they are read from the store.
type Selected = Box<dyn Iterator<Item = Result<SeriesSamples, QueryError>>>;

/// Series as an operator consumes them, one at a time: a selector's are read from the store
/// as they are pulled, so an operator that handles one series at a time never holds all of
/// them decoded.
pub(crate) type SeriesStream = Box<dyn Iterator<Item = Result<Series, QueryError>>>;

/// A range-vector argument: raw points per series plus how each step's window is placed.
pub(crate) struct RangeInput {
    pub series: SeriesStream,
    pub place: Placement,
}

/// Where the window of each evaluation time lies.
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    pub range: i64,
    offset: i64,
    at: Option<i64>,
}

impl Placement {
    /// The right edge of the window for evaluation time `ts`; the window is `(end - range, end]`.
    pub fn window_end(&self, ts: i64) -> i64 {
        self.at.unwrap_or(ts) - self.offset
    }

    /// The windows of one series for successive evaluation times (see [`Windows`]).
    pub fn windows<'p>(&self, s: &'p Series) -> Windows<'p> {
        Windows {
            place: *self,
            points: &s.points,
            hpoints: &s.hpoints,
            floats: Cursor::default(),
            hists: Cursor::default(),
        }
    }
}

/// The windows of one series for evaluation times given in ascending order. A window's end
/// never moves back as the time advances (offset and `@` are fixed per selector), so both
/// edges only move forward: all steps together scan the series once instead of searching it
/// at every step.
pub(crate) struct Windows<'p> {
    place: Placement,
    points: &'p [Sample],
    hpoints: &'p [HistogramPoint],
    floats: Cursor,
    hists: Cursor,
}

impl<'p> Windows<'p> {
    /// The float and histogram samples in the window for `ts`; `ts` must not be below the
    /// previous call's.
    pub fn at(&mut self, ts: i64) -> (&'p [Sample], &'p [HistogramPoint]) {
        let end = self.place.window_end(ts);
        let start = end - self.place.range;
        let (points, hpoints) = (self.points, self.hpoints);
        let (lo, hi) = self
            .floats
            .advance(start, end, |i| points[i].t, points.len());
        let (hlo, hhi) = self
            .hists
            .advance(start, end, |i| hpoints[i].t, hpoints.len());
        (&points[lo..hi], &hpoints[hlo..hhi])
    }
}

/// The index range `[lo, hi)` of the samples in a left-open window `(start, end]`.
#[derive(Default)]
struct Cursor {
    lo: usize,
    hi: usize,
}

impl Cursor {
    fn advance(
        &mut self,
        start: i64,
        end: i64,
        t_at: impl Fn(usize) -> i64,
        len: usize,
    ) -> (usize, usize) {
        while self.lo < len && t_at(self.lo) <= start {
            self.lo += 1;
        }
        self.hi = self.hi.max(self.lo);
        while self.hi < len && t_at(self.hi) <= end {
            self.hi += 1;
        }
        (self.lo, self.hi)
    }
}

pub(crate) fn value_type(expr: &Expr) -> &'static str {
    match expr.value_type() {
        promql_parser::parser::value::ValueType::Scalar => "scalar",
        promql_parser::parser::value::ValueType::String => "string",
        promql_parser::parser::value::ValueType::Vector => "vector",
        promql_parser::parser::value::ValueType::Matrix => "matrix",
    }
}

pub(crate) fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

impl<'a> Evaluator<'a> {
    pub fn new(
        storage: &'a dyn Querier,
        opts: &'a EngineOptions,
        deadline: Instant,
        query: &'a str,
        (query_start, query_end, query_step): (i64, i64, i64),
    ) -> Self {
        Evaluator {
            storage,
            opts,
            deadline,
            query,
            query_start,
            query_end,
            query_step,
            loaded: Rc::default(),
            stats_wanted: false,
            stats_blocked: false,
            path: PathHints::default(),
            warnings: vec![],
            infos: vec![],
        }
    }

    /// Start, end and step of the whole query (ms), for `start()`, `end()`, `step()`, `range()`.
    pub fn query_bounds(&self) -> (i64, i64, i64) {
        (self.query_start, self.query_end, self.query_step)
    }

    /// Whether a string literal in the query uses `\xNN` with a byte >= 0x80 (see
    /// `functions::valid_label_name`).
    pub fn query_has_raw_byte_escape(&self) -> bool {
        let b = self.query.as_bytes();
        b.windows(4).any(|w| {
            w[0] == b'\\'
                && w[1] == b'x'
                && w[2].is_ascii_hexdigit()
                && w[3].is_ascii_hexdigit()
                && w[2] >= b'8'
        })
    }

    /// Prometheus's ` (line:col)` suffix for an annotation about `func` (or its argument).
    pub fn pos(&self, func: &str, arg: Option<usize>) -> String {
        super::position::suffix(self.query, super::position::locate(self.query, func, arg))
    }

    /// Position suffix of the expression being evaluated at the top of the query; binary
    /// operators report there (promql-parser keeps no node positions).
    pub fn expr_pos(&self) -> String {
        let start = self.query.len() - self.query.trim_start().len();
        super::position::suffix(self.query, Some(start))
    }

    pub fn warn(&mut self, msg: String) {
        self.warnings.push(format!("PromQL warning: {msg}"));
    }

    pub fn info(&mut self, msg: String) {
        self.infos.push(format!("PromQL info: {msg}"));
    }

    pub fn finish(self, value: Value) -> QueryResult {
        QueryResult {
            value,
            warnings: dedup(self.warnings),
            infos: dedup(self.infos),
        }
    }

    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() >= self.deadline {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    /// Counts samples held by an intermediate result against `max_samples`.
    pub fn check_points(&self, n: usize) -> Result<(), QueryError> {
        if self.loaded.get().saturating_add(n) > self.opts.max_samples {
            return Err(QueryError::TooManySamples);
        }
        Ok(())
    }

    /// Counts one sample per step of `ctx` against `max_samples`, before anything is evaluated
    /// over those steps: literals, `vector()`, `time()` and the like hold a value at every
    /// step, and the per-step bookkeeping of every node is sized by the step count. Prometheus
    /// counts the same samples once they are produced; counting them up front refuses a
    /// subquery such as `vector(1)[10y:1s]` before gigabytes are allocated (an inner
    /// expression that would have produced nothing at all is refused too).
    pub fn check_steps(&self, ctx: &Ctx) -> Result<(), QueryError> {
        self.check_points(ctx.steps())
    }

    /// Evaluates the whole query and applies the delayed `__name__` removal.
    pub fn eval_root(&mut self, expr: &Expr, ctx: &Ctx) -> Result<Val, QueryError> {
        self.check_steps(ctx)?;
        let val = self.eval(expr, ctx)?;
        Ok(match val {
            Val::Vector(s) => Val::Vector(cleanup_names(s)?),
            Val::Matrix(s) => Val::Matrix(cleanup_names(s)?),
            other => other,
        })
    }

    pub fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    pub fn eval(&mut self, expr: &Expr, ctx: &Ctx) -> Result<Val, QueryError> {
        self.check_deadline()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; ctx.steps()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ctx),
            Expr::Unary(u) => match self.eval(&u.expr, ctx)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(mut series) => {
                    for s in &mut series {
                        s.drop_name = true;
                        for p in &mut s.points {
                            p.v = -p.v;
                        }
                        for p in &mut s.hpoints {
                            p.h.mul(-1.0);
                        }
                    }
                    Ok(Val::Vector(series))
                }
                _ => Err(QueryError::Execution(
                    "unary expression only allowed on expressions of type scalar or vector".into(),
                )),
            },
            Expr::Binary(b) => {
                let saved = self.path.func.take();
                let r = binary::eval_binary(self, b, ctx);
                self.path.func = saved;
                r
            }
            Expr::Aggregate(a) => {
                let (by, grouping) = match &a.modifier {
                    Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                    Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                    None => (false, Vec::new()),
                };
                let path = PathHints {
                    func: Some(a.op.to_string()),
                    grouping,
                    by,
                };
                let saved = std::mem::replace(&mut self.path, path);
                let r = aggregate::eval_aggregate(self, a, ctx);
                self.path = saved;
                r
            }
            Expr::Call(c) => self.in_call(c.func.name, |ev| functions::eval_call(ev, c, ctx)),
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_vector_selector(vs, ctx, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let ri = self.range_input(expr, ctx)?;
                let ts = ctx.start;
                let mut series = Vec::new();
                for s in ri.series {
                    let s = s?;
                    let (w, hw) = ri.place.windows(&s).at(ts);
                    if !w.is_empty() || !hw.is_empty() {
                        series.push(Series {
                            points: w.to_vec(),
                            hpoints: hw.to_vec(),
                            ..s
                        });
                    }
                }
                Ok(Val::Matrix(series))
            }
            Expr::Extension(_) => Err(QueryError::Execution("unsupported expression".into())),
        }
    }

    /// Evaluates `expr` and requires an instant vector.
    pub fn eval_vector(&mut self, expr: &Expr, ctx: &Ctx) -> Result<Vec<Series>, QueryError> {
        match self.eval(expr, ctx)? {
            Val::Vector(s) => Ok(s),
            _ => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                value_type(expr)
            ))),
        }
    }

    /// Evaluates `expr` and requires a scalar (one value per step).
    pub fn eval_scalar(&mut self, expr: &Expr, ctx: &Ctx) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr, ctx)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                value_type(expr)
            ))),
        }
    }

    /// The series of a selector with samples in [mint, maxt], sorted by labels, for a query
    /// stepping by `step` (the store's hint; 0 for one step) over windows of `range` (0 for an
    /// instant-vector selector). They are read from the store as they are consumed, each
    /// counted against `max_samples` then.
    fn select(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        step: i64,
        range: i64,
    ) -> Result<Selected, QueryError> {
        let mut sets: Vec<Vec<&promql_parser::label::Matcher>> = Vec::new();
        if vs.matchers.or_matchers.is_empty() {
            sets.push(vs.matchers.matchers.iter().collect());
        } else {
            for group in &vs.matchers.or_matchers {
                sets.push(group.iter().chain(vs.matchers.matchers.iter()).collect());
            }
        }
        // Stats decoding needs the sample before the range to hint the first one in it.
        let stats = self.stats_wanted && !self.stats_blocked;
        let accessed_from = mint;
        let mint = if stats {
            mint.saturating_sub(self.opts.lookback_delta.as_millis() as i64)
        } else {
            mint
        };
        let mut selected: Vec<SeriesSet> = Vec::with_capacity(sets.len());
        for set in sets {
            let mut matchers = Vec::with_capacity(set.len() + 1);
            if let Some(name) = &vs.name {
                matchers.push(to_storage_matcher(PMatchOp::Equal, METRIC_NAME, name)?);
            }
            for m in set {
                matchers.push(to_storage_matcher(m.op.clone(), &m.name, &m.value)?);
            }
            let hints = SelectHints {
                step,
                range,
                func: self.path.func.clone(),
                grouping: self.path.grouping.clone(),
                by: self.path.by,
                ..SelectHints::range(
                    mint,
                    maxt,
                    self.opts.max_samples.saturating_sub(self.loaded.get()),
                )
            };
            selected.push(self.storage.select(&matchers, &hints)?);
        }
        let series: Box<dyn Iterator<Item = Result<storage::Series, StorageError>>> =
            if selected.len() == 1 {
                Box::new(selected.pop().into_iter().flatten())
            } else {
                // Several matcher sets (`{a="1" or b="2"}`) may select a series more than
                // once; such selectors are rare and small, so they are merged in memory.
                let mut all = Vec::new();
                for s in selected.into_iter().flatten() {
                    all.push(s?.into_samples()?);
                }
                all.sort_by(|a, b| a.labels.cmp(&b.labels));
                all.dedup_by(|a, b| a.labels == b.labels);
                Box::new(
                    all.into_iter()
                        .map(|s| Ok(storage::Series::from_samples(s))),
                )
            };
        let loaded = self.loaded.clone();
        let max_samples = self.opts.max_samples;
        Ok(Box::new(series.filter_map(move |s| {
            let mut s = match s.and_then(storage::Series::into_samples) {
                Ok(s) => s,
                Err(e) => return Some(Err(e.into())),
            };
            loaded.set(loaded.get() + s.samples.len() + s.histograms.len());
            if loaded.get() > max_samples {
                return Some(Err(QueryError::TooManySamples));
            }
            if stats {
                stats_hints(&mut s, accessed_from);
                if s.samples.is_empty() && s.histograms.is_empty() {
                    return None;
                }
            }
            Some(Ok(s))
        })))
    }

    /// Runs `f` as the body of a call to function `name`: the selectors below it hint the
    /// store with the function, and histogram statistics functions change how they decode.
    fn in_call<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = (self.stats_wanted, self.stats_blocked);
        let saved_func = self.path.func.replace(name.to_string());
        match name {
            "histogram_count" | "histogram_sum" | "histogram_avg" => self.stats_wanted = true,
            "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => {
                self.stats_blocked = true
            }
            _ => {}
        }
        let r = f(self);
        (self.stats_wanted, self.stats_blocked) = saved;
        self.path.func = saved_func;
        r
    }

    /// Evaluates `expr` to an instant vector and hands its series to `sink` one at a time.
    /// A selector, or a range function over one, makes each series from one series read from
    /// the store, so neither all decoded samples nor all results are held at once; any other
    /// expression is evaluated whole first.
    pub fn eval_vector_each(
        &mut self,
        expr: &Expr,
        ctx: &Ctx,
        sink: &mut dyn FnMut(Series) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        match unwrap_parens(expr) {
            Expr::VectorSelector(vs) => {
                self.check_deadline()?;
                self.vector_selector_each(vs, ctx, false, sink)
            }
            Expr::Call(c) if range_functions::streams(c.func.name) => {
                self.check_deadline()?;
                let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
                self.in_call(c.func.name, |ev| {
                    range_functions::each(ev, c.func.name, &args, ctx, sink)
                })
            }
            other => self.eval_vector(other, ctx)?.into_iter().try_for_each(sink),
        }
    }

    /// An instant-vector selector at every step. With `timestamps`, the value of each point is
    /// the timestamp (in seconds) of the sample it came from, for `timestamp()`.
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        ctx: &Ctx,
        timestamps: bool,
    ) -> Result<Vec<Series>, QueryError> {
        let mut out = Vec::new();
        self.vector_selector_each(vs, ctx, timestamps, &mut |s| {
            out.push(s);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Evaluator::eval_vector_selector`], handing each series to `sink` as it is made.
    fn vector_selector_each(
        &mut self,
        vs: &VectorSelector,
        ctx: &Ctx,
        timestamps: bool,
        sink: &mut dyn FnMut(Series) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let offset = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let lookback = self.opts.lookback_delta.as_millis() as i64;
        let refer = |ts: i64| at.unwrap_or(ts) - offset;
        let raw = self.select(
            vs,
            refer(ctx.start) - lookback + 1,
            refer(ctx.end),
            ctx.step,
            0,
        )?;
        for s in raw {
            let s = s?;
            let htimes: Vec<i64> = s.histograms.iter().map(|h| h.t).collect();
            let hists: Vec<FloatHistogram> = s
                .histograms
                .into_iter()
                .map(|h| FloatHistogram::from(h.h))
                .collect();
            let mut points = Vec::new();
            let mut hpoints = Vec::new();
            // The reference time only grows with the step, so the count of samples at or
            // before it is carried from step to step instead of searched afresh.
            let (mut fidx, mut hidx) = (0, 0);
            for i in 0..ctx.steps() {
                let ts = ctx.ts(i);
                let r = refer(ts);
                while fidx < s.samples.len() && s.samples[fidx].t <= r {
                    fidx += 1;
                }
                while hidx < htimes.len() && htimes[hidx] <= r {
                    hidx += 1;
                }
                let ft = (fidx > 0).then(|| s.samples[fidx - 1].t);
                let ht = (hidx > 0).then(|| htimes[hidx - 1]);
                let use_hist = match (ft, ht) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(f), Some(h)) => h > f,
                };
                if use_hist {
                    let (t, h) = (htimes[hidx - 1], &hists[hidx - 1]);
                    if t <= r - lookback || is_stale_nan(h.sum) {
                        continue;
                    }
                    if timestamps {
                        points.push(Sample {
                            t: ts,
                            v: t as f64 / 1000.0,
                        });
                    } else {
                        hpoints.push(HistogramPoint {
                            t: ts,
                            h: h.clone(),
                        });
                    }
                    continue;
                }
                if fidx == 0 {
                    continue;
                }
                let smp = s.samples[fidx - 1];
                if smp.t <= r - lookback || is_stale_nan(smp.v) {
                    continue;
                }
                let v = if timestamps {
                    smp.t as f64 / 1000.0
                } else {
                    smp.v
                };
                points.push(Sample { t: ts, v });
            }
            if !points.is_empty() || !hpoints.is_empty() {
                sink(Series {
                    labels: s.labels,
                    drop_name: false,
                    points,
                    hpoints,
                })?;
            }
        }
        Ok(())
    }

    /// Evaluates a range-vector expression (matrix selector or subquery, possibly in parens)
    /// once for all steps of `ctx`.
    pub fn range_input(&mut self, expr: &Expr, ctx: &Ctx) -> Result<RangeInput, QueryError> {
        match unwrap_parens(expr) {
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let offset = offset_ms(&vs.offset);
                let at = self.at_ms(&vs.at);
                let range = ms.range.as_millis() as i64;
                let first = at.unwrap_or(ctx.start) - offset;
                let last = at.unwrap_or(ctx.end) - offset;
                let raw = self.select(vs, first - range + 1, last, ctx.step, range)?;
                let series = raw.filter_map(|s| {
                    let s = match s {
                        Ok(s) => s,
                        Err(e) => return Some(Err(e)),
                    };
                    let points: Vec<Sample> = s
                        .samples
                        .into_iter()
                        .filter(|x| !is_stale_nan(x.v))
                        .collect();
                    let hpoints: Vec<HistogramPoint> = s
                        .histograms
                        .into_iter()
                        .filter(|x| !x.h.is_stale())
                        .map(|x| HistogramPoint {
                            t: x.t,
                            h: FloatHistogram::from(x.h),
                        })
                        .collect();
                    (!points.is_empty() || !hpoints.is_empty()).then_some(Ok(Series {
                        labels: s.labels,
                        drop_name: false,
                        points,
                        hpoints,
                    }))
                });
                Ok(RangeInput {
                    series: Box::new(series),
                    place: Placement { range, offset, at },
                })
            }
            Expr::Subquery(sq) => self.eval_subquery(sq, ctx),
            other => Err(QueryError::Execution(format!(
                "expected range vector, got {}",
                value_type(other)
            ))),
        }
    }

    fn eval_subquery(&mut self, sq: &SubqueryExpr, ctx: &Ctx) -> Result<RangeInput, QueryError> {
        let offset = offset_ms(&sq.offset);
        let at = self.at_ms(&sq.at);
        let range = sq.range.as_millis() as i64;
        let step = match sq.step {
            Some(d) if !d.is_zero() => d.as_millis() as i64,
            _ => DEFAULT_SUBQUERY_STEP_MS,
        };
        let (outer_start, outer_end) = match at {
            Some(a) => (a, a),
            None => (ctx.start, ctx.end),
        };
        let lower = outer_start - offset - range;
        let mut start = step * (lower / step);
        if start <= lower {
            start += step;
        }
        let end = outer_end - offset;
        let series = if start > end {
            Vec::new()
        } else {
            let inner = Ctx { start, end, step };
            self.check_steps(&inner)?;
            let blocked = std::mem::replace(&mut self.stats_blocked, true);
            let val = self.eval(&sq.expr, &inner);
            self.stats_blocked = blocked;
            match val? {
                Val::Vector(mut s) => {
                    // A subquery may skip the sample carrying a counter reset or repeat it at
                    // several steps, so its hints can't be trusted: rate & co. detect afresh.
                    for p in s.iter_mut().flat_map(|s| s.hpoints.iter_mut()) {
                        if p.h.counter_reset_hint != CounterResetHint::Gauge {
                            p.h.counter_reset_hint = CounterResetHint::Unknown;
                        }
                    }
                    s
                }
                Val::Scalar(v) => vec![Series {
                    labels: Labels::default(),
                    drop_name: false,
                    hpoints: Vec::new(),
                    points: v
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| Sample { t: inner.ts(i), v })
                        .collect(),
                }],
                _ => {
                    return Err(QueryError::Execution(
                        "subquery is only allowed on instant vector".into(),
                    ))
                }
            }
        };
        Ok(RangeInput {
            series: Box::new(series.into_iter().map(Ok)),
            place: Placement { range, offset, at },
        })
    }
}

/// The counter-reset hints Prometheus's HistogramStatsIterator yields over its TSDB, for the
/// samples of `s` from `accessed_from` on (earlier ones are dropped): a sample following its
/// predecessor without a reset is `not_reset` (the TSDB keeps them in one chunk); after a reset
/// it is `reset` when the iterator has seen the predecessor, else unknown.
fn stats_hints(s: &mut SeriesSamples, accessed_from: i64) {
    let mut prev: Option<(i64, FloatHistogram)> = None;
    for x in s.histograms.iter_mut().filter(|x| !x.h.is_stale()) {
        let cur = FloatHistogram::from(x.h.clone());
        if cur.counter_reset_hint == CounterResetHint::Unknown {
            if let Some((prev_t, p)) = &prev {
                let hint = if !cur.detect_reset(p) {
                    CounterResetHint::NotCounterReset
                } else if *prev_t >= accessed_from {
                    CounterResetHint::CounterReset
                } else {
                    CounterResetHint::Unknown
                };
                x.h.counter_reset_hint = hint.to_wire();
            }
        }
        prev = Some((x.t, cur));
    }
    s.histograms.retain(|x| x.t >= accessed_from);
    s.samples.retain(|x| x.t >= accessed_from);
}

fn to_storage_matcher(op: PMatchOp, name: &str, value: &str) -> Result<Matcher, QueryError> {
    let op = match op {
        PMatchOp::Equal => MatchOp::Equal,
        PMatchOp::NotEqual => MatchOp::NotEqual,
        PMatchOp::Re(_) => MatchOp::RegexMatch,
        PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
    };
    Matcher::new(op, name, value)
        .map_err(|e| QueryError::Parse(format!("invalid regular expression {value:?}: {e}")))
}

/// Prometheus's final step with delayed name removal: drop `__name__` where an operation
/// asked for it; series that then share a label set are merged (an overlap is an error).
fn cleanup_names(mut series: Vec<Series>) -> Result<Vec<Series>, QueryError> {
    for s in &mut series {
        if s.drop_name {
            s.labels = drop_name(&s.labels);
            s.drop_name = false;
        }
    }
    merge_same_labels(series)
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}
