//! The scrape status endpoints in Prometheus's shapes: `/api/v1/targets` (`state`,
//! `scrapePool`), `/api/v1/scrape_pools`, `/api/v1/targets/metadata` (`match_target`,
//! `metric`, `limit`). Reads the scraper through [`ScrapeTargets`], which the server
//! implements over the scrape manager; evaluates nothing.

use std::collections::BTreeMap;

use serde::Serialize;
use storage::{Labels, Metadata};

use super::params::{parse_selector, Params};
use super::response::{success, ApiError, ApiResult};
use super::ApiState;

/// An active target as `/api/v1/targets` lists it.
pub struct ActiveTarget {
    pub discovered_labels: Labels,
    pub labels: Labels,
    pub scrape_pool: String,
    pub scrape_url: String,
    /// The URL with a local host replaced by one reachable from elsewhere.
    pub global_url: String,
    pub last_error: String,
    /// Milliseconds since the epoch; `None` before the first scrape.
    pub last_scrape: Option<i64>,
    pub last_scrape_duration: f64,
    /// `up`, `down` or `unknown`.
    pub health: &'static str,
    pub scrape_interval: String,
    pub scrape_timeout: String,
}

/// A target relabelled away.
pub struct DroppedTarget {
    pub discovered_labels: Labels,
    pub scrape_pool: String,
}

/// What the scrape endpoints read.
pub trait ScrapeTargets: Send + Sync {
    /// Job names, sorted.
    fn pools(&self) -> Vec<String>;
    /// Sorted by pool.
    fn active(&self) -> Vec<ActiveTarget>;
    fn dropped(&self) -> Vec<DroppedTarget>;
    /// Each active target's labels and the metadata of its last successful scrape.
    fn metadata(&self) -> Vec<(Labels, BTreeMap<String, Metadata>)>;
}

fn labels_map(l: &Labels) -> BTreeMap<&str, &str> {
    l.iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

/// Go's zero `time.Time`, which Prometheus shows for a target not scraped yet.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub(super) fn targets(s: &ApiState, p: &Params) -> ApiResult {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Active<'a> {
        discovered_labels: BTreeMap<&'a str, &'a str>,
        labels: BTreeMap<&'a str, &'a str>,
        scrape_pool: &'a str,
        scrape_url: &'a str,
        global_url: &'a str,
        last_error: &'a str,
        last_scrape: String,
        last_scrape_duration: f64,
        health: &'a str,
        scrape_interval: &'a str,
        scrape_timeout: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Dropped<'a> {
        discovered_labels: BTreeMap<&'a str, &'a str>,
        scrape_pool: &'a str,
    }
    let pool = p.get("scrapePool");
    let state = p.get("state").to_ascii_lowercase();
    let show_active = matches!(state.as_str(), "" | "any" | "active");
    let show_dropped = matches!(state.as_str(), "" | "any" | "dropped");
    let in_pool = |name: &str| pool.is_empty() || pool == name;
    let (active, dropped) = match &s.targets {
        Some(t) => (
            if show_active { t.active() } else { Vec::new() },
            if show_dropped {
                t.dropped()
            } else {
                Vec::new()
            },
        ),
        None => (Vec::new(), Vec::new()),
    };
    let active: Vec<Active> = active
        .iter()
        .filter(|t| in_pool(&t.scrape_pool))
        .map(|t| Active {
            discovered_labels: labels_map(&t.discovered_labels),
            labels: labels_map(&t.labels),
            scrape_pool: &t.scrape_pool,
            scrape_url: &t.scrape_url,
            global_url: &t.global_url,
            last_error: &t.last_error,
            last_scrape: t
                .last_scrape
                .map_or_else(|| ZERO_TIME.to_string(), gocompat::time::rfc3339_nano),
            last_scrape_duration: t.last_scrape_duration,
            health: t.health,
            scrape_interval: &t.scrape_interval,
            scrape_timeout: &t.scrape_timeout,
        })
        .collect();
    // Counted before the pool filter, as Prometheus counts them.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &dropped {
        *counts.entry(&d.scrape_pool).or_default() += 1;
    }
    let dropped: Vec<Dropped> = dropped
        .iter()
        .filter(|d| in_pool(&d.scrape_pool))
        .map(|d| Dropped {
            discovered_labels: labels_map(&d.discovered_labels),
            scrape_pool: &d.scrape_pool,
        })
        .collect();
    Ok(success(
        serde_json::json!({
            "activeTargets": active,
            "droppedTargets": dropped,
            "droppedTargetCounts": show_dropped.then_some(counts),
        }),
        vec![],
    ))
}

pub(super) fn scrape_pools(s: &ApiState, _: &Params) -> ApiResult {
    let pools = s.targets.as_ref().map(|t| t.pools()).unwrap_or_default();
    Ok(success(serde_json::json!({ "scrapePools": pools }), vec![]))
}

pub(super) fn metadata(s: &ApiState, p: &Params) -> ApiResult {
    #[derive(Serialize)]
    struct Entry<'a> {
        target: BTreeMap<&'a str, &'a str>,
        #[serde(skip_serializing_if = "str::is_empty")]
        metric: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        help: &'a str,
        unit: &'a str,
    }
    let limit = match p.get("limit") {
        "" => None,
        l => match l.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return Err(ApiError::bad_data("limit must be a number")),
        },
    };
    let matchers = match p.get("match_target") {
        "" => Vec::new(),
        m => parse_selector(m)
            .map_err(|e| ApiError::invalid_param("match_target", e))?
            .into_iter()
            .flatten()
            .collect(),
    };
    let metric = p.get("metric");
    let all = s.targets.as_ref().map(|t| t.metadata()).unwrap_or_default();
    let mut out = Vec::new();
    for (target, families) in &all {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        if !matchers
            .iter()
            .all(|m| m.matches(target.get(&m.name).unwrap_or("")))
        {
            continue;
        }
        for (family, md) in families {
            if !metric.is_empty() && family != metric {
                continue;
            }
            out.push(Entry {
                target: labels_map(target),
                // With `metric` given, Prometheus leaves the family out.
                metric: if metric.is_empty() { family } else { "" },
                kind: &md.kind,
                help: &md.help,
                unit: &md.unit,
            });
        }
    }
    Ok(success(out, vec![]))
}
