//! End-to-end ingest comparison: starts novamon, Prometheus and VictoriaMetrics one after the
//! other, each on a loopback port with a fresh data directory, sends each the same
//! node-exporter-like remote-write 1.0 load, stops it gracefully, and reports accepted
//! samples per second, bytes per sample on disk after the stop, peak RSS (VmHWM), request
//! latency (median, p99, max), and how long it takes to start again on that data until it
//! accepts writes. With `--novamon-config benches/checkpoint.yml` novamon checkpoints every
//! few seconds, so the latencies include writes taken while a checkpoint runs. With
//! `--native-histograms` every series is a native histogram (24 buckets) instead, and
//! Prometheus runs with its native-histograms feature (VictoriaMetrics 1.79 takes none).
//! `--settle` keeps each target running that long after the load before it is stopped, so
//! that background merges (VictoriaMetrics') have settled when the disk is measured; the
//! bytes are also given for the metrics data alone (`metrics_data`): VictoriaMetrics without
//! its `cache` directory (persisted caches it rebuilds when missing), novamon's TSDB without
//! the log, trace and alert stores it keeps beside it (empty in this load, yet files of their
//! own), Prometheus's whole directory.
//!
//!   ingest_compare --novamon target/release/novamon --series 20000 --samples 30

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::load::{prepare, prepare_native_histograms, send, LoadArgs, LoadReport};
use novamon_benches::peers::{Peer, PeerPaths};

#[derive(Debug, Parser)]
#[command(
    about = "Compare remote-write ingest of novamon, Prometheus and VictoriaMetrics on this machine."
)]
struct Args {
    #[command(flatten)]
    peers: PeerPaths,
    #[command(flatten)]
    load: LoadArgs,
    /// A config file novamon is started with (`--config`).
    #[arg(long)]
    novamon_config: Option<std::path::PathBuf>,
    /// Send native histogram samples instead of float samples.
    #[arg(long)]
    native_histograms: bool,
    /// Seconds each target keeps running after the load before it is stopped.
    #[arg(long, default_value_t = 0)]
    settle: u64,
}

struct Row {
    name: String,
    report: LoadReport,
    disk_bytes: u64,
    /// `disk_bytes` of the metrics data alone: without caches and other signals' stores.
    data_bytes: u64,
    peak_rss_kib: Option<u64>,
    /// CPU seconds the target used while taking the load.
    cpu_seconds: Option<f64>,
    stopped: &'static str,
    /// From starting it again on the stopped data to accepting writes.
    restart: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    let mut rows = Vec::new();
    for peer in args.peers.peers()? {
        let peer = match (&args.novamon_config, peer.name.as_str()) {
            (Some(c), "novamon") => peer.with_args(["--config".into(), c.display().to_string()]),
            (_, "prometheus") if args.native_histograms => {
                peer.with_args(["--enable-feature=native-histograms".into()])
            }
            _ => peer,
        };
        eprintln!(
            "== {}: {} series x {} samples",
            peer.name, args.load.series, args.load.samples
        );
        rows.push(run(&args, &peer).with_context(|| format!("running {}", peer.name))?);
    }
    print_table(&args, &rows);
    Ok(())
}

fn run(args: &Args, peer: &Peer) -> anyhow::Result<Row> {
    let cfg = args.load.config(Protocol::V1, 15_000);
    // Built before the target starts, so that building does not compete with it.
    let shards = if args.native_histograms {
        prepare_native_histograms(&cfg)
    } else {
        prepare(&cfg)
    }
    .map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_secs(args.peers.timeout);
    let mut running = peer.start(timeout)?;
    let report = send(&running.write_url(), cfg.protocol, shards);
    let cpu_seconds = running.cpu_seconds();
    std::thread::sleep(Duration::from_secs(args.settle));
    let peak_rss_kib = running.peak_rss_kib();
    let stopped = running.stop(timeout)?;
    let disk_bytes = running.disk_bytes()?;
    let data_bytes = match peer.name.as_str() {
        "victoria-metrics" => match running.disk_bytes_of("cache") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => disk_bytes,
            bytes => disk_bytes - bytes?,
        },
        "novamon" => running.disk_bytes_of("tsdb")?,
        _ => disk_bytes,
    };
    let restart = running.restart(timeout)?;
    running.stop(timeout)?;
    if let Some(err) = &report.first_error {
        eprintln!("{}: first error: {err}", peer.name);
    }
    Ok(Row {
        name: peer.name.clone(),
        report,
        disk_bytes,
        data_bytes,
        peak_rss_kib,
        cpu_seconds,
        stopped,
        restart,
    })
}

fn print_table(args: &Args, rows: &[Row]) {
    let kind = if args.native_histograms {
        "native histogram (24 buckets)"
    } else {
        "float"
    };
    println!(
        "load: {} {kind} series x {} samples, {} senders, {} samples/request, remote-write 1.0",
        args.load.series, args.load.samples, args.load.concurrency, args.load.batch
    );
    println!(
        "{:<18} {:>12} {:>14} {:>12} {:>8} {:>12} {:>12} {:>14} {:>13} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "target",
        "samples/s",
        "cpu_us/sample",
        "accepted",
        "failed",
        "disk_bytes",
        "bytes/sample",
        "metrics_data",
        "peak_rss_MiB",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "stop",
        "restart_s"
    );
    for r in rows {
        let accepted = r.report.samples_accepted.max(1) as f64;
        let per_sample = r.disk_bytes as f64 / accepted;
        let rss = r
            .peak_rss_kib
            .map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
        let cpu = r
            .cpu_seconds
            .map_or("-".to_string(), |s| format!("{:.2}", s * 1e6 / accepted));
        let ms = |q: f64| {
            r.report
                .latency_quantile(q)
                .map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
        };
        println!(
            "{:<18} {:>12.0} {:>14} {:>12} {:>8} {:>12} {:>12.2} {:>14.2} {:>13} {:>8} {:>8} {:>8} {:>9} {:>10.2}",
            r.name,
            r.report.samples_per_sec(),
            cpu,
            r.report.samples_accepted,
            r.report.failed_requests,
            r.disk_bytes,
            per_sample,
            r.data_bytes as f64 / accepted,
            rss,
            ms(0.5),
            ms(0.99),
            ms(1.0),
            r.stopped,
            r.restart.as_secs_f64()
        );
    }
}
