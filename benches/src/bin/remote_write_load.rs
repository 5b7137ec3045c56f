//! Remote-write load generator: sends node-exporter-like series to one receiver and reports
//! the samples per second it accepted.
//!
//!   remote_write_load --url http://127.0.0.1:9090/api/v1/write --series 10000 --samples 30

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::load::{prepare, send, wait_ready, LoadConfig};

#[derive(Debug, Parser)]
#[command(about = "Send node-exporter-like remote-write load to a loopback receiver.")]
struct Args {
    /// Remote-write URL; must be on a loopback address.
    #[arg(long, default_value = "http://127.0.0.1:9090/api/v1/write")]
    url: String,
    /// Number of series (about 90 per simulated host).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Samples per series, 15 s apart by default, the last one at the current time.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Concurrent senders (Prometheus's queue-manager shards).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Remote-write protocol version: 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    protocol: u8,
    #[arg(long, default_value_t = 15_000)]
    interval_ms: i64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::require_loopback(&args.url)?;
    let protocol = if args.protocol == 2 {
        Protocol::V2
    } else {
        Protocol::V1
    };
    let end_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let cfg = LoadConfig {
        series: args.series,
        samples_per_series: args.samples,
        concurrency: args.concurrency,
        batch_samples: args.batch,
        protocol,
        interval_ms: args.interval_ms,
        end_ms,
    };
    let shards = prepare(&cfg)
        .map_err(anyhow::Error::msg)
        .context("building requests")?;
    wait_ready(&args.url, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
    let report = send(&args.url, protocol, shards);
    println!(
        "protocol={protocol} series={} samples_sent={} samples_accepted={} requests={} failed_requests={} retries={} \
         request_bytes={} seconds={:.3} samples_per_sec={:.0}",
        args.series,
        report.samples_sent,
        report.samples_accepted,
        report.requests,
        report.failed_requests,
        report.retries,
        report.request_bytes,
        report.elapsed.as_secs_f64(),
        report.samples_per_sec()
    );
    if let Some(err) = &report.first_error {
        eprintln!("first error: {err}");
    }
    if report.failed_requests > 0 {
        bail!("{} requests failed", report.failed_requests);
    }
    Ok(())
}
