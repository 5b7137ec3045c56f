//! `/loki/api/v1/detected_fields`: parameters in, `logql::LogEngine::detected_fields` out,
//! as Loki's JSON.

use serde_json::{json, Value as J};

use super::params::Params;
use super::{metadata_range, LokiError, LokiState};

/// Lines sampled, newest first (Loki samples the lines its `limit` would return).
const SAMPLE: usize = 1000;

pub(super) fn detected_fields(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    let limit = p.limit(1000).map_err(LokiError::bad)?;
    let fields = s
        .engine
        .detected_fields(p.get("query"), start, end, SAMPLE, limit)?;
    let out: Vec<J> = fields
        .into_iter()
        .map(|f| {
            let parsers = (!f.parsers.is_empty()).then_some(f.parsers);
            json!({"label": f.label, "type": f.kind, "cardinality": f.cardinality, "parsers": parsers})
        })
        .collect();
    Ok(json!({"fields": out, "limit": limit}))
}
