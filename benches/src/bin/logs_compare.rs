//! Logs ingest and query end to end, on the same generated records (`log_records`) in one run:
//! novamon against a bare tantivy index and against ClickHouse, as one table.
//!
//! - novamon gets forward-protocol PackedForward frames of `--records-per-frame` records over
//!   `--connections` loopback connections, frames dealt round-robin, each connection waiting for
//!   a frame's ack before sending its next.
//! - ClickHouse (`clickhouse-server`, 18.16 as Debian ships it, started here in a temp dir) gets
//!   `INSERT INTO logs FORMAT JSONEachRow` bodies of as many records over as many HTTP
//!   connections, into a MergeTree ordered by (service, ts); an insert that has returned is
//!   queryable.
//! - tantivy indexes through one writer in a child process of this binary (so the peak RSS it
//!   reports is its own, not this process's with its copy of the data) and commits: searchable
//!   then.
//!
//! Per system: records/s until every record is searchable (counted from the first send) and
//! until the last is acknowledged, the lag between the two, server CPU per record, disk bytes
//! per raw line byte, peak RSS (VmHWM), and the median latency of each query and the server CPU
//! it took per run, every run's answer checked against the generator: the newest 1000 lines of
//! one service, a needle line filter in it, records per level per minute over the span, index
//! stats (entries and line bytes), line bytes by service (volume), and by service per minute
//! (volume_range). `--systems novamon` runs novamon alone.
//!
//! Server CPU counts from the first send until all is searchable: work a server defers past
//! that (ClickHouse's later merges) is not in it. Bare tantivy answers the aggregations from
//! fast fields (level, service, and a line-length column it would not otherwise keep), not by
//! reading lines, as novamon's columns do.
//!
//!   logs_compare --novamon target/release/novamon --bytes 200000000 --span-minutes 30 \
//!       --connections 4 [--clickhouse /usr/sbin/clickhouse-server]
//!
//! `--span-minutes 1440` spreads the records over a day, for bigger runs.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Parser;
use novamon_benches::log_records::{LogSet, NEEDLE};
use novamon_benches::peers::{cpu_seconds, du, status_kib, Peer, Running};
use serde_json::Value;
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value as _, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{DocId, Index, Order, Score, Searcher, SegmentReader, TantivyDocument, Term};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    novamon: PathBuf,
    /// An extra argument for novamon (repeatable), e.g. `--novamon-arg=--config=F` to
    /// try other limits.
    #[arg(long, allow_hyphen_values = true)]
    novamon_arg: Vec<String>,
    #[arg(long, default_value = "/usr/sbin/clickhouse-server")]
    clickhouse: PathBuf,
    /// Raw line bytes to generate.
    #[arg(long, default_value_t = 1_000_000_000)]
    bytes: u64,
    /// Minutes the records' timestamps spread over, ending now.
    #[arg(long, default_value_t = 30)]
    span_minutes: i64,
    /// Records per forward frame, and per ClickHouse insert.
    #[arg(long, default_value_t = 1000)]
    records_per_frame: u64,
    /// Parallel connections sending to novamon, and to ClickHouse.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The systems to run, in the table's order; the peers left out have no rows (quicker
    /// runs while working on one).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "novamon,tantivy,clickhouse"
    )]
    systems: Vec<System>,
    /// Runs of each query; the table has the median.
    #[arg(long, default_value_t = 10)]
    query_runs: usize,
    /// Seconds to wait for startup, shutdown, and all records to become searchable.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Run the bare tantivy side only and print its cells as JSON: how this binary runs itself
    /// as the tantivy child.
    #[arg(long, hide = true)]
    tantivy_child: bool,
    /// The parent's data set end, so the child generates the same records.
    #[arg(long, hide = true)]
    end_ns: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum System {
    Novamon,
    Tantivy,
    Clickhouse,
}

const MINUTE_NS: i64 = 60_000_000_000;
/// Lines the newest-lines and needle queries return at most.
const LIMIT: usize = 1000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    if args.tantivy_child {
        return tantivy_child(&args);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
    let end_ns = now - 1_000_000_000;
    let set = data_set(&args, end_ns);
    eprintln!("{} records, {} raw line bytes", set.n, set.raw_bytes);
    let want = Expected::of(&set);
    let mut rows = Vec::new();
    for system in &args.systems {
        rows.push(match system {
            System::Novamon => ("novamon", run_novamon(&args, &set, &want)?.cells(&set)),
            System::Tantivy => ("tantivy (bare)", run_tantivy_child(end_ns)?),
            System::Clickhouse => (
                "clickhouse",
                run_clickhouse(&args, &set, &want)?.cells(&set),
            ),
        });
    }
    print_table(&args, &set, &rows);
    Ok(())
}

fn data_set(args: &Args, end_ns: i64) -> LogSet {
    LogSet::sized(args.bytes, end_ns, args.span_minutes * MINUTE_NS)
}

// ---------------------------------------------------------------------------------------------
// What the queries must answer.

/// Query answers keyed by (group, step): the group a level or service (empty when the query
/// groups by nothing), the step that of a range query from the span's start by a minute whose
/// window holds the record (0 when the query has no steps); the value a count of records or a
/// sum of line bytes.
type Groups = BTreeMap<(String, i64), u64>;

/// Timestamped lines, newest first.
type Lines = Vec<(i64, String)>;

/// What every system must answer, worked out from the generator.
struct Expected {
    /// The service the line queries select: the needle's.
    service: &'static str,
    /// Records (entries) and line bytes of the whole set, which also tell when all are
    /// searchable.
    records: u64,
    line_bytes: u64,
    newest: Lines,
    needle: Lines,
    /// Records per level per minute step.
    levels: Groups,
    /// Line bytes per service.
    volume: Groups,
    /// Line bytes per service per minute step.
    volume_range: Groups,
}

impl Expected {
    fn of(set: &LogSet) -> Expected {
        let needle = set.record(set.needle_at);
        let newest = (0..set.n)
            .rev()
            .map(|i| set.record(i))
            .filter(|r| r.service == needle.service)
            .take(LIMIT)
            .map(|r| (r.ts_ns, r.line))
            .collect();
        let (mut levels, mut volume, mut volume_range) =
            (Groups::new(), Groups::new(), Groups::new());
        for i in 0..set.n {
            let r = set.record(i);
            let step = minute_step(set.start_ns, r.ts_ns);
            let len = r.line.len() as u64;
            *levels.entry((r.level.into(), step)).or_default() += 1;
            *volume.entry((r.service.into(), 0)).or_default() += len;
            *volume_range.entry((r.service.into(), step)).or_default() += len;
        }
        Expected {
            service: needle.service,
            records: set.n,
            line_bytes: set.raw_bytes,
            newest,
            needle: vec![(needle.ts_ns, needle.line)],
            levels,
            volume,
            volume_range,
        }
    }

    fn services(&self) -> impl Iterator<Item = &str> {
        self.volume.keys().map(|(s, _)| s.as_str())
    }
}

/// The step of a range query from `start_ns` by a minute that counts `ts_ns`: the first step
/// at or after it, as a `[1m]` window ends at its step and holds its end.
fn minute_step(start_ns: i64, ts_ns: i64) -> i64 {
    (ts_ns - start_ns + MINUTE_NS - 1) / MINUTE_NS
}

/// One system's answers to the benchmark's queries over the whole span, in [`Expected`]'s
/// shapes so one check serves all three.
trait Queries {
    /// The newest [`LIMIT`] lines of `service`, only those holding `needle` when given.
    fn lines(&self, service: &str, needle: Option<&str>) -> anyhow::Result<Lines>;
    /// Records per level per minute step.
    fn levels(&self) -> anyhow::Result<Groups>;
    /// Records and line bytes of the span (Loki's index stats).
    fn stats(&self) -> anyhow::Result<(u64, u64)>;
    /// Line bytes per service, per minute step too when `by_minute` (Loki's volume).
    fn volume(&self, by_minute: bool) -> anyhow::Result<Groups>;
}

/// The server's CPU seconds so far.
type CpuClock<'a> = &'a dyn Fn() -> anyhow::Result<f64>;

/// Each query's median milliseconds and mean server CPU milliseconds per run, in the table's
/// order; a wrong answer in any run fails. The CPU figure is the steadier one on a machine
/// shared with other work (wall time there includes waiting for a core).
fn time_queries(
    q: &dyn Queries,
    want: &Expected,
    runs: usize,
    cpu: CpuClock<'_>,
) -> anyhow::Result<[(f64, f64); 6]> {
    let service = want.service;
    let stats = (want.records, want.line_bytes);
    Ok([
        timed(runs, cpu, || {
            check("newest lines", q.lines(service, None)?, &want.newest)
        })?,
        timed(runs, cpu, || {
            check("needle", q.lines(service, Some(NEEDLE))?, &want.needle)
        })?,
        timed(runs, cpu, || {
            check("counts by level", q.levels()?, &want.levels)
        })?,
        timed(runs, cpu, || check("index stats", q.stats()?, &stats))?,
        timed(runs, cpu, || {
            check("volume", q.volume(false)?, &want.volume)
        })?,
        timed(runs, cpu, || {
            check("volume range", q.volume(true)?, &want.volume_range)
        })?,
    ])
}

/// Waits (up to a minute) until the server has used under 50 ms of CPU in a second: work left
/// after the data became searchable (novamon's and ClickHouse's background merges) would
/// otherwise be counted in the first queries' CPU. The bare index waits for its merges before
/// its queries.
fn settle(cpu: CpuClock<'_>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let before = cpu()?;
        std::thread::sleep(Duration::from_secs(1));
        if cpu()? - before < 0.05 {
            break;
        }
    }
    Ok(())
}

/// The median wall milliseconds of `runs` runs of `f`, and the server's CPU milliseconds per run
/// (a mean: the clock ticks in hundredths of a second, too coarse for one run).
fn timed(
    runs: usize,
    cpu: CpuClock<'_>,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let runs = runs.max(1);
    let mut v = Vec::new();
    let cpu_before = cpu()?;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (cpu()? - cpu_before) * 1e3 / runs as f64;
    v.sort_by(f64::total_cmp);
    Ok((v[v.len() / 2], cpu_ms))
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: &T) -> anyhow::Result<()> {
    // Answers run to a thousand lines: the start of each is enough to see what differs.
    let head = |v: &dyn std::fmt::Debug| format!("{v:?}").chars().take(800).collect::<String>();
    ensure!(
        got == *want,
        "wrong {what}:\n got  {}\n want {}",
        head(&got),
        head(want)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring and printing.

/// One system's figures, before they become the table's cells.
struct Measured {
    /// From the first record sent until all are searchable.
    searchable: Duration,
    /// From the first record sent until the last is acknowledged, where something acks.
    acked: Option<Duration>,
    /// The server's CPU seconds from just before the first send until all are searchable
    /// (the bare indexer's own, less generating the records).
    cpu_s: f64,
    disk_bytes: u64,
    /// The part of `disk_bytes` that is index, where the system keeps one apart.
    index_bytes: Option<u64>,
    peak_rss_kib: u64,
    /// Per query: median wall milliseconds, and server CPU milliseconds per run.
    queries: [(f64, f64); 6],
}

/// Header and decimals of each column.
const COLUMNS: [(&str, usize); 19] = [
    ("searchable/s", 0),
    ("acked/s", 0),
    ("lag s", 2),
    ("cpu us/rec", 2),
    ("disk/raw", 3),
    ("index/raw", 3),
    ("RSS MB", 0),
    ("newest ms", 2),
    ("needle ms", 2),
    ("levels ms", 1),
    ("stats ms", 1),
    ("volume ms", 1),
    ("vol/min ms", 1),
    ("newest cpu", 1),
    ("needle cpu", 1),
    ("levels cpu", 1),
    ("stats cpu", 1),
    ("volume cpu", 1),
    ("vol/min cpu", 1),
];

/// A row of the table; `None` where the system has no such figure.
type Cells = [Option<f64>; COLUMNS.len()];

impl Measured {
    fn cells(&self, set: &LogSet) -> Cells {
        let (n, raw) = (set.n as f64, set.raw_bytes as f64);
        let searchable = self.searchable.as_secs_f64();
        let acked = self.acked.map(|a| a.as_secs_f64());
        let figures = [
            Some(n / searchable),
            acked.map(|a| n / a),
            // Without acks, searchable is the first point at which the sender knows anything.
            Some(searchable - acked.unwrap_or(searchable)),
            Some(self.cpu_s * 1e6 / n),
            Some(self.disk_bytes as f64 / raw),
            self.index_bytes.map(|b| b as f64 / raw),
            Some(self.peak_rss_kib as f64 / 1024.0),
        ];
        // Then each query's wall milliseconds, then each one's CPU milliseconds.
        let walls = self.queries.iter().map(|q| Some(q.0));
        let cpus = self.queries.iter().map(|q| Some(q.1));
        let mut cells: Cells = [None; COLUMNS.len()];
        for (cell, v) in cells
            .iter_mut()
            .zip(figures.into_iter().chain(walls).chain(cpus))
        {
            *cell = v;
        }
        cells
    }
}

fn print_table(args: &Args, set: &LogSet, rows: &[(&str, Cells)]) {
    println!(
        "{} records, {:.1} MB of raw lines over {} min; {} records per frame/insert over {} \
         connections; query times are medians of {} runs",
        set.n,
        set.raw_bytes as f64 / 1e6,
        args.span_minutes,
        args.records_per_frame,
        args.connections,
        args.query_runs
    );
    let mut header = format!("{:<20}", "system");
    for (name, _) in COLUMNS {
        header += &format!(" {name:>12}");
    }
    println!("{header}");
    let print = |name: &str, cells: &Cells, ratio: bool| {
        let mut line = format!("{name:<20}");
        for (cell, (_, decimals)) in cells.iter().zip(COLUMNS) {
            let decimals = if ratio { 2 } else { decimals };
            match cell {
                Some(v) if v.is_finite() => line += &format!(" {v:>12.decimals$}"),
                _ => line += &format!(" {:>12}", "—"),
            }
        }
        println!("{line}");
    };
    for (name, cells) in rows {
        print(name, cells, false);
    }
    // Ratios are of the first system's figures to each other's.
    let Some(((nova_name, nova), peers)) = rows.split_first() else {
        return;
    };
    for (name, cells) in peers {
        let ratio: Cells = std::array::from_fn(|i| Some(nova[i]? / cells[i]?));
        print(
            &format!("{nova_name}/{}", name.split(' ').next().unwrap_or(name)),
            &ratio,
            true,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sending and waiting, shared by novamon and ClickHouse.

/// Sends `items` over `connections` parallel connections, item i on connection i % connections,
/// each connection's items in order and each acknowledged (`send` returned) before the next.
/// Returns when the first send started and how long until the last acknowledgement.
fn send_parallel<T: Sync, C>(
    items: &[T],
    connections: usize,
    connect: impl Fn() -> anyhow::Result<C> + Sync,
    send: impl Fn(&mut C, usize, &T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(Instant, Duration)> {
    let connections = connections.max(1);
    // Connections are made before the clock starts, as a long-running client's would be.
    let ready = Barrier::new(connections + 1);
    std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..connections)
            .map(|lane| {
                let (ready, connect, send) = (&ready, &connect, &send);
                scope.spawn(move || -> anyhow::Result<()> {
                    let conn = connect();
                    ready.wait();
                    let mut conn = conn?;
                    for i in (lane..items.len()).step_by(connections) {
                        send(&mut conn, i, &items[i]).with_context(|| format!("item {i}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        for lane in lanes {
            lane.join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        Ok((started, started.elapsed()))
    })
}

/// Time from `started` until `count` says all `n` records are searchable, polling.
fn wait_searchable(
    started: Instant,
    timeout: Duration,
    n: u64,
    mut count: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<Duration> {
    loop {
        let seen = count()?;
        if seen >= n {
            ensure!(seen == n, "{seen} records searchable, {n} sent");
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < timeout,
            "only {seen} of {n} records searchable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()?)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn server_cpu(running: &Running) -> anyhow::Result<f64> {
    running
        .cpu_seconds()
        .context("cannot read the server's CPU time")
}

/// Stops the server gracefully; returns its peak RSS in KiB (read before it is gone).
fn stop(running: &mut Running, timeout: Duration) -> anyhow::Result<u64> {
    let peak_rss_kib = running.peak_rss_kib().context("no VmHWM")?;
    let how = running.stop(timeout)?;
    ensure!(
        how == "graceful",
        "the server did not stop within {timeout:?}"
    );
    Ok(peak_rss_kib)
}

/// A number JSON may carry as a number or, for 64-bit integers (ClickHouse) and sample values
/// (Loki), as a string.
fn number(v: &Value) -> anyhow::Result<f64> {
    v.as_f64()
        .or_else(|| v.as_str()?.parse().ok())
        .with_context(|| format!("not a number: {v}"))
}

fn integer(v: &Value) -> anyhow::Result<i64> {
    v.as_i64()
        .or_else(|| v.as_str()?.parse().ok())
        .with_context(|| format!("not an integer: {v}"))
}

// ---------------------------------------------------------------------------------------------
// novamon.

fn run_novamon(args: &Args, set: &LogSet, want: &Expected) -> anyhow::Result<Measured> {
    let timeout = Duration::from_secs(args.timeout);
    // peers.rs puts every novamon listener on a free loopback port.
    let mut running = Peer::novamon(args.novamon.clone(), free_port()?)
        .with_args(args.novamon_arg.iter().cloned())
        .start(timeout)?;
    let forward = running
        .arg("--forward-listen")
        .context("no --forward-listen")?
        .to_owned();
    let loki = Loki {
        http: http_client(timeout)?,
        base: running.base_url.clone(),
        set,
    };
    let frames: Vec<Vec<u8>> = set.frames("bench.logs", args.records_per_frame).collect();
    let cpu_before = server_cpu(&running)?;
    let (started, acked) = send_parallel(
        &frames,
        args.connections,
        || Forward::connect(&forward),
        |conn, i, frame: &Vec<u8>| conn.send(i, frame),
    )?;
    drop(frames);
    let searchable = wait_searchable(started, timeout, set.n, || loki.count(want))?;
    let cpu_s = server_cpu(&running)? - cpu_before;
    settle(&|| server_cpu(&running))?;
    let queries = time_queries(&loki, want, args.query_runs, &|| server_cpu(&running))?;
    // Disk use after a graceful stop, once novamon has flushed what it buffers.
    let peak_rss_kib = stop(&mut running, timeout)?;
    Ok(Measured {
        searchable,
        acked: Some(acked),
        cpu_s,
        disk_bytes: running.disk_bytes_of("logs")?,
        index_bytes: Some(running.disk_bytes_of("logs/index")?),
        peak_rss_kib,
        queries,
    })
}

/// A forward-protocol connection: frames out, acks back.
struct Forward {
    out: TcpStream,
    acks: BufReader<TcpStream>,
}

impl Forward {
    fn connect(addr: &str) -> anyhow::Result<Forward> {
        let out = TcpStream::connect(addr).context("connecting to the forward listener")?;
        Ok(Forward {
            acks: BufReader::new(out.try_clone()?),
            out,
        })
    }

    /// Sends frame `i` (its chunk id is `i`) and waits for its ack.
    fn send(&mut self, i: usize, frame: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(frame)?;
        let ack = rmpv::decode::read_value(&mut self.acks).context("reading ack")?;
        ensure!(
            ack["ack"].as_str() == Some(i.to_string().as_str()),
            "frame {i}: ack {ack}"
        );
        Ok(())
    }
}

/// novamon through its Loki API.
struct Loki<'a> {
    http: reqwest::blocking::Client,
    base: String,
    set: &'a LogSet,
}

impl Loki<'_> {
    fn get(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            q.append_pair(k, v);
        }
        let resp = self
            .http
            .get(format!("{}{path}?{}", self.base, q.finish()))
            .send()?;
        let status = resp.status();
        let text = resp.text()?;
        ensure!(status.is_success(), "{path}: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// `query` over the span with `extra` parameters. Times go as integer nanoseconds, which
    /// the API reads exactly (float seconds would move step boundaries by a few hundred ns).
    fn over_span(
        &self,
        path: &str,
        query: String,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let mut params = vec![
            ("query", query),
            ("start", self.set.start_ns.to_string()),
            ("end", self.set.end_ns.to_string()),
        ];
        params.extend_from_slice(extra);
        self.get(path, &params)
    }

    /// Records searchable now: a count per service, which keeps each query under the server's
    /// per-query line limit.
    fn count(&self, want: &Expected) -> anyhow::Result<u64> {
        let range_s = self.set.end_ns / 1_000_000_000 - self.set.start_ns / 1_000_000_000 + 60;
        let mut seen = 0;
        for service in want.services() {
            let v = self.get(
                "/loki/api/v1/query",
                &[
                    (
                        "query",
                        format!("sum(count_over_time({{service=\"{service}\"}}[{range_s}s]))"),
                    ),
                    ("time", (self.set.end_ns + 1_000_000_000).to_string()),
                ],
            )?;
            for s in v["data"]["result"].as_array().into_iter().flatten() {
                seen += number(&s["value"][1])? as u64;
            }
        }
        Ok(seen)
    }

    /// A matrix answer as [`Groups`] by `label` and minute step.
    fn matrix(&self, v: &Value, label: &str) -> anyhow::Result<Groups> {
        let mut out = Groups::new();
        for s in v["data"]["result"].as_array().context("no result")? {
            let group = s["metric"][label].as_str().context("no group label")?;
            for p in s["values"].as_array().context("no values")? {
                let t_ns = number(&p[0])? * 1e9;
                let step = ((t_ns - self.set.start_ns as f64) / MINUTE_NS as f64).round() as i64;
                match number(&p[1])? as u64 {
                    0 => {}
                    v => *out.entry((group.to_owned(), step)).or_default() += v,
                }
            }
        }
        Ok(out)
    }
}

impl Queries for Loki<'_> {
    fn lines(&self, service: &str, needle: Option<&str>) -> anyhow::Result<Lines> {
        let mut query = format!("{{service=\"{service}\"}}");
        if let Some(needle) = needle {
            query += &format!(" |= \"{needle}\"");
        }
        // A log query's end is exclusive: one past the newest record.
        let params = [
            ("query", query),
            ("start", self.set.start_ns.to_string()),
            ("end", (self.set.end_ns + 1).to_string()),
            ("limit", LIMIT.to_string()),
            ("direction", "backward".into()),
        ];
        let v = self.get("/loki/api/v1/query_range", &params)?;
        let mut out = Lines::new();
        for s in v["data"]["result"].as_array().context("no result")? {
            for e in s["values"].as_array().context("no values")? {
                let line = e[1].as_str().context("no line")?;
                out.push((integer(&e[0])?, line.to_owned()));
            }
        }
        // Each stream's lines come apart: merged newest first as the others answer.
        out.sort_by_key(|l| std::cmp::Reverse(l.0));
        Ok(out)
    }

    fn levels(&self) -> anyhow::Result<Groups> {
        let query = "sum by (level) (count_over_time({service=~\".+\"}[1m]))";
        let v = self.over_span(
            "/loki/api/v1/query_range",
            query.into(),
            &[("step", "60".into())],
        )?;
        self.matrix(&v, "level")
    }

    fn stats(&self) -> anyhow::Result<(u64, u64)> {
        let v = self.over_span("/loki/api/v1/index/stats", "{service=~\".+\"}".into(), &[])?;
        let field = |f: &str| v[f].as_u64().with_context(|| format!("no {f} in {v}"));
        // Streams and chunks have no counterpart in the others; they must merely be there.
        field("streams")?;
        field("chunks")?;
        Ok((field("entries")?, field("bytes")?))
    }

    fn volume(&self, by_minute: bool) -> anyhow::Result<Groups> {
        let query = "{service=~\".+\"}".to_string();
        if by_minute {
            let v = self.over_span(
                "/loki/api/v1/index/volume_range",
                query,
                &[("step", "60".into())],
            )?;
            return self.matrix(&v, "service");
        }
        let v = self.over_span("/loki/api/v1/index/volume", query, &[])?;
        let mut out = Groups::new();
        for s in v["data"]["result"].as_array().context("no result")? {
            let service = s["metric"]["service"].as_str().context("no service")?;
            out.insert((service.to_owned(), 0), number(&s["value"][1])? as u64);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// ClickHouse.

/// 18.16 has no DateTime64: timestamps are nanoseconds in a UInt64. The sort key is what a
/// logs table in ClickHouse is usually ordered by, the stream selector's label then time.
const CLICKHOUSE_TABLE: &str = "CREATE TABLE logs (ts UInt64, service String, level String, \
     host String, line String) ENGINE = MergeTree ORDER BY (service, ts)";

fn run_clickhouse(args: &Args, set: &LogSet, want: &Expected) -> anyhow::Result<Measured> {
    let timeout = Duration::from_secs(args.timeout);
    let mut running = Peer::clickhouse(args.clickhouse.clone(), free_port()?).start(timeout)?;
    let sql = Sql {
        http: http_client(timeout)?,
        base: running.base_url.clone(),
        set,
    };
    sql.execute(CLICKHOUSE_TABLE)?;
    // Bytes, so handing a body to a request counts a reference rather than copying it.
    let batches: Vec<Bytes> = set
        .json_rows(args.records_per_frame)
        .map(Bytes::from)
        .collect();
    let insert = format!(
        "{}/?query=INSERT%20INTO%20logs%20FORMAT%20JSONEachRow",
        sql.base
    );
    let cpu_before = server_cpu(&running)?;
    let (started, acked) = send_parallel(
        &batches,
        args.connections,
        || http_client(timeout),
        |http, _, body| {
            let resp = http.post(&insert).body(body.clone()).send()?;
            let status = resp.status();
            ensure!(status.is_success(), "insert: {status}: {}", resp.text()?);
            Ok(())
        },
    )?;
    drop(batches);
    let searchable = wait_searchable(started, timeout, set.n, || {
        let rows = sql.rows("SELECT count() AS n FROM logs")?;
        Ok(integer(&rows[0]["n"])? as u64)
    })?;
    let cpu_s = server_cpu(&running)? - cpu_before;
    settle(&|| server_cpu(&running))?;
    let queries = time_queries(&sql, want, args.query_runs, &|| server_cpu(&running))?;
    // Parts a merge replaced stay on disk for old_parts_lifetime (8 minutes) before they are
    // deleted, so `du` would count data twice: the active parts are what the table takes.
    let disk = sql.rows(
        "SELECT sum(bytes_on_disk) AS b, count() AS parts FROM system.parts \
         WHERE active AND table = 'logs'",
    )?;
    eprintln!("clickhouse: {} active parts", integer(&disk[0]["parts"])?);
    let peak_rss_kib = stop(&mut running, timeout)?;
    Ok(Measured {
        searchable,
        acked: Some(acked),
        cpu_s,
        disk_bytes: integer(&disk[0]["b"])? as u64,
        index_bytes: None,
        peak_rss_kib,
        queries,
    })
}

/// ClickHouse through its HTTP interface, answering in SQL what novamon answers in LogQL.
struct Sql<'a> {
    http: reqwest::blocking::Client,
    base: String,
    set: &'a LogSet,
}

impl Sql<'_> {
    fn execute(&self, sql: &str) -> anyhow::Result<String> {
        let resp = self.http.post(&self.base).body(sql.to_owned()).send()?;
        let status = resp.status();
        let text = resp.text()?;
        ensure!(status.is_success(), "{sql}: {status}: {text}");
        Ok(text)
    }

    /// The rows of a SELECT, as JSON objects by column name.
    fn rows(&self, select: &str) -> anyhow::Result<Vec<Value>> {
        let text = self.execute(&format!("{select} FORMAT JSON"))?;
        let mut v: Value = serde_json::from_str(&text)?;
        match v["data"].take() {
            Value::Array(rows) => Ok(rows),
            _ => bail!("{select}: no data in {text}"),
        }
    }

    /// [`Groups`] from a SELECT with columns `g` (group), `k` (step) and `v` (value).
    fn groups(&self, select: &str) -> anyhow::Result<Groups> {
        let mut out = Groups::new();
        for r in self.rows(select)? {
            let g = r["g"].as_str().context("no group")?.to_owned();
            out.insert((g, integer(&r["k"])?), integer(&r["v"])? as u64);
        }
        Ok(out)
    }

    fn span(&self) -> String {
        format!("ts BETWEEN {} AND {}", self.set.start_ns, self.set.end_ns)
    }

    /// [`minute_step`] in SQL.
    fn minute_step(&self) -> String {
        format!(
            "intDiv(ts - {} + {}, {MINUTE_NS})",
            self.set.start_ns,
            MINUTE_NS - 1
        )
    }
}

impl Queries for Sql<'_> {
    fn lines(&self, service: &str, needle: Option<&str>) -> anyhow::Result<Lines> {
        // `service` and `needle` are the generator's, no quotes in them.
        let filter = needle.map_or(String::new(), |n| format!(" AND position(line, '{n}') > 0"));
        let rows = self.rows(&format!(
            "SELECT ts, line FROM logs WHERE service = '{service}' AND {}{filter} \
             ORDER BY ts DESC LIMIT {LIMIT}",
            self.span()
        ))?;
        rows.iter()
            .map(|r| {
                Ok((
                    integer(&r["ts"])?,
                    r["line"].as_str().context("no line")?.to_owned(),
                ))
            })
            .collect()
    }

    fn levels(&self) -> anyhow::Result<Groups> {
        self.groups(&format!(
            "SELECT level AS g, {} AS k, count() AS v FROM logs WHERE {} GROUP BY g, k",
            self.minute_step(),
            self.span()
        ))
    }

    fn stats(&self) -> anyhow::Result<(u64, u64)> {
        let rows = self.rows(&format!(
            "SELECT count() AS n, sum(length(line)) AS b FROM logs WHERE {}",
            self.span()
        ))?;
        Ok((
            integer(&rows[0]["n"])? as u64,
            integer(&rows[0]["b"])? as u64,
        ))
    }

    fn volume(&self, by_minute: bool) -> anyhow::Result<Groups> {
        let step = if by_minute {
            self.minute_step()
        } else {
            "0".into()
        };
        self.groups(&format!(
            "SELECT service AS g, {step} AS k, sum(length(line)) AS v FROM logs WHERE {} \
             GROUP BY g, k",
            self.span()
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Bare tantivy, in a child process.

/// Runs this binary again as the tantivy child (same arguments, plus the data set's end so it
/// generates the same records) and returns the row it prints.
fn run_tantivy_child(end_ns: i64) -> anyhow::Result<Cells> {
    let out = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .args(["--tantivy-child", "--end-ns", &end_ns.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the tantivy child")?;
    ensure!(out.status.success(), "tantivy child: {}", out.status);
    serde_json::from_slice(&out.stdout).context("reading the tantivy child's row")
}

/// The child's side: index, query, and print the row as JSON on stdout.
fn tantivy_child(args: &Args) -> anyhow::Result<()> {
    let end_ns = args.end_ns.context("--tantivy-child needs --end-ns")?;
    let set = data_set(args, end_ns);
    let measured = run_tantivy(args, &set)?;
    println!("{}", serde_json::to_string(&measured.cells(&set))?);
    Ok(())
}

/// The fields a log store needs. `service` and `level` are fast fields too, and `len` (the
/// line's byte length) exists only as one, so the aggregations read columns instead of lines,
/// as novamon's do.
struct Fields {
    ts: Field,
    service: Field,
    level: Field,
    host: Field,
    line: Field,
    len: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let f = Fields {
            ts: b.add_i64_field("ts", INDEXED | FAST),
            service: b.add_text_field("service", STRING | FAST),
            level: b.add_text_field("level", STRING | FAST),
            host: b.add_text_field("host", STRING),
            line: b.add_text_field("line", TEXT | STORED),
            len: b.add_u64_field("len", FAST),
        };
        (b.build(), f)
    }
}

fn run_tantivy(args: &Args, set: &LogSet) -> anyhow::Result<Measured> {
    let (schema, fields) = Fields::schema();
    let dir = tempfile::tempdir()?;
    let index = Index::create_in_dir(dir.path(), schema)?;
    let (searchable, cpu_s) = index_records(&index, &fields, set)?;
    let want = Expected::of(set);
    let bare = Bare {
        searcher: index.reader()?.searcher(),
        f: fields,
        set,
    };
    // The child's own CPU: its queries run in this process.
    let own_cpu = || cpu_seconds(std::process::id()).context("cannot read /proc/self/stat");
    let queries = time_queries(&bare, &want, args.query_runs, &own_cpu)?;
    let disk_bytes = du(dir.path())?;
    Ok(Measured {
        searchable,
        acked: None,
        cpu_s,
        disk_bytes,
        index_bytes: Some(disk_bytes),
        peak_rss_kib: status_kib(std::process::id(), "VmHWM").context("no VmHWM")?,
        queries,
    })
}

/// Indexes every record through one writer and commits; returns the time spent indexing,
/// committing and merging (searchable at the commit; merges are waited for so the index on
/// disk is final), and the CPU seconds it took.
fn index_records(index: &Index, f: &Fields, set: &LogSet) -> anyhow::Result<(Duration, f64)> {
    let own_cpu = || cpu_seconds(std::process::id()).context("cannot read /proc/self/stat");
    let mut writer = index.writer::<TantivyDocument>(512 << 20)?;
    // Only indexing is timed: records are generated a batch at a time outside the clock. The
    // CPU count cannot leave generation out, so the generation's own CPU is measured first and
    // subtracted.
    let gen_started = own_cpu()?;
    for j in 0..set.n {
        std::hint::black_box(set.record(j));
    }
    let gen_cpu = own_cpu()? - gen_started;
    let cpu_started = own_cpu()?;
    let mut elapsed = Duration::ZERO;
    let mut i = 0;
    while i < set.n {
        let batch: Vec<_> = (i..(i + 1000).min(set.n)).map(|j| set.record(j)).collect();
        i += batch.len() as u64;
        let t = Instant::now();
        for r in batch {
            let mut doc = TantivyDocument::default();
            doc.add_i64(f.ts, r.ts_ns);
            doc.add_text(f.service, r.service);
            doc.add_text(f.level, r.level);
            doc.add_text(f.host, &r.host);
            doc.add_u64(f.len, r.line.len() as u64);
            doc.add_text(f.line, &r.line);
            writer.add_document(doc)?;
        }
        elapsed += t.elapsed();
    }
    let t = Instant::now();
    writer.commit()?;
    writer.wait_merging_threads()?;
    elapsed += t.elapsed();
    Ok((elapsed, own_cpu()? - cpu_started - gen_cpu))
}

/// The bare tantivy index, queried as a log store built on it would.
struct Bare<'a> {
    searcher: Searcher,
    f: Fields,
    set: &'a LogSet,
}

impl Bare<'_> {
    fn span(&self) -> Box<dyn Query> {
        Box::new(RangeQuery::new(
            std::ops::Bound::Included(Term::from_field_i64(self.f.ts, self.set.start_ns)),
            std::ops::Bound::Included(Term::from_field_i64(self.f.ts, self.set.end_ns)),
        ))
    }

    fn term(field: Field, text: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, text),
            IndexRecordOption::Basic,
        ))
    }

    fn group_by(&self, g: GroupBy) -> anyhow::Result<Counted> {
        Ok(self.searcher.search(self.span().as_ref(), &g)?)
    }
}

impl Queries for Bare<'_> {
    fn lines(&self, service: &str, needle: Option<&str>) -> anyhow::Result<Lines> {
        let mut must = vec![self.span(), Self::term(self.f.service, service)];
        // The needle is one token of the default tokenizer: a term query finds it.
        must.extend(needle.map(|n| Self::term(self.f.line, n)));
        let q = BooleanQuery::new(must.into_iter().map(|q| (Occur::Must, q)).collect());
        let top = TopDocs::with_limit(LIMIT).order_by_fast_field::<i64>("ts", Order::Desc);
        let mut out = Lines::new();
        for (ts, addr) in self.searcher.search(&q, &top)? {
            let doc: TantivyDocument = self.searcher.doc(addr)?;
            let line = doc.get_first(self.f.line).and_then(|v| v.as_str());
            out.push((ts.context("no ts")?, line.context("no line")?.to_owned()));
        }
        Ok(out)
    }

    fn levels(&self) -> anyhow::Result<Groups> {
        let counted = self.group_by(GroupBy {
            key: Some("level"),
            minutes_from: Some(self.set.start_ns),
            sum: None,
        })?;
        Ok(counted.into_iter().map(|(k, (n, _))| (k, n)).collect())
    }

    fn stats(&self) -> anyhow::Result<(u64, u64)> {
        let counted = self.group_by(GroupBy {
            key: None,
            minutes_from: None,
            sum: Some("len"),
        })?;
        Ok(counted.into_values().next().unwrap_or_default())
    }

    fn volume(&self, by_minute: bool) -> anyhow::Result<Groups> {
        let counted = self.group_by(GroupBy {
            key: Some("service"),
            minutes_from: by_minute.then_some(self.set.start_ns),
            sum: Some("len"),
        })?;
        Ok(counted.into_iter().map(|(k, (_, b))| (k, b)).collect())
    }
}

/// Per group, documents and the sum of a u64 column over them.
type Counted = BTreeMap<(String, i64), (u64, u64)>;

/// Counts the matching documents, and sums a u64 fast field over them, per value of a string
/// fast field and per minute step of `ts`: how a store on tantivy answers aggregations from
/// columns without loading the lines.
struct GroupBy {
    /// The string fast field to group by; one group ("") without.
    key: Option<&'static str>,
    /// Minute steps from here; one step (0) without.
    minutes_from: Option<i64>,
    /// The u64 fast field to sum; sums stay 0 without.
    sum: Option<&'static str>,
}

struct SegmentGroupBy {
    key: Option<StrColumn>,
    ts: Column<i64>,
    minutes_from: Option<i64>,
    sum: Option<Column<u64>>,
    /// By the key's term ordinal in this segment, turned to text once at harvest.
    groups: HashMap<(u64, i64), (u64, u64)>,
}

impl Collector for GroupBy {
    type Fruit = Counted;
    type Child = SegmentGroupBy;

    fn for_segment(&self, _: u32, segment: &SegmentReader) -> tantivy::Result<SegmentGroupBy> {
        let columns = segment.fast_fields();
        let key = match self.key {
            Some(name) => Some(columns.str(name)?.ok_or_else(|| {
                tantivy::TantivyError::SchemaError(format!("{name} is not a string fast field"))
            })?),
            None => None,
        };
        Ok(SegmentGroupBy {
            key,
            ts: columns.i64("ts")?,
            minutes_from: self.minutes_from,
            sum: self.sum.map(|name| columns.u64(name)).transpose()?,
            groups: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Counted>) -> tantivy::Result<Counted> {
        let mut out = Counted::new();
        for (k, (n, s)) in fruits.into_iter().flatten() {
            let e = out.entry(k).or_default();
            e.0 += n;
            e.1 += s;
        }
        Ok(out)
    }
}

impl SegmentCollector for SegmentGroupBy {
    type Fruit = Counted;

    fn collect(&mut self, doc: DocId, _: Score) {
        let key = self.key.as_ref().and_then(|c| c.term_ords(doc).next());
        let step = self.minutes_from.map_or(0, |from| {
            self.ts.first(doc).map_or(0, |ts| minute_step(from, ts))
        });
        let sum = self.sum.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
        let g = self.groups.entry((key.unwrap_or(0), step)).or_default();
        g.0 += 1;
        g.1 += sum;
    }

    fn harvest(self) -> Counted {
        let mut out = Counted::new();
        let mut text = String::new();
        for ((ord, step), (n, s)) in self.groups {
            text.clear();
            if let Some(key) = &self.key {
                // A column's own ordinals always resolve.
                let _ = key.ord_to_str(ord, &mut text);
            }
            let e = out.entry((text.clone(), step)).or_default();
            e.0 += n;
            e.1 += s;
        }
        out
    }
}
