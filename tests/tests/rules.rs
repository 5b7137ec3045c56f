//! Rules end to end through the real binary: `novamon test rules` on our promtool-format
//! files (cross-checked with Debian's promtool, which tests/run.sh installs), `novamon check rules`, and a
//! server evaluating rule files over remote-written data: `/api/v1/rules` and
//! `/api/v1/alerts` shapes, `ALERTS` queryable, reload by `POST /-/reload` and SIGHUP with a
//! bad file rejected, and `for` state surviving a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use e2e::series::{v1_request, v1_series, V1};
use e2e::{enc, novamon_bin, wait_until, Json, Novamon};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_test.yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// Debian's promtool, which must be installed: the cross-checks are the point of these tests.
fn promtool() -> &'static Path {
    let p = Path::new("/usr/bin/promtool");
    assert!(
        p.exists(),
        "promtool is missing (tests/run.sh installs Debian's prometheus package, which has it)"
    );
    p
}

fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn our_rule_unit_tests_pass_and_promtool_agrees() {
    let (code, out) = run(Command::new(novamon_bin())
        .args(["test", "rules"])
        .args(test_files()));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.trim_end().ends_with(" passed, 0 failed"), "{out}");
    let (code, out) = run(Command::new(promtool())
        .args(["test", "rules"])
        .args(test_files()));
    assert_eq!(code, Some(0), "promtool disagrees:\n{out}");
}

#[test]
fn a_wrong_expectation_fails_in_both_runners() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        rules_dir().join("service.rules.yml"),
        dir.path().join("service.rules.yml"),
    )
    .unwrap();
    let test = std::fs::read_to_string(rules_dir().join("lifecycle_test.yml"))
        .unwrap()
        .replace("summary: api errors at 2/s", "summary: api errors at 3/s");
    let path = dir.path().join("wrong_test.yml");
    std::fs::write(&path, test).unwrap();
    let (code, out) = run(Command::new(novamon_bin())
        .args(["test", "rules"])
        .arg(&path));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("alertname: HighErrorRate, time: 4m"), "{out}");
    assert!(out.contains(r#"summary="api errors at 2/s""#), "{out}");
    assert!(out.trim_end().ends_with("2 passed, 1 failed"), "{out}");
    let (code, out) = run(Command::new(promtool()).args(["test", "rules"]).arg(&path));
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn check_rules_locates_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - record: ok\n        expr: up\n      - alert: Bad\n        expr: sum(\n      - record: job:x\n        expr: up\n        for: 1m\n",
    )
    .unwrap();
    let (code, out) = run(Command::new(novamon_bin())
        .args(["check", "rules"])
        .arg(&bad));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(r#"bad.yml: 7:15: group "g", rule 2, "Bad": could not parse expression"#),
        "{out}"
    );
    assert!(
        out.contains(r#"8:17: group "g", rule 3, "job:x": invalid field 'for' in recording rule"#),
        "{out}"
    );
    let good = rules_dir().join("service.rules.yml");
    let (code, out) = run(Command::new(novamon_bin())
        .args(["check", "rules"])
        .arg(&good));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A config dir with `novamon.yml` (1s evaluation) and `rules/main.yml`.
fn setup(rules: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/main.yml"), rules).unwrap();
    let cfg = dir.path().join("novamon.yml");
    std::fs::write(
        &cfg,
        "global:\n  evaluation_interval: 1s\n  external_labels: {cluster: e2e}\nrule_files: ['rules/*.yml']\n",
    )
    .unwrap();
    (dir, cfg)
}

fn write_temperature(n: &Novamon, v: f64) {
    let series = vec![v1_series(
        &[
            ("__name__", "temperature"),
            ("instance", "o1"),
            ("job", "oven"),
        ],
        &[(now_ms(), v)],
    )];
    let (status, body, _) = n.remote_write(&v1_request(series), V1);
    assert_eq!(status, 204, "{body}");
}

fn sighup(n: &Novamon) {
    let ok = Command::new("kill")
        .arg("-HUP")
        .arg(n.process.pid().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -HUP failed");
}

fn alerts(n: &Novamon) -> Vec<Json> {
    let body = n.get_ok("/api/v1/alerts");
    body["data"]["alerts"].as_array().unwrap().clone()
}

/// Waits until an alert fires; returns the first of the active alerts then.
fn first_alert_once_firing(n: &Novamon, name: &str) -> Json {
    wait_until(Duration::from_secs(20), || {
        alerts(n).iter().any(|a| a["state"] == "firing")
    })
    .unwrap_or_else(|| panic!("{name} never fired; log:\n{}", n.process.log()));
    alerts(n).swap_remove(0)
}

fn rules_of(n: &Novamon, query: &str) -> Json {
    n.get_ok(&format!("/api/v1/rules{query}"))["data"]["groups"].clone()
}

const RULES: &str = r#"
groups:
  - name: oven
    rules:
      - record: job:temperature:max
        expr: max by (job) (temperature)
      - alert: Hot
        expr: job:temperature:max > 50
        for: 2s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.job }} at {{ $value }} in {{ $externalLabels.cluster }}"
"#;

#[test]
fn server_evaluates_rules_serves_prometheus_shapes_and_reloads() {
    let (dir, cfg) = setup(RULES);
    let data = dir.path().join("data");
    let mut n = Novamon::start(&data, &["--config", cfg.to_str().unwrap()]);
    write_temperature(&n, 75.5);

    let a = &first_alert_once_firing(&n, "Hot");
    assert_eq!(
        a["labels"],
        serde_json::json!({"alertname": "Hot", "job": "oven", "severity": "page"})
    );
    assert_eq!(
        a["annotations"],
        serde_json::json!({"summary": "oven at 75.5 in e2e"})
    );
    assert_eq!(a["value"], "7.55e+01");
    assert!(a["activeAt"].as_str().unwrap().ends_with('Z'), "{a}");

    let groups = rules_of(&n, "");
    let g = &groups[0];
    assert_eq!(g["name"], "oven");
    assert_eq!(
        g["file"],
        dir.path().join("rules/main.yml").display().to_string()
    );
    assert_eq!(g["interval"], 1.0);
    assert_eq!(g["limit"], 0);
    assert!(
        g["evaluationTime"].is_f64() && g["lastEvaluation"].is_string(),
        "{g}"
    );
    let rec = &g["rules"][0];
    assert_eq!(rec["type"], "recording");
    assert_eq!(rec["name"], "job:temperature:max");
    assert_eq!(rec["query"], "max by (job) (temperature)");
    assert_eq!(rec["health"], "ok");
    assert!(
        rec.get("labels").is_none() && rec.get("lastError").is_none(),
        "{rec}"
    );
    let alert = &g["rules"][1];
    for key in [
        "state",
        "name",
        "query",
        "duration",
        "keepFiringFor",
        "labels",
        "annotations",
        "alerts",
        "health",
        "evaluationTime",
        "lastEvaluation",
        "type",
    ] {
        assert!(
            alert.get(key).is_some(),
            "alerting rule lacks {key}: {alert}"
        );
    }
    assert_eq!(alert["type"], "alerting");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["duration"], 2.0);
    assert_eq!(alert["keepFiringFor"], 0.0);
    assert_eq!(alert["labels"], serde_json::json!({"severity": "page"}));
    assert_eq!(alert["alerts"][0]["state"], "firing");

    // The alert reached notification delivery: the built-in Alertmanager lists it.
    let (status, am) = n.get_json("/api/v2/alerts");
    assert_eq!(status, 200, "{am}");
    let hot = am
        .as_array()
        .and_then(|a| a.iter().find(|a| a["labels"]["alertname"] == "Hot"))
        .unwrap_or_else(|| panic!("Hot not handed to the Alertmanager: {am}"));
    assert!(
        hot["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/graph?g0.expr=job%3Atemperature%3Amax"),
        "{hot}"
    );
    // Links back to the port actually bound (the test starts novamon on port 0).
    let port = n.url.rsplit(':').next().unwrap();
    assert!(
        hot["generatorURL"]
            .as_str()
            .unwrap()
            .contains(&format!(":{port}/graph")),
        "{hot}"
    );

    // Filters.
    let only_rec = rules_of(&n, "?type=record");
    assert_eq!(only_rec[0]["rules"].as_array().unwrap().len(), 1);
    assert_eq!(only_rec[0]["rules"][0]["type"], "recording");
    let by_name = rules_of(&n, "?rule_name[]=Hot");
    assert_eq!(by_name[0]["rules"].as_array().unwrap().len(), 1);
    assert_eq!(rules_of(&n, "?rule_group[]=other"), serde_json::json!([]));
    assert_eq!(rules_of(&n, "?file[]=/nowhere.yml"), serde_json::json!([]));
    let (status, body) = n.get_json("/api/v1/rules?type=bogus");
    assert_eq!(status, 400);
    assert_eq!(body["errorType"], "bad_data");

    // Rule output is queryable like any series.
    let q = n.get_ok(&format!(
        "/api/v1/query?query={}",
        enc(r#"ALERTS{alertname="Hot"}"#)
    ));
    let res = &q["data"]["result"];
    assert_eq!(res[0]["metric"]["alertstate"], "firing", "{q}");
    assert_eq!(res[0]["value"][1], "1");
    let q = n.get_ok(&format!(
        "/api/v1/query?query={}",
        enc("job:temperature:max")
    ));
    assert_eq!(q["data"]["result"][0]["value"][1], "75.5", "{q}");

    // A bad file is rejected by both reload paths and the old rules keep running.
    let main = dir.path().join("rules/main.yml");
    std::fs::write(
        &main,
        "groups:\n  - name: oven\n    rules:\n      - alert: Broken\n        expr: sum(\n",
    )
    .unwrap();
    // As `curl -X POST`: no body, no content type (a form type is refused, see web_safety.rs).
    let reload = || {
        let mut r = n
            .agent
            .post(format!("{}/-/reload", n.url))
            .send_empty()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let (status, body) = reload();
    assert_eq!(status, 500);
    assert!(body.contains("could not parse expression"), "{body}");
    sighup(&n);
    wait_until(Duration::from_secs(10), || {
        n.process.log().matches("reload rejected").count() >= 2
    })
    .unwrap_or_else(|| {
        panic!(
            "no log line for the rejected SIGHUP reload:\n{}",
            n.process.log()
        )
    });
    assert!(n.process.log().contains("could not parse expression"));
    assert_eq!(rules_of(&n, "")[0]["rules"][1]["name"], "Hot");
    assert!(alerts(&n).iter().any(|a| a["labels"]["alertname"] == "Hot"));

    // A good file is taken by POST /-/reload, then by SIGHUP.
    std::fs::write(&main, RULES.replace("Hot", "Warm")).unwrap();
    let (status, _) = reload();
    assert_eq!(status, 200);
    assert_eq!(rules_of(&n, "")[0]["rules"][1]["name"], "Warm");
    std::fs::write(&main, RULES.replace("Hot", "Scorching")).unwrap();
    sighup(&n);
    wait_until(Duration::from_secs(10), || {
        rules_of(&n, "")[0]["rules"][1]["name"] == "Scorching"
    })
    .unwrap_or_else(|| panic!("SIGHUP reload not applied:\n{}", n.process.log()));
    // The removed rule's ALERTS series ends with a staleness marker at once.
    wait_until(Duration::from_secs(10), || {
        let q = n.get_ok(&format!(
            "/api/v1/query?query={}",
            enc(r#"ALERTS{alertname="Hot"}"#)
        ));
        q["data"]["result"].as_array().is_some_and(|r| r.is_empty())
    })
    .expect("ALERTS of the removed rule still visible");
    let status = n.process.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(status.success());
}

/// Seconds since the epoch of a Go RFC 3339 time.
fn parse_time(s: &str) -> f64 {
    let dt = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    dt.timestamp_millis() as f64 / 1000.0
}

#[test]
fn restart_during_for_keeps_the_pending_state() {
    // `for` at least Prometheus's 10m grace period, so the state is restored, not restarted.
    let (dir, cfg) = setup(
        "groups:\n  - name: slow\n    rules:\n      - alert: Slow\n        expr: temperature > 50\n        for: 20m\n",
    );
    let data = dir.path().join("data");
    let args = ["--config", cfg.to_str().unwrap()];
    let mut n = Novamon::start(&data, &args);
    write_temperature(&n, 60.0);
    wait_until(Duration::from_secs(20), || !alerts(&n).is_empty())
        .unwrap_or_else(|| panic!("Slow never pending; log:\n{}", n.process.log()));
    let first = alerts(&n)[0].clone();
    assert_eq!(first["state"], "pending");
    let active_at = parse_time(first["activeAt"].as_str().unwrap());
    // Pending for several evaluations, so ALERTS_FOR_STATE is written a few times, and long
    // enough that a fresh alert after the restart (which starts up in a few seconds) could
    // not be mistaken for the restored one.
    std::thread::sleep(Duration::from_secs(10));
    assert!(n
        .process
        .signal_and_wait("TERM", Duration::from_secs(30))
        .success());

    let restart = now_ms() as f64 / 1000.0;
    let n = Novamon::start(&data, &args);
    // A fresh alert would be active from after the restart; the restored one started before
    // it, shifted only by the time the server was down.
    let restored = wait_until(Duration::from_secs(20), || {
        alerts(&n)
            .first()
            .and_then(|a| a["activeAt"].as_str().map(parse_time))
            .is_some_and(|t| t < restart - 2.0)
    });
    let now = alerts(&n);
    assert!(
        restored.is_some(),
        "activeAt not restored (was {active_at}, restart at {restart}): {now:?}\n{}",
        n.process.log()
    );
    let t = parse_time(now[0]["activeAt"].as_str().unwrap());
    assert!(
        t >= active_at,
        "restored activeAt {t} before the original {active_at}"
    );
    assert_eq!(now[0]["state"], "pending");
}

#[test]
fn logql_groups_alert_and_record_over_the_log_store() {
    let (dir, cfg) = setup(
        r#"
groups:
  - name: shop-logs
    type: logql
    rules:
      - record: app:log_errors:count5m
        expr: sum by (app) (count_over_time({app="shop"} |= "error" [5m]))
      - alert: ShopErrors
        expr: sum by (app) (count_over_time({app="shop"} |= "error" [5m])) > 2
        annotations: {summary: "{{ $labels.app }}: {{ $value }} errors"}
"#,
    );
    let n = Novamon::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let now_ns = e2e::now_ns();
    let values: Vec<Json> = (0..4)
        .map(|i| {
            let line = if i < 3 {
                format!("error {i}")
            } else {
                "ok".to_owned()
            };
            serde_json::json!([(now_ns - 2_000_000_000 + i * 1000).to_string(), line])
        })
        .collect();
    let body = serde_json::json!({"streams": [{"stream": {"app": "shop"}, "values": values}]});
    n.loki_push(&body);
    let a = &first_alert_once_firing(&n, "ShopErrors");
    assert_eq!(
        a["labels"],
        serde_json::json!({"alertname": "ShopErrors", "app": "shop"})
    );
    assert_eq!(a["annotations"]["summary"], "shop: 3 errors");
    let q = n.get_ok(&format!(
        "/api/v1/query?query={}",
        enc("app:log_errors:count5m")
    ));
    assert_eq!(q["data"]["result"][0]["metric"]["app"], "shop", "{q}");
    assert_eq!(q["data"]["result"][0]["value"][1], "3", "{q}");
}
