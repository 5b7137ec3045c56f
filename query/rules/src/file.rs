//! Prometheus's rule-file format (`groups:` of `record`/`alert` rules) and its validation,
//! with errors located by file, line and rule as promtool reports them. Owns parsing only;
//! evaluation is `group`'s.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use gocompat::units::parse_prometheus_duration;
use serde::{Deserialize, Deserializer};

use super::template::Template;

/// Which query language a group's expressions are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    PromQL,
    /// Loki's ruler: LogQL metric queries over the log store.
    LogQL,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    pub file: String,
    pub interval_ms: Option<i64>,
    pub query_offset_ms: Option<i64>,
    pub limit: usize,
    pub lang: Lang,
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    /// `record` or `alert` name.
    pub name: String,
    pub alert: bool,
    pub expr: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A YAML scalar read as text, as Go's yaml.Node takes `expr: 1` or `severity: 2`.
#[derive(Clone, Debug, Default)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(Scalar(s)),
            serde_yaml::Value::Number(n) => Ok(Scalar(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Scalar(b.to_string())),
            serde_yaml::Value::Null => Ok(Scalar(String::new())),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interval: Option<Scalar>,
    #[serde(default)]
    query_offset: Option<Scalar>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    labels: BTreeMap<String, Scalar>,
    /// novamon's per-group language key; Loki's ruler reads whole files as LogQL, here a
    /// group opts in with `type: logql` so both kinds can live in one rule file.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: Option<Scalar>,
    #[serde(default)]
    alert: Option<Scalar>,
    #[serde(default)]
    expr: Option<Scalar>,
    #[serde(default, rename = "for")]
    for_: Option<Scalar>,
    #[serde(default)]
    keep_firing_for: Option<Scalar>,
    #[serde(default)]
    labels: BTreeMap<String, Scalar>,
    #[serde(default)]
    annotations: BTreeMap<String, Scalar>,
}

/// Reads and validates one rule file; every problem found is returned, each located.
pub(crate) fn load_file(path: &Path) -> Result<Vec<GroupSpec>, Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: {e}")])?;
    parse_file(&name, &text)
}

pub(crate) fn parse_file(name: &str, text: &str) -> Result<Vec<GroupSpec>, Vec<String>> {
    let raw: RawFile = if text.trim().is_empty() {
        RawFile { groups: Vec::new() }
    } else {
        serde_yaml::from_str(text).map_err(|e| vec![format!("{name}: {e}")])?
    };
    let positions = rule_positions(text);
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    let mut groups = Vec::new();
    let mut rule_no = 0;
    for g in raw.groups {
        let gname = g.name.clone();
        let mut gerr = |msg: String| errs.push(format!("{name}: {msg}"));
        if gname.is_empty() {
            gerr("Groupname must not be empty".into());
        } else if !seen.insert(gname.clone()) {
            gerr(format!("{gname:?}: groupname is repeated in the same file"));
        }
        let interval_ms = match &g.interval {
            Some(s) => match duration(&s.0) {
                Ok(0) => {
                    gerr(format!("group {gname:?}: interval must not be zero"));
                    None
                }
                Ok(ms) => Some(ms),
                Err(e) => {
                    gerr(format!("group {gname:?}: interval: {e}"));
                    None
                }
            },
            None => None,
        };
        let query_offset_ms = g.query_offset.as_ref().map(|s| {
            duration(&s.0).unwrap_or_else(|e| {
                gerr(format!("group {gname:?}: query_offset: {e}"));
                0
            })
        });
        let lang = match g.kind.as_deref() {
            None | Some("promql") | Some("prometheus") => Lang::PromQL,
            Some("logql") | Some("loki") => Lang::LogQL,
            Some(other) => {
                gerr(format!(
                    "group {gname:?}: unknown type {other:?} (promql or logql)"
                ));
                Lang::PromQL
            }
        };
        let group_labels: BTreeMap<String, String> =
            g.labels.into_iter().map(|(k, v)| (k, v.0)).collect();
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let pos = positions.get(rule_no);
            rule_no += 1;
            let rname = r
                .record
                .as_ref()
                .or(r.alert.as_ref())
                .map(|s| s.0.clone())
                .unwrap_or_default();
            let at = |msg: &str| {
                // As promtool: an expression error points at the expression, others at the
                // rule's name.
                let (key, msg) = match msg.strip_prefix(EXPR_MARK) {
                    Some(m) => ("expr", m),
                    None => (if r.alert.is_some() { "alert" } else { "record" }, msg),
                };
                let loc = pos
                    .and_then(|p| {
                        p.keys
                            .get(key)
                            .map(|(l, c)| format!("{l}:{c}: "))
                            .or(Some(format!("{}: ", p.line)))
                    })
                    .unwrap_or_default();
                format!(
                    "{name}: {loc}group {gname:?}, rule {}, {rname:?}: {msg}",
                    i + 1
                )
            };
            match check_rule(&r, lang) {
                Ok(mut spec) => {
                    for (k, v) in &group_labels {
                        spec.labels.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    rules.push(spec);
                }
                Err(msgs) => errs.extend(msgs.iter().map(|m| at(m))),
            }
        }
        groups.push(GroupSpec {
            name: gname,
            file: name.to_owned(),
            interval_ms,
            query_offset_ms,
            limit: g.limit,
            lang,
            rules,
        });
    }
    if errs.is_empty() {
        Ok(groups)
    } else {
        Err(errs)
    }
}

fn check_rule(r: &RawRule, lang: Lang) -> Result<RuleSpec, Vec<String>> {
    let mut errs = Vec::new();
    let (name, alert) = match (&r.record, &r.alert) {
        (Some(_), Some(_)) => {
            errs.push("only one of 'record' and 'alert' must be set".to_owned());
            (String::new(), false)
        }
        (None, None) => {
            errs.push("one of 'record' or 'alert' must be set".to_owned());
            (String::new(), false)
        }
        (Some(rec), None) => (rec.0.clone(), false),
        (None, Some(a)) => (a.0.clone(), true),
    };
    if name.is_empty() && errs.is_empty() {
        errs.push(format!(
            "field '{}' must be set in rule",
            if alert { "alert" } else { "record" }
        ));
    }
    let expr = r.expr.as_ref().map(|e| e.0.clone()).unwrap_or_default();
    if expr.is_empty() {
        errs.push("field 'expr' must be set in rule".to_owned());
    } else if let Err(e) = parse_expr(&expr, lang) {
        errs.push(format!("{EXPR_MARK}could not parse expression: {e}"));
    }
    if !alert && !name.is_empty() {
        if !r.annotations.is_empty() {
            errs.push("invalid field 'annotations' in recording rule".to_owned());
        }
        if r.for_.is_some() {
            errs.push("invalid field 'for' in recording rule".to_owned());
        }
        if r.keep_firing_for.is_some() {
            errs.push("invalid field 'keep_firing_for' in recording rule".to_owned());
        }
        if !is_metric_name(&name) {
            errs.push(format!("invalid recording rule name: {name}"));
        }
    }
    let mut dur = |f: &Option<Scalar>, what: &str| match f {
        Some(s) => duration(&s.0).unwrap_or_else(|e| {
            errs.push(format!("{what}: {e}"));
            0
        }),
        None => 0,
    };
    let for_ms = dur(&r.for_, "for");
    let keep_firing_for_ms = dur(&r.keep_firing_for, "keep_firing_for");
    let labels: BTreeMap<String, String> = r
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let annotations: BTreeMap<String, String> = r
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for k in labels.keys() {
        if k == "__name__" {
            errs.push("invalid label name: __name__".to_owned());
        } else if !is_label_name(k) {
            errs.push(format!("invalid label name: {k}"));
        }
    }
    for k in annotations.keys() {
        if !is_label_name(k) {
            errs.push(format!("invalid annotation name: {k}"));
        }
    }
    if alert {
        let tname = format!("__alert_{name}");
        for (k, v) in labels.iter().chain(annotations.iter()) {
            if let Err(e) = Template::parse(&tname, v) {
                let what = if labels.contains_key(k) {
                    "label"
                } else {
                    "annotation"
                };
                errs.push(format!("{what} {k:?}: {e}"));
            }
        }
    }
    if errs.is_empty() {
        Ok(RuleSpec {
            name,
            alert,
            expr,
            for_ms,
            keep_firing_for_ms,
            labels,
            annotations,
        })
    } else {
        Err(errs)
    }
}

fn parse_expr(expr: &str, lang: Lang) -> Result<(), String> {
    match lang {
        Lang::PromQL => promql::check_syntax(expr).map_err(|e| e.to_string()),
        Lang::LogQL => match logql::parse(expr) {
            Ok(logql::ast::Expr::Metric(_)) => Ok(()),
            Ok(_) => Err("a rule needs a LogQL metric query, not a log query".to_owned()),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// A duration of a rule file in ms, in Prometheus's notation.
pub(crate) fn duration(s: &str) -> Result<i64, String> {
    parse_prometheus_duration(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| e.to_string())
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Marks an error about the expression, which is located at the `expr` key.
const EXPR_MARK: &str = "\u{0}expr\u{0}";

/// Where a rule is in its file: the line of its list item and the line:column of each key's
/// value (1-based).
struct RulePos {
    line: usize,
    keys: BTreeMap<String, (usize, usize)>,
}

/// The positions of every rule under a `rules:` key, in file order. Good for block-style
/// YAML, which is how rule files are written; serde_yaml keeps no positions of its own.
fn rule_positions(text: &str) -> Vec<RulePos> {
    let mut out: Vec<RulePos> = Vec::new();
    let mut item_indent: Option<usize> = None;
    let mut awaiting_items = false;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let is_item = trimmed.starts_with("- ") || trimmed == "-";
        if awaiting_items {
            awaiting_items = false;
            if is_item {
                item_indent = Some(indent);
            }
        }
        if let Some(ind) = item_indent {
            if indent < ind || (indent == ind && !is_item) {
                item_indent = None;
            }
        }
        let (content, col) = if is_item {
            let rest = trimmed[1..].trim_start();
            (rest, raw.len() - rest.len())
        } else {
            (trimmed, indent)
        };
        if item_indent == Some(indent) && is_item {
            out.push(RulePos {
                line: i + 1,
                keys: BTreeMap::new(),
            });
        }
        if let Some((k, v)) = content.split_once(':') {
            if item_indent.is_some() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let value_col = col + k.len() + 1 + (v.len() - v.trim_start().len()) + 1;
                if let Some(p) = out.last_mut() {
                    p.keys.entry(k.to_owned()).or_insert((i + 1, value_col));
                }
            }
            if k == "rules" && v.trim().is_empty() {
                awaiting_items = true;
            }
        }
    }
    out
}

/// Expands the `rule_files` patterns (relative ones against `base`) with shell globbing as
/// Prometheus does; a pattern matching nothing is no error.
pub(crate) fn expand_globs(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in patterns {
        let full = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        };
        let pat = full.to_string_lossy().into_owned();
        let paths = glob::glob(&pat).map_err(|e| format!("invalid rule file path {p:?}: {e}"))?;
        for entry in paths {
            let path = entry.map_err(|e| e.to_string())?;
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_file_parses_with_defaults_and_group_labels() {
        let text = r#"
groups:
  - name: g
    interval: 30s
    query_offset: 1m
    limit: 3
    labels: {team: ops}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels: {severity: 2}
        annotations:
          summary: "{{ $labels.instance }} down"
"#;
        let g = parse_file("f.yml", text).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].interval_ms, Some(30_000));
        assert_eq!(g[0].query_offset_ms, Some(60_000));
        assert_eq!(g[0].limit, 3);
        let r = &g[0].rules[1];
        assert!(r.alert);
        assert_eq!((r.for_ms, r.keep_firing_for_ms), (300_000, 60_000));
        assert_eq!(r.labels["severity"], "2");
        assert_eq!(r.labels["team"], "ops");
        assert_eq!(g[0].rules[0].labels["team"], "ops");
    }

    #[test]
    fn errors_are_located_and_all_reported() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: ok\n        expr: up\n      - alert: Bad\n        expr: sum(\n      - record: 'bad name'\n        expr: up\n        for: 1m\n  - name: g\n    rules: []\n";
        let errs = parse_file("f.yml", text).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with(
                "f.yml: 7:15: group \"g\", rule 2, \"Bad\": could not parse expression"
            )),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("f.yml: 8:17: group \"g\", rule 3, \"bad name\": invalid field 'for' in recording rule")), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("invalid recording rule name: bad name")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("groupname is repeated")),
            "{errs:?}"
        );
    }

    #[test]
    fn structural_errors_name_the_line() {
        let errs = parse_file("f.yml", "groups:\n  - name: g\n    rulez: []\n").unwrap_err();
        assert!(
            errs[0].contains("rulez") && errs[0].contains("line 3"),
            "{errs:?}"
        );
        let errs = parse_file("f.yml", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations: {s: '{{ nope }}'}\n").unwrap_err();
        assert!(
            errs[0].contains("function \"nope\" not defined"),
            "{errs:?}"
        );
        let errs = parse_file(
            "f.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: 5\n",
        )
        .unwrap_err();
        assert!(
            errs[0].contains("for: not a valid duration string"),
            "{errs:?}"
        );
    }

    #[test]
    fn deeply_nested_expressions_are_errors_not_stack_overflows() {
        let expr = format!("{}1{}", "(".repeat(150_000), ")".repeat(150_000));
        let text = format!("groups:\n- name: g\n  rules:\n  - record: r\n    expr: '{expr}'\n");
        // The 2 MiB stack rule loading gets on a spawned thread.
        let errs = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse_file("f.yml", &text).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(
            errs.iter().any(|e| e.contains("nested too deeply")),
            "{errs:?}"
        );
    }

    #[test]
    fn durations_as_prometheus_parses_them() {
        assert!(duration("").is_err());
        assert!(duration("1.5h").is_err());
    }

    #[test]
    fn logql_groups_take_logql_metric_queries() {
        let ok = "groups:\n- name: l\n  type: logql\n  rules:\n  - alert: Errors\n    expr: sum(count_over_time({app=\"x\"} |= \"error\" [5m])) > 0\n";
        assert_eq!(parse_file("f", ok).unwrap()[0].lang, Lang::LogQL);
        let bad =
            "groups:\n- name: l\n  type: logql\n  rules:\n  - alert: E\n    expr: '{app=\"x\"}'\n";
        assert!(parse_file("f", bad).unwrap_err()[0].contains("metric query"));
    }

    #[test]
    fn globs_expand_relative_to_the_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/a.yml"), "").unwrap();
        std::fs::write(dir.path().join("rules/b.yml"), "").unwrap();
        let got = expand_globs(&["rules/*.yml".into(), "none/*.yml".into()], dir.path()).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with("rules/a.yml"));
    }
}
