//! Forwarding cost (#18): the same remote-write load (node-exporter-like series, 15 s apart)
//! into novamon three times: alone; forwarding to a receiver that takes everything; and
//! forwarding to one that answers 503 until the whole load is in (an outage), then takes
//! everything. Prints novamon's CPU seconds per million samples ingested (from
//! /proc/PID/stat, counted until every sample is forwarded) and the rate the outage's
//! backlog drains at, beside the live rate of the load's series at a 15 s interval. The
//! receiver is a thread of this process answering without decoding, so its own cost is not
//! counted. Not part of the test suite.
//!
//!   forward_bench --novamon target/release/novamon --series 20000 --samples 30

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ingest::remote_write::Protocol;
use novamon_benches::load::{prepare, send, LoadArgs};
use novamon_benches::peers::{Peer, Running};

#[derive(Debug, Parser)]
#[command(about = "Measure what remote_write forwarding costs novamon's ingest.")]
struct Args {
    /// The novamon binary (a release build for real figures).
    #[arg(long)]
    novamon: PathBuf,
    /// novamon's HTTP port on loopback.
    #[arg(long, default_value_t = 19491)]
    port: u16,
    #[command(flatten)]
    load: LoadArgs,
}

const TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let samples = (args.load.series * args.load.samples) as f64;
    let receiver = Receiver::start()?;
    let alone = run(&args, None, &receiver)?;
    let forwarding = run(&args, Some(false), &receiver)?;
    let outage = run(&args, Some(true), &receiver)?;
    let per_m = |cpu: f64| cpu / samples * 1e6;
    println!(
        "{} series x {} samples = {samples} samples",
        args.load.series, args.load.samples
    );
    println!(
        "alone:      {:.2} CPU s per million samples",
        per_m(alone.cpu)
    );
    println!(
        "forwarding: {:.2} CPU s per million samples (+{:.0}%)",
        per_m(forwarding.cpu),
        (forwarding.cpu / alone.cpu - 1.0) * 100.0
    );
    if let Some(q) = outage.queued_cpu {
        println!(
            "of which queueing in the outbox (load in, nothing sent): {:.2} CPU s per million samples (+{:.0}%)",
            per_m(q),
            (q / alone.cpu - 1.0) * 100.0
        );
    }
    let live = args.load.series as f64 / 15.0;
    let drained = outage.drain.context("no drain measured")?;
    println!(
        "after an outage: {samples} samples drained in {:.1} s = {:.0} samples/s, {:.0}x the live rate of {:.0} samples/s",
        drained.as_secs_f64(),
        samples / drained.as_secs_f64(),
        samples / drained.as_secs_f64() / live,
        live
    );
    Ok(())
}

struct Measured {
    /// novamon's CPU seconds from start until the load is in (and forwarded, if it is).
    cpu: f64,
    /// With an outage: from the receiver's recovery until everything is forwarded.
    drain: Option<Duration>,
    /// With an outage: CPU seconds until the load is in, nothing sent yet (what queueing in
    /// the outbox costs the append path, beside retries of the first batch).
    queued_cpu: Option<f64>,
}

/// One run: `forward` None runs novamon alone; Some(outage) forwards to the receiver,
/// refusing with 503 until the load is in when `outage`.
fn run(args: &Args, forward: Option<bool>, receiver: &Receiver) -> anyhow::Result<Measured> {
    let cfg = args.load.config(Protocol::V1, 15_000);
    let shards = prepare(&cfg).map_err(anyhow::Error::msg)?;
    let config = match forward {
        None => "global: {scrape_interval: 15s}\n".to_string(),
        Some(_) => format!(
            "global: {{scrape_interval: 15s}}\nremote_write:\n  - url: http://{}/receive\n    name: bench\n    queue_config: {{max_samples_per_send: 2000, capacity: 10000, batch_send_deadline: 1s, max_backoff: 200ms}}\n",
            receiver.addr
        ),
    };
    // The config replaces the default one, whose job scrapes novamon itself.
    let peer = Peer::novamon(args.novamon.clone(), args.port).with_scrape_config(config);
    receiver
        .refusing
        .store(forward == Some(true), Ordering::SeqCst);
    let mut running = peer.start(TIMEOUT)?;
    let report = send(&running.write_url(), cfg.protocol, shards);
    if let Some(e) = &report.first_error {
        bail!("load: {e}");
    }
    let total = report.samples_accepted as f64;
    let mut drain = None;
    let queued_cpu = running.cpu_seconds().filter(|_| forward == Some(true));
    if forward.is_some() {
        let started = Instant::now();
        receiver.refusing.store(false, Ordering::SeqCst);
        wait_forwarded(&running, total)?;
        drain = Some(started.elapsed());
    }
    let cpu = running.cpu_seconds().context("no /proc figures")?;
    running.stop(TIMEOUT)?;
    Ok(Measured {
        cpu,
        drain: drain.filter(|_| forward == Some(true)),
        queued_cpu,
    })
}

/// Waits until novamon's `prometheus_remote_storage_samples_total` reaches `total`.
fn wait_forwarded(running: &Running, total: f64) -> anyhow::Result<()> {
    let url = running.write_url().replace("/api/v1/write", "/metrics");
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let body = client.get(&url).send()?.text()?;
        let sent: f64 = body
            .lines()
            .find(|l| l.starts_with("prometheus_remote_storage_samples_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if sent >= total {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("not forwarded within 600 s")
}

/// A remote-write receiver that reads each request whole and answers 204 (or 503 while
/// `refusing`), decoding nothing.
struct Receiver {
    addr: String,
    refusing: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let refusing = Arc::new(AtomicBool::new(false));
        let flag = refusing.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let flag = flag.clone();
                std::thread::spawn(move || answer(conn, &flag));
            }
        });
        Ok(Receiver { addr, refusing })
    }
}

fn answer(mut conn: TcpStream, refusing: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let response: &[u8] = if refusing.load(Ordering::SeqCst) {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        if conn.write_all(response).is_err() {
            return;
        }
    }
}
