//! novamon's own metrics at `/metrics`: the registry every component registers into, the
//! per-handler request counters and latency histograms, and process gauges. Owns exposition;
//! the numbers themselves belong to the components that register them (service discovery's,
//! process-wide as Prometheus's are, are `ingest::scrape::SdMetrics`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerOnly {
    handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeapLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreMemoryLabels {
    store: &'static str,
    kind: &'static str,
}

/// The stores whose RocksDB memory `/metrics` shows.
pub struct Stores {
    pub tsdb: Arc<storage::Tsdb>,
    pub traces: Arc<storage::traces::TraceStore>,
    pub logs: Arc<storage::logs::LogStore>,
}

/// Registered metrics that the HTTP layer updates.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HandlerLabels, Counter>,
    duration: Family<HandlerOnly, Histogram>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let requests = Family::<HandlerLabels, Counter>::default();
        let duration = Family::<HandlerOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        registry.register(
            "novamon_http_requests",
            "HTTP requests by handler and status code",
            requests.clone(),
        );
        registry.register(
            "novamon_http_request_duration_seconds",
            "HTTP request latency by handler",
            duration.clone(),
        );
        HttpMetrics { requests, duration }
    }
}

/// Middleware: counts and times every request under its route pattern (not its raw path, so
/// `/api/v1/label/<name>/values` is one handler, not one per label).
pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    m.duration
        .get_or_create(&HandlerOnly {
            handler: handler.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&HandlerLabels {
            handler,
            code: resp.status().as_u16().to_string(),
        })
        .inc();
    resp
}

/// Gauges read from the process and the stores at scrape time.
pub struct ScrapeTimeMetrics {
    stores: Stores,
    head_series: Gauge,
    store_memory: Family<StoreMemoryLabels, Gauge>,
    heap: Family<HeapLabels, Gauge>,
    series_refused: Counter,
    start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    resident_memory: Gauge,
}

impl ScrapeTimeMetrics {
    pub fn register(registry: &mut Registry, stores: Stores) -> ScrapeTimeMetrics {
        let m = ScrapeTimeMetrics {
            stores,
            head_series: Gauge::default(),
            store_memory: Family::default(),
            heap: Family::default(),
            series_refused: Counter::default(),
            start_time: Gauge::default(),
            resident_memory: Gauge::default(),
        };
        registry.register(
            "novamon_tsdb_head_series",
            "Series in the TSDB index",
            m.head_series.clone(),
        );
        registry.register(
            "novamon_storage_memory_bytes",
            "Memory RocksDB holds for a store, as it estimates it: memtables, table readers outside the block cache, block cache",
            m.store_memory.clone(),
        );
        registry.register(
            "novamon_heap_bytes",
            "The jemalloc heap (Rust's allocations and RocksDB's): allocated, and resident but free",
            m.heap.clone(),
        );
        registry.register(
            "novamon_tsdb_series_limit_refused",
            "New series refused because the TSDB held limits.max_active_series series",
            m.series_refused.clone(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        m.start_time.set(now.as_secs_f64());
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            m.start_time.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.resident_memory.clone(),
        );
        m
    }

    fn refresh(&self) {
        let tsdb = &self.stores.tsdb;
        self.head_series.set(tsdb.num_series() as i64);
        for (store, m) in [
            ("tsdb", tsdb.memory()),
            ("traces", self.stores.traces.memory()),
            ("log_append", self.stores.logs.memory()),
        ] {
            for (kind, bytes) in [
                ("memtables", m.memtables),
                ("table_readers", m.table_readers),
                ("block_cache", m.block_cache),
            ] {
                self.store_memory
                    .get_or_create(&StoreMemoryLabels { store, kind })
                    .set(bytes as i64);
            }
        }
        // The store counts; the exposed counter catches up at each scrape (fetch_max: two
        // concurrent scrapes cannot add the same refusals twice).
        self.series_refused
            .inner()
            .fetch_max(tsdb.series_refused(), std::sync::atomic::Ordering::Relaxed);
        let (in_use, free) = crate::heap::bytes();
        for (state, bytes) in [("in_use", in_use), ("free", free)] {
            self.heap
                .get_or_create(&HeapLabels { state })
                .set(bytes as i64);
        }
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss as i64);
        }
    }
}

fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub struct Exposition {
    pub registry: Registry,
    pub scrape_time: ScrapeTimeMetrics,
    /// Service discovery's, whose summaries are encoded apart (`registry` holds the rest).
    pub sd_metrics: Arc<ingest::scrape::SdMetrics>,
}

pub async fn serve(State(expo): State<Arc<Exposition>>) -> Response {
    expo.scrape_time.refresh();
    let mut body = String::new();
    // Service discovery's summaries are written by hand: prometheus-client has no summary.
    let encoded = prometheus_client::encoding::text::encode_registry(&mut body, &expo.registry)
        .and_then(|()| expo.sd_metrics.encode_summaries(&mut body))
        .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut body));
    if let Err(e) = encoded {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
