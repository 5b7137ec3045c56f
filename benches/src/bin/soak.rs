//! Soak: runs novamon for `--minutes` under mixed ingest (remote-write, Loki push, OTLP/HTTP
//! traces, Fluentd forward with acks) and query load (PromQL range queries, LogQL, Tempo
//! search), samples its RSS every 5 s from /proc, and prints what was ingested and queried,
//! errors by kind (limit errors apart from unexpected ones) and the RSS slope after warm-up.
//! Exits non-zero on any unexpected error. Not part of the test suite.
//!
//!   soak --novamon target/release/novamon --minutes 10

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::generator::{node_series, Series};
use novamon_benches::load::encode;
use novamon_benches::peers::Peer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rmpv::Value;

#[derive(Debug, Parser)]
#[command(about = "Run novamon under mixed ingest and query load and watch its memory.")]
struct Args {
    /// The novamon binary (a release build for real figures).
    #[arg(long)]
    novamon: PathBuf,
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// RSS samples before this are warm-up, left out of the slope.
    #[arg(long, default_value_t = 120)]
    warmup_secs: u64,
    /// novamon's HTTP port on loopback (the other listeners take free ports).
    #[arg(long, default_value_t = 19391)]
    port: u16,
    /// Series per remote-write request (one request a second).
    #[arg(long, default_value_t = 2000)]
    series: usize,
    /// A novamon config file to start it with (`--config`), e.g. memtable budgets small
    /// enough to fill within the warm-up.
    #[arg(long)]
    config: Option<PathBuf>,
}

const KINDS: [&str; 7] = [
    "remote-write",
    "loki-push",
    "otlp-traces",
    "forward",
    "promql-range",
    "logql",
    "tempo-search",
];

/// What each load loop did, by kind.
#[derive(Default)]
struct Tally {
    items: BTreeMap<&'static str, AtomicU64>,
    requests: BTreeMap<&'static str, AtomicU64>,
    /// (kind, error) → count; limit errors the load may run into by design.
    expected: Mutex<BTreeMap<(&'static str, String), u64>>,
    unexpected: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Tally {
    fn new() -> Tally {
        let mut t = Tally::default();
        for k in KINDS {
            t.items.insert(k, AtomicU64::new(0));
            t.requests.insert(k, AtomicU64::new(0));
        }
        t
    }

    fn ok(&self, kind: &'static str, items: u64) {
        self.requests[kind].fetch_add(1, Ordering::Relaxed);
        self.items[kind].fetch_add(items, Ordering::Relaxed);
    }

    fn failed(&self, kind: &'static str, error: String) {
        self.requests[kind].fetch_add(1, Ordering::Relaxed);
        // A full query queue or a sample budget: the limits doing their job under load.
        let limit = ["query timed out in query queue", "too many samples", "429"]
            .iter()
            .any(|m| error.contains(m));
        let map = if limit {
            &self.expected
        } else {
            &self.unexpected
        };
        let short: String = error.chars().take(160).collect();
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind, short))
            .or_default() += 1;
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Posts and turns a non-2xx answer into an error naming its status and body.
fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(), String> {
    let mut req = client.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    check(req.body(body).send())
}

fn check(r: reqwest::Result<reqwest::blocking::Response>) -> Result<(), String> {
    let resp = r.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    Err(format!("{status}: {}", resp.text().unwrap_or_default()))
}

fn remote_write_body(series: &[Series], step: &mut u64) -> (Vec<u8>, u64) {
    *step += 1;
    let t = (now_ns() / 1_000_000) as i64;
    let samples: Vec<(usize, i64, f64)> = (0..series.len())
        .map(|i| (i, t, (*step as f64) * (i as f64 + 1.0)))
        .collect();
    let batch = encode(Protocol::V1, series, &samples);
    (batch.body().to_vec(), batch.samples() as u64)
}

fn loki_body(seq: u64) -> (Vec<u8>, u64) {
    let ts = now_ns();
    let streams: Vec<serde_json::Value> = (0..5)
        .map(|s| {
            let values: Vec<serde_json::Value> = (0..20u64)
                .map(|i| {
                    let level = if (seq + i).is_multiple_of(10) { "err" } else { "info" };
                    serde_json::json!([
                        (ts + s * 100 + i).to_string(),
                        format!("level={level} seq={seq} i={i} msg=\"soak line\"")
                    ])
                })
                .collect();
            serde_json::json!({ "stream": { "app": "soak", "stream": s.to_string() }, "values": values })
        })
        .collect();
    (
        serde_json::to_vec(&serde_json::json!({ "streams": streams })).unwrap_or_default(),
        100,
    )
}

fn traces_body(seq: u64) -> (Vec<u8>, u64) {
    let now = now_ns();
    let spans: Vec<Span> = (0..50u64)
        .map(|i| {
            let trace = seq * 10 + i / 5;
            let mut trace_id = [0u8; 16];
            trace_id[8..].copy_from_slice(&trace.to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (seq * 100 + i + 1).to_be_bytes().to_vec(),
                name: format!("op-{}", i % 5),
                kind: 2,
                start_time_unix_nano: now - 5_000_000,
                end_time_unix_nano: now,
                ..Default::default()
            }
        })
        .collect();
    let service = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("soak".into())),
        }),
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![service],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (req.encode_to_vec(), 50)
}

/// One Forward-mode frame of 50 records with a chunk id, sent on `conn`; Ok once acked.
fn forward(conn: &mut TcpStream, seq: u64) -> Result<u64, String> {
    let secs = (now_ns() / 1_000_000_000) as i64;
    let entries: Vec<Value> = (0..50)
        .map(|i| {
            Value::Array(vec![
                Value::from(secs),
                Value::Map(vec![
                    ("service".into(), "soak-fwd".into()),
                    (
                        "message".into(),
                        format!("forwarded seq={seq} i={i}").into(),
                    ),
                ]),
            ])
        })
        .collect();
    let chunk = format!("soak-{seq}");
    let frame = Value::Array(vec![
        "soak.fwd".into(),
        Value::Array(entries),
        Value::Map(vec![("chunk".into(), chunk.as_str().into())]),
    ]);
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &frame).map_err(|e| e.to_string())?;
    conn.write_all(&buf)
        .map_err(|e| format!("forward write: {e}"))?;
    let ack = rmpv::decode::read_value(conn).map_err(|e| format!("forward ack: {e}"))?;
    let acked = ack
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("ack")))
        .and_then(|(_, v)| v.as_str().map(str::to_owned));
    if acked.as_deref() != Some(chunk.as_str()) {
        return Err(format!("forward: unexpected ack {ack}"));
    }
    Ok(50)
}

/// Runs `step` every `every` until `stop`, counting what it reports under `kind`.
fn run_loop(
    stop: &AtomicBool,
    tally: &Tally,
    kind: &'static str,
    every: Duration,
    mut step: impl FnMut(u64) -> Result<u64, String>,
) {
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match step(seq) {
            Ok(items) => tally.ok(kind, items),
            Err(e) => tally.failed(kind, e),
        }
        seq += 1;
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
}

/// (minutes, MiB) samples of one memory figure.
type Points = Vec<(f64, f64)>;

/// Least-squares slope of (minutes, MiB) points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    let config = args
        .config
        .iter()
        .flat_map(|c| ["--config".into(), c.display().to_string()]);
    let mut running = Peer::novamon(args.novamon.clone(), args.port)
        .with_args(config)
        .start(Duration::from_secs(120))
        .context("starting novamon")?;
    let base = running.base_url.clone();
    let otlp = format!(
        "http://{}/v1/traces",
        running
            .arg("--otlp-http-listen")
            .context("no OTLP/HTTP address")?
    );
    let forward_addr = running
        .arg("--forward-listen")
        .context("no forward address")?
        .to_owned();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let series = node_series(args.series);
    let tally = Tally::new();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let run_for = Duration::from_secs(args.minutes * 60);
    // (minutes, MiB): the resident set, and its anonymous (heap) and file-backed (mapped
    // files: tantivy's index, the binary) parts.
    let (mut rss, mut anon, mut file): (Points, Points, Points) = Default::default();
    // What RocksDB says it holds, at the end of the warm-up and at the end of the load.
    let mut store_memory: Vec<String> = Vec::new();

    std::thread::scope(|s| {
        let (tally, stop, client) = (&tally, &stop, &client);
        let write_url = format!("{base}/api/v1/write");
        let series = &series;
        s.spawn(move || {
            let mut step = 0;
            run_loop(stop, tally, "remote-write", Duration::from_secs(1), |_| {
                let (body, n) = remote_write_body(series, &mut step);
                post(
                    client,
                    &write_url,
                    &[
                        ("Content-Type", "application/x-protobuf"),
                        ("Content-Encoding", "snappy"),
                        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                    ],
                    body,
                )
                .map(|()| n)
            })
        });
        let push_url = format!("{base}/loki/api/v1/push");
        s.spawn(move || {
            run_loop(
                stop,
                tally,
                "loki-push",
                Duration::from_millis(500),
                |seq| {
                    let (body, n) = loki_body(seq);
                    post(
                        client,
                        &push_url,
                        &[("Content-Type", "application/json")],
                        body,
                    )
                    .map(|()| n)
                },
            )
        });
        let otlp = &otlp;
        s.spawn(move || {
            run_loop(
                stop,
                tally,
                "otlp-traces",
                Duration::from_millis(500),
                |seq| {
                    let (body, n) = traces_body(seq);
                    post(
                        client,
                        otlp,
                        &[("Content-Type", "application/x-protobuf")],
                        body,
                    )
                    .map(|()| n)
                },
            )
        });
        let forward_addr = &forward_addr;
        s.spawn(move || {
            let mut conn: Option<TcpStream> = None;
            run_loop(stop, tally, "forward", Duration::from_millis(500), |seq| {
                let c = match &mut conn {
                    Some(c) => c,
                    None => conn.insert(
                        TcpStream::connect(forward_addr).map_err(|e| format!("connect: {e}"))?,
                    ),
                };
                c.set_read_timeout(Some(Duration::from_secs(60)))
                    .map_err(|e| e.to_string())?;
                let r = forward(c, seq);
                if r.is_err() {
                    conn = None;
                }
                r
            })
        });
        let base = &base;
        let query = move |path: String| -> Result<u64, String> {
            check(client.get(format!("{base}{path}")).send()).map(|()| 1)
        };
        let window = |minutes: u64| {
            let end = now_ns() / 1_000_000_000;
            (end.saturating_sub(minutes * 60), end)
        };
        s.spawn(move || {
            run_loop(stop, tally, "promql-range", Duration::from_secs(1), |_| {
                let (start, end) = window(10);
                query(format!(
                    "/api/v1/query_range?query={}&start={start}&end={end}&step=15",
                    enc("sum by (mode) (rate(node_cpu_seconds_total[1m]))")
                ))
            })
        });
        s.spawn(move || {
            run_loop(stop, tally, "logql", Duration::from_secs(1), |_| {
                let (start, end) = window(10);
                query(format!(
                    "/loki/api/v1/query_range?query={}&start={start}000000000&end={end}000000000&step=15",
                    enc(r#"sum by (stream) (count_over_time({app="soak"} |= "level=err" [1m]))"#)
                ))
            })
        });
        s.spawn(move || {
            run_loop(stop, tally, "tempo-search", Duration::from_secs(2), |_| {
                let (start, end) = window(10);
                query(format!(
                    "/tempo/api/search?q={}&start={start}&end={end}&limit=20",
                    enc(r#"{ resource.service.name = "soak" && name = "op-1" }"#)
                ))
            })
        });
        let warmup = Duration::from_secs(args.warmup_secs);
        while started.elapsed() < run_for {
            let t = started.elapsed().as_secs_f64() / 60.0;
            for (field, points) in [
                ("VmRSS", &mut rss),
                ("RssAnon", &mut anon),
                ("RssFile", &mut file),
            ] {
                if let Some(kib) = running.status_kib(field) {
                    points.push((t, kib as f64 / 1024.0));
                }
            }
            if store_memory.is_empty() && started.elapsed() >= warmup {
                store_memory.push(memory_breakdown(client, base));
            }
            std::thread::sleep(Duration::from_secs(5));
        }
        store_memory.push(memory_breakdown(client, base));
        stop.store(true, Ordering::Relaxed);
    });

    let stopped = running.stop(Duration::from_secs(60))?;
    let warm = args.warmup_secs as f64 / 60.0;
    let after_warmup = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points.iter().copied().filter(|(t, _)| *t >= warm).collect()
    };
    let after = after_warmup(&rss);
    println!(
        "soak: {} min, novamon {}, config {}",
        args.minutes,
        args.novamon.display(),
        args.config
            .as_deref()
            .map_or("embedded default".into(), |c| c.display().to_string())
    );
    println!(
        "{:<14} {:>12} {:>10} {:>16} {:>18}",
        "kind", "items", "requests", "limit errors", "unexpected errors"
    );
    let expected = tally.expected.lock().unwrap_or_else(|e| e.into_inner());
    let unexpected = tally.unexpected.lock().unwrap_or_else(|e| e.into_inner());
    let count = |m: &BTreeMap<(&str, String), u64>, kind: &str| -> u64 {
        m.iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    };
    for kind in KINDS {
        println!(
            "{:<14} {:>12} {:>10} {:>16} {:>18}",
            kind,
            tally.items[kind].load(Ordering::Relaxed),
            tally.requests[kind].load(Ordering::Relaxed),
            count(&expected, kind),
            count(&unexpected, kind)
        );
    }
    let at = |p: Option<&(f64, f64)>| p.map_or(f64::NAN, |(_, mib)| *mib);
    println!(
        "RSS: {:.0} MiB at warm-up end ({} s), {:.0} MiB at end; slope after warm-up {:+.2} MB/min over {} samples; stopped: {stopped}",
        at(after.first()),
        args.warmup_secs,
        at(after.last()),
        slope(&after) * 1.048_576,
        after.len()
    );
    for (part, points) in [("anonymous", &anon), ("file-backed", &file)] {
        let points = after_warmup(points);
        println!(
            "  {part}: {:.0} → {:.0} MiB, slope {:+.2} MB/min",
            at(points.first()),
            at(points.last()),
            slope(&points) * 1.048_576
        );
    }
    for (when, m) in ["warm-up end", "end"].iter().zip(&store_memory) {
        println!("memory at {when} (MiB): {m}");
    }
    for ((kind, e), n) in expected.iter() {
        println!("limit error  {kind}: {n} × {e}");
    }
    for ((kind, e), n) in unexpected.iter() {
        println!("UNEXPECTED   {kind}: {n} × {e}");
    }
    if !unexpected.is_empty() {
        bail!("unexpected errors");
    }
    Ok(())
}

/// `novamon_heap_bytes` and `novamon_storage_memory_bytes` from novamon's `/metrics`, one
/// `heap/state=MiB` or `store/kind=MiB` per series.
fn memory_breakdown(client: &reqwest::blocking::Client, base: &str) -> String {
    let text = match client
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
    {
        Ok(t) => t,
        Err(e) => return format!("/metrics failed: {e}"),
    };
    let mut parts = Vec::new();
    for line in text.lines() {
        let (prefix, rest) = if let Some(r) = line.strip_prefix("novamon_heap_bytes{") {
            ("heap/", r)
        } else if let Some(r) = line.strip_prefix("novamon_storage_memory_bytes{") {
            ("", r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        // The label values in order: store/kind, or state after "heap/".
        let values: Vec<&str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.trim_matches('"')))
            .collect();
        let name = format!("{prefix}{}", values.join("/"));
        let mib = value.trim().parse::<f64>().unwrap_or(f64::NAN) / 1_048_576.0;
        parts.push(format!("{name}={mib:.1}"));
    }
    parts.join(" ")
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_is_the_least_squares_fit() {
        let points = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)];
        assert!((super::slope(&points) - 2.0).abs() < 1e-9);
        assert_eq!(super::slope(&[(1.0, 4.0)]), 0.0);
    }
}
