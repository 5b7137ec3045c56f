//! The receiver driven through its Router against a real Tsdb in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use prost::Message;
use storage::{
    ExemplarQuerier, Labels, MatchOp, Matcher, Metadata, Querier, Sample, Tsdb, TsdbOptions,
};
use tower::ServiceExt;

use super::now_ms;
use crate::remote_write::proto::{histogram, v1, v2, BucketSpan, Histogram};
use crate::{routes, IngestState, Limits};

const CT_V1: &str = "application/x-protobuf";
const CT_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";
const HISTOGRAMS_WRITTEN: &str = "x-prometheus-remote-write-histograms-written";
const EXEMPLARS_WRITTEN: &str = "x-prometheus-remote-write-exemplars-written";

struct Fixture {
    _dir: tempfile::TempDir,
    tsdb: Arc<Tsdb>,
    app: Router,
    registry: Registry,
}

fn fixture_with(limits: Limits) -> Fixture {
    fixture_on(TsdbOptions::default(), limits)
}

fn fixture_on(opts: TsdbOptions, limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // No out-of-order window, so that an older sample is rejected outright.
    let opts = TsdbOptions {
        out_of_order_window: Duration::ZERO,
        ..opts
    };
    let tsdb = Arc::new(Tsdb::open(dir.path(), opts).unwrap());
    let mut registry = Registry::default();
    let app = routes(IngestState::new(tsdb.clone(), limits, &mut registry));
    Fixture {
        _dir: dir,
        tsdb,
        app,
        registry,
    }
}

fn fixture() -> Fixture {
    fixture_with(Limits::default())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Fixture {
    async fn post_raw(
        &self,
        content_type: Option<&str>,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::post("/api/v1/write");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(enc) = encoding {
            req = req.header("content-encoding", enc);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn post(&self, content_type: &str, message: &impl Message) -> Reply {
        self.post_raw(
            Some(content_type),
            Some("snappy"),
            snappy(&message.encode_to_vec()),
        )
        .await
    }

    fn samples(&self, name: &str) -> Vec<(Labels, Vec<Sample>)> {
        let m = Matcher::new(MatchOp::Equal, "__name__", name).unwrap();
        let found = self
            .tsdb
            .select_decoded(
                &[m],
                &storage::SelectHints::range(i64::MIN, i64::MAX, usize::MAX),
            )
            .unwrap();
        found.into_iter().map(|s| (s.labels, s.samples)).collect()
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| v1::Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
        ..Default::default()
    }
}

fn v1_request(timeseries: Vec<v1::TimeSeries>) -> v1::WriteRequest {
    v1::WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

/// Label pairs and (timestamp, value) samples of one series.
type SeriesSpec<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

/// A 2.0 request over one symbols table.
fn v2_request(series: &[SeriesSpec]) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut sym = |s: &str| match symbols.iter().position(|x| x == s) {
        Some(i) => i as u32,
        None => {
            symbols.push(s.to_string());
            (symbols.len() - 1) as u32
        }
    };
    let timeseries = series
        .iter()
        .map(|(labels, samples)| v2::TimeSeries {
            labels_refs: labels.iter().flat_map(|(n, v)| [sym(n), sym(v)]).collect(),
            samples: samples
                .iter()
                .map(|&(t, v)| v2::Sample {
                    value: v,
                    timestamp: t,
                    start_timestamp: 0,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

fn assert_v2_headers(reply: &Reply, samples: usize, histograms: usize, exemplars: usize) {
    let get = |name| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        get(SAMPLES_WRITTEN),
        Some(samples.to_string()),
        "{}",
        reply.body
    );
    assert_eq!(get(HISTOGRAMS_WRITTEN), Some(histograms.to_string()));
    assert_eq!(get(EXEMPLARS_WRITTEN), Some(exemplars.to_string()));
}

fn assert_plain_text_error(reply: &Reply, status: StatusCode, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        reply.body.contains(message),
        "expected {message:?} in {:?}",
        reply.body
    );
}

#[tokio::test]
async fn v1_write_is_stored_with_its_metadata() {
    let f = fixture();
    let t = now_ms() - 60_000;
    let mut req = v1_request(vec![
        series(
            &[("__name__", "up"), ("job", "node")],
            &[(t, 1.0), (t + 15_000, 0.0)],
        ),
        series(&[("__name__", "up"), ("job", "api")], &[(t, 1.0)]),
    ]);
    req.metadata.push(v1::MetricMetadata {
        r#type: v1::MetricType::Gauge as i32,
        metric_family_name: "up".into(),
        help: "Target is up.".into(),
        unit: "".into(),
    });
    let reply = f.post(CT_V1, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(
        reply.headers.get(SAMPLES_WRITTEN).is_none(),
        "1.0 responses carry no statistics"
    );

    let mut got = f.samples("up");
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (
                Labels::from_pairs([("__name__", "up"), ("job", "api")]),
                vec![Sample { t, v: 1.0 }]
            ),
            (
                Labels::from_pairs([("__name__", "up"), ("job", "node")]),
                vec![
                    Sample { t, v: 1.0 },
                    Sample {
                        t: t + 15_000,
                        v: 0.0
                    }
                ]
            ),
        ]
    );
    let md = Metadata {
        kind: "gauge".into(),
        help: "Target is up.".into(),
        unit: "".into(),
    };
    assert_eq!(f.tsdb.metadata().unwrap(), vec![("up".to_string(), md)]);
    assert!(f
        .metrics_text()
        .contains(r#"novamon_remote_write_samples_ingested_total{protocol="1.0"} 3"#));
    assert!(f
        .metrics_text()
        .contains(r#"novamon_remote_write_requests_total{protocol="1.0",code="204"} 1"#));
}

#[tokio::test]
async fn v1_without_content_type_or_encoding_is_accepted() {
    let f = fixture();
    let t = now_ms();
    let req = v1_request(vec![series(&[("__name__", "legacy_sender")], &[(t, 2.0)])]);
    let reply = f.post_raw(None, None, snappy(&req.encode_to_vec())).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(f.samples("legacy_sender").len(), 1);
}

#[tokio::test]
async fn v2_write_reports_counts_and_stores_metadata() {
    let f = fixture();
    let t = now_ms();
    let mut req = v2_request(&[
        (
            &[("__name__", "rpc_seconds_count"), ("job", "api")],
            &[(t, 4.0)],
        ),
        (
            &[("__name__", "rpc_seconds_sum"), ("job", "api")],
            &[(t, 0.5), (t + 1000, 0.75)],
        ),
    ]);
    req.symbols
        .extend(["Latency.".to_string(), "seconds".to_string()]);
    let (help, unit) = (req.symbols.len() as u32 - 2, req.symbols.len() as u32 - 1);
    req.timeseries[0].metadata = Some(v2::Metadata {
        r#type: v2::MetricType::Summary as i32,
        help_ref: help,
        unit_ref: unit,
    });
    req.symbols
        .extend(["trace_id".to_string(), "abc".to_string()]);
    let (name, value) = (req.symbols.len() as u32 - 2, req.symbols.len() as u32 - 1);
    let exemplar = |t, value_ref| v2::Exemplar {
        labels_refs: vec![name, value_ref],
        value: 1.0,
        timestamp: t,
    };
    // The second is older than the first: dropped and counted, the request still succeeds.
    req.timeseries[0].exemplars = vec![exemplar(t, value), exemplar(t - 1, value)];

    let reply = f.post(CT_V2, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_v2_headers(&reply, 3, 0, 1);
    let stored = f
        .tsdb
        .select_exemplars(
            i64::MIN,
            i64::MAX,
            &[vec![Matcher::new(MatchOp::Equal, "job", "api").unwrap()]],
        )
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].series_labels.metric_name(),
        Some("rpc_seconds_count")
    );
    assert_eq!(
        stored[0].exemplars,
        vec![storage::Exemplar {
            labels: Labels::from_pairs([("trace_id", "abc")]),
            value: 1.0,
            t,
        }]
    );
    assert_eq!(
        f.samples("rpc_seconds_sum")[0].1,
        vec![
            Sample { t, v: 0.5 },
            Sample {
                t: t + 1000,
                v: 0.75
            }
        ]
    );
    let md = Metadata {
        kind: "summary".into(),
        help: "Latency.".into(),
        unit: "seconds".into(),
    };
    assert_eq!(
        f.tsdb.metadata().unwrap(),
        vec![("rpc_seconds".to_string(), md)]
    );
}

/// As Prometheus's queue manager sends them: each exemplar in an entry of its own, without
/// samples, next to the entry with the series' sample.
#[tokio::test]
async fn v1_exemplars_in_entries_of_their_own_are_stored() {
    let f = fixture();
    let t = now_ms();
    let labels = [("__name__", "req_total"), ("job", "api")];
    let exemplar = |t, trace: &str| v1::TimeSeries {
        exemplars: vec![v1::Exemplar {
            labels: vec![v1::Label {
                name: "trace_id".into(),
                value: trace.into(),
            }],
            value: 2.0,
            timestamp: t,
        }],
        ..series(&labels, &[])
    };
    let req = v1_request(vec![exemplar(t, "a"), series(&labels, &[(t, 2.0)])]);
    let reply = f.post(CT_V1, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    // A later request: one newer exemplar, one out of order, which fails nothing.
    let req = v1_request(vec![exemplar(t + 5, "b"), exemplar(t - 5, "c")]);
    let reply = f.post(CT_V1, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let stored = f
        .tsdb
        .select_exemplars(
            i64::MIN,
            i64::MAX,
            &[vec![
                Matcher::new(MatchOp::Equal, "__name__", "req_total").unwrap()
            ]],
        )
        .unwrap();
    let traces: Vec<(i64, &str)> = stored[0]
        .exemplars
        .iter()
        .map(|e| (e.t, e.labels.get("trace_id").unwrap()))
        .collect();
    assert_eq!(traces, vec![(t, "a"), (t + 5, "b")]);
}

#[tokio::test]
async fn unsupported_media_types_get_415_without_statistics() {
    let f = fixture();
    let body = snappy(&v1_request(vec![]).encode_to_vec());
    let cases = [
        (
            Some("application/json"),
            Some("snappy"),
            "expected application/x-protobuf",
        ),
        (
            Some("application/x-protobuf;proto=io.prometheus.write.v3.Request"),
            Some("snappy"),
            "unknown remote write protobuf message io.prometheus.write.v3.Request",
        ),
        (
            Some(CT_V2),
            Some("gzip"),
            "gzip encoding (compression) is not accepted",
        ),
    ];
    for (ct, enc, message) in cases {
        let reply = f.post_raw(ct, enc, body.clone()).await;
        assert_plain_text_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
        assert!(reply.headers.get(SAMPLES_WRITTEN).is_none());
    }
    assert!(f
        .metrics_text()
        .contains(r#"novamon_remote_write_requests_total{protocol="unknown",code="415"} 3"#));
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let limits = Limits {
        max_decompressed_bytes: 1000,
        ..Limits::default()
    };
    let f = fixture_with(limits);
    let t = now_ms();
    let big = v1_request(
        (0..40)
            .map(|i| series(&[("__name__", "m"), ("i", &i.to_string())], &[(t, 1.0)]))
            .collect(),
    );
    assert!(big.encoded_len() > 1000);
    let reply = f.post(CT_V1, &big).await;
    assert_plain_text_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "exceeds the limit of 1000 bytes",
    );

    let cap = limits.max_compressed_bytes();
    let reply = f
        .post_raw(Some(CT_V2), Some("snappy"), vec![0u8; cap + 1])
        .await;
    let message = format!("request body exceeds the limit of {cap} bytes");
    assert_plain_text_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, &message);
    assert_v2_headers(&reply, 0, 0, 0);
    assert!(f.samples("m").is_empty());
}

#[tokio::test]
async fn undecodable_bodies_get_400() {
    let f = fixture();
    let reply = f
        .post_raw(
            Some(CT_V1),
            Some("snappy"),
            b"\x10definitely not snappy".to_vec(),
        )
        .await;
    assert_plain_text_error(&reply, StatusCode::BAD_REQUEST, "decompressing snappy body");

    let full = v1_request(vec![series(&[("__name__", "up")], &[(now_ms(), 1.0)])]).encode_to_vec();
    let reply = f
        .post_raw(Some(CT_V1), Some("snappy"), snappy(&full[..full.len() - 2]))
        .await;
    assert_plain_text_error(&reply, StatusCode::BAD_REQUEST, "decoding protobuf");

    let reply = f
        .post_raw(Some(CT_V2), Some("snappy"), snappy(b"\x22\x05ab"))
        .await;
    assert_plain_text_error(&reply, StatusCode::BAD_REQUEST, "decoding protobuf");
    assert_v2_headers(&reply, 0, 0, 0);
    assert!(f.samples("up").is_empty());
}

#[tokio::test]
async fn v1_invalid_series_fail_the_whole_request() {
    let f = fixture();
    let t = now_ms();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "invalid series {}: no labels"),
        (&[("__name__", "bad"), ("", "v")], "empty label name"),
        (
            &[("__name__", "bad"), ("a", "1"), ("a", "2")],
            r#"duplicate label name "a""#,
        ),
        (
            &[("job", "x")],
            r#"invalid series {job="x"}: missing metric name (label __name__)"#,
        ),
    ];
    for (labels, message) in cases {
        let req = v1_request(vec![
            series(&[("__name__", "good")], &[(t, 1.0)]),
            series(labels, &[(t, 1.0)]),
        ]);
        let reply = f.post(CT_V1, &req).await;
        assert_plain_text_error(&reply, StatusCode::BAD_REQUEST, message);
    }
    assert!(
        f.samples("good").is_empty(),
        "a rejected 1.0 request must write nothing"
    );
    assert!(f
        .metrics_text()
        .contains(r#"novamon_remote_write_samples_rejected_total{reason="invalid_labels"} 4"#));
    assert!(f
        .metrics_text()
        .contains(r#"novamon_remote_write_samples_rejected_total{reason="rolled_back"} 4"#));
}

#[tokio::test]
async fn unsorted_v1_labels_are_refused() {
    let f = fixture();
    let t = now_ms();
    let req = v1_request(vec![series(
        &[("__name__", "unsorted"), ("zone", "a"), ("app", "x")],
        &[(t, 1.0)],
    )]);
    let reply = f.post(CT_V1, &req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(
        reply.body.contains("labels not sorted by name"),
        "{}",
        reply.body
    );
    assert!(f.samples("unsorted").is_empty());
}

#[tokio::test]
async fn v1_histograms_are_stored_with_the_samples() {
    let f = fixture();
    let t = now_ms();
    let mut hist = series(&[("__name__", "native")], &[]);
    hist.histograms = vec![Histogram {
        count: Some(histogram::Count::CountInt(3)),
        timestamp: t,
        ..Default::default()
    }];
    let req = v1_request(vec![series(&[("__name__", "plain")], &[(t, 1.0)]), hist]);
    let reply = f.post(CT_V1, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(f.samples("plain").len(), 1);
}

#[tokio::test]
async fn v1_storage_rejection_rolls_back_the_whole_request() {
    let f = fixture();
    let t = now_ms() - 120_000;
    let first = v1_request(vec![series(&[("__name__", "c")], &[(t, 1.0)])]);
    assert_eq!(f.post(CT_V1, &first).await.status, StatusCode::NO_CONTENT);

    let out_of_order = v1_request(vec![
        series(&[("__name__", "fresh")], &[(t, 5.0)]),
        series(&[("__name__", "c")], &[(t - 60_000, 0.5)]),
    ]);
    let reply = f.post(CT_V1, &out_of_order).await;
    assert_plain_text_error(&reply, StatusCode::BAD_REQUEST, "out of order sample");
    assert_eq!(
        reply.body, "out of order sample\n",
        "Prometheus answers with the append error alone"
    );

    let duplicate = v1_request(vec![
        series(&[("__name__", "fresh")], &[(t, 5.0)]),
        series(&[("__name__", "c")], &[(t, 2.0)]),
    ]);
    let reply = f.post(CT_V1, &duplicate).await;
    assert_plain_text_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "duplicate sample for timestamp",
    );

    assert!(
        f.samples("fresh").is_empty(),
        "a rejected 1.0 request must write nothing"
    );
    assert_eq!(f.samples("c")[0].1, vec![Sample { t, v: 1.0 }]);
}

#[tokio::test]
async fn new_series_over_the_series_limit_get_400_while_the_rest_is_written() {
    let opts = TsdbOptions {
        max_active_series: 2,
        ..TsdbOptions::default()
    };
    let f = fixture_on(opts, Limits::default());
    let t = now_ms() - 120_000;
    let first = v1_request(vec![series(&[("__name__", "old")], &[(t, 1.0)])]);
    assert_eq!(f.post(CT_V1, &first).await.status, StatusCode::NO_CONTENT);

    // 1.0: the existing series and the new one that fits are written although the request
    // as a whole is answered 400 (it is not retried; the written part is not lost).
    let req = v1_request(vec![
        series(&[("__name__", "old")], &[(t + 1000, 2.0)]),
        series(&[("__name__", "fits")], &[(t, 1.0)]),
        series(&[("__name__", "over")], &[(t, 1.0), (t + 1000, 2.0)]),
    ]);
    let reply = f.post(CT_V1, &req).await;
    assert_plain_text_error(&reply, StatusCode::BAD_REQUEST, "");
    assert_eq!(
        reply.body,
        "per-instance series limit exceeded (limits.max_active_series)\n"
    );
    assert_eq!(f.samples("old")[0].1.len(), 2);
    assert_eq!(f.samples("fits")[0].1, vec![Sample { t, v: 1.0 }]);
    assert!(f.samples("over").is_empty());

    // 2.0: the same, with the written counts and one line per refused series.
    let req = v2_request(&[
        (&[("__name__", "old")], &[(t + 2000, 3.0)]),
        (&[("__name__", "over")], &[(t, 1.0)]),
    ]);
    let reply = f.post(CT_V2, &req).await;
    assert_plain_text_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "per-instance series limit exceeded (limits.max_active_series) for series over{}",
    );
    assert_v2_headers(&reply, 1, 0, 0);
    assert_eq!(f.samples("old")[0].1.len(), 3);
    assert!(f.samples("over").is_empty());
    let text = f.metrics_text();
    assert!(
        text.contains(r#"novamon_remote_write_samples_rejected_total{reason="series_limit"} 3"#),
        "{text}"
    );
    assert_eq!(f.tsdb.series_refused(), 2);
}

#[tokio::test]
async fn v1_samples_too_far_in_the_future_fail_the_request() {
    let f = fixture();
    let t = now_ms();
    let req = v1_request(vec![
        series(&[("__name__", "now")], &[(t, 1.0)]),
        series(&[("__name__", "later")], &[(t + 3_600_000, 1.0)]),
    ]);
    let reply = f.post(CT_V1, &req).await;
    assert_plain_text_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "out of bounds: timestamp is too far in the future",
    );
    assert!(f.samples("now").is_empty());
}

#[tokio::test]
async fn v2_writes_what_is_valid_and_lists_the_rest() {
    let f = fixture();
    let t = now_ms() - 120_000;
    let first = v2_request(&[(&[("__name__", "c")], &[(t, 1.0)])]);
    assert_eq!(f.post(CT_V2, &first).await.status, StatusCode::NO_CONTENT);

    let mut req = v2_request(&[
        (
            &[("__name__", "ok"), ("i", "1")],
            &[(t, 1.0), (t + 1000, 2.0)],
        ),
        (&[("job", "nameless")], &[(t, 1.0)]),
        (&[("__name__", "c")], &[(t - 60_000, 0.5), (t + 1000, 3.0)]),
        (
            &[("__name__", "ok"), ("i", "2")],
            &[(t, 1.0), (now_ms() + 3_600_000, 9.0)],
        ),
        (&[("__name__", "native")], &[]),
    ]);
    // Spans that need more buckets than the histogram has: refused, the rest written.
    req.timeseries[4].histograms = vec![Histogram {
        count: Some(histogram::Count::CountFloat(1.0)),
        positive_spans: vec![BucketSpan {
            offset: 0,
            length: 1,
        }],
        timestamp: t,
        ..Default::default()
    }];

    let reply = f.post(CT_V2, &req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // ok{i=1}: 2, c: 1 of 2 (the older one is out of order), ok{i=2}: 1 of 2.
    assert_v2_headers(&reply, 4, 0, 0);
    let lines: Vec<&str> = reply.body.lines().collect();
    assert_eq!(
        lines,
        vec![
            r#"invalid series {job="nameless"}: missing metric name (label __name__)"#,
            "invalid native histogram in series native{}: positive side: spans need 1 buckets, have 0 buckets",
            r#"out of bounds: timestamp is too far in the future for series ok{i="2"}"#,
            "out of order sample for series c{}",
        ]
    );
    assert_eq!(f.samples("ok").len(), 2);
    assert_eq!(
        f.samples("c")[0].1,
        vec![
            Sample { t, v: 1.0 },
            Sample {
                t: t + 1000,
                v: 3.0
            }
        ]
    );
    let text = f.metrics_text();
    assert!(
        text.contains(r#"novamon_remote_write_samples_ingested_total{protocol="2.0"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"novamon_remote_write_samples_rejected_total{reason="out_of_order"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"novamon_remote_write_samples_rejected_total{reason="native_histogram"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"novamon_remote_write_requests_total{protocol="2.0",code="400"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn v2_counts_histograms_apart_from_samples() {
    let f = fixture();
    let t = now_ms() - 60_000;
    let mut req = v2_request(&[
        (&[("__name__", "plain")], &[(t, 1.0)]),
        (&[("__name__", "native")], &[]),
    ]);
    let hist = |timestamp, n| Histogram {
        count: Some(histogram::Count::CountInt(n)),
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(n)),
        timestamp,
        ..Default::default()
    };
    req.timeseries[1].histograms = vec![hist(t, 1), hist(t + 1000, 2)];
    let reply = f.post(CT_V2, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_v2_headers(&reply, 1, 2, 0);
    let m = Matcher::new(MatchOp::Equal, "__name__", "native").unwrap();
    let stored: Vec<i64> = f
        .tsdb
        .select_decoded(
            &[m],
            &storage::SelectHints::range(i64::MIN, i64::MAX, usize::MAX),
        )
        .unwrap()
        .into_iter()
        .flat_map(|s| s.histograms)
        .map(|h| h.t)
        .collect();
    assert_eq!(stored, vec![t, t + 1000]);

    // A histogram too far in the future is refused; the valid one still counts.
    let mut req = v2_request(&[(&[("__name__", "native")], &[])]);
    req.timeseries[0].histograms = vec![hist(t + 2000, 3), hist(now_ms() + 3_600_000, 4)];
    let reply = f.post(CT_V2, &req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_v2_headers(&reply, 0, 1, 0);
}

#[tokio::test]
async fn v2_bad_symbol_reference_fails_the_request() {
    let f = fixture();
    let mut req = v2_request(&[
        (&[("__name__", "good")], &[(now_ms(), 1.0)]),
        (&[("__name__", "bad")], &[(now_ms(), 1.0)]),
    ]);
    req.timeseries[1].labels_refs[1] = 1000;
    let reply = f.post(CT_V2, &req).await;
    assert_plain_text_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "symbol reference 1000 of series 1 is out of range",
    );
    assert_v2_headers(&reply, 0, 0, 0);
    assert!(f.samples("good").is_empty());
}

#[tokio::test]
async fn stale_markers_arrive_bit_exact() {
    let f = fixture();
    let t = now_ms();
    let stale = f64::from_bits(storage::STALE_NAN_BITS);
    let req = v2_request(&[(&[("__name__", "gone")], &[(t - 1000, 1.0), (t, stale)])]);
    let reply = f.post(CT_V2, &req).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let got = &f.samples("gone")[0].1;
    assert_eq!(got.len(), 2);
    assert!(storage::is_stale_nan(got[1].v), "{:x}", got[1].v.to_bits());
}
