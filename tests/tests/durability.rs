//! A write that got 2xx survives `kill -9`: write, kill, restart, query.

use std::time::Duration;

use e2e::series::{v1_request, v1_series, V1};
use e2e::{an_hour_ago_ms, enc, Novamon};

#[test]
fn acknowledged_writes_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t0 = an_hour_ago_ms();
    let mut n = Novamon::start(&data, &[]);
    // Several requests over several series, so both new-series index entries and samples of
    // existing series must come back.
    for batch in 0..20i64 {
        let series = (0..50)
            .map(|s| {
                let inst = format!("host-{s}");
                let samples: Vec<(i64, f64)> = (0..10)
                    .map(|i| (t0 + (batch * 10 + i) * 15_000, (batch * 10 + i) as f64))
                    .collect();
                v1_series(&[("__name__", "durable"), ("instance", &inst)], &samples)
            })
            .collect();
        let (status, body, _) = n.remote_write(&v1_request(series), V1);
        assert_eq!(status, 204, "{body}");
    }
    let status = n.process.signal_and_wait("KILL", Duration::from_secs(10));
    assert!(!status.success());

    let n = Novamon::start(&data, &[]);
    let end = t0 + 199 * 15_000;
    let (status, body) = n.get_json(&format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=15",
        enc("durable"),
        t0 / 1000,
        end / 1000
    ));
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 50);
    for s in result {
        let values = s["values"].as_array().unwrap();
        assert_eq!(values.len(), 200, "{}", s["metric"]);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v[1].as_str().unwrap(), i.to_string());
        }
    }
    // (t-1h, t] holds every sample written.
    let at = (t0 + 3_599_000) / 1000;
    let (_, count) = n.get_json(&format!(
        "/api/v1/query?query={}&time={at}",
        enc("count_over_time(durable[1h])")
    ));
    for s in count["data"]["result"].as_array().unwrap() {
        assert_eq!(s["value"][1], "200", "no sample duplicated by WAL replay");
    }
}
