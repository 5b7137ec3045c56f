//! A Pushgateway on the HTTP port, for batch jobs that cannot be scraped: `PUT`/`POST`/`DELETE
//! /metrics/job/<job>{/<label>/<value>}` (and the `@base64` forms), text or delimited protobuf
//! bodies (gzip allowed), `PUT /api/v1/admin/wipe`. Pushed groups are stored durably
//! ([`PushStore`]) and exposed to queries as Prometheus scraping a Pushgateway with
//! `honor_labels: true` would store them: every group's samples appended at each scrape
//! interval (and right after each push), with staleness markers for series a push or a delete
//! removed.
//!
//! - `grouping`: the grouping key in the path. `body`: the two body formats. `store`: the
//!   groups, their consistency and their file.
//!
//! Owns the push endpoints and the exposure loop; the listing (`GET /api/v1/metrics`) is
//! `query/api`'s, over [`PushStore::groups`].

mod body;
mod grouping;
mod store;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{put, MethodRouter};
use axum::Router;
use storage::{AppendMode, Appendable, Label, Labels, Sample, SeriesBatch};
use tokio::sync::Notify;

pub use body::{Family, Kind, PushedSample};
pub use store::{Group, PushError, PushStore};

/// The push endpoints' state.
#[derive(Clone)]
pub struct PushState {
    store: Arc<PushStore>,
    /// Largest body, as sent and after gzip.
    max_bytes: usize,
    pushed: Arc<Notify>,
}

impl PushState {
    pub fn new(store: Arc<PushStore>, max_bytes: usize) -> PushState {
        PushState {
            store,
            max_bytes,
            pushed: Arc::new(Notify::new()),
        }
    }
}

pub fn routes(state: PushState) -> Router {
    let limit = state.max_bytes;
    let handler = |base64: bool| -> MethodRouter<PushState> {
        let h = move |s: State<PushState>,
                      m: Method,
                      p: Path<Vec<(String, String)>>,
                      h: HeaderMap,
                      b: Bytes| { handle(s, m, p, h, b, base64) };
        put(h).post(h).delete(h)
    };
    Router::new()
        .route("/metrics/job/{job}", handler(false))
        .route("/metrics/job/{job}/{*labels}", handler(false))
        .route("/metrics/job@base64/{job}", handler(true))
        .route("/metrics/job@base64/{job}/{*labels}", handler(true))
        .route("/api/v1/admin/wipe", put(wipe))
        // The body as sent may be gzip: a little more than the limit is still worth reading.
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .with_state(state)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `http.Error`'s shape: the text and a newline.
fn text(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, format!("{msg}\n")).into_response()
}

async fn handle(
    State(s): State<PushState>,
    method: Method,
    Path(params): Path<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
    job_base64: bool,
) -> Response {
    let param = |n: &str| {
        params
            .iter()
            .find(|(k, _)| k == n)
            .map_or("", |(_, v)| v.as_str())
    };
    let key = match grouping::parse(param("job"), job_base64, param("labels")) {
        Ok(k) => k,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let store = s.store.clone();
    if method == Method::DELETE {
        let done = tokio::task::spawn_blocking(move || store.delete(&key)).await;
        return match done {
            Ok(Ok(())) => {
                s.pushed.notify_one();
                StatusCode::ACCEPTED.into_response()
            }
            Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, e),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    }
    if body.len() > s.max_bytes {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let replace = method == Method::PUT;
    let max = s.max_bytes;
    let done = tokio::task::spawn_blocking(move || {
        let raw;
        let bytes: &[u8] = if gzip {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("gzip: {e}")))?;
            if out.len() > max {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large".into(),
                ));
            }
            raw = out;
            &raw
        } else {
            &body
        };
        let decoded = body::decode(bytes, content_type.as_deref())
            .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        store
            .push(key, decoded, replace, now_ms())
            .map_err(|e| match e {
                PushError::Inconsistent(_) => (StatusCode::BAD_REQUEST, e.to_string()),
                PushError::Persist(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            })
    })
    .await;
    match done {
        Ok(Ok(())) => {
            s.pushed.notify_one();
            StatusCode::OK.into_response()
        }
        Ok(Err((status, e))) => {
            // A refused push still changed the group's failure time.
            s.pushed.notify_one();
            text(status, e)
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn wipe(State(s): State<PushState>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.wipe()).await {
        Ok(Ok(())) => {
            s.pushed.notify_one();
            StatusCode::ACCEPTED.into_response()
        }
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Every group's series as a scrape of the Pushgateway with `honor_labels: true` stores them:
/// the pushed labels with the grouping key's, `push_time_seconds` and
/// `push_failure_time_seconds` per group (empty `instance` labels are no labels).
fn series(groups: &[Group]) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    let labels = |name: &str, pairs: &std::collections::BTreeMap<String, String>| {
        let mut ls: Vec<Label> = pairs.iter().map(|(n, v)| Label::new(n, v)).collect();
        ls.push(Label::new(storage::METRIC_NAME, name));
        Labels::new(ls)
    };
    for g in groups {
        for f in g.families.values() {
            for s in &f.samples {
                out.push((labels(&s.name, &s.labels), s.value));
            }
        }
        for (name, ms) in [
            ("push_time_seconds", g.push_time),
            ("push_failure_time_seconds", g.failure_time),
        ] {
            out.push((labels(name, &g.labels), ms as f64 / 1000.0));
        }
    }
    out
}

/// Appends every group's series at each `interval` and right after each push, and a
/// staleness marker for each series the last round had and this one has not. Runs while the
/// runtime does.
pub fn expose(state: &PushState, store: Arc<dyn Appendable>, interval: Duration) {
    let (groups, pushed) = (state.store.clone(), state.pushed.clone());
    tokio::spawn(async move {
        let mut last: HashSet<Labels> = HashSet::new();
        loop {
            let g = groups.clone();
            let s = store.clone();
            let prev = std::mem::take(&mut last);
            let round = tokio::task::spawn_blocking(move || {
                let now = now_ms();
                let current = series(&g.groups());
                let mut app = s.appender(AppendMode::BestEffort);
                let mut seen = HashSet::with_capacity(current.len());
                for (labels, v) in current {
                    seen.insert(labels.clone());
                    app.append(SeriesBatch {
                        labels,
                        samples: vec![Sample { t: now, v }],
                        histograms: Vec::new(),
                    });
                }
                for gone in prev.difference(&seen) {
                    app.append(SeriesBatch {
                        labels: gone.clone(),
                        samples: vec![Sample {
                            t: now,
                            v: f64::from_bits(storage::STALE_NAN_BITS),
                        }],
                        histograms: Vec::new(),
                    });
                }
                if let Err(e) = app.commit() {
                    tracing::warn!("appending pushed groups: {e}");
                }
                seen
            })
            .await;
            last = round.unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = pushed.notified() => {}
            }
        }
    });
}
