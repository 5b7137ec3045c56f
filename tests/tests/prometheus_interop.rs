//! Interop with the real Prometheus (Debian package): it scrapes itself and remote-writes
//! into novamon; afterwards the same selector queries and metadata endpoints answer the same
//! series and values from both.

use std::time::{Duration, SystemTime};

use e2e::{agent, enc, get_json, wait_for_go_ready_url, Json, Novamon};
use e2e::{spawn_prometheus, PROMETHEUS};

const RUN_FOR: Duration = Duration::from_secs(30);

fn sorted_result(body: &Json) -> Vec<Json> {
    assert_eq!(body["status"], "success", "{body}");
    let mut r = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    r.sort_by_key(|s| s["metric"].to_string());
    r
}

fn sorted(body: &Json) -> Vec<Json> {
    assert_eq!(body["status"], "success", "{body}");
    let mut r = body["data"].as_array().cloned().unwrap_or_default();
    r.sort_by_key(|s| s.to_string());
    r
}

#[test]
fn prometheus_remote_writes_and_both_answer_the_same() {
    assert!(
        std::path::Path::new(PROMETHEUS).exists(),
        "the prometheus package is required (tests/run.sh installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    // A config file of its own, empty: novamon receives and does not scrape itself, so both
    // hold the same series.
    let empty = dir.path().join("novamon.yml");
    std::fs::write(&empty, "").unwrap();
    let novamon = Novamon::start(
        &dir.path().join("novamon"),
        &["--config", empty.to_str().unwrap()],
    );
    // Prometheus binds port 0 and logs the port; it scrapes itself, so its config gets the
    // scrape job once that port is known, through a reload.
    let config = dir.path().join("prometheus.yml");
    let write_config = |scrape_configs: &str| {
        std::fs::write(
            &config,
            format!(
                r#"global:
  scrape_interval: 1s
scrape_configs: {scrape_configs}
remote_write:
  - url: {}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
    metadata_config:
      send_interval: 5s
"#,
                novamon.url
            ),
        )
        .unwrap();
    };
    write_config("[]");
    let mut prom_process = spawn_prometheus(
        dir.path(),
        &config,
        "127.0.0.1:0",
        &["--web.enable-lifecycle"],
    );
    let prom = wait_for_go_ready_url(&mut prom_process);
    let a = agent();
    write_config(&format!(
        "\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"{}\"]",
        prom.trim_start_matches("http://")
    ));
    let mut resp = a.post(format!("{prom}/-/reload")).send_empty().unwrap();
    assert_eq!(
        resp.status(),
        200,
        "reload: {}",
        resp.body_mut().read_to_string().unwrap_or_default()
    );
    // Real time for Prometheus to scrape itself and remote-write the result.
    std::thread::sleep(RUN_FOR);

    // A moment both have seen completely: remote-write batches are sent within a second.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t = (now - 5_000) as f64 / 1000.0;
    let from = t - 20.0;
    let both = |path: String| {
        let p = get_json(&a, &format!("{prom}{path}"));
        let n = novamon.get_json(&path);
        assert_eq!(p.0, 200, "prometheus {path}: {}", p.1);
        assert_eq!(n.0, 200, "novamon {path}: {}", n.1);
        (p.1, n.1)
    };
    for q in [
        "up",
        r#"prometheus_http_requests_total{handler="/metrics"}"#,
    ] {
        let (p, n) = both(format!("/api/v1/query?query={}&time={t}", enc(q)));
        let (pr, nr) = (sorted_result(&p), sorted_result(&n));
        assert!(!pr.is_empty(), "prometheus has no {q}");
        assert_eq!(pr, nr, "instant {q}");

        let (p, n) = both(format!(
            "/api/v1/query_range?query={}&start={from}&end={t}&step=1",
            enc(q)
        ));
        assert_eq!(sorted_result(&p), sorted_result(&n), "range {q}");

        let (p, n) = both(format!(
            "/api/v1/series?match[]={}&start={from}&end={t}",
            enc(q)
        ));
        assert_eq!(sorted(&p), sorted(&n), "series {q}");
    }
    let (p, n) = both(format!("/api/v1/labels?match[]={}", enc("up")));
    assert_eq!(sorted(&p), sorted(&n), "label names of up");
    let (p, n) = both(format!("/api/v1/label/job/values?match[]={}", enc("up")));
    assert_eq!(sorted(&p), sorted(&n), "job values");
    let (_, n) = both(format!(
        "/api/v1/metadata?metric={}",
        enc("prometheus_http_requests_total")
    ));
    assert_eq!(
        n["data"]["prometheus_http_requests_total"][0]["type"], "counter",
        "metadata arrived: {n}"
    );
}
