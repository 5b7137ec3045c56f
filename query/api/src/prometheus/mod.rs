//! The Prometheus HTTP API (`/api/v1/…`) as Grafana's Prometheus data source and promtool
//! use it: same parameters, JSON shapes, error types and status codes as Prometheus 3.
//! Owns request handling and response shapes; evaluation is the engine's, data is the TSDB's.

pub mod federate;
mod json;
mod params;
mod response;
mod rules;
mod targets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::MethodRouter;
use axum::Router;
use serde::Serialize;
use storage::{ExemplarQuerier, LabelQuerier};

use self::params::{Params, MAX_TIME, MIN_TIME};
use self::response::{json_response, success, ApiError, ApiResult};
use self::rules::{self as rules_api, RulesFilter};
use crate::admission::QueryGate;
use crate::handler;
use ::rules::RuleManager;
use promql::Engine;
pub use targets::{ActiveTarget, DroppedTarget, ScrapeTargets};

/// Facts about the running server that the status endpoints report.
pub struct ServerInfo {
    pub start_time: SystemTime,
    pub cwd: String,
    /// The effective configuration, rendered as YAML.
    pub config_yaml: String,
    pub storage_retention: String,
    pub flags: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct ApiState {
    engine: Arc<Engine>,
    store: Arc<dyn LabelQuerier>,
    exemplars: Option<Arc<dyn ExemplarQuerier>>,
    info: Arc<ServerInfo>,
    rules: Option<Arc<RuleManager>>,
    targets: Option<Arc<dyn ScrapeTargets>>,
    gate: QueryGate,
}

impl ApiState {
    /// Queries (`/api/v1/query`, `/api/v1/query_range`) wait for a slot of `gate`.
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn LabelQuerier>,
        info: ServerInfo,
        gate: QueryGate,
    ) -> ApiState {
        ApiState {
            engine,
            store,
            exemplars: None,
            info: Arc::new(info),
            rules: None,
            targets: None,
            gate,
        }
    }

    /// Serves `/api/v1/rules` and `/api/v1/alerts` from this manager (empty lists without).
    pub fn with_rules(mut self, rules: Arc<RuleManager>) -> ApiState {
        self.rules = Some(rules);
        self
    }

    /// The store behind `/api/v1/query_exemplars` (empty answers without one).
    pub fn with_exemplars(mut self, exemplars: Arc<dyn ExemplarQuerier>) -> ApiState {
        self.exemplars = Some(exemplars);
        self
    }

    /// The scraper behind `/api/v1/targets` and friends (empty lists without one).
    pub fn with_targets(mut self, targets: Arc<dyn ScrapeTargets>) -> ApiState {
        self.targets = Some(targets);
        self
    }
}

/// The version Grafana sees: a Prometheus 3 release, so it enables every feature we serve.
const PROMETHEUS_COMPAT_VERSION: &str = "3.1.0";
/// Prometheus refuses range queries with more points than this per series.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/query", query_route(instant_query))
        .route("/api/v1/query_range", query_route(range_query))
        .route("/api/v1/query_exemplars", get_post(query_exemplars))
        .route("/api/v1/format_query", get_post(format_query))
        .route("/api/v1/parse_query", get_post(parse_query))
        .route("/api/v1/series", get_post(series))
        .route("/api/v1/labels", get_post(label_names))
        .route(
            "/api/v1/label/{name}/values",
            handler::get_with_path(label_values),
        )
        .route("/api/v1/metadata", get_post(metadata))
        .route("/api/v1/status/buildinfo", get_post(buildinfo))
        .route("/api/v1/status/runtimeinfo", get_post(runtimeinfo))
        .route("/api/v1/status/flags", get_post(flags))
        .route("/api/v1/status/config", get_post(config))
        .route("/api/v1/status/tsdb", get_post(tsdb_status))
        .route("/api/v1/rules", get_post(rules))
        .route("/api/v1/alerts", get_post(alerts))
        .route("/api/v1/targets", get_post(targets::targets))
        .route("/api/v1/scrape_pools", get_post(targets::scrape_pools))
        .route("/api/v1/targets/metadata", get_post(targets::metadata))
        .with_state(state)
}

type Handler = fn(&ApiState, &Params) -> ApiResult;

fn get_post(f: Handler) -> MethodRouter<ApiState> {
    handler::get_post(f)
}

/// A query endpoint: admitted through the query gate, waiting no longer than the request's
/// `timeout` (a malformed one is reported by the query itself).
fn query_route(f: Handler) -> MethodRouter<ApiState> {
    handler::get_post_admitted(
        |s: &ApiState, p: &Params| (s.gate.clone(), p.timeout().ok()),
        f,
    )
}

fn instant_query(s: &ApiState, p: &Params) -> ApiResult {
    let t = p.time_or("time", now_ms())?;
    let timeout = p.timeout()?;
    let res = s
        .engine
        .instant_query_with_timeout(p.get("query"), t, timeout)
        .map_err(ApiError::from_query)?;
    Ok(json_response(StatusCode::OK, json::query_result(&res)))
}

fn range_query(s: &ApiState, p: &Params) -> ApiResult {
    let start = p.time("start")?;
    let end = p.time("end")?;
    if end < start {
        return Err(ApiError::invalid_param(
            "end",
            "end timestamp must not be before start time".into(),
        ));
    }
    let step = p.duration("step")?;
    if step <= 0 {
        return Err(ApiError::invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let timeout = p.timeout()?;
    let res = s
        .engine
        .range_query_with_timeout(p.get("query"), (start, end, step), timeout)
        .map_err(ApiError::from_query)?;
    Ok(json_response(StatusCode::OK, json::query_result(&res)))
}

/// Prometheus's `queryExemplars`: the exemplars in [start, end] of the series any selector of
/// the query matches. A query without selectors gets Prometheus's answer to a handler that
/// returns no data: 204 and no body.
fn query_exemplars(s: &ApiState, p: &Params) -> ApiResult {
    let start = p.time_or("start", MIN_TIME)?;
    let end = p.time_or("end", MAX_TIME)?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start timestamp",
        ));
    }
    let expr = params::parse_promql(p.get("query")).map_err(ApiError::bad_data)?;
    let selectors = params::extract_selectors(&expr).map_err(ApiError::bad_data)?;
    if selectors.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let found = match &s.exemplars {
        Some(store) => store.select_exemplars(start, end, &selectors)?,
        None => Vec::new(),
    };
    Ok(json_response(StatusCode::OK, json::exemplars(&found)))
}

/// Syntax promql-parser rejects but the engine accepts is printed by the engine's parse step;
/// anything that does not parse there either keeps promql-parser's error.
fn format_query(_: &ApiState, p: &Params) -> ApiResult {
    let query = p.get("query");
    match params::parse_promql(query) {
        Ok(expr) => Ok(success(expr.prettify(), vec![])),
        Err(e) => match promql::format_extended(query) {
            Some(printed) => Ok(success(printed, vec![])),
            None => Err(ApiError::invalid_param("query", e)),
        },
    }
}

fn parse_query(_: &ApiState, p: &Params) -> ApiResult {
    let expr =
        params::parse_promql(p.get("query")).map_err(|e| ApiError::invalid_param("query", e))?;
    Ok(success(expr, vec![]))
}

/// Range parameters of the metadata endpoints: `start`/`end` default to all time.
fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((p.time_or("start", MIN_TIME)?, p.time_or("end", MAX_TIME)?))
}

/// Applies `limit` as Prometheus does: truncate and warn.
fn truncate<T>(mut items: Vec<T>, limit: Option<usize>) -> (Vec<T>, Vec<String>) {
    match limit {
        Some(n) if items.len() > n => {
            items.truncate(n);
            (items, vec!["results truncated due to limit".to_owned()])
        }
        _ => (items, vec![]),
    }
}

fn series(s: &ApiState, p: &Params) -> ApiResult {
    let limit = p.limit()?;
    let (start, end) = time_range(p)?;
    let sets = p.match_sets()?;
    if sets.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let (found, warnings) = truncate(s.store.series(&sets, start, end)?, limit);
    let mut out = String::from(r#"{"status":"success","data":["#);
    for (i, labels) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_labels(&mut out, labels);
    }
    out.push(']');
    if !warnings.is_empty() {
        out.push_str(r#","warnings":"#);
        out.push_str(&serde_json::to_string(&warnings).map_err(ApiError::internal)?);
    }
    out.push('}');
    Ok(json_response(StatusCode::OK, out))
}

fn label_names(s: &ApiState, p: &Params) -> ApiResult {
    let limit = p.limit()?;
    let (start, end) = time_range(p)?;
    let names = s.store.label_names(&p.match_sets()?, start, end)?;
    let (names, warnings) = truncate(names, limit);
    Ok(success(names, warnings))
}

fn label_values(s: &ApiState, p: &Params, name: &str) -> ApiResult {
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let limit = p.limit()?;
    let (start, end) = time_range(p)?;
    let values = s.store.label_values(name, &p.match_sets()?, start, end)?;
    let (values, warnings) = truncate(values, limit);
    Ok(success(values, warnings))
}

fn metadata(s: &ApiState, p: &Params) -> ApiResult {
    #[derive(Serialize)]
    struct Entry<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        help: &'a str,
        unit: &'a str,
    }
    let limit = p.limit()?;
    let metric = p.get("metric");
    let all = s.store.metadata()?;
    let mut out: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for (name, md) in all.iter().filter(|(n, _)| metric.is_empty() || n == metric) {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        out.entry(name).or_default().push(Entry {
            kind: &md.kind,
            help: &md.help,
            unit: &md.unit,
        });
    }
    Ok(success(out, vec![]))
}

fn buildinfo(_: &ApiState, _: &Params) -> ApiResult {
    Ok(success(
        serde_json::json!({
            "version": PROMETHEUS_COMPAT_VERSION,
            "revision": concat!("novamon-", env!("CARGO_PKG_VERSION")),
            "branch": "novamon",
            "buildUser": "novamon",
            "buildDate": "",
            "goVersion": "rust",
        }),
        vec![],
    ))
}

fn runtimeinfo(s: &ApiState, _: &Params) -> ApiResult {
    let start: chrono::DateTime<chrono::Utc> = s.info.start_time.into();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Ok(success(
        serde_json::json!({
            "startTime": start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "CWD": s.info.cwd,
            "reloadConfigSuccess": true,
            "lastConfigTime": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "corruptionCount": 0,
            "goroutineCount": 0,
            "GOMAXPROCS": threads,
            "GOMEMLIMIT": 0,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": s.info.storage_retention,
        }),
        vec![],
    ))
}

fn flags(s: &ApiState, _: &Params) -> ApiResult {
    Ok(success(&s.info.flags, vec![]))
}

fn config(s: &ApiState, _: &Params) -> ApiResult {
    Ok(success(
        serde_json::json!({ "yaml": s.info.config_yaml }),
        vec![],
    ))
}

fn tsdb_status(s: &ApiState, p: &Params) -> ApiResult {
    #[derive(Serialize)]
    struct Stat<'a> {
        name: &'a str,
        value: u64,
    }
    fn stats(v: &[(String, u64)]) -> Vec<Stat<'_>> {
        v.iter()
            .map(|(name, value)| Stat {
                name,
                value: *value,
            })
            .collect()
    }
    let limit = p.limit()?.unwrap_or(10);
    let st = s.store.status(limit);
    Ok(success(
        serde_json::json!({
            "headStats": {
                "numSeries": st.num_series,
                "numLabelPairs": st.num_label_pairs,
                "chunkCount": st.chunk_count,
                "minTime": st.min_time,
                "maxTime": st.max_time,
            },
            "seriesCountByMetricName": stats(&st.series_count_by_metric_name),
            "labelValueCountByLabelName": stats(&st.label_value_count_by_label_name),
            "memoryInBytesByLabelName": stats(&st.memory_in_bytes_by_label_name),
            "seriesCountByLabelValuePair": stats(&st.series_count_by_label_value_pair),
        }),
        vec![],
    ))
}

fn rules(s: &ApiState, p: &Params) -> ApiResult {
    let (alerting, recording) = match p.get("type").to_ascii_lowercase().as_str() {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => {
            return Err(ApiError::invalid_param(
                "type",
                format!("not supported value {other:?}"),
            ))
        }
    };
    let exclude_alerts = match p.get("exclude_alerts") {
        "" | "false" => false,
        "true" => true,
        other => {
            return Err(ApiError::invalid_param(
                "exclude_alerts",
                format!("strconv.ParseBool: parsing {other:?}: invalid syntax"),
            ))
        }
    };
    let filter = RulesFilter {
        alerting,
        recording,
        rule_names: p.all("rule_name[]").map(str::to_owned).collect(),
        // Prometheus names it `rule_group[]`; `group_name[]` is accepted as well.
        group_names: p
            .all("rule_group[]")
            .chain(p.all("group_name[]"))
            .map(str::to_owned)
            .collect(),
        files: p.all("file[]").map(str::to_owned).collect(),
        exclude_alerts,
    };
    Ok(match &s.rules {
        Some(m) => success(rules_api::rules(m, &filter), vec![]),
        None => success(serde_json::json!({ "groups": [] }), vec![]),
    })
}

fn alerts(s: &ApiState, _: &Params) -> ApiResult {
    Ok(match &s.rules {
        Some(m) => success(rules_api::alerts(m), vec![]),
        None => success(serde_json::json!({ "alerts": [] }), vec![]),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
