//! The PromQL conformance runner: executes promqltest scripts (Prometheus's own test format)
//! against the real engine over the real storage and reports every failing eval. Owns the
//! script semantics (loading, clearing, comparing results and annotations); evaluation is the
//! engine's.

mod nhcb;
mod script;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use storage::{
    AppendMode, Appendable, HistogramSample, Labels, Querier, Sample, SeriesBatch, StorageError,
    Tsdb, TsdbOptions, STALE_NAN_BITS,
};

use crate::float_histogram::FloatHistogram;
use crate::{Engine, EngineOptions, QueryError, QueryResult, Value};
use script::{Command, EvalCmd, EvalKind};
pub use script::{SeqValue, SeriesDesc, MAX_LOAD_VALUES};

/// Totals of a run, overall and per file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub files: Vec<FileSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub path: PathBuf,
    pub passed: usize,
    pub failed: usize,
}

/// Runs every script, each on a fresh TSDB in a temporary directory. Prints one block per
/// failing eval, one line per file and, last, `N passed, M failed`.
pub fn run_files(paths: &[PathBuf], out: &mut dyn Write) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for path in paths {
        let dir = tempfile::tempdir()?;
        let opts = TsdbOptions {
            // Test data starts at the Unix epoch and may go back in time after `clear`.
            retention: Duration::from_secs(200 * 365 * 86_400),
            out_of_order_window: Duration::from_secs(200 * 365 * 86_400),
            ..TsdbOptions::default()
        };
        let tsdb = Tsdb::open(dir.path(), opts).map_err(io::Error::other)?;
        let tsdb = Arc::new(tsdb);
        let fs = run_file(path, tsdb.clone(), out)?;
        drop(tsdb);
        summary.passed += fs.passed;
        summary.failed += fs.failed;
        summary.files.push(fs);
    }
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed)?;
    Ok(summary)
}

/// Parses series descriptions of the test notation (`metric{a="b"} 0+10x5 _ stale`): labels,
/// then values, all of them together expanding to at most [`MAX_LOAD_VALUES`] values. One that
/// does not parse is its index and a [`QueryError::Parse`] with the reason.
pub fn parse_series<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<SeriesDesc>, (usize, QueryError)> {
    let mut budget = MAX_LOAD_VALUES;
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| script::parse_series(t, &mut budget).map_err(|e| (i, QueryError::Parse(e))))
        .collect()
}

/// What the runner needs from a store: reading, appending, and clearing between scripts.
pub trait TestStore: Querier + Appendable + 'static {
    fn clear(&self) -> Result<(), StorageError>;
}

impl TestStore for Tsdb {
    fn clear(&self) -> Result<(), StorageError> {
        Tsdb::clear(self)
    }
}

/// Loads test data all or nothing; a rejected sample fails the load with its reason.
pub fn load(store: &dyn Appendable, batch: Vec<SeriesBatch>) -> Result<(), StorageError> {
    let mut app = store.appender(AppendMode::AllOrNothing);
    for b in batch {
        app.append(b);
    }
    let report = app.commit()?;
    match report.rejected.first() {
        Some(r) => Err(StorageError::Invalid(format!(
            "sample rejected: {} at {}: {}",
            r.labels, r.t, r.reason
        ))),
        None => Ok(()),
    }
}

pub(crate) fn run_file<S: TestStore>(
    path: &Path,
    store: Arc<S>,
    out: &mut dyn Write,
) -> io::Result<FileSummary> {
    let mut fs = FileSummary {
        path: path.to_path_buf(),
        ..FileSummary::default()
    };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)?;
    let cmds = match script::parse_script(&text) {
        Ok(c) => c,
        Err(e) => {
            writeln!(
                out,
                "FAIL {name}:{}: cannot parse test script: {}",
                e.line, e.msg
            )?;
            fs.failed += 1;
            writeln!(out, "== {name}: 0 passed, 1 failed")?;
            return Ok(fs);
        }
    };
    let querier: Arc<dyn Querier> = store.clone();
    let engine = Engine::new(querier, EngineOptions::default());
    for cmd in cmds {
        match cmd {
            Command::Clear => store.clear().map_err(io::Error::other)?,
            Command::Load {
                interval,
                series,
                with_nhcb,
            } => {
                let mut batch = load_batch(interval, &series);
                if with_nhcb {
                    batch.extend(nhcb::convert(interval, &series));
                }
                if let Err(e) = load(&*store, batch) {
                    writeln!(out, "FAIL {name}: load failed: {e}")?;
                    fs.failed += 1;
                }
            }
            Command::Eval(cmd) => match run_eval(&engine, &cmd) {
                Ok(()) => fs.passed += 1,
                Err(msg) => {
                    fs.failed += 1;
                    writeln!(
                        out,
                        "FAIL {name}:{}: {}\n{}",
                        cmd.line,
                        cmd.query,
                        indent(&msg)
                    )?;
                }
            },
        }
    }
    writeln!(out, "== {name}: {} passed, {} failed", fs.passed, fs.failed)?;
    Ok(fs)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

pub fn load_batch(interval: i64, series: &[SeriesDesc]) -> Vec<SeriesBatch> {
    let mut batch = Vec::with_capacity(series.len());
    for s in series {
        let mut samples = Vec::new();
        let mut histograms = Vec::new();
        for (i, v) in s.values.iter().enumerate() {
            let t = i as i64 * interval;
            match v {
                SeqValue::Float(f) => samples.push(Sample { t, v: *f }),
                SeqValue::Omitted => {}
                SeqValue::Histogram(h) => histograms.push(HistogramSample {
                    t,
                    h: storage::Histogram::from(h.as_ref()),
                }),
            }
        }
        // As upstream, a series described twice in one load keeps only its last description.
        batch.retain(|b: &SeriesBatch| b.labels != s.labels);
        if !samples.is_empty() || !histograms.is_empty() {
            batch.push(SeriesBatch {
                labels: s.labels.clone(),
                samples,
                histograms,
            });
        }
    }
    batch
}

fn run_eval(engine: &Engine, cmd: &EvalCmd) -> Result<(), String> {
    let res = match cmd.kind {
        EvalKind::Instant { t } => engine.instant_query(&cmd.query, t),
        EvalKind::Range { start, end, step } => engine.range_query(&cmd.query, start, end, step),
    };
    let res = match res {
        Err(e) => return check_failure(cmd, &e),
        Ok(_) if cmd.fail => return Err("expected an error, got none".into()),
        Ok(r) => r,
    };
    check_annotations(cmd, &res)?;
    match cmd.kind {
        EvalKind::Range { start, step, .. } => compare_matrix(cmd, &res.value, start, step),
        EvalKind::Instant { t } => {
            compare_instant(cmd, &res.value)?;
            // Query-bound functions legitimately differ in range mode.
            let bound_fn = ["range()", "step()", "start()", "end()"]
                .iter()
                .any(|f| cmd.query.contains(f));
            if cmd.ordered
                || bound_fn
                || !matches!(res.value, Value::Vector(_) | Value::Scalar { .. })
            {
                return Ok(());
            }
            // Like upstream, the same query in range mode must agree at the middle step.
            let range = engine
                .range_query(&cmd.query, t - 60_000, t + 60_000, 60_000)
                .map_err(|e| format!("error in range mode: {e}"))?;
            let Value::Matrix(m) = range.value else {
                return Err("range mode did not return a matrix".into());
            };
            let vec: Vec<crate::InstantSample> = m
                .into_iter()
                .filter_map(|s| {
                    if let Some(p) = s.samples.iter().find(|p| p.t == t) {
                        return Some(crate::InstantSample {
                            labels: s.labels.clone(),
                            t,
                            v: p.v,
                            h: None,
                        });
                    }
                    s.histograms
                        .iter()
                        .find(|p| p.t == t)
                        .map(|p| crate::InstantSample {
                            labels: s.labels.clone(),
                            t,
                            v: 0.0,
                            h: Some(p.h.clone()),
                        })
                })
                .collect();
            let as_value = match res.value {
                Value::Scalar { .. } => match vec.first() {
                    Some(s) => Value::Scalar { t, v: s.v },
                    None => Value::Vector(vec![]),
                },
                _ => Value::Vector(vec),
            };
            compare_instant(cmd, &as_value).map_err(|e| format!("range mode: {e}"))
        }
    }
}

fn check_failure(cmd: &EvalCmd, e: &QueryError) -> Result<(), String> {
    if !cmd.fail {
        return Err(format!("unexpected error: {e}"));
    }
    let msg = e.to_string();
    if let Some(want) = &cmd.fail_msg {
        if *want != msg {
            return Err(format!("expected error {want:?}, got {msg:?}"));
        }
    }
    if let Some(re) = &cmd.fail_regex {
        let re = regex::Regex::new(re).map_err(|e| format!("bad regex in test: {e}"))?;
        if !re.is_match(&msg) {
            return Err(format!("expected error matching {re}, got {msg:?}"));
        }
    }
    Ok(())
}

fn check_annotations(cmd: &EvalCmd, res: &QueryResult) -> Result<(), String> {
    for (kind, exp, got) in [
        ("warnings", &cmd.warn, &res.warnings),
        ("info annotations", &cmd.info, &res.infos),
    ] {
        if exp.forbidden && !got.is_empty() {
            return Err(format!("unexpected {kind}: {got:?}"));
        }
        if exp.required && got.is_empty() {
            return Err(format!("expected {kind}, got none"));
        }
        for m in &exp.msgs {
            if !got.iter().any(|g| g == m) {
                return Err(format!("expected {kind} {m:?}, got {got:?}"));
            }
        }
        for r in &exp.regexes {
            let re = regex::Regex::new(r).map_err(|e| format!("bad regex in test: {e}"))?;
            if !got.iter().any(|g| re.is_match(g)) {
                return Err(format!("expected {kind} matching {r:?}, got {got:?}"));
            }
        }
    }
    Ok(())
}

/// Prometheus's almostEqual with its test epsilon.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return storage::is_stale_nan(a) == storage::is_stale_nan(b);
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn compare_instant(cmd: &EvalCmd, got: &Value) -> Result<(), String> {
    if let Some(want) = &cmd.string {
        return match got {
            Value::String { v, .. } if v == want => Ok(()),
            other => Err(format!("expected string {want:?}, got {}", show(other))),
        };
    }
    if let Some((start, _, step)) = cmd.range_vector {
        return compare_matrix(cmd, got, start, step);
    }
    if let Some(want) = cmd.scalar {
        return match got {
            Value::Scalar { v, .. } if almost_equal(want, *v) => Ok(()),
            other => Err(format!("expected scalar {want}, got {}", show(other))),
        };
    }
    let Value::Vector(samples) = got else {
        return Err(format!("expected an instant vector, got {}", show(got)));
    };
    let mismatch = || format!("expected:\n{}got:\n{}", show_expected(cmd), show(got));
    if samples.len() != cmd.series.len() {
        return Err(mismatch());
    }
    for (i, exp) in cmd.series.iter().enumerate() {
        let found = if cmd.ordered {
            samples.get(i).filter(|s| s.labels == exp.labels)
        } else {
            samples.iter().find(|s| s.labels == exp.labels)
        };
        let ok = match (exp.values.as_slice(), found) {
            ([SeqValue::Float(v)], Some(s)) => s.h.is_none() && almost_equal(*v, s.v),
            ([SeqValue::Histogram(h)], Some(s)) => {
                s.h.as_ref().is_some_and(|got| histograms_match(h, got))
            }
            ([_], None) => false,
            _ => {
                return Err(format!(
                    "expected series {} must have exactly one value",
                    exp.labels
                ))
            }
        };
        if !ok {
            return Err(mismatch());
        }
    }
    Ok(())
}

fn compare_matrix(cmd: &EvalCmd, got: &Value, start: i64, step: i64) -> Result<(), String> {
    let Value::Matrix(series) = got else {
        return Err(format!("expected a range vector, got {}", show(got)));
    };
    let mismatch = || format!("expected:\n{}got:\n{}", show_expected(cmd), show(got));
    if series.len() != cmd.series.len() {
        return Err(mismatch());
    }
    let seen: HashSet<&Labels> = series.iter().map(|s| &s.labels).collect();
    if seen.len() != series.len() {
        return Err(format!("result contains duplicate series\n{}", mismatch()));
    }
    for exp in &cmd.series {
        let Some(act) = series.iter().find(|s| s.labels == exp.labels) else {
            return Err(mismatch());
        };
        let want: Vec<(i64, f64)> = exp
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                SeqValue::Float(f) => Some((start + i as i64 * step, *f)),
                _ => None,
            })
            .collect();
        let want_h: Vec<(i64, &FloatHistogram)> = exp
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                SeqValue::Histogram(h) => Some((start + i as i64 * step, h.as_ref())),
                _ => None,
            })
            .collect();
        let ok = want.len() == act.samples.len()
            && want
                .iter()
                .zip(act.samples.iter())
                .all(|((t, v), s)| *t == s.t && almost_equal(*v, s.v))
            && want_h.len() == act.histograms.len()
            && want_h
                .iter()
                .zip(act.histograms.iter())
                .all(|((t, h), p)| *t == p.t && histograms_match(h, &p.h));
        if !ok {
            return Err(mismatch());
        }
    }
    Ok(())
}

/// Prometheus's harness comparison: both histograms compacted, floats almost equal, spans and
/// schema exact.
fn histograms_match(want: &FloatHistogram, got: &FloatHistogram) -> bool {
    let (wp, wn) = want.canonical_buckets();
    let (gp, gn) = got.canonical_buckets();
    let buckets_match = |a: &[(i32, f64)], b: &[(i32, f64)]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && almost_equal(x.1, y.1))
    };
    want.schema == got.schema
        && almost_equal(want.count, got.count)
        && almost_equal(want.sum, got.sum)
        && (!want.uses_custom_buckets() || want.custom_values == got.custom_values)
        && want.zero_threshold == got.zero_threshold
        && almost_equal(want.zero_count, got.zero_count)
        && buckets_match(&wp, &gp)
        && buckets_match(&wn, &gn)
}

/// Test-expression form of a histogram for failure reports.
fn show_histogram(h: &FloatHistogram) -> String {
    let (p, n) = h.canonical_buckets();
    format!(
        "{{{{schema:{} count:{} sum:{} z_bucket:{} z_bucket_w:{} buckets:{p:?} n_buckets:{n:?} custom_values:{:?}}}}}",
        h.schema, h.count, h.sum, h.zero_count, h.zero_threshold, h.custom_values
    )
}

fn show_expected(cmd: &EvalCmd) -> String {
    let mut s = String::new();
    if let Some(v) = cmd.scalar {
        let _ = writeln!(s, "  scalar {v}");
    }
    for e in &cmd.series {
        let vals: Vec<String> = e
            .values
            .iter()
            .map(|v| match v {
                SeqValue::Float(f) if f.to_bits() == STALE_NAN_BITS => "stale".to_string(),
                SeqValue::Float(f) => f.to_string(),
                SeqValue::Omitted => "_".to_string(),
                SeqValue::Histogram(h) => show_histogram(h),
            })
            .collect();
        let _ = writeln!(s, "  {} {}", e.labels, vals.join(" "));
    }
    if s.is_empty() {
        s.push_str("  (empty)\n");
    }
    s
}

fn show(v: &Value) -> String {
    let mut s = String::new();
    match v {
        Value::Scalar { v, .. } => {
            let _ = writeln!(s, "  scalar {v}");
        }
        Value::String { v, .. } => {
            let _ = writeln!(s, "  string {v:?}");
        }
        Value::Vector(samples) => {
            for x in samples {
                match &x.h {
                    Some(h) => {
                        let _ = writeln!(s, "  {} {}", x.labels, show_histogram(h));
                    }
                    None => {
                        let _ = writeln!(s, "  {} {}", x.labels, x.v);
                    }
                }
            }
        }
        Value::Matrix(series) => {
            for x in series {
                let pts: Vec<String> = x
                    .samples
                    .iter()
                    .map(|p| format!("{}@{}", p.v, p.t / 1000))
                    .chain(
                        x.histograms
                            .iter()
                            .map(|p| format!("{}@{}", show_histogram(&p.h), p.t / 1000)),
                    )
                    .collect();
                let _ = writeln!(s, "  {} {}", x.labels, pts.join(" "));
            }
        }
    }
    if s.is_empty() {
        s.push_str("  (empty)\n");
    }
    s
}

/// Also the store of `novamon test rules`, whose data starts at the Unix epoch.
pub mod mem;
