//! Forwarding with `remote_write:` (#18), whole-process: novamon receives samples over
//! remote-write and forwards them to real receivers (Prometheus 2.42 with its receiver on,
//! VictoriaMetrics, both from Debian) and to a receiver in this file that misbehaves on
//! purpose. What each receiver holds in the end is compared sample by sample with what
//! novamon acknowledged: nothing lost (through a receiver outage and a kill -9 of novamon),
//! per-series order kept (Prometheus refuses a sample older than its series' newest, so one
//! sent out of order would be missing), bad receivers cost local ingest nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::series::{v1_request, v1_series, V1};
use e2e::spawn_prometheus;
use e2e::{agent, enc, get_json, wait_for_go_ready_url, wait_until, Novamon, Process};
use ingest::remote_write::proto::v1;
use prost::Message;

const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Queue settings short enough for a test (Prometheus's 5 s deadline is not).
const QUICK: &str = "batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 400ms";

/// A novamon whose config forwards to `url` with `queue` (the `queue_config` mapping's
/// contents) and `extra` lines in the `remote_write` entry, external label `edge: e1`. A
/// restart on the same `dir` keeps its data and config.
fn sender(dir: &Path, url: &str, queue: &str, extra: &str) -> Novamon {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("novamon.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  external_labels: {{edge: e1}}\nremote_write:\n  - url: {url}\n    name: out\n    remote_timeout: 2s\n    queue_config: {{{queue}}}\n{extra}"
        ),
    )
    .unwrap();
    Novamon::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// Waits until the server at `base` holds exactly `want` for `selector`.
fn wait_held(
    n: &Novamon,
    base: &str,
    selector: &str,
    want: &BTreeMap<String, Vec<(i64, f64)>>,
    timeout: Duration,
) {
    let mut got = BTreeMap::new();
    wait_until(timeout, || {
        got = held(base, selector);
        &got == want
    })
    .unwrap_or_else(|| {
        let missing: usize = want
            .iter()
            .map(|(i, w)| {
                w.iter()
                    .filter(|p| !got.get(i).is_some_and(|g| g.contains(p)))
                    .count()
            })
            .sum();
        panic!(
            "{selector}: {missing} samples missing after {timeout:?}\n{}\n{}",
            metrics_text(n)
                .lines()
                .filter(|l| l.contains("remote_storage"))
                .collect::<Vec<_>>()
                .join("\n"),
            n.process.log()
        )
    });
}

/// Series `fwd_test{i="…"}` for `i` in `range`, one sample each at `t` with value `v(i)`,
/// written in one request that must be accepted.
fn write(n: &Novamon, name: &str, range: std::ops::Range<usize>, t: i64, v: impl Fn(usize) -> f64) {
    let series = range
        .map(|i| {
            let i_s = i.to_string();
            v1_series(&[("__name__", name), ("i", &i_s)], &[(t, v(i))])
        })
        .collect();
    let (status, body, _) = n.remote_write(&v1_request(series), V1);
    assert_eq!(status, 204, "{body}");
}

/// The samples a Prometheus-API server at `base` holds for `selector` over the last hour,
/// by `i` label: (t ms, value).
fn held(base: &str, selector: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let q = format!("{selector}[1h]");
    let (status, body) = get_json(
        &agent(),
        &format!(
            "{base}/api/v1/query?query={}&time={}",
            enc(&q),
            now_ms() as f64 / 1000.0 + 60.0
        ),
    );
    assert_eq!(status, 200, "{body}");
    e2e::points_by_label(&body, "i")
}

/// Every series `0..series` with samples at `times` (value = t/1000 + i), in order.
fn expected(series: usize, times: &[i64]) -> BTreeMap<String, Vec<(i64, f64)>> {
    (0..series)
        .map(|i| {
            (
                i.to_string(),
                times.iter().map(|&t| (t, value(t, i))).collect(),
            )
        })
        .collect()
}

fn value(t: i64, i: usize) -> f64 {
    (t / 1000) as f64 + i as f64
}

fn metrics_text(n: &Novamon) -> String {
    n.agent
        .get(format!("{}/metrics", n.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

fn counter(n: &Novamon, name: &str) -> f64 {
    let prefix = format!("{name}{{remote_name=\"out\",");
    metrics_text(n)
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}"))
}

/// A Prometheus 2.42 receiving remote-write on `listen` (`127.0.0.1:0` or a port it had).
fn prometheus(dir: &Path, listen: &str) -> (Process, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let mut p = spawn_prometheus(
        dir,
        &config,
        listen,
        &["--web.enable-remote-write-receiver"],
    );
    let url = wait_for_go_ready_url(&mut p);
    (p, url)
}

#[test]
fn prometheus_gets_every_sample_in_order_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut prom, prom_url) = prometheus(dir.path(), "127.0.0.1:0");
    // 2.0 asked for: Prometheus 2.42 answers 204 without the written counts, and the
    // sender falls back to 1.0 without losing the batch.
    let n = sender(
        &dir.path().join("novamon"),
        &format!("{prom_url}/api/v1/write"),
        QUICK,
        "    protobuf_message: io.prometheus.write.v2.Request\n    write_relabel_configs: [{source_labels: [__name__], regex: fwd_dropped, action: drop}]\n",
    );
    const SERIES: usize = 200;
    let t0 = now_ms() / 1000 * 1000 - 600_000;
    let mut times = Vec::new();
    let mut step = 0;
    let mut write_step = |n: &Novamon, times: &mut Vec<i64>| {
        let t = t0 + step * 1000;
        step += 1;
        write(n, "fwd_test", 0..SERIES, t, |i| value(t, i));
        write(n, "fwd_dropped", 0..3, t, |_| 1.0);
        times.push(t);
    };
    for _ in 0..20 {
        write_step(&n, &mut times);
    }
    wait_held(
        &n,
        &prom_url,
        "fwd_test",
        &expected(SERIES, &times),
        Duration::from_secs(30),
    );

    // The receiver goes away; local ingest goes on, each write as fast as before.
    prom.signal_and_wait("TERM", Duration::from_secs(30));
    let outage = Instant::now();
    for _ in 0..40 {
        let start = Instant::now();
        write_step(&n, &mut times);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2).saturating_sub(outage.elapsed()));
    assert!(counter(&n, "prometheus_remote_storage_samples_retried_total") > 0.0);
    let port = prom_url.trim_start_matches("http://").to_owned();
    let (_prom, prom_url) = prometheus(dir.path(), &port);
    for _ in 0..10 {
        write_step(&n, &mut times);
    }
    wait_held(
        &n,
        &prom_url,
        "fwd_test",
        &expected(SERIES, &times),
        Duration::from_secs(60),
    );
    assert!(held(&prom_url, "fwd_dropped").is_empty());
    // External labels are added to what is sent.
    let (_, body) = get_json(
        &agent(),
        &format!(
            "{prom_url}/api/v1/series?match[]={}",
            enc(r#"fwd_test{i="0"}"#)
        ),
    );
    assert_eq!(body["data"][0]["edge"], "e1", "{body}");
    assert_eq!(
        counter(&n, "prometheus_remote_storage_samples_failed_total"),
        0.0
    );
    assert_eq!(
        counter(&n, "prometheus_remote_storage_samples_dropped_total"),
        (70 * 3) as f64
    );
    let status = n.get_ok("/ui/api/status");
    let rw = &status["data"]["remoteWrite"][0];
    assert_eq!(
        (rw["name"].as_str(), rw["protocol"].as_str()),
        (Some("out"), Some("1.0")),
        "{rw}"
    );
}

#[test]
fn kill_9_of_the_sender_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_prom, prom_url) = prometheus(dir.path(), "127.0.0.1:0");
    let url = format!("{prom_url}/api/v1/write");
    // Small batches, so that forwarding takes a while and the kill lands in the middle.
    let queue = format!("{QUICK}, max_samples_per_send: 50, capacity: 100");
    let config_dir = dir.path().join("novamon");
    let mut n = sender(&config_dir, &url, &queue, "");
    const SERIES: usize = 1000;
    let t0 = now_ms() / 1000 * 1000 - 600_000;
    let times: Vec<i64> = (0..30).map(|k| t0 + k * 1000).collect();
    for &t in &times[..20] {
        write(&n, "fwd_kill", 0..SERIES, t, |i| value(t, i));
    }
    wait_until(Duration::from_secs(20), || {
        counter(&n, "prometheus_remote_storage_samples_total") > 2000.0
    })
    .expect("forwarding started");
    n.process.signal_and_wait("KILL", Duration::from_secs(10));
    let n = sender(&config_dir, &url, &queue, "");
    for &t in &times[20..] {
        write(&n, "fwd_kill", 0..SERIES, t, |i| value(t, i));
    }
    // What was in flight at the kill is sent again (Prometheus refuses the samples it has
    // beside newer ones; the batch is split so only those are dropped), the rest once.
    wait_held(
        &n,
        &prom_url,
        "fwd_kill",
        &expected(SERIES, &times),
        Duration::from_secs(90),
    );
}

#[test]
fn victoria_metrics_gets_the_same_samples() {
    assert!(
        Path::new(VICTORIA_METRICS).exists(),
        "the victoria-metrics package is required (tests/run.sh installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    // VictoriaMetrics logs the address asked for, not the one bound: a free port is picked
    // here (and released just before it starts).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vm_url = format!("http://127.0.0.1:{port}");
    let _vm = Process::spawn(
        Command::new(VICTORIA_METRICS)
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-search.latencyOffset=0s"),
        dir.path().join("vm.log"),
    );
    wait_until(Duration::from_secs(30), || {
        agent()
            .get(format!("{vm_url}/health"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    })
    .expect("victoria-metrics up");
    let n = sender(
        &dir.path().join("novamon"),
        &format!("{vm_url}/api/v1/write"),
        QUICK,
        "",
    );
    const SERIES: usize = 100;
    let t0 = now_ms() / 1000 * 1000 - 600_000;
    let times: Vec<i64> = (0..20).map(|k| t0 + k * 1000).collect();
    for &t in &times {
        write(&n, "fwd_vm", 0..SERIES, t, |i| value(t, i));
    }
    let a = agent();
    let mut got = BTreeMap::new();
    wait_until(Duration::from_secs(30), || {
        // Makes what was received searchable now.
        a.get(format!("{vm_url}/internal/force_flush"))
            .call()
            .unwrap();
        let (status, body) = get_json(
            &a,
            &format!(
                "{vm_url}/api/v1/query?query={}&time={}",
                enc("fwd_vm[1h]"),
                now_ms() / 1000 + 60
            ),
        );
        assert_eq!(status, 200, "{body}");
        got = e2e::points_by_label(&body, "i");
        got == expected(SERIES, &times)
    })
    .unwrap_or_else(|| panic!("victoria-metrics holds {got:?}"));
}

/// What the misbehaving receiver does with each request.
#[derive(Clone, Copy, PartialEq)]
#[repr(u8)]
enum Mode {
    Accept = 0,
    BadRequest = 1,
    ServerError = 2,
    /// Answers nothing for 30 s.
    Stall = 3,
    /// Answers bytes that are not HTTP.
    Garbage = 4,
}

/// A receiver on a thread of its own: answers as its mode says and counts the samples of
/// the requests it accepted.
struct Fake {
    url: String,
    mode: Arc<AtomicU8>,
    accepted: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    label_sets: Arc<Mutex<Vec<String>>>,
    /// The newest sample timestamp accepted.
    newest: Arc<AtomicI64>,
}

impl Fake {
    fn start(mode: Mode) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/receive", listener.local_addr().unwrap());
        let fake = Fake {
            url,
            mode: Arc::new(AtomicU8::new(mode as u8)),
            accepted: Arc::default(),
            requests: Arc::default(),
            label_sets: Arc::default(),
            newest: Arc::default(),
        };
        let (mode, accepted, requests, label_sets, newest) = (
            fake.mode.clone(),
            fake.accepted.clone(),
            fake.requests.clone(),
            fake.label_sets.clone(),
            fake.newest.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (mode, accepted, requests, label_sets, newest) = (
                    mode.clone(),
                    accepted.clone(),
                    requests.clone(),
                    label_sets.clone(),
                    newest.clone(),
                );
                std::thread::spawn(move || {
                    serve(conn, &mode, &accepted, &requests, &label_sets, &newest)
                });
            }
        });
        fake
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

fn serve(
    mut conn: TcpStream,
    mode: &AtomicU8,
    accepted: &AtomicU64,
    requests: &AtomicU64,
    label_sets: &Mutex<Vec<String>>,
    newest: &AtomicI64,
) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if conn.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let answer: &[u8] = match mode.load(Ordering::SeqCst) {
            0 => {
                let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                let req = v1::WriteRequest::decode(raw.as_slice()).unwrap();
                let mut sets = label_sets.lock().unwrap();
                for ts in &req.timeseries {
                    accepted.fetch_add(ts.samples.len() as u64, Ordering::SeqCst);
                    for x in &ts.samples {
                        newest.fetch_max(x.timestamp, Ordering::SeqCst);
                    }
                    let set: Vec<String> = ts
                        .labels
                        .iter()
                        .map(|l| format!("{}={}", l.name, l.value))
                        .collect();
                    sets.push(set.join(","));
                }
                b"HTTP/1.1 204 No Content\r\n\r\n"
            }
            1 => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\nbad request",
            2 => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops",
            3 => {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            _ => b"\x00\xffnot http at all\r\n\r\n",
        };
        if conn.write_all(answer).is_err() {
            return;
        }
    }
}

#[test]
fn bad_receivers_cost_local_ingest_nothing_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(Mode::BadRequest);
    let n = sender(&dir.path().join("novamon"), &fake.url, QUICK, "");
    let t0 = now_ms() / 1000 * 1000 - 600_000;
    // 400: dropped and counted.
    write(&n, "fwd_bad", 0..50, t0, |i| i as f64);
    wait_until(Duration::from_secs(10), || {
        counter(&n, "prometheus_remote_storage_samples_failed_total") == 50.0
    })
    .unwrap_or_else(|| panic!("{}", metrics_text(&n)));
    // 500: retried until the receiver takes them.
    fake.set(Mode::ServerError);
    write(&n, "fwd_bad", 0..50, t0 + 1000, |i| i as f64);
    wait_until(Duration::from_secs(10), || {
        counter(&n, "prometheus_remote_storage_samples_retried_total") >= 100.0
    })
    .expect("retried");
    fake.set(Mode::Accept);
    wait_until(Duration::from_secs(10), || {
        fake.accepted.load(Ordering::SeqCst) == 50
    })
    .expect("delivered after the 500s");
    // The external label is there, the series' own labels too.
    assert!(
        fake.label_sets
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.starts_with("__name__=fwd_bad,edge=e1,i=")),
        "{:?}",
        fake.label_sets.lock().unwrap()
    );
    // A receiver that stalls, then one that answers garbage: every local write is as fast
    // as ever, and memory does not grow with what waits (it waits on disk).
    for (round, mode) in [Mode::Stall, Mode::Garbage].into_iter().enumerate() {
        fake.set(mode);
        let before = fake.requests.load(Ordering::SeqCst);
        for k in 0..20 {
            let start = Instant::now();
            let t = t0 + 2000 + (round as i64 * 20 + k) * 1000;
            write(&n, "fwd_bad", 0..500, t, |i| i as f64);
            assert!(
                start.elapsed() < Duration::from_millis(1500),
                "a local write took {:?} while the receiver misbehaved",
                start.elapsed()
            );
        }
        wait_until(Duration::from_secs(10), || {
            fake.requests.load(Ordering::SeqCst) > before
        })
        .expect("the receiver was tried");
        let pending = counter(&n, "prometheus_remote_storage_samples_pending");
        assert!(pending <= 2500.0, "{pending} samples held in memory");
    }
    // Back to a good receiver: everything held on disk arrives.
    fake.set(Mode::Accept);
    wait_until(Duration::from_secs(30), || {
        fake.accepted.load(Ordering::SeqCst) >= 50 + 2 * 20 * 500
    })
    .unwrap_or_else(|| {
        panic!(
            "{} accepted; {}\n{}",
            fake.accepted.load(Ordering::SeqCst),
            metrics_text(&n)
                .lines()
                .filter(|l| l.contains("remote_storage"))
                .collect::<Vec<_>>()
                .join("\n"),
            n.process.log()
        )
    });
}

#[test]
fn a_backlog_over_max_disk_usage_loses_its_oldest_samples_counted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(Mode::ServerError);
    let n = sender(
        &dir.path().join("novamon"),
        &fake.url,
        QUICK,
        "    max_disk_usage: 64KB\n    metadata_config: {send_interval: 1s}\n",
    );
    let t0 = now_ms() / 1000 * 1000 - 600_000;
    const WRITES: i64 = 40;
    for k in 0..WRITES {
        let series = (0..200)
            .map(|i| {
                let i_s = i.to_string();
                v1_series(
                    &[("__name__", "fwd_cap"), ("i", &i_s)],
                    &[(t0 + k * 1000, 1.0)],
                )
            })
            .collect();
        let mut req = v1::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        };
        if k == 0 {
            req.metadata.push(v1::MetricMetadata {
                r#type: v1::MetricType::Gauge as i32,
                metric_family_name: "fwd_cap".into(),
                help: "A gauge to forward.".into(),
                unit: String::new(),
            });
        }
        let (status, body, _) = n.remote_write(&req.encode_to_vec(), V1);
        assert_eq!(status, 204, "{body}");
    }
    // The receiver fails all the while: the backlog passes 64 KiB and its oldest go.
    wait_until(Duration::from_secs(10), || {
        counter(&n, "novamon_remote_storage_outbox_dropped_samples_total") > 0.0
    })
    .unwrap_or_else(|| panic!("{}", metrics_text(&n)));
    fake.set(Mode::Accept);
    let total = (WRITES * 200) as f64;
    wait_until(Duration::from_secs(20), || {
        let sent = fake.accepted.load(Ordering::SeqCst) as f64;
        let dropped = counter(&n, "novamon_remote_storage_outbox_dropped_samples_total");
        sent + dropped >= total && counter(&n, "prometheus_remote_storage_samples_pending") == 0.0
    })
    .unwrap_or_else(|| panic!("{}", metrics_text(&n)));
    let sent = fake.accepted.load(Ordering::SeqCst) as f64;
    let dropped = counter(&n, "novamon_remote_storage_outbox_dropped_samples_total");
    // Nothing is both sent and dropped, and the cap held: what was kept is what the shard
    // held in memory (capacity, 2500) and 64 KiB of records on disk (about 40 bytes a sample).
    assert_eq!(sent + dropped, total, "sent {sent}, dropped {dropped}");
    assert!(sent < 2500.0 + 2500.0, "sent {sent}, dropped {dropped}");
    // The newest were kept.
    assert!(fake.newest.load(Ordering::SeqCst) == t0 + (WRITES - 1) * 1000);
    // Metadata is sent in requests of its own, every send_interval.
    wait_until(Duration::from_secs(10), || {
        counter(&n, "prometheus_remote_storage_metadata_total") >= 1.0
    })
    .unwrap_or_else(|| panic!("{}", metrics_text(&n)));
}
