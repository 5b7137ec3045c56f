//! Differential check of the PromQL engine against the real Prometheus (Debian's 2.42): the
//! same realistic hour of data is remote-written into both, then a broad set of instant and
//! range queries must give the same series (labels exactly) and values (1e-9 relative,
//! NaN = NaN). Every query states what it is for: data (both sides must return some, so two
//! empty answers or two errors never pass for agreement), nothing ([`EMPTY`]: both must
//! succeed with no series) or an error ([`WRONG`]: both must refuse it the same way).
//!
//! Deliberate differences kept out of the comparison: Prometheus 2.42 closes range windows
//! `[t-r, t]` where Prometheus 3 (and novamon) use `(t-r, t]`, so every evaluation time is off
//! the 15s sample grid, where both agree; functions 2.42 lacks or names differently
//! (`mad_over_time`, `double_exponential_smoothing`, `sort_by_label`, `limitk`) are not queried.

use std::process::Command;
use std::time::SystemTime;

use e2e::series::{v1_request, v1_series, V1};
use e2e::{agent, enc, get_json, wait_for_go_ready_url, Json, Novamon, Process};

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 240; // one hour

/// Small deterministic PRNG so both stores get identical data every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Series {
    labels: Vec<(String, String)>,
    value: f64,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter { rate: f64 },
    Gauge { mid: f64, spread: f64 },
    Bucket { rate: f64 },
    Up,
}

fn dataset() -> Vec<Series> {
    let mut out = vec![];
    let mut s = |name: &str, labels: &[(&str, String)], kind: Kind| {
        let mut l = vec![("__name__".to_owned(), name.to_owned())];
        l.extend(labels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        l.sort();
        out.push(Series {
            labels: l,
            value: 0.0,
            kind,
        });
    };
    for i in 0..10 {
        let inst = format!("host-{i}:9100");
        let job = if i < 6 { "node" } else { "edge" }.to_owned();
        s(
            "up",
            &[("instance", inst.clone()), ("job", job.clone())],
            Kind::Up,
        );
        for method in ["GET", "POST"] {
            for code in ["200", "500"] {
                let rate = if code == "200" { 20.0 } else { 0.5 } * (1.0 + i as f64 / 10.0);
                s(
                    "http_requests_total",
                    &[
                        ("instance", inst.clone()),
                        ("job", job.clone()),
                        ("method", method.into()),
                        ("code", code.into()),
                    ],
                    Kind::Counter { rate },
                );
            }
        }
        for cpu in 0..4 {
            for mode in ["idle", "user", "system"] {
                let rate = match mode {
                    "idle" => 0.8,
                    "user" => 0.15,
                    _ => 0.05,
                };
                s(
                    "node_cpu_seconds_total",
                    &[
                        ("instance", inst.clone()),
                        ("job", job.clone()),
                        ("cpu", cpu.to_string()),
                        ("mode", mode.into()),
                    ],
                    Kind::Counter { rate },
                );
            }
        }
        s(
            "node_memory_usage_bytes",
            &[("instance", inst.clone()), ("job", job.clone())],
            Kind::Gauge {
                mid: 4e9,
                spread: 1e9,
            },
        );
        for sensor in ["a", "b"] {
            s(
                "temperature_celsius",
                &[("instance", inst.clone()), ("sensor", sensor.into())],
                Kind::Gauge {
                    mid: 5.0,
                    spread: 20.0,
                },
            );
        }
        for (j, le) in ["0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
            .iter()
            .enumerate()
        {
            s(
                "request_duration_seconds_bucket",
                &[
                    ("instance", inst.clone()),
                    ("job", job.clone()),
                    ("le", (*le).into()),
                ],
                Kind::Bucket {
                    rate: 2.0 * (j + 1) as f64,
                },
            );
        }
        s(
            "request_duration_seconds_count",
            &[("instance", inst.clone()), ("job", job.clone())],
            Kind::Bucket { rate: 12.0 },
        );
        s(
            "request_duration_seconds_sum",
            &[("instance", inst.clone()), ("job", job.clone())],
            Kind::Counter { rate: 4.0 },
        );
    }
    out
}

fn advance(s: &mut Series, rng: &mut Rng, step: i64) -> f64 {
    s.value = match s.kind {
        Kind::Counter { rate } => {
            if rng.next() < 0.003 {
                0.0 // a counter reset
            } else {
                s.value + (rate * 15.0 * rng.next() * 2.0).round()
            }
        }
        Kind::Bucket { rate } => s.value + (rate * 15.0).round(),
        Kind::Gauge { mid, spread } => {
            mid + spread * ((step as f64 / 20.0).sin() + rng.next() - 0.5)
        }
        Kind::Up => {
            if rng.next() < 0.05 {
                0.0
            } else {
                1.0
            }
        }
    };
    s.value
}

/// Queries whose right answer is no data: both sides must succeed with an empty result.
const EMPTY: &[&str] = &[
    "absent(up)",
    "absent_over_time(node_memory_usage_bytes[2m])",
    "absent_over_time(temperature_celsius[10m])",
    "up{job=\"nowhere\"}",
    "temperature_celsius > 1000",
];

/// Wrong queries: both sides must refuse them with the same `errorType`.
const WRONG: &[&str] = &[
    "sum(",
    "rate(up)",
    "histogram_quantile(0.5)",
    "{job=~\".*\"}",
    // Many-to-many matching, an execution error.
    "http_requests_total + on (instance) node_cpu_seconds_total",
];

/// What a query is meant to answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Data,
    Empty,
    Error,
}

fn queries() -> Vec<(String, Expect)> {
    let mut q: Vec<(String, Expect)> = data_queries()
        .into_iter()
        .map(|q| (q, Expect::Data))
        .collect();
    q.extend(EMPTY.iter().map(|e| (e.to_string(), Expect::Empty)));
    q.extend(WRONG.iter().map(|e| (e.to_string(), Expect::Error)));
    q
}

/// Queries that must return data on both sides.
fn data_queries() -> Vec<String> {
    let mut q: Vec<String> = vec![];
    let sels = [
        "http_requests_total",
        r#"node_cpu_seconds_total{mode="idle"}"#,
        r#"http_requests_total{code=~"5..",method!="POST"}"#,
    ];
    for f in [
        "rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes",
    ] {
        for sel in &sels[..2] {
            for r in ["1m", "5m"] {
                q.push(format!("{f}({sel}[{r}])"));
            }
        }
    }
    for f in [
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "present_over_time",
        "stddev_over_time",
        "stdvar_over_time",
    ] {
        for sel in ["node_memory_usage_bytes", "temperature_celsius"] {
            for r in ["2m", "10m"] {
                q.push(format!("{f}({sel}[{r}])"));
            }
        }
    }
    for phi in ["0", "0.5", "0.99", "1"] {
        q.push(format!(
            "quantile_over_time({phi}, temperature_celsius[10m])"
        ));
    }
    q.push("predict_linear(node_memory_usage_bytes[10m], 3600)".into());
    q.push("deriv(node_memory_usage_bytes[5m])".into());
    for agg in [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ] {
        q.push(format!("{agg}(rate(http_requests_total[5m]))"));
        q.push(format!("{agg} by (job) (rate(http_requests_total[5m]))"));
        q.push(format!(
            "{agg} without (instance, cpu) (rate(node_cpu_seconds_total[5m]))"
        ));
    }
    for k in ["1", "3"] {
        q.push(format!("topk({k}, rate(http_requests_total[5m]))"));
        q.push(format!("bottomk({k}, node_memory_usage_bytes)"));
        q.push(format!("topk by (job) ({k}, temperature_celsius)"));
    }
    for phi in ["0.1", "0.5", "0.9"] {
        q.push(format!("quantile({phi}, temperature_celsius)"));
        q.push(format!("quantile by (sensor) ({phi}, temperature_celsius)"));
    }
    q.push("count_values(\"value\", up)".into());
    q.push("count_values by (job) (\"v\", up)".into());
    for phi in ["0.5", "0.9", "0.99"] {
        q.push(format!(
            "histogram_quantile({phi}, rate(request_duration_seconds_bucket[5m]))"
        ));
        q.push(format!(
            "histogram_quantile({phi}, sum by (le) (rate(request_duration_seconds_bucket[5m])))"
        ));
        q.push(format!("histogram_quantile({phi}, sum by (job, le) (rate(request_duration_seconds_bucket[5m])))"));
    }
    for op in ["+", "-", "*", "/", "%", "^"] {
        q.push(format!("node_memory_usage_bytes {op} 3"));
        q.push(format!("2 {op} temperature_celsius"));
    }
    for op in ["==", "!=", ">", "<", ">=", "<="] {
        q.push(format!("temperature_celsius {op} bool 5"));
        // All temperatures swing together, so at some times none is above (or below) any
        // fixed threshold; the mean and the maximum always have series on their sides.
        let rhs = if op == "==" { "max" } else { "avg" };
        q.push(format!(
            "temperature_celsius {op} scalar({rhs}(temperature_celsius))"
        ));
    }
    q.push("node_memory_usage_bytes > 1e9".into());
    q.push("temperature_celsius != 5".into());
    q.extend(
        [
            "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
            "sum by (instance) (rate(http_requests_total{code=\"500\"}[5m])) / sum by (instance) (rate(http_requests_total[5m]))",
            "rate(http_requests_total[5m]) / on (instance, job) group_left sum by (instance, job) (rate(http_requests_total[5m]))",
            "sum by (instance, job) (rate(http_requests_total[5m])) / ignoring (mode) group_right sum by (instance, job, mode) (rate(node_cpu_seconds_total[5m]))",
            "node_memory_usage_bytes and on (instance) up == 1",
            "node_memory_usage_bytes unless on (instance) up == 0",
            "up == 0 or node_memory_usage_bytes",
            "temperature_celsius > scalar(min(temperature_celsius)) and temperature_celsius < scalar(max(temperature_celsius))",
            "1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m]))",
            "-temperature_celsius",
            "+node_memory_usage_bytes",
            "abs(temperature_celsius)", "ceil(temperature_celsius)", "floor(temperature_celsius)", "round(temperature_celsius)",
            "round(temperature_celsius, 0.5)", "sqrt(node_memory_usage_bytes)", "exp(temperature_celsius / 10)",
            "ln(node_memory_usage_bytes)", "log2(node_memory_usage_bytes)", "log10(node_memory_usage_bytes)",
            "sgn(temperature_celsius)", "clamp(temperature_celsius, -5, 5)", "clamp_min(temperature_celsius, 0)",
            "clamp_max(temperature_celsius, 0)", "sin(temperature_celsius)", "cos(temperature_celsius)", "tan(temperature_celsius)",
            "asin(clamp(temperature_celsius / 30, -1, 1))", "acos(clamp(temperature_celsius / 30, -1, 1))", "atan(temperature_celsius)",
            "sinh(temperature_celsius / 10)", "cosh(temperature_celsius / 10)", "tanh(temperature_celsius)", "deg(temperature_celsius)",
            "rad(temperature_celsius)", "pi()", "timestamp(up)", "time()", "vector(1)", "scalar(sum(up))",
            "scalar(up)", "sum(up) * on() group_left vector(2)",
            "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
            "label_join(up, \"both\", \"/\", \"job\", \"instance\")",
            "absent(nonexistent_metric)", "absent(nonexistent{job=\"x\"})",
            "absent_over_time(nonexistent_metric[5m])", "absent_over_time(nonexistent{job=\"x\"}[5m])",
            "sum(node_memory_usage_bytes offset 10m)", "rate(http_requests_total[5m] offset 5m)",
            "max_over_time(rate(http_requests_total[1m])[10m:1m])", "avg_over_time(temperature_celsius[10m:30s])",
            "min_over_time(sum(temperature_celsius)[5m:])", "count(count by (job) (up))",
            "sum(rate(node_cpu_seconds_total[5m])) by (mode)", "avg(temperature_celsius) by (sensor) > scalar(avg(temperature_celsius))",
            "up{job=\"node\"}", "up{job=~\"no.*\"}", "up{job!~\"no.*\"}", "{__name__=~\"up|node_memory_usage_bytes\", instance=\"host-1:9100\"}",
            "temperature_celsius{sensor=\"a\"} - ignoring(sensor) temperature_celsius{sensor=\"b\"}",
            "temperature_celsius{sensor=\"a\"} > bool on(instance) temperature_celsius{sensor=\"b\"}",
            "sort(temperature_celsius)", "sort_desc(node_memory_usage_bytes)",
            "day_of_month(vector(1700000000))", "hour(timestamp(up))", "minute()", "days_in_month(vector(1700000000))",
            "year()", "month()", "day_of_week()", "day_of_year()",
        ]
        .map(String::from),
    );
    q
}

fn close(a: &Json, b: &Json) -> bool {
    let (a, b) = (a.as_str().unwrap_or(""), b.as_str().unwrap_or(""));
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => false,
    }
}

/// Whether a successful response holds anything: a non-empty vector or matrix, or a scalar
/// or string.
fn has_data(r: &Json) -> bool {
    let result = &r["data"]["result"];
    result
        .as_array()
        .map_or(!result.is_null(), |a| !a.is_empty())
}

/// Checks both responses against what the query is meant to answer, then (for data) against
/// each other; returns a description of the first problem.
fn check(expect: Expect, prom: &Json, ours: &Json, ordered: bool) -> Option<String> {
    let sides = [("prometheus", prom), ("novamon", ours)];
    for (who, r) in sides {
        let ok = r["status"] == "success";
        let problem = match expect {
            Expect::Data if !ok => "refused a query meant to return data",
            Expect::Data if !has_data(r) => "returned no data for a query meant to return some",
            Expect::Empty if !ok => "refused a query meant to return nothing",
            Expect::Empty if has_data(r) => "returned data for a query meant to return nothing",
            Expect::Error if ok => "accepted a query meant to be refused",
            _ => continue,
        };
        return Some(format!("{who} {problem}: {r}"));
    }
    match expect {
        Expect::Data => diff(prom, ours, ordered),
        Expect::Empty => None,
        Expect::Error => (prom["errorType"] != ours["errorType"]).then(|| {
            format!(
                "errorType: prometheus {} vs novamon {}",
                prom["errorType"], ours["errorType"]
            )
        }),
    }
}

/// Compares two query responses; returns a description of the first difference.
fn diff(prom: &Json, ours: &Json, ordered: bool) -> Option<String> {
    if prom["status"] != ours["status"] {
        return Some(format!("status: prometheus {prom} vs novamon {ours}"));
    }
    let (pd, od) = (&prom["data"], &ours["data"]);
    if pd["resultType"] != od["resultType"] {
        return Some(format!(
            "resultType {} vs {}",
            pd["resultType"], od["resultType"]
        ));
    }
    let list = |d: &Json| -> Vec<Json> {
        match d["result"].as_array() {
            Some(a) => {
                let mut a = a.clone();
                if !ordered {
                    a.sort_by_key(|s| s["metric"].to_string());
                }
                a
            }
            None => vec![d["result"].clone()],
        }
    };
    let (pl, ol) = (list(pd), list(od));
    if pl.len() != ol.len() {
        return Some(format!(
            "{} series vs {}:\nprometheus {}\nnovamon {}",
            pl.len(),
            ol.len(),
            pd["result"],
            od["result"]
        ));
    }
    for (p, o) in pl.iter().zip(&ol) {
        if p["metric"] != o["metric"] {
            return Some(format!("labels {} vs {}", p["metric"], o["metric"]));
        }
        let points = |s: &Json| -> Vec<Json> {
            if let Some(v) = s.get("values") {
                v.as_array().cloned().unwrap_or_default()
            } else if let Some(v) = s.get("value") {
                vec![v.clone()]
            } else {
                vec![s.clone()]
            }
        };
        let (pp, op) = (points(p), points(o));
        if pp.len() != op.len() {
            return Some(format!(
                "{}: {} points vs {}",
                p["metric"],
                pp.len(),
                op.len()
            ));
        }
        for (x, y) in pp.iter().zip(&op) {
            if x[0] != y[0] || !close(&x[1], &y[1]) {
                return Some(format!("{}: point {x} vs {y}", p["metric"]));
            }
        }
    }
    None
}

#[test]
fn queries_answer_like_prometheus() {
    assert!(
        std::path::Path::new("/usr/bin/prometheus").exists(),
        "the prometheus package is required"
    );
    let dir = tempfile::tempdir().unwrap();
    let novamon = Novamon::start(&dir.path().join("novamon"), &[]);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global: {}\n").unwrap();
    let mut prom_process = Process::spawn(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--web.enable-remote-write-receiver"),
        dir.path().join("prometheus.log"),
    );
    let prom = wait_for_go_ready_url(&mut prom_process);
    let a = agent();

    // The hour ends a minute ago, on a 15s grid shifted 3.7s off whole minutes so that
    // subquery steps (aligned to absolute time) fall between samples too. Both stores get the
    // same requests in time order (Prometheus refuses samples far older than its head).
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let end = (now - 60_000) / STEP_MS * STEP_MS + 3_700;
    let start = end - (POINTS - 1) * STEP_MS;
    let mut data = dataset();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for chunk in 0..POINTS / 8 {
        let steps: Vec<i64> = (chunk * 8..chunk * 8 + 8).collect();
        let series = data
            .iter_mut()
            .map(|s| {
                let samples: Vec<(i64, f64)> = steps
                    .iter()
                    .map(|&i| (start + i * STEP_MS, advance(s, &mut rng, i)))
                    .collect();
                let labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                v1_series(&labels, &samples)
            })
            .collect();
        let body = v1_request(series);
        for url in [&prom, &novamon.url] {
            let compressed = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            let mut resp = a
                .post(format!("{url}/api/v1/write"))
                .header("Content-Type", V1)
                .header("Content-Encoding", "snappy")
                .send(&compressed[..])
                .unwrap();
            let status = resp.status().as_u16();
            assert!(
                (200..300).contains(&status),
                "{url}: {status} {}",
                resp.body_mut().read_to_string().unwrap_or_default()
            );
        }
    }

    let qs = queries();
    assert!(qs.len() >= 150, "only {} queries", qs.len());
    // Off the sample grid, so closed and left-open windows hold the same samples.
    let at = [
        start + 30 * 60_000 + 7_300,
        end - 2_900,
        start + 11 * 60_000 + 1_100,
    ];
    let (rstart, rend, rstep) = (start + 20 * 60_000 + 3_700, end - 4_000, 61_000);
    let mut failures = vec![];
    for (q, expect) in &qs {
        let expect = *expect;
        let ordered = q.starts_with("sort");
        for t in at {
            let path = format!("/api/v1/query?query={}&time={}", enc(q), t as f64 / 1000.0);
            let (_, p) = get_json(&a, &format!("{prom}{path}"));
            let (_, o) = novamon.get_json(&path);
            if let Some(d) = check(expect, &p, &o, ordered) {
                failures.push(format!("instant {q} @{t}: {d}"));
            }
        }
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            enc(q),
            rstart as f64 / 1000.0,
            rend as f64 / 1000.0,
            rstep as f64 / 1000.0
        );
        let (_, p) = get_json(&a, &format!("{prom}{path}"));
        let (_, o) = novamon.get_json(&path);
        if let Some(d) = check(expect, &p, &o, false) {
            failures.push(format!("range {q}: {d}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries differ from Prometheus:\n{}",
        failures.len(),
        qs.len(),
        failures
            .iter()
            .map(|f| f.chars().take(600).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
