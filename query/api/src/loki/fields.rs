//! `/loki/api/v1/detected_fields`: the fields Grafana's log details and filters offer, found
//! by parsing a sample of the selected lines as JSON and logfmt (and structured metadata),
//! each with a guessed type and its cardinality in the sample.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use serde_json::{json, Value as J};
use storage::logs::{Direction, LogQuery};

use super::params::Params;
use super::{metadata_range, LokiError, LokiState};
use gocompat::units::parse_go_duration;
use logql::ast::Expr;
use logql::parse;

/// Lines sampled, newest first.
const SAMPLE: usize = 1000;

#[derive(Default)]
struct Field {
    values: BTreeSet<String>,
    parsers: BTreeSet<&'static str>,
}

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
    } else if all(&|v| logql::ast::looks_like_bytes(v)) {
        "bytes"
    } else {
        "string"
    }
}

pub(super) fn detected_fields(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    let log = match parse(p.get("query")).map_err(|e| LokiError::bad(e.to_string()))? {
        Expr::Log(l) => l,
        Expr::Metric(_) => return Err(LokiError::bad("only log queries are supported")),
    };
    let q = LogQuery {
        matchers: log.matchers.clone(),
        start_ns: start,
        end_ns: end.saturating_add(1),
        contains: vec![],
    };
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    let mut n = 0;
    s.engine.store().scan(&q, Direction::Backward, &mut |r| {
        n += 1;
        if n > SAMPLE {
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
                    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        let f = fields.entry(k.to_owned()).or_default();
                        f.parsers.insert("logfmt");
                        f.values.insert(v.trim_matches('"').to_owned());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    let limit = p.limit(1000).map_err(LokiError::bad)?;
    let out: Vec<J> = fields
        .into_iter()
        .take(limit)
        .map(|(label, f)| {
            let parsers: Option<Vec<&str>> = (!f.parsers.is_empty()).then(|| f.parsers.into_iter().collect());
            json!({"label": label, "type": kind(&f.values), "cardinality": f.values.len(), "parsers": parsers})
        })
        .collect();
    Ok(json!({"fields": out, "limit": limit}))
}
