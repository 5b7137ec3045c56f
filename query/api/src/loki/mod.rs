//! The Loki HTTP API (`/loki/api/v1/…`) as Grafana's Loki data source uses it: query and
//! query_range (streams, matrix, vector; labels categorized on Grafana's request), labels,
//! label values, series, index stats and volume, the Logs Drilldown's detected fields,
//! field values and labels (`fields`), format_query and buildinfo, with Loki's parameters,
//! JSON shapes and plain-text errors. Owns request handling and response shapes; evaluation is
//! `logql`'s, data is `storage::logs`'s.

mod fields;
mod params;
mod patterns;
mod tail;

use std::collections::BTreeSet;
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value as J};
use storage::Matcher;

use crate::admission::{QueryGate, QueueTimeout};
use crate::handler;
use logql::ast::{Expr, MetricExpr};
use logql::{parse, CategorizedStream, EvalError, LabelMap, LogEngine, Series, Steps, Stream};
use params::{now_ns, Params};

/// The Loki release whose API this mirrors, for Grafana's feature detection.
const LOKI_COMPAT_VERSION: &str = "3.4.2";
const DEFAULT_LIMIT: usize = 100;

#[derive(Clone)]
pub struct LokiState {
    engine: LogEngine,
    gate: QueryGate,
    /// Whether ingest adds `detected_level` (reported to the Logs Drilldown app).
    discover_log_levels: bool,
}

impl LokiState {
    /// Queries (`query`, `query_range`) wait for a slot of `gate`.
    pub fn new(engine: LogEngine, gate: QueryGate) -> LokiState {
        LokiState {
            engine,
            gate,
            discover_log_levels: false,
        }
    }

    /// Says that ingest adds `detected_level` to records (Loki's `discover_log_levels`).
    pub fn with_discover_log_levels(mut self, on: bool) -> LokiState {
        self.discover_log_levels = on;
        self
    }
}

/// An error answer: Loki writes the message as plain text with the status code.
pub(crate) struct LokiError(StatusCode, String);

impl LokiError {
    fn bad(msg: impl Into<String>) -> LokiError {
        LokiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<EvalError> for LokiError {
    fn from(e: EvalError) -> LokiError {
        match e {
            EvalError::Parse(_)
            | EvalError::BadRequest(_)
            | EvalError::TooManyEntries(_)
            | EvalError::EntriesLimit { .. }
            | EvalError::SeriesLimit(_)
            | EvalError::Pipeline(_) => LokiError::bad(e.to_string()),
            EvalError::Storage(s) => LokiError::from(s),
        }
    }
}

impl From<storage::StorageError> for LokiError {
    fn from(e: storage::StorageError) -> LokiError {
        use storage::Classify;
        LokiError(crate::status::http_status(e.class()), e.to_string())
    }
}

/// A query that could not start within the engine's timeout: Loki's status for a timed-out
/// query, with Prometheus's message.
impl From<QueueTimeout> for LokiError {
    fn from(e: QueueTimeout) -> LokiError {
        LokiError(
            crate::status::http_status(storage::ErrorClass::Timeout),
            e.to_string(),
        )
    }
}

impl From<tokio::task::JoinError> for LokiError {
    fn from(e: tokio::task::JoinError) -> LokiError {
        LokiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1 + "\n",
        )
            .into_response()
    }
}

type Handler = fn(&LokiState, &Params) -> Result<J, LokiError>;

pub fn routes(state: LokiState) -> Router {
    Router::new()
        .route("/loki/api/v1/query_range", query_route(query_range))
        .route("/loki/api/v1/query", query_route(query))
        .route("/loki/api/v1/labels", get_post(labels))
        .route("/loki/api/v1/label", get_post(labels))
        .route(
            "/loki/api/v1/label/{name}/values",
            handler::get_with_path(label_values),
        )
        .route("/loki/api/v1/series", get_post(series))
        .route("/loki/api/v1/index/stats", get_post(index_stats))
        .route("/loki/api/v1/index/volume", get_post(volume))
        .route("/loki/api/v1/index/volume_range", get_post(volume_range))
        .route(
            "/loki/api/v1/detected_fields",
            get_post(fields::detected_fields),
        )
        .route("/loki/api/v1/patterns", query_route(patterns::patterns))
        .route(
            "/loki/api/v1/detected_field/{name}/values",
            handler::get_with_path(fields::detected_field_values),
        )
        .route(
            "/loki/api/v1/detected_labels",
            get_post(fields::detected_labels),
        )
        .route(
            "/loki/api/v1/drilldown-limits",
            get_post(fields::drilldown_limits),
        )
        .route("/loki/api/v1/tail", get(tail::tail))
        .route("/loki/api/v1/format_query", get_post(format_query))
        .route("/loki/api/v1/status/buildinfo", get_post(buildinfo))
        .with_state(state)
}

fn get_post(f: Handler) -> MethodRouter<LokiState> {
    handler::get_post(move |s: &LokiState, p: &Params| f(s, p).map(Json))
}

/// A query endpoint: admitted through the query gate (Loki's API has no per-request timeout).
fn query_route(f: Handler) -> MethodRouter<LokiState> {
    handler::get_post_admitted(
        |s: &LokiState, _: &Params| (s.gate.clone(), None),
        move |s: &LokiState, p: &Params| f(s, p).map(Json),
    )
}

fn parse_query(p: &Params) -> Result<Expr, LokiError> {
    parse(p.get("query")).map_err(|e| LokiError::bad(e.to_string()))
}

fn labels_json(l: &LabelMap) -> J {
    J::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), J::String(v.clone())))
            .collect(),
    )
}

fn seconds(t_ns: i64) -> J {
    // Loki prints sample times as seconds with millisecond precision.
    let ms = t_ns.div_euclid(1_000_000);
    serde_json::Number::from_f64(ms as f64 / 1000.0).map_or(J::Null, J::Number)
}

fn sample_value(v: f64) -> J {
    J::String(if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    })
}

fn stats(lines: usize, bytes: usize, started: Instant) -> J {
    let secs = started.elapsed().as_secs_f64();
    let per_sec = |n: usize| {
        if secs > 0.0 {
            (n as f64 / secs) as u64
        } else {
            0
        }
    };
    json!({"summary": {
        "bytesProcessedPerSecond": per_sec(bytes), "linesProcessedPerSecond": per_sec(lines),
        "totalBytesProcessed": bytes, "totalLinesProcessed": lines, "execTime": secs,
        "queueTime": 0, "subqueries": 0, "totalEntriesReturned": lines, "splits": 0, "shards": 0,
        "totalPostFilterLines": lines, "totalStructuredMetadataBytesProcessed": 0
    }})
}

/// Grafana's flag for answers that keep stream labels, structured metadata and parsed labels
/// apart (its log details mark each kind).
const CATEGORIZE_LABELS: &str = "categorize-labels";

/// A categorized streams result: each value `[ts, line, {"structuredMetadata", "parsed"}]`,
/// always three elements (Grafana's reader requires the third once the flag is echoed), each
/// map left out when empty.
fn categorized_streams_json(streams: &[CategorizedStream]) -> (J, usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    let result = streams
        .iter()
        .map(|s| {
            n += s.entries.len();
            bytes += s.entries.iter().map(|e| e.line.len()).sum::<usize>();
            let values: Vec<J> = s
                .entries
                .iter()
                .map(|e| {
                    let mut kinds = serde_json::Map::new();
                    if !e.structured_metadata.is_empty() {
                        kinds.insert(
                            "structuredMetadata".into(),
                            labels_json(&e.structured_metadata),
                        );
                    }
                    if !e.parsed.is_empty() {
                        kinds.insert("parsed".into(), labels_json(&e.parsed));
                    }
                    json!([e.ts_ns.to_string(), e.line, kinds])
                })
                .collect();
            json!({"stream": labels_json(&s.labels), "values": values})
        })
        .collect();
    (J::Array(result), n, bytes)
}

fn streams_json(streams: &[Stream]) -> (J, usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    let result = streams
        .iter()
        .map(|s| {
            n += s.entries.len();
            bytes += s.entries.iter().map(|e| e.1.len()).sum::<usize>();
            let values: Vec<J> = s
                .entries
                .iter()
                .map(|(t, l)| json!([t.to_string(), l]))
                .collect();
            json!({"stream": labels_json(&s.labels), "values": values})
        })
        .collect();
    (J::Array(result), n, bytes)
}

fn matrix_json(series: &[Series]) -> J {
    J::Array(
        series
            .iter()
            .map(|s| {
                let values: Vec<J> = s
                    .points
                    .iter()
                    .map(|(t, v)| json!([seconds(*t), sample_value(*v)]))
                    .collect();
                json!({"metric": labels_json(&s.labels), "values": values})
            })
            .collect(),
    )
}

/// The evaluation steps of a range request: `step` as Loki defaults it from the range.
fn range_steps(p: &Params, start: i64, end: i64) -> Result<Steps, LokiError> {
    Ok(Steps {
        start_ns: start,
        end_ns: end,
        step_ns: p.step(start, end).map_err(LokiError::bad)?,
    })
}

fn matrix_response(series: &[Series], started: Instant) -> J {
    success("matrix", matrix_json(series), stats(0, 0, started))
}

fn success(result_type: &str, result: J, stats: J) -> J {
    json!({"status": "success", "data": {"resultType": result_type, "result": result, "stats": stats}})
}

fn query_range(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let started = Instant::now();
    let expr = parse_query(p)?;
    let (start, end) = p.range().map_err(LokiError::bad)?;
    let limit = p.limit(DEFAULT_LIMIT).map_err(LokiError::bad)?;
    let direction = p.direction().map_err(LokiError::bad)?;
    match expr {
        Expr::Log(log) => {
            let flags = p.encoding_flags();
            let (result, n, bytes) = if flags.iter().any(|f| f == CATEGORIZE_LABELS) {
                let streams = s
                    .engine
                    .select_logs_categorized(&log, start, end, limit, direction)?;
                categorized_streams_json(&streams)
            } else {
                streams_json(&s.engine.select_logs(&log, start, end, limit, direction)?)
            };
            let mut answer = success("streams", result, stats(n, bytes, started));
            if !flags.is_empty() {
                answer["data"]["encodingFlags"] = json!(flags);
            }
            Ok(answer)
        }
        Expr::Metric(m) => {
            let series = s.engine.eval_metric(&m, range_steps(p, start, end)?)?;
            Ok(matrix_response(&series, started))
        }
    }
}

fn query(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let started = Instant::now();
    let expr = parse_query(p)?;
    let t = p.time_or("time", now_ns()).map_err(LokiError::bad)?;
    match expr {
        Expr::Log(_) => Err(LokiError::bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        )),
        Expr::Metric(MetricExpr::Literal(v)) => {
            Ok(success("scalar", json!([seconds(t), sample_value(v)]), stats(0, 0, started)))
        }
        Expr::Metric(m) => {
            let series = s.engine.eval_metric(&m, Steps { start_ns: t, end_ns: t, step_ns: 1 })?;
            let result: Vec<J> = series
                .iter()
                .filter_map(|s| s.points.last().map(|(t, v)| json!({"metric": labels_json(&s.labels), "value": [seconds(*t), sample_value(*v)]})))
                .collect();
            Ok(success("vector", J::Array(result), stats(0, 0, started)))
        }
    }
}

/// The stream selector of the optional `query` parameter (metadata endpoints).
fn selector(p: &Params, name: &str) -> Result<Vec<Matcher>, LokiError> {
    match p.get(name) {
        "" => Ok(Vec::new()),
        q => match parse(q).map_err(|e| LokiError::bad(e.to_string()))? {
            Expr::Log(l) => Ok(l.matchers),
            Expr::Metric(_) => Err(LokiError::bad("only stream selectors are accepted here")),
        },
    }
}

/// Loki's metadata endpoints default to the last 6 hours.
fn metadata_range(p: &Params) -> Result<(i64, i64), LokiError> {
    let end = p.time_or("end", now_ns()).map_err(LokiError::bad)?;
    let start = p
        .time_or("start", end - 6 * 3_600 * 1_000_000_000)
        .map_err(LokiError::bad)?;
    Ok((start, end))
}

fn labels(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    let names = s.engine.label_names(&selector(p, "query")?, start, end)?;
    Ok(json!({"status": "success", "data": names}))
}

fn label_values(s: &LokiState, p: &Params, name: &str) -> Result<Json<J>, LokiError> {
    let (start, end) = metadata_range(p)?;
    let values = s
        .engine
        .label_values(name, &selector(p, "query")?, start, end)?;
    Ok(Json(json!({"status": "success", "data": values})))
}

fn series(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    let mut found = BTreeSet::new();
    let selectors: Vec<&str> = p.all("match[]").chain(p.all("match")).collect();
    if selectors.is_empty() {
        return Err(LokiError::bad("at least one match[] argument required"));
    }
    for sel in selectors {
        let matchers = match parse(sel).map_err(|e| LokiError::bad(e.to_string()))? {
            Expr::Log(l) => l.matchers,
            Expr::Metric(_) => {
                return Err(LokiError::bad(
                    "only stream selectors are accepted in match[]",
                ))
            }
        };
        found.extend(s.engine.series(&matchers, start, end)?);
    }
    let data: Vec<J> = found
        .iter()
        .map(|l| {
            J::Object(
                l.iter()
                    .map(|l| (l.name.clone(), J::String(l.value.clone())))
                    .collect(),
            )
        })
        .collect();
    Ok(json!({"status": "success", "data": data}))
}

/// Streams, entries and bytes selected by `query` in [start, end].
fn index_stats(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = metadata_range(p)?;
    let st = s.engine.index_stats(selector(p, "query")?, start, end)?;
    Ok(
        json!({"streams": st.streams, "chunks": st.chunks, "entries": st.entries, "bytes": st.bytes}),
    )
}

/// Bytes per group in each step (`targetLabels`, else the selector's label names).
fn volume_series(
    s: &LokiState,
    p: &Params,
    steps: Option<Steps>,
) -> Result<Vec<Series>, LokiError> {
    let (start, end) = metadata_range(p)?;
    let targets: Vec<String> = match p.get("targetLabels") {
        "" => Vec::new(),
        t => t.split(',').map(str::to_owned).collect(),
    };
    let limit = p.limit(100).map_err(LokiError::bad)?;
    Ok(s.engine
        .volume(selector(p, "query")?, targets, start, end, steps, limit)?)
}

fn volume(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let started = Instant::now();
    let series = volume_series(s, p, None)?;
    let result: Vec<J> = series
        .iter()
        .filter_map(|s| s.points.last().map(|(t, v)| json!({"metric": labels_json(&s.labels), "value": [seconds(*t), sample_value(*v)]})))
        .collect();
    Ok(success("vector", J::Array(result), stats(0, 0, started)))
}

fn volume_range(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let started = Instant::now();
    let (start, end) = metadata_range(p)?;
    let series = volume_series(s, p, Some(range_steps(p, start, end)?))?;
    Ok(matrix_response(&series, started))
}

fn format_query(_: &LokiState, p: &Params) -> Result<J, LokiError> {
    let expr = parse_query(p)?;
    Ok(json!({"status": "success", "data": expr.to_string()}))
}

fn buildinfo(_: &LokiState, _: &Params) -> Result<J, LokiError> {
    Ok(json!({
        "version": LOKI_COMPAT_VERSION, "revision": "", "branch": "", "buildUser": "novamon",
        "buildDate": "", "goVersion": ""
    }))
}
