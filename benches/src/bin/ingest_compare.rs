//! End-to-end ingest comparison: starts novamon, Prometheus and VictoriaMetrics one after the
//! other, each on a loopback port with a fresh data directory, sends each the same
//! node-exporter-like remote-write 1.0 load, stops it gracefully, and reports accepted
//! samples per second, bytes per sample on disk after the stop, and peak RSS (VmHWM).
//!
//!   ingest_compare --novamon target/release/novamon --series 20000 --samples 30

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::load::{prepare, send, wait_ready, LoadConfig, LoadReport};

#[derive(Debug, Parser)]
#[command(
    about = "Compare remote-write ingest of novamon, Prometheus and VictoriaMetrics on this machine."
)]
struct Args {
    /// Path of the novamon binary (a release build); novamon is skipped without it.
    #[arg(long)]
    novamon: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus: PathBuf,
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics: PathBuf,
    /// Which targets to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "novamon,prometheus,victoria-metrics"
    )]
    targets: Vec<String>,
    #[arg(long, default_value_t = 20_000)]
    series: usize,
    #[arg(long, default_value_t = 30)]
    samples: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// First loopback port; each target gets the next one.
    #[arg(long, default_value_t = 19291)]
    port: u16,
    /// Seconds to wait for a target to come up, and again for it to stop after SIGTERM.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

struct Target {
    name: String,
    program: PathBuf,
}

impl Target {
    fn args(&self, data: &Path, work: &Path, addr: &str) -> anyhow::Result<Vec<String>> {
        let data = data.display();
        Ok(match self.name.as_str() {
            "novamon" => {
                vec![
                    "--data-dir".into(),
                    data.to_string(),
                    "--http-listen".into(),
                    addr.into(),
                    "--log".into(),
                    "warn".into(),
                ]
            }
            "prometheus" => {
                // No scrape jobs: the receiver is all that runs.
                let config = work.join("prometheus.yml");
                std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
                vec![
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={data}"),
                    format!("--web.listen-address={addr}"),
                    "--web.enable-remote-write-receiver".into(),
                    "--log.level=warn".into(),
                ]
            }
            "victoria-metrics" => {
                vec![
                    format!("-storageDataPath={data}"),
                    format!("-httpListenAddr={addr}"),
                    "-loggerLevel=WARN".into(),
                ]
            }
            other => bail!("unknown target {other}"),
        })
    }
}

struct Row {
    name: String,
    report: LoadReport,
    disk_bytes: u64,
    peak_rss_kib: Option<u64>,
    stopped: &'static str,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for (i, name) in args.targets.iter().enumerate() {
        let program = match name.as_str() {
            "novamon" => match &args.novamon {
                Some(p) => p.clone(),
                None => {
                    eprintln!("skipping novamon: no --novamon binary given");
                    continue;
                }
            },
            "prometheus" => args.prometheus.clone(),
            "victoria-metrics" => args.victoria_metrics.clone(),
            other => bail!("unknown target {other} (novamon, prometheus, victoria-metrics)"),
        };
        let port = args
            .port
            .checked_add(i as u16)
            .context("port out of range")?;
        let target = Target {
            name: name.clone(),
            program,
        };
        eprintln!(
            "== {name}: {} series x {} samples",
            args.series, args.samples
        );
        let row = run(&args, &target, port).with_context(|| format!("running {name}"))?;
        rows.push(row);
    }
    print_table(&args, &rows);
    Ok(())
}

fn run(args: &Args, target: &Target, port: u16) -> anyhow::Result<Row> {
    let end_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let cfg = LoadConfig {
        series: args.series,
        samples_per_series: args.samples,
        concurrency: args.concurrency,
        batch_samples: args.batch,
        protocol: Protocol::V1,
        interval_ms: 15_000,
        end_ms,
    };
    // Built before the target starts, so that building does not compete with it.
    let shards = prepare(&cfg).map_err(anyhow::Error::msg)?;

    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir(&data)?;
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}/api/v1/write");
    let log_path = work.path().join("log");
    let log = File::create(&log_path)?;
    let mut child = Command::new(&target.program)
        .args(target.args(&data, work.path(), &addr)?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", target.program.display()))?;

    let timeout = Duration::from_secs(args.timeout);
    if let Err(e) = wait_ready(&url, timeout) {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{e}\n--- log tail ---\n{}", tail(&log_path));
    }
    let report = send(&url, cfg.protocol, shards);
    let peak_rss_kib = peak_rss_kib(child.id());
    let stopped = stop(&mut child, timeout)?;
    let disk_bytes = du(&data)?;
    if let Some(err) = &report.first_error {
        eprintln!("{}: first error: {err}", target.name);
    }
    Ok(Row {
        name: target.name.clone(),
        report,
        disk_bytes,
        peak_rss_kib,
        stopped,
    })
}

/// VmHWM of a live process: its peak resident set so far.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// SIGTERM, then up to `timeout` for a graceful exit (flushing its data), then SIGKILL.
fn stop(child: &mut Child, timeout: Duration) -> anyhow::Result<&'static str> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", child.id());
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok("graceful");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill()?;
    child.wait()?;
    Ok("killed")
}

/// Disk usage as `du` counts it: allocated blocks of every file under `dir`.
fn du(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.path().symlink_metadata()?;
        total += md.blocks() * 512;
        if md.is_dir() {
            total += du(&entry.path())?;
        }
    }
    Ok(total)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn print_table(args: &Args, rows: &[Row]) {
    println!(
        "load: {} series x {} samples, {} senders, {} samples/request, remote-write 1.0",
        args.series, args.samples, args.concurrency, args.batch
    );
    println!(
        "{:<18} {:>12} {:>12} {:>8} {:>12} {:>12} {:>13} {:>9}",
        "target",
        "samples/s",
        "accepted",
        "failed",
        "disk_bytes",
        "bytes/sample",
        "peak_rss_MiB",
        "stop"
    );
    for r in rows {
        let per_sample = r.disk_bytes as f64 / r.report.samples_accepted.max(1) as f64;
        let rss = r
            .peak_rss_kib
            .map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!(
            "{:<18} {:>12.0} {:>12} {:>8} {:>12} {:>12.2} {:>13} {:>9}",
            r.name,
            r.report.samples_per_sec(),
            r.report.samples_accepted,
            r.report.failed_requests,
            r.disk_bytes,
            per_sample,
            rss,
            r.stopped
        );
    }
}
