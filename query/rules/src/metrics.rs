//! The rule manager's self-metrics under Prometheus's names (`prometheus_rule_*`), one series
//! per group labelled `rule_group="<file>;<group>"` as Prometheus labels them, so dashboards
//! and alerts written for Prometheus's rule manager work unchanged. Owns the names; the
//! manager reports into it when groups start, finish an iteration and go away.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    rule_group: String,
}

impl GroupLabel {
    fn new(key: &(String, String)) -> GroupLabel {
        GroupLabel {
            rule_group: format!("{};{}", key.0, key.1),
        }
    }
}

type Seconds = Gauge<f64, AtomicU64>;

/// Per-group counters and gauges. Cheap to clone: clones share the metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleMetrics {
    evaluations: Family<GroupLabel, Counter>,
    failures: Family<GroupLabel, Counter>,
    iterations: Family<GroupLabel, Counter>,
    missed: Family<GroupLabel, Counter>,
    last_duration: Family<GroupLabel, Seconds>,
    interval: Family<GroupLabel, Seconds>,
    last_evaluation: Family<GroupLabel, Seconds>,
    rules: Family<GroupLabel, Gauge>,
}

/// What one iteration of a group did.
pub(crate) struct Iteration {
    /// Evaluation timestamp, ms.
    pub ts: i64,
    /// Scheduled iterations skipped because the previous one overran.
    pub missed: u64,
    pub duration_seconds: f64,
    pub rules: usize,
    pub failed: usize,
}

impl RuleMetrics {
    /// Creates the metrics and registers them in `registry` (which appends `_total` to
    /// counters).
    pub(crate) fn register(registry: &mut Registry) -> RuleMetrics {
        let m = RuleMetrics::default();
        let counters = [
            (
                "prometheus_rule_evaluations",
                "Rule evaluations, by group",
                &m.evaluations,
            ),
            (
                "prometheus_rule_evaluation_failures",
                "Rule evaluations that failed, by group",
                &m.failures,
            ),
            (
                "prometheus_rule_group_iterations",
                "Scheduled group evaluations, run or missed",
                &m.iterations,
            ),
            (
                "prometheus_rule_group_iterations_missed",
                "Scheduled group evaluations skipped because the previous one was still running",
                &m.missed,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        let gauges = [
            (
                "prometheus_rule_group_last_duration_seconds",
                "How long the group's last evaluation took",
                &m.last_duration,
            ),
            (
                "prometheus_rule_group_interval_seconds",
                "The group's evaluation interval",
                &m.interval,
            ),
            (
                "prometheus_rule_group_last_evaluation_timestamp_seconds",
                "Timestamp of the group's last evaluation, seconds since the epoch",
                &m.last_evaluation,
            ),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "prometheus_rule_group_rules",
            "Rules in the group",
            m.rules.clone(),
        );
        m
    }

    /// A group is (re)loaded: its settings, and its counters exposed from zero.
    pub(crate) fn loaded(&self, key: &(String, String), interval_ms: i64, rules: usize) {
        let l = GroupLabel::new(key);
        self.interval
            .get_or_create(&l)
            .set(interval_ms as f64 / 1000.0);
        self.rules.get_or_create(&l).set(rules as i64);
        for c in [
            &self.evaluations,
            &self.failures,
            &self.iterations,
            &self.missed,
        ] {
            let _ = c.get_or_create(&l);
        }
    }

    pub(crate) fn iterated(&self, key: &(String, String), it: &Iteration) {
        let l = GroupLabel::new(key);
        self.iterations.get_or_create(&l).inc_by(it.missed + 1);
        self.missed.get_or_create(&l).inc_by(it.missed);
        self.evaluations.get_or_create(&l).inc_by(it.rules as u64);
        self.failures.get_or_create(&l).inc_by(it.failed as u64);
        self.last_duration
            .get_or_create(&l)
            .set(it.duration_seconds);
        self.last_evaluation
            .get_or_create(&l)
            .set(it.ts as f64 / 1000.0);
    }

    /// A reload removed the group: its series go away, as in Prometheus.
    pub(crate) fn removed(&self, key: &(String, String)) {
        let l = GroupLabel::new(key);
        for c in [
            &self.evaluations,
            &self.failures,
            &self.iterations,
            &self.missed,
        ] {
            c.remove(&l);
        }
        for g in [&self.last_duration, &self.interval, &self.last_evaluation] {
            g.remove(&l);
        }
        self.rules.remove(&l);
    }
}
