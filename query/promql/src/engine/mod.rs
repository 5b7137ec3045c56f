//! The PromQL engine: parses a query, evaluates it over all steps at once (each selector's data
//! is read once for the whole query range, series by series as it is consumed: a selector, a
//! range function over one and an aggregation over either hold one input series at a time,
//! see `Evaluator::eval_vector_each`) and shapes the result. Owns evaluation semantics
//! (Prometheus 3: left-open windows, lookback, staleness, delayed `__name__` removal); reads
//! data only through `storage::Querier` and knows nothing of HTTP.

mod aggregate;
mod binary;
mod duration_expr;
mod eval;
mod functions;
mod hash;
mod histogram;
mod info;
mod labels;
pub(crate) mod parse;
mod position;
mod range_functions;
mod types;

pub use parse::{check_nesting, check_syntax, format_extended};
pub(crate) use types::kahan_inc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use storage::Querier;

use crate::value::{InstantSample, QueryError, QueryResult, RangeSeries, Value};
use eval::Evaluator;
use parse::parse;
pub(crate) use types::kahan_inc as kahan_sum_inc;
use types::{Ctx, Val};

/// Interval of subqueries written without a step (`x[5m:]`): Prometheus's default global
/// evaluation interval, which is what its engine falls back to.
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub lookback_delta: Duration,
    pub max_samples: usize,
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
        }
    }
}

pub struct Engine {
    storage: Arc<dyn Querier>,
    opts: EngineOptions,
}

impl Engine {
    pub fn new(storage: Arc<dyn Querier>, opts: EngineOptions) -> Engine {
        Engine { storage, opts }
    }

    pub fn instant_query(&self, query: &str, t_ms: i64) -> Result<QueryResult, QueryError> {
        self.instant_query_with_timeout(query, t_ms, self.opts.timeout)
    }

    /// An instant query with the caller's timeout (the API's `timeout` parameter); the
    /// engine's own timeout still caps it, as Prometheus's does.
    pub fn instant_query_with_timeout(
        &self,
        query: &str,
        t_ms: i64,
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        let expr = parse(query, 0, 0)?;
        let mut ev = self.evaluator(query, (t_ms, t_ms, 0), timeout);
        let ctx = Ctx {
            start: t_ms,
            end: t_ms,
            step: 1,
        };
        let val = ev.eval_root(&expr, &ctx)?;
        let value = match val {
            Val::Scalar(v) => Value::Scalar {
                t: t_ms,
                v: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::Str(s) => Value::String { t: t_ms, v: s },
            Val::Vector(series) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|mut s| {
                        if let Some(p) = s.points.first() {
                            return Some(InstantSample {
                                labels: s.labels,
                                t: p.t,
                                v: p.v,
                                h: None,
                            });
                        }
                        let p = s.hpoints.pop()?;
                        Some(InstantSample {
                            labels: s.labels,
                            t: p.t,
                            v: 0.0,
                            h: Some(p.h),
                        })
                    })
                    .collect(),
            ),
            Val::Matrix(series) => Value::Matrix(
                series
                    .into_iter()
                    .map(|s| RangeSeries {
                        labels: s.labels,
                        samples: s.points,
                        histograms: s.hpoints,
                    })
                    .collect(),
            ),
        };
        Ok(ev.finish(value))
    }

    pub fn range_query(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.range_query_with_timeout(query, (start_ms, end_ms, step_ms), self.opts.timeout)
    }

    /// A range query over `(start, end, step)` in ms with the caller's timeout, capped by the
    /// engine's own.
    pub fn range_query_with_timeout(
        &self,
        query: &str,
        (start_ms, end_ms, step_ms): (i64, i64, i64),
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::Execution(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::Execution(
                "end timestamp must not be before start time".into(),
            ));
        }
        let expr = parse(query, step_ms, end_ms - start_ms)?;
        let vt = eval::value_type(&expr);
        if vt != "scalar" && vt != "vector" {
            return Err(QueryError::Execution(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                if vt == "matrix" { "range vector" } else { vt }
            )));
        }
        let mut ev = self.evaluator(query, (start_ms, end_ms, step_ms), timeout);
        let ctx = Ctx {
            start: start_ms,
            end: end_ms,
            step: step_ms,
        };
        let val = ev.eval_root(&expr, &ctx)?;
        let mut series: Vec<RangeSeries> = match val {
            Val::Scalar(v) => vec![RangeSeries {
                labels: storage::Labels::default(),
                samples: v
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| storage::Sample { t: ctx.ts(i), v })
                    .collect(),
                histograms: Vec::new(),
            }],
            Val::Vector(series) | Val::Matrix(series) => series
                .into_iter()
                .filter(|s| !s.is_empty())
                .map(|s| RangeSeries {
                    labels: s.labels,
                    samples: s.points,
                    histograms: s.hpoints,
                })
                .collect(),
            Val::Str(_) => return Err(QueryError::Execution("invalid expression type \"string\" for range query, must be Scalar or instant Vector".into())),
        };
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(ev.finish(Value::Matrix(series)))
    }

    fn evaluator<'q>(
        &'q self,
        query: &'q str,
        bounds: (i64, i64, i64),
        timeout: Duration,
    ) -> Evaluator<'q> {
        let now = Instant::now();
        // A deadline too far to represent is no deadline at all.
        let deadline = now
            .checked_add(timeout.min(self.opts.timeout))
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        Evaluator::new(self.storage.as_ref(), &self.opts, deadline, query, bounds)
    }
}

#[cfg(test)]
mod tests;
