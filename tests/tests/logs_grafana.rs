//! The requests Grafana's Loki data source sends, replayed against the real binary after a
//! Loki push: Explore (logs and the volume histogram), the label browser, a dashboard panel,
//! and the metadata endpoints, checking Loki's JSON shapes and error answers.

use std::time::Duration;

use e2e::{enc, now_ns, Novamon};

const S: i64 = 1_000_000_000;

/// Pushes 60 lines, one per second over the last minute and a bit: levels alternate
/// info/error, half JSON and half logfmt.
fn setup() -> (tempfile::TempDir, Novamon, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let base = (now_ns() / S - 120) * S;
    let mut values = Vec::new();
    for i in 0..60 {
        let level = if i % 2 == 0 { "info" } else { "error" };
        let line = if i % 4 < 2 {
            format!(r#"{{"level":"{level}","msg":"request {i}","duration":"{i}ms"}}"#)
        } else {
            format!("level={level} msg=\"request {i}\" duration={i}ms")
        };
        values.push(
            serde_json::json!([(base + i * S).to_string(), line, {"trace_id": format!("t{i}")}]),
        );
    }
    let body = serde_json::json!({"streams": [
        {"stream": {"app": "shop", "level": "info"}, "values": values.iter().step_by(2).collect::<Vec<_>>()},
        {"stream": {"app": "shop", "level": "error"}, "values": values.iter().skip(1).step_by(2).collect::<Vec<_>>()},
    ]});
    n.loki_push(&body);
    n.wait_for_log_lines(r#"{app="shop"}"#, base - S, None, 60);
    (dir, n, base)
}

#[test]
fn explore_logs_and_volume_histogram() {
    let (_d, n, base) = setup();
    let (start, end) = (base - 60 * S, base + 120 * S);
    // Explore: the logs query, newest first, limit 1000, with Grafana's step.
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?direction=backward&end={end}&limit=1000&query={}&start={start}&step=1000ms",
        enc(r#"{app="shop"} |= "request 1" | json | logfmt | drop __error__"#)
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "streams");
    assert!(body["data"]["stats"]["summary"].is_object());
    let mut all = Vec::new();
    for s in body["data"]["result"].as_array().expect("streams") {
        assert_eq!(s["stream"]["app"], "shop");
        assert!(
            s["stream"]["trace_id"].is_string(),
            "structured metadata is a label: {s}"
        );
        for v in s["values"].as_array().expect("values") {
            let ts: i64 = v[0].as_str().expect("ts is a string").parse().expect("ns");
            all.push((ts, v[1].as_str().expect("line").to_owned()));
        }
    }
    // "request 1" is in lines 1 and 10..19: eleven lines.
    assert_eq!(all.len(), 11, "{all:?}");
    assert!(all.iter().all(|(_, l)| l.contains("request 1")));

    // The volume histogram: Grafana's supplementary query, step 2s here.
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?direction=backward&end={end}&query={}&start={start}&step=2000ms",
        enc(r#"sum by (level) (count_over_time({app="shop"} | drop __error__[2s]))"#)
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    let result = body["data"]["result"].as_array().expect("matrix");
    assert_eq!(result.len(), 2);
    let mut total = 0.0;
    for s in result {
        for v in s["values"].as_array().expect("values") {
            assert!(v[0].is_number(), "time is seconds as a number: {v}");
            total += v[1]
                .as_str()
                .expect("value is a string")
                .parse::<f64>()
                .expect("number");
        }
    }
    // Steps 2s apart with 2s windows tile the range: every line is counted once.
    assert_eq!(total, 60.0);
}

#[test]
fn label_browser_and_metadata_endpoints() {
    let (_d, n, base) = setup();
    let range = format!("start={}&end={}", base - 60 * S, base + 120 * S);
    let (_, body) = n.get_json(&format!("/loki/api/v1/labels?{range}"));
    assert_eq!(
        body,
        serde_json::json!({"status": "success", "data": ["app", "level"]})
    );
    let (_, body) = n.get_json(&format!("/loki/api/v1/label/level/values?{range}"));
    assert_eq!(body["data"], serde_json::json!(["error", "info"]));
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/label/level/values?{range}&query={}",
        enc(r#"{level="info"}"#)
    ));
    assert_eq!(body["data"], serde_json::json!(["info"]));
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/series?{range}&match[]={}",
        enc(r#"{app="shop"}"#)
    ));
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/index/stats?{range}&query={}",
        enc(r#"{app="shop"}"#)
    ));
    assert_eq!(body["streams"], 2);
    assert_eq!(body["entries"], 60);
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/index/volume?{range}&query={}",
        enc(r#"{app="shop"}"#)
    ));
    assert_eq!(body["data"]["resultType"], "vector");
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/detected_fields?{range}&query={}",
        enc(r#"{app="shop"}"#)
    ));
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["label"].as_str())
        .collect();
    assert!(
        fields.contains(&"duration") && fields.contains(&"trace_id"),
        "{body}"
    );
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/format_query?query={}",
        enc(r#"{app="shop"}|="x""#)
    ));
    assert_eq!(body["data"], r#"{app="shop"} |= "x""#);
    let (_, body) = n.get_json("/loki/api/v1/status/buildinfo");
    assert!(body["version"].as_str().is_some_and(|v| v.starts_with('3')));
}

#[test]
fn dashboard_panel_instant_queries_and_errors() {
    let (_d, n, base) = setup();
    // A time-series panel: per-level rate over a minute at a 60s step.
    let end = base + 60 * S;
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?query={}&start={}&end={end}&step=60",
        enc(r#"sum by (level) (rate({app="shop"}[1m]))"#),
        end
    ));
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().expect("matrix");
    // At `end` the window (base, base+60s] holds lines 1..=59... and line 60 does not exist:
    // 30 errors (odd) and 29 infos (even, excluding line 0 at the open edge).
    let by_level = |lvl: &str| -> f64 {
        let s = result
            .iter()
            .find(|s| s["metric"]["level"] == lvl)
            .expect("series");
        s["values"][0][1]
            .as_str()
            .expect("value")
            .parse()
            .expect("number")
    };
    // Each stream's rate is computed then summed, so allow float rounding.
    assert!((by_level("error") - 30.0 / 60.0).abs() < 1e-12);
    assert!((by_level("info") - 29.0 / 60.0).abs() < 1e-12);
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query?query={}&time={end}",
        // Structured metadata (trace_id) are labels of the series, as in Loki: sum them away.
        enc(r#"sum(count_over_time({app="shop", level="error"}[1m])) * 2"#)
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "vector");
    assert_eq!(body["data"]["result"][0]["value"][1], "60");
    // Errors: Loki's plain-text 400s.
    let text = bad_request(&n, "query_range", r#"{app="shop"} | bogus"#, "");
    assert!(
        text.starts_with(
            "parse error at line 1, col 16: syntax error: unexpected IDENTIFIER bogus"
        ),
        "{text}"
    );
    let text = bad_request(&n, "query", r#"{app="shop"}"#, "");
    assert!(
        text.contains("log queries are not supported as an instant query type"),
        "{text}"
    );
    // Grafana's "maximum lines" above Loki's max_entries_limit_per_query (5,000).
    let text = bad_request(&n, "query_range", r#"{app="shop"}"#, "&limit=5001");
    assert_eq!(
        text,
        "max entries limit per query exceeded, limit > max_entries_limit_per_query (5001 > 5000)\n"
    );
    // Half the lines are logfmt: `| json` tags them, and a metric query over them fails
    // with Loki's pipeline error unless they are filtered out.
    let at = (base + 120 * S).to_string();
    let text = bad_request(
        &n,
        "query",
        r#"sum(count_over_time({app="shop"} | json [5m]))"#,
        &format!("&time={at}"),
    );
    assert!(
        text.starts_with(
            "pipeline error: 'JSONParserErr' for series: '{__error__=\"JSONParserErr\""
        ) && text.contains("Use a label filter to intentionally skip this error."),
        "{text}"
    );
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query?query={}&time={at}",
        enc(r#"sum(count_over_time({app="shop"} | json | __error__="" [5m]))"#)
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "30");
    // Vector matching: each level's share of all lines.
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query?query={}&time={at}",
        enc(r#"sum by (level) (count_over_time({app="shop"}[5m])) / on() group_left sum(count_over_time({app="shop"}[5m]))"#)
    ));
    assert_eq!(status, 200, "{body}");
    let shares: Vec<(&str, &str)> = body["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .filter_map(|r| Some((r["metric"]["level"].as_str()?, r["value"][1].as_str()?)))
        .collect();
    assert_eq!(shares, [("error", "0.5"), ("info", "0.5")], "{body}");
    // line_format with Loki's template functions, through the API.
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?query={}&start={}&limit=1&direction=forward",
        enc(r#"{app="shop"} | json | __error__="" | line_format `{{ .msg | ToUpper | replace " " "_" }} {{ .duration | trimSuffix "ms" | printf "%3s" }} {{ __timestamp__ | unixEpoch }}`"#),
        base - S
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["result"][0]["values"][0][1],
        format!("REQUEST_0   0 {}", base / S).as_str(),
        "{body}"
    );
}

/// GETs `/loki/api/v1/<endpoint>?query=<query><params>`, which Loki answers with a
/// plain-text 400; returns the text.
fn bad_request(n: &Novamon, endpoint: &str, query: &str, params: &str) -> String {
    let path = format!("/loki/api/v1/{endpoint}?query={}{params}", enc(query));
    let mut resp = n
        .agent
        .get(format!("{}{}", n.url, path))
        .call()
        .expect("GET");
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(resp.status().as_u16(), 400, "{path}: {text}");
    text
}

/// Reads one unmasked server text frame of a websocket.
fn read_ws_text(s: &mut impl std::io::Read) -> String {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).expect("frame header");
    assert_eq!(head[0] & 0x0f, 1, "a text frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).expect("len16");
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).expect("len64");
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("frame body");
    String::from_utf8(body).expect("utf-8")
}

/// Opens a tail websocket on `path` with extra request `headers`; frames are read through the
/// returned buffer (the first may share a TCP segment with the response headers).
fn open_tail(n: &Novamon, path: &str, headers: &str) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let addr = n.url.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
    .expect("upgrade request");
    let mut reader = std::io::BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains(" 101 "), "{status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
    }
    reader
}

#[test]
fn tail_streams_existing_then_new_lines_over_a_websocket() {
    let (_d, n, base) = setup();
    let path = format!(
        "/loki/api/v1/tail?query={}&start={}&limit=5",
        enc(r#"{app="shop"}"#),
        base - S
    );
    let mut reader = open_tail(&n, &path, "");
    let first: serde_json::Value = serde_json::from_str(&read_ws_text(&mut reader)).expect("json");
    let count: usize = first["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|st| st["values"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(count, 5, "the newest `limit` lines first: {first}");
    assert!(first.get("dropped_entries").is_some());
    let body = serde_json::json!({"streams": [{"stream": {"app": "shop", "level": "info"}, "values": [[(now_ns()).to_string(), "tailed line"]]}]});
    n.loki_push(&body);
    let next = read_ws_text(&mut reader);
    assert!(next.contains("tailed line"), "{next}");
    // A line stamped before the one just tailed (a slower shipper) arrives after it: it is
    // still tailed, once, and the earlier line is not sent again.
    let body = serde_json::json!({"streams": [{"stream": {"app": "shop", "level": "warn"}, "values": [[(now_ns() - 5 * S).to_string(), "late line"]]}]});
    n.loki_push(&body);
    let late = read_ws_text(&mut reader);
    assert!(
        late.contains("late line") && !late.contains("tailed line"),
        "{late}"
    );
}

/// Grafana 12 tails through its backend (`pkg/tsdb/loki/streaming.go`): it first GETs
/// `/loki/api/v2alpha/tail` and uses v1 unless that answers 400, then dials
/// `/loki/api/v1/tail?query=…` with no other parameter and no header, and reads each value as
/// exactly two strings. Loki 3 categorizes a tail's labels only when asked by
/// `X-Loki-Response-Encoding-Flags`, which Grafana does not send.
#[test]
fn tail_answers_grafanas_request_uncategorized_and_categorizes_when_asked() {
    let (_d, n, _base) = setup();
    let (status, _) = n.get_text("/loki/api/v2alpha/tail", &[]);
    assert_ne!(status, 400, "Grafana would take a 400 for a v2alpha tail");
    let path = format!("/loki/api/v1/tail?query={}", enc(r#"{app="shop"}"#));
    let mut grafana = open_tail(&n, &path, "");
    let first: serde_json::Value = serde_json::from_str(&read_ws_text(&mut grafana)).expect("json");
    let mut lines = 0;
    for st in first["streams"].as_array().expect("streams") {
        assert!(
            st["stream"]["trace_id"].is_string(),
            "metadata folded into the stream labels: {st}"
        );
        for v in st["values"].as_array().expect("values") {
            let pair = v.as_array().expect("a value is an array");
            assert_eq!(pair.len(), 2, "{v}");
            assert!(pair.iter().all(serde_json::Value::is_string), "{v}");
            lines += 1;
        }
    }
    // Loki's default tail limit is 100: all 60 lines of the last hour.
    assert_eq!(lines, 60, "{first}");
    assert!(first.get("encodingFlags").is_none(), "{first}");

    let mut categorized = open_tail(
        &n,
        &path,
        "X-Loki-Response-Encoding-Flags: categorize-labels\r\n",
    );
    let first: serde_json::Value =
        serde_json::from_str(&read_ws_text(&mut categorized)).expect("json");
    assert_eq!(
        first["encodingFlags"],
        serde_json::json!(["categorize-labels"])
    );
    let streams = first["streams"].as_array().expect("streams");
    // Grouped by the stream labels alone: the two pushed streams, not one per trace id.
    assert_eq!(streams.len(), 2, "{first}");
    let mut lines = 0;
    for st in streams {
        assert!(st["stream"].get("trace_id").is_none(), "{st}");
        for v in st["values"].as_array().expect("values") {
            assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
            assert!(
                v[2]["structuredMetadata"]["trace_id"].is_string(),
                "metadata in the third element: {v}"
            );
            lines += 1;
        }
    }
    assert_eq!(lines, 60, "{first}");
}
