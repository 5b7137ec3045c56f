//! The Pushgateway's listing, `GET /api/v1/metrics`, in its JSON shape: one entry per group
//! with its grouping `labels`, `last_push_successful`, and per family `time_stamp`, `type`,
//! `help` and `metrics` (values as strings; summaries with `quantiles`, `count`, `sum`;
//! histograms with `buckets`, `count`, `sum`). Reads the groups through [`PushedGroups`], which
//! the server implements over the push store.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// A family of a group as listed.
pub struct FamilyView {
    pub name: String,
    /// When it was last pushed, ms since the epoch.
    pub time_ms: i64,
    /// The Pushgateway's type name (`COUNTER`, `GAUGE`, `SUMMARY`, `UNTYPED`, `HISTOGRAM`).
    pub kind: &'static str,
    pub help: String,
    /// `(name, labels, value)` as the text format shows them.
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

pub struct GroupView {
    pub labels: BTreeMap<String, String>,
    pub last_push_successful: bool,
    pub families: Vec<FamilyView>,
}

/// What the listing reads.
pub trait PushedGroups: Send + Sync {
    fn groups(&self) -> Vec<GroupView>;
}

pub fn routes(groups: Arc<dyn PushedGroups>) -> Router {
    Router::new()
        .route("/api/v1/metrics", get(list))
        .with_state(groups)
}

async fn list(State(groups): State<Arc<dyn PushedGroups>>) -> Json<Value> {
    let data: Vec<Value> = groups.groups().iter().map(group).collect();
    Json(json!({ "status": "success", "data": data }))
}

fn group(g: &GroupView) -> Value {
    let mut out = Map::new();
    out.insert("labels".into(), json!(g.labels));
    out.insert("last_push_successful".into(), json!(g.last_push_successful));
    for f in &g.families {
        let mut fam = Map::new();
        fam.insert(
            "time_stamp".into(),
            json!(gocompat::time::rfc3339_nano(f.time_ms)),
        );
        fam.insert("type".into(), json!(f.kind));
        if !f.help.is_empty() {
            fam.insert("help".into(), json!(f.help));
        }
        fam.insert("metrics".into(), Value::Array(metrics(f)));
        out.insert(f.name.clone(), Value::Object(fam));
    }
    Value::Object(out)
}

fn num(v: f64) -> Value {
    json!(gocompat::fmt::shortest(v))
}

/// The family's metrics: one per sample for the simple types; for summaries and histograms
/// one per label set, its quantiles or buckets, count and sum gathered from the samples.
fn metrics(f: &FamilyView) -> Vec<Value> {
    let (part, key) = match f.kind {
        "SUMMARY" => ("quantiles", "quantile"),
        "HISTOGRAM" | "GAUGE_HISTOGRAM" => ("buckets", "le"),
        _ => {
            return f
                .samples
                .iter()
                .map(|(_, labels, v)| json!({ "labels": labels, "value": num(*v) }))
                .collect()
        }
    };
    let mut by_labels: BTreeMap<BTreeMap<String, String>, Map<String, Value>> = BTreeMap::new();
    let mut order = Vec::new();
    for (name, labels, v) in &f.samples {
        let mut own = labels.clone();
        let at = own.remove(key);
        let m = by_labels.entry(own.clone()).or_insert_with(|| {
            order.push(own.clone());
            let mut m = Map::new();
            m.insert("labels".into(), json!(own));
            m.insert(part.into(), json!({}));
            m
        });
        if name.ends_with("_sum") {
            m.insert("sum".into(), num(*v));
        } else if name.ends_with("_count") {
            m.insert("count".into(), num(*v));
        } else if let Some(at) = at {
            m[part]
                .as_object_mut()
                .expect("made an object above")
                .insert(at, num(*v));
        }
    }
    order
        .into_iter()
        .filter_map(|l| by_labels.remove(&l))
        .map(Value::Object)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_histograms_gather_their_samples() {
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let f = FamilyView {
            name: "d".into(),
            time_ms: 0,
            kind: "HISTOGRAM",
            help: String::new(),
            samples: vec![
                ("d_bucket".into(), l(&[("job", "j"), ("le", "1")]), 2.0),
                ("d_bucket".into(), l(&[("job", "j"), ("le", "+Inf")]), 3.0),
                ("d_sum".into(), l(&[("job", "j")]), 4.5),
                ("d_count".into(), l(&[("job", "j")]), 3.0),
            ],
        };
        assert_eq!(
            Value::Array(metrics(&f)),
            json!([{"labels": {"job": "j"}, "buckets": {"1": "2", "+Inf": "3"}, "sum": "4.5", "count": "3"}])
        );
        let g = FamilyView {
            kind: "GAUGE",
            samples: vec![("g".into(), l(&[("job", "j")]), 1e21)],
            ..f
        };
        assert_eq!(
            Value::Array(metrics(&g)),
            json!([{"labels": {"job": "j"}, "value": "1e+21"}])
        );
    }
}
