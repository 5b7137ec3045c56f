//! Series churn: writes waves of new series (the same node-exporter-like shape, a `wave`
//! label making each wave's label sets new), each wave's timestamps 3 hours of data time after
//! the last, so that every earlier wave is idle past a 2h head window. After each wave it waits
//! for the target to settle and reads its resident set. Memory that follows the active series
//! stays flat however many series were ever written; memory that keeps every series grows
//! with the total. Prints one line per wave as it goes, then one table.
//!
//!   churn --novamon target/release/novamon --novamon-config benches/churn.yml \
//!     --targets novamon,victoria-metrics --active 100000 --waves 100

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::generator::node_series;
use novamon_benches::load::{prepare_series, send, LoadConfig};
use novamon_benches::peers::{Peer, PeerPaths, Running};

const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Parser)]
#[command(about = "Write waves of new series and watch each target's resident set.")]
struct Args {
    #[command(flatten)]
    peers: PeerPaths,
    /// A config file novamon is started with (`--config`).
    #[arg(long)]
    novamon_config: Option<PathBuf>,
    /// New series per wave (the active series at any moment).
    #[arg(long, default_value_t = 100_000)]
    active: usize,
    #[arg(long, default_value_t = 100)]
    waves: usize,
    /// Samples per series in its wave, 15 s apart.
    #[arg(long, default_value_t = 2)]
    samples: usize,
    /// Seconds to wait after each wave before reading the resident set.
    #[arg(long, default_value_t = 7)]
    settle_secs: u64,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 2000)]
    batch: usize,
}

struct Row {
    name: String,
    series: usize,
    samples: usize,
    failed_requests: usize,
    sending: Duration,
    cpu_seconds: Option<f64>,
    /// Resident set (MiB) after each wave settled.
    rss_mib: Vec<f64>,
    peak_rss_mib: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    anyhow::ensure!(args.waves >= 2, "at least two waves");
    let mut rows = Vec::new();
    for peer in args.peers.peers()? {
        let peer = match (&args.novamon_config, peer.name.as_str()) {
            (Some(c), "novamon") => peer.with_args(["--config".into(), c.display().to_string()]),
            _ => peer,
        };
        rows.push(run(&args, &peer).with_context(|| format!("running {}", peer.name))?);
    }
    print_table(&args, &rows);
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn run(args: &Args, peer: &Peer) -> anyhow::Result<Row> {
    let timeout = Duration::from_secs(args.peers.timeout);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // The last wave ends an hour before now: all of it within a 15-day retention.
    let first_wave_ms = now - HOUR_MS - (args.waves as i64) * 3 * HOUR_MS;
    let mut running: Running = peer.start(timeout)?;
    let mut row = Row {
        name: peer.name.clone(),
        series: 0,
        samples: 0,
        failed_requests: 0,
        sending: Duration::ZERO,
        cpu_seconds: None,
        rss_mib: Vec::new(),
        peak_rss_mib: None,
    };
    for wave in 0..args.waves {
        let series: Vec<_> = node_series(args.active)
            .into_iter()
            .map(|mut s| {
                s.labels.push(("wave".into(), wave.to_string()));
                s.labels.sort();
                s
            })
            .collect();
        let samples = args.samples.max(1);
        let cfg = LoadConfig {
            series: series.len(),
            samples_per_series: samples,
            concurrency: args.concurrency,
            batch_samples: args.batch,
            protocol: Protocol::V1,
            interval_ms: 15_000,
            end_ms: first_wave_ms + wave as i64 * 3 * HOUR_MS + (samples as i64 - 1) * 15_000,
        };
        let shards = prepare_series(&cfg, series).map_err(anyhow::Error::msg)?;
        let started = Instant::now();
        let report = send(&running.write_url(), cfg.protocol, shards);
        row.sending += started.elapsed();
        if let Some(err) = &report.first_error {
            eprintln!("{} wave {wave}: first error: {err}", peer.name);
        }
        row.series += args.active;
        row.samples += report.samples_accepted;
        row.failed_requests += report.failed_requests;
        std::thread::sleep(Duration::from_secs(args.settle_secs));
        let rss = running.rss_kib().map_or(0.0, mib);
        row.rss_mib.push(rss);
        eprintln!(
            "{} wave {}/{}: {} series written, RSS {rss:.1} MiB",
            peer.name,
            wave + 1,
            args.waves,
            row.series
        );
    }
    row.cpu_seconds = running.cpu_seconds();
    row.peak_rss_mib = running.peak_rss_kib().map(mib);
    running.stop(timeout)?;
    Ok(row)
}

/// Least-squares slope of `ys` over 0, 1, 2, ...
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (num, den) = ys
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(num, den), (x, y)| {
            let dx = x as f64 - mx;
            (num + dx * (y - my), den + dx * dx)
        });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn print_table(args: &Args, rows: &[Row]) {
    println!(
        "churn: {} waves x {} new series x {} samples, each wave 3h of data time after the last",
        args.waves, args.active, args.samples
    );
    println!(
        "{:<18} {:>12} {:>12} {:>8} {:>12} {:>14} {:>14} {:>14} {:>13} {:>20}",
        "target",
        "series",
        "samples/s",
        "failed",
        "cpu_us/series",
        "RSS_wave1_MiB",
        "RSS_half_MiB",
        "RSS_last_MiB",
        "peak_RSS_MiB",
        "2nd_half_MiB/1M_series"
    );
    for r in rows {
        let second_half = &r.rss_mib[r.rss_mib.len() / 2..];
        // MiB per wave over the second half, per million series written.
        let per_million = slope(second_half) * 1e6 / args.active as f64;
        let cpu = r.cpu_seconds.map_or("-".to_string(), |s| {
            format!("{:.2}", s * 1e6 / r.series.max(1) as f64)
        });
        println!(
            "{:<18} {:>12} {:>12.0} {:>8} {:>12} {:>14.1} {:>14.1} {:>14.1} {:>13} {:>20.1}",
            r.name,
            r.series,
            r.samples as f64 / r.sending.as_secs_f64().max(1e-9),
            r.failed_requests,
            cpu,
            r.rss_mib[0],
            second_half[0],
            r.rss_mib[r.rss_mib.len() - 1],
            r.peak_rss_mib
                .map_or("-".to_string(), |m| format!("{m:.1}")),
            per_million
        );
    }
}
