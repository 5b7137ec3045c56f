//! The requests Grafana 12 and its Logs Drilldown app send, replayed against the real binary
//! after a Loki push of streams without a `level` label: Explore's logs query with labels
//! categorized (`X-Loki-Response-Encoding-Flags: categorize-labels`, which Grafana 12 always
//! sends), the volume histogram by `detected_level`, and the Drilldown's detected labels,
//! fields and field values, its limits and its level filter. Request parameters are as the
//! data source and the app build them (ISO times from the app, nanoseconds from the data
//! source); shapes are checked as Grafana decodes them.

use e2e::{enc, now_ns, Novamon};
use serde_json::Value as J;

const S: i64 = 1_000_000_000;

/// Levels of the pushed lines, one per second, in turn.
const LEVELS: [&str; 4] = ["info", "error", "warn", "debug"];

/// Pushes 40 lines of `service_name="api"` (no level label: the level is in the line, as
/// JSON, logfmt or a plain word), each with a `trace_id`, plus 4 lines of a second service
/// whose streams carry a numeric `pid` label.
fn setup() -> (tempfile::TempDir, Novamon, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let base = (now_ns() / S - 120) * S;
    let mut values = Vec::new();
    for i in 0..40i64 {
        let line = api_line(i);
        values.push(
            serde_json::json!([(base + i * S).to_string(), line, {"trace_id": format!("t{i}")}]),
        );
    }
    let other: Vec<J> = (0..4i64)
        .map(|i| serde_json::json!([(base + i * S).to_string(), "started"]))
        .collect();
    let body = serde_json::json!({"streams": [
        {"stream": {"service_name": "api", "namespace": "prod"}, "values": values},
        {"stream": {"service_name": "worker", "namespace": "prod", "pid": "4242"}, "values": other[..2]},
        {"stream": {"service_name": "worker", "namespace": "prod", "pid": "4243"}, "values": other[2..]},
    ]});
    n.loki_push(&body);
    n.wait_for_log_lines(r#"{namespace="prod"}"#, base - S, None, 44);
    (dir, n, base)
}

/// Line `i` of the `api` service: JSON, logfmt or plain text in turn.
fn api_line(i: i64) -> String {
    let level = LEVELS[i as usize % 4];
    let status = if level == "error" { 500 } else { 200 };
    let msg = message(i);
    match i % 3 {
        0 => {
            format!(r#"{{"level":"{level}","msg":"{msg}","status":{status},"user":{{"id":{i}}}}}"#)
        }
        1 => format!("level={level} msg=\"{msg}\" status={status}"),
        _ => format!("{} {msg} status {status}", level.to_uppercase()),
    }
}

fn message(i: i64) -> String {
    format!("GET /api/items/{i} served in {i}ms")
}

/// RFC 3339 in UTC with milliseconds, as the Drilldown's `toISOString()` writes times.
fn iso(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[test]
fn explore_categorizes_labels_and_colours_the_volume_by_detected_level() {
    let (_d, n, base) = setup();
    let (start, end) = (base - 60 * S, base + 120 * S);
    // Grafana's Loki data source: every data query carries the flag.
    let (status, text) = n.get_text(
        &format!(
            "/loki/api/v1/query_range?direction=backward&end={end}&limit=1000&query={}&start={start}&step=1000ms",
            enc(r#"{service_name="api"} | json | logfmt | drop __error__, __error_details__"#)
        ),
        &[
            ("X-Loki-Response-Encoding-Flags", "categorize-labels"),
            ("X-Query-Tags", "Source=grafana-lokiexplore-app"),
        ],
    );
    assert_eq!(status, 200, "{text}");
    // Grafana reads the flags as it meets them: they must come before the result.
    let flags_at = text.find(r#""encodingFlags":["categorize-labels"]"#);
    let result_at = text.find(r#""result":"#);
    assert!(
        flags_at.is_some() && flags_at < result_at,
        "encodingFlags before result: {text}"
    );
    let body: J = serde_json::from_str(&text).expect("JSON");
    let streams = body["data"]["result"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "grouped by stream labels only: {body}");
    assert_eq!(
        streams[0]["stream"],
        serde_json::json!({"service_name": "api", "namespace": "prod"})
    );
    let values = streams[0]["values"].as_array().expect("values");
    assert_eq!(values.len(), 40);
    let mut levels = std::collections::BTreeMap::new();
    for v in values {
        let v = v.as_array().expect("entry");
        assert_eq!(v.len(), 3, "always three elements: {v:?}");
        let ts: i64 = v[0].as_str().expect("ts string").parse().expect("ns");
        let i = (ts - base) / S;
        let sm = &v[2]["structuredMetadata"];
        assert_eq!(sm["trace_id"], format!("t{i}"), "{v:?}");
        let level = sm["detected_level"].as_str().expect("detected_level");
        assert_eq!(level, LEVELS[i as usize % 4], "line {i}: {v:?}");
        *levels.entry(level.to_owned()).or_insert(0) += 1;
        let parsed = &v[2]["parsed"];
        if i % 3 == 2 {
            // A plain line: nothing parsed, and the key is left out.
            assert!(parsed.is_null(), "{v:?}");
        } else {
            assert_eq!(parsed["msg"], message(i), "{v:?}");
            assert_eq!(parsed["level"], LEVELS[i as usize % 4], "{v:?}");
        }
        if i % 3 == 0 {
            assert_eq!(parsed["user_id"], i.to_string(), "{v:?}");
        }
    }
    assert_eq!(levels.values().sum::<i32>(), 40);

    // Without the flag, Loki's old shape: every label in the stream, two elements.
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?direction=backward&end={end}&limit=5&query={}&start={start}",
        enc(r#"{service_name="api"}"#)
    ));
    let s0 = &body["data"]["result"][0];
    assert!(s0["stream"]["detected_level"].is_string(), "{body}");
    assert_eq!(s0["values"][0].as_array().map(Vec::len), Some(2), "{body}");
    assert!(body["data"].get("encodingFlags").is_none(), "{body}");

    // The volume histogram Explore adds to every logs query.
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?direction=backward&end={end}&query={}&start={start}&step=2000ms",
        enc(r#"sum by (level, detected_level) (count_over_time({service_name="api"} | drop __error__[2s]))"#)
    ));
    assert_eq!(status, 200, "{body}");
    let mut by_level = std::collections::BTreeMap::new();
    for s in body["data"]["result"].as_array().expect("matrix") {
        let level = s["metric"]["detected_level"]
            .as_str()
            .expect("detected_level");
        let count: f64 = s["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| {
                v[1].as_str()
                    .expect("string")
                    .parse::<f64>()
                    .expect("number")
            })
            .sum();
        by_level.insert(level.to_owned(), count);
    }
    let expected: std::collections::BTreeMap<String, f64> =
        LEVELS.iter().map(|l| (l.to_string(), 10.0)).collect();
    assert_eq!(by_level, expected, "{body}");

    // The Drilldown's service tile: a bare selector, which metric queries answer from the
    // index's columns, must still see the structured metadata.
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?direction=backward&end={end}&query={}&start={start}&step=2000ms",
        enc(r#"sum by (detected_level) (count_over_time({ service_name="api" } [2s]))"#)
    ));
    assert_eq!(status, 200, "{body}");
    let levels: Vec<&str> = body["data"]["result"]
        .as_array()
        .expect("matrix")
        .iter()
        .filter_map(|s| s["metric"]["detected_level"].as_str())
        .collect();
    assert_eq!(levels, ["debug", "error", "info", "warn"], "{body}");
}

#[test]
fn drilldown_labels_fields_values_limits_and_level_filter() {
    let (_d, n, base) = setup();
    let (start, end) = (iso(base - 60 * S), iso(base + 120 * S));
    let tags = [("X-Query-Tags", "Source=grafana-lokiexplore-app")];
    let get = |path: &str| -> J {
        let (status, text) = n.get_text(path, &tags);
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).expect("JSON")
    };

    // Service selection: each service's bytes, from the index's columns.
    let body = get(&format!(
        "/loki/api/v1/index/volume?end={end}&limit=5000&query={}&start={start}",
        enc("{service_name=~`.+`}")
    ));
    assert_eq!(body["data"]["resultType"], "vector", "{body}");
    let volumes: std::collections::BTreeMap<&str, &str> = body["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|r| {
            let service = r["metric"]["service_name"].as_str().expect("service");
            (service, r["value"][1].as_str().expect("bytes as a string"))
        })
        .collect();
    let api_bytes: usize = (0..40).map(|i| api_line(i).len()).sum();
    assert_eq!(
        volumes,
        [("api", api_bytes.to_string().as_str()), ("worker", "28")].into(),
        "{body}"
    );

    // Service selection tabs: no selector. Labels tab: the service's selector.
    let body = get(&format!(
        "/loki/api/v1/detected_labels?end={end}&query=&start={start}"
    ));
    assert_eq!(
        body,
        serde_json::json!({"detectedLabels": [
            {"label": "namespace", "cardinality": 1},
            {"label": "service_name", "cardinality": 2},
        ]}),
        "pid (all numbers) is no filter"
    );
    let body = get(&format!(
        "/loki/api/v1/detected_labels?end={end}&query={}&start={start}",
        enc(r#"{service_name="api"}"#)
    ));
    assert_eq!(
        body["detectedLabels"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );

    // Fields tab: the app's expression with its parsers.
    let expr = r#"{service_name="api"} | json | logfmt | drop __error__, __error_details__"#;
    let body = get(&format!(
        "/loki/api/v1/detected_fields?end={end}&query={}&start={start}",
        enc(expr)
    ));
    assert_eq!(body["limit"], 1000, "{body}");
    let fields: std::collections::BTreeMap<&str, &J> = body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| (f["label"].as_str().expect("label"), f))
        .collect();
    assert_eq!(fields["status"]["type"], "int", "{body}");
    assert_eq!(fields["status"]["cardinality"], 2, "{body}");
    assert_eq!(
        fields["status"]["parsers"],
        serde_json::json!(["json", "logfmt"]),
        "{body}"
    );
    assert_eq!(
        fields["user_id"]["jsonPath"],
        serde_json::json!(["user", "id"])
    );
    assert_eq!(fields["user_id"]["parsers"], serde_json::json!(["json"]));
    assert!(
        fields["trace_id"]["parsers"].is_null(),
        "structured metadata: {body}"
    );
    assert_eq!(fields["detected_level"]["cardinality"], 4, "{body}");

    // Field values (Grafana's language provider: nanoseconds, limit 1000).
    let body = get(&format!(
        "/loki/api/v1/detected_field/status/values?start={}&end={}&limit=1000&query={}",
        base - 60 * S,
        base + 120 * S,
        enc(expr)
    ));
    assert_eq!(
        body,
        serde_json::json!({"values": ["200", "500"], "limit": 1000})
    );
    let body = get(&format!(
        "/loki/api/v1/detected_field/detected_level/values?start={start}&end={end}&limit=1000&query={}",
        enc(expr)
    ));
    assert_eq!(
        body,
        serde_json::json!({"values": ["debug", "error", "info", "warn"], "limit": 1000})
    );
    let body = get(&format!(
        "/loki/api/v1/detected_field/absent/values?start={start}&end={end}&query={}",
        enc(expr)
    ));
    assert_eq!(body, serde_json::json!({}));

    // Patterns tab: the most frequent pattern, then the filter the app adds when one is
    // picked, which must find the lines the pattern counted.
    let body = get(&format!(
        "/loki/api/v1/patterns?end={end}&query={}&start={start}&step=1m",
        enc(r#"{service_name="api"}"#)
    ));
    assert_eq!(body["status"], "success", "{body}");
    let patterns = body["data"].as_array().expect("data");
    assert!(!patterns.is_empty(), "{body}");
    let count = |p: &J| -> i64 {
        p["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| {
                assert!(s[0].is_i64() && s[1].is_i64(), "integers: {s}");
                s[1].as_i64().expect("count")
            })
            .sum()
    };
    for p in patterns {
        let level = p["level"].as_str().expect("level");
        assert!(LEVELS.contains(&level) || level == "unknown", "{p}");
    }
    let top = &patterns[0];
    assert!(
        patterns.iter().all(|p| count(p) <= count(top)),
        "sorted: {body}"
    );
    let pattern = top["pattern"].as_str().expect("pattern");
    assert!(pattern.contains("<_>"), "{pattern}");
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?direction=backward&end={}&limit=100&query={}&start={}",
        base + 120 * S,
        enc(&format!(
            r#"{{service_name="api"}} |> {}"#,
            serde_json::to_string(pattern).expect("quoted")
        )),
        base - 60 * S,
    ));
    let matched: usize = body["data"]["result"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        matched as i64 >= count(top),
        "|> finds at least the {} lines of {pattern:?} (a pattern of another level may \
         match them too): {body}",
        count(top)
    );

    // The app's configuration probe.
    let body = get("/loki/api/v1/drilldown-limits");
    assert_eq!(body["limits"]["discover_log_levels"], true, "{body}");
    assert_eq!(
        body["limits"]["max_entries_limit_per_query"], 5000,
        "{body}"
    );
    assert!(body["version"].as_str().is_some_and(|v| v.starts_with('3')));

    // The level filter the app adds, on the logs panel's query.
    let (status, text) = n.get_text(
        &format!(
            "/loki/api/v1/query_range?direction=backward&end={}&limit=100&query={}&start={}",
            base + 120 * S,
            enc(r#"{service_name="api"} | detected_level="error" | json | logfmt | drop __error__, __error_details__"#),
            base - 60 * S,
        ),
        &[("X-Loki-Response-Encoding-Flags", "categorize-labels")],
    );
    assert_eq!(status, 200, "{text}");
    let body: J = serde_json::from_str(&text).expect("JSON");
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .expect("values");
    assert_eq!(values.len(), 10, "{body}");
    assert!(values
        .iter()
        .all(|v| v[2]["structuredMetadata"]["detected_level"] == "error"));
}
