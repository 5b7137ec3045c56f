//! deploy/ against the real binary: every Grafana dashboard query (template variables resolved
//! the way Grafana resolves them) answers with data from a novamon holding the documented
//! NovaCron metrics and logs; the provisioned data sources point at paths novamon serves; the
//! compose file, Dockerfile and provisioning files agree with each other; the example config
//! is valid and shows every option with its real default.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use e2e::series::{v1_request, v1_series, V1};
use e2e::{enc, novamon_bin, Json, Novamon};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(rel: &str) -> String {
    let p = deploy_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(rel: &str) -> Json {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// What a dashboard is opened with: the last hour, and the intervals Grafana derives from it
/// for the data sources' 15s `timeInterval` (a panel of ~1000px over 1h asks for less than
/// 15s, so the minimum wins; `$__rate_interval` is then four scrape intervals).
const RANGE_S: i64 = 3600;
const STEP_S: i64 = 15;
const BUILTINS: [(&str, &str); 7] = [
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__rate_interval", "1m"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
    ("__auto", "15s"),
];

// ---------------------------------------------------------------------------------------------
// The NovaCron metrics the dashboards and rules expect (deploy/README.md lists them).

const SAMPLE_EVERY_MS: i64 = 15_000;
const HOSTS: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Series of one hour at a 15s interval, built up and then remote-written in one request.
struct Synthetic {
    times: Vec<i64>,
    series: Vec<ingest::remote_write::proto::v1::TimeSeries>,
}

impl Synthetic {
    fn new(start_ms: i64, end_ms: i64) -> Synthetic {
        Synthetic {
            times: (start_ms..=end_ms)
                .step_by(SAMPLE_EVERY_MS as usize)
                .collect(),
            series: Vec::new(),
        }
    }

    /// One series with `job="novacron"`; `f` maps seconds since the start to the value.
    fn add(&mut self, name: &str, labels: &[(&str, &str)], f: impl Fn(f64) -> f64) {
        let mut all: Vec<(&str, &str)> = vec![("__name__", name), ("job", "novacron")];
        all.extend_from_slice(labels);
        all.sort();
        let t0 = self.times[0];
        let samples: Vec<(i64, f64)> = self
            .times
            .iter()
            .map(|&t| (t, f((t - t0) as f64 / 1000.0)))
            .collect();
        self.series.push(v1_series(&all, &samples));
    }

    fn gauge(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, labels, |_| v);
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)], per_s: f64) {
        self.add(name, labels, |s| per_s * s);
    }

    /// A classic histogram whose observations are spread exponentially around `median`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], per_s: f64, median: f64) {
        for le in [
            "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "30", "120", "+Inf",
        ] {
            let bound: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("bucket bound")
            };
            let below = 1.0 - 0.5f64.powf(bound / median);
            let mut l = labels.to_vec();
            l.push(("le", le));
            self.counter(&format!("{name}_bucket"), &l, per_s * below);
        }
        self.counter(&format!("{name}_sum"), labels, per_s * median);
        self.counter(&format!("{name}_count"), labels, per_s);
    }
}

fn novacron_metrics(start_ms: i64, end_ms: i64) -> Synthetic {
    let mut d = Synthetic::new(start_ms, end_ms);
    let minutes_left = |s: f64| (end_ms - start_ms) as f64 / 60_000.0 - s / 60.0;

    // System health and SLA.
    let services = [
        ("api", "node-1"),
        ("auth", "node-1"),
        ("scheduler", "node-2"),
        ("migration-controller", "node-3"),
        ("storage-agent", "node-1"),
        ("storage-agent", "node-2"),
        ("network-agent", "node-2"),
        ("network-agent", "node-3"),
    ];
    for h in HOSTS {
        d.gauge("up", &[("instance", h)], 1.0);
    }
    for (svc, h) in services {
        if (svc, h) == ("network-agent", "node-3") {
            // Down for the last 20 minutes.
            d.add(
                "novacron_service_up",
                &[("instance", h), ("service", svc)],
                move |s| if minutes_left(s) < 20.0 { 0.0 } else { 1.0 },
            );
        } else {
            d.gauge(
                "novacron_service_up",
                &[("instance", h), ("service", svc)],
                1.0,
            );
        }
    }
    for (svc, target) in [
        ("api", 0.999),
        ("auth", 0.999),
        ("scheduler", 0.995),
        ("migration-controller", 0.995),
        ("storage-agent", 0.995),
        ("network-agent", 0.995),
    ] {
        d.gauge(
            "novacron_sla_target_ratio",
            &[("instance", "node-1"), ("service", svc)],
            target,
        );
    }
    for svc in ["api", "auth"] {
        for (method, code, rate) in [
            ("GET", "200", 40.0),
            ("POST", "201", 5.0),
            ("GET", "404", 1.0),
            ("POST", "500", 0.05),
        ] {
            d.counter(
                "novacron_api_requests_total",
                &[
                    ("instance", "node-1"),
                    ("service", svc),
                    ("method", method),
                    ("code", code),
                ],
                rate,
            );
        }
        d.histogram(
            "novacron_api_request_duration_seconds",
            &[("instance", "node-1"), ("service", svc)],
            46.0,
            0.04,
        );
    }

    // VMs.
    let vms = [
        ("vm-101", "node-1", "running", "tenant-a", 4.0),
        ("vm-102", "node-1", "running", "tenant-b", 2.0),
        ("vm-201", "node-2", "running", "tenant-a", 8.0),
        ("vm-202", "node-2", "stopped", "tenant-b", 2.0),
        ("vm-301", "node-3", "running", "tenant-c", 4.0),
    ];
    for (i, (vm, h, state, tenant, vcpus)) in vms.into_iter().enumerate() {
        let hv = [("instance", h), ("vm", vm)];
        d.gauge(
            "novacron_vm_info",
            &[
                ("instance", h),
                ("vm", vm),
                ("state", state),
                ("tenant", tenant),
            ],
            1.0,
        );
        d.gauge("novacron_vm_vcpus", &hv, vcpus);
        if state != "running" {
            continue;
        }
        let phase = i as f64;
        d.add("novacron_vm_cpu_usage_ratio", &hv, move |s| {
            0.35 + 0.25 * (s / 300.0 + phase).sin()
        });
        d.gauge("novacron_vm_memory_total_bytes", &hv, vcpus * 2e9);
        d.add("novacron_vm_memory_used_bytes", &hv, move |s| {
            vcpus * 1.2e9 + 1e5 * s
        });
        let hvd = [("instance", h), ("vm", vm), ("device", "vda")];
        d.counter("novacron_vm_disk_read_bytes_total", &hvd, 4e6);
        d.counter("novacron_vm_disk_write_bytes_total", &hvd, 2e6);
        let hvi = [("instance", h), ("vm", vm), ("interface", "eth0")];
        d.counter("novacron_vm_network_receive_bytes_total", &hvi, 1.5e6);
        d.counter("novacron_vm_network_transmit_bytes_total", &hvi, 0.8e6);
    }
    for h in HOSTS {
        for op in ["create", "start", "stop", "delete", "snapshot"] {
            for (result, rate) in [("success", 0.05), ("failure", 0.002)] {
                d.counter(
                    "novacron_vm_operations_total",
                    &[("instance", h), ("operation", op), ("result", result)],
                    rate,
                );
            }
            d.histogram(
                "novacron_vm_operation_duration_seconds",
                &[("instance", h), ("operation", op)],
                0.052,
                4.0,
            );
        }
    }

    // Storage: pools fill at different speeds.
    for (h, pool, cap, used, growth) in [
        ("node-1", "ssd-1", 2e12, 1.2e12, 2e6),
        ("node-1", "hdd-1", 8e12, 3e12, 1e6),
        ("node-2", "ssd-2", 2e12, 1.7e12, 5e6),
        ("node-3", "ceph", 3e13, 1.1e13, 3e7),
    ] {
        let hp = [("instance", h), ("pool", pool)];
        d.gauge("novacron_storage_pool_capacity_bytes", &hp, cap);
        d.add("novacron_storage_pool_used_bytes", &hp, move |s| {
            used + growth * s
        });
        d.gauge("novacron_storage_replication_lag_seconds", &hp, 0.4);
        for (state, n) in [
            ("active", 40.0),
            ("degraded", if pool == "ceph" { 1.0 } else { 0.0 }),
        ] {
            d.gauge(
                "novacron_storage_volumes",
                &[("instance", h), ("pool", pool), ("state", state)],
                n,
            );
        }
        for (op, iops) in [("read", 800.0), ("write", 300.0)] {
            let l = [("instance", h), ("pool", pool), ("op", op)];
            d.counter("novacron_storage_io_operations_total", &l, iops);
            d.counter("novacron_storage_io_bytes_total", &l, iops * 16384.0);
            d.histogram("novacron_storage_io_latency_seconds", &l, iops, 0.002);
        }
    }

    // Network.
    for h in HOSTS {
        for (iface, bps) in [("eth0", 5e7), ("bond0", 2e8)] {
            let l = [("instance", h), ("interface", iface)];
            d.counter("novacron_network_receive_bytes_total", &l, bps);
            d.counter("novacron_network_transmit_bytes_total", &l, bps * 0.6);
            d.counter("novacron_network_receive_packets_total", &l, bps / 900.0);
            d.counter("novacron_network_transmit_packets_total", &l, bps / 1100.0);
            d.counter("novacron_network_receive_errors_total", &l, 0.01);
            d.counter("novacron_network_transmit_errors_total", &l, 0.002);
            d.counter("novacron_network_receive_drops_total", &l, 0.1);
        }
        for peer in HOSTS.iter().filter(|p| **p != h) {
            d.gauge(
                "novacron_network_peer_rtt_seconds",
                &[("instance", h), ("peer", peer)],
                0.0004,
            );
        }
        d.gauge(
            "novacron_network_overlay_tunnels",
            &[("instance", h), ("state", "up")],
            12.0,
        );
        d.gauge(
            "novacron_network_overlay_tunnels",
            &[("instance", h), ("state", "down")],
            if h == "node-3" { 1.0 } else { 0.0 },
        );
    }

    // Migrations, by source host.
    for h in HOSTS {
        for ty in ["live", "cold"] {
            let l = [("instance", h), ("type", ty)];
            d.counter("novacron_migration_started_total", &l, 0.01);
            d.counter(
                "novacron_migration_completed_total",
                &[("instance", h), ("type", ty), ("result", "success")],
                0.0095,
            );
            d.counter(
                "novacron_migration_completed_total",
                &[
                    ("instance", h),
                    ("type", ty),
                    ("result", "failure"),
                    ("reason", "timeout"),
                ],
                0.0005,
            );
            d.gauge("novacron_migration_in_progress", &l, 1.0);
            d.histogram("novacron_migration_duration_seconds", &l, 0.01, 40.0);
            d.counter("novacron_migration_transferred_bytes_total", &l, 3e7);
            if ty == "live" {
                d.histogram("novacron_migration_downtime_seconds", &l, 0.01, 0.08);
            }
        }
    }

    // Security.
    let cert_expiry = (end_ms / 1000 + 20 * 86_400) as f64;
    for h in HOSTS {
        for method in ["password", "token"] {
            for (result, rate) in [("success", 0.5), ("failure", 0.02)] {
                d.counter(
                    "novacron_security_auth_attempts_total",
                    &[("instance", h), ("method", method), ("result", result)],
                    rate,
                );
            }
        }
        for (ty, severity) in [
            ("auth_lockout", "warning"),
            ("privilege_escalation", "critical"),
            ("config_change", "info"),
        ] {
            d.counter(
                "novacron_security_events_total",
                &[("instance", h), ("type", ty), ("severity", severity)],
                0.001,
            );
        }
        for policy in ["network-isolation", "image-signature"] {
            d.counter(
                "novacron_security_policy_violations_total",
                &[("instance", h), ("policy", policy)],
                0.001,
            );
        }
        d.gauge(
            "novacron_security_certificate_expiry_timestamp_seconds",
            &[("instance", h), ("cn", &format!("{h}.novacron.internal"))],
            cert_expiry,
        );
        d.gauge("novacron_security_active_sessions", &[("instance", h)], 7.0);
    }
    d
}

/// The trace id of the `i`th pushed line of novacron-auth.
fn log_trace_id(i: i64) -> String {
    format!("{:032x}", 0xabc000 + i)
}

/// JSON log lines of the security-relevant services over the last half hour, with the trace
/// id as structured metadata as OTLP and Loki clients send it.
fn push_novacron_logs(n: &Novamon, end_s: i64) {
    let mut auth = Vec::new();
    let mut api = Vec::new();
    for i in 0..60i64 {
        let ts = ((end_s - 1800 + i * 30) * 1_000_000_000).to_string();
        let trace = log_trace_id(i);
        let user = ["alice", "bob", "mallory"][(i % 3) as usize];
        let result = if i % 4 == 0 { "failure" } else { "success" };
        let line = serde_json::json!({
            "msg": if result == "failure" { "login failed" } else { "login ok" },
            "user": user, "result": result, "src_ip": format!("10.0.0.{}", i % 5),
        })
        .to_string();
        auth.push(serde_json::json!([ts, line, {"trace_id": trace}]));
        let line = format!(
            "{{\"msg\":\"request denied: unauthorized\",\"path\":\"/v1/vms\",\"user\":\"{user}\"}}"
        );
        api.push(serde_json::json!([ts, line]));
    }
    let body = serde_json::json!({"streams": [
        // As shipped from OTLP (service_name) by a collector that also sets `service`.
        {"stream": {"service": "novacron-auth", "service_name": "novacron-auth", "level": "warn", "host": "node-1"}, "values": auth},
        {"stream": {"service": "novacron-api", "level": "error", "host": "node-2"}, "values": api},
    ]});
    n.loki_push(&body);
    n.wait_for_log_lines(
        r#"{service=~"novacron-.+"}"#,
        (end_s - 3600) * 1_000_000_000,
        Some((end_s + 1) * 1_000_000_000),
        120,
    );
}

// ---------------------------------------------------------------------------------------------
// novamon's own /metrics, scraped into itself as a Prometheus agent would.

/// The samples of a text exposition, each as its labels (`__name__` included) and value.
fn parse_exposition(text: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, mut rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..]),
            None => (series, ""),
        };
        let mut labels = vec![("__name__".to_owned(), name.to_owned())];
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim_start_matches(',').to_owned();
            let mut val = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => val.push('\n'),
                        c => val.push(c),
                    },
                    (i, '"') => break eq + 2 + i + 1,
                    (_, c) => val.push(c),
                }
            };
            labels.push((key, val));
            rest = &rest[end..];
        }
        out.push((labels, value));
    }
    out
}

fn scrape_into_itself(n: &Novamon, t_ms: i64) {
    let text = n
        .agent
        .get(format!("{}/metrics", n.url))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("body");
    let mut series = vec![v1_series(
        &[
            ("__name__", "up"),
            ("instance", "novamon:9090"),
            ("job", "novamon"),
        ],
        &[(t_ms, 1.0)],
    )];
    for (mut labels, v) in parse_exposition(&text) {
        labels.push(("instance".into(), "novamon:9090".into()));
        labels.push(("job".into(), "novamon".into()));
        labels.sort();
        let refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        series.push(v1_series(&refs, &[(t_ms, v)]));
    }
    let (status, body, _) = n.remote_write(&v1_request(series), V1);
    assert_eq!(status, 204, "{body}");
}

/// A server running the example rules every second on an hour of NovaCron metrics and half an
/// hour of NovaCron logs, its built-in Alertmanager notifying a webhook that drops every
/// connection unanswered, and two self-scrapes taken once a notification has failed; also
/// exercises what the self-monitoring dashboard shows (a rejected sample, a refused query).
fn loaded_server() -> (tempfile::TempDir, Novamon, i64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("novamon.yml");
    let rules = deploy_dir().join("rules/*.yml");
    // The webhook: a port of our own (bound to 0, held for the rest of the test process)
    // that closes each connection before answering, so every notification fails.
    let webhook = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook port");
    let webhook_addr = webhook.local_addr().expect("webhook address");
    std::thread::spawn(move || {
        for conn in webhook.incoming() {
            drop(conn);
        }
    });
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [{rules:?}]\nalertmanager:\n  config:\n    route: {{receiver: ops, group_by: [alertname], group_wait: 1s, group_interval: 1s}}\n    receivers:\n      - name: ops\n        webhook_configs: [{{url: 'http://{webhook_addr}/'}}]\n"
        ),
    )
    .unwrap();
    let n = Novamon::start(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let end_s = now_s();
    let data = novacron_metrics((end_s - RANGE_S) * 1000, (end_s - 60) * 1000);
    let (status, body, _) = n.remote_write(&v1_request(data.series), V1);
    assert_eq!(status, 204, "{body}");
    // A sample for an existing timestamp with another value is rejected and counted.
    let dup = v1_series(
        &[
            ("__name__", "up"),
            ("instance", "node-1"),
            ("job", "novacron"),
        ],
        &[((end_s - 60) * 1000, 0.0)],
    );
    let (status, body, _) = n.remote_write(&v1_request(vec![dup]), V1);
    assert_eq!(status, 400, "{body}");
    let (status, _) = n.get_json(&format!("/api/v1/query?query={}", enc("sum(")));
    assert_eq!(status, 400);
    push_novacron_logs(&n, end_s);
    e2e::wait_until(std::time::Duration::from_secs(60), || {
        let text = n
            .agent
            .get(format!("{}/metrics", n.url))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines().any(|l| {
            l.starts_with("alertmanager_notifications_failed_total{") && !l.ends_with(" 0")
        })
    })
    .unwrap_or_else(|| panic!("no failed webhook notification; log:\n{}", n.process.log()));
    scrape_into_itself(&n, (end_s - 45) * 1000);
    scrape_into_itself(&n, (end_s - 30) * 1000);
    (dir, n, end_s)
}

// ---------------------------------------------------------------------------------------------
// Dashboards.

/// Replaces `$name` and `${name}` by the resolved variables and Grafana's built-ins; a `$`
/// not followed by a name (a regex anchor) stays.
fn interpolate(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if len == 0 {
            out.push('$');
            continue;
        }
        let name = &body[..len];
        let value = vars
            .get(name)
            .map(String::as_str)
            .or_else(|| BUILTINS.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
            .ok_or_else(|| format!("undefined variable ${name} in {expr}"))?;
        out.push_str(value);
        rest = &body[len + usize::from(braced)..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value list as Grafana substitutes it into a regex matcher: `(a|b)`, regex-escaped.
fn regex_alternation(values: &[String]) -> String {
    let esc: Vec<String> = values
        .iter()
        .map(|v| {
            let mut e = String::new();
            for c in v.chars() {
                if "\\^$*+?.()|[]{}".contains(c) {
                    e.push_str("\\\\");
                }
                e.push(c);
            }
            e
        })
        .collect();
    format!("({})", esc.join("|"))
}

/// Values of one `label_values(...)` (Prometheus) or label (Loki) variable query.
fn variable_values(
    n: &Novamon,
    var: &Json,
    vars: &BTreeMap<String, String>,
    end_s: i64,
) -> Vec<String> {
    let name = var["name"].as_str().expect("variable name");
    let start = end_s - RANGE_S;
    let uid = var["datasource"]["uid"]
        .as_str()
        .expect("variable data source uid");
    assert!(
        vars.contains_key(uid.trim_start_matches("${").trim_end_matches('}')),
        "variable {name}: data source {uid} is not a variable defined before it"
    );
    let path = match var["datasource"]["type"].as_str() {
        Some("prometheus") => {
            let q = var["query"]["query"]
                .as_str()
                .expect("prometheus variable query");
            let q = interpolate(q, vars).unwrap_or_else(|e| panic!("variable {name}: {e}"));
            let args = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| {
                    panic!("variable {name}: only label_values() is resolved here: {q}")
                });
            match args.rsplit_once(',') {
                Some((sel, label)) => format!(
                    "/api/v1/label/{}/values?match[]={}&start={start}&end={end_s}",
                    label.trim(),
                    enc(sel.trim())
                ),
                None => format!(
                    "/api/v1/label/{}/values?start={start}&end={end_s}",
                    args.trim()
                ),
            }
        }
        Some("loki") => {
            assert_eq!(
                var["query"]["type"], 1,
                "variable {name}: label values query"
            );
            format!(
                "/loki/api/v1/label/{}/values?start={}&end={}",
                var["query"]["label"].as_str().expect("loki variable label"),
                start * 1_000_000_000,
                end_s * 1_000_000_000
            )
        }
        other => panic!("variable {name}: data source {other:?}"),
    };
    let body = n.get_ok(&path);
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("variable {name}: {body}"))
        .iter()
        .map(|v| v.as_str().expect("label value").to_owned())
        .collect()
}

/// The dashboard's variables as Grafana sets them when it is first opened: "All" where
/// offered (its custom all value, else every value as a regex alternation), else the first
/// value; a text box its default.
fn resolve_variables(n: &Novamon, dash: &Json, end_s: i64) -> BTreeMap<String, String> {
    let sources = datasources();
    let mut vars = BTreeMap::new();
    for var in dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        let name = var["name"].as_str().expect("variable name").to_owned();
        let value = match var["type"].as_str() {
            Some("textbox") => var["query"].as_str().expect("textbox default").to_owned(),
            // The provisioned data source of that type.
            Some("datasource") => sources
                .iter()
                .find(|d| d["type"] == var["query"])
                .and_then(|d| d["uid"].as_str())
                .unwrap_or_else(|| panic!("variable {name}: no {} data source", var["query"]))
                .to_owned(),
            Some("query") => {
                let values = variable_values(n, var, &vars, end_s);
                assert!(!values.is_empty(), "variable {name} has no values");
                if var["includeAll"] == true {
                    match var["allValue"].as_str() {
                        Some(all) => all.to_owned(),
                        None => regex_alternation(&values),
                    }
                } else {
                    values[0].clone()
                }
            }
            other => panic!("variable {name}: type {other:?} not resolved here"),
        };
        vars.insert(name, value);
    }
    vars
}

/// Every panel, including those inside (collapsed) rows.
fn panels(dash: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Runs one target the way its data source plugin sends it; returns an error text when the
/// answer is not a success or holds no data.
fn run_target(
    n: &Novamon,
    ds_type: &str,
    target: &Json,
    expr: &str,
    end_s: i64,
) -> Result<(), String> {
    let start = end_s - RANGE_S;
    let mut requests = Vec::new();
    match ds_type {
        "prometheus" => {
            // Grafana's Prometheus data source POSTs forms (httpMethod: POST).
            if target["instant"] == true {
                requests.push((
                    "/api/v1/query".to_owned(),
                    format!("query={}&time={end_s}", enc(expr)),
                ));
            }
            if target["range"] == true || target["instant"] != true {
                requests.push((
                    "/api/v1/query_range".to_owned(),
                    format!(
                        "query={}&start={start}&end={end_s}&step={STEP_S}",
                        enc(expr)
                    ),
                ));
            }
        }
        "loki" => {
            let path = if target["queryType"] == "instant" {
                format!(
                    "/loki/api/v1/query?query={}&time={}",
                    enc(expr),
                    end_s * 1_000_000_000
                )
            } else {
                format!(
                    "/loki/api/v1/query_range?query={}&start={}&end={}&step={STEP_S}&limit=1000&direction=backward",
                    enc(expr),
                    start * 1_000_000_000,
                    end_s * 1_000_000_000
                )
            };
            requests.push((path, String::new()));
        }
        other => return Err(format!("data source type {other} not run here")),
    }
    for (path, form) in requests {
        // Loki answers errors in plain text, so the body is read as text first.
        let (status, text) = if form.is_empty() {
            let mut resp = n
                .agent
                .get(format!("{}{path}", n.url))
                .call()
                .map_err(|e| format!("{path}: {e}"))?;
            (
                resp.status().as_u16(),
                resp.body_mut().read_to_string().unwrap_or_default(),
            )
        } else {
            let (status, text, _) = n.post_raw(
                &path,
                "application/x-www-form-urlencoded",
                &[],
                form.into_bytes(),
            );
            (status, text)
        };
        let body: Json =
            serde_json::from_str(&text).map_err(|_| format!("{path}: {status} {text}"))?;
        if status != 200 || body["status"] != "success" {
            return Err(format!("{path}: {status} {body}"));
        }
        let empty = body["data"]["result"].as_array().is_some_and(Vec::is_empty);
        if empty {
            return Err(format!("{path}: no data"));
        }
    }
    Ok(())
}

#[test]
fn every_dashboard_query_answers_with_data() {
    let (_dir, n, _) = loaded_server();
    // Opened now, after the rules have been evaluating for a while: their ALERTS series start
    // after the synthetic data ends.
    let end_s = now_s();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("grafana/dashboards"))
        .expect("deploy/grafana/dashboards")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    let provisioned = provisioned_uids();
    let mut failures = Vec::new();
    let mut run = 0;
    let mut uids = BTreeSet::new();
    for file in &files {
        let fname = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let dash: Json = serde_json::from_str(&std::fs::read_to_string(file).expect("read"))
            .unwrap_or_else(|e| panic!("{fname}: {e}"));
        assert!(
            uids.insert(dash["uid"].as_str().expect("uid").to_owned()),
            "{fname}: duplicate uid"
        );
        let vars = resolve_variables(&n, &dash, end_s);
        let mut ids = BTreeSet::new();
        for panel in panels(&dash) {
            let title = panel["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(panel["id"].as_i64().expect("panel id")),
                "{fname}: duplicate id at {title}"
            );
            if panel["type"] == "row" {
                continue;
            }
            let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
            assert!(!targets.is_empty(), "{fname}: panel {title} has no query");
            for target in targets {
                let ds = if target["datasource"].is_object() {
                    &target["datasource"]
                } else {
                    &panel["datasource"]
                };
                let uid = interpolate(ds["uid"].as_str().expect("datasource uid"), &vars)
                    .unwrap_or_else(|e| panic!("{fname}: {title}: {e}"));
                assert!(
                    provisioned.contains(&uid),
                    "{fname}: {title}: data source {uid} is not provisioned"
                );
                let raw = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{fname}: {title}: no expr"));
                let result = interpolate(raw, &vars).and_then(|expr| {
                    run_target(&n, ds["type"].as_str().unwrap_or(""), target, &expr, end_s)
                });
                run += 1;
                if let Err(e) = result {
                    failures.push(format!("{fname}: {title}: {raw}\n    {e}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {run} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(run > 80, "only {run} queries found");
}

#[test]
fn variable_substitution_follows_grafana() {
    let vars = BTreeMap::from([("instance".to_owned(), "node-1".to_owned())]);
    assert_eq!(
        interpolate(
            r#"rate(x{instance=~"$instance"}[$__rate_interval]) and ${instance}"#,
            &vars
        )
        .unwrap(),
        r#"rate(x{instance=~"node-1"}[1m]) and node-1"#
    );
    assert_eq!(
        interpolate(r#"{a=~"^x$"} |~ "$""#, &vars).unwrap(),
        r#"{a=~"^x$"} |~ "$""#
    );
    assert!(interpolate("up{a=\"$nope\"}", &vars)
        .unwrap_err()
        .contains("$nope"));
    assert_eq!(
        regex_alternation(&["novacron-api".into(), "a.b".into()]),
        r"(novacron-api|a\\.b)"
    );
}

// ---------------------------------------------------------------------------------------------
// Data sources, compose, Dockerfile.

fn datasources() -> Vec<Json> {
    let ds = yaml("grafana/provisioning/datasources/novamon.yml");
    assert_eq!(ds["apiVersion"], 1);
    ds["datasources"].as_array().expect("datasources").clone()
}

fn provisioned_uids() -> BTreeSet<String> {
    datasources()
        .iter()
        .map(|d| {
            d["uid"]
                .as_str()
                .expect("every data source has a fixed uid")
                .to_owned()
        })
        .collect()
}

/// Every `datasourceUid`/`alertmanagerUid` anywhere below `v`.
fn referenced_uids(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                if k == "datasourceUid" || k == "alertmanagerUid" {
                    out.push(v.as_str().expect("uid string").to_owned());
                }
                referenced_uids(v, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|v| referenced_uids(v, out)),
        _ => {}
    }
}

/// The `$__tags` of a trace-to-metrics link, as Grafana fills it from a span's tags.
fn traces_to_metrics_queries(ds: &Json) -> Vec<String> {
    ds["jsonData"]["tracesToMetrics"]["queries"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|q| {
            q["query"]
                .as_str()
                .expect("query")
                .replace("$$", "$")
                .replace("$__tags", r#"service="api""#)
        })
        .collect()
}

/// The logs query of a trace-to-logs link, as Grafana fills it for a span of service
/// novacron-auth in one of the traces whose log lines `push_novacron_logs` wrote.
fn traces_to_logs_query(ds: &Json) -> Option<String> {
    let link = &ds["jsonData"]["tracesToLogsV2"];
    let query = link["query"].as_str()?;
    assert_eq!(
        link["customQuery"], true,
        "the query is used only when customQuery is set"
    );
    Some(
        query
            .replace("$$", "$")
            .replace("${__tags}", r#"service_name="novacron-auth""#)
            .replace("${__trace.traceId}", &log_trace_id(7)),
    )
}

#[test]
fn provisioned_datasources_answer_grafanas_health_checks() {
    let (_dir, n, end_s) = loaded_server();
    let all = datasources();
    let uids = provisioned_uids();
    assert_eq!(uids.len(), all.len(), "data source uids are not unique");
    for ds in &all {
        let name = ds["name"].as_str().expect("name");
        let mut refs = Vec::new();
        referenced_uids(&ds["jsonData"], &mut refs);
        for r in refs {
            assert!(
                uids.contains(&r),
                "{name} links to {r}, which is not provisioned"
            );
        }
        let url = ds["url"].as_str().expect("url");
        let path = url
            .strip_prefix("http://novamon:9090")
            .unwrap_or_else(|| panic!("{name}: {url} is not the compose service novamon:9090"));
        let base = format!("{}{path}", n.url);
        let get = |p: &str| e2e::get_json(&n.agent, &format!("{base}{p}"));
        match ds["type"].as_str().expect("type") {
            "prometheus" => {
                // "Save & test" runs 1+1; version detection reads buildinfo.
                let body = n.get_ok(&format!(
                    "{path}/api/v1/query?query={}&time={end_s}",
                    enc("1+1")
                ));
                assert_eq!(body["data"]["result"][1], "2", "{name}: {body}");
                let (s, b) = get("/api/v1/status/buildinfo");
                assert!(s == 200 && b["status"] == "success", "{name}: {s} {b}");
                // manageAlerts: Grafana's alert list reads the rules of the example rule files.
                assert_eq!(ds["jsonData"]["manageAlerts"], true, "{name}");
                let (s, b) = get("/api/v1/rules");
                let groups = b["data"]["groups"].as_array().map_or(0, Vec::len);
                assert!(s == 200 && groups == 4, "{name}: {s} {b}");
            }
            "loki" => {
                let (s, b) = get("/loki/api/v1/labels");
                assert!(
                    s == 200
                        && b["data"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|v| v == "service")),
                    "{name}: {s} {b}"
                );
                let (s, b) = get("/loki/api/v1/status/buildinfo");
                assert_eq!(s, 200, "{name}: {b}");
                // "Save & test" runs this instant query and wants the single value 2.
                let body = n.get_ok(&format!(
                    "{path}/loki/api/v1/query?query={}&time={end_s}",
                    enc("vector(1)+vector(1)")
                ));
                assert_eq!(body["data"]["resultType"], "vector", "{name}: {body}");
                assert_eq!(body["data"]["result"][0]["value"][1], "2", "{name}: {body}");
            }
            "tempo" => {
                let resp = n
                    .agent
                    .get(format!("{base}/api/echo"))
                    .call()
                    .expect("GET /api/echo");
                assert_eq!(resp.status(), 200, "{name}: {base}/api/echo");
                let (s, b) = get("/api/status/buildinfo");
                assert_eq!(s, 200, "{name}: {b}");
            }
            "jaeger" => {
                let (s, b) = get("/api/services");
                assert!(s == 200 && b["data"].is_array(), "{name}: {s} {b}");
            }
            "alertmanager" => {
                // Grafana's test for the Prometheus implementation: a Mimir/Cortex path that
                // answers 200 is an error, then the status API must answer.
                assert_eq!(ds["jsonData"]["implementation"], "prometheus", "{name}");
                let resp = n
                    .agent
                    .get(format!("{base}/alertmanager/api/v2/status"))
                    .call()
                    .expect("GET");
                assert_ne!(
                    resp.status(),
                    200,
                    "{name}: looks like Mimir/Cortex to Grafana"
                );
                let (s, b) = get("/api/v2/status");
                assert!(s == 200 && b["versionInfo"].is_object(), "{name}: {s} {b}");
            }
            other => panic!("{name}: no health check known for type {other}"),
        }
        if let Some(q) = traces_to_logs_query(ds) {
            let path = format!(
                "/loki/api/v1/query_range?query={}&start={}&end={}&limit=100",
                enc(&q),
                (end_s - RANGE_S) * 1_000_000_000,
                end_s * 1_000_000_000
            );
            let body = n.get_ok(&path);
            let lines: Vec<&Json> = body["data"]["result"]
                .as_array()
                .expect("streams")
                .iter()
                .flat_map(|s| s["values"].as_array().expect("values"))
                .collect();
            assert_eq!(lines.len(), 1, "{name}: {q}: {body}");
        }
        for q in traces_to_metrics_queries(ds) {
            let body = n.get_ok(&format!("/api/v1/query?query={}&time={end_s}", enc(&q)));
            assert_eq!(body["status"], "success", "{name}: {q}: {body}");
        }
    }
}

/// The four listener ports of the default config, as the example config shows them.
fn default_ports() -> BTreeSet<u16> {
    let ex = yaml("novamon.example.yml");
    [
        &ex["listeners"]["http"],
        &ex["otlp"]["grpc"],
        &ex["otlp"]["http"],
        &ex["logs"]["forward"]["listen"],
    ]
    .iter()
    .map(|a| {
        a.as_str()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("listener address {a}"))
    })
    .collect()
}

#[test]
fn compose_dockerfile_and_provisioning_agree() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];

    // Grafana finds its provisioning where compose mounts it, and the dashboards where the
    // dashboard provider looks.
    let provider = yaml("grafana/provisioning/dashboards/novamon.yml");
    let dash_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    let mounts: BTreeMap<&str, &str> = services["grafana"]["volumes"]
        .as_array()
        .expect("grafana volumes")
        .iter()
        .map(|v| {
            let mut parts = v.as_str().expect("short volume syntax").split(':');
            let source = parts.next().expect("source");
            (parts.next().expect("target"), source)
        })
        .collect();
    for (target, source) in [
        ("/etc/grafana/provisioning", "./grafana/provisioning"),
        (dash_path, "./grafana/dashboards"),
    ] {
        assert_eq!(
            mounts.get(target),
            Some(&source),
            "grafana mounts: {mounts:?}"
        );
        assert!(deploy_dir().join(source).is_dir(), "{source}");
    }
    let image = services["grafana"]["image"]
        .as_str()
        .expect("grafana image");
    let tag = image
        .strip_prefix("grafana/grafana:")
        .expect("official grafana image");
    assert!(
        tag.split('.').count() == 3 && tag.split('.').all(|p| p.parse::<u32>().is_ok()),
        "pin a release, not {image}"
    );

    // novamon is built from the Dockerfile beside the compose file, and both publish exactly
    // the listeners of the default config.
    let build = &services["novamon"]["build"];
    let dockerfile = build["dockerfile"].as_str().expect("build.dockerfile");
    let context = deploy_dir().join(build["context"].as_str().expect("build.context"));
    assert!(
        context.join(dockerfile).is_file(),
        "{}",
        context.join(dockerfile).display()
    );
    assert!(
        context.join("Cargo.lock").is_file(),
        "the build context is the workspace"
    );
    let published: BTreeSet<u16> = services["novamon"]["ports"]
        .as_array()
        .expect("novamon ports")
        .iter()
        .map(|p| {
            let p = p.as_str().expect("port string");
            p.rsplit(':')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("port {p}"))
        })
        .collect();
    assert_eq!(published, default_ports());
    let docker = read("Dockerfile");
    let exposed: BTreeSet<u16> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        })
        .collect();
    assert_eq!(exposed, default_ports());
    // The runtime stage runs as a non-root user and keeps its data in the volume it declares.
    let runtime = docker.rsplit("\nFROM ").next().expect("a runtime stage");
    let user = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("USER in the runtime stage");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    let volume = runtime
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("VOLUME");
    assert!(
        runtime.contains(&format!(
            "--data-dir={}",
            volume.trim_matches(|c| c == '[' || c == ']' || c == '"')
        )),
        "data dir is the volume"
    );
}

// ---------------------------------------------------------------------------------------------
// The example config.

/// Keys the test harness sets by flag; the rest of the effective config is compared.
const OVERRIDDEN: [(&str, &str, &str); 5] = [
    ("storage", "path", "./data"),
    ("listeners", "http", "0.0.0.0:9090"),
    ("otlp", "grpc", "0.0.0.0:4317"),
    ("otlp", "http", "0.0.0.0:4318"),
    ("forward", "listen", "0.0.0.0:24224"),
];

fn effective_config(extra: &[&str]) -> Json {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), extra);
    let body = n.get_ok("/api/v1/status/config");
    let mut cfg: Json =
        serde_yaml::from_str(body["data"]["yaml"].as_str().expect("yaml")).expect("config yaml");
    strip_overridden(&mut cfg, "");
    cfg
}

fn strip_overridden(v: &mut Json, parent: &str) {
    if let Json::Object(m) = v {
        for (section, key, _) in OVERRIDDEN {
            if section == parent {
                m.remove(key);
            }
        }
        for (k, v) in m.iter_mut() {
            strip_overridden(v, k);
        }
        // A section left empty (listeners) has nothing of its own to compare.
        m.retain(|k, v| {
            !(OVERRIDDEN.iter().any(|(s, _, _)| s == k)
                && v.as_object().is_some_and(|o| o.is_empty()))
        });
    }
}

/// Dotted paths of every leaf (scalar, sequence, or empty map) with its value.
fn leaves(v: &Json, prefix: &str, out: &mut Vec<(String, Json)>) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        _ => out.push((prefix.to_owned(), v.clone())),
    }
}

#[test]
fn example_config_is_valid_and_shows_every_option_with_its_default() {
    let example = deploy_dir().join("novamon.example.yml");
    let (code, stderr) = e2e::check_config(&example);
    assert_eq!(code, Some(0), "{stderr}");

    // Loading the example changes nothing: every value it sets is the default. Except the
    // scrape jobs: without a config file novamon scrapes itself; a config file scrapes what
    // it lists (the example: nothing).
    let mut from_example = effective_config(&["--config", example.to_str().expect("utf-8 path")]);
    let mut defaults = effective_config(&[]);
    assert_eq!(
        defaults["scrape_configs"][0]["job_name"], "novamon",
        "{defaults}"
    );
    assert_eq!(from_example["scrape_configs"], serde_json::json!([]));
    for c in [&mut from_example, &mut defaults] {
        c.as_object_mut().unwrap().remove("scrape_configs");
    }
    let (mut got, mut want) = (Vec::new(), Vec::new());
    leaves(&from_example, "", &mut got);
    leaves(&defaults, "", &mut want);
    let differ: Vec<String> = got
        .iter()
        .filter(|g| !want.contains(g))
        .map(|(path, v)| format!("{path}: {v}"))
        .collect();
    assert!(
        differ.is_empty(),
        "the example sets values that are not the defaults: {differ:?}"
    );
    assert_eq!(got.len(), want.len());

    // Every option is in the example: set, or shown commented out when it has no value by
    // default (an optional setting, a Prometheus section novamon does not act on).
    let text = read("novamon.example.yml");
    let parsed: Json = serde_yaml::from_str(&text).expect("example yaml");
    let mut all = Vec::new();
    leaves(&defaults, "", &mut all);
    for (path, value) in all {
        let mut node = &parsed;
        for part in path.split('.') {
            node = &node[part];
        }
        let key = path.rsplit('.').next().expect("key");
        let unset = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if unset && node.is_null() {
            assert!(
                text.contains(&format!("# {key}:")),
                "{path} is neither set nor shown commented out"
            );
        } else {
            assert_eq!(node, &value, "{path}");
        }
    }
    for (section, key, default) in OVERRIDDEN {
        assert!(
            text.contains(&format!("{key}: {default}")),
            "{section}.{key} should show {default}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Example rules.

fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("rules"))
        .expect("deploy/rules")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// Runs `tool args files`; returns stdout, failing the test with all output on a non-zero exit.
fn run_tool(tool: &Path, args: &[&str], files: &[PathBuf]) -> String {
    let out = Command::new(tool)
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (tests/run.sh installs Debian's prometheus package, which has promtool)",
                tool.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?}: {}\n{stdout}{}",
        tool.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn example_rules_pass_the_checks_and_unit_tests_of_promtool_and_novamon() {
    let rules = rule_files();
    assert_eq!(rules.len(), 4, "{rules:?}");
    let mut tests: Vec<PathBuf> = rules
        .iter()
        .map(|r| {
            r.parent()
                .expect("dir")
                .join("tests")
                .join(r.file_name().expect("name"))
        })
        .collect();
    tests.retain(|t| t.is_file());
    assert_eq!(
        tests.len(),
        rules.len(),
        "every rule file has a unit test file"
    );
    for tool in [PathBuf::from("promtool"), novamon_bin()] {
        let out = run_tool(&tool, &["check", "rules"], &rules);
        assert_eq!(
            out.matches("SUCCESS").count(),
            rules.len(),
            "{}: {out}",
            tool.display()
        );
        let out = run_tool(&tool, &["test", "rules"], &tests);
        assert_eq!(
            out.matches("SUCCESS").count(),
            tests.len(),
            "{}: {out}",
            tool.display()
        );
    }
}

#[test]
fn every_rule_expression_evaluates_on_novacron_data() {
    let (_dir, n, end_s) = loaded_server();
    let mut run = 0;
    for file in rule_files() {
        let doc: Json = serde_yaml::from_str(&std::fs::read_to_string(&file).expect("read"))
            .expect("rule yaml");
        for group in doc["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let expr = rule["expr"].as_str().expect("expr");
                let body = n.get_ok(&format!("/api/v1/query?query={}&time={end_s}", enc(expr)));
                assert_eq!(
                    body["status"],
                    "success",
                    "{}: {expr}: {body}",
                    file.display()
                );
                // A recording rule over the documented metrics records something.
                if let Some(record) = rule["record"].as_str() {
                    assert!(
                        body["data"]["result"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty()),
                        "{record} records nothing: {body}"
                    );
                }
                run += 1;
            }
        }
    }
    assert_eq!(run, 22);
}

#[test]
fn example_rules_alert_in_novamon_and_reach_its_alertmanager() {
    let (_dir, n, _) = loaded_server();
    let groups = n.get_ok("/api/v1/rules");
    let names: BTreeSet<&str> = groups["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().expect("group name"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    // On the synthetic data: three hosts with critical security events (no `for`: firing),
    // network-agent on node-3 down (`for: 2m`: pending).
    let alerts = n.get_ok("/api/v1/alerts");
    let active: BTreeSet<(String, String, String)> = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            let l = &a["labels"];
            let s = |v: &Json| v.as_str().unwrap_or("").to_owned();
            (s(&l["alertname"]), s(&l["instance"]), s(&a["state"]))
        })
        .collect();
    for want in [
        ("NovaCronCriticalSecurityEvent", "node-1", "firing"),
        ("NovaCronCriticalSecurityEvent", "node-2", "firing"),
        ("NovaCronCriticalSecurityEvent", "node-3", "firing"),
        ("NovaCronServiceDown", "node-3", "pending"),
    ] {
        let want = (want.0.to_owned(), want.1.to_owned(), want.2.to_owned());
        assert!(active.contains(&want), "{want:?} not in {active:?}");
    }
    let am = n.get_ok("/api/v2/alerts");
    let sent: BTreeSet<&str> = am
        .as_array()
        .expect("alert list")
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().expect("alertname"))
        .collect();
    assert!(sent.contains("NovaCronCriticalSecurityEvent"), "{am}");
    assert!(
        !sent.contains("NovaCronServiceDown"),
        "pending alerts are not sent: {am}"
    );
}
