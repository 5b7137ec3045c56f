//! Query latency comparison: loads the same node-exporter-like data (by default 12k series,
//! an hour at 15s) into novamon, Prometheus and VictoriaMetrics through remote-write, then
//! times typical dashboard queries, instant and as a 1h range at 15s step, against each, and
//! prints median latencies and their ratio to novamon's. Result sizes are printed beside them
//! so a fast wrong answer shows. A second table gives each query's memory: the highest
//! resident set seen while it ran (sampled every 2 ms) above the resident set after a pause
//! before it. A third gives each query's server CPU time per run (from `/proc/PID/stat`): on
//! a shared machine it moves far less with the neighbours' load than wall time does, and it
//! shows which servers spread one query over several cores.
//! VictoriaMetrics runs with its result cache off, so each timed run computes the answer.
//!
//!   query_compare --novamon target/release/novamon --series 12000

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use novamon_benches::load::{prepare, send, LoadConfig};
use novamon_benches::peers::{PeerPaths, Running};

const QUERIES: &[&str] = &[
    "sum by (instance) (rate(node_cpu_seconds_total[5m]))",
    "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    "topk(10, rate(node_network_receive_bytes_total[5m]))",
    "avg by (instance) (node_load5)",
    "sum(node_filesystem_avail_bytes) / sum(node_filesystem_size_bytes)",
];

#[derive(Debug, Parser)]
#[command(
    about = "Compare PromQL query latency of novamon, Prometheus and VictoriaMetrics on the same data."
)]
struct Args {
    #[command(flatten)]
    peers: PeerPaths,
    #[arg(long, default_value_t = 12_000)]
    series: usize,
    /// Samples per series, 15s apart (240 = one hour).
    #[arg(long, default_value_t = 240)]
    samples: usize,
    /// Timed runs of each query (after one warm-up run).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Pause before each query, so that memory the previous one freed is given back to the
    /// system (jemalloc purges after 10 s) before the resident set is taken as its baseline.
    #[arg(long, default_value_t = 12)]
    settle_secs: u64,
}

/// Median latency and result size of one query on one system.
struct Timing {
    median: Duration,
    series: usize,
    /// Highest resident set during the runs above the one before them.
    peak_above_kib: u64,
    /// Server CPU time (user + system) per timed run.
    cpu_per_run: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    let end_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 / 15_000 * 15_000;
    let cfg = LoadConfig::scraped(args.series, args.samples, end_ms);
    let peers: Vec<_> = args
        .peers
        .peers()?
        .into_iter()
        .map(|p| match p.name.as_str() {
            "victoria-metrics" => p.with_args(["-search.disableCache".to_string()]),
            _ => p,
        })
        .collect();
    let timeout = Duration::from_secs(args.peers.timeout);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut columns: Vec<(String, Vec<Timing>)> = Vec::new();
    for peer in &peers {
        let shards = prepare(&cfg).map_err(anyhow::Error::msg)?;
        let mut running = peer.start(timeout)?;
        eprintln!(
            "== {}: loading {} series x {} samples",
            peer.name, args.series, args.samples
        );
        let report = send(&running.write_url(), cfg.protocol, shards);
        anyhow::ensure!(
            report.failed_requests == 0,
            "{}: load failed: {:?}",
            peer.name,
            report.first_error
        );
        // VictoriaMetrics makes fresh data searchable asynchronously; the others ignore this.
        let _ = client
            .get(format!("{}/internal/force_flush", running.base_url))
            .send();
        std::thread::sleep(Duration::from_secs(2));
        let timings = time_queries(&client, &running, end_ms, &args)
            .with_context(|| format!("querying {}", peer.name))?;
        running.stop(timeout)?;
        columns.push((peer.name.clone(), timings));
    }
    print_table(&args, &columns);
    Ok(())
}

/// Every query as an instant query at the end of the data, then as a 1h range at 15s. The
/// times sit between samples: Prometheus 2.x closes range windows where Prometheus 3 and
/// novamon open them, and only there do the two count a different number of samples.
fn requests(end_ms: i64) -> Vec<(String, String)> {
    let end = (end_ms - 7_500) as f64 / 1000.0;
    let mut out = Vec::new();
    for q in QUERIES {
        out.push((
            format!("instant {q}"),
            format!("/api/v1/query?query={}&time={end}", urlencode(q)),
        ));
    }
    for q in QUERIES {
        out.push((
            format!("range 1h/15s {q}"),
            format!(
                "/api/v1/query_range?query={}&start={}&end={end}&step=15",
                urlencode(q),
                end - 3600.0
            ),
        ));
    }
    out
}

fn time_queries(
    client: &reqwest::blocking::Client,
    running: &Running,
    end_ms: i64,
    args: &Args,
) -> anyhow::Result<Vec<Timing>> {
    let runs = args.runs;
    let mut out = Vec::new();
    for (_, path) in requests(end_ms) {
        let url = format!("{}{}", running.base_url, path);
        let mut samples = Vec::with_capacity(runs);
        let mut series = 0;
        std::thread::sleep(Duration::from_secs(args.settle_secs));
        let before = running.rss_kib().unwrap_or(0);
        let watch = running.watch_rss();
        let mut cpu_before = 0.0;
        for run in 0..=runs {
            if run == 1 {
                cpu_before = running.cpu_seconds().context("server CPU time")?;
            }
            let start = Instant::now();
            let resp = client.get(&url).send()?;
            let status = resp.status();
            let body: serde_json::Value = resp.json()?;
            let elapsed = start.elapsed();
            anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
            series = body["data"]["result"].as_array().map_or(0, Vec::len);
            if run > 0 {
                samples.push(elapsed);
            }
        }
        let cpu = running.cpu_seconds().context("server CPU time")? - cpu_before;
        let peak = watch.peak_kib();
        samples.sort();
        out.push(Timing {
            median: samples[samples.len() / 2],
            series,
            peak_above_kib: peak.saturating_sub(before),
            cpu_per_run: Duration::from_secs_f64(cpu.max(0.0) / runs as f64),
        });
    }
    Ok(out)
}

fn print_table(args: &Args, columns: &[(String, Vec<Timing>)]) {
    println!(
        "data: {} series x {} samples (15s), median of {} runs; ms (series returned); ratio = system / novamon",
        args.series, args.samples, args.runs
    );
    print!("{:<100}", "query");
    for (name, _) in columns {
        print!(" {name:>22}");
    }
    println!();
    let novamon = columns.iter().position(|(n, _)| n == "novamon");
    for (i, (label, _)) in requests(0).iter().enumerate() {
        print!("{label:<100}");
        for (_, timings) in columns {
            let t = &timings[i];
            let ms = t.median.as_secs_f64() * 1000.0;
            let ratio =
                novamon.map(|n| ms / (columns[n].1[i].median.as_secs_f64() * 1000.0).max(1e-6));
            let cell = match ratio {
                Some(r) => format!("{ms:.1} ({}) x{r:.2}", t.series),
                None => format!("{ms:.1} ({})", t.series),
            };
            print!(" {cell:>22}");
        }
        println!();
    }
    println!();
    println!(
        "server CPU ms per run (in ticks of {:.1} ms: 10 ms over {} runs); ratio = system / novamon",
        10.0 / args.runs as f64,
        args.runs
    );
    for (i, (label, _)) in requests(0).iter().enumerate() {
        print!("{label:<100}");
        for (_, timings) in columns {
            let ms = timings[i].cpu_per_run.as_secs_f64() * 1000.0;
            // `/proc` counts CPU time in ticks of 10 ms: a novamon time of no tick over the
            // runs has no ratio to give.
            let base = novamon.map(|n| columns[n].1[i].cpu_per_run.as_secs_f64() * 1000.0);
            let cell = match base {
                Some(base) if base > 0.0 => format!("{ms:.1} x{:.2}", ms / base),
                Some(_) => format!("{ms:.1} x-"),
                None => format!("{ms:.1}"),
            };
            print!(" {cell:>22}");
        }
        println!();
    }
    println!();
    println!("query peak resident set above the one before it, MiB");
    for (i, (label, _)) in requests(0).iter().enumerate() {
        print!("{label:<100}");
        for (_, timings) in columns {
            let mib = timings[i].peak_above_kib as f64 / 1024.0;
            print!(" {mib:>22.1}");
        }
        println!();
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
