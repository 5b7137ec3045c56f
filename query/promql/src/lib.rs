//! PromQL with Prometheus 3 semantics.
//!
//! - [`Engine`] (`engine/`): parses a query, evaluates it over all steps at once and shapes
//!   the result ([`Value`], [`QueryResult`], errors as [`QueryError`]).
//! - [`FloatHistogram`] (`float_histogram/`): native histogram arithmetic as PromQL sees it.
//! - [`promqltest`]: the runner of Prometheus's own test format, the conformance target, with an
//!   in-memory store for tests that should not depend on the TSDB.
//!
//! Reads data only through `storage::Querier`; knows nothing of HTTP, rules or alerting.

mod engine;
mod float_histogram;
pub mod promqltest;
mod value;

pub use engine::{check_nesting, check_syntax, format_extended, Engine, EngineOptions};
pub use float_histogram::{Bucket, CounterResetHint, FloatHistogram, Span};
pub use value::{HistogramPoint, InstantSample, QueryError, QueryResult, RangeSeries, Value};
