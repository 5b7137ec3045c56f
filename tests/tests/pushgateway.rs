//! The Pushgateway API against the real one (Debian's `prometheus-pushgateway`, scraped by the
//! real Prometheus 2.42 with `honor_labels: true`): the same pushes to both get the same status
//! codes; afterwards novamon's queries answer the series and values Prometheus stored from the
//! Pushgateway, both listings (`GET /api/v1/metrics`) agree, and novamon's groups survive a
//! restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{
    agent, get_json, instant_values as instant, wait_for_go_listen_url, wait_for_go_ready_url,
    wait_until, Json, Novamon, Process,
};
use e2e::{spawn_prometheus, PROMETHEUS};

const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";

/// One push as a client sends it.
struct Push {
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    gzip: bool,
    body: &'static str,
}

const fn push(method: &'static str, path: &'static str, body: &'static str) -> Push {
    Push {
        method,
        path,
        content_type: "text/plain; version=0.0.4",
        gzip: false,
        body,
    }
}

const PUSHES: &[Push] = &[
    push(
        "PUT",
        "/metrics/job/backup/instance/db-1",
        "# TYPE backup_bytes_total counter\n# HELP backup_bytes_total Bytes backed up.\nbackup_bytes_total{volume=\"data\"} 1.5e9\nbackup_bytes_total{volume=\"logs\"} 2048\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds 1.7e9\n# TYPE backup_duration_seconds histogram\nbackup_duration_seconds_bucket{le=\"10\"} 1\nbackup_duration_seconds_bucket{le=\"60\"} 3\nbackup_duration_seconds_bucket{le=\"+Inf\"} 4\nbackup_duration_seconds_sum 130.5\nbackup_duration_seconds_count 4\n# TYPE backup_file_seconds summary\nbackup_file_seconds{quantile=\"0.5\"} 0.2\nbackup_file_seconds{quantile=\"0.9\"} 0.8\nbackup_file_seconds_sum 12\nbackup_file_seconds_count 40\n",
    ),
    // POST replaces the families it names and keeps the others.
    push(
        "POST",
        "/metrics/job/backup/instance/db-1",
        "# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds 1.8e9\nbackup_files 12\n",
    ),
    // A second group of the same job; the job from the base64 form, a value with slashes.
    push(
        "PUT",
        "/metrics/job/backup/instance/db-2",
        "# TYPE backup_bytes_total counter\nbackup_bytes_total{volume=\"data\"} 7\n",
    ),
    push(
        "PUT",
        "/metrics/job@base64/Y2kvZGVwbG95/path@base64/L3Nydi9hcHA",
        "deploy_success 1\n",
    ),
    Push {
        gzip: true,
        ..push("PUT", "/metrics/job/gzipped", "compressed_push 42\n")
    },
    // Bucket bounds and quantiles come out as Go prints the floats (`1e+06`, `0.5`), not as
    // pushed.
    push(
        "PUT",
        "/metrics/job/bounds",
        "# TYPE upload_bytes histogram\nupload_bytes_bucket{le=\"1000000\"} 1\nupload_bytes_bucket{le=\"0.50\"} 1\nupload_bytes_bucket{le=\"+Inf\"} 2\nupload_bytes_sum 3\nupload_bytes_count 2\n# TYPE upload_seconds summary\nupload_seconds{quantile=\"0.50\"} 1\nupload_seconds_sum 1\nupload_seconds_count 1\n",
    ),
    // PUT with an empty body: the group stays with its timestamps only.
    push("PUT", "/metrics/job/emptied", ""),
    // Refused: timestamps, a type clashing with another group's, bad bodies and paths.
    push("PUT", "/metrics/job/stamped", "stamped_metric 1 1700000000000\n"),
    push(
        "PUT",
        "/metrics/job/clash",
        "# TYPE backup_bytes_total gauge\nbackup_bytes_total 1\n",
    ),
    push("PUT", "/metrics/job/garbage", "not a metric {\n"),
    push("PUT", "/metrics/job/odd/instance", "x 1\n"),
    push("PUT", "/metrics/job/bad/1abc/x", "x 1\n"),
    push("POST", "/metrics/job/backup/instance/db-1", "backup_files 1 123\n"),
    // Deleting a group, and one that does not exist.
    push("PUT", "/metrics/job/temporary", "temporary_metric 1\n"),
    push("DELETE", "/metrics/job/temporary", ""),
    push("DELETE", "/metrics/job/never-pushed", ""),
];

fn send(a: &ureq::Agent, base: &str, p: &Push) -> u16 {
    let url = format!("{base}{}", p.path);
    let resp = match p.method {
        "DELETE" => a.delete(&url).call(),
        m => {
            let mut body = p.body.as_bytes().to_vec();
            let req = if m == "PUT" {
                a.put(&url)
            } else {
                a.post(&url)
            };
            let req = req.header("Content-Type", p.content_type);
            let req = if p.gzip {
                use std::io::Write;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body).unwrap();
                body = enc.finish().unwrap();
                req.header("Content-Encoding", "gzip")
            } else {
                req
            };
            req.send(&body[..])
        }
    };
    resp.unwrap().status().as_u16()
}

/// The listing with what differs between two servers by nature taken out: times (each
/// family's `time_stamp`, the push timestamps' values, kept as zero or not), and sorted.
fn listing(a: &ureq::Agent, base: &str) -> Vec<Json> {
    let (status, body) = get_json(a, &format!("{base}/api/v1/metrics"));
    assert_eq!(status, 200, "{body}");
    let mut groups: Vec<Json> = body["data"].as_array().unwrap().clone();
    for g in &mut groups {
        for (name, fam) in g.as_object_mut().unwrap() {
            if !fam.is_object() || name == "labels" {
                continue;
            }
            fam.as_object_mut().unwrap().remove("time_stamp");
            if name.starts_with("push_") {
                for m in fam["metrics"].as_array_mut().unwrap() {
                    let zero = m["value"] == "0";
                    m["value"] = Json::Bool(zero);
                }
            }
        }
    }
    groups.sort_by_key(|g| g["labels"].to_string());
    groups
}

const GROUPS: &str = r#"{job=~"backup|ci/deploy|gzipped|emptied|stamped|clash"}"#;

/// The pushed series, with the push timestamps' values reduced to zero or not.
fn pushed_series(a: &ureq::Agent, base: &str) -> BTreeMap<String, String> {
    instant(a, base, GROUPS)
        .into_iter()
        .map(|(k, v)| {
            let v = if k.contains("\"push_") {
                (v == "0").to_string()
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

#[test]
fn pushes_answer_store_and_list_as_the_pushgateway() {
    for bin in [PROMETHEUS, PUSHGATEWAY] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is required (tests/run.sh installs it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut gw_process = Process::spawn(
        // Debian's build persists to /var/lib/prometheus by default: a file of its own, so
        // that groups pushed to another run never show here.
        Command::new(PUSHGATEWAY)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!(
                "--persistence.file={}",
                dir.path().join("pushgateway.data").display()
            )),
        dir.path().join("pushgateway.log"),
    );
    let gw = wait_for_go_listen_url(&mut gw_process);
    let data = dir.path().join("novamon");
    let novamon = Novamon::start(&data, &[]);
    let a = agent();
    for p in PUSHES {
        let theirs = send(&a, &gw, p);
        let ours = send(&a, &novamon.url, p);
        assert_eq!(
            ours, theirs,
            "{} {}: novamon {ours}, pushgateway {theirs}",
            p.method, p.path
        );
    }

    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs: [{{targets: ['{}']}}]\n",
            gw.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let mut prom_process = spawn_prometheus(dir.path(), &prom_cfg, "127.0.0.1:0", &[]);
    let prom = wait_for_go_ready_url(&mut prom_process);
    wait_until(Duration::from_secs(60), || {
        !instant(&a, &prom, r#"compressed_push"#).is_empty()
    })
    .unwrap_or_else(|| {
        panic!(
            "prometheus did not scrape the pushgateway:\n{}",
            prom_process.log()
        )
    });

    let ours = pushed_series(&a, &novamon.url);
    let theirs = pushed_series(&a, &prom);
    assert!(ours.len() > 20, "{ours:#?}");
    assert_eq!(ours, theirs);
    let listed = listing(&a, &novamon.url);
    assert_eq!(listed, listing(&a, &gw));

    // The groups survive a restart, and are queryable again.
    drop(novamon);
    let novamon = Novamon::start(&data, &[]);
    assert_eq!(listing(&a, &novamon.url), listed);
    wait_until(Duration::from_secs(30), || {
        pushed_series(&a, &novamon.url) == ours
    })
    .expect("the pushed series after a restart");
}
