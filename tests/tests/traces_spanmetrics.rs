//! Metrics from spans end to end: the real OpenTelemetry Python SDK sends known traces to a
//! real novamon, whose metrics generator writes span metrics and service graphs into the
//! TSDB; the PromQL Grafana's Tempo data source sends for its service graph and its span
//! table (`datasource.ts`, `graphTransform.ts`) answers what the traces imply, worked out by
//! hand below. Also the last round appended on a clean shutdown.
//!
//! Needs the venv `tests/run.sh` creates ($HOME/.cache/novamon-venv, or NOVAMON_VENV).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{enc, venv_python, wait_until, Json, Novamon};

/// Grafana's `$__range` for a 15-minute dashboard, wider than the whole test.
const RANGE: &str = "900s";

/// Runs tests/otel/spanmetrics.py against `n` (see it for the traces).
fn send(n: &Novamon, suffix: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/spanmetrics.py");
    let out = Command::new(venv_python())
        .arg(script)
        .args([&n.otlp_http_url, suffix])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "spanmetrics.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(dir: &Path, generator: &str) -> Novamon {
    let config = dir.join("novamon.yml");
    std::fs::write(
        &config,
        format!("traces:\n  metrics_generator:\n{generator}"),
    )
    .unwrap();
    Novamon::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// An instant query's result at `time` (s since the epoch; None: now) as
/// `labels (JSON) → value`. Queries whose rates are compared share one `time`: `rate`
/// extrapolates to the end of its window, so the ratio holds at one instant only.
fn query_at(n: &Novamon, q: &str, time: Option<f64>) -> BTreeMap<String, f64> {
    let at = time.map(|t| format!("&time={t}")).unwrap_or_default();
    let body = n.get_ok(&format!("/api/v1/query?query={}{at}", enc(q)));
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: {body}"))
        .iter()
        .map(|s| {
            let v = s["value"][1].as_str().unwrap_or_default();
            (s["metric"].to_string(), v.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

/// The one value of `q`'s result whose labels are `labels` (JSON, as the API writes them).
fn query(n: &Novamon, q: &str) -> BTreeMap<String, f64> {
    query_at(n, q, None)
}

fn value(results: &BTreeMap<String, f64>, labels: &str, q: &str) -> f64 {
    *results
        .get(labels)
        .unwrap_or_else(|| panic!("{q}: no {labels} in {results:?}"))
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn grafana_service_graph_and_span_table_queries_answer_what_the_traces_imply() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(
        dir.path(),
        "    collection_interval: 1s\n    service_graphs:\n      wait: 1s\n",
    );
    send(&n, "sm");
    let (front, back) = ("frontend-sm", "backend-sm");
    // The root server spans reach the graph once their wait is over and a collection ran.
    let user_edge =
        format!(r#"traces_service_graph_request_total{{client="user",server="{front}"}}"#);
    wait_until(Duration::from_secs(30), || {
        !query(&n, &user_edge).is_empty()
    })
    .unwrap_or_else(|| panic!("no {user_edge}; log:\n{}", n.process.log()));
    // One more round, so that every series has a sample after its first.
    std::thread::sleep(Duration::from_millis(1500));
    let now = e2e::now_ns() as f64 / 1e9;
    let query = |n: &Novamon, q: &str| query_at(n, q, Some(now));

    // The counters as they stand: 4 checkouts (one failed on the backend) from the frontend
    // to the backend; 5 root server spans called by "user".
    let totals = query(&n, "traces_service_graph_request_total");
    let fb = format!(
        r#"{{"__name__":"traces_service_graph_request_total","client":"{front}","server":"{back}"}}"#
    );
    let uf = format!(
        r#"{{"__name__":"traces_service_graph_request_total","client":"user","connection_type":"virtual_node","server":"{front}"}}"#
    );
    assert_eq!(totals.len(), 2, "{totals:?}");
    assert_eq!(value(&totals, &fb, "total"), 4.0);
    assert_eq!(value(&totals, &uf, "total"), 5.0);

    // Jaeger's dependency view (Grafana's Jaeger data source sends `endTs` and `lookback`)
    // reads the same counters: the `user` edge exists only there, not in the spans.
    let deps = n.get_ok(&format!(
        "/jaeger/api/dependencies?endTs={}&lookback=900000",
        (now * 1000.0) as u64
    ));
    assert_eq!(
        deps["data"],
        serde_json::json!([
            { "parent": front, "child": back, "callCount": 4 },
            { "parent": "user", "child": front, "callCount": 5 },
        ]),
        "{deps}"
    );

    // The service map: for each metric, the rates by edge and the edges' labels.
    let edge = |c: &str, s: &str| format!(r#"{{"client":"{c}","server":"{s}"}}"#);
    let (fb_edge, uf_edge) = (edge(front, back), edge("user", front));
    let rate = |metric: &str| {
        let q = format!("sum by (client, server) (rate({metric}[{RANGE}]))");
        (query(&n, &q), q)
    };
    let (total, q) = rate("traces_service_graph_request_total");
    assert_eq!(total.len(), 2, "{q}: {total:?}");
    let (fb_rate, uf_rate) = (value(&total, &fb_edge, &q), value(&total, &uf_edge, &q));
    assert!(fb_rate > 0.0 && uf_rate > 0.0, "{total:?}");
    // An edge's series share their samples' times, so their rates keep their values' ratios:
    // 1 of 4 failed; server seconds sum to 3 × 0.25 + 0.05 (mean 0.2) and to 4 × 0.4 + 0.001.
    let (failed, q) = rate("traces_service_graph_request_failed_total");
    assert_eq!(
        failed.len(),
        1,
        "only the failed edge has the series: {q}: {failed:?}"
    );
    close(value(&failed, &fb_edge, &q) / fb_rate, 0.25, &q);
    let (seconds, q) = rate("traces_service_graph_request_server_seconds_sum");
    close(value(&seconds, &fb_edge, &q) / fb_rate, 0.2, &q);
    close(value(&seconds, &uf_edge, &q) / uf_rate, 1.601 / 5.0, &q);
    // Summed over `le` as Grafana sums it: the backend's 0.05s is under le=0.1 and its 0.25s
    // under le=0.4, so the nine cumulative buckets hold 1, 1, then 4 seven times: 30.
    let (buckets, q) = rate("traces_service_graph_request_server_seconds_bucket");
    close(value(&buckets, &fb_edge, &q) / fb_rate, 30.0 / 4.0, &q);
    let labels = query(
        &n,
        "group by (client, connection_type, server) (traces_service_graph_request_total)",
    );
    let want: BTreeMap<String, f64> = [
        (edge(front, back), 1.0),
        (
            format!(r#"{{"client":"user","connection_type":"virtual_node","server":"{front}"}}"#),
            1.0,
        ),
    ]
    .into();
    assert_eq!(labels, want);

    // The span table: server span rates by name, then errors and p90 by name. All the span
    // metrics started in one collection, so their rates keep their counts' ratios.
    let q = format!(
        r#"topk(5, sum(rate(traces_spanmetrics_calls_total{{span_kind="SPAN_KIND_SERVER"}}[{RANGE}])) by (span_name))"#
    );
    let calls = query(&n, &q);
    let name = |s: &str| format!(r#"{{"span_name":"{s}"}}"#);
    assert_eq!(calls.len(), 3, "{q}: {calls:?}");
    let health = value(&calls, &name("GET /health"), &q);
    close(value(&calls, &name("GET /checkout"), &q) / health, 4.0, &q);
    close(value(&calls, &name("POST /pay"), &q) / health, 4.0, &q);
    let q = format!(
        r#"topk(5, sum(rate(traces_spanmetrics_calls_total{{status_code="STATUS_CODE_ERROR",span_name=~"GET /checkout|POST /pay|GET /health"}}[{RANGE}])) by (span_name))"#
    );
    let errors = query(&n, &q);
    assert_eq!(errors.len(), 1, "{q}: {errors:?}");
    close(value(&errors, &name("POST /pay"), &q) / health, 1.0, &q);
    // p90 by linear interpolation in the bucket holding rank 0.9 × count:
    // "POST /pay" is 4 client spans of 0.3s (le=0.512) and server spans of 0.25s ×3
    // (le=0.256) and 0.05s (le=0.064): rank 7.2 of 8, between 4 at 0.256 and 8 at 0.512.
    // "GET /checkout": 4 × 0.4s, rank 3.6 of 4 in (0.256, 0.512]. "GET /health": 0.001s,
    // rank 0.9 of 1 in (0, 0.002].
    for (span, p90) in [
        ("POST /pay", 0.256 + 0.256 * (7.2 - 4.0) / 4.0),
        ("GET /checkout", 0.256 + 0.256 * 3.6 / 4.0),
        ("GET /health", 0.002 * 0.9),
    ] {
        let q = format!(
            r#"histogram_quantile(.9, sum(rate(traces_spanmetrics_latency_bucket{{span_name=~"{span}"}}[{RANGE}])) by (le))"#
        );
        close(value(&query(&n, &q), "{}", &q), p90, &q);
    }

    // The node links, as range queries: Grafana's "Request histogram" of the backend is the
    // p90 of 0.05s (le=0.1) and 0.25s ×3 (le=0.4): rank 3.6 of 4 between 1 at 0.2 and 4 at
    // 0.4, wherever the window sees the counts grow; and the raw counter starts at 0.
    let range = |q: &str| -> Vec<Json> {
        let body = n.get_ok(&format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step=1",
            enc(q),
            now - 60.0
        ));
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let q = format!(
        r#"histogram_quantile(0.9, sum(rate(traces_service_graph_request_server_seconds_bucket{{server="{back}"}}[60s])) by (le, client, server))"#
    );
    let series = range(&q);
    assert_eq!(series.len(), 1, "{q}: {series:?}");
    let points: Vec<f64> = series[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_str()?.parse().ok())
        .filter(|v: &f64| !v.is_nan())
        .collect();
    assert!(!points.is_empty(), "{q}: {series:?}");
    for p in points {
        close(p, 0.2 + 0.2 * (3.6 - 1.0) / 3.0, &q);
    }
    let q = format!(r#"traces_service_graph_request_total{{server="{back}"}}"#);
    let series = range(&q);
    assert_eq!(series.len(), 1, "{q}: {series:?}");
    let values: Vec<&str> = series[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(values.first(), Some(&"0"), "{q}: {values:?}");
    assert_eq!(values.last(), Some(&"4"), "{q}: {values:?}");
    assert!(values.iter().all(|v| *v == "0" || *v == "4"), "{values:?}");

    // The generator's own counters: nothing dropped, no edge left unpaired.
    assert_eq!(
        n.metric(r#"novamon_spanmetrics_unpaired_edges_total"#),
        Some(0.0)
    );
    assert!(n.metric("novamon_spanmetrics_active_series").unwrap() > 0.0);
}

#[test]
fn a_clean_shutdown_appends_the_last_round() {
    let dir = tempfile::tempdir().unwrap();
    // No collection before the shutdown.
    let mut n = start(dir.path(), "    collection_interval: 1h\n");
    send(&n, "stop");
    let status = n.process.signal_and_wait("TERM", Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", n.process.log());
    let n = start(dir.path(), "    enabled: false\n");
    let calls = query(&n, "sum by (service) (traces_spanmetrics_calls_total)");
    let want: BTreeMap<String, f64> = [
        (r#"{"service":"frontend-stop"}"#.to_owned(), 9.0),
        (r#"{"service":"backend-stop"}"#.to_owned(), 4.0),
    ]
    .into();
    assert_eq!(calls, want);
    let edges = query(&n, "traces_service_graph_request_total");
    assert_eq!(
        edges.len(),
        1,
        "the root spans were still waiting: {edges:?}"
    );
}
