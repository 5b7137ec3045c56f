//! Scraping at scale: the target simulator serves `--targets` node-exporter-like targets of
//! `--series` series each; every system scrapes all of them on the same `prometheus.yml`
//! (interval `--interval`), one system at a time. After a warm-up (every target scraped, its
//! series created) it measures a window: the scrapes each target answered (so a missed scrape
//! shows whoever missed it), the system's CPU seconds (`/proc/PID/stat`) per scraped sample and
//! its peak resident set. Prints one line per system as it goes, then one table.
//!
//!   scrape_compare --novamon target/release/novamon --targets novamon,prometheus,victoria-metrics \
//!     --target-count 1000 --series 1000 --interval 15 --warmup 35 --window 67

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use novamon_benches::peers::PeerPaths;
use novamon_benches::targets::Simulator;

#[derive(Debug, Parser)]
#[command(about = "Scrape simulated targets with each system and compare their cost.")]
struct Args {
    #[command(flatten)]
    peers: PeerPaths,
    /// Targets the simulator serves.
    #[arg(long, default_value_t = 1000)]
    target_count: usize,
    /// Series per target.
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// Scrape interval, seconds.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Seconds from start until the measured window (every target scraped at least twice).
    #[arg(long, default_value_t = 35)]
    warmup: u64,
    /// Length of the measured window, seconds. Not a whole number of intervals, so that every
    /// target must answer at least `window / interval` (rounded down) scrapes in it, whatever
    /// its phase.
    #[arg(long, default_value_t = 67)]
    window: u64,
}

struct Row {
    name: String,
    scrapes: u64,
    /// Targets that answered fewer scrapes than the window holds intervals.
    short_targets: usize,
    samples: u64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.peers.timeout);
    let sim = Simulator::start(args.target_count, args.series)?;
    let per_page = sim.samples_per_page() as u64;
    let targets: Vec<String> = sim.addrs.iter().map(|a| format!("'{a}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: {i}s\n  scrape_timeout: {i}s\nscrape_configs:\n  - job_name: sim\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", "),
        i = args.interval
    );
    eprintln!(
        "{} targets × {} samples every {}s: {:.0} samples/s",
        args.target_count,
        per_page,
        args.interval,
        (args.target_count as u64 * per_page) as f64 / args.interval as f64
    );
    let mut rows = Vec::new();
    for peer in args.peers.peers()? {
        let peer = peer.with_scrape_config(config.clone());
        let mut running = peer
            .start(timeout)
            .with_context(|| format!("starting {}", peer.name))?;
        std::thread::sleep(Duration::from_secs(args.warmup));
        let before = sim.scrapes();
        let cpu0 = running.cpu_seconds().context("cpu time")?;
        let watch = running.watch_rss();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(args.window));
        let cpu1 = running.cpu_seconds().context("cpu time")?;
        let peak = watch.peak_kib();
        let after = sim.scrapes();
        let window = started.elapsed();
        running.stop(timeout)?;
        let per_target: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let scrapes: u64 = per_target.iter().sum();
        let due = args.window / args.interval;
        let row = Row {
            name: peer.name.clone(),
            scrapes,
            short_targets: per_target.iter().filter(|n| **n < due).count(),
            samples: scrapes * per_page,
            cpu_seconds: cpu1 - cpu0,
            peak_rss_mib: peak as f64 / 1024.0,
        };
        eprintln!(
            "{}: {} scrapes in {:.0?} ({} targets short of {due}), {:.3} CPU s, {:.2} µs CPU/sample, peak RSS {:.0} MiB",
            row.name,
            row.scrapes,
            window,
            row.short_targets,
            row.cpu_seconds,
            row.cpu_seconds * 1e6 / row.samples.max(1) as f64,
            row.peak_rss_mib
        );
        rows.push(row);
    }
    print_table(&args, &rows);
    Ok(())
}

fn print_table(args: &Args, rows: &[Row]) {
    let base = rows.iter().find(|r| r.name == "prometheus");
    println!(
        "\n{} targets × {} series, every {}s, window {}s",
        args.target_count, args.series, args.interval, args.window
    );
    println!(
        "| system | scrapes | targets short | samples/s | CPU µs/sample | vs Prometheus | peak RSS MiB | vs Prometheus |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let cpu = r.cpu_seconds * 1e6 / r.samples.max(1) as f64;
        let ratio = |v: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.2}×", v / b),
            _ => "—".into(),
        };
        let base_cpu = base.map(|b| b.cpu_seconds * 1e6 / b.samples.max(1) as f64);
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {} | {:.0} | {} |",
            r.name,
            r.scrapes,
            r.short_targets,
            r.samples as f64 / args.window as f64,
            cpu,
            ratio(cpu, base_cpu),
            r.peak_rss_mib,
            ratio(r.peak_rss_mib, base.map(|b| b.peak_rss_mib)),
        );
    }
}
