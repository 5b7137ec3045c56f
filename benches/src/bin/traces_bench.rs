//! Trace pipeline figures, in one process on loopback: spans/s ingested over OTLP/gRPC in
//! SDK-shaped batches (512 spans, 8-span traces over two services, 4 concurrent exporters),
//! bytes per span on disk after a flush, trace-by-id latency, Jaeger and Tempo search latency
//! and TraceQL metrics over HTTP on the stored set, and the time retention takes to drop the
//! oldest day.
//!
//! The load looks like what OpenTelemetry SDKs send: random trace and span ids, a resource
//! of twelve attributes per service instance, HTTP server roots and database client children
//! with the semantic conventions' attributes. Span start times spread evenly over the last
//! `--hours`, so the older days are whole partitions.
//!
//!   traces_bench --spans 1000000

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use storage::traces::{TraceStore, TraceStoreOptions};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    spans: usize,
    #[arg(long, default_value_t = 4)]
    exporters: usize,
    /// Span start times spread over this many hours before now.
    #[arg(long, default_value_t = 48)]
    hours: u64,
    /// The store's memtable budget (`limits.trace_write_buffer_bytes`), MiB.
    #[arg(long, default_value_t = 32)]
    write_buffer_mib: usize,
    /// Events per span, each an exception as SDKs record one (type and message attributes):
    /// what span events cost on disk.
    #[arg(long, default_value_t = 0)]
    span_events: u64,
}

const BATCH: usize = 512;
const TRACE_SPANS: usize = 8;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// SplitMix64: ids that look random (they do not compress) but are found again by number.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn trace_id(n: u64) -> Vec<u8> {
    [mix(n).to_be_bytes(), mix(!n).to_be_bytes()].concat()
}

fn span_id(trace: u64, s: u64) -> Vec<u8> {
    mix(trace.wrapping_mul(16) ^ s ^ 0x5bd1_e995)
        .to_be_bytes()
        .to_vec()
}

fn string(k: &str, v: impl Into<String>) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}

/// A resource as an SDK describes its process: twelve attributes.
fn resource(service: String, instance: u64) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", service.clone()),
            string("service.instance.id", format!("{service}-{instance:08x}")),
            string("service.version", "1.4.2"),
            string("deployment.environment", "production"),
            string("host.name", format!("node-{}", instance % 3)),
            string("host.arch", "amd64"),
            string("os.type", "linux"),
            kv("process.pid", Value::IntValue(1000 + instance as i64)),
            string("process.runtime.name", "OpenJDK Runtime Environment"),
            string("telemetry.sdk.language", "java"),
            string("telemetry.sdk.name", "opentelemetry"),
            string("telemetry.sdk.version", "1.40.0"),
        ],
        ..Default::default()
    }
}

/// Batch `b`: 64 traces, each an HTTP server root in `front-{k}` and 7 database client
/// children in `back-{k}`, each span with `events` events; trace `n` starts at
/// `t0 + n * gap_ns`.
fn batch(b: u64, t0: u64, gap_ns: u64, events: u64) -> ExportTraceServiceRequest {
    let mut front = Vec::new();
    let mut back = Vec::new();
    for t in 0..(BATCH / TRACE_SPANS) as u64 {
        let tn = b * (BATCH / TRACE_SPANS) as u64 + t;
        let start = t0 + tn * gap_ns;
        let status = if tn.is_multiple_of(50) { 500 } else { 200 };
        for s in 0..TRACE_SPANS as u64 {
            let (name, kind, attributes) = if s == 0 {
                let route = format!("/api/v1/items/{}", tn % 20);
                (
                    format!("GET {route}"),
                    2,
                    vec![
                        string("http.request.method", "GET"),
                        string("http.route", route),
                        kv("http.response.status_code", Value::IntValue(status)),
                        string("url.scheme", "https"),
                        string("client.address", format!("10.0.{}.{}", tn % 7, tn % 200)),
                        string(
                            "user_agent.original",
                            "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
                        ),
                    ],
                )
            } else {
                (
                    format!("SELECT shop.t{s}"),
                    3,
                    vec![
                        string("db.system", "postgresql"),
                        string("db.name", "shop"),
                        string("db.statement", format!("SELECT * FROM t{s} WHERE id = $1")),
                        string("server.address", "db-1"),
                        kv("server.port", Value::IntValue(5432)),
                    ],
                )
            };
            let span = Span {
                trace_id: trace_id(tn),
                span_id: span_id(tn, s),
                parent_span_id: if s == 0 { vec![] } else { span_id(tn, 0) },
                name,
                kind,
                start_time_unix_nano: start + s * 100_000,
                end_time_unix_nano: start + s * 100_000 + (tn % 1000) * 50_000,
                attributes,
                events: (0..events)
                    .map(|e| span::Event {
                        time_unix_nano: start + s * 100_000 + e * 1_000,
                        name: "exception".into(),
                        attributes: vec![
                            string("exception.type", "java.sql.SQLTransientConnectionException"),
                            string(
                                "exception.message",
                                format!("request timed out after {} ms", 30_000 + tn % 100),
                            ),
                        ],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            if s == 0 {
                front.push(span)
            } else {
                back.push(span)
            }
        }
    }
    let rs = |svc: String, spans| ResourceSpans {
        resource: Some(resource(svc, b % 16)),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "io.opentelemetry.instrumentation".into(),
                version: "2.6.0".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            rs(format!("front-{}", b % 4), front),
            rs(format!("back-{}", b % 4), back),
        ],
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Partitions on disk, from the names of their column families.
fn count_partitions(dir: &std::path::Path) -> anyhow::Result<usize> {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir)?;
    Ok(names.iter().filter(|n| n.starts_with("spans_")).count())
}

/// Bytes per span of the spans and index families (SST files after the flush).
fn print_family_sizes(dir: &std::path::Path, spans: u64) -> anyhow::Result<()> {
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, dir)?;
    let db = rocksdb::DB::open_cf_for_read_only(&opts, dir, &names, false)?;
    let mut by_kind = std::collections::BTreeMap::new();
    for name in &names {
        let cf = db.cf_handle(name).context("listed family")?;
        let bytes = db
            .property_int_value_cf(&cf, "rocksdb.total-sst-files-size")?
            .unwrap_or(0);
        let kind = name.split('_').next().unwrap_or(name).to_owned();
        *by_kind.entry(kind).or_insert(0u64) += bytes;
    }
    let parts: Vec<String> = by_kind
        .iter()
        .filter(|(_, b)| **b > 0)
        .map(|(k, b)| format!("{k} {:.1}", *b as f64 / spans as f64))
        .collect();
    println!("disk by family, bytes/span: {}", parts.join(", "));
    Ok(())
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    novamon_benches::install_tls_provider();
    let dir = tempfile::tempdir()?;
    let traces = Arc::new(TraceStore::open(
        &dir.path().join("traces"),
        TraceStoreOptions {
            write_buffer_bytes: args.write_buffer_mib << 20,
            ..TraceStoreOptions::default()
        },
    )?);
    let tsdb = Arc::new(storage::Tsdb::open(
        &dir.path().join("tsdb"),
        storage::TsdbOptions::default(),
    )?);
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let state = ingest::otlp::OtlpState::new(traces.clone(), tsdb, 64 << 20);
    // Both servers stop when the queries are done, so the store can be reopened with a
    // shorter retention.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop then too.
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc_server = tokio::spawn(ingest::otlp::serve_grpc(
        grpc,
        state,
        until_stopped(stopped.clone()),
    ));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    let gate = api::QueryGate::new(
        api::DEFAULT_MAX_CONCURRENCY,
        std::time::Duration::from_secs(120),
        &mut prometheus_client::registry::Registry::default(),
    );
    let routes = api::jaeger::routes(
        traces.clone(),
        api::TraceLimits::default(),
        gate.clone(),
        None,
    )
    .merge(api::tempo::routes(
        traces.clone(),
        api::TraceLimits::default(),
        gate,
    ));
    let http_server = tokio::spawn(
        axum::serve(http, routes)
            .with_graceful_shutdown(until_stopped(stopped))
            .into_future(),
    );

    let batches = args.spans.div_ceil(BATCH) as u64;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let traces_total = batches * (BATCH / TRACE_SPANS) as u64;
    let window_ns = args.hours * 3_600_000_000_000;
    let gap_ns = window_ns / traces_total.max(1);
    // The newest trace ends a minute before now: every span is inside every query window.
    let t0 = now - window_ns - 60_000_000_000;
    let cpu_before = novamon_benches::peers::cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for e in 0..args.exporters as u64 {
        let url = format!("http://{grpc_addr}");
        let n = args.exporters as u64;
        let events = args.span_events;
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.context("connect")?;
            let mut b = e;
            while b < batches {
                client
                    .export(batch(b, t0, gap_ns, events))
                    .await
                    .context("export")?;
                b += n;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    let spans = batches * BATCH as u64;
    let cpu = novamon_benches::peers::cpu_seconds(std::process::id())
        .zip(cpu_before)
        .map(|(after, before)| after - before)
        .context("no CPU time in /proc")?;
    println!(
        "ingest: {spans} spans in {:.1}s = {:.0} spans/s over OTLP/gRPC, {:.2} CPU µs/span \
         (the process: server and its 4 exporters)",
        elapsed.as_secs_f64(),
        spans as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / spans as f64
    );

    traces.flush()?;
    let bytes = dir_size(&dir.path().join("traces"));
    println!(
        "disk: {bytes} bytes = {:.1} bytes/span (spans, index and catalog, compressed)",
        bytes as f64 / spans as f64
    );
    let finished = traces.compact_finished()?;
    let bytes = dir_size(&dir.path().join("traces"));
    println!(
        "disk after compacting the {finished} finished partitions: {bytes} bytes = {:.1} bytes/span",
        bytes as f64 / spans as f64
    );

    let mut lat = Vec::new();
    for i in 0..1000u64 {
        let id = trace_id((i * 7919) % traces_total);
        let t = Instant::now();
        let got = traces.trace(&id)?;
        lat.push(t.elapsed());
        anyhow::ensure!(got.len() == TRACE_SPANS, "trace {i}: {} spans", got.len());
    }
    println!(
        "trace by id (store): p50 {:?} p99 {:?}",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );

    let client = reqwest::Client::new();
    let base = format!("http://{http_addr}");
    let (s_us, e_us) = (t0 / 1000, now / 1000);
    let (s_s, e_s) = (t0 / 1_000_000_000, now / 1_000_000_000 + 1);
    let hour_ago = e_s - 3600;
    let jaeger = |q: &str| format!("{base}/jaeger/api/traces?{q}&start={s_us}&end={e_us}&limit=20");
    let tempo = |q: &str| {
        format!(
            "{base}/tempo/api/search?q={}&start={s_s}&end={e_s}&limit=20",
            urlencode(q)
        )
    };
    let metrics = |q: &str| {
        format!(
            "{base}/tempo/api/metrics/query_range?q={}&start={hour_ago}&end={e_s}&step=60s",
            urlencode(q)
        )
    };
    for (what, url, count) in [
        (
            "jaeger: service, limit 20",
            jaeger("service=front-1"),
            "data",
        ),
        (
            "jaeger: service + operation",
            jaeger("service=front-1&operation=GET%20%2Fapi%2Fv1%2Fitems%2F7"),
            "data",
        ),
        (
            "jaeger: service + tag (2% of traces)",
            jaeger("service=front-1&tags=http.response.status_code%3A500"),
            "data",
        ),
        (
            "jaeger: service + minDuration 49ms (2% of traces)",
            jaeger("service=front-1&minDuration=49ms"),
            "data",
        ),
        (
            "tempo: service + attribute (2% of traces)",
            tempo(r#"{resource.service.name="front-1" && span.http.response.status_code=500}"#),
            "traces",
        ),
        (
            "tempo: resource attribute (1/16 of instances)",
            tempo(r#"{resource.service.instance.id="back-2-00000002"}"#),
            "traces",
        ),
        (
            "tempo metrics, last hour: rate() by status",
            metrics(
                r#"{resource.service.name="front-1"} | rate() by (span.http.response.status_code)"#,
            ),
            "series",
        ),
    ] {
        let mut lat = Vec::new();
        let mut found = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let response = client.get(&url).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{what}: {}",
                response.status()
            );
            let v: serde_json::Value = response.json().await?;
            lat.push(t.elapsed());
            found = v[count].as_array().map(Vec::len).unwrap_or(0);
        }
        anyhow::ensure!(found > 0, "{what}: nothing found");
        println!(
            "{what}: {found} {count}, p50 {:?} p99 {:?}",
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }

    // Retention: stop the servers, then reopen with a retention of a day; the partitions of
    // the days before are dropped at open.
    drop(client);
    stop.send(true)?;
    grpc_server.await??;
    http_server.await??;
    let traces_dir = dir.path().join("traces");
    let before = count_partitions(&traces_dir)?;
    let only = Arc::into_inner(traces).context("the store is still shared")?;
    drop(only);
    print_family_sizes(&traces_dir, spans)?;
    let t = Instant::now();
    let kept = TraceStore::open(
        &traces_dir,
        TraceStoreOptions {
            retention: Duration::from_secs(86_400),
            ..TraceStoreOptions::default()
        },
    )?;
    let took = t.elapsed();
    drop(kept);
    println!(
        "retention: reopening with a day's retention dropped {} of {before} partitions in {took:?}",
        before - count_partitions(&traces_dir)?
    );
    Ok(())
}
