//! Inhibition: a firing alert matching a rule's source matchers mutes alerts matching its
//! target matchers when the labels in `equal` agree. Owns the decision only; which alerts are
//! firing comes from the alert store.

use storage::Labels;

use super::config::InhibitRule;
use super::{fingerprint, matchers, AmAlert};

/// Fingerprints (16 hex digits) of the firing alerts that inhibit an alert with `labels`.
pub(crate) fn inhibited_by(
    rules: &[InhibitRule],
    labels: &Labels,
    firing: &[AmAlert],
) -> Vec<String> {
    let mut out = Vec::new();
    let own = fingerprint(labels);
    for r in rules {
        if !matchers::all_match(&r.target, labels) {
            continue;
        }
        // An alert matching both sides does not inhibit itself, nor other alerts matching
        // both sides (Alertmanager's rule for rules whose source and target overlap).
        let target_is_source = matchers::all_match(&r.source, labels);
        for src in firing {
            let fp = fingerprint(&src.labels);
            if fp == own || !matchers::all_match(&r.source, &src.labels) {
                continue;
            }
            if target_is_source && matchers::all_match(&r.target, &src.labels) {
                continue;
            }
            if r.equal
                .iter()
                .all(|n| src.labels.get(n).unwrap_or("") == labels.get(n).unwrap_or(""))
            {
                out.push(format!("{fp:016x}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::super::config::AmConfig;
    use super::*;

    fn alert(pairs: &[(&str, &str)]) -> AmAlert {
        AmAlert {
            labels: Labels::from_pairs(pairs.iter().copied()),
            annotations: Default::default(),
            starts_at: 0,
            ends_at: 0,
            generator_url: String::new(),
            updated_at: 0,
            timeout: false,
        }
    }

    #[test]
    fn source_mutes_targets_with_equal_labels_only() {
        let c = AmConfig::parse(
            "route: {receiver: a}\nreceivers: [{name: a}]\ninhibit_rules:\n  - source_matchers: [severity=critical]\n    target_matchers: [severity=warning]\n    equal: [cluster]\n",
        )
        .unwrap();
        let crit = alert(&[
            ("alertname", "Down"),
            ("severity", "critical"),
            ("cluster", "a"),
        ]);
        let firing = vec![crit.clone()];
        let warn_a = Labels::from_pairs([
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("cluster", "a"),
        ]);
        let warn_b = Labels::from_pairs([
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("cluster", "b"),
        ]);
        let got = inhibited_by(&c.inhibit_rules, &warn_a, &firing);
        assert_eq!(got, [format!("{:016x}", fingerprint(&crit.labels))]);
        assert!(inhibited_by(&c.inhibit_rules, &warn_b, &firing).is_empty());
        // The source itself is never inhibited, and without a firing source nothing is.
        assert!(inhibited_by(&c.inhibit_rules, &crit.labels, &firing).is_empty());
        assert!(inhibited_by(&c.inhibit_rules, &warn_a, &[]).is_empty());
    }

    #[test]
    fn alerts_matching_both_sides_do_not_inhibit_each_other() {
        let c = AmConfig::parse(
            "route: {receiver: a}\nreceivers: [{name: a}]\ninhibit_rules:\n  - source_matchers: ['team=db']\n    target_matchers: ['team=db']\n",
        )
        .unwrap();
        let a = alert(&[("alertname", "A"), ("team", "db")]);
        let b = alert(&[("alertname", "B"), ("team", "db")]);
        assert!(inhibited_by(&c.inhibit_rules, &b.labels, &[a, b.clone()]).is_empty());
    }
}
