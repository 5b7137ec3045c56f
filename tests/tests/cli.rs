//! The binary's command line and lifecycle: help, config errors, the embedded default, and
//! graceful shutdown.

use std::process::Command;
use std::time::Duration;

use e2e::{agent, check_config, novamon_bin, wait_until, Novamon, Process};

#[test]
fn help_documents_every_option() {
    let out = Command::new(novamon_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--config",
        "--data-dir",
        "--http-listen",
        "--retention",
        "--log",
        "promql-test",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
}

#[test]
fn bad_config_names_the_key_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("novamon.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 15s\nstorage:\n  retension: 3d\n",
    )
    .unwrap();
    let out = Command::new(novamon_bin())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("retension") && err.contains("line 4"), "{err}");

    assert_eq!(check_config(&cfg).0, Some(2));
}

#[test]
fn a_prometheus_yml_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 15s\n  external_labels: {dc: edge}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['localhost:9100']\n",
    )
    .unwrap();
    let (code, stderr) = check_config(&cfg);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Keys that moved still load, with a warning naming their new place; set in both places they
/// are a config error.
#[test]
fn moved_config_keys_load_with_a_warning_and_clash_with_their_new_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("novamon.yml");
    std::fs::write(
        &cfg,
        "traces:\n  otlp:\n    grpc: 127.0.0.1:14317\nlogs:\n  max_query_lines: 10\n",
    )
    .unwrap();
    let (code, stderr) = check_config(&cfg);
    assert_eq!(code, Some(0), "{stderr}");
    for want in [
        "config section traces.otlp is deprecated: move it to the top-level `otlp:` section",
        "config key logs.max_query_lines is deprecated: move it to limits.log_query_max_lines",
    ] {
        assert_eq!(stderr.matches(want).count(), 1, "{stderr}");
    }

    std::fs::write(
        &cfg,
        "otlp:\n  grpc: 127.0.0.1:1\ntraces:\n  otlp:\n    grpc: 127.0.0.1:14317\n",
    )
    .unwrap();
    let (code, stderr) = check_config(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("traces.otlp (deprecated) and otlp are both set: keep only otlp"),
        "{stderr}"
    );
}

/// `novamon` alone serves on :9090 with data under ./data, and SIGTERM ends it cleanly.
#[test]
fn no_arguments_serve_the_embedded_default_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(novamon_bin());
    cmd.current_dir(dir.path());
    let mut p = Process::spawn(&mut cmd, dir.path().join("novamon.log"));
    let a = agent();
    let up = wait_until(Duration::from_secs(60), || {
        a.get("http://127.0.0.1:9090/-/ready")
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(up.is_some(), "not ready on :9090; log:\n{}", p.log());
    assert!(dir.path().join("data").is_dir(), "no ./data created");
    let status = p.signal_and_wait("TERM", Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", p.log());
    let log = p.log();
    assert!(log.contains("shut down cleanly"), "log:\n{log}");
    // Its output is a file here, not a terminal: plain text, and each event logged once.
    assert!(!log.contains('\u{1b}'), "colour codes in a file:\n{log}");
    assert_eq!(log.matches("TSDB opened").count(), 1, "log:\n{log}");
}

#[test]
fn sigint_also_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Novamon::start(&dir.path().join("data"), &[]);
    let status = n.process.signal_and_wait("INT", Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", n.process.log());
}

/// `novamon promql-test` runs promqltest scripts through the real engine and storage and ends
/// with one summary line; a failing eval makes the exit code non-zero.
#[test]
fn promql_test_runs_scripts_and_summarises() {
    let ours: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/promql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    assert!(!ours.is_empty());
    let out = Command::new(novamon_bin())
        .arg("promql-test")
        .args(&ours)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.test");
    std::fs::write(&bad, "load 1m\n  m 1 2 3\n\neval instant at 2m m\n  m 42\n").unwrap();
    let out = Command::new(novamon_bin())
        .arg("promql-test")
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("0 passed, 1 failed"),
        "{stdout}"
    );
}
