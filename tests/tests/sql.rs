//! `POST /api/v1/sql` on the real binary: samples remote-written, logs pushed and spans sent
//! over OTLP/HTTP are answered by SQL as PromQL, LogQL, TraceQL metrics and the Jaeger API
//! answer the equivalent questions (over one window, and over aligned buckets); the
//! answer's formats (JSON rows, CSV, Arrow IPC) and errors.

use std::collections::BTreeMap;

use e2e::series::{v1_request, v1_series, V1};
use e2e::{an_hour_ago_ms, enc, Json, Novamon};
use serde_json::json;

/// Samples of `sql_total`: three instances, 40 samples 15 s apart from `t0`.
const SAMPLES: i64 = 40;
const STEP_MS: i64 = 15_000;

fn sql(n: &Novamon, query: &str, accept: &str) -> (u16, String, Vec<(String, String)>) {
    n.post_raw(
        "/api/v1/sql",
        "application/json",
        &[("Accept", accept)],
        serde_json::to_vec(&json!({ "query": query })).unwrap(),
    )
}

/// A query's rows as `first column → second column`, numbers as f64.
fn sql_pairs(n: &Novamon, query: &str) -> BTreeMap<String, f64> {
    let (status, body, _) = sql(n, query, "application/json");
    assert_eq!(status, 200, "{query}: {body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{query}: {body}"))
        .iter()
        .map(|r| {
            let key = match &r[0] {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key, r[1].as_f64().unwrap_or_else(|| panic!("{query}: {r}")))
        })
        .collect()
}

/// A vector answer of the Prometheus or Loki API as `label value → value` (`""` for the one
/// series of an aggregation without grouping).
fn vector(body: &Json, label: &str) -> BTreeMap<String, f64> {
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|s| {
            (
                s["metric"][label].as_str().unwrap_or_default().to_owned(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// A matrix answer of the Prometheus or Loki API as `label value@time ms → value`, one
/// entry per series and step.
fn matrix(body: &Json, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
    {
        let key = s["metric"][label].as_str().unwrap_or_default();
        for v in s["values"].as_array().unwrap() {
            let ms = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
            out.insert(
                format!("{key}@{ms}"),
                v[1].as_str().unwrap().parse().unwrap(),
            );
        }
    }
    out
}

fn assert_same(what: &str, sql: &BTreeMap<String, f64>, other: &BTreeMap<String, f64>) {
    assert_eq!(
        sql.keys().collect::<Vec<_>>(),
        other.keys().collect::<Vec<_>>(),
        "{what}: SQL {sql:?} vs {other:?}"
    );
    for (k, v) in sql {
        let o = other[k];
        assert!(
            (v - o).abs() <= 1e-9 * o.abs().max(1.0),
            "{what} [{k}]: SQL {v} vs {o}"
        );
    }
    assert!(!sql.is_empty(), "{what}: no rows");
}

#[test]
fn sql_answers_as_promql_and_logql_do() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let t0 = an_hour_ago_ms();
    let series = (0..3)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..SAMPLES)
                .map(|k| (t0 + k * STEP_MS, (k * (i + 1)) as f64 + 0.5))
                .collect();
            v1_series(
                &[
                    ("__name__", "sql_total"),
                    ("instance", &format!("i{i}")),
                    ("job", "sqltest"),
                ],
                &samples,
            )
        })
        .collect();
    assert_eq!(n.remote_write(&v1_request(series), V1).0, 204);

    // Metrics: every sample lies in (end - window, end].
    let end_ms = t0 + (SAMPLES - 1) * STEP_MS;
    let window_s = (SAMPLES - 1) * STEP_MS / 1000 + 1;
    let range = format!(
        "metric = 'sql_total' AND ts > to_timestamp_millis({}) AND ts <= to_timestamp_millis({end_ms})",
        end_ms - window_s * 1000
    );
    let promql = |q: &str, label: &str| {
        vector(
            &n.get_ok(&format!(
                "/api/v1/query?query={}&time={}",
                enc(q),
                end_ms as f64 / 1000.0
            )),
            label,
        )
    };
    let pairs = [
        (
            format!("SELECT 'all', count(*) FROM metrics WHERE {range}"),
            format!("sum(count_over_time(sql_total[{window_s}s]))"),
            "",
        ),
        (
            format!("SELECT 'all', sum(value) FROM metrics WHERE {range}"),
            format!("sum(sum_over_time(sql_total[{window_s}s]))"),
            "",
        ),
        (
            format!("SELECT instance, avg(value) FROM metrics WHERE {range} GROUP BY instance"),
            format!("avg_over_time(sql_total[{window_s}s])"),
            "instance",
        ),
        (
            format!("SELECT instance, max(value) FROM metrics WHERE {range} GROUP BY instance"),
            format!("max_over_time(sql_total[{window_s}s])"),
            "instance",
        ),
        (
            format!(
                "SELECT job, count(*) FROM metrics WHERE {range} AND job = 'sqltest' GROUP BY job"
            ),
            format!("sum by (job) (count_over_time(sql_total{{job=\"sqltest\"}}[{window_s}s]))"),
            "job",
        ),
    ];
    for (sql_q, prom_q, label) in &pairs {
        let mut other = promql(prom_q, label);
        if label.is_empty() {
            other = other.into_values().map(|v| ("all".to_owned(), v)).collect();
        }
        assert_same(prom_q, &sql_pairs(&n, sql_q), &other);
    }

    // Aligned buckets. A query_range evaluates at start + k·step over PromQL's left-open
    // windows `(t - 5m, t]`; `date_bin`'s bins are right-open `[b, b + 5m)`, so SQL bins
    // `ts - 1 ms` (with ms timestamps, `ts` is in `(b, b + 5m]` exactly when `ts - 1 ms` is
    // in `[b, b + 5m)`) and names each bin by its end, `b + 5m`. The samples fall into the
    // windows ending at t0 (the first only), t0 + 5m and t0 + 10m.
    // The rate is the counter's increase from the bucket's first sample to its last, per
    // second of the bucket: `rate()` and `increase()` extrapolate towards the window's
    // edges (by how far the first and last samples sit from them), which no aggregate of
    // the bucket's rows reproduces exactly. For a counter without resets (these only grow)
    // last minus first is `max_over_time - min_over_time`, which SQL's max and min are.
    let bucket = format!(
        "to_unixtime(date_bin(interval '300 seconds', ts - interval '1 millisecond', \
         to_timestamp_millis({t0})) + interval '300 seconds') * 1000"
    );
    let promql_range = |q: &str| {
        matrix(
            &n.get_ok(&format!(
                "/api/v1/query_range?query={}&start={}&end={}&step=300",
                enc(q),
                t0 as f64 / 1000.0,
                (t0 + 600_000) as f64 / 1000.0
            )),
            "instance",
        )
    };
    for (sql_q, prom_q) in [
        (
            format!(
                "SELECT concat(instance, '@', {bucket}), count(*) FROM metrics \
                 WHERE metric = 'sql_total' GROUP BY 1"
            ),
            "count_over_time(sql_total[5m])",
        ),
        (
            format!(
                "SELECT concat(instance, '@', {bucket}), sum(value) FROM metrics \
                 WHERE metric = 'sql_total' GROUP BY 1"
            ),
            "sum_over_time(sql_total[5m])",
        ),
        (
            format!(
                "SELECT concat(instance, '@', {bucket}), (max(value) - min(value)) / 300 \
                 FROM metrics WHERE metric = 'sql_total' GROUP BY 1"
            ),
            "(max_over_time(sql_total[5m]) - min_over_time(sql_total[5m])) / 300",
        ),
    ] {
        let other = promql_range(prom_q);
        assert_eq!(other.len(), 9, "{prom_q}: {other:?}");
        assert_same(prom_q, &sql_pairs(&n, &sql_q), &other);
    }

    // Logs: lines at three levels, a second apart, in the hour before now.
    let base_ns = (t0 + 60_000) * 1_000_000;
    let lines = [
        "level=error msg=\"boom\" disk=full",
        "level=info msg=started",
        "level=info msg=listening",
        "level=warn msg=slow",
        "level=error msg=\"boom again\"",
        "level=info msg=ok",
    ];
    let values: Vec<Json> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| json!([(base_ns + i as i64 * 1_000_000_000).to_string(), l]))
        .collect();
    n.loki_push(&json!({"streams": [{"stream": {"app": "sqlshop"}, "values": values}]}));
    n.wait_for_log_lines("{app=\"sqlshop\"}", base_ns, None, lines.len());
    let end_ns = base_ns + 600_000_000_000;
    let logs_range = format!(
        "labels['app'] = 'sqlshop' AND ts > to_timestamp_nanos({}) AND ts <= to_timestamp_nanos({end_ns})",
        end_ns - 3_600_000_000_000
    );
    let logql = |q: &str, label: &str| {
        vector(
            &n.get_ok(&format!(
                "/loki/api/v1/query?query={}&time={end_ns}",
                enc(q)
            )),
            label,
        )
    };
    let log_pairs = [
        (
            format!("SELECT 'all', count(*) FROM logs WHERE {logs_range}"),
            "sum(count_over_time({app=\"sqlshop\"}[1h]))",
            "",
        ),
        (
            format!("SELECT level, count(*) FROM logs WHERE {logs_range} GROUP BY level"),
            "sum by (detected_level) (count_over_time({app=\"sqlshop\"}[1h]))",
            "detected_level",
        ),
        (
            format!("SELECT 'all', count(*) FROM logs WHERE {logs_range} AND line LIKE '%boom%'"),
            "sum(count_over_time({app=\"sqlshop\"} |= \"boom\" [1h]))",
            "",
        ),
        (
            format!("SELECT 'all', sum(octet_length(line)) FROM logs WHERE {logs_range}"),
            "sum(bytes_over_time({app=\"sqlshop\"}[1h]))",
            "",
        ),
    ];
    for (sql_q, logql_q, label) in &log_pairs {
        let mut other = logql(logql_q, label);
        if label.is_empty() {
            other = other.into_values().map(|v| ("all".to_owned(), v)).collect();
        }
        assert_same(logql_q, &sql_pairs(&n, sql_q), &other);
    }

    // Counts by level over aligned 2 s buckets: the steps sit half a second after a line,
    // so no line is on a window's edge and Loki's windows and `date_bin`'s bins (named by
    // their end) hold the same lines.
    let first_ns = base_ns + 500_000_000;
    let step_ns = 2_000_000_000;
    let loki_range = matrix(
        &n.get_ok(&format!(
            "/loki/api/v1/query_range?query={}&start={first_ns}&end={}&step=2",
            enc("sum by (detected_level) (count_over_time({app=\"sqlshop\"}[2s]))"),
            first_ns + 3 * step_ns
        )),
        "detected_level",
    );
    let sql_buckets = sql_pairs(
        &n,
        &format!(
            "SELECT concat(level, '@', CAST(date_bin(interval '2 seconds', ts, \
             to_timestamp_nanos({first_ns})) + interval '2 seconds' AS BIGINT) / 1000000), \
             count(*) FROM logs WHERE {logs_range} GROUP BY 1"
        ),
    );
    assert_eq!(loki_range.len(), 5, "{loki_range:?}");
    assert_same("log counts by level and bucket", &sql_buckets, &loki_range);

    // Spans: a trace of three spans sent over OTLP/HTTP, counted by name as Jaeger shows it.
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let start_ns = base_ns as u64;
    let other_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let span = |id: &str, parent: &str, name: &str, offset_ms: u64| {
        json!({
            "traceId": if offset_ms < 3 { trace_id } else { other_trace }, "spanId": id, "parentSpanId": parent, "name": name, "kind": 2,
            "startTimeUnixNano": (start_ns + offset_ms * 1_000_000).to_string(),
            "endTimeUnixNano": (start_ns + offset_ms * 1_000_000 + 5_000_000).to_string(),
        })
    };
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sqlcheckout"}}]},
        "scopeSpans": [{"spans": [
            span("00f067aa0ba902b7", "", "GET /cart", 0),
            span("00f067aa0ba902b8", "00f067aa0ba902b7", "SELECT cart", 1),
            span("00f067aa0ba902b9", "00f067aa0ba902b7", "SELECT cart", 2),
        ]}],
    }, {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sqlstock"}}]},
        "scopeSpans": [{"spans": [
            span("00f067aa0ba902c1", "", "GET /stock", 3),
            span("00f067aa0ba902c2", "00f067aa0ba902c1", "SELECT stock", 4),
        ]}],
    }]});
    n.post_otlp_json("/v1/traces", &body);
    let trace = n.get_ok(&format!("/jaeger/api/traces/{trace_id}"));
    let mut jaeger: BTreeMap<String, f64> = BTreeMap::new();
    for s in trace["data"][0]["spans"].as_array().unwrap() {
        *jaeger
            .entry(s["operationName"].as_str().unwrap().to_owned())
            .or_default() += 1.0;
    }
    assert_same(
        "spans by name",
        &sql_pairs(
            &n,
            &format!(
                "SELECT name, count(*) FROM spans WHERE service = 'sqlcheckout' \
                 AND trace_id = '{trace_id}' AND start >= to_timestamp_nanos({start_ns}) GROUP BY name"
            ),
        ),
        &jaeger,
    );

    // Spans counted by service, as TraceQL metrics count them over one window (Tempo's
    // windows are right-closed, `(start, end]`; every span is well inside).
    let start_s = base_ns / 1_000_000_000 - 60;
    let end_s = base_ns / 1_000_000_000 + 3600;
    let tempo = n.get_ok(&format!(
        "/tempo/api/metrics/query?q={}&start={start_s}&end={end_s}",
        enc("{ } | count_over_time() by (resource.service.name)")
    ));
    let by_service: BTreeMap<String, f64> = tempo["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{tempo}"))
        .iter()
        .map(|s| {
            assert_eq!(s["labels"][0]["key"], "resource.service.name", "{tempo}");
            (
                s["labels"][0]["value"]["stringValue"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_service.len(), 2, "{tempo}");
    assert_same(
        "spans by service",
        &sql_pairs(
            &n,
            &format!(
                "SELECT service, count(*) FROM spans \
                 WHERE start > to_timestamp_nanos({}) AND start <= to_timestamp_nanos({}) \
                 GROUP BY service",
                start_s * 1_000_000_000,
                end_s * 1_000_000_000
            ),
        ),
        &by_service,
    );
}

#[test]
fn answers_come_as_json_csv_or_arrow_and_errors_as_400() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let t0 = an_hour_ago_ms();
    let series = vec![v1_series(
        &[
            ("__name__", "fmt_total"),
            ("instance", "a,b"),
            ("job", "fmt"),
        ],
        &[(t0, 1.5), (t0 + 1000, f64::NAN)],
    )];
    assert_eq!(n.remote_write(&v1_request(series), V1).0, 204);
    let q =
        "SELECT ts, value, instance, labels FROM metrics WHERE metric = 'fmt_total' ORDER BY ts";

    let (status, body, headers) = sql(&n, q, "application/json");
    assert_eq!(status, 200, "{body}");
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/json")));
    let body: Json = serde_json::from_str(&body).unwrap();
    let columns: Vec<(&str, &str)> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns.iter().map(|c| c.0).collect::<Vec<_>>(),
        ["ts", "value", "instance", "labels"]
    );
    assert_eq!((columns[1].1, columns[2].1), ("Float64", "Utf8"));
    assert!(columns[0].1.starts_with("Timestamp("), "{columns:?}");
    let t0_text = chrono::DateTime::from_timestamp_millis(t0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(
        body["rows"][0],
        json!([t0_text, 1.5, "a,b", {"instance": "a,b", "job": "fmt"}])
    );
    assert_eq!(body["rows"][1][1], "NaN");

    let (status, csv, headers) = sql(&n, q, "text/csv");
    assert_eq!(status, 200, "{csv}");
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/csv")));
    let csv_lines: Vec<&str> = csv.lines().collect();
    assert_eq!(csv_lines[0], "ts,value,instance,labels");
    assert!(
        csv_lines[1].starts_with(&format!("{t0_text},1.5,\"a,b\",")),
        "{csv}"
    );
    assert_eq!(csv_lines.len(), 3, "{csv}");

    // The Arrow IPC stream: a schema message then the batches, each after the 0xFFFFFFFF
    // continuation marker, ending with the end-of-stream marker.
    let mut resp = n
        .agent
        .post(format!("{}/api/v1/sql", n.url))
        .header("Accept", "application/vnd.apache.arrow.stream")
        .send_json(json!({ "query": q }))
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ipc = resp.body_mut().read_to_vec().unwrap();
    assert_eq!(&ipc[..4], &[0xff; 4]);
    assert_eq!(&ipc[ipc.len() - 8..], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

    for (bad, contains) in [
        ("SELEC 1", "Line: 1, Column: 1"),
        ("SELECT nope FROM metrics", "nope"),
        ("CREATE TABLE t AS SELECT 1", "DDL"),
    ] {
        let (status, body, _) = sql(&n, bad, "application/json");
        assert_eq!(status, 400, "{bad}: {body}");
        let body: Json = serde_json::from_str(&body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(contains),
            "{bad}: {body}"
        );
    }
    let (status, body, _) = n.post_raw("/api/v1/sql", "application/json", &[], b"{}".to_vec());
    assert_eq!(status, 400, "{body}");
}

/// A native histogram remote-written (1.0, integer counts as deltas, as Prometheus sends
/// them) reads back as the `histogram` struct: its count and sum as PromQL's
/// `histogram_count` and `histogram_sum` answer them, its schema, zero bucket, reset hint,
/// spans and absolute bucket counts; its row's `value` is NULL.
#[test]
fn native_histograms_read_back_as_a_struct_column() {
    use ingest::remote_write::proto::{histogram, v1, BucketSpan, Histogram};
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let t0 = an_hour_ago_ms();
    let mut series = v1_series(&[("__name__", "rpc_seconds"), ("job", "rpc")], &[]);
    series.histograms = vec![Histogram {
        count: Some(histogram::Count::CountInt(8)),
        sum: 12.5,
        schema: 1,
        zero_threshold: 0.001,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![
            BucketSpan {
                offset: 0,
                length: 2,
            },
            BucketSpan {
                offset: 1,
                length: 1,
            },
        ],
        // Absolute counts 2, 3, 1.
        positive_deltas: vec![2, 1, -2],
        negative_spans: vec![BucketSpan {
            offset: -1,
            length: 1,
        }],
        negative_deltas: vec![1],
        reset_hint: histogram::ResetHint::No as i32,
        timestamp: t0,
        ..Default::default()
    }];
    let request = v1::WriteRequest {
        timeseries: vec![series],
        ..Default::default()
    };
    assert_eq!(
        n.remote_write(&prost::Message::encode_to_vec(&request), V1)
            .0,
        204
    );

    let (status, body, _) = sql(
        &n,
        "SELECT value, histogram['count'] AS count, histogram['sum'] AS sum, \
         histogram['schema'] AS schema, histogram['zero_count'] AS zero, \
         histogram['counter_reset_hint'] AS hint, histogram['positive_spans'] AS spans, \
         histogram['positive_buckets'] AS buckets, histogram['negative_buckets'] AS negative \
         FROM metrics WHERE metric = 'rpc_seconds'",
        "application/json",
    );
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["rows"],
        json!([[
            null,
            8.0,
            12.5,
            1,
            1.0,
            2,
            [{"offset": 0, "length": 2}, {"offset": 1, "length": 1}],
            [2.0, 3.0, 1.0],
            [1.0]
        ]]),
        "{body}"
    );
    for (promql, column) in [
        ("histogram_count(rpc_seconds)", "count"),
        ("histogram_sum(rpc_seconds)", "sum"),
    ] {
        let answer = n.get_ok(&format!(
            "/api/v1/query?query={}&time={}",
            enc(promql),
            t0 as f64 / 1000.0
        ));
        let sql_value = sql_pairs(
            &n,
            &format!("SELECT job, histogram['{column}'] FROM metrics WHERE metric = 'rpc_seconds'"),
        );
        assert_same(promql, &sql_value, &vector(&answer, "job"));
    }
}
