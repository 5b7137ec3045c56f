//! What Grafana's log details, label browser and Logs Drilldown ask besides queries:
//! `detected_fields`, `detected_field/<name>/values`, `detected_labels` and
//! `drilldown-limits`, with Loki's parameters and its bare (unwrapped) JSON objects.
//! Evaluation is `logql`'s.

use axum::Json;
use serde_json::{json, Value as J};

use super::params::Params;
use super::{metadata_range, selector, LokiError, LokiState, LOKI_COMPAT_VERSION};

/// Lines read, newest first, when the request does not say (`line_limit`): Loki's default.
const DEFAULT_LINE_LIMIT: usize = 100;

/// Fields or values answered at most when the request does not say (`limit`, formerly
/// `field_limit`): Loki's default.
const DEFAULT_FIELD_LIMIT: usize = 1000;

/// (lines read, answer limit) of a detected-fields request.
fn limits(p: &Params) -> Result<(usize, usize), LokiError> {
    let lines = p
        .number_or("line_limit", DEFAULT_LINE_LIMIT)
        .map_err(LokiError::bad)?;
    let limit = match p.get("limit") {
        "" => p.number_or("field_limit", DEFAULT_FIELD_LIMIT),
        _ => p.number_or("limit", DEFAULT_FIELD_LIMIT),
    }
    .map_err(LokiError::bad)?;
    Ok((lines, limit))
}

/// `{"fields": [...], "limit": N}`, or `{}` when nothing was found (Loki leaves out empty
/// fields). `parsers` is null for structured metadata, which Grafana shows as such.
pub(super) fn detected_fields(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    let (lines, limit) = limits(p)?;
    let fields = s
        .engine
        .detected_fields(p.get("query"), start, end, lines, limit)?;
    if fields.is_empty() {
        return Ok(json!({}));
    }
    let out: Vec<J> = fields
        .into_iter()
        .map(|f| {
            let parsers = (!f.parsers.is_empty()).then_some(f.parsers);
            let mut field = json!({"label": f.label, "type": f.kind, "cardinality": f.cardinality, "parsers": parsers});
            if !f.json_path.is_empty() {
                field["jsonPath"] = json!(f.json_path);
            }
            field
        })
        .collect();
    Ok(json!({"fields": out, "limit": limit}))
}

/// `{"values": [...], "limit": N}`, or `{}` when there is none.
pub(super) fn detected_field_values(
    s: &LokiState,
    p: &Params,
    name: &str,
) -> Result<Json<J>, LokiError> {
    let (start, end) = metadata_range(p)?;
    let (lines, limit) = limits(p)?;
    let values = s
        .engine
        .detected_field_values(name, p.get("query"), start, end, lines, limit)?;
    Ok(Json(if values.is_empty() {
        json!({})
    } else {
        json!({"values": values, "limit": limit})
    }))
}

/// `{"detectedLabels": [{"label", "cardinality"}]}`, or `{}` when there is none. `query` is
/// a stream selector, or empty for every stream.
pub(super) fn detected_labels(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    if start > end {
        return Err(LokiError::bad("the end time must not be before the start"));
    }
    let labels = s
        .engine
        .detected_labels(&selector(p, "query")?, start, end)?;
    if labels.is_empty() {
        return Ok(json!({}));
    }
    let out: Vec<J> = labels
        .into_iter()
        .map(|(label, cardinality)| json!({"label": label, "cardinality": cardinality}))
        .collect();
    Ok(json!({"detectedLabels": out}))
}

/// The limits the Logs Drilldown app reads to decide what it offers (the patterns tab, the
/// line limit), under Loki's names.
pub(super) fn drilldown_limits(s: &LokiState, _: &Params) -> Result<J, LokiError> {
    Ok(json!({
        "limits": {
            "discover_log_levels": s.discover_log_levels,
            "max_entries_limit_per_query": s.engine.max_entries(),
            "max_query_series": s.engine.max_series(),
            "volume_enabled": true,
            "pattern_persistence_enabled": false,
            "metric_aggregation_enabled": false,
        },
        "pattern_ingester_enabled": true,
        "version": LOKI_COMPAT_VERSION,
    }))
}
