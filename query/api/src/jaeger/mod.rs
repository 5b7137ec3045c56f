//! Jaeger's query-service HTTP API under `/jaeger/api/` (Grafana's Jaeger data source URL is
//! `http://host:9090/jaeger`): services, operations, trace search, trace by id and service
//! dependencies, in Jaeger's JSON envelope (`data`, `total`, `limit`, `offset`, `errors`).
//! Owns parameter parsing and response shapes; reads only through the trace store, and for
//! dependencies through the metric store holding the metrics generator's service graph.

mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use storage::traces::{Seek, StoredSpan, TraceReader};
use storage::Querier;

use crate::admission::QueryGate;
use crate::trace_http::{self, now_ns, param, params, ErrorBody, TraceLimits};
use tracequery::{find_traces, parse_go_duration, parse_trace_id};

/// Jaeger's default search limit and look-back.
const DEFAULT_LIMIT: usize = 20;
const DEFAULT_LOOKBACK_NS: u64 = 3600 * 1_000_000_000;
const MAX_LIMIT: usize = 1500;

/// The metric store holding the metrics generator's service-graph counters, which the
/// dependencies view reads before falling back to walking spans.
#[derive(Clone)]
struct ServiceGraph(Option<Arc<dyn Querier>>);

/// Jaeger's query API over `store`; each request reads at most what `limits` allow, and
/// searches wait for a slot of `gate`. With `service_graph` (the metric store, when the
/// metrics generator writes into it) dependencies come from its service-graph counters.
pub fn routes(
    store: Arc<dyn TraceReader>,
    limits: TraceLimits,
    gate: QueryGate,
    service_graph: Option<Arc<dyn Querier>>,
) -> Router {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route(
            "/jaeger/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(search))
        .route("/jaeger/api/traces/{id}", get(trace_by_id))
        .route("/jaeger/api/dependencies", get(dependencies))
        .with_state(store)
        .layer(Extension(limits))
        .layer(Extension(gate))
        .layer(Extension(ServiceGraph(service_graph)))
}

/// Jaeger's error envelope.
enum Envelope {}

impl ErrorBody for Envelope {
    fn render(status: StatusCode, msg: String) -> Response {
        let body = json!({ "data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{ "code": status.as_u16(), "msg": msg }] });
        (status, Json(body)).into_response()
    }
}

type ApiError = trace_http::ApiError<Envelope>;

fn ok(data: Value, total: usize) -> Response {
    Json(envelope(data, total)).into_response()
}

async fn services(State(store): State<Arc<dyn TraceReader>>) -> Result<Response, ApiError> {
    let s = ApiError::blocking(move || Ok(store.services()?)).await?;
    let n = s.len();
    Ok(ok(json!(s), n))
}

async fn service_operations(
    State(store): State<Arc<dyn TraceReader>>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let mut names: Vec<String> = ApiError::blocking(move || Ok(store.operations(&service)?))
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    names.sort();
    names.dedup();
    let n = names.len();
    Ok(ok(json!(names), n))
}

async fn operations(
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let ps = params(q);
    let service = param(&ps, "service")
        .ok_or_else(|| ApiError::bad("parameter 'service' is required"))?
        .to_owned();
    let kind = param(&ps, "spanKind").map(str::to_owned);
    let ops = ApiError::blocking(move || Ok(store.operations(&service)?)).await?;
    let data: Vec<Value> = ops
        .into_iter()
        .map(|(k, name)| (model::kind_name(k), name))
        .filter(|(k, _)| kind.as_deref().is_none_or(|want| want == *k))
        .map(|(k, name)| json!({ "name": name, "spanKind": k }))
        .collect();
    let n = data.len();
    Ok(ok(json!(data), n))
}

async fn trace_by_id(
    State(store): State<Arc<dyn TraceReader>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tid =
        parse_trace_id(&id).ok_or_else(|| ApiError::bad(format!("malformed trace id {id:?}")))?;
    let spans = ApiError::blocking(move || Ok(store.trace(&tid)?)).await?;
    if spans.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "trace not found"));
    }
    Ok(ok(json!([model::trace(&spans)]), 1))
}

/// The search conditions of `GET /api/traces`, all checked on one span, as Jaeger does.
struct Query {
    service: String,
    operation: Option<String>,
    tags: Vec<(String, String)>,
    min_ns: Option<u64>,
    max_ns: Option<u64>,
    start_ns: u64,
    end_ns: u64,
    limit: usize,
}

fn parse_query(ps: &[(String, String)]) -> Result<Query, ApiError> {
    let service = param(ps, "service")
        .ok_or_else(|| ApiError::bad("parameter 'service' is required"))?
        .to_owned();
    let micros = |name: &str| -> Result<Option<u64>, ApiError> {
        param(ps, name)
            .map(|v| {
                v.parse::<u64>()
                    .map(|us| us.saturating_mul(1000))
                    .map_err(|_| ApiError::bad(format!("unable to parse param '{name}': {v:?}")))
            })
            .transpose()
    };
    let end_ns = micros("end")?.unwrap_or_else(now_ns);
    let lookback = match param(ps, "lookback") {
        Some(l) if l != "custom" => parse_go_duration(l)
            .ok_or_else(|| ApiError::bad(format!("unable to parse param 'lookback': {l:?}")))?,
        _ => DEFAULT_LOOKBACK_NS,
    };
    let start_ns = micros("start")?.unwrap_or(end_ns.saturating_sub(lookback));
    let dur = |name: &str| -> Result<Option<u64>, ApiError> {
        param(ps, name)
            .map(|v| {
                parse_go_duration(v)
                    .ok_or_else(|| ApiError::bad(format!("unable to parse param '{name}': {v:?}")))
            })
            .transpose()
    };
    let (min_ns, max_ns) = (dur("minDuration")?, dur("maxDuration")?);
    if let (Some(lo), Some(hi)) = (min_ns, max_ns) {
        if hi < lo {
            return Err(ApiError::bad(
                "'maxDuration' should be greater than 'minDuration'",
            ));
        }
    }
    let limit = match param(ps, "limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad(format!("unable to parse param 'limit': {l:?}")))?,
        None => DEFAULT_LIMIT,
    };
    let mut tags = Vec::new();
    for (k, v) in ps.iter().filter(|(k, _)| k == "tags" || k == "tag") {
        if v.trim_start().starts_with('{') {
            // Grafana and the UI send one JSON object.
            let m: BTreeMap<String, Value> = serde_json::from_str(v)
                .map_err(|e| ApiError::bad(format!("malformed 'tags' parameter: {e}")))?;
            tags.extend(m.into_iter().map(|(k, v)| {
                (
                    k,
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            }));
        } else if !v.is_empty() {
            let (tk, tv) = v.split_once(':').ok_or_else(|| {
                ApiError::bad(format!(
                    "malformed '{k}' parameter, expecting key:value, got {v:?}"
                ))
            })?;
            tags.push((tk.to_owned(), tv.to_owned()));
        }
    }
    Ok(Query {
        service,
        operation: param(ps, "operation").map(str::to_owned),
        tags,
        min_ns,
        max_ns,
        start_ns,
        end_ns,
        limit: if limit == 0 {
            DEFAULT_LIMIT
        } else {
            limit.min(MAX_LIMIT)
        },
    })
}

fn span_matches(q: &Query, s: &StoredSpan) -> bool {
    if s.origin.service_name() != q.service {
        return false;
    }
    if q.operation.as_deref().is_some_and(|op| op != s.span.name) {
        return false;
    }
    let d = s
        .span
        .end_time_unix_nano
        .saturating_sub(s.span.start_time_unix_nano);
    if q.min_ns.is_some_and(|m| d < m) || q.max_ns.is_some_and(|m| d > m) {
        return false;
    }
    if q.tags.is_empty() {
        return true;
    }
    // As Jaeger's memory and Elasticsearch stores match: every tag on this span, each among
    // its tags, its process's tags or its logs' fields, as the span is shown.
    let span_tags = model::span_tags(s);
    let process_tags = model::process_tags(&s.origin);
    let log_fields: Vec<model::Tag> = s.span.events.iter().flat_map(model::log_fields).collect();
    q.tags.iter().all(|(k, v)| {
        span_tags
            .iter()
            .chain(&process_tags)
            .chain(&log_fields)
            .any(|t| &t.key == k && t.text() == *v)
    })
}

/// The index seek finding every span [`span_matches`] keeps for a tag (and maybe more): a
/// span, resource or event attribute with the value as the index renders it, or for `event`
/// an event's name. `None` when the tag's key is one the OTLP translation adds, or its value
/// may be Jaeger's text of a value the index renders otherwise or not at all (a double, bytes
/// as hex, an array or map as JSON, no value as ""): the span check alone decides those.
fn tag_seek(key: &str, value: &str) -> Option<Seek> {
    let unindexed_text = value.is_empty()
        || value.starts_with(['[', '{'])
        || value == "null"
        || (value.parse::<f64>().is_ok() && value.parse::<i64>().is_err())
        || (value.len().is_multiple_of(2)
            && value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if unindexed_text || model::TRANSLATED_SPAN_TAGS.contains(&key) {
        return None;
    }
    let (key, value) = (key.to_owned(), value.to_owned());
    let mut any = vec![
        Seek::Attribute {
            resource: false,
            key: key.clone(),
            value: value.clone(),
        },
        Seek::Attribute {
            resource: true,
            key: key.clone(),
            value: value.clone(),
        },
    ];
    if key == "event" {
        any.push(Seek::EventName(value.clone()));
    }
    any.push(Seek::EventAttribute { key, value });
    Some(Seek::Any(any))
}

async fn search(
    Extension(limits): Extension<TraceLimits>,
    Extension(gate): Extension<QueryGate>,
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_query(&params(raw))?;
    let (traces, stopped_at) = ApiError::admitted(&gate, move || {
        // As Jaeger's Cassandra store does: a minimum duration walks the duration index,
        // otherwise the operation's or the service's, together with each tag's.
        let seek = match (&q.operation, q.min_ns.filter(|&ns| ns > 0)) {
            (_, Some(min_ns)) => Seek::Duration {
                service: Some(q.service.clone()),
                min_ns,
            },
            (Some(op), None) => Seek::Operation {
                service: q.service.clone(),
                name: op.clone(),
            },
            (None, None) => Seek::Service(q.service.clone()),
        };
        // Tags narrow the candidates to the spans the index holds for every one of them.
        let tags: Vec<Seek> = q.tags.iter().filter_map(|(k, v)| tag_seek(k, v)).collect();
        let seek = if tags.is_empty() {
            seek
        } else {
            Seek::All([seek].into_iter().chain(tags).collect())
        };
        let found = find_traces(
            &*store,
            &seek,
            q.start_ns,
            q.end_ns,
            q.limit,
            limits.max_spans_inspected,
            &mut |s| Ok(span_matches(&q, s)),
        )?;
        let mut out = Vec::with_capacity(found.trace_ids.len());
        for id in found.trace_ids {
            out.push(model::trace(&store.trace(&id)?));
        }
        Ok((out, found.truncated.then_some(found.spans_inspected)))
    })
    .await?;
    let n = traces.len();
    let mut body = envelope(json!(traces), n);
    // A partial result, as Jaeger's query service returns one: the traces found, and an error
    // saying what is missing (Grafana reads `data` and shows them).
    if let Some(spans) = stopped_at {
        body["errors"] = json!([{
            "code": StatusCode::PARTIAL_CONTENT.as_u16(),
            "msg": format!(
                "search stopped after reading {spans} spans (limits.trace_search_max_spans): \
                 older traces of the time range were not searched"
            ),
        }]);
    }
    Ok(Json(body).into_response())
}

async fn dependencies(
    Extension(limits): Extension<TraceLimits>,
    Extension(gate): Extension<QueryGate>,
    Extension(ServiceGraph(service_graph)): Extension<ServiceGraph>,
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ps = params(raw);
    let ms = |name: &str| -> Result<Option<u64>, ApiError> {
        param(&ps, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad(format!("unable to parse param '{name}': {v:?}")))
            })
            .transpose()
    };
    let end_ns = ms("endTs")?
        .map(|m| m.saturating_mul(1_000_000))
        .unwrap_or_else(now_ns);
    let lookback_ns = ms("lookback")?
        .map(|m| m.saturating_mul(1_000_000))
        .unwrap_or(24 * 3600 * 1_000_000_000);
    let start_ns = end_ns.saturating_sub(lookback_ns);
    let links = ApiError::admitted(&gate, move || {
        // The counters answer for the whole window when the generator was writing them;
        // without any (generator off, or the window older than its series) the spans do.
        if let Some(metrics) = &service_graph {
            let links = tracequery::service_graph_dependencies(&**metrics, start_ns, end_ns)?;
            if !links.is_empty() {
                return Ok(links);
            }
        }
        Ok(tracequery::dependencies(
            &*store,
            start_ns,
            end_ns,
            limits.max_spans_inspected,
        )?)
    })
    .await?;
    let data: Vec<Value> = links
        .into_iter()
        .map(|l| json!({ "parent": l.parent, "child": l.child, "callCount": l.calls }))
        .collect();
    let n = data.len();
    Ok(ok(json!(data), n))
}

fn envelope(data: Value, total: usize) -> Value {
    json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": null })
}

#[cfg(test)]
mod tests;
