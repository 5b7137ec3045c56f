//! Tempo's TraceQL metrics endpoints: `GET /api/metrics/query_range` (series of samples, with
//! exemplars) and `GET /api/metrics/query` (one value per series), with Tempo's parameters
//! (`q` or `query`, `start`/`end` in seconds, nanoseconds or RFC 3339, `since`, `step` in
//! seconds or a Go duration, `exemplars`) and its protobuf-JSON response shapes, as Grafana's
//! Tempo data source decodes them (`jsonpb`: 64-bit integers as strings, `COMPLETE` status
//! omitted).

use std::sync::Arc;

use axum::extract::{Extension, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use storage::traces::TraceReader;
use tracequery::metrics::{default_step, evaluate, MetricsRequest, MetricsResult};
use tracequery::traceql::{self, Value};

use super::ApiError;
use crate::admission::QueryGate;
use crate::trace_http::{now_ns, param, params, TraceLimits};

/// Exemplars per series when the request does not say (Tempo's default limit).
const DEFAULT_EXEMPLARS: usize = 100;
/// Series one answer holds at most (Tempo's `max_response_series` default).
const MAX_SERIES: usize = 1000;
const DEFAULT_SINCE_NS: u64 = 3600 * 1_000_000_000;

/// A protobuf `AnyValue` in JSON, as Tempo writes label values.
pub(super) fn any_value(v: &Value) -> Json_ {
    match v {
        Value::Int(i) => json!({ "intValue": i.to_string() }),
        Value::Float(f) => json!({ "doubleValue": f }),
        Value::Bool(b) => json!({ "boolValue": b }),
        other => json!({ "stringValue": other.text() }),
    }
}

/// A double as protobuf JSON writes it: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`
/// (`compare()`'s exemplars have no value: NaN), which serde_json would write as `null`.
fn double(v: f64) -> Json_ {
    match v {
        v if v.is_nan() => json!("NaN"),
        f64::INFINITY => json!("Infinity"),
        f64::NEG_INFINITY => json!("-Infinity"),
        v => json!(v),
    }
}

fn labels_json(labels: &[(String, Value)]) -> Json_ {
    labels
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
        .collect()
}

/// Tempo's timestamps: `1.5` (seconds with a fraction), up to 10 digits seconds, more digits
/// nanoseconds, or RFC 3339.
fn timestamp_ns(v: &str) -> Option<u64> {
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            return (f >= 0.0).then(|| (f * 1e9).round() as u64);
        }
    }
    if let Ok(n) = v.parse::<u64>() {
        return Some(if v.len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    gocompat::time::parse_rfc3339(v)
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| ms.saturating_mul(1_000_000))
}

/// `step`: seconds (`60`, `0.5`) or a Go duration (`1m`).
fn step_ns(v: &str) -> Option<u64> {
    if let Ok(f) = v.parse::<f64>() {
        return (f > 0.0 && f.is_finite()).then_some((f * 1e9) as u64);
    }
    tracequery::parse_go_duration(v).filter(|n| *n > 0)
}

struct Parsed {
    query: traceql::Query,
    req: MetricsRequest,
}

fn parse_request(
    raw: Option<String>,
    instant: bool,
    limits: TraceLimits,
) -> Result<Parsed, ApiError> {
    let ps = params(raw);
    let q = param(&ps, "q")
        .or_else(|| param(&ps, "query"))
        .ok_or_else(|| ApiError::bad("query is required"))?;
    let query =
        traceql::parse(q).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
    let now = now_ns();
    let end = match param(&ps, "end") {
        Some(v) => timestamp_ns(v)
            .ok_or_else(|| ApiError::bad(format!("could not parse 'end' parameter: {v:?}")))?,
        None => now,
    };
    let since = match param(&ps, "since") {
        Some(v) => tracequery::parse_go_duration(v)
            .ok_or_else(|| ApiError::bad(format!("could not parse 'since' parameter: {v:?}")))?,
        None => DEFAULT_SINCE_NS,
    };
    let start = match param(&ps, "start") {
        Some(v) => timestamp_ns(v)
            .ok_or_else(|| ApiError::bad(format!("could not parse 'start' parameter: {v:?}")))?,
        None => end.min(now).saturating_sub(since),
    };
    if start >= end {
        return Err(ApiError::bad("end must be greater than start"));
    }
    // Spans still arriving cannot be counted: the window ends now at the latest.
    let end = end.min(now.max(start + 1));
    let step = match param(&ps, "step") {
        Some(v) => step_ns(v)
            .ok_or_else(|| ApiError::bad(format!("cannot parse {v:?} to a valid duration")))?,
        None => default_step(start, end),
    };
    let mut exemplars = match param(&ps, "exemplars") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::bad(format!("invalid exemplars: {v:?}")))?,
        None => DEFAULT_EXEMPLARS,
    };
    match query.hint("exemplars") {
        Some(Value::Bool(false)) => exemplars = 0,
        Some(Value::Int(n)) => exemplars = usize::try_from(*n).unwrap_or(0),
        _ => {}
    }
    let instant = instant || param(&ps, "instant") == Some("true");
    Ok(Parsed {
        query,
        req: MetricsRequest {
            start_ns: start,
            end_ns: end,
            step_ns: step,
            instant,
            exemplars: exemplars.min(DEFAULT_EXEMPLARS),
            max_series: MAX_SERIES,
            max_spans: limits.max_spans_inspected,
        },
    })
}

async fn run(
    gate: &QueryGate,
    store: Arc<dyn TraceReader>,
    parsed: Parsed,
) -> Result<MetricsResult, ApiError> {
    ApiError::admitted(gate, move || {
        evaluate(&*store, &parsed.query, parsed.req)?.map_err(ApiError::bad)
    })
    .await
}

fn metrics_json(r: &MetricsResult) -> Json_ {
    super::search_metrics(
        r.inspected_traces,
        r.inspected_spans,
        r.inspected_bytes,
        r.partial.is_some(),
    )
}

fn with_status(mut body: Json_, r: &MetricsResult) -> Json_ {
    if let Some(msg) = &r.partial {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(msg);
    }
    body
}

pub(super) async fn query_range(
    Extension(limits): Extension<TraceLimits>,
    Extension(gate): Extension<QueryGate>,
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let parsed = parse_request(raw, false, limits)?;
    let r = run(&gate, store, parsed).await?;
    let series: Vec<Json_> = r
        .series
        .iter()
        .map(|s| {
            let samples: Vec<Json_> = s
                .samples
                .iter()
                .map(|(t, v)| json!({ "timestampMs": t.to_string(), "value": double(*v) }))
                .collect();
            let mut out = json!({ "labels": labels_json(&s.labels), "samples": samples });
            if !s.exemplars.is_empty() {
                out["exemplars"] = s
                    .exemplars
                    .iter()
                    .map(|e| {
                        json!({
                            "labels": [
                                { "key": "trace:id", "value": { "stringValue": tracequery::hex(&e.trace_id) } },
                                { "key": "span:id", "value": { "stringValue": tracequery::hex(&e.span_id) } },
                            ],
                            "value": double(e.value),
                            "timestampMs": e.timestamp_ms.to_string(),
                        })
                    })
                    .collect();
            }
            out
        })
        .collect();
    let body = json!({ "series": series, "metrics": metrics_json(&r) });
    Ok(Json(with_status(body, &r)).into_response())
}

pub(super) async fn query_instant(
    Extension(limits): Extension<TraceLimits>,
    Extension(gate): Extension<QueryGate>,
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let parsed = parse_request(raw, true, limits)?;
    let r = run(&gate, store, parsed).await?;
    let series: Vec<Json_> = r
        .series
        .iter()
        .filter_map(|s| {
            let (_, v) = s.samples.last()?;
            Some(json!({ "labels": labels_json(&s.labels), "value": double(*v) }))
        })
        .collect();
    let body = json!({ "series": series, "metrics": metrics_json(&r) });
    Ok(Json(with_status(body, &r)).into_response())
}
