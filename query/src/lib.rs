//! novamon's query side: the PromQL engine (Prometheus 3 semantics) and its conformance runner.
//! Storage is reached only through `storage::Queryable`; the HTTP API lives elsewhere in this
//! crate and only calls [`Engine`].

pub mod alert;
pub mod alertmanager;
mod engine;
mod float_histogram;
mod form;
mod gofmt;
mod gotemplate;
mod handler;
pub mod http;
pub mod jaeger;
pub mod logql;
pub mod loki_http;
pub mod promqltest;
pub mod rules;
pub mod tempo;
mod trace_http;
mod trace_search;
mod value;

pub use engine::{Engine, EngineOptions};
pub use float_histogram::{Bucket, CounterResetHint, FloatHistogram, Span};
pub use value::{HistogramPoint, InstantSample, QueryError, QueryResult, RangeSeries, Value};
