//! The `data` of Prometheus's `/api/v1/rules` and `/api/v1/alerts` in its exact JSON shapes
//! (Grafana's rule and alert views read them). Owns the shapes and the filters; the HTTP
//! envelope and parameter parsing are `super`'s; rule state is the `rules` crate's.

use std::collections::{BTreeMap, HashSet};

use gocompat::time::{rfc3339_nano, ZERO_TIME};
use rules::{ActiveAlert, AlertState, Group, RuleManager, RuleState};
use serde_json::{json, Value as Json};

/// The filters of `/api/v1/rules`; empty sets match everything.
#[derive(Default)]
pub(crate) struct RulesFilter {
    pub alerting: bool,
    pub recording: bool,
    pub rule_names: HashSet<String>,
    pub group_names: HashSet<String>,
    pub files: HashSet<String>,
    pub exclude_alerts: bool,
}

/// Go's `time.Time` JSON form; the zero time for "never".
fn go_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| ZERO_TIME.to_owned(), rfc3339_nano)
}

/// Milliseconds as Go's JSON prints float64 seconds: `60`, not `60.0`.
fn seconds(ms: i64) -> Json {
    if ms % 1000 == 0 {
        Json::from(ms / 1000)
    } else {
        Json::from(ms as f64 / 1000.0)
    }
}

fn map(m: &BTreeMap<String, String>) -> Json {
    Json::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

fn labels(l: &storage::Labels) -> Json {
    Json::Object(
        l.iter()
            .map(|l| (l.name.clone(), Json::String(l.value.clone())))
            .collect(),
    )
}

fn alert(a: &ActiveAlert) -> Json {
    let mut o = json!({
        "labels": labels(&a.labels),
        "annotations": map(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": go_time(Some(a.active_at)),
        "value": gocompat::fmt::scientific(a.value),
    });
    if let Some(k) = a.keep_firing_since {
        o["keepFiringSince"] = Json::String(go_time(Some(k)));
    }
    o
}

/// Alerts Prometheus lists as active: pending and firing, not resolved.
fn active_alerts(r: &RuleState) -> impl Iterator<Item = &ActiveAlert> {
    r.active
        .values()
        .filter(|a| a.state != AlertState::Inactive)
}

fn rule(r: &RuleState, exclude_alerts: bool) -> Json {
    let mut o = if r.spec.alert {
        let alerts: Vec<Json> = if exclude_alerts {
            Vec::new()
        } else {
            active_alerts(r).map(alert).collect()
        };
        json!({
            "state": r.state().as_str(),
            "name": r.spec.name,
            "query": r.spec.expr,
            "duration": seconds(r.spec.for_ms),
            "keepFiringFor": seconds(r.spec.keep_firing_for_ms),
            "labels": map(&r.spec.labels),
            "annotations": map(&r.spec.annotations),
            "alerts": alerts,
            "type": "alerting",
        })
    } else {
        let mut o = json!({
            "name": r.spec.name,
            "query": r.spec.expr,
            "type": "recording",
        });
        if !r.spec.labels.is_empty() {
            o["labels"] = map(&r.spec.labels);
        }
        o
    };
    o["health"] = Json::String(r.health.as_str().to_owned());
    if let Some(e) = &r.last_error {
        o["lastError"] = Json::String(e.clone());
    }
    o["evaluationTime"] = json!(r.eval_seconds);
    o["lastEvaluation"] = Json::String(go_time(r.last_eval));
    o
}

fn group(g: &Group, f: &RulesFilter) -> Option<Json> {
    if !f.group_names.is_empty() && !f.group_names.contains(&g.spec.name) {
        return None;
    }
    if !f.files.is_empty() && !f.files.contains(&g.spec.file) {
        return None;
    }
    let rules: Vec<Json> = g
        .rules
        .iter()
        .filter(|r| f.rule_names.is_empty() || f.rule_names.contains(&r.spec.name))
        .filter(|r| {
            if r.spec.alert {
                f.alerting
            } else {
                f.recording
            }
        })
        .map(|r| rule(r, f.exclude_alerts))
        .collect();
    // As Prometheus: a group whose rules were all filtered out is not listed.
    if rules.is_empty() {
        return None;
    }
    Some(json!({
        "name": g.spec.name,
        "file": g.spec.file,
        "rules": rules,
        "interval": seconds(g.interval_ms),
        "limit": g.spec.limit,
        "evaluationTime": g.eval_seconds,
        "lastEvaluation": go_time(g.last_eval),
    }))
}

pub(crate) fn rules(m: &RuleManager, f: &RulesFilter) -> Json {
    let groups: Vec<Json> = m.with_groups(|gs| gs.iter().filter_map(|g| group(g, f)).collect());
    json!({ "groups": groups })
}

pub(crate) fn alerts(m: &RuleManager) -> Json {
    let alerts: Vec<Json> = m.with_groups(|gs| {
        gs.iter()
            .flat_map(|g| &g.rules)
            .flat_map(active_alerts)
            .map(alert)
            .collect()
    });
    json!({ "alerts": alerts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_of_times_and_values() {
        assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_time(Some(1_700_000_000_120)), "2023-11-14T22:13:20.12Z");
        assert_eq!(go_time(Some(1_700_000_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(gocompat::fmt::scientific(1.0), "1e+00");
        assert_eq!(gocompat::fmt::scientific(0.5), "5e-01");
        assert_eq!(gocompat::fmt::scientific(123.4), "1.234e+02");
        assert_eq!(gocompat::fmt::scientific(f64::NAN), "NaN");
    }
}
