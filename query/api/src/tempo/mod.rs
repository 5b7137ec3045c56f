//! The Tempo HTTP API under `/tempo/` for Grafana's Tempo data source: echo and build info,
//! trace by id (v1 and v2; OTLP protobuf when the client accepts `application/protobuf`, else
//! OTLP JSON), search by TraceQL or by tags, tag names/values (v1 and v2, v2 narrowed by a
//! TraceQL `q`) and TraceQL metrics (`metrics`). Owns parameter parsing and response shapes;
//! reads only through the trace store.

mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use serde_json::{json, Value};
use storage::traces::{StoredSpan, TraceReader};

use crate::admission::QueryGate;
use crate::trace_http::{self, now_ns, param, params, ErrorBody, TraceLimits};
use tracequery::spansets::{for_each_result_span, search_spansets, TraceMatch};
use tracequery::traceql::{
    self, field_value, Cond, Field, Intrinsic, Op, Operand, Pipeline, Query, Scope, SpanRef,
    SpansetExpr, Stage, Value as QlValue,
};
use tracequery::{hex, parse_go_duration, parse_trace_id};

const DEFAULT_LIMIT: usize = 20;
const DEFAULT_SPANS_PER_SPANSET: usize = 3;
const DEFAULT_WINDOW_NS: u64 = 3600 * 1_000_000_000;

/// The Tempo API over `store`; each request reads at most what `limits` allow, and
/// searches wait for a slot of `gate`.
pub fn routes(store: Arc<dyn TraceReader>, limits: TraceLimits, gate: QueryGate) -> Router {
    Router::new()
        .route("/tempo/api/echo", get(|| async { "echo" }))
        .route("/tempo/api/status/buildinfo", get(buildinfo))
        .route("/tempo/api/traces/{id}", get(trace_v1))
        .route("/tempo/api/v2/traces/{id}", get(trace_v2))
        .route("/tempo/api/search", get(search))
        .route("/tempo/api/search/tags", get(tags_v1))
        .route("/tempo/api/v2/search/tags", get(tags_v2))
        .route("/tempo/api/search/tag/{name}/values", get(values_v1))
        .route("/tempo/api/v2/search/tag/{name}/values", get(values_v2))
        .route("/tempo/api/metrics/query_range", get(metrics::query_range))
        .route("/tempo/api/metrics/query", get(metrics::query_instant))
        .with_state(store)
        .layer(Extension(limits))
        .layer(Extension(gate))
}

/// Tempo answers errors in plain text.
enum PlainText {}

impl ErrorBody for PlainText {
    fn render(status: StatusCode, msg: String) -> Response {
        (status, msg).into_response()
    }
}

type ApiError = trace_http::ApiError<PlainText>;

async fn buildinfo() -> Json<Value> {
    Json(
        json!({ "version": "2.6.0", "revision": "novamon", "branch": "", "buildUser": "", "buildDate": "", "goVersion": "" }),
    )
}

/// The stored spans regrouped as OTLP: one ResourceSpans per origin.
fn to_otlp(spans: Vec<StoredSpan>) -> Vec<ResourceSpans> {
    let mut out: Vec<(Arc<storage::traces::Origin>, ResourceSpans)> = Vec::new();
    for s in spans {
        match out
            .iter_mut()
            .find(|(o, _)| Arc::ptr_eq(o, &s.origin) || **o == *s.origin)
        {
            Some((_, rs)) => rs.scope_spans[0].spans.push(s.span),
            None => {
                let mut rs = s.origin.skeleton.clone();
                if rs.scope_spans.is_empty() {
                    rs.scope_spans.push(ScopeSpans::default());
                }
                rs.scope_spans[0].spans.push(s.span);
                out.push((s.origin, rs));
            }
        }
    }
    out.into_iter().map(|(_, rs)| rs).collect()
}

/// tempopb.Trace: `repeated ResourceSpans batches = 1`.
#[derive(Clone, PartialEq, prost::Message)]
struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    batches: Vec<ResourceSpans>,
}

/// tempopb.TraceByIDResponse: `Trace trace = 1`.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TempoTrace>,
}

fn wants_protobuf(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/protobuf") || a.contains("application/x-protobuf"))
}

async fn load_trace(
    store: Arc<dyn TraceReader>,
    id: String,
) -> Result<Vec<ResourceSpans>, ApiError> {
    let tid =
        parse_trace_id(&id).ok_or_else(|| ApiError::bad(format!("invalid trace id {id:?}")))?;
    let spans = ApiError::blocking(move || Ok(store.trace(&tid)?)).await?;
    if spans.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("trace not found: {id}"),
        ));
    }
    Ok(to_otlp(spans))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], bytes).into_response()
}

async fn trace_v1(
    State(store): State<Arc<dyn TraceReader>>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let batches = load_trace(store, id).await?;
    if wants_protobuf(&h) {
        return Ok(protobuf(TempoTrace { batches }.encode_to_vec()));
    }
    Ok(Json(json!({ "batches": batches })).into_response())
}

async fn trace_v2(
    State(store): State<Arc<dyn TraceReader>>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let batches = load_trace(store, id).await?;
    if wants_protobuf(&h) {
        return Ok(protobuf(
            TraceByIdResponse {
                trace: Some(TempoTrace { batches }),
            }
            .encode_to_vec(),
        ));
    }
    Ok(Json(json!({ "trace": { "resourceSpans": batches } })).into_response())
}

/// The window of a search or of a tag lookup: `start` and `end` in seconds (the end second
/// included), an hour back from the end (or now) by default.
fn search_window(ps: &[(String, String)]) -> Result<(u64, u64), ApiError> {
    let secs = |name: &str| -> Result<Option<u64>, ApiError> {
        param(ps, name)
            .map(|v| {
                v.parse::<u64>()
                    .map(|s| s.saturating_mul(1_000_000_000))
                    .map_err(|_| ApiError::bad(format!("invalid {name}: {v:?}")))
            })
            .transpose()
    };
    let end_ns = secs("end")?
        .map(|e| e.saturating_add(999_999_999))
        .unwrap_or_else(now_ns);
    let start_ns = secs("start")?.unwrap_or(end_ns.saturating_sub(DEFAULT_WINDOW_NS));
    Ok((start_ns, end_ns))
}

/// The spans a TraceQL `q` picks out of the request's window, to narrow tag names and values.
struct Narrowing {
    query: Query,
    start_ns: u64,
    end_ns: u64,
}

impl Narrowing {
    /// The narrowing of a request; none when `q` is absent or `{}` (every span).
    fn of(ps: &[(String, String)]) -> Result<Option<Narrowing>, ApiError> {
        let Some(q) = param(ps, "q").filter(|q| !q.trim().is_empty()) else {
            return Ok(None);
        };
        let query =
            traceql::parse(q).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?;
        let every_span = matches!(
            query.pipeline.stages.as_slice(),
            [Stage::Spanset(SpansetExpr::Filter(Cond::Bare(
                Operand::Value(QlValue::Bool(true))
            )))]
        );
        if every_span {
            return Ok(None);
        }
        let (start_ns, end_ns) = search_window(ps)?;
        Ok(Some(Narrowing {
            query,
            start_ns,
            end_ns,
        }))
    }

    /// Visits the matching spans, reading at most the search's span budget.
    fn visit(
        &self,
        store: &dyn TraceReader,
        limits: TraceLimits,
        f: &mut dyn FnMut(&storage::traces::StoredSpan),
    ) -> Result<(), ApiError> {
        let (q, lo, hi) = (&self.query, self.start_ns, self.end_ns);
        for_each_result_span(store, q, lo, hi, limits.max_spans_inspected, f)?;
        Ok(())
    }
}

/// Tempo's tag search (`tags=k=v k2="v 2"`, logfmt) as the equivalent TraceQL filter.
fn tags_to_query(tags: &str, min: Option<u64>, max: Option<u64>) -> Result<Query, ApiError> {
    let mut conds = Vec::new();
    let mut rest = tags.trim();
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once('=')
            .ok_or_else(|| ApiError::bad(format!("invalid tags {tags:?}: expected key=value")))?;
        let (v, after) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or_else(|| {
                ApiError::bad(format!("invalid tags {tags:?}: unterminated quote"))
            })?;
            (&q[..end], &q[end + 1..])
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        let (field, value) = match k.trim() {
            "name" => (
                Field::Intrinsic(Intrinsic::Name),
                QlValue::Str(v.to_owned()),
            ),
            "status.code" => {
                let code = v.trim_start_matches("STATUS_CODE_").to_ascii_lowercase();
                let status = traceql::STATUSES
                    .into_iter()
                    .find(|s| *s == code)
                    .ok_or_else(|| ApiError::bad(format!("invalid status.code {v:?}")))?;
                (Field::Intrinsic(Intrinsic::Status), QlValue::Status(status))
            }
            key => (
                Field::Attr {
                    scope: Scope::Any,
                    key: key.to_owned(),
                },
                QlValue::Str(v.to_owned()),
            ),
        };
        conds.push(cmp(field, Op::Eq, value));
        rest = after.trim();
    }
    let duration = Field::Intrinsic(Intrinsic::Duration);
    conds.extend(min.map(|n| cmp(duration.clone(), Op::Ge, QlValue::Duration(n))));
    conds.extend(max.map(|n| cmp(duration.clone(), Op::Le, QlValue::Duration(n))));
    let cond = conds
        .into_iter()
        .reduce(|a, b| Cond::And(Box::new(a), Box::new(b)))
        .unwrap_or_else(Cond::all);
    Ok(Query {
        pipeline: Pipeline {
            stages: vec![Stage::Spanset(SpansetExpr::Filter(cond))],
        },
        metrics: None,
        hints: Vec::new(),
    })
}

fn cmp(field: Field, op: Op, value: QlValue) -> Cond {
    Cond::Cmp {
        lhs: Operand::Field(field),
        op,
        rhs: Operand::Value(value),
        re: None,
    }
}

async fn search(
    Extension(limits): Extension<TraceLimits>,
    Extension(gate): Extension<QueryGate>,
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ps = params(raw);
    let (start_ns, end_ns) = search_window(&ps)?;
    let num = |name: &str, default: usize| -> Result<usize, ApiError> {
        param(&ps, name)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| ApiError::bad(format!("invalid {name}: {v:?}")))
            })
            .transpose()
            .map(|v| v.filter(|n| *n > 0).unwrap_or(default))
    };
    let limit = num("limit", DEFAULT_LIMIT)?;
    let spss = num("spss", DEFAULT_SPANS_PER_SPANSET)?;
    let dur = |name: &str| -> Result<Option<u64>, ApiError> {
        param(&ps, name)
            .map(|v| {
                parse_go_duration(v).ok_or_else(|| ApiError::bad(format!("invalid {name}: {v:?}")))
            })
            .transpose()
    };
    let query = match param(&ps, "q") {
        Some(q) => {
            traceql::parse(q).map_err(|e| ApiError::bad(format!("invalid TraceQL query: {e}")))?
        }
        None => tags_to_query(
            param(&ps, "tags").unwrap_or(""),
            dur("minDuration")?,
            dur("maxDuration")?,
        )?,
    };
    let found = ApiError::admitted(&gate, move || {
        Ok(search_spansets(
            &*store,
            &query,
            start_ns,
            end_ns,
            limit,
            spss,
            limits.max_spans_inspected,
        )?)
    })
    .await?;
    let traces: Vec<Value> = found.traces.iter().map(trace_json).collect();
    Ok(Json(json!({
        "traces": traces,
        "metrics": search_metrics(found.inspected_traces, found.inspected_spans, found.inspected_bytes, found.truncated),
    }))
    .into_response())
}

/// Tempo's `SearchMetrics` (64-bit counts as strings, as its JSON mapping writes them). A
/// search or metrics query that stopped at `limits.trace_search_max_spans` reports a job it
/// did not complete (the older rest of the window), the progress Grafana shows for a search
/// still running.
pub(super) fn search_metrics(traces: usize, spans: usize, bytes: u64, stopped: bool) -> Value {
    json!({
        "inspectedTraces": traces,
        "inspectedSpans": spans.to_string(),
        "inspectedBytes": bytes.to_string(),
        "completedJobs": 1,
        "totalJobs": if stopped { 2 } else { 1 },
    })
}

/// A trace in Tempo's search result shape, with its spansets (`spanSet` is the first).
fn trace_json(t: &TraceMatch) -> Value {
    let spansets: Vec<Value> = t
        .spansets
        .iter()
        .map(|set| {
            let spans: Vec<Value> = set
                .spans
                .iter()
                .map(|s| {
                    let mut attrs = vec![json!({ "key": "service.name", "value": { "stringValue": s.service_name } })];
                    attrs.extend(
                        s.attributes
                            .iter()
                            .map(|(k, v)| json!({ "key": k, "value": metrics::any_value(v) })),
                    );
                    json!({
                        "spanID": hex(&s.span_id),
                        "name": s.name,
                        "startTimeUnixNano": s.start_ns.to_string(),
                        "durationNanos": s.duration_ns.to_string(),
                        "attributes": attrs,
                    })
                })
                .collect();
            let mut out = json!({ "spans": spans, "matched": set.matched });
            if !set.attributes.is_empty() {
                out["attributes"] = set
                    .attributes
                    .iter()
                    .map(|(k, v)| json!({ "key": k, "value": metrics::any_value(v) }))
                    .collect();
            }
            out
        })
        .collect();
    json!({
        "traceID": hex(&t.trace_id),
        "rootServiceName": t.root.as_ref().map_or("<root span not yet received>", |r| r.0.as_str()),
        "rootTraceName": t.root.as_ref().map_or("", |r| r.1.as_str()),
        "startTimeUnixNano": t.start_ns.to_string(),
        "durationMs": t.duration_ns / 1_000_000,
        "spanSet": spansets.first().cloned().unwrap_or(Value::Null),
        "spanSets": spansets,
    })
}

async fn tag_keys(store: Arc<dyn TraceReader>) -> Result<(Vec<String>, Vec<String>), ApiError> {
    ApiError::blocking(move || Ok((store.attribute_keys(false)?, store.attribute_keys(true)?)))
        .await
}

async fn tags_v1(State(store): State<Arc<dyn TraceReader>>) -> Result<Response, ApiError> {
    let (span, resource) = tag_keys(store).await?;
    let all: BTreeSet<String> = span.into_iter().chain(resource).collect();
    Ok(Json(json!({ "tagNames": all })).into_response())
}

async fn tags_v2(
    Extension(limits): Extension<TraceLimits>,
    State(store): State<Arc<dyn TraceReader>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ps = params(raw);
    let scope = param(&ps, "scope").unwrap_or("all").to_owned();
    let (span, resource) = match Narrowing::of(&ps)? {
        None => tag_keys(store).await?,
        Some(narrowing) => {
            ApiError::blocking(move || {
                let (mut span, mut resource) = (BTreeSet::new(), BTreeSet::new());
                narrowing.visit(&*store, limits, &mut |s| {
                    span.extend(s.span.attributes.iter().map(|kv| kv.key.clone()));
                    let keys = s.origin.resource_attributes().iter();
                    resource.extend(keys.map(|kv| kv.key.clone()));
                })?;
                Ok((span.into_iter().collect(), resource.into_iter().collect()))
            })
            .await?
        }
    };
    let scopes: Vec<Value> = [
        ("resource", resource),
        ("span", span),
        (
            "intrinsic",
            Intrinsic::LISTED.iter().map(|s| (*s).to_owned()).collect(),
        ),
    ]
    .into_iter()
    .filter(|(name, _)| scope == "all" || scope == *name)
    .map(|(name, tags)| json!({ "name": name, "tags": tags }))
    .collect();
    Ok(Json(json!({ "scopes": scopes })).into_response())
}

async fn values_v1(
    Extension(limits): Extension<TraceLimits>,
    State(store): State<Arc<dyn TraceReader>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let values = ApiError::blocking(move || {
        let mut all: BTreeSet<String> = store
            .attribute_values(false, &name, limits.max_tag_values)?
            .into_iter()
            .collect();
        all.extend(store.attribute_values(true, &name, limits.max_tag_values)?);
        Ok(all)
    })
    .await?;
    Ok(Json(json!({ "tagValues": values })).into_response())
}

/// A value as tag values v2 lists it: `{type, value}` with Tempo's type names.
fn typed_value(v: &QlValue) -> Value {
    let kind = match v {
        QlValue::Int(_) => "int",
        QlValue::Float(_) => "float",
        QlValue::Bool(_) => "bool",
        QlValue::Duration(_) => "duration",
        QlValue::Status(_) | QlValue::Kind(_) => "keyword",
        QlValue::Str(_) | QlValue::Nil => "string",
    };
    json!({ "type": kind, "value": v.text() })
}

async fn values_v2(
    Extension(limits): Extension<TraceLimits>,
    State(store): State<Arc<dyn TraceReader>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ps = params(raw);
    let keywords = |ks: &[&str]| {
        ks.iter()
            .map(|k| json!({ "type": "keyword", "value": k }))
            .collect::<Vec<_>>()
    };
    // Tag names without a scope (v1 style) are attributes of either scope.
    let field = traceql::parse_field(&name).unwrap_or_else(|_| Field::Attr {
        scope: Scope::Any,
        key: name.clone(),
    });
    if let Some(narrowing) = Narrowing::of(&ps)? {
        // The values the field takes on the spans `q` matches.
        let values = ApiError::blocking(move || {
            let mut all: BTreeMap<String, QlValue> = BTreeMap::new();
            narrowing.visit(&*store, limits, &mut |s| {
                if all.len() < limits.max_tag_values {
                    let v = field_value(&field, SpanRef::alone(s));
                    if v != QlValue::Nil {
                        all.entry(format!("{v:?}")).or_insert(v);
                    }
                }
            })?;
            Ok(all)
        })
        .await?;
        let values: Vec<Value> = values.values().map(typed_value).collect();
        return Ok(Json(json!({ "tagValues": values })).into_response());
    }
    let values: Vec<Value> = match field {
        Field::Intrinsic(Intrinsic::Status) => keywords(&traceql::STATUSES),
        Field::Intrinsic(Intrinsic::Kind) => keywords(&traceql::KINDS),
        Field::Intrinsic(Intrinsic::Name) => {
            let names = ApiError::blocking(move || {
                let mut all = BTreeSet::new();
                for svc in store.services()? {
                    all.extend(store.operations(&svc)?.into_iter().map(|(_, n)| n));
                }
                Ok(all)
            })
            .await?;
            names
                .into_iter()
                .map(|n| json!({ "type": "string", "value": n }))
                .collect()
        }
        Field::Intrinsic(_) => Vec::new(),
        Field::Attr { scope, key } => {
            let vals = ApiError::blocking(move || {
                let mut all = BTreeMap::new();
                for resource in [false, true] {
                    let wanted = match scope {
                        Scope::Any => true,
                        Scope::Resource => resource,
                        Scope::Span => !resource,
                        _ => false,
                    };
                    if wanted {
                        all.extend(
                            store
                                .attribute_values(resource, &key, limits.max_tag_values)?
                                .into_iter()
                                .map(|v| (v, ())),
                        );
                    }
                }
                Ok(all)
            })
            .await?;
            vals.into_keys().map(|v| json!({ "type": if v.parse::<i64>().is_ok() { "int" } else { "string" }, "value": v })).collect()
        }
    };
    Ok(Json(json!({ "tagValues": values })).into_response())
}

#[cfg(test)]
mod tests;
