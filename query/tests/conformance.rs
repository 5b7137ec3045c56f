//! Runs PromQL conformance scripts through the real engine on the real TSDB: Prometheus's own
//! suite (stable files, when ../shared/promql-tests is present) and novamon's own scripts in
//! tests/promql. Any failing eval fails the test, with the runner's report as message.

use std::path::{Path, PathBuf};

const STABLE: &[&str] = &[
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "literals",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
    "limit",
    "name_label_dropping",
];

fn run(paths: &[PathBuf]) {
    let mut out = Vec::new();
    let summary = query::promqltest::run_files(paths, &mut out).expect("runner I/O");
    let report = String::from_utf8_lossy(&out);
    // The per-file tally, shown with `--nocapture`.
    for line in report.lines().filter(|l| l.starts_with("== ")) {
        eprintln!("{line}");
    }
    assert!(summary.passed > 0, "no eval ran:\n{report}");
    assert_eq!(summary.failed, 0, "{report}");
}

#[test]
fn prometheus_stable_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/promql-tests");
    if !dir.exists() {
        eprintln!("{} not found, skipping Prometheus's suite", dir.display());
        return;
    }
    let paths: Vec<PathBuf> = STABLE
        .iter()
        .map(|f| dir.join(format!("{f}.test")))
        .collect();
    run(&paths);
}

#[test]
fn novamon_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/promql");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/promql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    run(&paths);
}

/// Native histograms beyond the stable files: at least 95% of the evals must pass.
#[test]
fn prometheus_native_histograms() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/promql-tests/native_histograms.test");
    if !path.exists() {
        eprintln!("{} not found, skipping", path.display());
        return;
    }
    let mut out = Vec::new();
    let summary = query::promqltest::run_files(&[path], &mut out).expect("runner I/O");
    let report = String::from_utf8_lossy(&out);
    eprintln!("{}", report.lines().last().unwrap_or_default());
    for line in report.lines().filter(|l| l.starts_with("FAIL ")) {
        eprintln!("{line}");
    }
    let ran = summary.passed + summary.failed;
    assert!(ran > 0, "no eval ran:\n{report}");
    assert!(
        summary.passed * 100 >= ran * 95,
        "{} of {ran} passed, below 95%:\n{report}",
        summary.passed
    );
}
