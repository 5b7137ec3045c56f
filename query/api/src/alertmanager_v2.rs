//! The built-in Alertmanager's HTTP API: Alertmanager's v2 endpoints with its JSON shapes,
//! status codes and messages (`POST`/`GET /api/v2/alerts`, `GET`/`POST /api/v2/silences`,
//! `GET`/`DELETE /api/v2/silence/{id}`, `GET /api/v2/alerts/groups`, `GET /api/v2/status`,
//! `GET /api/v2/receivers`).
//! Owns request parsing and response shapes; the semantics are `alertmanager::service`'s.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use storage::Labels;

use alertmanager::service::{AlertFilter, AlertView, SilenceView};
use alertmanager::{parse_matchers, Alert, Builtin, Error, Silence, SilenceMatcher};
use gocompat::time::{parse_rfc3339, rfc3339_millis};

/// The v2 API of the built-in Alertmanager `am`.
pub fn routes(am: Builtin) -> Router {
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
        .with_state(am)
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

/// go-swagger's content negotiation on the POST endpoints: the body must be declared
/// `application/json` (no header counts as Go's default, `application/octet-stream`), which
/// also keeps web pages from posting silences or alerts with a plain form. A malformed header
/// is 400, any other type 415, with go-swagger's messages.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = match headers.get(CONTENT_TYPE) {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None => "application/octet-stream".to_owned(),
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params: Vec<&str> = parts.map(str::trim).collect();
    // Go's mime.ParseMediaType: every parameter is `name=value`; one trailing `;` is allowed.
    let trailing = params.len() == 1 && params[0].is_empty();
    let bad_param = !trailing
        && params.iter().any(|p| {
            p.split_once('=')
                .is_none_or(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
        });
    if bad_param {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "message": format!("parsing Content-Type header from {value:?} failed, because mime: invalid media parameter")}),
        ));
    }
    if media != "application/json" {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"code": 415, "message": format!("unsupported media type {media:?}, only [application/json] are allowed")}),
        ));
    }
    Ok(())
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
        Some(Value::String(s)) => parse_rfc3339(s).ok_or_else(|| {
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

async fn post_alerts(State(am): State<Builtin>, headers: HeaderMap, body: Bytes) -> ApiResult {
    require_json(&headers)?;
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
        let ends_at = time_field(o, "endsAt", &format!("{i}."))?;
        alerts.push(Alert {
            labels: Labels::from_pairs(string_map(o.get("labels"), &format!("{i}.labels"))?),
            annotations: string_map(o.get("annotations"), &format!("{i}.annotations"))?,
            starts_at: time_field(o, "startsAt", &format!("{i}."))?,
            ends_at: (ends_at != 0).then_some(ends_at),
            generator_url: match o.get("generatorURL") {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
        });
    }
    match am.post_alerts(alerts) {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e) => Err(string_error(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// The query parameters of the list endpoints: repeated `filter`, the state booleans,
/// `receiver`.
fn list_query(q: Option<String>) -> Result<AlertFilter, ApiError> {
    let mut out = AlertFilter::default();
    // Accepted and validated, as Alertmanager does; nothing is ever unprocessed here.
    let mut unprocessed = true;
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        let flag = match k.as_ref() {
            "filter" => {
                out.matchers.extend(
                    parse_matchers(&v)
                        .map_err(|e| string_error(StatusCode::BAD_REQUEST, e.to_string()))?,
                );
                continue;
            }
            "receiver" => {
                out.receiver = Some(regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                    string_error(
                        StatusCode::BAD_REQUEST,
                        format!("failed to parse receiver param: {e}"),
                    )
                })?);
                continue;
            }
            "active" => &mut out.active,
            "silenced" => &mut out.silenced,
            "inhibited" => &mut out.inhibited,
            "unprocessed" => &mut unprocessed,
            _ => continue,
        };
        *flag = v.parse::<bool>().map_err(|_| {
            swagger_error(601, format!("{k} in query must be of type boolean: {v:?}"))
        })?;
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

/// An alert in the API's gettableAlert shape.
fn alert_json(a: &AlertView) -> Value {
    let mut v = json!({
        "annotations": a.annotations,
        "endsAt": rfc3339_millis(a.ends_at),
        "fingerprint": format!("{:016x}", a.fingerprint),
        "receivers": a.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "startsAt": rfc3339_millis(a.starts_at),
        "status": {
            "inhibitedBy": a.inhibited_by,
            "silencedBy": a.silenced_by,
            "state": if a.active() { "active" } else { "suppressed" },
        },
        "updatedAt": rfc3339_millis(a.updated_at),
        "labels": labels_json(&a.labels),
    });
    if !a.generator_url.is_empty() {
        v["generatorURL"] = Value::String(a.generator_url.clone());
    }
    v
}

async fn get_alerts(State(am): State<Builtin>, RawQuery(q): RawQuery) -> ApiResult {
    let f = list_query(q)?;
    let list = am.alerts(&f).iter().map(alert_json).collect();
    Ok(Json(Value::Array(list)).into_response())
}

async fn get_alert_groups(State(am): State<Builtin>, RawQuery(q): RawQuery) -> ApiResult {
    let f = list_query(q)?;
    let list = am
        .alert_groups(&f)
        .iter()
        .map(|g| {
            json!({
                "alerts": g.alerts.iter().map(alert_json).collect::<Vec<_>>(),
                "labels": labels_json(&g.labels),
                "receiver": {"name": g.receiver},
            })
        })
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

fn silence_json(v: &SilenceView) -> Value {
    let s = &v.silence;
    json!({
        "id": s.id,
        "status": {"state": v.state},
        "updatedAt": rfc3339_millis(s.updated_at),
        "comment": s.comment,
        "createdBy": s.created_by,
        "endsAt": rfc3339_millis(s.ends_at),
        "matchers": s.matchers,
        "startsAt": rfc3339_millis(s.starts_at),
    })
}

async fn get_silences(State(am): State<Builtin>, RawQuery(q): RawQuery) -> ApiResult {
    let f = list_query(q)?;
    let list = am.silences(&f.matchers).iter().map(silence_json).collect();
    Ok(Json(Value::Array(list)).into_response())
}

async fn post_silences(State(am): State<Builtin>, headers: HeaderMap, body: Bytes) -> ApiResult {
    require_json(&headers)?;
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
    match am.set_silence(parsed?) {
        Ok(id) => Ok(Json(json!({"silenceID": id})).into_response()),
        Err(e @ Error::SilenceNotFound(_)) => {
            Err(string_error(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e) => Err(string_error(StatusCode::BAD_REQUEST, e.to_string())),
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

async fn get_silence(State(am): State<Builtin>, Path(id): Path<String>) -> ApiResult {
    check_uuid(&id)?;
    Ok(match am.silence(&id) {
        Some(v) => Json(silence_json(&v)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn delete_silence(State(am): State<Builtin>, Path(id): Path<String>) -> ApiResult {
    check_uuid(&id)?;
    match am.expire_silence(&id) {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        // Alertmanager 0.25 reports an unknown id as a 500.
        Err(e) => Err(string_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

async fn status(State(am): State<Builtin>) -> ApiResult {
    let status = am.status();
    Ok(Json(json!({
        "cluster": {"peers": [], "status": "disabled"},
        "config": {"original": status.original_config},
        "uptime": rfc3339_millis(status.started_at),
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

async fn receivers(State(am): State<Builtin>) -> ApiResult {
    let list = am
        .receivers()
        .into_iter()
        .map(|name| json!({"name": name}))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content_type: Option<&str>) -> Result<(), (u16, Value)> {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(CONTENT_TYPE, ct.parse().unwrap());
        }
        require_json(&h).map_err(|ApiError(s, v)| (s.as_u16(), v))
    }

    /// The answers of Alertmanager 0.25 to the same headers.
    #[test]
    fn post_bodies_must_be_declared_json() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;",
        ] {
            assert_eq!(check(Some(ok)), Ok(()), "{ok}");
        }
        for (ct, media) in [
            (Some("text/plain"), "text/plain"),
            (Some("text/plain; charset=utf-8"), "text/plain"),
            (
                Some("application/x-www-form-urlencoded"),
                "application/x-www-form-urlencoded",
            ),
            (
                Some("multipart/form-data; boundary=x"),
                "multipart/form-data",
            ),
            (Some("bogus"), "bogus"),
            (None, "application/octet-stream"),
        ] {
            let msg =
                format!("unsupported media type {media:?}, only [application/json] are allowed");
            assert_eq!(
                check(ct),
                Err((415, json!({"code": 415, "message": msg}))),
                "{ct:?}"
            );
        }
        assert_eq!(
            check(Some("application/json;;x")),
            Err((
                400,
                json!({"code": 400, "message": "parsing Content-Type header from \"application/json;;x\" failed, because mime: invalid media parameter"})
            ))
        );
    }
}
