//! Logs ingest and query, novamon against a minimal raw tantivy indexer in this process: the
//! same mixed records (`log_records`), sent to novamon as forward-protocol PackedForward frames
//! over one loopback connection, each acked before the next; then time until all are
//! searchable, a needle line filter, a by-level count, and disk bytes per raw line byte.
//!
//!   logs_compare --novamon target/debug/novamon --bytes 1000000000

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use clap::Parser;
use novamon_benches::log_records::{LogSet, LEVEL_NAMES, NEEDLE};
use novamon_benches::peers::{du, Peer};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema, FAST, INDEXED, STORED, STRING, TEXT};
use tantivy::{Index, TantivyDocument, Term};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    novamon: PathBuf,
    /// Raw line bytes to generate.
    #[arg(long, default_value_t = 1_000_000_000)]
    bytes: u64,
    #[arg(long, default_value_t = 1000)]
    records_per_frame: u64,
    /// Seconds to wait for startup, shutdown, and all records to become searchable.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

const SPAN_NS: i64 = 30 * 60 * 1_000_000_000;
const QUERY_RUNS: usize = 10;

struct Row {
    records_per_s: f64,
    mb_per_s: f64,
    queryable_s: f64,
    index_per_raw: f64,
    total_per_raw: f64,
    needle_ms: f64,
    levels_ms: f64,
    /// CPU microseconds per record spent indexing (the server's, or the bare indexer's).
    cpu_us_per_record: f64,
}

/// CPU seconds this process has used so far.
fn own_cpu_seconds() -> anyhow::Result<f64> {
    novamon_benches::peers::cpu_seconds(std::process::id())
        .ok_or_else(|| anyhow::anyhow!("cannot read /proc/self/stat"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn median_ms(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..QUERY_RUNS {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

fn loki(
    client: &reqwest::blocking::Client,
    base: &str,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<serde_json::Value> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let resp = client.get(format!("{base}{path}?{}", q.finish())).send()?;
    let status = resp.status();
    let body: serde_json::Value = resp.json()?;
    ensure!(status.is_success(), "{path}: {status}: {body}");
    Ok(body)
}

fn sample_sum(v: &serde_json::Value) -> f64 {
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
        .sum()
}

fn secs(ns: i64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn run_novamon(args: &Args, set: &LogSet) -> anyhow::Result<Row> {
    let timeout = Duration::from_secs(args.timeout);
    // peers.rs puts every novamon listener on a free loopback port.
    let mut running = Peer::novamon(args.novamon.clone(), free_port()?).start(timeout)?;
    let forward = running
        .arg("--forward-listen")
        .context("no --forward-listen")?
        .to_owned();
    let stream = TcpStream::connect(&forward).context("connecting to the forward listener")?;
    let mut writer = stream.try_clone()?;
    let mut acks = BufReader::new(stream);
    let frames: Vec<Vec<u8>> = set.frames("bench.logs", args.records_per_frame).collect();

    let started = Instant::now();
    for (f, frame) in frames.iter().enumerate() {
        writer.write_all(frame)?;
        let ack = rmpv::decode::read_value(&mut acks).context("reading ack")?;
        ensure!(
            ack["ack"].as_str() == Some(f.to_string().as_str()),
            "frame {f}: ack {ack}"
        );
    }
    let acked = started.elapsed().as_secs_f64();
    drop(frames);

    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()?;
    let base = running.base_url.clone();
    let at = secs(set.end_ns + 1_000_000_000);
    let count_query = |service: &str| {
        format!(
            "sum(count_over_time({{service=\"{service}\"}}[{}s]))",
            SPAN_NS / 1_000_000_000 + 60
        )
    };
    let services: std::collections::BTreeSet<&str> = (0..set.n.min(10_000))
        .map(|i| set.record(i).service)
        .collect();
    let queryable = loop {
        // One query per service keeps each under the server's per-query line limit.
        let mut seen = 0.0;
        for s in &services {
            let v = loki(
                &client,
                &base,
                "/loki/api/v1/query",
                &[("query", count_query(s)), ("time", at.clone())],
            )?;
            seen += sample_sum(&v);
        }
        if seen as u64 >= set.n {
            break started.elapsed().as_secs_f64();
        }
        ensure!(
            started.elapsed() < timeout,
            "only {seen} of {} records searchable",
            set.n
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let cpu_seconds = running
        .cpu_seconds()
        .ok_or_else(|| anyhow::anyhow!("cannot read novamon's CPU time"))?;

    let needle_service = set.record(set.needle_at).service;
    let needle_params = [
        (
            "query",
            format!("{{service=\"{needle_service}\"}} |= \"{NEEDLE}\""),
        ),
        ("start", secs(set.start_ns - 1_000_000_000)),
        ("end", at.clone()),
        ("limit", "100".into()),
    ];
    let needle_ms = median_ms(|| {
        let v = loki(&client, &base, "/loki/api/v1/query_range", &needle_params)?;
        let lines: usize = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum();
        ensure!(lines == 1, "needle query found {lines} lines: {v}");
        Ok(())
    })?;
    let last_minute = last_minute(set);
    let levels_params = [
        (
            "query",
            "sum by (level) (count_over_time({service=~\".+\"}[1m]))".to_string(),
        ),
        ("time", at.clone()),
    ];
    let levels_ms = median_ms(|| {
        let v = loki(&client, &base, "/loki/api/v1/query", &levels_params)?;
        ensure!(
            sample_sum(&v) as u64 == last_minute,
            "level counts {v}, want {last_minute}"
        );
        Ok(())
    })?;

    let how = running.stop(timeout)?;
    ensure!(how == "graceful", "novamon did not stop within {timeout:?}");
    let raw = set.raw_bytes as f64;
    Ok(Row {
        records_per_s: set.n as f64 / acked,
        mb_per_s: raw / 1e6 / acked,
        queryable_s: queryable,
        index_per_raw: running.disk_bytes_of("logs/index")? as f64 / raw,
        total_per_raw: running.disk_bytes_of("logs")? as f64 / raw,
        needle_ms,
        levels_ms,
        cpu_us_per_record: cpu_seconds * 1e6 / set.n as f64,
    })
}

/// Records in `(at - 1m, at]`, the window of an instant `[1m]` query at `end + 1s`.
fn last_minute(set: &LogSet) -> u64 {
    let from = set.end_ns + 1_000_000_000 - 60_000_000_000;
    (0..set.n)
        .rev()
        .take_while(|&i| set.ts_ns(i) > from)
        .count() as u64
}

fn run_tantivy(set: &LogSet) -> anyhow::Result<Row> {
    let mut b = Schema::builder();
    let ts = b.add_i64_field("ts", INDEXED | FAST);
    let service = b.add_text_field("service", STRING);
    let level = b.add_text_field("level", STRING);
    let host = b.add_text_field("host", STRING);
    let line = b.add_text_field("line", TEXT | STORED);
    let dir = tempfile::tempdir()?;
    let index = Index::create_in_dir(dir.path(), b.build())?;
    let mut writer = index.writer::<TantivyDocument>(512 << 20)?;

    // Only indexing is timed: records are generated a batch at a time outside the clock. The
    // CPU count cannot leave generation out, so the generation's own CPU is measured first and
    // subtracted.
    let gen_started = own_cpu_seconds()?;
    for j in 0..set.n {
        std::hint::black_box(set.record(j));
    }
    let gen_cpu = own_cpu_seconds()? - gen_started;
    let cpu_started = own_cpu_seconds()?;
    let mut elapsed = Duration::ZERO;
    let mut i = 0;
    while i < set.n {
        let batch: Vec<_> = (i..(i + 1000).min(set.n)).map(|j| set.record(j)).collect();
        i += batch.len() as u64;
        let t = Instant::now();
        for r in batch {
            let mut doc = TantivyDocument::default();
            doc.add_i64(ts, r.ts_ns);
            doc.add_text(service, r.service);
            doc.add_text(level, r.level);
            doc.add_text(host, &r.host);
            doc.add_text(line, &r.line);
            writer.add_document(doc)?;
        }
        elapsed += t.elapsed();
    }
    let t = Instant::now();
    writer.commit()?;
    writer.wait_merging_threads()?;
    elapsed += t.elapsed();
    let cpu = own_cpu_seconds()? - cpu_started - gen_cpu;

    let reader = index.reader()?;
    let searcher = reader.searcher();
    let needle = TermQuery::new(
        Term::from_field_text(line, NEEDLE),
        IndexRecordOption::Basic,
    );
    let needle_ms = median_ms(|| {
        let hits = searcher.search(&needle, &TopDocs::with_limit(100).order_by_score())?;
        ensure!(hits.len() == 1, "needle found {} times", hits.len());
        let doc: TantivyDocument = searcher.doc(hits[0].1)?;
        ensure!(doc.len() > 0, "needle document is empty");
        Ok(())
    })?;
    let last_minute = last_minute(set);
    let from = set.end_ns + 1_000_000_000 - 60_000_000_000;
    let levels_ms = median_ms(|| {
        let mut total = 0;
        for l in LEVEL_NAMES {
            let window: Box<dyn Query> = Box::new(RangeQuery::new(
                std::ops::Bound::Excluded(Term::from_field_i64(ts, from)),
                std::ops::Bound::Included(Term::from_field_i64(ts, set.end_ns + 1_000_000_000)),
            ));
            let q = BooleanQuery::new(vec![
                (Occur::Must, window),
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(level, l),
                        IndexRecordOption::Basic,
                    )),
                ),
            ]);
            total += searcher.search(&q, &Count)?;
        }
        ensure!(
            total as u64 == last_minute,
            "level counts {total}, want {last_minute}"
        );
        Ok(())
    })?;
    let bytes = du(dir.path())? as f64;
    let secs = elapsed.as_secs_f64();
    Ok(Row {
        records_per_s: set.n as f64 / secs,
        mb_per_s: set.raw_bytes as f64 / 1e6 / secs,
        queryable_s: secs,
        index_per_raw: bytes / set.raw_bytes as f64,
        total_per_raw: bytes / set.raw_bytes as f64,
        needle_ms,
        levels_ms,
        cpu_us_per_record: cpu * 1e6 / set.n as f64,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
    let set = LogSet::sized(args.bytes, now - 1_000_000_000, SPAN_NS);
    eprintln!("{} records, {} raw line bytes", set.n, set.raw_bytes);
    let nova = run_novamon(&args, &set)?;
    let tant = run_tantivy(&set)?;
    println!(
        "{} records, {:.1} MB of raw lines, {} records per frame",
        set.n,
        set.raw_bytes as f64 / 1e6,
        args.records_per_frame
    );
    println!(
        "{:<16} {:>12} {:>13} {:>8} {:>13} {:>13} {:>13} {:>10} {:>14}",
        "system",
        "records/s",
        "cpu_us/record",
        "MB/s",
        "queryable s",
        "index B/raw",
        "total B/raw",
        "needle ms",
        "by-level ms"
    );
    let row = |name: &str, r: [f64; 8]| {
        println!(
            "{:<16} {:>12.0} {:>13.2} {:>8.2} {:>13.2} {:>13.3} {:>13.3} {:>10.3} {:>14.3}",
            name, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        )
    };
    let ratio = |r: [f64; 8]| {
        println!(
            "{:<16} {:>12.2} {:>13.2} {:>8.2} {:>13.2} {:>13.3} {:>13.3} {:>10.1} {:>14.1}",
            "novamon/tantivy", r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        )
    };
    let fields = |r: &Row| {
        [
            r.records_per_s,
            r.cpu_us_per_record,
            r.mb_per_s,
            r.queryable_s,
            r.index_per_raw,
            r.total_per_raw,
            r.needle_ms,
            r.levels_ms,
        ]
    };
    let (n, t) = (fields(&nova), fields(&tant));
    row("novamon", n);
    row("tantivy (raw)", t);
    ratio(std::array::from_fn(|i| n[i] / t[i]));
    Ok(())
}
