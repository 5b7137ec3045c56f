//! The Prometheus HTTP API's envelope, error shapes and status codes, GET and POST alike, as
//! Grafana's Prometheus data source relies on them.

use e2e::series::{v1_request, v1_series, V1};
use e2e::{an_hour_ago_ms, enc, Novamon};

fn server_with_data() -> (tempfile::TempDir, Novamon, i64) {
    server_with_data_and_config("")
}

/// A server with three `api_total` series over the last hour; `config`, when not empty, is
/// its configuration file's content.
fn server_with_data_and_config(config: &str) -> (tempfile::TempDir, Novamon, i64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("novamon.yml");
    let mut args = Vec::new();
    if !config.is_empty() {
        std::fs::write(&cfg, config).unwrap();
        args = vec!["--config", cfg.to_str().unwrap()];
    }
    let n = Novamon::start(&dir.path().join("data"), &args);
    let t0 = an_hour_ago_ms();
    let series = (0..3)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..40)
                .map(|k| (t0 + k * 15_000, (k * (i + 1)) as f64))
                .collect();
            v1_series(
                &[
                    ("__name__", "api_total"),
                    ("instance", &format!("i{i}")),
                    ("job", "api"),
                ],
                &samples,
            )
        })
        .collect();
    assert_eq!(n.remote_write(&v1_request(series), V1).0, 204);
    (dir, n, t0)
}

fn post_form(n: &Novamon, path: &str, form: &str) -> (u16, e2e::Json) {
    let (status, body, _) = n.post_raw(
        path,
        "application/x-www-form-urlencoded",
        &[],
        form.as_bytes().to_vec(),
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

fn assert_error(status: u16, body: &e2e::Json, want_status: u16, want_type: &str, contains: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["errorType"], want_type, "{body}");
    assert!(body["error"].as_str().unwrap().contains(contains), "{body}");
}

#[test]
fn instant_and_range_queries_by_get_and_post_agree() {
    let (_d, n, t0) = server_with_data();
    let t = (t0 + 600_000) / 1000;
    let q = enc("sum by (job) (rate(api_total[5m]))");
    let (s1, get) = n.get_json(&format!("/api/v1/query?query={q}&time={t}"));
    let (s2, post) = post_form(&n, "/api/v1/query", &format!("query={q}&time={t}"));
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(get, post);
    assert_eq!(get["data"]["resultType"], "vector");
    // 0+1+2+... per 15s for i=0..2: rates 1/15, 2/15, 3/15 summed = 0.4
    let v: f64 = get["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((v - 0.4).abs() < 1e-9, "{get}");

    let range = format!(
        "query={}&start={}&end={}&step=60",
        enc("api_total"),
        t0 / 1000,
        (t0 + 585_000) / 1000
    );
    let (s1, get) = n.get_json(&format!("/api/v1/query_range?{range}"));
    let (s2, post) = post_form(&n, "/api/v1/query_range", &range);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(get, post);
    assert_eq!(get["data"]["resultType"], "matrix");
    assert_eq!(get["data"]["result"].as_array().unwrap().len(), 3);
    assert_eq!(
        get["data"]["result"][0]["values"].as_array().unwrap().len(),
        10
    );

    let (_, scalar) = n.get_json(&format!("/api/v1/query?query=1%2B1&time={t}"));
    assert_eq!(
        scalar["data"],
        serde_json::json!({"resultType": "scalar", "result": [t, "2"]})
    );
    let (_, string) = n.get_json(&format!("/api/v1/query?query=%22hi%22&time={t}"));
    assert_eq!(
        string["data"],
        serde_json::json!({"resultType": "string", "result": [t, "hi"]})
    );
}

#[test]
fn errors_have_prometheus_shapes_and_codes() {
    let (_d, n, t0) = server_with_data();
    let (s, b) = n.get_json("/api/v1/query?query=sum(");
    assert_error(s, &b, 400, "bad_data", "invalid parameter \"query\"");
    let (s, b) = n.get_json("/api/v1/query?query=up&time=yesterday");
    assert_error(
        s,
        &b,
        400,
        "bad_data",
        "invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp",
    );
    let (s, b) = n.get_json("/api/v1/query_range?query=up&start=10&end=5&step=1");
    assert_error(
        s,
        &b,
        400,
        "bad_data",
        "end timestamp must not be before start time",
    );
    let (s, b) = n.get_json("/api/v1/query_range?query=up&start=1&end=5&step=0");
    assert_error(
        s,
        &b,
        400,
        "bad_data",
        "zero or negative query resolution step widths are not accepted",
    );
    let (s, b) = n.get_json("/api/v1/query_range?query=up&start=0&end=100000&step=1");
    assert_error(
        s,
        &b,
        400,
        "bad_data",
        "exceeded maximum resolution of 11,000 points per timeseries",
    );
    let (s, b) = n.get_json("/api/v1/query_range?query=up&end=5&step=1");
    assert_error(s, &b, 400, "bad_data", "invalid parameter \"start\"");
    let (s, b) = n.get_json("/api/v1/series");
    assert_error(s, &b, 400, "bad_data", "no match[] parameter provided");
    let (s, b) = n.get_json("/api/v1/series?match[]=up%2B1");
    assert_error(s, &b, 400, "bad_data", "");
    let (s, b) = n.get_json("/api/v1/labels?limit=x");
    assert_error(s, &b, 400, "bad_data", "invalid parameter \"limit\"");
    // Execution errors are 422, as in Prometheus.
    let t = (t0 + 600_000) / 1000;
    let q = enc(r#"label_replace(api_total, "instance", "same", "", "")"#);
    let (s, b) = n.get_json(&format!("/api/v1/query?query={q}&time={t}"));
    assert_error(
        s,
        &b,
        422,
        "execution",
        "vector cannot contain metrics with the same labelset",
    );
}

/// The `timeout` parameter bounds one query; the server's `query.timeout` still caps it.
#[test]
fn query_timeout_parameter_is_honoured_and_capped_by_the_server() {
    let (_d, n, t0) = server_with_data();
    let t = (t0 + 600_000) / 1000;
    let q = enc("sum by (job) (rate(api_total[5m]))");
    let instant = format!("/api/v1/query?query={q}&time={t}");
    let range = format!(
        "/api/v1/query_range?query={q}&start={}&end={t}&step=15",
        t0 / 1000
    );
    for base in [&instant, &range] {
        let (s, b) = n.get_json(&format!("{base}&timeout=30s"));
        assert_eq!(s, 200, "{b}");
        // Already expired (a negative timeout is accepted, as in Prometheus).
        for expired in ["0", "-1"] {
            let (s, b) = n.get_json(&format!("{base}&timeout={expired}"));
            assert_error(
                s,
                &b,
                503,
                "timeout",
                "query timed out in expression evaluation",
            );
        }
        let (s, b) = n.get_json(&format!("{base}&timeout=soon"));
        assert_error(
            s,
            &b,
            400,
            "bad_data",
            "invalid parameter \"timeout\": cannot parse \"soon\" to a valid duration",
        );
    }
    let (s, b) = post_form(
        &n,
        "/api/v1/query",
        &format!("query={q}&time={t}&timeout=0"),
    );
    assert_error(s, &b, 503, "timeout", "query timed out");

    // A server allowing 1ms: a generous request timeout does not extend it for a query that
    // needs far longer (31 medians of 180,000 points each), while the default server answers it.
    let slow = enc("max_over_time(quantile_over_time(0.5, vector(1)[30m:10ms])[30s:1s])");
    let slow_instant = format!("/api/v1/query?query={slow}&time={t}");
    let (s, b) = n.get_json(&format!("{slow_instant}&timeout=1h"));
    assert_eq!(s, 200, "{b}");
    let (_d2, strict, t0) = server_with_data_and_config("query:\n  timeout: 1ms\n");
    let t = (t0 + 600_000) / 1000;
    let slow_instant = format!("/api/v1/query?query={slow}&time={t}");
    let slow_range = format!("/api/v1/query_range?query={slow}&start={t}&end={t}&step=15");
    for base in [&slow_instant, &slow_range] {
        for timeout in ["&timeout=1h", ""] {
            let (s, b) = strict.get_json(&format!("{base}{timeout}"));
            assert_error(
                s,
                &b,
                503,
                "timeout",
                "query timed out in expression evaluation",
            );
        }
    }
}

#[test]
fn metadata_endpoints_filter_limit_and_warn() {
    let (_d, n, _) = server_with_data();
    let (s, b) = n.get_json("/api/v1/labels");
    assert_eq!(s, 200);
    assert_eq!(
        b["data"],
        serde_json::json!(["__name__", "instance", "job"])
    );
    let (_, b) = n.get_json("/api/v1/label/instance/values?limit=2");
    assert_eq!(b["data"], serde_json::json!(["i0", "i1"]));
    assert_eq!(
        b["warnings"],
        serde_json::json!(["results truncated due to limit"])
    );
    let (_, b) = n.get_json(&format!(
        "/api/v1/series?match[]={}",
        enc(r#"{instance=~"i[01]"}"#)
    ));
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    let (_, b) = n.get_json(&format!(
        "/api/v1/label/__name__/values?match[]={}",
        enc("{job=\"nope\"}")
    ));
    assert_eq!(b["data"], serde_json::json!([]));
    // A time range before any data selects nothing.
    let (_, b) = n.get_json("/api/v1/series?match[]=api_total&start=1&end=2");
    assert_eq!(b["data"], serde_json::json!([]));
}

#[test]
fn status_endpoints_answer_what_grafana_reads() {
    let (_d, n, _) = server_with_data();
    let (s, b) = n.get_json("/api/v1/status/buildinfo");
    assert_eq!(s, 200);
    assert!(
        b["data"]["version"].as_str().unwrap().starts_with('3'),
        "{b}"
    );
    let (_, b) = n.get_json("/api/v1/status/runtimeinfo");
    assert_eq!(b["data"]["storageRetention"], "15d");
    let (_, b) = n.get_json("/api/v1/status/flags");
    assert_eq!(b["data"]["storage.tsdb.retention.time"], "15d");
    // Started on port 0: the flag reports the address actually bound.
    assert_eq!(
        format!(
            "http://{}",
            b["data"]["web.listen-address"].as_str().unwrap()
        ),
        n.url
    );
    let (_, b) = n.get_json("/api/v1/status/config");
    assert!(
        b["data"]["yaml"]
            .as_str()
            .unwrap()
            .contains("retention: 15d"),
        "{b}"
    );
    let (_, b) = n.get_json("/api/v1/status/tsdb");
    assert_eq!(b["data"]["headStats"]["numSeries"], 3);
    assert_eq!(
        b["data"]["seriesCountByMetricName"],
        serde_json::json!([{"name": "api_total", "value": 3}])
    );
    let (_, b) = n.get_json("/api/v1/query_exemplars?query=api_total");
    assert_eq!(b, serde_json::json!({"status": "success", "data": []}));
    let (_, b) = n.get_json(&format!(
        "/api/v1/format_query?query={}",
        enc("sum(rate(x[5m]))by(job)")
    ));
    assert_eq!(b["data"], "sum by (job) (rate(x[5m]))");
    // Syntax only the engine's parse step knows is printed as written; what it cannot print
    // as Prometheus does keeps promql-parser's error.
    let (_, b) = n.get_json(&format!("/api/v1/format_query?query={}", enc("h</2")));
    assert_eq!(b["data"], "h </ 2", "{b}");
    let (s, b) = n.get_json(&format!("/api/v1/format_query?query={}", enc("x[5m+1m]")));
    assert_error(s, &b, 400, "bad_data", "invalid parameter \"query\"");
    let (_, b) = n.get_json(&format!("/api/v1/parse_query?query={}", enc("up")));
    assert_eq!(b["status"], "success");
    assert_eq!(b["data"]["type"], "vectorSelector", "{b}");
}

#[test]
fn self_metrics_count_ingest_series_and_requests() {
    let (_d, n, _) = server_with_data();
    n.get_json("/api/v1/labels");
    let mut resp = n.agent.get(format!("{}/metrics", n.url)).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("novamon_http_request_duration_seconds_bucket")
                && l.contains("handler=\"/api/v1/labels\"")
        ),
        "{text}"
    );
    for want in [
        "novamon_http_requests_total{handler=\"/api/v1/labels\",code=\"200\"} 1",
        "novamon_tsdb_head_series 3",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(want), "/metrics lacks {want}:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("novamon_remote_write_samples") && l.ends_with(" 120")),
        "{text}"
    );
}
