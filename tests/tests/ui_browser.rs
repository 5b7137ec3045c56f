//! The embedded UI in a real browser: starts novamon, fills it with known metrics
//! (remote-write), log lines (Loki push), a trace (OTLP/HTTP) and alerting rules, then runs
//! `tests/ui/check.mjs` — Playwright driving headless Chromium through every page — which
//! checks what a person would (series drawn, lines listed, the waterfall's spans, status
//! figures, error messages) and saves screenshots under `<target>/<profile>/ui-screenshots`;
//! then drives the SQL tab the same way ([`SQL_CHECK`]).

use std::path::PathBuf;
use std::process::Command;

use e2e::series::{v1_request, v1_series, V1};
use e2e::{an_hour_ago_ms, novamon_bin, now_ns, Novamon};
use serde_json::json;

const METRIC: &str = "ui_test_temperature";
const ROOMS: [&str; 3] = ["a", "b", "c"];
const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const LOG_LINES: usize = 20;
const S: i64 = 1_000_000_000;

/// Over the data below (rooms at about 17.5, 19.5 and 21.5 now): RoomTooWarm fires for b and
/// c, RoomWarmForLong is pending for c, and the recording rule fails on every evaluation
/// (label_replace makes the three series one labelset).
const RULES: &str = r#"groups:
- name: ui-test
  rules:
  - alert: RoomTooWarm
    expr: ui_test_temperature > 19
    labels: {severity: warning}
    annotations: {summary: "room {{ $labels.room }} is at {{ $value }}"}
  - alert: RoomWarmForLong
    expr: ui_test_temperature > 21
    for: 1h
  - record: ui_test:broken
    expr: label_replace(ui_test_temperature, "room", "same", "", "")
"#;

/// One hour of 15 s samples for each room, plus one counter series; returns the samples sent.
fn write_metrics(n: &Novamon) -> usize {
    let t0 = an_hour_ago_ms();
    let times: Vec<i64> = (0..=240).map(|i| t0 + i * 15_000).collect();
    let mut series: Vec<_> = ROOMS
        .iter()
        .enumerate()
        .map(|(r, room)| {
            let samples: Vec<(i64, f64)> = times
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, 18.0 + 2.0 * r as f64 + (i as f64 / 20.0).sin()))
                .collect();
            v1_series(&[("__name__", METRIC), ("room", room)], &samples)
        })
        .collect();
    let counter: Vec<(i64, f64)> = times
        .iter()
        .map(|&t| (t, (t - t0) as f64 / 1000.0))
        .collect();
    series.push(v1_series(
        &[("__name__", "ui_test_requests_total"), ("code", "200")],
        &counter,
    ));
    let (status, body, _) = n.remote_write(&v1_request(series), V1);
    assert_eq!(status, 204, "{body}");
    times.len() * (ROOMS.len() + 1)
}

/// Lines over the last ten minutes, JSON and logfmt alternating; line 7 carries the trace id.
fn push_logs(n: &Novamon) -> String {
    let base = now_ns() - 600 * S;
    let mut newest = String::new();
    let values: Vec<_> = (0..LOG_LINES)
        .map(|i| {
            let level = if i % 3 == 0 { "warn" } else { "info" };
            let line = if i == 7 {
                format!(r#"{{"level":"{level}","msg":"checkout done","trace_id":"{TRACE_ID}"}}"#)
            } else if i % 2 == 0 {
                format!(r#"{{"level":"{level}","msg":"order {i} placed","items":{i}}}"#)
            } else {
                format!(r#"level={level} msg="order {i} shipped" carrier=post"#)
            };
            newest = line.clone();
            json!([(base + i as i64 * 25 * S).to_string(), line])
        })
        .collect();
    let body = json!({"streams": [{"stream": {"app": "uishop", "env": "test"}, "values": values}]});
    n.loki_push(&body);
    n.wait_for_log_lines(r#"{app="uishop"}"#, base - S, None, LOG_LINES);
    newest
}

/// One trace over two services: GET /checkout → (render cart, charge card → SELECT balance),
/// where charge card failed with an event.
fn send_trace(n: &Novamon) {
    let t0 = now_ns() - 120 * S;
    let ms = 1_000_000;
    let span = |id: &str,
                parent: &str,
                name: &str,
                from: i64,
                to: i64,
                extra: serde_json::Value| {
        let mut s = json!({"traceId": TRACE_ID, "spanId": id, "name": name, "kind": 2,
            "startTimeUnixNano": (t0 + from * ms).to_string(), "endTimeUnixNano": (t0 + to * ms).to_string()});
        if !parent.is_empty() {
            s["parentSpanId"] = json!(parent);
        }
        if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        s
    };
    let resource = |service: &str, spans: Vec<serde_json::Value>| {
        json!({"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
               "scopeSpans": [{"scope": {"name": "ui-test"}, "spans": spans}]})
    };
    let body = json!({"resourceSpans": [
        resource("shop-frontend", vec![
            span("a000000000000001", "", "GET /checkout", 0, 120, json!({})),
            span("a000000000000002", "a000000000000001", "render cart", 5, 30, json!({})),
        ]),
        resource("payments", vec![
            span("b000000000000001", "a000000000000001", "charge card", 40, 110, json!({
                "attributes": [{"key": "payment.provider", "value": {"stringValue": "acme"}}],
                "events": [{"timeUnixNano": (t0 + 90 * ms).to_string(), "name": "card declined",
                            "attributes": [{"key": "reason", "value": {"stringValue": "insufficient funds"}}]}],
                "status": {"code": 2, "message": "declined"}})),
            span("b000000000000002", "b000000000000001", "SELECT balance", 50, 70, json!({})),
        ]),
    ]});
    n.post_otlp_json("/v1/traces", &body);
}

/// The SQL tab in Chromium: a query typed and run, its rows in the table (as many as the
/// API answers, EXPECT's `rows`) and a line per room in the chart; then a bad query's
/// message. Run from `tests/ui`, where `playwright-core` is.
const SQL_CHECK: &str = r##"
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
const expect = JSON.parse(process.env.EXPECT);
const dir = mkdtempSync(join(tmpdir(), "novamon-chromium-sql-"));
const context = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
  viewport: { width: 1400, height: 900 }, args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
const page = context.pages()[0] || (await context.newPage());
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));
const count = (sel, n) => page.waitForFunction(([s, n]) => document.querySelectorAll(s).length === n,
  [sel, n], { timeout: 20000 }).catch(async () => {
    throw new Error(`expected ${n} x ${sel}, found ${await page.locator(sel).count()}`);
  });
try {
  await page.goto(`${process.env.NOVAMON_URL}/#/sql`);
  await page.click('nav a[data-page="sql"]');
  await page.fill("#sql", expect.query);
  await page.click("#run");
  await count("#result-table tbody tr", expect.rows);
  await count("#sql-chart path.series", expect.lines);
  const header = await page.locator("#result-table thead").textContent();
  if (header !== "troomv") throw new Error(`columns: ${header}`);
  const inHash = new URLSearchParams(new URL(page.url()).hash.split("?")[1]).get("q");
  if (inHash !== expect.query) throw new Error(`not in the URL: ${page.url()}`);
  await page.screenshot({ path: join(process.env.SCREENSHOT_DIR, "sql.png"), fullPage: true });
  await page.fill("#sql", "SELECT nope FROM metrics");
  await page.click("#run");
  await page.waitForSelector("#result .error", { timeout: 20000 });
  const err = await page.locator("#result .error").textContent();
  if (!err.includes("nope") || !err.includes("400")) throw new Error(`error shown: ${err}`);
  if (errors.length) throw new Error(`JavaScript errors: ${errors.join("; ")}`);
  console.log("ok   sql");
} finally {
  await context.close();
  rmSync(dir, { recursive: true, force: true });
}
"##;

#[test]
fn every_page_works_in_headless_chromium() {
    let ui_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui");
    assert!(
        ui_dir.join("node_modules/playwright-core").exists(),
        "{}/node_modules missing: run tests/run.sh (it runs `npm ci` there)",
        ui_dir.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("novamon.yml");
    std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
    std::fs::write(dir.path().join("rules/ui.yml"), RULES).expect("rule file");
    // Two scrape jobs for the Targets page: one target that is down, and novamon itself,
    // found through a target file written once its port is known.
    std::fs::write(
        &config,
        "global:\n  evaluation_interval: 1s\nrule_files: ['rules/*.yml']\nscrape_configs:\n  - job_name: down\n    scrape_interval: 1s\n    static_configs: [{targets: ['127.0.0.1:1']}]\n  - job_name: self\n    scrape_interval: 1s\n    file_sd_configs: [{files: ['targets/*.json']}]\n",
    )
    .expect("config");
    let n = Novamon::start(&data, &["--config", &config.display().to_string()]);
    std::fs::create_dir(dir.path().join("targets")).expect("targets dir");
    std::fs::write(
        dir.path().join("targets/self.json"),
        format!(
            r#"[{{"targets": ["{}"]}}]"#,
            n.url.trim_start_matches("http://")
        ),
    )
    .expect("target file");
    let samples = write_metrics(&n);
    let newest_line = push_logs(&n);
    send_trace(&n);

    let shots = novamon_bin()
        .parent()
        .expect("target dir")
        .join("ui-screenshots");
    let expect = json!({
        "metric": METRIC, "series": ROOMS.len(), "series_total": ROOMS.len() + 1, "rooms": ROOMS,
        "samples": samples, "data_dir": data.display().to_string(),
        "log_query": r#"{app="uishop"}"#, "log_labels": {"app": "uishop", "env": "test"},
        "log_lines": LOG_LINES, "streams": 1, "newest_line": newest_line,
        "trace_id": TRACE_ID, "service": "shop-frontend",
        "spans": ["GET /checkout", "render cart", "charge card", "SELECT balance"],
        "event": "card declined", "attribute": "acme",
    });
    let out = Command::new("node")
        .arg("check.mjs")
        .current_dir(&ui_dir)
        .env("NOVAMON_URL", &n.url)
        .env("SCREENSHOT_DIR", &shots)
        .env("EXPECT", expect.to_string())
        .output()
        .expect("cannot run node (tests/run.sh installs nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed ({}):\n{stdout}\n{stderr}\nscreenshots in {}\nnovamon log:\n{}",
        out.status,
        shots.display(),
        n.process.log()
    );

    let query = format!(
        "SELECT date_bin(interval '5 minutes', ts) AS t, labels['room'] AS room, avg(value) AS v \
         FROM metrics WHERE metric = '{METRIC}' GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let (status, body, _) = n.post_raw(
        "/api/v1/sql",
        "application/json",
        &[],
        serde_json::to_vec(&json!({ "query": query })).expect("json"),
    );
    assert_eq!(status, 200, "{body}");
    let rows = serde_json::from_str::<serde_json::Value>(&body).expect("json")["rows"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(rows > ROOMS.len(), "{body}");
    let expect = json!({ "query": query, "rows": rows, "lines": ROOMS.len() });
    let out = Command::new("node")
        .args(["--input-type=module", "-e", SQL_CHECK])
        .current_dir(&ui_dir)
        .env("NOVAMON_URL", &n.url)
        .env("SCREENSHOT_DIR", &shots)
        .env("EXPECT", expect.to_string())
        .output()
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SQL tab checks failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
