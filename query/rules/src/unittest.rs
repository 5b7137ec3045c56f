//! `novamon test rules`: promtool's rule unit-test format (`rule_files`,
//! `evaluation_interval`, `group_eval_order`, `tests` with `input_series`, `alert_rule_test`
//! and `promql_expr_test`) run on the real evaluator over an in-memory store, starting at the
//! Unix epoch as promtool does. Owns the test-file semantics and the report.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use storage::{Label, Labels};

use super::file::{self, Lang};
use super::group::{Backend, Env, Group};
use promql::promqltest::mem::MemStore;
use promql::promqltest::{load, load_batch, parse_series, SeqValue};
use promql::{CounterResetHint, Engine, EngineOptions, FloatHistogram, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    eval_time: String,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    #[serde(default)]
    value: f64,
    /// A native histogram in the test notation (`{{schema:0 sum:5 count:4 buckets:[1 2 1]}}`);
    /// when set, `value` is not looked at.
    #[serde(default)]
    histogram: String,
}

/// Test groups passed and failed over all files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestSummary {
    pub passed: usize,
    pub failed: usize,
}

/// Runs every test file, printing promtool's per-file report, the failures, and last
/// `N passed, M failed` (counting test groups; a file that cannot be loaded counts one failure).
pub fn run_files(paths: &[PathBuf], out: &mut dyn Write) -> io::Result<TestSummary> {
    let mut sum = TestSummary::default();
    for path in paths {
        writeln!(out, "Unit Testing:  {}", path.display())?;
        match run_file(path) {
            Err(e) => {
                writeln!(out, "  FAILED:\n    {e}\n")?;
                sum.failed += 1;
            }
            Ok(results) => {
                let failures: Vec<&(String, Vec<String>)> = results
                    .iter()
                    .filter(|(_, errs)| !errs.is_empty())
                    .collect();
                sum.passed += results.len() - failures.len();
                sum.failed += failures.len();
                if failures.is_empty() {
                    writeln!(out, "  SUCCESS\n")?;
                } else {
                    writeln!(out, "  FAILED:")?;
                    for (name, errs) in failures {
                        if !name.is_empty() {
                            writeln!(out, "    name: {name},")?;
                        }
                        for e in errs {
                            writeln!(out, "{e}")?;
                        }
                    }
                    writeln!(out)?;
                }
            }
        }
    }
    writeln!(out, "{} passed, {} failed", sum.passed, sum.failed)?;
    Ok(sum)
}

fn dur(s: &str, what: &str) -> Result<i64, String> {
    file::duration(s).map_err(|e| format!("{what}: {e}"))
}

/// Loads a test file and runs its groups; `(name, errors)` per test group.
fn run_file(path: &Path) -> Result<Vec<(String, Vec<String>)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tf: TestFile =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let eval_interval = match &tf.evaluation_interval {
        Some(s) => dur(s, "evaluation_interval")?,
        None => 60_000,
    };
    if eval_interval <= 0 {
        return Err("evaluation_interval must be positive".into());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let files = file::expand_globs(&tf.rule_files, base)?;
    let mut specs = Vec::new();
    for f in &files {
        specs.extend(file::load_file(f).map_err(|errs| errs.join("\n    "))?);
    }
    // As promtool: the groups named in group_eval_order first, in that order (names of no
    // group are ignored), then the others as loaded.
    let mut ordered = Vec::with_capacity(specs.len());
    for name in &tf.group_eval_order {
        if let Some(i) = specs.iter().position(|g| &g.name == name) {
            ordered.push(specs.remove(i));
        }
    }
    ordered.append(&mut specs);
    let specs = ordered;
    let mut results = Vec::new();
    for tg in &tf.tests {
        let errs =
            run_group(tg, &specs, eval_interval).unwrap_or_else(|e| vec![format!("    {e}")]);
        results.push((tg.name.clone(), errs));
    }
    Ok(results)
}

fn show_duration(ms: i64) -> String {
    promql_parser::util::display_duration(&std::time::Duration::from_millis(ms.max(0) as u64))
}

fn run_group(
    tg: &TestGroup,
    specs: &[file::GroupSpec],
    eval_interval: i64,
) -> Result<Vec<String>, String> {
    let interval = match &tg.interval {
        Some(s) => dur(s, "interval")?,
        None => eval_interval,
    };
    let store = Arc::new(MemStore::default());
    let texts: Vec<String> = tg
        .input_series
        .iter()
        .map(|s| format!("{} {}", s.series, s.values))
        .collect();
    let mut series = parse_series(texts.iter().map(String::as_str))
        .map_err(|(i, e)| format!("input series {:?}: {e}", tg.input_series[i].series))?;
    for s in &mut series {
        chunk_hints(&mut s.values);
    }
    load(&*store, load_batch(interval, &series)).map_err(|e| e.to_string())?;
    let engine = Arc::new(Engine::new(store.clone(), EngineOptions::default()));
    let backend = Backend {
        engine: engine.clone(),
        querier: store.clone(),
        appendable: store.clone(),
        logs: None,
        slots: None,
    };
    let env = Env {
        backend: &backend,
        external_labels: &tg.external_labels,
        external_url: &tg.external_url,
        sink: None,
    };
    let mut groups: Vec<Group> = Vec::new();
    for spec in specs {
        if spec.lang == Lang::LogQL {
            return Err(format!(
                "group {:?}: LogQL rules cannot be unit-tested",
                spec.name
            ));
        }
        let mut g = Group::new(spec.clone(), eval_interval, 0);
        g.skip_restore();
        groups.push(g);
    }

    let mut alert_tests: Vec<(i64, &AlertTest)> = Vec::new();
    for t in &tg.alert_rule_test {
        alert_tests.push((dur(&t.eval_time, "eval_time")?, t));
    }
    alert_tests.sort_by_key(|(t, _)| *t);
    let mut expr_tests = Vec::new();
    for t in &tg.promql_expr_test {
        expr_tests.push((dur(&t.eval_time, "eval_time")?, t));
    }
    let maxt = alert_tests
        .iter()
        .map(|(t, _)| *t)
        .chain(expr_tests.iter().map(|(t, _)| *t))
        .max()
        .unwrap_or(0);

    let mut errs = Vec::new();
    let mut next_alert = 0;
    let mut ts = 0;
    while ts <= maxt {
        let mut eval_errs = Vec::new();
        for g in &mut groups {
            g.eval(ts, &env);
            for r in &g.rules {
                if let Some(e) = &r.last_error {
                    eval_errs.push(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.spec.name,
                        show_duration(ts)
                    ));
                }
            }
        }
        // As promtool: a rule that fails to evaluate ends the test group there.
        if !eval_errs.is_empty() {
            return Ok(eval_errs);
        }
        while next_alert < alert_tests.len() && alert_tests[next_alert].0 < ts + eval_interval {
            let (t, test) = alert_tests[next_alert];
            next_alert += 1;
            if let Some(e) = check_alerts(test, t, &groups) {
                errs.push(e);
            }
        }
        ts += eval_interval;
    }
    for (t, test) in expr_tests {
        if let Some(e) = check_expr(&engine, test, t) {
            errs.push(e);
        }
    }
    Ok(errs)
}

type Expected = (Labels, BTreeMap<String, String>);

fn show_alerts(v: &[Expected]) -> String {
    if v.is_empty() {
        return "[]".to_owned();
    }
    let mut s = String::from("[\n");
    for (i, (l, a)) in v.iter().enumerate() {
        let ann = Labels::from_pairs(a.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        s.push_str(&format!(
            "            {i}:\n              Labels:{l}\n              Annotations:{ann}\n"
        ));
    }
    s.push_str("            ]");
    s
}

/// Compares the firing alerts of the rules named `alertname` with the expected ones.
fn check_alerts(test: &AlertTest, t: i64, groups: &[Group]) -> Option<String> {
    let mut got: Vec<Expected> = groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter(|r| r.spec.alert && r.spec.name == test.alertname)
        .flat_map(|r| r.active.values())
        .filter(|a| a.state == super::group::AlertState::Firing)
        .map(|a| (a.labels.clone(), a.annotations.clone()))
        .collect();
    let mut exp: Vec<Expected> = test
        .exp_alerts
        .iter()
        .map(|e| {
            let mut pairs: Vec<Label> =
                e.exp_labels.iter().map(|(k, v)| Label::new(k, v)).collect();
            pairs.push(Label::new("alertname", &test.alertname));
            (Labels::new(pairs), e.exp_annotations.clone())
        })
        .collect();
    got.sort();
    exp.sort();
    if got == exp {
        return None;
    }
    Some(format!(
        "    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
        test.alertname,
        show_duration(t),
        show_alerts(&exp),
        show_alerts(&got)
    ))
}

/// The counter-reset hints Prometheus's TSDB gives histograms it stores in one chunk, which
/// promtool's expectations show (`counter_reset_hint:not_reset`): a histogram following another
/// is "not a reset" unless it is one, which starts a chunk marked "reset"; a float in between
/// starts a new chunk, whose first histogram has no hint. Hints written in the notation stay.
fn chunk_hints(values: &mut [SeqValue]) {
    let mut prev: Option<FloatHistogram> = None;
    for v in values {
        match v {
            SeqValue::Histogram(h) => {
                if let (Some(p), CounterResetHint::Unknown) = (&prev, h.counter_reset_hint) {
                    h.counter_reset_hint = if h.detect_reset(p) {
                        CounterResetHint::CounterReset
                    } else {
                        CounterResetHint::NotCounterReset
                    };
                }
                prev = Some((**h).clone());
            }
            SeqValue::Float(_) => prev = None,
            SeqValue::Omitted => {}
        }
    }
}

/// A sample as compared: labels, float, histogram in the test notation ("" for a float).
type Got = (Labels, f64, String);

/// An expected sample of `exp_samples`: its labels parsed, its histogram parsed and printed
/// back in the test notation, as promtool does.
fn expected_sample(s: &ExpSample) -> Result<Got, String> {
    let mut labels = parse_series([s.labels.as_str()]).map_err(|(_, e)| e.to_string())?;
    let labels = labels.remove(0).labels;
    if s.histogram.is_empty() {
        return Ok((labels, s.value, String::new()));
    }
    let mut values = parse_series([format!("{{}} {}", s.histogram).as_str()])
        .map_err(|(_, e)| e.to_string())?
        .remove(0)
        .values;
    if values.len() != 1 {
        return Err(format!("expected 1 value, got {}", values.len()));
    }
    match values.pop() {
        Some(SeqValue::Histogram(h)) => Ok((labels, s.value, h.test_expression())),
        _ => Err(format!("expected histogram, got {:?}", s.histogram)),
    }
}

/// promtool's form: `{__name__="x", a="b"} 1.5E+00, …`, a histogram in the test notation.
fn show_samples(v: &[Got]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|(l, v, h)| {
            let pairs: Vec<String> = l
                .iter()
                .map(|l| format!("{}={:?}", l.name, l.value))
                .collect();
            let value = if h.is_empty() {
                gocompat::fmt::scientific(*v).to_uppercase()
            } else {
                h.clone()
            };
            format!("{{{}}} {value}", pairs.join(", "))
        })
        .collect();
    items.join(", ")
}

fn check_expr(engine: &Engine, test: &ExprTest, t: i64) -> Option<String> {
    let fail = |msg: String| {
        Some(format!(
            "    expr: {:?}, time: {},\n        {msg}",
            test.expr,
            show_duration(t)
        ))
    };
    // As promtool: a sample is its labels, its float and its histogram in the test notation
    // (empty for a float); the float of a histogram sample is 0.
    let mut got: Vec<Got> = match engine.instant_query(&test.expr, t) {
        Err(e) => return fail(format!("err: {e}")),
        Ok(r) => match r.value {
            Value::Vector(v) => v
                .into_iter()
                .map(|s| {
                    let h = s.h.map(|h| h.test_expression()).unwrap_or_default();
                    (s.labels, if h.is_empty() { s.v } else { 0.0 }, h)
                })
                .collect(),
            Value::Scalar { v, .. } => vec![(Labels::default(), v, String::new())],
            other => {
                return fail(format!(
                    "err: expression must evaluate to a vector or scalar, got {}",
                    other.type_name()
                ))
            }
        },
    };
    let mut exp = Vec::new();
    for s in &test.exp_samples {
        match expected_sample(s) {
            Ok(e) => exp.push(e),
            Err(e) => return fail(format!("err: labels {:?}: {e}", s.labels)),
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    exp.sort_by(|a, b| a.0.cmp(&b.0));
    let same = got.len() == exp.len()
        && got
            .iter()
            .zip(&exp)
            .all(|(g, e)| g.0 == e.0 && promql::promqltest::almost_equal(g.1, e.1) && g.2 == e.2);
    if same {
        return None;
    }
    fail(format!(
        "exp: {}\n        got: {}",
        show_samples(&exp),
        show_samples(&got)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rules: &str, test: &str) -> (TestSummary, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let t = dir.path().join("t.yml");
        std::fs::write(&t, test).unwrap();
        let mut out = Vec::new();
        let s = run_files(&[t], &mut out).unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    const RULES: &str = r#"
groups:
- name: g
  rules:
  - record: job:up:sum
    expr: sum by (job) (up)
  - alert: JobDown
    expr: job:up:sum == 0
    for: 2m
    labels: {severity: page}
    annotations: {summary: "{{ $labels.job }} down ({{ $value }})"}
"#;

    #[test]
    fn pending_then_firing_with_recording_rule_input() {
        let test = r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: up{job="api", instance="a"}
    values: 1 1 0 0 0 0 1
  alert_rule_test:
  - {eval_time: 3m, alertname: JobDown, exp_alerts: []}
  - eval_time: 4m
    alertname: JobDown
    exp_alerts:
    - exp_labels: {job: api, severity: page}
      exp_annotations: {summary: "api down (0)"}
  - {eval_time: 6m, alertname: JobDown, exp_alerts: []}
  promql_expr_test:
  - expr: job:up:sum
    eval_time: 2m
    exp_samples: [{labels: 'job:up:sum{job="api"}', value: 0}]
  - expr: ALERTS
    eval_time: 3m
    exp_samples: [{labels: 'ALERTS{alertname="JobDown", alertstate="pending", job="api", severity="page"}', value: 1}]
"#;
        let (s, out) = run(RULES, test);
        assert_eq!(
            s,
            TestSummary {
                passed: 1,
                failed: 0
            },
            "{out}"
        );
        assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
    }

    #[test]
    fn a_wrong_expectation_fails_with_both_sides_shown() {
        let test = r#"
rule_files: [rules.yml]
tests:
- input_series: [{series: 'up{job="api"}', values: '0x10'}]
  alert_rule_test:
  - eval_time: 1m
    alertname: JobDown
    exp_alerts: [{exp_labels: {job: api, severity: page}}]
"#;
        let (s, out) = run(RULES, test);
        assert_eq!(
            s,
            TestSummary {
                passed: 0,
                failed: 1
            },
            "{out}"
        );
        assert!(out.contains("alertname: JobDown, time: 1m"), "{out}");
        assert!(out.contains("got:[]"), "{out}");
    }

    #[test]
    fn malformed_input_series_fail_the_file_with_the_reason() {
        for (series, values, want) in [
            // An unclosed `{` used to loop, growing without bound.
            (r#"up{job="api""#, "0+1x10", "in label set"),
            (r#"up{job="api}"#, "1 2", "unterminated string"),
            ("up", "0+1x100000000000", "expand to more than"),
        ] {
            let test = format!(
                "rule_files: [rules.yml]\ntests:\n- input_series: [{{series: '{series}', values: '{values}'}}]\n"
            );
            let (s, out) = run(RULES, &test);
            assert_eq!(
                s,
                TestSummary {
                    passed: 0,
                    failed: 1
                },
                "{out}"
            );
            assert!(out.contains("FAILED") && out.contains(want), "{out}");
        }
    }

    #[test]
    fn histogram_expectations_compare_in_the_test_notation() {
        let test = r#"
rule_files: [rules.yml]
tests:
- interval: 1m
  input_series:
  - series: h
    values: '{{schema:1 sum:-0.3 count:32.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5}}'
  - series: g
    values: '{{schema:0 sum:5 count:4 buckets:[1 2 1]}}'
  promql_expr_test:
  - expr: h
    eval_time: 1m
    exp_samples:
    - labels: h
      histogram: '{{schema:1 sum:-0.3 count:32.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5}}'
  - expr: g
    eval_time: 0m
    exp_samples: [{labels: g, histogram: '{{schema:0 sum:5 count:4 buckets:[1 2 1]}}'}]
- interval: 1m
  input_series:
  - series: test_histogram_repeat
    values: '{{sum:3 count:2 buckets:[2]}}x2'
  - series: test_histogram_increase
    values: '{{sum:3 count:2 buckets:[2]}}+{{sum:1.3 count:1 buckets:[1]}}x2'
  - series: test_histogram_reset
    values: '{{sum:3 count:2 buckets:[2]}} {{sum:1 count:1 buckets:[1]}}'
  promql_expr_test:
  - expr: test_histogram_repeat
    eval_time: 2m
    exp_samples:
    - labels: test_histogram_repeat
      histogram: '{{count:2 sum:3 counter_reset_hint:not_reset buckets:[2]}}'
  - expr: test_histogram_increase
    eval_time: 2m
    exp_samples:
    - labels: test_histogram_increase
      histogram: '{{count:4 sum:5.6 counter_reset_hint:not_reset buckets:[4]}}'
  - expr: test_histogram_reset
    eval_time: 1m
    exp_samples:
    - labels: test_histogram_reset
      histogram: '{{count:1 sum:1 counter_reset_hint:reset buckets:[1]}}'
"#;
        let (s, out) = run(RULES, test);
        assert_eq!((s.passed, s.failed), (2, 0), "{out}");
        let wrong = test.replace("buckets:[1 2 1]}}'}]", "buckets:[1 2 2]}}'}]");
        let (s, out) = run(RULES, &wrong);
        assert_eq!(s.failed, 1, "{out}");
        assert!(
            out.contains("exp: {__name__=\"g\"} {{count:4 sum:5 buckets:[1 2 2]}}")
                && out.contains("got: {__name__=\"g\"} {{count:4 sum:5 buckets:[1 2 1]}}"),
            "{out}"
        );
        let float_for_histogram = test.replace(
            "histogram: '{{schema:0 sum:5 count:4 buckets:[1 2 1]}}'",
            "value: 4",
        );
        let (s, out) = run(RULES, &float_for_histogram);
        assert_eq!(s.failed, 1, "{out}");
    }
}
