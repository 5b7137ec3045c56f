//! The fields Grafana's log details and filters offer (Loki's `detected_fields`): found by
//! parsing a sample of the newest selected lines as JSON or logfmt, plus their structured
//! metadata, each with a guessed type and its cardinality in the sample. The wire shape is the
//! wire layer's.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use gocompat::units::parse_go_duration;
use serde_json::Value as J;
use storage::logs::{Direction, LogQuery};

use crate::ast::{looks_like_bytes, Expr};
use crate::{parse, EvalError, LogEngine};

/// One detected field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedField {
    pub label: String,
    /// Loki's type names: `int`, `float`, `boolean`, `duration`, `bytes`, `string`.
    pub kind: &'static str,
    /// Distinct values in the sample.
    pub cardinality: usize,
    /// The parsers that found it (`json`, `logfmt`); empty for structured metadata.
    pub parsers: Vec<&'static str>,
}

#[derive(Default)]
struct Field {
    values: BTreeSet<String>,
    parsers: BTreeSet<&'static str>,
}

/// The narrowest type every value of the sample parses as.
fn kind(values: &BTreeSet<String>) -> &'static str {
    let all = |f: &dyn Fn(&str) -> bool| values.iter().all(|v| f(v));
    if all(&|v| v.parse::<i64>().is_ok()) {
        "int"
    } else if all(&|v| v.parse::<f64>().is_ok()) {
        "float"
    } else if all(&|v| v == "true" || v == "false") {
        "boolean"
    } else if all(&|v| parse_go_duration(v).is_some()) {
        "duration"
    } else if all(&|v| looks_like_bytes(v)) {
        "bytes"
    } else {
        "string"
    }
}

impl LogEngine {
    /// The fields of the newest `sample` lines of log query `query` in [start, end] ns, by
    /// name, at most `limit` of them.
    pub fn detected_fields(
        &self,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        sample: usize,
        limit: usize,
    ) -> Result<Vec<DetectedField>, EvalError> {
        let log = match parse(query)? {
            Expr::Log(l) => l,
            Expr::Metric(_) => {
                return Err(EvalError::BadRequest(
                    "only log queries are supported".into(),
                ))
            }
        };
        let q = LogQuery {
            matchers: log.matchers.clone(),
            start_ns,
            end_ns: end_ns.saturating_add(1),
            contains: vec![],
        };
        let mut fields: BTreeMap<String, Field> = BTreeMap::new();
        let mut n = 0;
        self.store().scan(&q, Direction::Backward, &mut |r| {
            n += 1;
            if n > sample {
                return ControlFlow::Break(());
            }
            for (k, v) in &r.metadata {
                fields
                    .entry(k.clone())
                    .or_default()
                    .values
                    .insert(v.clone());
            }
            if let Ok(J::Object(m)) = serde_json::from_str::<J>(&r.line) {
                for (k, v) in m {
                    let f = fields.entry(k).or_default();
                    f.parsers.insert("json");
                    f.values.insert(match v {
                        J::String(s) => s,
                        other => other.to_string(),
                    });
                }
            } else {
                for tok in r.line.split_whitespace() {
                    if let Some((k, v)) = tok.split_once('=') {
                        if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            let f = fields.entry(k.to_owned()).or_default();
                            f.parsers.insert("logfmt");
                            f.values.insert(v.trim_matches('"').to_owned());
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(fields
            .into_iter()
            .take(limit)
            .map(|(label, f)| DetectedField {
                label,
                kind: kind(&f.values),
                cardinality: f.values.len(),
                parsers: f.parsers.into_iter().collect(),
            })
            .collect())
    }
}
