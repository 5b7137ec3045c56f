//! The built-in Alertmanager's HTTP API: Alertmanager's v2 endpoints with its JSON shapes,
//! status codes and messages (`POST`/`GET /api/v2/alerts`, `GET`/`POST /api/v2/silences`,
//! `GET`/`DELETE /api/v2/silence/{id}`, `GET /api/v2/alerts/groups`, `GET /api/v2/status`,
//! `GET /api/v2/receivers`).
//! Owns request parsing and response shapes; the semantics are the other modules'.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use storage::Labels;

use super::silence::{SetError, Silence, SilenceMatcher};
use super::{fingerprint, matchers, parse_time, rfc3339_millis, AmAlert, Core};

pub(crate) fn routes(core: Arc<Core>) -> Router {
    Router::new()
        .route("/api/v2/alerts", get(get_alerts).post(post_alerts))
        .route("/api/v2/alerts/groups", get(get_alert_groups))
        .route("/api/v2/silences", get(get_silences).post(post_silences))
        .route(
            "/api/v2/silence/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .with_state(core)
}

/// An error answer: status and JSON body.
struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// go-swagger's validation error: 422 with a code and message.
fn swagger_error(code: u16, message: String) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"code": code, "message": message}),
    )
}

/// A handler's error payload: a bare JSON string.
fn string_error(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, Value::String(msg.into()))
}

fn parse_body(body: &Bytes, what: &str) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "message": format!("parsing {what} body from \"\" failed, because {e}")}),
        )
    })
}

fn string_map(v: Option<&Value>, field: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(swagger_error(
                    602,
                    format!("{field}.{k} in body must be of type string"),
                )),
            })
            .collect(),
        Some(_) => Err(swagger_error(
            602,
            format!("{field} in body must be of type object"),
        )),
    }
}

fn time_field(o: &Map<String, Value>, field: &str, prefix: &str) -> Result<i64, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => parse_time(s).map_err(|_| {
            swagger_error(
                602,
                format!("{prefix}{field} in body must be of type date-time: {s:?}"),
            )
        }),
        Some(_) => Err(swagger_error(
            602,
            format!("{prefix}{field} in body must be of type date-time"),
        )),
    }
}

async fn post_alerts(State(core): State<Arc<Core>>, body: Bytes) -> ApiResult {
    let v = parse_body(&body, "alerts")?;
    let Value::Array(items) = v else {
        return Err(swagger_error(
            602,
            "alerts in body must be of type array".into(),
        ));
    };
    let mut alerts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(swagger_error(
                602,
                format!("{i} in body must be of type object"),
            ));
        };
        if !o.contains_key("labels") {
            return Err(swagger_error(
                602,
                format!("{i}.labels in body is required"),
            ));
        }
        let parsed = (|| {
            Ok::<_, ApiError>(AmAlert {
                labels: Labels::from_pairs(string_map(o.get("labels"), &format!("{i}.labels"))?),
                annotations: string_map(o.get("annotations"), &format!("{i}.annotations"))?,
                starts_at: time_field(o, "startsAt", &format!("{i}."))?,
                ends_at: time_field(o, "endsAt", &format!("{i}."))?,
                generator_url: match o.get("generatorURL") {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                },
                updated_at: 0,
                timeout: false,
            })
        })();
        alerts.push(parsed?);
    }
    let now = core.now();
    match core.put_alerts(alerts, now) {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e) => Err(string_error(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// The query parameters of the list endpoints: repeated `filter`, booleans, `receiver`.
struct ListQuery {
    filter: Vec<storage::Matcher>,
    flags: BTreeMap<String, bool>,
    receiver: Option<regex::Regex>,
}

fn list_query(q: Option<String>) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery {
        filter: Vec::new(),
        flags: BTreeMap::new(),
        receiver: None,
    };
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "filter" => out
                .filter
                .extend(matchers::parse(&v).map_err(|e| string_error(StatusCode::BAD_REQUEST, e))?),
            "receiver" => {
                out.receiver = Some(regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                    string_error(
                        StatusCode::BAD_REQUEST,
                        format!("failed to parse receiver param: {e}"),
                    )
                })?)
            }
            "active" | "silenced" | "inhibited" | "unprocessed" => {
                let b = v.parse::<bool>().map_err(|_| {
                    swagger_error(601, format!("{k} in query must be of type boolean: {v:?}"))
                })?;
                out.flags.insert(k.into_owned(), b);
            }
            _ => {}
        }
    }
    Ok(out)
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

impl ListQuery {
    fn flag(&self, k: &str) -> bool {
        self.flags.get(k).copied().unwrap_or(true)
    }
}

/// An alert in the API's gettableAlert shape, or `None` when the filter or the state flags
/// leave it out.
fn alert_json(
    core: &Core,
    q: &ListQuery,
    a: &AmAlert,
    receivers: &[&str],
    firing: &[AmAlert],
    now: i64,
) -> Option<Value> {
    if !matchers::all_match(&q.filter, &a.labels) {
        return None;
    }
    let (silenced, inhibited) = core.mutes(&a.labels, firing, now);
    let active = silenced.is_empty() && inhibited.is_empty();
    if (!q.flag("active") && active)
        || (!q.flag("silenced") && !silenced.is_empty())
        || (!q.flag("inhibited") && !inhibited.is_empty())
    {
        return None;
    }
    let mut v = json!({
        "annotations": a.annotations,
        "endsAt": rfc3339_millis(a.ends_at),
        "fingerprint": format!("{:016x}", fingerprint(&a.labels)),
        "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "startsAt": rfc3339_millis(a.starts_at),
        "status": {
            "inhibitedBy": inhibited,
            "silencedBy": silenced,
            "state": if active { "active" } else { "suppressed" },
        },
        "updatedAt": rfc3339_millis(a.updated_at),
        "labels": labels_json(&a.labels),
    });
    if !a.generator_url.is_empty() {
        v["generatorURL"] = Value::String(a.generator_url.clone());
    }
    Some(v)
}

fn receiver_matches(q: &ListQuery, r: &str) -> bool {
    q.receiver.as_ref().is_none_or(|re| re.is_match(r))
}

async fn get_alerts(State(core): State<Arc<Core>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = list_query(q)?;
    let now = core.now();
    let firing = core.firing_alerts(now);
    let mut out: Vec<(u64, Value)> = Vec::new();
    let config = core.config();
    for a in &firing {
        let routes = config.route.matching(&a.labels);
        let receivers: Vec<&str> = routes.iter().map(|r| r.receiver.as_str()).collect();
        if !receivers.iter().any(|r| receiver_matches(&q, r)) {
            continue;
        }
        if let Some(v) = alert_json(&core, &q, a, &receivers, &firing, now) {
            out.push((fingerprint(&a.labels), v));
        }
    }
    out.sort_by_key(|(fp, _)| *fp);
    Ok(Json(Value::Array(out.into_iter().map(|(_, v)| v).collect())).into_response())
}

/// The dispatcher's aggregation groups with their unresolved alerts (Grafana's alert list
/// reads this), sorted by group labels then receiver as Alertmanager sorts them.
async fn get_alert_groups(State(core): State<Arc<Core>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = list_query(q)?;
    let now = core.now();
    let firing = core.firing_alerts(now);
    let groups: Vec<_> = core
        .groups
        .snapshot()
        .into_iter()
        .filter(|(receiver, _, _)| receiver_matches(&q, receiver))
        .collect();
    let mut receivers_of: HashMap<u64, Vec<&str>> = HashMap::new();
    for (receiver, _, alerts) in &groups {
        for a in alerts {
            receivers_of
                .entry(fingerprint(&a.labels))
                .or_default()
                .push(receiver);
        }
    }
    let mut out = Vec::new();
    for (receiver, labels, alerts) in &groups {
        let mut alerts: Vec<AmAlert> = alerts
            .iter()
            .filter(|a| !a.resolved_at(now))
            .cloned()
            .collect();
        super::notify::sort_alerts(&mut alerts);
        let list: Vec<Value> = alerts
            .iter()
            .filter_map(|a| {
                let receivers = receivers_of
                    .get(&fingerprint(&a.labels))
                    .map_or(&[][..], |r| r);
                alert_json(&core, &q, a, receivers, &firing, now)
            })
            .collect();
        if list.is_empty() {
            continue;
        }
        out.push((
            labels.clone(),
            receiver.clone(),
            json!({
                "alerts": list,
                "labels": labels_json(labels),
                "receiver": {"name": receiver},
            }),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok(Json(Value::Array(out.into_iter().map(|(_, _, v)| v).collect())).into_response())
}

fn silence_json(s: &Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now).as_str()},
        "updatedAt": rfc3339_millis(s.updated_at),
        "comment": s.comment,
        "createdBy": s.created_by,
        "endsAt": rfc3339_millis(s.ends_at),
        "matchers": s.matchers,
        "startsAt": rfc3339_millis(s.starts_at),
    })
}

async fn get_silences(State(core): State<Arc<Core>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = list_query(q)?;
    let now = core.now();
    let list: Vec<Value> = core
        .silences
        .list(now)
        .iter()
        .filter(|s| q.filter.iter().all(|f| silence_has_matcher(s, f)))
        .map(|s| silence_json(s, now))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

/// Alertmanager's silence filter: a silence is listed when, for each filter matcher, one of
/// its own matchers on that label equal-matches the filter's value.
fn silence_has_matcher(s: &Silence, f: &storage::Matcher) -> bool {
    s.matchers
        .iter()
        .any(|m| m.name == f.name && f.matches(&m.value))
}

async fn post_silences(State(core): State<Arc<Core>>, body: Bytes) -> ApiResult {
    let v = parse_body(&body, "silence")?;
    let Value::Object(o) = v else {
        return Err(swagger_error(
            602,
            "silence in body must be of type object".into(),
        ));
    };
    for f in ["comment", "createdBy", "endsAt", "matchers", "startsAt"] {
        if !o.contains_key(f) {
            return Err(swagger_error(602, format!("{f} in body is required")));
        }
    }
    let text = |f: &str| match o.get(f) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(swagger_error(
            602,
            format!("{f} in body must be of type string"),
        )),
    };
    let parsed = (|| {
        let Some(Value::Array(ms)) = o.get("matchers") else {
            return Err(swagger_error(
                602,
                "matchers in body must be of type array".into(),
            ));
        };
        let mut matchers = Vec::new();
        for (i, m) in ms.iter().enumerate() {
            for f in ["isRegex", "name", "value"] {
                if m.get(f).is_none() {
                    return Err(swagger_error(
                        602,
                        format!("matchers.{i}.{f} in body is required"),
                    ));
                }
            }
            let m: SilenceMatcher = serde_json::from_value(m.clone())
                .map_err(|e| swagger_error(602, format!("matchers.{i} in body is invalid: {e}")))?;
            matchers.push(m);
        }
        Ok(Silence {
            id: match o.get("id") {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
            matchers,
            starts_at: time_field(&o, "startsAt", "")?,
            ends_at: time_field(&o, "endsAt", "")?,
            updated_at: 0,
            created_by: text("createdBy")?,
            comment: text("comment")?,
        })
    })();
    let s = parsed?;
    let now = core.now();
    if s.starts_at >= s.ends_at {
        return Err(string_error(
            StatusCode::BAD_REQUEST,
            "Failed to create silence: start time must be before end time",
        ));
    }
    if s.ends_at < now {
        return Err(string_error(
            StatusCode::BAD_REQUEST,
            "Failed to create silence: end time can't be in the past",
        ));
    }
    let res = core.silences.set(s, now);
    match res {
        Ok(id) => {
            core.persist();
            Ok(Json(json!({"silenceID": id})).into_response())
        }
        Err(SetError::NotFound) => Err(string_error(
            StatusCode::NOT_FOUND,
            SetError::NotFound.to_string(),
        )),
        Err(SetError::Invalid(m)) => Err(string_error(StatusCode::BAD_REQUEST, m)),
    }
}

/// Silence ids are UUIDs; go-swagger rejects anything else before the handler runs.
fn check_uuid(id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(swagger_error(
            601,
            format!("silenceID in path must be of type uuid: {id:?}"),
        ))
    }
}

async fn get_silence(State(core): State<Arc<Core>>, Path(id): Path<String>) -> ApiResult {
    check_uuid(&id)?;
    Ok(match core.silences.get(&id) {
        Some(s) => Json(silence_json(&s, core.now())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn delete_silence(State(core): State<Arc<Core>>, Path(id): Path<String>) -> ApiResult {
    check_uuid(&id)?;
    match core.silences.expire(&id, core.now()) {
        Ok(()) => {
            core.persist();
            Ok(StatusCode::OK.into_response())
        }
        // Alertmanager 0.25 reports an unknown id as a 500.
        Err(e) => Err(string_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

async fn status(State(core): State<Arc<Core>>) -> ApiResult {
    Ok(Json(json!({
        "cluster": {"peers": [], "status": "disabled"},
        "config": {"original": core.config().original},
        "uptime": rfc3339_millis(core.started_at),
        "versionInfo": {
            "branch": "novamon",
            "buildDate": "",
            "buildUser": "",
            "goVersion": "",
            "revision": "",
            "version": env!("CARGO_PKG_VERSION"),
        },
    }))
    .into_response())
}

async fn receivers(State(core): State<Arc<Core>>) -> ApiResult {
    let list: Vec<Value> = core
        .config()
        .receivers
        .iter()
        .map(|r| json!({"name": r.name}))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}
