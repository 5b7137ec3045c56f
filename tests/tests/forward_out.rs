//! Forwarding logs and traces with `forward:` (#18), whole-process: a novamon takes log lines
//! (Loki push) and spans (OTLP/HTTP) and forwards them to a second novamon, the receiver,
//! over Loki push, OTLP/HTTP logs and OTLP/HTTP traces; what the receiver holds is read back
//! through its Loki and Jaeger APIs and compared line by line and span by span with what the
//! sender acknowledged: nothing lost (through a receiver outage and a kill -9 of the sender),
//! per-stream order kept, structured metadata kept, each destination given what its selector
//! takes, and receivers that refuse or stall cost local ingest nothing.
//!
//! The receiver is reached through a proxy in this file, so that it can stop and come back on
//! other ports behind one address the sender's config names.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{now_ns, wait_until, Json, Novamon};
use serde_json::json;

/// Queue settings short enough for a test.
const QUICK: &str = "{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 400ms}";

/// A TCP proxy on a fixed loopback port to whatever address is set (connections are refused,
/// by closing them, while none is).
struct Proxy {
    addr: String,
    target: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target: Arc<Mutex<Option<String>>> = Arc::default();
        let t = target.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Some(to) = t.lock().unwrap().clone() else {
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(&to) else {
                    continue;
                };
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Proxy { addr, target }
    }

    fn point_at(&self, url: Option<&str>) {
        *self.target.lock().unwrap() = url.map(|u| u.trim_start_matches("http://").to_owned());
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// A sender whose `forward:` section is `forward` (YAML lines under `forward:`). A restart
/// on the same `dir` keeps its data and config.
fn sender(dir: &Path, forward: &str) -> Novamon {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("novamon.yml");
    std::fs::write(&config, format!("forward:\n{forward}")).unwrap();
    Novamon::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// Pushes `lines` lines of stream `{app=<app>, env=<env>}` at `t0 + i` ns, each with
/// structured metadata `seq=<i>`; the line text is `<app> <i>`.
fn push_lines(n: &Novamon, app: &str, env: &str, range: std::ops::Range<usize>, t0: i64) {
    let values: Vec<Json> = range
        .map(|i| json!([(t0 + i as i64).to_string(), format!("{app} {i}"), {"seq": i.to_string()}]))
        .collect();
    n.loki_push(&json!({"streams": [{"stream": {"app": app, "env": env}, "values": values}]}));
}

/// The expected lines of [`push_lines`].
fn lines(app: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{app} {i}")).collect()
}

/// Waits until `n` holds exactly `want` for `selector`, in this order.
fn wait_lines(n: &Novamon, sender: &Novamon, selector: &str, t0: i64, want: &[String]) {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(60), || {
        got = n.log_lines(selector, t0);
        got == want
    })
    .unwrap_or_else(|| {
        panic!(
            "{selector}: {} lines of {} held\n{}\nsender log:\n{}",
            got.len(),
            want.len(),
            forward_metrics(sender),
            sender.process.log()
        )
    });
}

fn forward_metrics(n: &Novamon) -> String {
    let (_, text) = n.get_text("/metrics", &[]);
    text.lines()
        .filter(|l| l.starts_with("novamon_forward_"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn counter(n: &Novamon, series: &str) -> f64 {
    n.metric(series).unwrap_or(0.0)
}

/// Posts `spans` spans of service `service` in trace `trace_id` (32 hex digits) over
/// OTLP/HTTP JSON; span ids are 1.. in hex.
fn post_spans(n: &Novamon, service: &str, trace_id: &str, range: std::ops::Range<usize>) {
    let now = now_ns();
    let spans: Vec<Json> = range
        .map(|i| {
            json!({"traceId": trace_id, "spanId": format!("{:016x}", i + 1), "name": format!("op{i}"),
                   "kind": 2, "startTimeUnixNano": (now + i as i64).to_string(),
                   "endTimeUnixNano": (now + i as i64 + 1000).to_string()})
        })
        .collect();
    let body = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}]}]});
    n.post_otlp_json("/v1/traces", &body);
}

/// The span names of a trace as `n`'s Jaeger API returns it, sorted.
fn span_names(n: &Novamon, trace_id: &str) -> Vec<String> {
    let (status, body) = n.get_json(&format!("/jaeger/api/traces/{trace_id}"));
    if status != 200 {
        return Vec::new();
    }
    let mut names: Vec<String> = body["data"][0]["spans"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["operationName"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn wait_spans(n: &Novamon, sender: &Novamon, trace_id: &str, want: usize) {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(60), || {
        got = span_names(n, trace_id);
        got.len() == want
    })
    .unwrap_or_else(|| {
        panic!(
            "trace {trace_id}: {} spans of {want}\n{}\nsender log:\n{}",
            got.len(),
            forward_metrics(sender),
            sender.process.log()
        )
    });
    let mut names: Vec<String> = (0..want).map(|i| format!("op{i}")).collect();
    names.sort();
    assert_eq!(got, names);
}

/// (a) and (b): lines and spans arrive exactly once and in order, structured metadata kept,
/// through an outage of the receiver under writes; then (c): a kill -9 of the sender with a
/// backlog loses nothing.
#[test]
fn lines_and_spans_reach_a_second_novamon_through_an_outage_and_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_data = dir.path().join("receiver");
    let mut receiver = Novamon::start(&receiver_data, &[]);
    let proxy = Proxy::start();
    proxy.point_at(Some(&receiver.url));
    let base = proxy.url();
    let forward = format!(
        "  logs:\n    - {{name: loki, protocol: loki, url: '{base}/loki/api/v1/push', queue_config: {QUICK}, selector: '{{app=\"loki\"}}'}}\n    - {{name: otlp, protocol: otlp_http, url: '{base}/v1/logs', queue_config: {QUICK}, selector: '{{app=\"otlp\"}}'}}\n  traces:\n    - {{name: tempo, protocol: otlp_http, url: '{base}/v1/traces', queue_config: {QUICK}}}\n"
    );
    let sender_dir = dir.path().join("sender");
    let mut n = sender(&sender_dir, &forward);
    let t0 = now_ns() - 600_000_000_000;
    let trace = "0af7651916cd43dd8448eb211c80319c";

    push_lines(&n, "loki", "prod", 0..500, t0);
    push_lines(&n, "otlp", "prod", 0..300, t0);
    post_spans(&n, "shop", trace, 0..50);
    wait_lines(&receiver, &n, r#"{app="loki"}"#, t0, &lines("loki", 0..500));
    // OTLP logs carry the stream as resource attributes, which the receiver's OTLP mapping
    // (Loki's) keeps as structured metadata of a `service_name="unknown_service"` stream.
    wait_lines(&receiver, &n, OTLP_LINES, t0, &lines("otlp", 0..300));
    let one = receiver.log_lines(&format!("{OTLP_LINES} | seq=\"42\""), t0);
    assert_eq!(one, ["otlp 42"]);
    wait_spans(&receiver, &n, trace, 50);
    // Structured metadata came along: a filter on it finds exactly one line.
    let one = receiver.log_lines(r#"{app="loki"} | seq="123""#, t0);
    assert_eq!(one, ["loki 123"]);

    // The receiver goes away; local ingest goes on, each write as fast as before.
    receiver
        .process
        .signal_and_wait("TERM", Duration::from_secs(30));
    proxy.point_at(None);
    for k in 0..10 {
        let start = Instant::now();
        push_lines(&n, "loki", "prod", 500 + k * 100..600 + k * 100, t0);
        post_spans(&n, "shop", trace, 50 + k * 5..55 + k * 5);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(Duration::from_secs(20), || {
        forward_metrics(&n).lines().any(|l| {
            l.starts_with("novamon_forward_items_retried_total{remote_name=\"loki\"")
                && !l.ends_with(" 0")
        })
    })
    .unwrap_or_else(|| panic!("no retries counted\n{}", forward_metrics(&n)));
    let receiver2 = Novamon::start(&receiver_data, &[]);
    proxy.point_at(Some(&receiver2.url));
    receiver = receiver2;
    wait_lines(
        &receiver,
        &n,
        r#"{app="loki"}"#,
        t0,
        &lines("loki", 0..1500),
    );
    wait_spans(&receiver, &n, trace, 100);

    // A backlog, then kill -9 of the sender: what it acknowledged still arrives.
    proxy.point_at(None);
    push_lines(&n, "loki", "prod", 1500..3000, t0);
    n.process.signal_and_wait("KILL", Duration::from_secs(10));
    let n = sender(&sender_dir, &forward);
    proxy.point_at(Some(&receiver.url));
    push_lines(&n, "loki", "prod", 3000..3100, t0);
    wait_lines(
        &receiver,
        &n,
        r#"{app="loki"}"#,
        t0,
        &lines("loki", 0..3100),
    );
    // Nothing twice in the end either: the OTLP destination had nothing in flight.
    assert_eq!(receiver.log_lines(OTLP_LINES, t0), lines("otlp", 0..300));
}

/// The OTLP destination's lines on the receiver.
const OTLP_LINES: &str = r#"{service_name="unknown_service"} | app="otlp""#;

/// (e): each destination gets what its selector takes, and only that.
#[test]
fn selectors_route_streams_and_services() {
    let dir = tempfile::tempdir().unwrap();
    let prod = Novamon::start(&dir.path().join("prod"), &[]);
    let rest = Novamon::start(&dir.path().join("rest"), &[]);
    let forward = format!(
        "  logs:\n    - {{name: prod, protocol: loki, url: '{}/loki/api/v1/push', queue_config: {QUICK}, selector: '{{env=\"prod\"}}'}}\n    - {{name: rest, protocol: loki, url: '{}/loki/api/v1/push', queue_config: {QUICK}, selector: '{{env=~\"dev|test\"}}'}}\n  traces:\n    - {{name: shop, protocol: otlp_http, url: '{}/v1/traces', queue_config: {QUICK}, services: ['shop|cart-.*']}}\n",
        prod.url, rest.url, prod.url
    );
    let n = sender(&dir.path().join("sender"), &forward);
    let t0 = now_ns() - 60_000_000_000;
    push_lines(&n, "api", "prod", 0..20, t0);
    push_lines(&n, "api", "dev", 0..30, t0);
    post_spans(&n, "cart-eu", "11111111111111111111111111111111", 0..3);
    post_spans(&n, "billing", "22222222222222222222222222222222", 0..4);
    post_spans(&n, "shop", "33333333333333333333333333333333", 0..5);
    wait_lines(&prod, &n, r#"{app="api"}"#, t0, &lines("api", 0..20));
    wait_lines(&rest, &n, r#"{app="api"}"#, t0, &lines("api", 0..30));
    wait_spans(&prod, &n, "11111111111111111111111111111111", 3);
    wait_spans(&prod, &n, "33333333333333333333333333333333", 5);
    assert!(span_names(&prod, "22222222222222222222222222222222").is_empty());
    assert!(span_names(&rest, "33333333333333333333333333333333").is_empty());
    assert_eq!(
        prod.log_lines(r#"{env="dev"}"#, t0).len() + rest.log_lines(r#"{env="prod"}"#, t0).len(),
        0
    );
}

/// A receiver in this file: 400 to everything, or a stall (reads the request, never
/// answers), or garbage bytes instead of HTTP, or an OTLP/HTTP 200 whose partial success
/// rejects one log record of each batch.
fn bad_receiver(kind: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let reply: &[u8] = match kind {
                        "400" => {
                            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\n\r\nbad request"
                        }
                        "garbage" => b"\x00\xffnot http at all\r\n\r\n",
                        // ExportLogsServiceResponse{partial_success{rejected_log_records: 1,
                        // error_message: "too old"}}.
                        "partial" => b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 13\r\n\r\n\x0a\x0b\x08\x01\x12\x07too old",
                        _ => continue,
                    };
                    if conn.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// (d): a receiver answering 400 has its lines dropped and counted; a stalling or garbage
/// receiver is retried and never blocks local ingest.
#[test]
fn bad_receivers_drop_and_count_and_never_block_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let refusing = bad_receiver("400");
    let stalling = bad_receiver("stall");
    let garbage = bad_receiver("garbage");
    let partial = bad_receiver("partial");
    let forward = format!(
        "  logs:\n    - {{name: refusing, protocol: loki, url: '{refusing}/loki/api/v1/push', queue_config: {QUICK}}}\n    - {{name: stalling, protocol: loki, url: '{stalling}/loki/api/v1/push', remote_timeout: 1s, queue_config: {QUICK}}}\n    - {{name: garbage, protocol: otlp_http, url: '{garbage}/v1/logs', queue_config: {QUICK}}}\n    - {{name: partial, protocol: otlp_http, url: '{partial}/v1/logs', queue_config: {QUICK}}}\n"
    );
    let n = sender(&dir.path().join("sender"), &forward);
    let t0 = now_ns() - 60_000_000_000;
    for k in 0..20 {
        let start = Instant::now();
        push_lines(&n, "api", "prod", k * 100..(k + 1) * 100, t0);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    // Stored locally, every line, whatever the receivers did.
    let want = lines("api", 0..2000);
    wait_until(Duration::from_secs(30), || {
        n.log_lines(r#"{app="api"}"#, t0) == want
    })
    .expect("the pushed lines are all queryable on the sender");
    let m = |name: &str, dest: &str, url: &str| {
        counter(
            &n,
            &format!("{name}{{remote_name=\"{dest}\",url=\"{url}\",signal=\"logs\"}}"),
        )
    };
    wait_until(Duration::from_secs(30), || {
        m(
            "novamon_forward_items_failed_total",
            "refusing",
            &format!("{refusing}/loki/api/v1/push"),
        ) == 2000.0
    })
    .unwrap_or_else(|| panic!("{}", forward_metrics(&n)));
    wait_until(Duration::from_secs(30), || {
        m(
            "novamon_forward_items_retried_total",
            "stalling",
            &format!("{stalling}/loki/api/v1/push"),
        ) > 0.0
            && m(
                "novamon_forward_items_retried_total",
                "garbage",
                &format!("{garbage}/v1/logs"),
            ) > 0.0
    })
    .unwrap_or_else(|| panic!("{}", forward_metrics(&n)));
    // A partial success: one record of each batch counted failed, the rest sent, none retried.
    let partial_url = format!("{partial}/v1/logs");
    wait_until(Duration::from_secs(30), || {
        m(
            "novamon_forward_items_failed_total",
            "partial",
            &partial_url,
        ) + m("novamon_forward_items_total", "partial", &partial_url)
            == 2000.0
    })
    .unwrap_or_else(|| panic!("{}", forward_metrics(&n)));
    let failed = m(
        "novamon_forward_items_failed_total",
        "partial",
        &partial_url,
    );
    assert!((1.0..=20.0).contains(&failed), "{failed} failed");
    assert_eq!(
        m(
            "novamon_forward_items_retried_total",
            "partial",
            &partial_url
        ),
        0.0
    );
    let status = n.get_ok("/ui/api/status");
    let names: Vec<&str> = status["data"]["forward"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["garbage", "partial", "refusing", "stalling"],
        "{status}"
    );
    let partial_status = &status["data"]["forward"][1];
    assert!(
        partial_status
            .to_string()
            .contains("partial success: 1 rejected: too old"),
        "{partial_status}"
    );
}

/// Spans and lines forwarded over OTLP gRPC to a second novamon's OTLP gRPC listener arrive
/// exactly, through an outage of the receiver (retried, as UNAVAILABLE is).
#[test]
fn spans_and_lines_go_out_over_otlp_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_data = dir.path().join("receiver");
    let receiver = Novamon::start(&receiver_data, &[]);
    let proxy = Proxy::start();
    proxy.point_at(Some(&receiver.otlp_grpc_url));
    let base = proxy.url();
    let forward = format!(
        "  logs:\n    - {{name: collector, protocol: otlp_grpc, url: '{base}', headers: {{X-Scope-OrgID: edge}}, queue_config: {QUICK}}}\n  traces:\n    - {{name: tempo, protocol: otlp_grpc, url: '{base}', queue_config: {QUICK}}}\n"
    );
    let n = sender(&dir.path().join("sender"), &forward);
    let t0 = now_ns() - 600_000_000_000;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    post_spans(&n, "shop", trace, 0..50);
    push_lines(&n, "otlp", "prod", 0..200, t0);
    wait_spans(&receiver, &n, trace, 50);
    wait_lines(&receiver, &n, OTLP_LINES, t0, &lines("otlp", 0..200));
    let one = receiver.log_lines(&format!("{OTLP_LINES} | seq=\"42\""), t0);
    assert_eq!(one, ["otlp 42"]);

    let mut receiver = receiver;
    receiver
        .process
        .signal_and_wait("TERM", Duration::from_secs(30));
    proxy.point_at(None);
    post_spans(&n, "shop", trace, 50..100);
    push_lines(&n, "otlp", "prod", 200..400, t0);
    wait_until(Duration::from_secs(20), || {
        n.forward_counter("novamon_forward_items_retried_total", "tempo") > 0.0
            && n.forward_counter("novamon_forward_items_retried_total", "collector") > 0.0
    })
    .unwrap_or_else(|| {
        panic!(
            "no retries counted\n{}\nsender log:\n{}",
            forward_metrics(&n),
            n.process.log()
        )
    });
    let receiver = Novamon::start(&receiver_data, &[]);
    proxy.point_at(Some(&receiver.otlp_grpc_url));
    wait_spans(&receiver, &n, trace, 100);
    wait_lines(&receiver, &n, OTLP_LINES, t0, &lines("otlp", 0..400));
    for dest in ["tempo", "collector"] {
        assert_eq!(
            n.forward_counter("novamon_forward_items_failed_total", dest),
            0.0,
            "{}",
            forward_metrics(&n)
        );
    }
    assert_eq!(
        n.forward_counter("novamon_forward_items_total", "tempo"),
        100.0
    );
}

/// A log destination's backlog over `max_disk_usage` while its receiver is down: the oldest
/// unsent lines are dropped and counted, every other line arrives once and in order (the
/// newest included), and local ingest never waits.
#[test]
fn a_backlog_over_max_disk_usage_drops_the_oldest_lines_counted() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Novamon::start(&dir.path().join("receiver"), &[]);
    let proxy = Proxy::start();
    let base = proxy.url();
    let forward = format!(
        "  logs:\n    - {{name: capped, protocol: loki, url: '{base}/loki/api/v1/push', max_disk_usage: 32768, queue_config: {{max_items_per_send: 100, batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}}}\n"
    );
    let n = sender(&dir.path().join("sender"), &forward);
    let t0 = now_ns() - 600_000_000_000;
    let total = 6000;
    for k in 0..total / 100 {
        let start = Instant::now();
        push_lines(&n, "capped", "prod", k * 100..(k + 1) * 100, t0);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    wait_until(Duration::from_secs(10), || {
        n.forward_counter("novamon_forward_items_retried_total", "capped") > 0.0
    })
    .unwrap_or_else(|| panic!("no retries counted\n{}", forward_metrics(&n)));
    proxy.point_at(Some(&receiver.url));
    let all = lines("capped", 0..total);
    let mut got = Vec::new();
    wait_until(Duration::from_secs(30), || {
        got = receiver.log_lines(r#"{app="capped"}"#, t0);
        got.last() == all.last()
            && (got.len()
                + n.forward_counter("novamon_forward_items_dropped_total", "capped") as usize)
                == total
    })
    .unwrap_or_else(|| {
        panic!(
            "{} lines held\n{}\n{}",
            got.len(),
            forward_metrics(&n),
            n.process.log()
        )
    });
    let dropped = total - got.len();
    assert!(dropped > 0, "nothing dropped\n{}", forward_metrics(&n));
    // What arrived is what was read before the cap bit, then the newest, in order: one run
    // of the oldest lines is missing, and only that.
    let kept = got.iter().zip(&all).take_while(|(a, b)| a == b).count();
    assert_eq!(got[kept..], all[kept + dropped..]);
    // The newest 32 KiB of backlog is hundreds of lines.
    assert!(
        total - kept - dropped >= 200,
        "{} newest kept",
        total - kept - dropped
    );
}

/// The samples of `name` the novamon `n` holds over the last hour, by `i` label: (t ms, v).
fn samples(n: &Novamon, name: &str) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    let now_s = now_ns() / 1_000_000_000;
    let (status, body) = n.get_json(&format!(
        "/api/v1/query?query={}&time={}",
        e2e::enc(&format!("{name}[1h]")),
        now_s + 60
    ));
    assert_eq!(status, 200, "{body}");
    e2e::points_by_label(&body, "i")
}

/// The issue's outage: the receiver down for two minutes while lines, spans and remote-write
/// samples are written all along, then back on other ports behind the same address: every
/// line, span and sample arrives exactly once, each series' samples in order (the receiver,
/// like Prometheus, refuses a sample older than its series' newest), and no write waited on
/// the forwarders.
#[test]
fn a_two_minute_receiver_outage_under_load_loses_nothing() {
    use e2e::series::{v1_request, v1_series, V1};
    const SERIES: usize = 10;
    const LINES: usize = 20;
    const SPANS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    // Out-of-order samples refused, as Prometheus does (the window is positive, samples are
    // a second apart): a sample sent out of order would be missing.
    let receiver_config = dir.path().join("receiver.yml");
    std::fs::write(&receiver_config, "storage:\n  out_of_order_window: 1ms\n").unwrap();
    let receiver_args = ["--config", receiver_config.to_str().unwrap()];
    let receiver_data = dir.path().join("receiver");
    let mut receiver = Novamon::start(&receiver_data, &receiver_args);
    let proxy = Proxy::start();
    proxy.point_at(Some(&receiver.url));
    let base = proxy.url();
    let sender_dir = dir.path().join("sender");
    std::fs::create_dir_all(&sender_dir).unwrap();
    let config = sender_dir.join("novamon.yml");
    std::fs::write(
        &config,
        format!(
            "remote_write:\n  - {{name: out, url: '{base}/api/v1/write', queue_config: {QUICK}}}\nforward:\n  logs:\n    - {{name: loki, protocol: loki, url: '{base}/loki/api/v1/push', queue_config: {QUICK}}}\n  traces:\n    - {{name: tempo, protocol: otlp_http, url: '{base}/v1/traces', queue_config: {QUICK}}}\n"
        ),
    )
    .unwrap();
    let n = Novamon::start(
        &sender_dir.join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let t0_ns = now_ns() - 600_000_000_000;
    let t0_ms = t0_ns / 1_000_000 / 1000 * 1000;
    let trace = "5b8efff798038103d269b633813fc60c";
    let mut step = 0usize;
    let mut write_step = |n: &Novamon| {
        let start = Instant::now();
        push_lines(n, "load", "prod", step * LINES..(step + 1) * LINES, t0_ns);
        post_spans(n, "load", trace, step * SPANS..(step + 1) * SPANS);
        let t = t0_ms + step as i64 * 1000;
        let series = (0..SERIES)
            .map(|i| {
                let i_s = i.to_string();
                v1_series(
                    &[("__name__", "fwd_load"), ("i", &i_s)],
                    &[(t, (t + i as i64) as f64)],
                )
            })
            .collect();
        let (status, body, _) = n.remote_write(&v1_request(series), V1);
        assert_eq!(status, 204, "{body}");
        step += 1;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a write took {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500).saturating_sub(start.elapsed()));
    };
    let phase = |d: Duration, write_step: &mut dyn FnMut(&Novamon)| {
        let start = Instant::now();
        while start.elapsed() < d {
            write_step(&n);
        }
    };
    phase(Duration::from_secs(5), &mut write_step);
    receiver
        .process
        .signal_and_wait("TERM", Duration::from_secs(30));
    proxy.point_at(None);
    phase(Duration::from_secs(120), &mut write_step);
    for (name, dest) in [
        ("prometheus_remote_storage_samples_retried_total", "out"),
        ("novamon_forward_items_retried_total", "loki"),
        ("novamon_forward_items_retried_total", "tempo"),
    ] {
        let retried = n.forward_counter(name, dest);
        assert!(retried > 0.0, "{name} {dest}: no retries during the outage");
    }
    let receiver2 = Novamon::start(&receiver_data, &receiver_args);
    proxy.point_at(Some(&receiver2.url));
    receiver = receiver2;
    phase(Duration::from_secs(5), &mut write_step);
    let steps = step;

    wait_lines(
        &receiver,
        &n,
        r#"{app="load"}"#,
        t0_ns,
        &lines("load", 0..steps * LINES),
    );
    wait_spans(&receiver, &n, trace, steps * SPANS);
    let want: std::collections::BTreeMap<String, Vec<(i64, f64)>> = (0..SERIES)
        .map(|i| {
            let points = (0..steps as i64)
                .map(|s| {
                    let t = t0_ms + s * 1000;
                    (t, (t + i as i64) as f64)
                })
                .collect();
            (i.to_string(), points)
        })
        .collect();
    let mut got = Default::default();
    wait_until(Duration::from_secs(60), || {
        got = samples(&receiver, "fwd_load");
        got == want
    })
    .unwrap_or_else(|| {
        let held: usize = got.values().map(Vec::len).sum();
        panic!(
            "{held} samples of {} held\n{}",
            SERIES * steps,
            n.process.log()
        )
    });
    for name in [
        "novamon_forward_items_failed_total",
        "novamon_forward_items_dropped_total",
    ] {
        for dest in ["loki", "tempo"] {
            assert_eq!(n.forward_counter(name, dest), 0.0, "{name} {dest}");
        }
    }
    // No `samples_failed` check: at least once, samples the receiver already holds may be
    // sent again after the outage; this receiver refuses them one by one and the queue counts
    // them failed (its per-sample refusals). Nothing is missing above.
}
