//! The Pushgateway in the server: the push store opened under the data directory, and the
//! listing's view of it ([`api::pushgateway::PushedGroups`]). Owns only that wiring; the
//! push semantics are `ingest::push`'s.

use std::sync::Arc;

use api::pushgateway::{FamilyView, GroupView, PushedGroups};
use ingest::push::PushStore;

/// The Pushgateway's help strings for the two timestamps every group carries.
const PUSH_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway succeeded.";
const FAILURE_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway failed.";

pub struct Pushed(pub Arc<PushStore>);

impl PushedGroups for Pushed {
    fn groups(&self) -> Vec<GroupView> {
        self.0
            .groups()
            .into_iter()
            .map(|g| {
                let mut families: Vec<FamilyView> = g
                    .families
                    .iter()
                    .map(|(name, f)| FamilyView {
                        name: name.clone(),
                        time_ms: g.pushed_at.get(name).copied().unwrap_or(g.push_time),
                        kind: f.kind.as_str(),
                        help: f.help.clone(),
                        samples: f
                            .samples
                            .iter()
                            .map(|s| (s.name.clone(), s.labels.clone(), s.value))
                            .collect(),
                    })
                    .collect();
                // The timestamps' own labels: the grouping key and an empty instance.
                let mut labels = g.labels.clone();
                labels.entry("instance".into()).or_default();
                for (name, help, ms) in [
                    ("push_time_seconds", PUSH_TIME_HELP, g.push_time),
                    (
                        "push_failure_time_seconds",
                        FAILURE_TIME_HELP,
                        g.failure_time,
                    ),
                ] {
                    families.push(FamilyView {
                        name: name.into(),
                        time_ms: if ms > 0 {
                            ms
                        } else {
                            g.push_time.max(g.failure_time)
                        },
                        kind: "GAUGE",
                        help: help.into(),
                        samples: vec![(name.into(), labels.clone(), ms as f64 / 1000.0)],
                    });
                }
                GroupView {
                    labels: g.labels.clone(),
                    last_push_successful: g.last_push_successful(),
                    families,
                }
            })
            .collect()
    }
}
