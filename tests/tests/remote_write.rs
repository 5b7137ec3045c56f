//! Remote-write into the real binary over HTTP: accepted writes come back through the query
//! API; every kind of bad input gets its 4xx and leaves the server healthy.

use e2e::series::{v1_request, v1_series, V1, V2};
use e2e::{an_hour_ago_ms, enc, Novamon};

fn server() -> (tempfile::TempDir, Novamon) {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);
    (dir, n)
}

fn instant(n: &Novamon, q: &str, t_ms: i64) -> e2e::Json {
    let (status, body) = n.get_json(&format!(
        "/api/v1/query?query={}&time={}",
        enc(q),
        t_ms as f64 / 1000.0
    ));
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn written_samples_are_queryable_with_prometheus_formatting() {
    let t0 = an_hour_ago_ms();
    let (_d, n) = server();
    let req = v1_request(vec![
        v1_series(
            &[("__name__", "rw_test"), ("job", "a")],
            &[(t0, 1.5), (t0 + 15_000, 2.0)],
        ),
        v1_series(
            &[("__name__", "rw_test"), ("job", "b")],
            &[(t0, f64::INFINITY)],
        ),
        v1_series(&[("__name__", "rw_small"), ("job", "a")], &[(t0, 1.5e-7)]),
    ]);
    let (status, body, _) = n.remote_write(&req, V1);
    assert_eq!(status, 204, "{body}");

    let body = instant(&n, "rw_test", t0 + 20_000);
    assert_eq!(body["data"]["resultType"], "vector");
    let mut got: Vec<(String, String, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["job"].as_str().unwrap().into(),
                s["value"][0].to_string(),
                s["value"][1].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    let ts = ((t0 + 20_000) / 1000).to_string();
    assert_eq!(
        got,
        vec![
            ("a".into(), ts.clone(), "2".into()),
            ("b".into(), ts, "+Inf".into())
        ]
    );
    assert_eq!(
        instant(&n, "rw_small", t0)["data"]["result"][0]["value"][1],
        "1.5e-07"
    );

    // Of the written series only: the embedded default also scrapes novamon itself
    // (`job="novamon"`), which may or may not have happened yet.
    let (status, body) = n.get_json(&format!(
        "/api/v1/label/job/values?match[]={}",
        enc("{__name__=~\"rw_.*\"}")
    ));
    assert_eq!(status, 200);
    assert_eq!(body["data"], serde_json::json!(["a", "b"]));
    let (_, body) = n.get_json(&format!(
        "/api/v1/series?match[]={}",
        enc("rw_test{job=\"a\"}")
    ));
    assert_eq!(
        body["data"],
        serde_json::json!([{"__name__": "rw_test", "job": "a"}])
    );
}

#[test]
fn duplicate_same_value_is_idempotent_and_different_value_is_rejected() {
    let t0 = an_hour_ago_ms();
    let (_d, n) = server();
    let s = |v| {
        v1_request(vec![v1_series(
            &[("__name__", "dup"), ("job", "a")],
            &[(t0, v)],
        )])
    };
    assert_eq!(n.remote_write(&s(1.0), V1).0, 204);
    assert_eq!(
        n.remote_write(&s(1.0), V1).0,
        204,
        "same sample again must be accepted"
    );
    let (status, body, _) = n.remote_write(&s(2.0), V1);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("duplicate sample for timestamp"), "{body}");
    assert_eq!(instant(&n, "dup", t0)["data"]["result"][0]["value"][1], "1");
}

#[test]
fn bad_input_gets_4xx_and_the_server_stays_healthy() {
    let t0 = an_hour_ago_ms();
    let (_d, n) = server();
    let good = v1_request(vec![v1_series(&[("__name__", "ok")], &[(t0, 1.0)])]);
    let snappy = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();
    let huge = {
        // A tiny body that claims to decompress to far beyond the 32 MiB limit.
        let mut v = vec![];
        let mut len: u64 = 1 << 30;
        while len >= 0x80 {
            v.push((len as u8) | 0x80);
            len >>= 7;
        }
        v.push(len as u8);
        v.extend_from_slice(&[0; 16]);
        v
    };
    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        ("garbage body", b"not snappy at all".to_vec(), V1, 400),
        (
            "wrong snappy (framed format)",
            {
                let mut w = snap::write::FrameEncoder::new(vec![]);
                std::io::Write::write_all(&mut w, &good).unwrap();
                w.into_inner().unwrap()
            },
            V1,
            400,
        ),
        (
            "truncated protobuf",
            snappy(&good[..good.len() - 3]),
            V1,
            400,
        ),
        (
            "empty labels",
            snappy(&v1_request(vec![v1_series(&[], &[(t0, 1.0)])])),
            V1,
            400,
        ),
        (
            "duplicate label names",
            snappy(&v1_request(vec![v1_series(
                &[("__name__", "x"), ("a", "1"), ("a", "2")],
                &[(t0, 1.0)],
            )])),
            V1,
            400,
        ),
        (
            "unsorted labels",
            snappy(&v1_request(vec![v1_series(
                &[("__name__", "x"), ("b", "1"), ("a", "2")],
                &[(t0, 1.0)],
            )])),
            V1,
            400,
        ),
        (
            "missing __name__",
            snappy(&v1_request(vec![v1_series(&[("job", "x")], &[(t0, 1.0)])])),
            V1,
            400,
        ),
        ("huge body", huge, V1, 413),
        ("unknown protocol", snappy(&good), "application/json", 415),
    ];
    for (what, body, ctype, want) in cases {
        let (status, text, _) = n.post_raw(
            "/api/v1/write",
            ctype,
            &[("Content-Encoding", "snappy")],
            body,
        );
        assert_eq!(status, want, "{what}: {text}");
        assert!(
            !text.trim().is_empty(),
            "{what}: a 4xx must say what was wrong"
        );
    }
    let (status, _) = n.get_json("/api/v1/status/buildinfo");
    assert_eq!(status, 200);
    assert_eq!(
        n.remote_write(&good, V1).0,
        204,
        "server still accepts good writes"
    );
    // Nothing from the rejected requests was stored.
    let (_, names) = n.get_json("/api/v1/label/__name__/values");
    assert_eq!(names["data"], serde_json::json!(["ok"]));
}

#[test]
fn remote_write_2_reports_what_it_wrote() {
    let t0 = an_hour_ago_ms();
    use ingest::remote_write::proto::v2;
    use prost::Message;
    let (_d, n) = server();
    let req = v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "rw2".into(),
            "job".into(),
            "x".into(),
            "a help".into(),
        ],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                v2::Sample {
                    value: 3.0,
                    timestamp: t0,
                    ..Default::default()
                },
                v2::Sample {
                    value: 4.0,
                    timestamp: t0 + 1000,
                    ..Default::default()
                },
            ],
            metadata: Some(v2::Metadata {
                r#type: 2,
                help_ref: 5,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let (status, body, headers) = n.remote_write(&req, V2);
    assert_eq!(status, 204, "{body}");
    let header = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("X-Prometheus-Remote-Write-Samples-Written").as_deref(),
        Some("2")
    );
    assert_eq!(
        header("X-Prometheus-Remote-Write-Histograms-Written").as_deref(),
        Some("0")
    );
    assert_eq!(
        header("X-Prometheus-Remote-Write-Exemplars-Written").as_deref(),
        Some("0")
    );
    assert_eq!(
        instant(&n, "rw2", t0 + 1000)["data"]["result"][0]["value"][1],
        "4"
    );
    let (_, md) = n.get_json("/api/v1/metadata?metric=rw2");
    assert_eq!(md["data"]["rw2"][0]["help"], "a help");
}

/// Peak resident memory of a process, from /proc (Linux's VmHWM, in KiB).
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// A 1.5 MB body of empty series (2 bytes each on the wire, a hundred decoded) took 3.1 GiB
/// to decode, 4 GiB for four at once. Now each is refused with a 400 before decoding, and
/// the process's peak memory stays far below what decoding them would take. (Below the
/// series limit, the decoded size refuses such bodies: the decoder's own tests.)
#[test]
fn bodies_of_empty_series_are_refused_without_decoding_them() {
    let (_dir, n) = server();
    let raw = [0x0a, 0x00].repeat((32 << 20) / 2 - 8);
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    assert!(body.len() < 2 << 20, "{}", body.len());
    std::thread::scope(|s| {
        let sends: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    n.post_raw(
                        "/api/v1/write",
                        V1,
                        &[("Content-Encoding", "snappy")],
                        body.clone(),
                    )
                })
            })
            .collect();
        for send in sends {
            let (status, text, _) = send.join().unwrap();
            assert_eq!(status, 400, "{text}");
            // Refused on their count (one varint each), before any is decoded.
            assert!(text.contains("too many series in the request"), "{text}");
        }
    });
    let peak = peak_rss_bytes(n.process.pid());
    assert!(peak < 600 << 20, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn new_series_beyond_max_active_series_are_refused_while_existing_ones_keep_flowing() {
    let t0 = an_hour_ago_ms();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("novamon.yml");
    std::fs::write(&config, "limits:\n  max_active_series: 2\n").unwrap();
    let n = Novamon::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let series =
        |job: &str, t: i64| v1_series(&[("__name__", "limited"), ("job", job)], &[(t, 1.0)]);
    let (status, body, _) = n.remote_write(&v1_request(vec![series("a", t0), series("b", t0)]), V1);
    assert_eq!(status, 204, "{body}");

    // A request with an existing series and a new one: 400, not retried; the existing
    // series' sample is written all the same.
    let req = v1_request(vec![series("a", t0 + 15_000), series("c", t0)]);
    let (status, body, _) = n.remote_write(&req, V1);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        "per-instance series limit exceeded (limits.max_active_series)\n"
    );
    let body = instant(&n, "count_over_time(limited[1m])", t0 + 20_000);
    let mut counts: Vec<(String, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let job = s["metric"]["job"].as_str().unwrap().to_owned();
            (job, s["value"][1].as_str().unwrap().to_owned())
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [("a".into(), "2".into()), ("b".into(), "1".into())]);

    // OTLP: a new series is a partial success naming the limit.
    let otlp = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "limited_otlp",
        "gauge": {"dataPoints": [{"asDouble": 1.0, "timeUnixNano": (t0 * 1_000_000).to_string()}]},
    }]}]}]});
    let (status, body, _) = n.post_raw(
        "/v1/metrics",
        "application/json",
        &[],
        otlp.to_string().into_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["partialSuccess"]["rejectedDataPoints"], "1", "{body}");
    let message = body["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("series limit exceeded"), "{message}");

    assert_eq!(
        n.metric("novamon_tsdb_series_limit_refused_total"),
        Some(2.0)
    );
    assert_eq!(n.metric("novamon_tsdb_head_series"), Some(2.0));
    let log = n.process.log();
    let warned = log.matches("new series refused").count();
    assert_eq!(warned, 1, "one WARN a minute; log:\n{log}");
}
