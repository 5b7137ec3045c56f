//! Exemplars end to end: remote-write 1.0 and 2.0 and OTLP bodies carrying them, read back
//! with the request Grafana's Prometheus data source sends for a panel's exemplars
//! (`GET /api/v1/query_exemplars?query=<expr>&start=<s>&end=<s>`); the same 1.0 body given to
//! the real Prometheus 2.42 gets the same answers; an acknowledged exemplar survives kill -9.

use std::time::Duration;

use e2e::otlp::attr;
use e2e::series::{v1_request, v1_series, V1, V2};
use e2e::{agent, enc, get_json, wait_for_go_ready_url, Json, Novamon};
use e2e::{spawn_prometheus, PROMETHEUS};
use ingest::remote_write::proto::{v1, v2};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar as OtlpExemplar,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// A recent time `back` ms ago, half-way into a second, so that the exemplar times the tests
/// derive from it print with a fraction (JSON compares 1.5 and 2 as different kinds).
fn recent_ms(back: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now / 1000 * 1000 - back + 500
}

fn v1_exemplar(labels: &[(&str, &str)], value: f64, timestamp: i64) -> v1::Exemplar {
    v1::Exemplar {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        value,
        timestamp,
    }
}

/// A series entry carrying exemplars only, as Prometheus's queue manager sends them.
fn exemplars_only(labels: &[(&str, &str)], exemplars: Vec<v1::Exemplar>) -> v1::TimeSeries {
    v1::TimeSeries {
        exemplars,
        ..v1_series(labels, &[])
    }
}

/// Grafana's `formatTime`: seconds with the fraction Go's shortest float printing gives.
fn grafana_time(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    format!("{s}")
}

/// The path of Grafana's exemplar request for a panel's expression over [start, end].
fn grafana_exemplar_query(expr: &str, start_ms: i64, end_ms: i64) -> String {
    format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        enc(expr),
        grafana_time(start_ms),
        grafana_time(end_ms)
    )
}

/// A histogram's bucket series with samples and exemplars, a counter, and what Prometheus
/// drops: a repeat, an older exemplar, labels over 128 characters, an empty label value.
fn v1_body(t: i64) -> Vec<u8> {
    let bucket = |le| {
        [
            ("__name__", "demo_latency_bucket"),
            ("job", "api"),
            ("le", le),
        ]
    };
    let long = "x".repeat(130);
    v1_request(vec![
        v1_series(&bucket("0.1"), &[(t, 3.0)]),
        v1_series(&bucket("1"), &[(t, 5.0)]),
        v1_series(&bucket("+Inf"), &[(t, 6.0)]),
        v1_series(&[("__name__", "demo_total"), ("job", "api")], &[(t, 10.0)]),
        exemplars_only(
            &bucket("0.1"),
            vec![
                v1_exemplar(&[("trace_id", "aaaa"), ("span_id", "01")], 0.05, t - 900),
                v1_exemplar(&[("trace_id", "aaaa"), ("span_id", "01")], 0.05, t - 900),
                v1_exemplar(&[("trace_id", "old")], 0.07, t - 1900),
                v1_exemplar(&[("trace_id", "bbbb"), ("empty", "")], 0.08, t - 400),
            ],
        ),
        exemplars_only(
            &bucket("1"),
            vec![
                v1_exemplar(&[("trace_id", &long)], 0.5, t - 800),
                v1_exemplar(&[("trace_id", "cccc")], 0.25, t - 700),
            ],
        ),
        exemplars_only(
            &[("__name__", "demo_total"), ("job", "api")],
            vec![v1_exemplar(&[("trace_id", "dddd")], 1.0, t - 123)],
        ),
    ])
}

/// The Grafana exemplar queries both servers answer the same, and a few edge requests.
fn queries(t: i64) -> Vec<String> {
    let (start, end) = (t - 3_600_000, t + 60_000);
    let mut out: Vec<String> = [
        "histogram_quantile(0.95, sum(rate(demo_latency_bucket[5m])) by (le))",
        r#"demo_latency_bucket{le="1"}"#,
        "rate(demo_total[1m]) + on() group_left sum(demo_latency_bucket)",
        "demo_total or nothing_here",
        "nothing_here",
        // No selector at all: 204 and no body.
        "vector(1)",
    ]
    .iter()
    .map(|q| grafana_exemplar_query(q, start, end))
    .collect();
    // A window holding some of the exemplars only.
    out.push(format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        enc("demo_latency_bucket"),
        grafana_time(t - 850),
        grafana_time(t - 500),
    ));
    out
}

#[test]
fn remote_write_exemplars_answer_as_prometheus_2_42_does() {
    assert!(
        std::path::Path::new(PROMETHEUS).exists(),
        "the prometheus package is required (tests/run.sh installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let novamon = Novamon::start(&dir.path().join("novamon"), &[]);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let mut prom_process = spawn_prometheus(
        dir.path(),
        &config,
        "127.0.0.1:0",
        &[
            "--enable-feature=exemplar-storage",
            "--web.enable-remote-write-receiver",
        ],
    );
    let prom = wait_for_go_ready_url(&mut prom_process);
    let a = agent();

    let t = recent_ms(60_000);
    let body = snap::raw::Encoder::new().compress_vec(&v1_body(t)).unwrap();
    for base in [&prom, &novamon.url] {
        let mut resp = a
            .post(format!("{base}/api/v1/write"))
            .header("Content-Type", V1)
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .send(&body[..])
            .unwrap_or_else(|e| panic!("remote-write to {base}: {e}"));
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(resp.status(), 204, "{base}: {text}");
    }

    // Byte for byte: status, field order and number printing included.
    let answer = |base: &str, path: &str| {
        let mut resp = a
            .get(format!("{base}{path}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (resp.status().as_u16(), text)
    };
    let mut non_empty = 0;
    for path in queries(t) {
        let p = answer(&prom, &path);
        assert_eq!(answer(&novamon.url, &path), p, "{path}");
        non_empty += usize::from(p.1.contains("\"exemplars\""));
    }
    assert!(non_empty >= 4, "the comparison saw exemplars");

    // Bad requests: the same status and error type.
    for path in [
        format!(
            "/api/v1/query_exemplars?query={}&start=10&end=5",
            enc("demo_total")
        ),
        format!("/api/v1/query_exemplars?query={}", enc("sum(")),
        format!(
            "/api/v1/query_exemplars?query={}&start=x",
            enc("demo_total")
        ),
    ] {
        let (ps, p) = get_json(&a, &format!("{prom}{path}"));
        let (ns, n) = novamon.get_json(&path);
        assert_eq!(ns, ps, "{path}\nprometheus: {p}\nnovamon: {n}");
        assert_eq!(n["errorType"], p["errorType"], "{path}");
        assert_eq!(n["status"], "error");
    }
}

/// Remote-write 2.0 (which Prometheus 2.42 does not receive): exemplars by symbol reference,
/// counted in the response header, read back with Grafana's request.
#[test]
fn remote_write_2_exemplars_are_counted_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let t = recent_ms(30_000);
    let symbols: Vec<String> = [
        "",
        "__name__",
        "rpc_seconds_bucket",
        "le",
        "0.5",
        "trace_id",
        "abc123",
        "def456",
    ]
    .map(String::from)
    .to_vec();
    let ex = |value_ref, ts| v2::Exemplar {
        labels_refs: vec![5, value_ref],
        value: 0.3,
        timestamp: ts,
    };
    let req = v2::Request {
        symbols,
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![v2::Sample {
                value: 1.0,
                timestamp: t,
                start_timestamp: 0,
            }],
            // The second is out of order: dropped, not an error.
            exemplars: vec![ex(6, t - 10), ex(7, t - 20)],
            ..Default::default()
        }],
    };
    let (status, body, headers) = n.remote_write(&req.encode_to_vec(), V2);
    assert_eq!(status, 204, "{body}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("x-prometheus-remote-write-exemplars-written").as_deref(),
        Some("1")
    );
    let answer = n.get_ok(&grafana_exemplar_query(
        "histogram_quantile(0.9, sum by (le) (rate(rpc_seconds_bucket[5m])))",
        t - 300_000,
        t,
    ));
    let want: Json = serde_json::json!([{
        "seriesLabels": {"__name__": "rpc_seconds_bucket", "le": "0.5"},
        "exemplars": [{"labels": {"trace_id": "abc123"}, "value": "0.3", "timestamp": (t - 10) as f64 / 1000.0}],
    }]);
    assert_eq!(answer["data"], want, "{answer}");
}

#[test]
fn acknowledged_exemplars_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = recent_ms(60_000);
    let mut n = Novamon::start(&data, &[]);
    let (status, body, _) = n.remote_write(&v1_body(t), V1);
    assert_eq!(status, 204, "{body}");
    let path = grafana_exemplar_query("demo_latency_bucket or demo_total", t - 3_600_000, t);
    let before = n.get_ok(&path);
    let count: usize = before["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["exemplars"].as_array().unwrap().len())
        .sum();
    assert_eq!(count, 4, "{before}");
    let status = n.process.signal_and_wait("KILL", Duration::from_secs(10));
    assert!(!status.success());

    let n = Novamon::start(&data, &[]);
    assert_eq!(n.get_ok(&path), before);
}

fn otlp_exemplar(t_ms: i64, value: f64, trace: u8) -> OtlpExemplar {
    OtlpExemplar {
        filtered_attributes: vec![attr("user", "u1")],
        time_unix_nano: t_ms as u64 * 1_000_000,
        value: Some(exemplar::Value::AsDouble(value)),
        span_id: vec![0x11; 8],
        trace_id: vec![trace; 16],
    }
}

#[test]
fn otlp_metrics_exemplars_go_on_the_sum_and_the_matching_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let t = recent_ms(30_000);
    let ns = t as u64 * 1_000_000;
    let cumulative = AggregationTemporality::Cumulative as i32;
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![attr("service.name", "shop")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "orders".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: ns,
                                value: Some(number_data_point::Value::AsDouble(7.0)),
                                exemplars: vec![otlp_exemplar(t - 5, 1.0, 0xaa)],
                                ..Default::default()
                            }],
                            aggregation_temporality: cumulative,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "checkout.duration".into(),
                        unit: "s".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: ns,
                                count: 4,
                                sum: Some(3.0),
                                bucket_counts: vec![1, 2, 1],
                                explicit_bounds: vec![0.25, 1.0],
                                exemplars: vec![
                                    otlp_exemplar(t - 9, 0.75, 0xbb),
                                    otlp_exemplar(t - 8, 2.5, 0xcc),
                                ],
                                ..Default::default()
                            }],
                            aggregation_temporality: cumulative,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, body, _) = n.post_raw(
        "/v1/metrics",
        "application/x-protobuf",
        &[],
        req.encode_to_vec(),
    );
    assert_eq!(status, 200, "{body}");
    let answer = n.get_ok(&grafana_exemplar_query(
        "orders_total or checkout_duration_seconds_bucket",
        t - 60_000,
        t,
    ));
    let labels = |trace: &str| serde_json::json!({"span_id": "1111111111111111", "trace_id": trace.repeat(16), "user": "u1"});
    let at = |ms: i64| ms as f64 / 1000.0;
    let want = serde_json::json!([
        {
            "seriesLabels": {"__name__": "checkout_duration_seconds_bucket", "job": "shop", "le": "+Inf"},
            "exemplars": [{"labels": labels("cc"), "value": "2.5", "timestamp": at(t - 8)}],
        },
        {
            "seriesLabels": {"__name__": "checkout_duration_seconds_bucket", "job": "shop", "le": "1"},
            "exemplars": [{"labels": labels("bb"), "value": "0.75", "timestamp": at(t - 9)}],
        },
        {
            "seriesLabels": {"__name__": "orders_total", "job": "shop"},
            "exemplars": [{"labels": labels("aa"), "value": "1", "timestamp": at(t - 5)}],
        },
    ]);
    assert_eq!(answer["data"], want, "{answer}");
}
