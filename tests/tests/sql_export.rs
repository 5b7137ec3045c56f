//! `export:` on the real binary: samples, log lines and spans written into a finished day two
//! days ago are exported as Parquet at start-up (`signal=…/date=…/part-0.parquet`, zstd),
//! `/metrics` counts the days, pyarrow reads the files as they are and finds the row counts
//! and sums `POST /api/v1/sql` answers; with retention shortened so the stores no longer hold
//! the day, SQL answers the same from the files.
//!
//! Needs the venv `tests/run.sh` creates ($HOME/.cache/novamon-venv, or NOVAMON_VENV), with
//! pyarrow from tests/requirements.txt.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::series::{v1_request, v1_series, V1};
use e2e::{now_ns, venv_python, wait_until, Json, Novamon};
use serde_json::json;

const DAY_MS: i64 = 86_400_000;

/// Reads every exported file of each signal with pyarrow's dataset API (Hive partitioning)
/// and prints, per signal, its dates, row count, a sum and counts per group; and the
/// compression of each file's first column chunk.
const PYARROW: &str = r#"
import json, sys
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

root = sys.argv[1]
out = {}
for signal, total, group in [
    ("metrics", lambda t: pc.sum(t["value"]).as_py(), "instance"),
    ("logs", lambda t: pc.sum(pc.utf8_length(t["line"])).as_py(), "level"),
    ("spans", lambda t: pc.sum(t["duration_ns"]).as_py(), "service"),
]:
    d = ds.dataset(f"{root}/signal={signal}", format="parquet", partitioning="hive")
    t = d.to_table()
    groups = t.group_by(group).aggregate([([], "count_all")]).to_pylist()
    out[signal] = {
        "dates": sorted({str(v) for v in t["date"].to_pylist()}),
        "rows": t.num_rows,
        "sum": total(t),
        "groups": {g[group]: g["count_all"] for g in groups},
        "compression": sorted({pq.ParquetFile(f).metadata.row_group(0).column(0).compression
                               for f in d.files}),
    }
print(json.dumps(out))
"#;

fn pyarrow_summary(dir: &Path) -> Json {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(PYARROW)
        .arg(dir)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "pyarrow failed (is pyarrow in the venv? tests/run.sh installs tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}

fn sql_rows(n: &Novamon, query: &str) -> Vec<Json> {
    let (status, body, _) = n.post_raw(
        "/api/v1/sql",
        "application/json",
        &[],
        serde_json::to_vec(&json!({ "query": query })).unwrap(),
    );
    assert_eq!(status, 200, "{query}: {body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    body["rows"].as_array().expect("rows").clone()
}

/// SQL's answer for the day, shaped as the pyarrow script's.
fn sql_summary(n: &Novamon, day_ms: i64) -> Json {
    let mut out = serde_json::Map::new();
    for (signal, time, total, group) in [
        ("metrics", "ts", "sum(value)", "instance"),
        ("logs", "ts", "sum(length(line))", "level"),
        ("spans", "start", "sum(duration_ns)", "service"),
    ] {
        let range = format!(
            "{time} >= to_timestamp_millis({day_ms}) AND {time} < to_timestamp_millis({})",
            day_ms + DAY_MS
        );
        // The metrics generator's series are today's: only the day's rows are compared.
        let totals = &sql_rows(
            n,
            &format!("SELECT count(*), {total} FROM {signal} WHERE {range}"),
        )[0];
        let groups: serde_json::Map<String, Json> = sql_rows(
            n,
            &format!("SELECT {group}, count(*) FROM {signal} WHERE {range} GROUP BY {group}"),
        )
        .into_iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].clone()))
        .collect();
        out.insert(
            signal.to_owned(),
            json!({"rows": totals[0], "sum": totals[1], "groups": groups}),
        );
    }
    Json::Object(out)
}

fn config(dir: &Path, export: &Path, retention: &str, interval: &str) -> std::path::PathBuf {
    let path = dir.join(format!("novamon-{retention}-{interval}.yml"));
    std::fs::write(
        &path,
        format!(
            "storage:\n  retention: {retention}\n  out_of_order_window: 4d\n\
             logs:\n  retention: {retention}\n\
             traces:\n  retention: {retention}\n\
             export:\n  directory: {}\n  interval: {interval}\n",
            export.display()
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, config: &Path) -> Novamon {
    Novamon::start(
        &dir.join("data"),
        &["--config", config.to_str().expect("path")],
    )
}

fn exported_days(n: &Novamon, signal: &str) -> Option<f64> {
    n.metric(&format!("novamon_export_days_total{{signal=\"{signal}\"}}"))
}

#[test]
fn a_finished_day_exported_as_parquet_reads_the_same_in_pyarrow_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    // Only the start-up pass runs, and it has ended before the data is written: no pass sees
    // part of it. (A pass still running would export the day written under it, and the
    // restarted server would rightly leave a day whose file exists.)
    let mut n = start(dir.path(), &config(dir.path(), &export, "15d", "1h"));
    wait_until(Duration::from_secs(30), || {
        n.metric("novamon_export_last_success_timestamp_seconds")
            .is_some_and(|t| t > 0.0)
    })
    .expect("the start-up pass ended");
    // Nothing stored yet: the start-up pass wrote nothing.
    for signal in ["metrics", "logs", "spans"] {
        assert_eq!(exported_days(&n, signal), Some(0.0), "{signal}");
    }

    let day_ms = (now_ns() / 1_000_000 / DAY_MS - 2) * DAY_MS;
    let date = {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{}", day_ms / 1000), "+%F"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let t0 = day_ms + 3_600_000;
    let series = (0..3)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..120)
                .map(|k| (t0 + k * 60_000, (k * (i + 1)) as f64 + 0.25))
                .collect();
            v1_series(
                &[
                    ("__name__", "export_total"),
                    ("instance", &format!("i{i}")),
                    ("job", "export"),
                ],
                &samples,
            )
        })
        .collect();
    let (status, body, _) = n.remote_write(&v1_request(series), V1);
    assert_eq!(status, 204, "{body}");
    let t0_ns = t0 * 1_000_000;
    let streams: Vec<Json> = ["api", "db"]
        .iter()
        .map(|app| {
            let values: Vec<Json> = (0..50)
                .map(|k| {
                    let level = ["info", "warn", "error"][k % 3];
                    json!([
                        (t0_ns + k as i64 * 1_000_000_000).to_string(),
                        format!("level={level} msg=\"request {k} of {app}\"")
                    ])
                })
                .collect();
            json!({"stream": {"app": app}, "values": values})
        })
        .collect();
    n.loki_push(&json!({ "streams": streams }));
    let span = |k: u64, service: &str| {
        let start = t0_ns as u64 + k * 1_000_000_000;
        json!({
            "traceId": format!("5bf92f3577b34da6a3ce929d0e0e{k:04x}"),
            "spanId": format!("00f067aa0ba9{k:04x}"),
            "name": format!("op {}", k % 3), "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + (k + 1) * 1_000_000).to_string(),
            "attributes": [{"key": "service", "value": {"stringValue": service}}],
        })
    };
    let resources: Vec<Json> = ["checkout", "stock"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let spans: Vec<Json> = (0..20)
                .filter(|k| k % 2 == i as u64)
                .map(|k| span(k, s))
                .collect();
            json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}}]},
                "scopeSpans": [{"spans": spans}],
            })
        })
        .collect();
    let body = json!({ "resourceSpans": resources });
    n.post_otlp_json("/v1/traces", &body);
    // Every log line indexed (the store answers them) before the restart exports the day.
    wait_until(Duration::from_secs(30), || {
        sql_rows(&n, "SELECT count(*) FROM logs")[0][0] == json!(100)
    })
    .expect("the log lines indexed");
    let stored = sql_summary(&n, day_ms);
    assert_eq!(stored["metrics"]["rows"], json!(360), "{stored}");
    assert_eq!(stored["spans"]["rows"], json!(20), "{stored}");
    n.process.signal_and_wait("TERM", Duration::from_secs(60));

    // The passes after the restart write the finished day of each signal.
    let n = start(dir.path(), &config(dir.path(), &export, "15d", "1s"));
    for signal in ["metrics", "logs", "spans"] {
        wait_until(Duration::from_secs(60), || {
            exported_days(&n, signal) == Some(1.0)
        })
        .unwrap_or_else(|| {
            panic!(
                "{signal} not exported ({:?} in the table); log:\n{}",
                sql_rows(
                    &n,
                    &format!(
                        "SELECT min({}), count(*) FROM {signal}",
                        if signal == "spans" { "start" } else { "ts" }
                    )
                ),
                n.process.log()
            )
        });
        let file = export.join(format!("signal={signal}/date={date}/part-0.parquet"));
        let bytes = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .len();
        let rows = n
            .metric(&format!("novamon_export_rows_total{{signal=\"{signal}\"}}"))
            .unwrap();
        eprintln!(
            "{signal}: {rows} rows, {bytes} bytes, {:.1} bytes/row",
            bytes as f64 / rows
        );
    }
    assert!(n
        .metric("novamon_export_last_success_timestamp_seconds")
        .is_some_and(|t| t > 0.0));

    let py = pyarrow_summary(&export);
    for signal in ["metrics", "logs", "spans"] {
        assert_eq!(py[signal]["dates"], json!([date]), "{py}");
        assert_eq!(py[signal]["compression"], json!(["ZSTD"]), "{py}");
        for key in ["rows", "groups"] {
            assert_eq!(py[signal][key], stored[signal][key], "{signal} {key}: {py}");
        }
        let (a, b) = (
            py[signal]["sum"].as_f64().unwrap(),
            stored[signal]["sum"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{signal} sum: {a} vs {b}");
    }
    assert_eq!(sql_summary(&n, day_ms), stored);
    drop(n);

    // A day of retention: the stores no longer hold the day (or hold it only in part), and
    // the tables read it from the files.
    let short = config(dir.path(), &export, "1d", "1h");
    let n = start(dir.path(), &short);
    assert_eq!(sql_summary(&n, day_ms), stored);
    let explain = sql_rows(&n, "EXPLAIN SELECT count(*) FROM metrics");
    assert!(
        explain
            .iter()
            .any(|r| r.to_string().contains("part-0.parquet")),
        "{explain:?}"
    );
}
