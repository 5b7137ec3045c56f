//! LogQL: the parser ([`parse`]), the syntax tree ([`ast`]) and evaluation over
//! `storage::logs::LogStore` ([`LogEngine`]). Owns the language; the Loki HTTP API that serves
//! it is `crate::loki_http`.

pub mod ast;
mod eval;
mod parser;
mod pipeline;
mod template;

pub use eval::{EvalError, LogEngine, Outcome, Series, Steps, Stream};
pub use parser::{parse, ParseError};
pub use pipeline::LabelMap;

pub(crate) use parser::parse_go_duration;
