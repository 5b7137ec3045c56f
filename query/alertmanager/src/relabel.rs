//! Prometheus's relabelling (`relabel_configs` semantics) as applied to alerts by
//! `alerting.alert_relabel_configs`: replace, keep, drop, labelmap, labeldrop, labelkeep,
//! lowercase, uppercase, keepequal, dropequal. Owns the config shape and its application.

use regex::Regex;
use serde::{Deserialize, Serialize};
use storage::{Label, Labels};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelabelConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    separator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target_label: String,
    #[serde(default = "default_regex")]
    regex: String,
    #[serde(default = "default_replacement")]
    replacement: String,
    #[serde(default = "default_action")]
    action: String,
}

fn default_separator() -> String {
    ";".into()
}
fn default_regex() -> String {
    "(.*)".into()
}
fn default_replacement() -> String {
    "$1".into()
}
fn default_action() -> String {
    "replace".into()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Replace,
    Keep,
    Drop,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
    KeepEqual,
    DropEqual,
}

#[derive(Debug)]
pub(crate) struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    replacement: String,
    action: Action,
}

impl RelabelConfig {
    pub(crate) fn compile(&self) -> Result<Rule, String> {
        let action = match self.action.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            other => return Err(format!("unknown relabel action {other:?}")),
        };
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {} action requires 'target_label' value",
                self.action
            ));
        }
        let regex = Regex::new(&format!("^(?s:{})$", self.regex))
            .map_err(|e| format!("invalid relabel regex {:?}: {e}", self.regex))?;
        Ok(Rule {
            source_labels: self.source_labels.clone(),
            separator: self.separator.clone(),
            target_label: self.target_label.clone(),
            regex,
            replacement: self.replacement.clone(),
            action,
        })
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(x) if x == '_' || x.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

fn set(labels: &mut Vec<Label>, name: &str, value: String) {
    labels.retain(|l| l.name != name);
    if !value.is_empty() {
        labels.push(Label::new(name, value));
    }
}

/// Applies the rules in order; `None` when a keep/drop rule drops the alert.
pub(crate) fn process(labels: &Labels, rules: &[Rule]) -> Option<Labels> {
    let mut ls: Vec<Label> = labels.as_slice().to_vec();
    for r in rules {
        let get = |ls: &[Label], n: &str| {
            ls.iter()
                .find(|l| l.name == n)
                .map(|l| l.value.clone())
                .unwrap_or_default()
        };
        let val = r
            .source_labels
            .iter()
            .map(|n| get(&ls, n))
            .collect::<Vec<_>>()
            .join(&r.separator);
        match r.action {
            Action::Keep if !r.regex.is_match(&val) => return None,
            Action::Drop if r.regex.is_match(&val) => return None,
            Action::Keep | Action::Drop => {}
            Action::KeepEqual if val != get(&ls, &r.target_label) => return None,
            Action::DropEqual if val == get(&ls, &r.target_label) => return None,
            Action::KeepEqual | Action::DropEqual => {}
            Action::Replace => {
                if let Some(caps) = r.regex.captures(&val) {
                    let mut target = String::new();
                    caps.expand(&r.target_label, &mut target);
                    if valid_name(&target) {
                        let mut value = String::new();
                        caps.expand(&r.replacement, &mut value);
                        set(&mut ls, &target, value);
                    }
                }
            }
            Action::Lowercase => set(&mut ls, &r.target_label, val.to_lowercase()),
            Action::Uppercase => set(&mut ls, &r.target_label, val.to_uppercase()),
            Action::LabelMap => {
                let mut add = Vec::new();
                for l in &ls {
                    if let Some(caps) = r.regex.captures(&l.name) {
                        let mut name = String::new();
                        caps.expand(&r.replacement, &mut name);
                        add.push((name, l.value.clone()));
                    }
                }
                for (n, v) in add {
                    set(&mut ls, &n, v);
                }
            }
            Action::LabelDrop => ls.retain(|l| !r.regex.is_match(&l.name)),
            Action::LabelKeep => ls.retain(|l| r.regex.is_match(&l.name)),
        }
    }
    Some(Labels::new(ls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yml: &str) -> Vec<Rule> {
        let cfgs: Vec<RelabelConfig> = serde_yaml::from_str(yml).unwrap();
        cfgs.iter().map(|c| c.compile().unwrap()).collect()
    }

    #[test]
    fn actions_follow_prometheus() {
        let l = Labels::from_pairs([
            ("alertname", "Down"),
            ("severity", "page"),
            ("dc", "EU-1"),
            ("tmp_x", "1"),
        ]);
        let r = rules(
            "- {source_labels: [severity], regex: page, target_label: severity, replacement: critical}\n- {source_labels: [dc], target_label: region, regex: '([A-Z]+)-.*', replacement: '${1}'}\n- {source_labels: [region], target_label: region, action: lowercase}\n- {regex: 'tmp_.*', action: labeldrop}\n",
        );
        let out = process(&l, &r).unwrap();
        assert_eq!(
            out,
            Labels::from_pairs([
                ("alertname", "Down"),
                ("severity", "critical"),
                ("dc", "EU-1"),
                ("region", "eu")
            ])
        );
        let drop = rules("- {source_labels: [severity], regex: page, action: drop}\n");
        assert!(process(&l, &drop).is_none());
        let keep = rules("- {source_labels: [severity], regex: info, action: keep}\n");
        assert!(process(&l, &keep).is_none());
        let map = rules("- {regex: 'tmp_(.*)', action: labelmap, replacement: 'kept_$1'}\n");
        assert_eq!(process(&l, &map).unwrap().get("kept_x"), Some("1"));
    }

    #[test]
    fn bad_configs_are_errors() {
        for yml in ["action: hashmod", "regex: '('", "action: replace"] {
            let c: RelabelConfig = serde_yaml::from_str(yml).unwrap();
            assert!(c.compile().is_err(), "{yml}");
        }
    }
}
