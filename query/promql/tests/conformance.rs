//! Runs PromQL conformance scripts through the real engine on the real TSDB: Prometheus's own
//! suite (the stable files and native histograms, read from `../shared/promql-tests` beside the
//! repository; the tests fail when it is missing) and novamon's own scripts in tests/promql.
//! Any failing eval fails the test, with the runner's report as message.

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

/// Prometheus's suite beside the repository, which must be there.
fn shared_suite() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promql-tests");
    assert!(
        dir.is_dir(),
        "{} is missing: the conformance target is Prometheus's own suite in ../shared",
        dir.display()
    );
    dir
}

fn run(paths: &[PathBuf]) {
    let mut out = Vec::new();
    let summary = promql::promqltest::run_files(paths, &mut out).expect("runner I/O");
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
    let dir = shared_suite();
    let paths: Vec<PathBuf> = STABLE
        .iter()
        .map(|f| dir.join(format!("{f}.test")))
        .collect();
    run(&paths);
}

#[test]
fn novamon_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/promql");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/promql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    run(&paths);
}

/// Native histograms beyond the stable files: every eval passes.
#[test]
fn prometheus_native_histograms() {
    run(&[shared_suite().join("native_histograms.test")]);
}
