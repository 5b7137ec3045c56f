//! Traces, OTLP metrics and OTLP logs end to end: the real OpenTelemetry Python SDK (OTLP/gRPC
//! and OTLP/HTTP exporters) sends a trace across two services, some metrics and a log line to a
//! real novamon; each is found again through the Jaeger, Tempo, Prometheus and Loki APIs, with
//! the requests Grafana's Jaeger and Tempo data sources make. Also bad input and kill -9
//! durability.
//!
//! Needs the venv `tests/run.sh` creates ($HOME/.cache/novamon-venv, or NOVAMON_VENV).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::{enc, venv_python, Json, Novamon};

/// Runs tests/otel/emit.py; returns (trace id, root span id).
fn emit(protocol: &str, endpoint: &str, suffix: &str) -> (String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/emit.py");
    let out = Command::new(venv_python())
        .arg(script)
        .args([protocol, endpoint, suffix])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "emit.py failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Json = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (
        ids["trace_id"].as_str().unwrap().to_owned(),
        ids["root_span_id"].as_str().unwrap().to_owned(),
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Grafana's Jaeger data source: service list, operations, search, trace by id.
fn check_jaeger(n: &Novamon, suffix: &str, trace_id: &str) {
    let (front, back) = (format!("frontend-{suffix}"), format!("backend-{suffix}"));
    let services = n.get_ok("/jaeger/api/services");
    for s in [&front, &back] {
        assert!(
            services["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == s.as_str()),
            "{s} not in {services}"
        );
    }
    let ops = n.get_ok(&format!("/jaeger/api/services/{}/operations", enc(&front)));
    assert_eq!(ops["data"], serde_json::json!(["GET /checkout", "render"]));
    let ops = n.get_ok(&format!(
        "/jaeger/api/operations?service={}&spanKind=client",
        enc(&back)
    ));
    assert_eq!(
        ops["data"],
        serde_json::json!([{ "name": "SELECT orders", "spanKind": "client" }])
    );

    let end_us = (now_s() + 60) * 1_000_000;
    let start_us = end_us - 3_600_000_000;
    let search = n.get_ok(
        &format!(
            "/jaeger/api/traces?service={}&operation={}&limit=20&start={start_us}&end={end_us}&lookback=1h&tags={}&minDuration=0ms",
            enc(&back),
            enc("SELECT orders"),
            enc(r#"{"error":"true","db.system":"postgresql"}"#)
        ),
    );
    let found: Vec<&str> = search["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(found, vec![trace_id], "{search}");

    let trace = &n.get_ok(&format!("/jaeger/api/traces/{trace_id}"))["data"][0];
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3, "{trace}");
    assert_eq!(trace["processes"].as_object().unwrap().len(), 2);
    let db = spans
        .iter()
        .find(|s| s["operationName"] == "SELECT orders")
        .unwrap();
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "GET /checkout")
        .unwrap();
    assert_eq!(db["references"][0]["refType"], "CHILD_OF");
    assert_eq!(db["references"][0]["spanID"], root["spanID"]);
    assert_eq!(root["references"], serde_json::json!([]));
    assert_eq!(
        trace["processes"][db["processID"].as_str().unwrap()]["serviceName"],
        back.as_str()
    );
    let tags = db["tags"].as_array().unwrap();
    assert!(
        tags.contains(&serde_json::json!({ "key": "error", "type": "bool", "value": true })),
        "{tags:?}"
    );
    assert!(
        tags.contains(&serde_json::json!({ "key": "db.rows", "type": "int64", "value": 7 })),
        "{tags:?}"
    );
    assert_eq!(
        db["logs"][0]["fields"][0],
        serde_json::json!({ "key": "event", "type": "string", "value": "cache miss" })
    );
    assert_eq!(
        db["logs"][0]["fields"][1],
        serde_json::json!({ "key": "cache.key", "type": "string", "value": "cart-42" })
    );
    assert!(
        db["duration"].as_u64().is_some()
            && db["startTime"].as_u64().unwrap() >= root["startTime"].as_u64().unwrap()
    );

    let deps = n.get_ok(&format!(
        "/jaeger/api/dependencies?endTs={}&lookback=3600000",
        (now_s() + 60) * 1000
    ));
    assert!(
        deps["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["parent"] == front.as_str() && d["child"] == back.as_str()),
        "{deps}"
    );
}

/// Grafana's Tempo data source: echo, tag names and values, TraceQL search, trace by id.
fn check_tempo(n: &Novamon, suffix: &str, trace_id: &str) {
    let back = format!("backend-{suffix}");
    let (st, _, _) = n.post_raw("/tempo/api/echo", "text/plain", &[], vec![]);
    assert_eq!(st, 405, "echo is GET only");
    let mut resp = n
        .agent
        .get(format!("{}/tempo/api/echo", n.url))
        .call()
        .unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "echo");
    let (start, end) = (now_s() - 3600, now_s() + 60);
    let tags = n.get_ok(&format!(
        "/tempo/api/v2/search/tags?scope=resource&start={start}&end={end}"
    ));
    assert!(
        tags["scopes"][0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "service.name"),
        "{tags}"
    );
    let values = n.get_ok(&format!(
        "/tempo/api/v2/search/tag/resource.service.name/values?start={start}&end={end}"
    ));
    assert!(
        values["tagValues"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({ "type": "string", "value": back })),
        "{values}"
    );

    let q = format!(
        r#"{{ resource.service.name = "{back}" && status = error }} && {{ span.http.status_code >= 500 }}"#
    );
    let search = n.get_ok(&format!(
        "/tempo/api/search?q={}&limit=20&spss=3&start={start}&end={end}",
        enc(&q)
    ));
    let traces = search["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{search}");
    assert_eq!(traces[0]["traceID"], trace_id);
    assert_eq!(traces[0]["rootServiceName"], format!("frontend-{suffix}"));
    assert_eq!(traces[0]["rootTraceName"], "GET /checkout");
    let q =
        format!(r#"{{ resource.service.name = "{back}" && name =~ "SELECT.*" && duration > 1h }}"#);
    let search = n.get_ok(&format!(
        "/tempo/api/search?q={}&start={start}&end={end}",
        enc(&q)
    ));
    assert_eq!(search["traces"], serde_json::json!([]));

    // Structure and trace-level intrinsics, as the query builder and Traces Drilldown write them.
    let front = format!("frontend-{suffix}");
    for q in [
        format!(
            r#"{{ resource.service.name = "{front}" && nestedSetParent < 0 }} >> {{ resource.service.name = "{back}" && status = error }}"#
        ),
        format!(r#"{{ rootServiceName = "{front}" && kind = client && event:name != nil }}"#),
        format!(
            r#"{{ resource.service.name = "{front}" }} | by(name) | count() = 1 | select(span.http.method)"#
        ),
    ] {
        let search = n.get_ok(&format!(
            "/tempo/api/search?q={}&start={start}&end={end}",
            enc(&q)
        ));
        assert_eq!(search["traces"][0]["traceID"], trace_id, "{q}: {search}");
    }

    // TraceQL metrics as Grafana's Tempo data source requests them (query_range with `step`
    // and `exemplars`, instant without).
    let q = format!(r#"{{ resource.service.name = "{back}" }} | count_over_time() by (status)"#);
    let range = n.get_ok(&format!(
        "/tempo/api/metrics/query_range?end={end}&exemplars=100&q={}&start={start}&step=60s",
        enc(&q)
    ));
    let series = range["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{range}");
    assert_eq!(
        series[0]["labels"],
        serde_json::json!([{ "key": "status", "value": { "stringValue": "error" } }])
    );
    let total: f64 = series[0]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 1.0, "{range}");
    assert_eq!(
        series[0]["exemplars"][0]["labels"][0],
        serde_json::json!({ "key": "trace:id", "value": { "stringValue": trace_id } })
    );
    let q =
        format!(r#"{{ resource.service.name =~ "(front|back)end-{suffix}" }} | count_over_time()"#);
    let instant = n.get_ok(&format!(
        "/tempo/api/metrics/query?end={end}&q={}&start={start}",
        enc(&q)
    ));
    assert_eq!(instant["series"][0]["value"], 3.0, "{instant}");

    // Span names of one service, as the editor narrows them.
    let names = n.get_ok(&format!(
        "/tempo/api/v2/search/tag/name/values?q={}&start={start}&end={end}",
        enc(&format!(r#"{{resource.service.name="{front}"}}"#))
    ));
    let names: Vec<&str> = names["tagValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GET /checkout", "render"]);

    let v2 = n.get_ok(&format!("/tempo/api/v2/traces/{trace_id}"));
    let spans: usize = v2["trace"]["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| rs["scopeSpans"][0]["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(spans, 3);
    let mut resp = n
        .agent
        .get(format!("{}/tempo/api/v2/traces/{trace_id}", n.url))
        .header("Accept", "application/protobuf")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/protobuf"
    );
    let body = resp.body_mut().read_to_vec().unwrap();
    let raw_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        body.windows(16).any(|w| w == raw_id.as_slice()),
        "protobuf trace holds the trace id"
    );
}

/// Grafana's Prometheus data source asks for the exemplars of a panel's query and links each
/// `trace_id` to the Tempo data source: the measurement recorded inside the root span carries
/// the trace, which the Tempo API then serves.
fn check_exemplar_link(n: &Novamon, suffix: &str, trace_id: &str) {
    let q = format!(
        r#"histogram_quantile(0.99, sum by (le) (rate(checkout_latency_milliseconds_bucket{{job="frontend-{suffix}"}}[5m])))"#
    );
    let v = n.get_ok(&format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        enc(&q),
        now_s() - 3600,
        now_s() + 60
    ));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(data[0]["seriesLabels"]["le"], "500", "{v}");
    let exemplars = data[0]["exemplars"].as_array().unwrap();
    assert_eq!(exemplars.len(), 1, "{v}");
    assert_eq!(exemplars[0]["labels"]["trace_id"], trace_id, "{v}");
    assert_eq!(exemplars[0]["value"], "500", "{v}");
    let linked = n.get_ok(&format!("/tempo/api/traces/{trace_id}"));
    assert!(
        !linked["batches"].as_array().unwrap().is_empty(),
        "{linked}"
    );
}

fn check_metrics(n: &Novamon, suffix: &str) {
    let job = format!("frontend-{suffix}");
    let query = |q: &str| {
        let r = n.get_ok(&format!("/api/v1/query?query={}", enc(q)));
        r["data"]["result"].as_array().unwrap().clone()
    };
    let r = query(&format!(r#"orders_total{{job="{job}"}}"#));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["metric"]["instance"], "i-1");
    assert_eq!(r[0]["metric"]["payment"], "card");
    assert_eq!(r[0]["value"][1], "3");
    let r = query(&format!(
        r#"checkout_latency_milliseconds_count{{job="{job}"}}"#
    ));
    assert_eq!(r[0]["value"][1], "3");
    let r = query(&format!(
        r#"checkout_latency_milliseconds_bucket{{job="{job}",le="+Inf"}}"#
    ));
    assert_eq!(r[0]["value"][1], "3");
    let r = query(&format!(r#"queue_depth{{job="{job}"}}"#));
    assert_eq!(r[0]["value"][1], "4");
    let r = query(&format!(r#"target_info{{job="{job}"}}"#));
    assert_eq!(r[0]["metric"]["host_name"], "test-host");
}

/// The SDK's log line, with the trace context it was logged in, through the Loki API.
fn check_logs(n: &Novamon, suffix: &str, trace_id: &str) {
    let (start, end) = (
        (now_s() - 3600) * 1_000_000_000,
        (now_s() + 60) * 1_000_000_000,
    );
    let query = |q: &str| {
        let r = n.get_ok(&format!(
            "/loki/api/v1/query_range?query={}&start={start}&end={end}&limit=10",
            enc(q)
        ));
        r["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().unwrap().clone())
            .collect::<Vec<_>>()
    };
    let selector = format!(r#"{{service_name="frontend-{suffix}"}}"#);
    let mut lines = Vec::new();
    e2e::wait_until(Duration::from_secs(10), || {
        lines = query(&selector);
        !lines.is_empty()
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0][1], "payment failed for order 42");
    let by_trace = query(&format!(r#"{selector} | trace_id="{trace_id}""#));
    assert_eq!(
        by_trace.len(),
        1,
        "the line is found by its trace id: {by_trace:?}"
    );
}

#[test]
fn python_sdk_over_grpc_and_http_is_found_through_jaeger_tempo_and_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    for (protocol, endpoint, suffix) in [
        ("grpc", n.otlp_grpc_url.clone(), "grpc"),
        ("http", n.otlp_http_url.clone(), "http"),
    ] {
        let (trace_id, _) = emit(protocol, &endpoint, suffix);
        check_jaeger(&n, suffix, &trace_id);
        check_tempo(&n, suffix, &trace_id);
        check_metrics(&n, suffix);
        check_exemplar_link(&n, suffix, &trace_id);
        check_logs(&n, suffix, &trace_id);
    }
}

/// A real gRPC client (Python's grpcio, from the OpenTelemetry exporter) sending bytes that
/// are no protobuf gets INVALID_ARGUMENT, and the server keeps serving.
#[test]
fn otlp_grpc_rejects_undecodable_requests_as_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let script = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
for body in (b"\xff\xff\xff\xff", b""):
    try:
        export(body, timeout=10)
        print("OK")
    except grpc.RpcError as e:
        print(e.code().name)
"#;
    let target = n.otlp_grpc_url.trim_start_matches("http://");
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .arg(target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Garbage is refused; an empty request is a valid (empty) export.
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["INVALID_ARGUMENT", "OK"],
        "{stdout}"
    );
}

#[test]
fn otlp_http_on_the_main_port_rejects_bad_input_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut n = Novamon::start(&data, &[]);

    let (st, body, _) = n.post_raw("/v1/traces", "application/x-protobuf", &[], vec![0xff; 16]);
    assert_eq!(st, 400, "{body}");
    let (st, body, _) = n.post_raw(
        "/v1/traces",
        "application/json",
        &[],
        b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}".to_vec(),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("invalid OTLP/JSON"), "{body}");
    let (st, _, _) = n.post_raw("/v1/metrics", "text/plain", &[], b"x".to_vec());
    assert_eq!(st, 415);

    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"durable"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"{trace_id}","spanId":"00f067aa0ba902b7","name":"persist","kind":1,
        "startTimeUnixNano":"{now_ns}","endTimeUnixNano":"{}"}},{{"traceId":"{trace_id}","spanId":"0000","name":"bad"}}]}}]}}]}}"#,
        now_ns + 5_000_000
    );
    let (st, body, _) = n.post_raw("/v1/traces", "application/json", &[], json.into_bytes());
    assert_eq!(st, 200, "{body}");
    let resp: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["partialSuccess"]["rejectedSpans"], "1", "{body}");
    assert!(
        resp["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("span id"),
        "{body}"
    );

    n.process.signal_and_wait("KILL", Duration::from_secs(10));
    let n = Novamon::start(&data, &[]);
    let trace = n.get_ok(&format!("/jaeger/api/traces/{trace_id}"));
    assert_eq!(trace["data"][0]["spans"][0]["operationName"], "persist");
    assert_eq!(trace["data"][0]["spans"][0]["duration"], 5000);
    let found = n.get_ok(&format!(
        "/tempo/api/search?q={}",
        enc(r#"{ resource.service.name = "durable" }"#)
    ));
    assert_eq!(found["traces"][0]["traceID"], trace_id);
}

/// Grafana's Jaeger search with tags (`datasource.ts`: the logfmt tags as one JSON object,
/// the time range in µs, `lookback=custom`) over spans whose tags are span, resource and
/// event attributes: every tag must be on one span, as Jaeger matches them.
#[test]
fn jaeger_tag_search_matches_span_process_and_log_tags_on_one_span() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let attr = |k: &str, v: &str| serde_json::json!({ "key": k, "value": { "stringValue": v } });
    let span = |trace: &str, id: &str, at: u64, attrs: Json, events: Json| {
        serde_json::json!({
            "traceId": trace, "spanId": id, "name": "checkout", "kind": 2,
            "startTimeUnixNano": (now_ns - at).to_string(),
            "endTimeUnixNano": (now_ns - at + 1_000_000).to_string(),
            "attributes": attrs, "events": events,
        })
    };
    let event = |name: &str, attrs: Json| serde_json::json!({ "timeUnixNano": now_ns.to_string(), "name": name, "attributes": attrs });
    let (a, b, c, d) = (
        "0af7651916cd43dd8448eb211c80319a",
        "0af7651916cd43dd8448eb211c80319b",
        "0af7651916cd43dd8448eb211c80319c",
        "0af7651916cd43dd8448eb211c80319d",
    );
    let resource = |host: &str, spans: Json| {
        serde_json::json!({
            "resource": { "attributes": [attr("service.name", "shop"), attr("host.name", host)] },
            "scopeSpans": [{ "spans": spans }],
        })
    };
    let body = serde_json::json!({ "resourceSpans": [
        resource("h1", serde_json::json!([
            // A: the exception only in a log.
            span(a, "00000000000000a1", 4_000_000, serde_json::json!([]), serde_json::json!([
                event("exception", serde_json::json!([attr("exception.type", "TimeoutError")])),
            ])),
            // B: the customer on one span, the order in another span's log.
            span(b, "00000000000000b1", 3_000_000, serde_json::json!([attr("customer", "c-9")]),
                serde_json::json!([])),
            span(b, "00000000000000b2", 3_000_000, serde_json::json!([]), serde_json::json!([
                event("charged", serde_json::json!([attr("order.id", "o-1")])),
            ])),
            // C: both on one span.
            span(c, "00000000000000c1", 2_000_000, serde_json::json!([attr("customer", "c-9")]),
                serde_json::json!([event("charged", serde_json::json!([attr("order.id", "o-1")]))])),
        ])),
        // D: the host only in its process.
        resource("h2", serde_json::json!([
            span(d, "00000000000000d1", 1_000_000, serde_json::json!([]), serde_json::json!([])),
        ])),
    ]});
    n.post_otlp_json("/v1/traces", &body);
    let (start_us, end_us) = (now_ns / 1000 - 3_600_000_000, now_ns / 1000 + 60_000_000);
    let search = |tags: &str| -> Vec<String> {
        let found = n.get_ok(&format!(
            "/jaeger/api/traces?service=shop&tags={}&start={start_us}&end={end_us}&lookback=custom",
            enc(tags)
        ));
        let mut ids: Vec<String> = found["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(search(r#"{"exception.type":"TimeoutError"}"#), [a]);
    assert_eq!(search(r#"{"event":"exception"}"#), [a]);
    assert_eq!(search(r#"{"host.name":"h2"}"#), [d]);
    assert_eq!(search(r#"{"order.id":"o-1"}"#), [b, c]);
    assert_eq!(search(r#"{"customer":"c-9","order.id":"o-1"}"#), [c]);
    assert_eq!(
        search(r#"{"customer":"c-9","host.name":"h2"}"#),
        Vec::<String>::new()
    );
    assert_eq!(search(r#"{"customer":"c-9","host.name":"h1"}"#), [b, c]);
}
