//! SQL against PromQL and LogQL on one novamon: loads node-exporter-like series (by default
//! 2,000 series, an hour at 15 s, through remote-write) and mixed log lines spread over the
//! last 24 hours (Loki push, streams by service and level), then times, on the same server,
//! each SQL question beside the PromQL or LogQL query that answers it:
//!
//! - `SELECT instance, avg(value) FROM metrics WHERE metric = '…' AND ts > now() - interval
//!   '1 hour' GROUP BY instance` against `avg by (instance) (avg_over_time(…[1h]))` (the same
//!   numbers: every series of an instance has as many samples in the hour);
//! - `SELECT level, count(*) FROM logs WHERE ts > now() - interval '24 hours' GROUP BY level`
//!   against `sum by (level) (count_over_time({service=~".+"}[24h]))`.
//!
//! Prints one table: median latency, server CPU seconds per run (from `/proc/PID/stat`, which
//! moves less with a shared machine's load than wall time), rows or series answered, and the
//! SQL/other ratio (issue #17 asks for at most 2x).
//!
//!   sql_compare --novamon target/release/novamon

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use novamon_benches::load::{prepare, send, LoadConfig};
use novamon_benches::log_records::LogSet;
use novamon_benches::peers::{Peer, Running};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Time SQL against the equivalent PromQL and LogQL queries on one novamon.")]
struct Args {
    /// The novamon binary.
    #[arg(long)]
    novamon: PathBuf,
    #[arg(long, default_value_t = 19391)]
    port: u16,
    #[arg(long, default_value_t = 2_000)]
    series: usize,
    /// Samples per series, 15 s apart (240 = one hour).
    #[arg(long, default_value_t = 240)]
    samples: usize,
    /// The metric the metrics pair averages.
    #[arg(long, default_value = "node_cpu_seconds_total")]
    metric: String,
    /// Bytes of log lines, spread over the last 24 hours.
    #[arg(long, default_value_t = 50 << 20)]
    log_bytes: u64,
    /// Timed runs of each query (after one warm-up run).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

/// One query's timing on the server.
struct Timing {
    median: Duration,
    cpu_per_run: f64,
    /// Rows (SQL) or series (PromQL, LogQL) answered.
    answered: usize,
    /// The answer as group → value, to check the pair agrees.
    groups: BTreeMap<String, f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let end_ms = now_ms / 15_000 * 15_000;
    let cfg = LoadConfig::scraped(args.series, args.samples, end_ms);
    let timeout = Duration::from_secs(60);
    let mut running = Peer::novamon(args.novamon.clone(), args.port).start(timeout)?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;

    eprintln!(
        "== loading {} series x {} samples",
        args.series, args.samples
    );
    let report = send(
        &running.write_url(),
        cfg.protocol,
        prepare(&cfg).map_err(anyhow::Error::msg)?,
    );
    anyhow::ensure!(
        report.failed_requests == 0,
        "load failed: {:?}",
        report.first_error
    );
    let day_ns = 86_400 * 1_000_000_000i64;
    let logs = LogSet::sized(
        args.log_bytes,
        now_ms * 1_000_000 - 60_000_000_000,
        day_ns - 120_000_000_000,
    );
    eprintln!("== pushing {} log lines over 24h", logs.n);
    push_logs(&client, &running, &logs)?;
    wait_for_logs(&client, &running, logs.n)?;

    let metric_sql = format!(
        "SELECT instance, avg(value) FROM metrics WHERE metric = '{}' \
         AND ts > now() - interval '1 hour' GROUP BY instance",
        args.metric
    );
    let metric_promql = format!("avg by (instance) (avg_over_time({}[1h]))", args.metric);
    let log_sql = "SELECT level, count(*) FROM logs WHERE ts > now() - interval '24 hours' \
                   GROUP BY level";
    let log_logql = "sum by (level) (count_over_time({service=~\".+\"}[24h]))";
    let rows = [
        (
            "metrics avg by instance, 1h",
            time(&client, &running, args.runs, &Query::Sql(&metric_sql))?,
            time(
                &client,
                &running,
                args.runs,
                &Query::Api("/api/v1/query", &metric_promql, "instance"),
            )?,
        ),
        (
            "logs count by level, 24h",
            time(&client, &running, args.runs, &Query::Sql(log_sql))?,
            time(
                &client,
                &running,
                args.runs,
                &Query::Api("/loki/api/v1/query", log_logql, "level"),
            )?,
        ),
    ];
    running.stop(timeout)?;

    println!(
        "data: {} series x {} samples (15s) of {} total; {} log lines ({} MiB) over 24h; \
         median of {} runs",
        args.series,
        args.samples,
        args.metric,
        logs.n,
        logs.raw_bytes >> 20,
        args.runs
    );
    println!(
        "{:<30} {:>12} {:>12} {:>14} {:>14} {:>8} {:>8} {:>9}",
        "question",
        "SQL p50 ms",
        "other p50",
        "SQL CPU s",
        "other CPU s",
        "rows",
        "series",
        "SQL/other"
    );
    for (what, sql, other) in &rows {
        let agree = same(&sql.groups, &other.groups);
        println!(
            "{what:<30} {:>12.1} {:>12.1} {:>14.3} {:>14.3} {:>8} {:>8} {:>8.2}x{}",
            sql.median.as_secs_f64() * 1000.0,
            other.median.as_secs_f64() * 1000.0,
            sql.cpu_per_run,
            other.cpu_per_run,
            sql.answered,
            other.answered,
            sql.median.as_secs_f64() / other.median.as_secs_f64().max(1e-9),
            if agree { "" } else { "  ANSWERS DIFFER" }
        );
    }
    println!("SQL: {metric_sql}\nPromQL: {metric_promql}\nSQL: {log_sql}\nLogQL: {log_logql}");
    Ok(())
}

enum Query<'a> {
    Sql(&'a str),
    /// Path of an instant query API, the query, the label its groups are named by.
    Api(&'static str, &'a str, &'static str),
}

fn time(
    client: &reqwest::blocking::Client,
    running: &Running,
    runs: usize,
    q: &Query<'_>,
) -> anyhow::Result<Timing> {
    let mut took = Vec::with_capacity(runs);
    let mut cpu_before = 0.0;
    let mut last = Value::Null;
    for run in 0..=runs {
        if run == 1 {
            cpu_before = running.cpu_seconds().context("server CPU time")?;
        }
        let start = Instant::now();
        let resp = match q {
            Query::Sql(sql) => client
                .post(format!("{}/api/v1/sql", running.base_url))
                .json(&json!({ "query": sql }))
                .send()?,
            Query::Api(path, query, _) => client
                .get(format!(
                    "{}{path}?query={}",
                    running.base_url,
                    urlencode(query)
                ))
                .send()?,
        };
        let status = resp.status();
        let body: Value = resp.json()?;
        if run > 0 {
            took.push(start.elapsed());
        }
        anyhow::ensure!(status.is_success(), "{status}: {body}");
        last = body;
    }
    let cpu = running.cpu_seconds().context("server CPU time")? - cpu_before;
    took.sort();
    let groups: BTreeMap<String, f64> = match q {
        Query::Sql(_) => last["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r[0].as_str().unwrap_or_default().to_owned(), number(&r[1])))
            .collect(),
        Query::Api(_, _, label) => last["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["metric"][label].as_str().unwrap_or_default().to_owned(),
                    number(&s["value"][1]),
                )
            })
            .collect(),
    };
    Ok(Timing {
        median: took[took.len() / 2],
        cpu_per_run: cpu.max(0.0) / runs as f64,
        answered: groups.len(),
        groups,
    })
}

/// A JSON number, or a number as the Prometheus API writes it (a string).
fn number(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn same(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && (va - vb).abs() <= 1e-9 * vb.abs().max(1.0))
}

/// The records as Loki push requests, a stream per service and level, 10,000 lines each.
fn push_logs(
    client: &reqwest::blocking::Client,
    running: &Running,
    logs: &LogSet,
) -> anyhow::Result<()> {
    let url = format!("{}/loki/api/v1/push", running.base_url);
    let mut i = 0;
    while i < logs.n {
        let end = (i + 10_000).min(logs.n);
        let mut streams: BTreeMap<(&str, &str), Vec<Value>> = BTreeMap::new();
        for r in (i..end).map(|k| logs.record(k)) {
            streams
                .entry((r.service, r.level))
                .or_default()
                .push(json!([r.ts_ns.to_string(), r.line]));
        }
        let body = json!({ "streams": streams.into_iter().map(|((service, level), values)| {
            json!({ "stream": { "service": service, "level": level }, "values": values })
        }).collect::<Vec<_>>() });
        let resp = client.post(&url).json(&body).send()?;
        anyhow::ensure!(resp.status().is_success(), "push: {}", resp.text()?);
        i = end;
    }
    Ok(())
}

/// Waits until the log index holds every line (indexing runs behind the push's answer).
fn wait_for_logs(
    client: &reqwest::blocking::Client,
    running: &Running,
    n: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body: Value = client
            .get(format!(
                "{}/loki/api/v1/query?query={}",
                running.base_url,
                urlencode("sum(count_over_time({service=~\".+\"}[25h]))")
            ))
            .send()?
            .json()?;
        let have = number(&body["data"]["result"][0]["value"][1]);
        if have as u64 >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{have} of {n} lines indexed after 10 min"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
