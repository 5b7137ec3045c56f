//! Remote-write load generator: sends node-exporter-like series to one receiver and reports
//! the samples per second it accepted.
//!
//!   remote_write_load --url http://127.0.0.1:9090/api/v1/write --series 10000 --samples 30

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::load::{prepare, prepare_native_histograms, send, wait_ready, LoadArgs};

#[derive(Debug, Parser)]
#[command(about = "Send node-exporter-like remote-write load to a loopback receiver.")]
struct Args {
    /// Remote-write URL; must be on a loopback address.
    #[arg(long, default_value = "http://127.0.0.1:9090/api/v1/write")]
    url: String,
    #[command(flatten)]
    load: LoadArgs,
    /// Remote-write protocol version: 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    protocol: u8,
    #[arg(long, default_value_t = 15_000)]
    interval_ms: i64,
    /// Send native histogram samples (24 buckets, remote-write 1.0) instead of floats.
    #[arg(long)]
    native_histograms: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    novamon_benches::require_loopback(&args.url)?;
    let protocol = if args.protocol == 2 {
        Protocol::V2
    } else {
        Protocol::V1
    };
    let cfg = args.load.config(protocol, args.interval_ms);
    let shards = if args.native_histograms {
        prepare_native_histograms(&cfg)
    } else {
        prepare(&cfg)
    };
    let shards = shards
        .map_err(anyhow::Error::msg)
        .context("building requests")?;
    wait_ready(&args.url, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
    let report = send(&args.url, protocol, shards);
    println!(
        "protocol={protocol} series={} samples_sent={} samples_accepted={} requests={} failed_requests={} retries={} \
         request_bytes={} seconds={:.3} samples_per_sec={:.0}",
        args.load.series,
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
