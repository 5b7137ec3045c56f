//! Relabelling, Prometheus's `model/relabel`: the `relabel_configs` shape (as written in a
//! config file), its validation, and its application to a label set. Shared by scraping
//! (target and sample relabelling) and alerting (`alert_relabel_configs`). Owns the semantics
//! of every action; knows nothing of where the label sets come from.
//!
//! Regexes are anchored at both ends as Prometheus anchors them (`^(?:…)$`, so `.` does not
//! match a newline); replacements expand `$1`, `${1}` and `$name` as Go's `Regexp.Expand` does
//! (the longest run of word characters names the group, so `$1x` is the group `1x`).

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::Label;

/// One `relabel_configs` entry as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_label: String,
    #[serde(default = "default_regex")]
    pub regex: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modulus: u64,
    #[serde(default = "default_replacement")]
    pub replacement: String,
    #[serde(default = "default_action")]
    pub action: String,
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
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }
}

/// A validated, compiled [`RelabelConfig`].
#[derive(Clone, Debug)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
    action: Action,
}

impl RelabelConfig {
    /// Validates as Prometheus does on load (its messages) and compiles the regex.
    pub fn compile(&self) -> Result<Rule, String> {
        let action = Action::parse(&self.action)
            .ok_or_else(|| format!("unknown relabel action {:?}", self.action))?;
        let name = &self.action;
        if action == Action::HashMod && self.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let targeted = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if targeted && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        // Only `replace` may build its target from the match (`$1`); the others name a label.
        let target_ok = match action {
            Action::Replace => self.target_label.contains('$') || valid_name(&self.target_label),
            _ if targeted => valid_name(&self.target_label),
            _ => true,
        };
        if !target_ok {
            return Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                self.target_label
            ));
        }
        if action == Action::LabelMap && !valid_template(&self.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {name} action",
                self.replacement
            ));
        }
        let defaults = |regex: bool| {
            self.separator == default_separator()
                && self.modulus == 0
                && self.replacement == default_replacement()
                && (!regex || self.regex == default_regex())
        };
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && !(self.source_labels.is_empty() && self.target_label.is_empty() && defaults(false))
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual) && !defaults(true) {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        let regex = Regex::new(&format!("^(?:{})$", self.regex))
            .map_err(|e| format!("invalid relabel regex {:?}: {e}", self.regex))?;
        Ok(Rule {
            source_labels: self.source_labels.clone(),
            separator: self.separator.clone(),
            target_label: self.target_label.clone(),
            regex,
            modulus: self.modulus,
            replacement: self.replacement.clone(),
            action,
        })
    }
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_name(n: &str) -> bool {
    let mut c = n.bytes();
    matches!(c.next(), Some(x) if x == b'_' || x.is_ascii_alphabetic())
        && c.all(|x| x == b'_' || x.is_ascii_alphanumeric())
}

/// A `labelmap` replacement: a label name in which `$1`/`${1}` references may stand.
fn valid_template(s: &str) -> bool {
    let plain: String = s.replace(['$', '{', '}'], "");
    !plain.is_empty() && plain.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Sets `name` to `value`, or removes it when `value` is empty (Prometheus's builder).
fn set(labels: &mut Vec<Label>, name: &str, value: String) {
    labels.retain(|l| l.name != name);
    if !value.is_empty() {
        labels.push(Label::new(name, value));
    }
}

fn get<'a>(labels: &'a [Label], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// Prometheus's `sum64(md5(value))`: the digest's last eight bytes, big-endian (its shifts of
/// the first eight bytes overflow to zero).
fn hash64(value: &str) -> u64 {
    use md5::Digest;
    let sum = md5::Md5::digest(value.as_bytes());
    u64::from_be_bytes(sum[8..16].try_into().expect("md5 is 16 bytes"))
}

/// Applies `rules` in order to `labels` (names unique, any order; the result is in no
/// particular order either). `None` when a keep/drop rule drops the set or nothing is left.
pub fn process(mut labels: Vec<Label>, rules: &[Rule]) -> Option<Vec<Label>> {
    for r in rules {
        let val = match r.source_labels.as_slice() {
            [one] => get(&labels, one).to_string(),
            many => many
                .iter()
                .map(|n| get(&labels, n))
                .collect::<Vec<_>>()
                .join(&r.separator),
        };
        match r.action {
            Action::Keep if !r.regex.is_match(&val) => return None,
            Action::Drop if r.regex.is_match(&val) => return None,
            Action::KeepEqual if val != get(&labels, &r.target_label) => return None,
            Action::DropEqual if val == get(&labels, &r.target_label) => return None,
            Action::Keep | Action::Drop | Action::KeepEqual | Action::DropEqual => {}
            Action::Replace => {
                if let Some(caps) = r.regex.captures(&val) {
                    let mut target = String::new();
                    caps.expand(&r.target_label, &mut target);
                    if valid_name(&target) {
                        let mut value = String::new();
                        caps.expand(&r.replacement, &mut value);
                        set(&mut labels, &target, value);
                    }
                }
            }
            Action::Lowercase => set(&mut labels, &r.target_label, val.to_lowercase()),
            Action::Uppercase => set(&mut labels, &r.target_label, val.to_uppercase()),
            Action::HashMod => {
                let m = hash64(&val) % r.modulus;
                set(&mut labels, &r.target_label, m.to_string());
            }
            Action::LabelMap => {
                let mut add = Vec::new();
                for l in &labels {
                    if let Some(caps) = r.regex.captures(&l.name) {
                        let mut name = String::new();
                        caps.expand(&r.replacement, &mut name);
                        add.push((name, l.value.clone()));
                    }
                }
                for (n, v) in add {
                    set(&mut labels, &n, v);
                }
            }
            Action::LabelDrop => labels.retain(|l| !r.regex.is_match(&l.name)),
            Action::LabelKeep => labels.retain(|l| r.regex.is_match(&l.name)),
        }
    }
    (!labels.is_empty()).then_some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(json: &str) -> Vec<Rule> {
        let cfgs: Vec<RelabelConfig> = serde_json::from_str(json).unwrap();
        cfgs.iter().map(|c| c.compile().unwrap()).collect()
    }

    fn ls(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
    }

    fn sorted(mut v: Vec<Label>) -> Vec<Label> {
        v.sort();
        v
    }

    fn run(labels: &[(&str, &str)], cfg: &str) -> Option<Vec<Label>> {
        process(ls(labels), &rules(cfg)).map(sorted)
    }

    /// Cases from Prometheus's relabelling documentation and its `relabel_test.go`
    /// expectations: input, rules, output (`None`: dropped).
    #[test]
    fn conformance_table() {
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            &'a str,
            Option<&'a [(&'a str, &'a str)]>,
        );
        let cases: &[Case] = &[
            // replace with a capture group into a new label
            (
                &[("a", "foo"), ("b", "bar"), ("c", "baz")],
                r#"[{"source_labels":["a"],"regex":"f(.*)","target_label":"d","replacement":"ch${1}-ch${1}"}]"#,
                Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
            ),
            // several sources joined with the separator
            (
                &[("a", "foo"), ("b", "bar"), ("c", "baz")],
                r#"[{"source_labels":["a","b"],"regex":"f(.*);(.*)r","target_label":"a","replacement":"b${1}${2}m"}]"#,
                Some(&[("a", "boobam"), ("b", "bar"), ("c", "baz")]),
            ),
            // no match: nothing changes
            (
                &[("a", "foo")],
                r#"[{"source_labels":["a"],"regex":"f","target_label":"b","replacement":"x"}]"#,
                Some(&[("a", "foo")]),
            ),
            // the regex is anchored: a partial match is no match
            (
                &[("a", "boo")],
                r#"[{"source_labels":["a"],"regex":"o+","action":"drop"}]"#,
                Some(&[("a", "boo")]),
            ),
            // an empty replacement removes the target
            (
                &[("a", "foo"), ("b", "bar")],
                r#"[{"source_labels":["a"],"regex":"foo","target_label":"b","replacement":""}]"#,
                Some(&[("a", "foo")]),
            ),
            // a missing source label is the empty string, which `(.*)` matches
            (
                &[("a", "foo")],
                r#"[{"source_labels":["z"],"target_label":"b","replacement":"set"}]"#,
                Some(&[("a", "foo"), ("b", "set")]),
            ),
            // the target built from the match; an invalid result leaves the set alone
            (
                &[("a", "some-name-value")],
                r#"[{"source_labels":["a"],"regex":"some-([^-]+)-([^,]+)","target_label":"${1}","replacement":"${2}"}]"#,
                Some(&[("a", "some-name-value"), ("name", "value")]),
            ),
            (
                &[("a", "some-name-0")],
                r#"[{"source_labels":["a"],"regex":"some-([^-]+)-([^,]+)","target_label":"${2}","replacement":"${1}"}]"#,
                Some(&[("a", "some-name-0")]),
            ),
            // `$1x` names the group `1x` (empty), as in Go
            (
                &[("a", "foo")],
                r#"[{"source_labels":["a"],"regex":"(f)oo","target_label":"b","replacement":"$1x"}]"#,
                Some(&[("a", "foo")]),
            ),
            // keep / drop
            (
                &[("a", "foo")],
                r#"[{"source_labels":["a"],"regex":".*o.*","action":"drop"}]"#,
                None,
            ),
            (
                &[("a", "foo")],
                r#"[{"source_labels":["a"],"regex":"no","action":"keep"}]"#,
                None,
            ),
            (
                &[("a", "foo")],
                r#"[{"source_labels":["a"],"regex":"f.*","action":"keep"}]"#,
                Some(&[("a", "foo")]),
            ),
            // keepequal / dropequal compare the joined sources with the target label
            (
                &[("a", "1"), ("b", "1")],
                r#"[{"source_labels":["a"],"target_label":"b","action":"keepequal"}]"#,
                Some(&[("a", "1"), ("b", "1")]),
            ),
            (
                &[("a", "1"), ("b", "2")],
                r#"[{"source_labels":["a"],"target_label":"b","action":"keepequal"}]"#,
                None,
            ),
            (
                &[("a", "1"), ("b", "1")],
                r#"[{"source_labels":["a"],"target_label":"b","action":"dropequal"}]"#,
                None,
            ),
            // hashmod: md5's low 64 bits modulo the modulus (Prometheus's own test case)
            (
                &[("a", "foo"), ("b", "bar"), ("c", "baz")],
                r#"[{"source_labels":["c"],"target_label":"d","action":"hashmod","modulus":1000}]"#,
                Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
            ),
            // labelmap copies (the original stays)
            (
                &[
                    ("__meta_my_bar", "aaa"),
                    ("__meta_my_baz", "bbb"),
                    ("__meta_other", "ccc"),
                ],
                r#"[{"regex":"__meta_(my.*)","action":"labelmap"}]"#,
                Some(&[
                    ("__meta_my_bar", "aaa"),
                    ("__meta_my_baz", "bbb"),
                    ("__meta_other", "ccc"),
                    ("my_bar", "aaa"),
                    ("my_baz", "bbb"),
                ]),
            ),
            (
                &[("a", "foo"), ("b1", "x")],
                r#"[{"regex":"(b.*)","action":"labelmap","replacement":"${1}_bar"}]"#,
                Some(&[("a", "foo"), ("b1", "x"), ("b1_bar", "x")]),
            ),
            // labeldrop / labelkeep act on names
            (
                &[("a", "foo"), ("b", "bar"), ("c", "baz")],
                r#"[{"regex":"(b|c)","action":"labeldrop"}]"#,
                Some(&[("a", "foo")]),
            ),
            (
                &[("a", "foo"), ("b", "bar"), ("c", "baz")],
                r#"[{"regex":"(b|c)","action":"labelkeep"}]"#,
                Some(&[("b", "bar"), ("c", "baz")]),
            ),
            // nothing left is dropped
            (
                &[("a", "foo")],
                r#"[{"regex":"a","action":"labeldrop"}]"#,
                None,
            ),
            // lowercase / uppercase
            (
                &[("foo", "bAr123Foo")],
                r#"[{"source_labels":["foo"],"target_label":"foo_lower","action":"lowercase"},{"source_labels":["foo"],"target_label":"foo_upper","action":"uppercase"}]"#,
                Some(&[
                    ("foo", "bAr123Foo"),
                    ("foo_lower", "bar123foo"),
                    ("foo_upper", "BAR123FOO"),
                ]),
            ),
            // rules see the previous rules' output
            (
                &[("a", "foo")],
                r#"[{"source_labels":["a"],"target_label":"b"},{"source_labels":["b"],"regex":"foo","action":"drop"}]"#,
                None,
            ),
            // `.` does not match a newline (Go's default)
            (
                &[("a", "x\ny")],
                r#"[{"source_labels":["a"],"regex":".*","action":"keep"}]"#,
                None,
            ),
        ];
        for (input, cfg, want) in cases {
            let want = want.map(|w| sorted(ls(w)));
            assert_eq!(run(input, cfg), want, "{cfg} on {input:?}");
        }
    }

    #[test]
    fn invalid_configs_are_refused_with_prometheus_messages() {
        let cases = [
            (
                r#"{"action":"hashmod","target_label":"x"}"#,
                "requires non-zero modulus",
            ),
            (
                r#"{"action":"replace","target_label":""}"#,
                "requires 'target_label'",
            ),
            (r#"{"action":"lowercase"}"#, "requires 'target_label'"),
            (r#"{"target_label":"1abc"}"#, "is invalid 'target_label'"),
            (
                r#"{"action":"uppercase","target_label":"${1}"}"#,
                "is invalid 'target_label'",
            ),
            (
                r#"{"action":"labelmap","replacement":"a-b"}"#,
                "is invalid 'replacement'",
            ),
            (
                r#"{"action":"labeldrop","source_labels":["a"]}"#,
                "requires only 'regex'",
            ),
            (
                r#"{"action":"keepequal","target_label":"a","regex":"x"}"#,
                "requires only 'source_labels'",
            ),
            (
                r#"{"regex":"(","target_label":"a"}"#,
                "invalid relabel regex",
            ),
            (r#"{"action":"frobnicate"}"#, "unknown relabel action"),
        ];
        for (cfg, msg) in cases {
            let c: RelabelConfig = serde_json::from_str(cfg).unwrap();
            let err = c.compile().unwrap_err();
            assert!(err.contains(msg), "{cfg}: {err}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,6}"
    }

    fn label_set() -> impl Strategy<Value = Vec<Label>> {
        proptest::collection::btree_map(name(), "[a-zA-Z0-9 .-]{1,8}", 0..6)
            .prop_map(|m| m.into_iter().map(|(n, v)| Label::new(n, v)).collect())
    }

    proptest! {
        /// keep and drop with the same regex partition every set.
        #[test]
        fn keep_and_drop_partition(labels in label_set(), src in name(), re in "[a-z.*]{1,4}") {
            let cfg = |action: &str| RelabelConfig {
                source_labels: vec![src.clone()],
                regex: re.clone(),
                action: action.into(),
                ..serde_json::from_str("{}").unwrap()
            };
            let (Ok(keep), Ok(drop)) = (cfg("keep").compile(), cfg("drop").compile()) else {
                return Ok(());
            };
            let kept = process(labels.clone(), &[keep]);
            let dropped = process(labels.clone(), &[drop]);
            prop_assert!(kept.is_some() != dropped.is_some() || labels.is_empty());
        }

        /// hashmod always lands in [0, modulus) and is a function of the value alone.
        #[test]
        fn hashmod_is_stable_and_bounded(v in ".{0,20}", m in 1u64..10_000) {
            let h = hash64(&v) % m;
            prop_assert!(h < m);
            prop_assert_eq!(h, hash64(&v.clone()) % m);
        }

        /// labeldrop then labelkeep with the same regex leaves nothing; labelkeep keeps only
        /// matching names; the default rule (replace `(.*)` of nothing into a valid target)
        /// sets the target to the empty match, i.e. removes it.
        #[test]
        fn label_actions_respect_names(labels in label_set(), re in "[a-z_]{1,3}\\.\\*") {
            let keep = RelabelConfig { regex: re.clone(), action: "labelkeep".into(), ..serde_json::from_str("{}").unwrap() };
            let out = process(labels.clone(), &[keep.compile().unwrap()]).unwrap_or_default();
            let r = Regex::new(&format!("^(?:{re})$")).unwrap();
            prop_assert!(out.iter().all(|l| r.is_match(&l.name)));
            prop_assert_eq!(out.len(), labels.iter().filter(|l| r.is_match(&l.name)).count());
        }
    }
}
