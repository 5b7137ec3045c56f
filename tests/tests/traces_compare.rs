//! TraceQL `compare()` end to end: known traces sent over OTLP/HTTP to a real novamon, then the
//! request Grafana's Traces Drilldown makes for its Comparison tab, replayed over a real socket
//! as Grafana's Tempo data source sends it (pkg/tsdb/tempo `createMetricsQuery`: `q`, `start`
//! and `end` in seconds, the drilldown's `step` of the whole range, keys in Go's sorted order),
//! and the answer decoded as Grafana decodes it: the data source's frames
//! (`transformLabelsAndGetName`) and the drilldown's per-attribute table
//! (`AttributesComparisonScene.tsx`: `groupFrameListByAttribute`, `frameGroupToDataframe`,
//! `getTotalForMetaType`). The shares asserted are worked out by hand from the traces.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::otlp::attr;
use e2e::{enc, now_ns, wait_until, Json, Novamon};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// One trace of `service`: a root server span `GET <route>` starting at `start` (ns), lasting
/// `dur_ms`, with `status` (0 unset, 1 ok, 2 error) and the span attributes `http.route` and
/// `region`, and a client child `SELECT` that the root-span queries leave out.
fn trace(
    id: u8,
    service: &str,
    start: u64,
    dur_ms: u64,
    status: i32,
    route: &str,
    region: &str,
) -> ResourceSpans {
    let root = Span {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        name: format!("GET {route}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur_ms * MS,
        attributes: vec![attr("http.route", route), attr("region", region)],
        status: (status != 0).then(|| Status {
            code: status,
            message: String::new(),
        }),
        ..Default::default()
    };
    let child = Span {
        trace_id: vec![id; 16],
        span_id: vec![id ^ 0x80; 8],
        parent_span_id: vec![id; 8],
        name: "SELECT".into(),
        kind: 3,
        start_time_unix_nano: start + MS,
        end_time_unix_nano: start + 2 * MS,
        status: Some(Status {
            code: StatusCode::Error as i32,
            message: "deadlock".into(),
        }),
        ..Default::default()
    };
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attr("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "shop-lib".into(),
                version: "1.0".into(),
                ..Default::default()
            }),
            spans: vec![root, child],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A label value as Grafana's Tempo data source writes it into a frame's labels
/// (`metricsValueToString`): strings in double quotes, numbers and booleans as text, a value
/// of another kind as "".
fn grafana_label(v: &Json) -> String {
    if let Some(s) = v.get("stringValue") {
        format!("\"{}\"", s.as_str().unwrap())
    } else if let Some(i) = v.get("intValue") {
        i.as_str().unwrap().to_owned()
    } else if let Some(d) = v.get("doubleValue") {
        d.to_string()
    } else if let Some(b) = v.get("boolValue") {
        b.to_string()
    } else {
        String::new()
    }
}

/// The drilldown's `normalizeTraceQlLabelString`: the double quotes taken off.
fn normalize(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// One frame of Grafana's: its number field's labels and the sum of its values (what the
/// drilldown reads of it, `sumNumberFieldValues`).
struct Frame {
    labels: BTreeMap<String, String>,
    sum: f64,
}

fn frames(body: &Json) -> Vec<Frame> {
    body["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|s| Frame {
            labels: s["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["key"].as_str().unwrap().to_owned(),
                        grafana_label(&l["value"]),
                    )
                })
                .collect(),
            sum: s["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["value"].as_f64().unwrap())
                .sum(),
        })
        .collect()
}

fn meta_type(f: &Frame) -> &str {
    normalize(f.labels.get("__meta_type").map_or("", String::as_str))
}

/// The drilldown's `getTotalForMetaType`: the `<type>_total` frame's sum, unless it is
/// missing (1), zero or below the values' own sum, when the values' sum is used.
fn total_for(frames: &[&Frame], kind: &str, values: &BTreeMap<String, Vec<&Frame>>) -> f64 {
    let calculated: f64 = values
        .values()
        .map(|fs| {
            fs.iter()
                .find(|f| meta_type(f) == kind)
                .map_or(0.0, |f| f.sum)
        })
        .sum();
    let total_type = format!("{kind}_total");
    let total = frames.iter().fold(
        1.0,
        |t, f| if meta_type(f) == total_type { f.sum } else { t },
    );
    let fallback = if calculated == 0.0 { 1.0 } else { calculated };
    if total < calculated || total == 1.0 || total == 0.0 {
        fallback
    } else {
        total
    }
}

/// The Comparison tab's table: per attribute (the first label not starting with `__`), per
/// value, the value's share of the baseline and of the selection.
fn comparison(body: &Json) -> BTreeMap<String, BTreeMap<String, (f64, f64)>> {
    let frames = frames(body);
    let mut by_attribute: BTreeMap<String, Vec<&Frame>> = BTreeMap::new();
    for f in &frames {
        if let Some(k) = f.labels.keys().find(|k| !k.starts_with("__")) {
            by_attribute.entry(k.clone()).or_default().push(f);
        }
    }
    by_attribute
        .into_iter()
        .map(|(attribute, frames)| {
            let mut values: BTreeMap<String, Vec<&Frame>> = BTreeMap::new();
            for f in &frames {
                let v = normalize(&f.labels[&attribute]).to_owned();
                if !v.is_empty() {
                    values.entry(v).or_default().push(f);
                }
            }
            let baseline_total = total_for(&frames, "baseline", &values);
            let selection_total = total_for(&frames, "selection", &values);
            let share = |fs: &[&Frame], kind: &str| {
                fs.iter()
                    .find(|f| meta_type(f) == kind)
                    .map_or(0.0, |f| f.sum)
            };
            let rows = values
                .iter()
                .map(|(v, fs)| {
                    (
                        v.clone(),
                        (
                            share(fs, "baseline") / baseline_total,
                            share(fs, "selection") / selection_total,
                        ),
                    )
                })
                .collect();
            (attribute, rows)
        })
        .collect()
}

fn rows(table: &[(&str, (f64, f64))]) -> BTreeMap<String, (f64, f64)> {
    table.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn traces_drilldown_comparison_tab() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    // Five root spans of `shop` ten seconds apart, half an hour ago, and one of `other`.
    let now_s = now_ns() as u64 / S;
    let base = (now_s - 1800) * S;
    let batches = vec![
        trace(1, "shop", base, 300, 2, "/cart", "eu"),
        trace(2, "shop", base + 10 * S, 50, 2, "/cart", "us"),
        trace(3, "shop", base + 20 * S, 400, 1, "/cart", "eu"),
        trace(4, "shop", base + 30 * S, 500, 0, "/home", "eu"),
        trace(5, "shop", base + 40 * S, 20, 0, "/home", "eu"),
        trace(6, "other", base + 50 * S, 900, 2, "/cart", "us"),
    ];
    let body = ExportTraceServiceRequest {
        resource_spans: batches,
    }
    .encode_to_vec();
    let status = n
        .agent
        .post(format!("{}/v1/traces", n.otlp_http_url))
        .header("Content-Type", "application/x-protobuf")
        .send(&body[..])
        .expect("OTLP/HTTP export")
        .status();
    assert_eq!(status, 200);

    // The drilldown's time range: the last hour, in seconds, and its step: the whole range.
    let (from, to) = (now_s - 3600, now_s);
    let request = |q: &str| {
        format!(
            "/tempo/api/metrics/query_range?end={to}&q={}&start={from}&step={}s",
            enc(q),
            to - from
        )
    };

    // Root spans of `shop`, the errors metric's default selection (`status = error`).
    let errors = request(
        r#"{nestedSetParent<0 && resource.service.name="shop"} | compare({status = error}, 10)"#,
    );
    let mut body = Json::Null;
    wait_until(Duration::from_secs(30), || {
        body = n.get_ok(&errors);
        comparison(&body)
            .get("status")
            .is_some_and(|r| r.get("unset").is_some_and(|s| s.0 > 0.0))
    })
    .unwrap_or_else(|| panic!("the spans never showed: {body}"));
    assert!(body.get("status").is_none(), "{body}");
    let table = comparison(&body);
    let third = 1.0 / 3.0;
    // Selection: traces 1 and 2 (errors); baseline: traces 3, 4 and 5. Every attribute also
    // shows a `nil` row: its totals' attribute label, which Tempo writes as "nil".
    assert_eq!(
        table["span.http.route"],
        rows(&[
            ("/cart", (third, 1.0)),
            ("/home", (2.0 * third, 0.0)),
            ("nil", (0.0, 0.0)),
        ])
    );
    assert_eq!(
        table["status"],
        rows(&[
            ("error", (0.0, 1.0)),
            ("ok", (third, 0.0)),
            ("unset", (2.0 * third, 0.0)),
            ("nil", (0.0, 0.0)),
        ])
    );
    assert_eq!(
        table["span.region"],
        rows(&[("eu", (1.0, 0.5)), ("us", (0.0, 0.5)), ("nil", (0.0, 0.0)),])
    );
    assert_eq!(
        table["instrumentation:name"],
        rows(&[("shop-lib", (1.0, 1.0)), ("nil", (0.0, 0.0))])
    );
    assert_eq!(
        table["resource.service.name"],
        rows(&[("shop", (1.0, 1.0)), ("nil", (0.0, 0.0))])
    );
    // Every attribute of a root span, and nothing of the child spans (`SELECT`, `deadlock`).
    let attributes: Vec<&str> = table.keys().map(String::as_str).collect();
    assert_eq!(
        attributes,
        [
            "instrumentation:name",
            "instrumentation:version",
            "kind",
            "name",
            "resource.service.name",
            "rootName",
            "rootServiceName",
            "span.http.route",
            "span.region",
            "status",
            "statusMessage",
        ]
    );
    assert!(!table["name"].contains_key("SELECT"), "{table:?}");
    assert!(
        !table["statusMessage"].contains_key("deadlock"),
        "{table:?}"
    );
    // The totals carry exemplars pointing at the spans, without a value.
    let totals = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["labels"][0]["value"]["stringValue"] == "selection_total"
                && s["labels"][1]["key"] == "span.http.route"
        })
        .unwrap();
    let exemplar_traces: Vec<&str> = totals["exemplars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["value"], "NaN", "{e}");
            e["labels"][0]["value"]["stringValue"].as_str().unwrap()
        })
        .collect();
    assert!(!exemplar_traces.is_empty());
    for t in exemplar_traces {
        assert!(
            [hex(1), hex(2)].contains(&t.to_owned()),
            "{t} is not a selected trace"
        );
    }

    // A brushed duration range over part of the time range (the heatmap's selection):
    // `compare({duration >= 150ms && duration <= 1s}, 10, start, end)` with the window in ns.
    // The window (base + 15 s, base + 35 s] holds traces 3 and 4, both slow enough: the
    // selection; traces 1, 2 and 5 the baseline.
    let (w0, w1) = (base / S + 15, base / S + 35);
    let brushed = request(&format!(
        r#"{{nestedSetParent<0 && resource.service.name="shop"}} | compare({{duration >= 150ms && duration <= 1s}}, 10, {}, {})"#,
        w0 * S,
        w1 * S
    ));
    let table = comparison(&n.get_ok(&brushed));
    assert_eq!(
        table["span.http.route"],
        rows(&[
            ("/cart", (2.0 * third, 0.5)),
            ("/home", (third, 0.5)),
            ("nil", (0.0, 0.0)),
        ])
    );
    assert_eq!(
        table["status"],
        rows(&[
            ("error", (2.0 * third, 0.0)),
            ("ok", (0.0, 0.5)),
            ("unset", (third, 0.5)),
            ("nil", (0.0, 0.0)),
        ])
    );

    // All spans (`true`): the children join in, with the trace's root name and service.
    let all = request(r#"{true && resource.service.name="shop"} | compare({status = error}, 10)"#);
    let table = comparison(&n.get_ok(&all));
    // The selection: the roots of traces 1 and 2 and the five children (all errors); the
    // baseline: the roots of traces 3, 4 and 5.
    assert_eq!(
        table["name"],
        rows(&[
            ("GET /cart", (third, 2.0 / 7.0)),
            ("GET /home", (2.0 * third, 0.0)),
            ("SELECT", (0.0, 5.0 / 7.0)),
            ("nil", (0.0, 0.0)),
        ])
    );
    // Children take their trace's root name: traces 1 to 3 are rooted in `GET /cart`.
    assert_eq!(
        table["rootName"],
        rows(&[
            ("GET /cart", (third, 5.0 / 7.0)),
            ("GET /home", (2.0 * third, 2.0 / 7.0)),
            ("nil", (0.0, 0.0)),
        ])
    );

    // Tempo's argument checks answer 400 in plain text.
    let (code, text) = n.get_text(&request("{} | compare({status = error}, 10, 5)"), &[]);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("both or neither"), "{text}");
}

fn hex(id: u8) -> String {
    format!("{id:02x}").repeat(16)
}
