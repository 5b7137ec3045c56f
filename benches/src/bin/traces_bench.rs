//! Trace pipeline figures, in one process on loopback: spans/s ingested over OTLP/gRPC in
//! SDK-shaped batches (512 spans, 8-span traces over two services, 4 concurrent exporters),
//! bytes per span on disk after a flush, trace-by-id latency and Jaeger search latency over
//! HTTP on the stored set.
//!
//!   traces_bench --spans 1000000

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use storage::traces::{TraceStore, TraceStoreOptions};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    spans: usize,
    #[arg(long, default_value_t = 4)]
    exporters: usize,
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

fn trace_id(n: u64) -> Vec<u8> {
    [n.to_be_bytes(), (n ^ 0x5bd1_e995).to_be_bytes()].concat()
}

/// Batch `b`: 64 traces, each a server root in `front-{k}` and 7 children in `back-{k}`.
fn batch(b: u64, t0: u64) -> ExportTraceServiceRequest {
    let mut front = Vec::new();
    let mut back = Vec::new();
    for t in 0..(BATCH / TRACE_SPANS) as u64 {
        let tn = b * (BATCH / TRACE_SPANS) as u64 + t;
        let start = t0 + tn * 1_000_000;
        for s in 0..TRACE_SPANS as u64 {
            let span = Span {
                trace_id: trace_id(tn),
                span_id: (tn * 16 + s + 1).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    vec![]
                } else {
                    (tn * 16 + 1).to_be_bytes().to_vec()
                },
                name: if s == 0 {
                    format!("GET /api/{}", tn % 20)
                } else {
                    format!("SELECT t{}", s)
                },
                kind: if s == 0 { 2 } else { 3 },
                start_time_unix_nano: start + s * 100_000,
                end_time_unix_nano: start + s * 100_000 + (tn % 1000) * 50_000,
                attributes: vec![
                    kv("http.method", Value::StringValue("GET".into())),
                    kv(
                        "http.status_code",
                        Value::IntValue(if tn.is_multiple_of(50) { 500 } else { 200 }),
                    ),
                    kv(
                        "net.peer.name",
                        Value::StringValue(format!("10.0.0.{}", tn % 200)),
                    ),
                ],
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
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", Value::StringValue(svc)),
                kv("host.name", Value::StringValue("bench-host".into())),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
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
        TraceStoreOptions::default(),
    )?);
    let tsdb = Arc::new(storage::Tsdb::open(
        &dir.path().join("tsdb"),
        storage::TsdbOptions::default(),
    )?);
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let state = ingest::otlp::OtlpState::new(traces.clone(), tsdb, 64 << 20);
    tokio::spawn(ingest::otlp::serve_grpc(
        grpc,
        state,
        std::future::pending(),
    ));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    let gate = api::QueryGate::new(
        api::DEFAULT_MAX_CONCURRENCY,
        std::time::Duration::from_secs(120),
        &mut prometheus_client::registry::Registry::default(),
    );
    let routes = api::jaeger::routes(traces.clone(), api::TraceLimits::default(), gate);
    tokio::spawn(async move { axum::serve(http, routes).await });

    let batches = args.spans.div_ceil(BATCH) as u64;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let t0 = now - batches * (BATCH / TRACE_SPANS) as u64 * 1_000_000 - 60_000_000_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for e in 0..args.exporters as u64 {
        let url = format!("http://{grpc_addr}");
        let n = args.exporters as u64;
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.context("connect")?;
            let mut b = e;
            while b < batches {
                client.export(batch(b, t0)).await.context("export")?;
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
    println!(
        "ingest: {spans} spans in {:.1}s = {:.0} spans/s over OTLP/gRPC",
        elapsed.as_secs_f64(),
        spans as f64 / elapsed.as_secs_f64()
    );

    traces.flush()?;
    let bytes = dir_size(&dir.path().join("traces"));
    println!(
        "disk: {bytes} bytes = {:.1} bytes/span (spans, index and catalog, lz4)",
        bytes as f64 / spans as f64
    );

    let traces_total = batches * (BATCH / TRACE_SPANS) as u64;
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
    let base = format!("http://{http_addr}/jaeger/api/traces");
    let (s_us, e_us) = (t0 / 1000, now / 1000);
    for (what, q) in [
        (
            "service, limit 20",
            format!("service=front-1&start={s_us}&end={e_us}&limit=20"),
        ),
        (
            "service+operation",
            format!("service=front-1&operation=GET%20%2Fapi%2F7&start={s_us}&end={e_us}&limit=20"),
        ),
        (
            "service+tag error (2% of traces)",
            format!("service=front-1&tags=http.status_code%3A500&start={s_us}&end={e_us}&limit=20"),
        ),
        (
            "service+minDuration 49ms (2% of traces)",
            format!("service=front-1&minDuration=49ms&start={s_us}&end={e_us}&limit=20"),
        ),
    ] {
        let mut lat = Vec::new();
        let mut found = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let v: serde_json::Value = client
                .get(format!("{base}?{q}"))
                .send()
                .await?
                .json()
                .await?;
            lat.push(t.elapsed());
            found = v["data"].as_array().map(Vec::len).unwrap_or(0);
        }
        println!(
            "jaeger search {what}: {found} traces, p50 {:?} p99 {:?}",
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }
    Ok(())
}
