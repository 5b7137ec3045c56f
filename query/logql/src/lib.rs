//! LogQL: the parser ([`parse`], `parser`), the syntax tree ([`ast`]), the pipeline stages
//! (`pipeline`, `template` for `line_format`/`label_format`), evaluation ([`LogEngine`],
//! `eval`) and the metadata queries Loki answers beside queries (`metadata`: labels, series,
//! index stats, volumes; `fields`: the fields Grafana's log details offer; `patterns`: the log
//! patterns of Grafana's Logs Drilldown). Reads logs only through `storage::logs::LogReader`;
//! the Loki HTTP API that serves it is the `api` crate's.

pub mod ast;
mod eval;
mod fields;
mod metadata;
mod parser;
mod patterns;
mod pipeline;
mod template;

pub use eval::{
    CategorizedEntry, CategorizedStream, EvalError, LogEngine, Outcome, QueryLimits, Series, Steps,
    Stream,
};
pub use fields::DetectedField;
pub use metadata::IndexStats;
pub use parser::{parse, ParseError};
pub use patterns::PatternSeries;
pub use pipeline::LabelMap;
