//! `GET /federate?match[]=…` as Prometheus serves it: the newest sample of every series the
//! selectors match within the lookback, stale ones left out, in the text exposition format
//! (0.0.4), one `# TYPE <name> untyped` per family, the series sorted by metric name, each with
//! its own timestamp and the external labels it does not set (`instance=""` among them, as
//! Prometheus adds). Native histograms have no text form and are left out, as Prometheus does
//! for the text format. Reads through [`storage::Querier`]; evaluates no PromQL.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use storage::{Labels, Matcher, Point, Querier, SelectHints};

use super::params::parse_selector;

/// What federation reads and adds.
pub struct Federation {
    store: Arc<dyn Querier>,
    /// Replaced on reload, as Prometheus re-reads `global.external_labels`.
    external_labels: RwLock<BTreeMap<String, String>>,
    /// How far back the newest sample may be (`query.lookback_delta`, fixed for the process
    /// as the engine's is).
    lookback_ms: i64,
}

impl Federation {
    pub fn new(
        store: Arc<dyn Querier>,
        external_labels: BTreeMap<String, String>,
        lookback_ms: i64,
    ) -> Arc<Federation> {
        Arc::new(Federation {
            store,
            external_labels: RwLock::new(external_labels),
            lookback_ms,
        })
    }

    /// The external labels of a reloaded config.
    pub fn set_external_labels(&self, labels: BTreeMap<String, String>) {
        *self
            .external_labels
            .write()
            .unwrap_or_else(PoisonError::into_inner) = labels;
    }
}

pub fn routes(f: Arc<Federation>) -> Router {
    Router::new()
        .route("/federate", get(federate))
        .with_state(f)
}

async fn federate(
    State(f): State<Arc<Federation>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut sets = Vec::new();
    for (k, v) in &params {
        if k == "match[]" {
            match parse_selector(v) {
                Ok(s) => sets.extend(s),
                Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match tokio::task::spawn_blocking(move || render(&f, &sets, now)).await {
        Ok(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The newest float sample of each matching series at `now`.
fn newest(
    f: &Federation,
    sets: &[Vec<Matcher>],
    now: i64,
) -> Result<Vec<(Labels, i64, f64)>, String> {
    let hints = SelectHints::range(now - f.lookback_ms, now, usize::MAX);
    let mut by_labels: BTreeMap<Labels, (i64, Option<f64>)> = BTreeMap::new();
    for set in sets {
        for s in f.store.select(set, &hints).map_err(|e| e.to_string())? {
            let s = s.map_err(|e| e.to_string())?;
            if by_labels.contains_key(&s.labels) {
                continue;
            }
            let labels = s.labels.clone();
            let mut last = None;
            for p in s.points() {
                match p.map_err(|e| e.to_string())? {
                    Point::Float(x) if x.t <= now => last = Some((x.t, Some(x.v))),
                    Point::Histogram(h) if h.t <= now => last = Some((h.t, None)),
                    _ => {}
                }
            }
            if let Some(l) = last {
                by_labels.insert(labels, l);
            }
        }
    }
    let mut out: Vec<(Labels, i64, f64)> = by_labels
        .into_iter()
        .filter_map(|(l, (t, v))| Some((l, t, v?)))
        .filter(|(_, _, v)| !storage::is_stale_nan(*v))
        .collect();
    // Stable: within a name, label order.
    out.sort_by(|a, b| a.0.metric_name().cmp(&b.0.metric_name()));
    Ok(out)
}

fn render(f: &Federation, sets: &[Vec<Matcher>], now: i64) -> Result<String, String> {
    let mut external = f
        .external_labels
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    external.entry("instance".into()).or_default();
    let mut out = String::new();
    let mut last_name = None;
    for (labels, t, v) in newest(f, sets, now)? {
        let Some(name) = labels.metric_name() else {
            continue;
        };
        if last_name.as_deref() != Some(name) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            last_name = Some(name.to_string());
        }
        out.push_str(name);
        let mut first = true;
        let mut label = |out: &mut String, n: &str, v: &str| {
            out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(out, "{n}=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        };
        for l in labels.iter().filter(|l| l.name != storage::METRIC_NAME) {
            label(&mut out, &l.name, &l.value);
        }
        for (n, v) in &external {
            if labels.get(n).is_none() {
                label(&mut out, n, v);
            }
        }
        if !first {
            out.push('}');
        }
        let _ = writeln!(out, " {} {t}", gocompat::fmt::shortest(v));
    }
    Ok(out)
}
