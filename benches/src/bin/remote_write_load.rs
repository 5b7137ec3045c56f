//! Remote-write load generator: sends node-exporter-like series to one receiver and reports
//! the samples per second it accepted.
//!
//!   remote_write_load --url http://127.0.0.1:9090/api/v1/write --series 10000 --samples 30

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::load::{
    prepare, prepare_native_histograms, send, wait_ready, LoadArgs, LoadConfig, LoadReport,
};

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
    /// Send the samples as this many consecutive time slices, each built just before it is
    /// sent: a load larger than a run may hold in memory (e.g. 1M series x 2h). Every slice
    /// starts the generated values afresh, so counters reset at slice boundaries.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
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
    let whole = args.load.config(protocol, args.interval_ms);
    let rounds = args.rounds as usize;
    anyhow::ensure!(
        whole.samples_per_series % rounds == 0,
        "--samples must be a multiple of --rounds"
    );
    let per_round = whole.samples_per_series / rounds;
    wait_ready(&args.url, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
    let mut report = LoadReport::default();
    for round in 0..rounds {
        let later_rounds = (rounds - 1 - round) as i64;
        let cfg = LoadConfig {
            samples_per_series: per_round,
            end_ms: whole.end_ms - later_rounds * per_round as i64 * whole.interval_ms,
            ..whole.clone()
        };
        let shards = if args.native_histograms {
            prepare_native_histograms(&cfg)
        } else {
            prepare(&cfg)
        };
        let shards = shards
            .map_err(anyhow::Error::msg)
            .context("building requests")?;
        let sent = send(&args.url, protocol, shards);
        if rounds > 1 {
            eprintln!(
                "round {}/{rounds}: {} samples in {:.1} s",
                round + 1,
                sent.samples_accepted,
                sent.elapsed.as_secs_f64()
            );
        }
        let failed = sent.failed_requests > 0;
        report = report.merge(sent);
        if failed {
            break;
        }
    }
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
