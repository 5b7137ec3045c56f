//! novamon's query side: the PromQL engine (Prometheus 3 semantics) and its conformance runner.
//! Storage is reached only through `storage::Queryable`; the HTTP API lives elsewhere in this
//! crate and only calls [`Engine`].

mod engine;
pub mod http;
pub mod promqltest;
mod value;

pub use engine::{Engine, EngineOptions};
pub use value::{InstantSample, QueryError, QueryResult, RangeSeries, Value};
