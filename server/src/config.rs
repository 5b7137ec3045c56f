//! The configuration file: Prometheus's `prometheus.yml` shape where the concept exists
//! (`global`, `rule_files`, `alerting`, `remote_write`, `scrape_configs`) plus novamon's own
//! sections (`storage`, `listeners`, `otlp`, `query`, `limits`, `traces`, `logs`,
//! `alertmanager`, `forward`). Owns parsing, defaults and validation; knows nothing about how
//! the settings are used. Every budget and size limit is in `limits` ([`Limits`]).
//!
//! Unknown keys are errors everywhere we model a section. Service discoveries in
//! `scrape_configs` other than `static_configs` and `file_sd_configs` are accepted, so an
//! existing prometheus.yml loads, and reported once at start-up. `scrape_configs` and
//! `remote_write` are checked by `ingest::scrape` and `ingest::forward` and kept as written, so
//! their secrets render masked. Keys that moved
//! (`traces.otlp`, `traces.otlp.max_message_bytes`, `logs.max_query_lines`,
//! `logs.forward.max_frame_bytes`) are still read, moved to their new place by [`Config::parse`]
//! and reported once at start-up as deprecated ([`Config::deprecated_keys`]); setting one in
//! both places is an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The embedded default: what `novamon` with no arguments runs on.
pub const DEFAULT_CONFIG: &str = include_str!("default.yml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was loaded from (None for the embedded default): what a reload re-reads
    /// and what relative `rule_files` are resolved against.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub global: Global,
    #[serde(default)]
    pub rule_files: Vec<String>,
    #[serde(default)]
    pub alerting: Option<alertmanager::AlertingConfig>,
    #[serde(default)]
    pub remote_write: Vec<PassThrough<PrometheusSecrets>>,
    #[serde(default)]
    pub scrape_configs: Vec<PassThrough<PrometheusSecrets>>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub listeners: Listeners,
    #[serde(default)]
    pub otlp: Otlp,
    #[serde(default)]
    pub query: Query,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub traces: Traces,
    #[serde(default)]
    pub logs: Logs,
    #[serde(default)]
    pub alertmanager: Alertmanager,
    #[serde(default)]
    pub elasticsearch: Elasticsearch,
    /// Logs and traces forwarded to other receivers (`ingest::forward::ForwardConfig`),
    /// checked by `ingest::forward` and kept as written, so its secrets render masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<PassThrough<PrometheusSecrets>>,
    /// Finished days exported as Parquet (`crate::export`); off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<crate::export::ExportConfig>,
    /// Deprecated keys this config used, each already moved to its new place by `parse`.
    #[serde(skip)]
    deprecated: Vec<Deprecation>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    pub scrape_interval: PromDuration,
    pub scrape_timeout: PromDuration,
    pub evaluation_interval: PromDuration,
    pub external_labels: std::collections::BTreeMap<String, String>,
    pub query_log_file: Option<String>,
    /// How far back rule groups without their own `query_offset` evaluate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_query_offset: Option<PromDuration>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            scrape_interval: PromDuration(Duration::from_secs(60)),
            scrape_timeout: PromDuration(Duration::from_secs(10)),
            evaluation_interval: PromDuration(Duration::from_secs(60)),
            external_labels: Default::default(),
            query_log_file: None,
            rule_query_offset: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Where every store keeps its files.
    pub path: PathBuf,
    pub retention: PromDuration,
    pub out_of_order_window: PromDuration,
    /// Series with no sample for this long leave memory; queries still find them on disk.
    pub head_window: PromDuration,
    /// fsync RocksDB's WAL on every write: survives power loss, not only a crash, at a cost.
    pub wal_fsync: bool,
    pub flush_interval: PromDuration,
    /// How often a checkpoint also writes the open (still filling) chunks and truncates the
    /// WAL; between, checkpoints write only chunks that were cut. Bounds what a restart after
    /// a crash replays.
    pub open_chunk_interval: PromDuration,
    /// Newest exemplars kept per series; 0 stores none.
    pub max_exemplars_per_series: usize,
}

impl Default for Storage {
    fn default() -> Self {
        let tsdb = storage::TsdbOptions::default();
        Storage {
            path: PathBuf::from("./data"),
            retention: PromDuration(tsdb.retention),
            out_of_order_window: PromDuration(tsdb.out_of_order_window),
            head_window: PromDuration(tsdb.head_window),
            wal_fsync: tsdb.wal_fsync,
            flush_interval: PromDuration(tsdb.flush_interval),
            open_chunk_interval: PromDuration(tsdb.open_chunk_interval),
            max_exemplars_per_series: tsdb.max_exemplars_per_series,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    pub http: SocketAddr,
    /// A listener of its own for the Elasticsearch API (e.g. `0.0.0.0:9200`), serving it at
    /// its root so shippers and runbooks pointed at Elasticsearch need no path; the API is
    /// also under `elasticsearch.path_prefix` on `http`. Off unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<SocketAddr>,
    /// A web config file in Prometheus's `--web.config.file` format: TLS and authentication
    /// of the HTTP, OTLP/HTTP and OTLP/gRPC listeners. `--web.config.file` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_config: Option<PathBuf>,
    /// The Postgres wire protocol (SQL over metrics, logs and spans), e.g. `0.0.0.0:5432`.
    /// Off unless set: the box may already run Postgres on 5432, and without TLS a password
    /// would cross the network in clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<SocketAddr>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            http: SocketAddr::from(([0, 0, 0, 0], 9090)),
            elasticsearch: None,
            web_config: None,
            postgres: None,
        }
    }
}

/// The Elasticsearch-compatible API (bulk ingest, search) over the log store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Elasticsearch {
    /// Where the API is mounted on the HTTP listener (`/es/_bulk`, `/es/_search`).
    pub path_prefix: String,
    /// The document field that is a record's time, on ingest and in searches.
    pub timestamp_field: String,
}

impl Default for Elasticsearch {
    fn default() -> Self {
        Elasticsearch {
            path_prefix: "/es".into(),
            timestamp_field: "@timestamp".into(),
        }
    }
}

impl Elasticsearch {
    fn validate(&self) -> Result<(), String> {
        let p = &self.path_prefix;
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
            return Err(format!(
                "elasticsearch.path_prefix {p:?}: must start with / and name a path, as /es"
            ));
        }
        if self.timestamp_field.is_empty() {
            return Err("elasticsearch.timestamp_field must not be empty".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Query {
    pub lookback_delta: PromDuration,
    pub max_samples: usize,
    pub timeout: PromDuration,
    /// PromQL and LogQL queries evaluated at once; more wait, each at most its timeout
    /// (Prometheus's --query.max-concurrency).
    pub max_concurrency: usize,
}

impl Default for Query {
    fn default() -> Self {
        let engine = promql::EngineOptions::default();
        Query {
            lookback_delta: PromDuration(engine.lookback_delta),
            max_samples: engine.max_samples,
            timeout: PromDuration(engine.timeout),
            max_concurrency: api::DEFAULT_MAX_CONCURRENCY,
        }
    }
}

/// Every budget and size limit of novamon, in one place: request sizes, scan budgets, memory
/// and queue sizes, and the periods of background passes. The two query budgets Prometheus
/// has flags for stay in `query:` under Prometheus's names (`query.max_samples`,
/// `query.timeout`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest remote-write body accepted, after snappy decompression (413 above).
    pub remote_write_max_bytes: u64,
    /// Most series in one remote-write request (400 above), counted before decoding.
    pub remote_write_max_series_per_request: usize,
    /// Most labels per remote-written series; a series with more is invalid (Mimir's
    /// max_label_names_per_series).
    pub remote_write_max_labels_per_series: usize,
    /// Longest remote-written label name in bytes; longer makes the series invalid.
    pub remote_write_max_label_name_length: usize,
    /// Longest remote-written label value in bytes; longer makes the series invalid.
    pub remote_write_max_label_value_length: usize,
    /// Most series the TSDB holds in memory (`novamon_tsdb_head_series`); samples of new
    /// series beyond it are refused (remote-write: 400 with the other samples written; OTLP:
    /// partial success) while existing series keep flowing. 0: no limit, as in Prometheus.
    pub max_active_series: usize,
    /// Most bytes of decoded structures per byte of (decompressed) protobuf or msgpack, for
    /// remote-write, OTLP, Loki push and forward frames (400 above, checked before decoding).
    pub ingest_max_expansion: usize,
    /// Most spans in one OTLP trace export (400 / INVALID_ARGUMENT above).
    pub otlp_max_spans_per_request: usize,
    /// Largest OTLP request accepted (gRPC message or HTTP body), decompressed.
    pub otlp_max_message_bytes: u64,
    /// Largest Loki push body accepted, as sent and decompressed.
    pub loki_push_max_bytes: u64,
    /// Largest scrape response body, uncompressed: the ceiling on a job's `body_size_limit`
    /// and the limit of jobs without one (Prometheus has none).
    pub scrape_max_body_bytes: u64,
    /// Largest Pushgateway push body, as sent and after gzip (413 above).
    pub push_max_bytes: u64,
    /// Longest log line accepted (Loki's max_line_size): Loki push answers 400, forward
    /// frames are refused, OTLP records rejected.
    pub log_max_line_bytes: usize,
    /// How far ahead of the clock a log timestamp may be (Loki's creation_grace_period);
    /// timestamps older than `logs.retention` are refused the same way.
    pub log_max_future: PromDuration,
    /// Largest forward protocol frame; a larger one closes the connection.
    pub forward_max_frame_bytes: u64,
    /// Largest payload one CompressedPackedForward frame may decompress to.
    pub forward_max_decompressed_bytes: u64,
    /// Forward connections served at once; more clients wait in the kernel's backlog.
    pub forward_max_connections: usize,
    /// How long a forward client has to finish the TLS handshake.
    pub forward_tls_handshake_timeout: PromDuration,
    /// With a shared key, how long a forward client has to send its PING after HELO.
    pub forward_handshake_timeout: PromDuration,
    /// How long a forward frame may take to arrive whole once its first byte has.
    pub forward_frame_timeout: PromDuration,
    /// How long a forward connection may stay idle between frames before it is closed.
    pub forward_idle_timeout: PromDuration,
    /// Most entries (events) in one forward frame; a frame with more closes the connection.
    pub forward_max_frame_entries: usize,
    /// Most log lines one LogQL metric query may read; more fails the query.
    pub log_query_max_lines: usize,
    /// Most lines a LogQL log query may ask for (its `limit`): Loki's
    /// `max_entries_limit_per_query`.
    pub log_query_max_entries: usize,
    /// Most series a LogQL metric query may answer: Loki's `max_query_series`.
    pub log_query_max_series: usize,
    /// Most spans one trace search (Jaeger, Tempo) or Jaeger dependency graph reads; the
    /// answer holds what was found within it.
    pub trace_search_max_spans: usize,
    /// Most values per attribute that Tempo's tag-values endpoints read.
    pub trace_tag_values_max: usize,
    /// Heap of a log partition's index writer (tantivy), shared by its two indexing threads.
    pub log_index_writer_bytes: u64,
    /// Records moved from the append log into the index per batch.
    pub log_index_batch_records: usize,
    /// Log records acknowledged but not yet indexed at which log writes wait for the indexer.
    pub log_max_unindexed_records: usize,
    /// How long appended log records may wait before the indexer makes them searchable.
    pub log_index_interval: PromDuration,
    /// Memtable size of the log append log: about the most WAL bytes kept for indexed records.
    pub log_append_buffer_bytes: u64,
    /// Dead SST bytes in the log append log above which the indexed range is compacted away.
    pub log_append_compact_bytes: u64,
    /// Block cache of the TSDB's RocksDB, shared by its column families; index and filter
    /// blocks are cached in it too, so RocksDB's memory stays within the memtables and this.
    pub tsdb_block_cache_bytes: u64,
    /// Block cache of the trace store's RocksDB.
    pub trace_block_cache_bytes: u64,
    /// Block cache of the log append log's RocksDB.
    pub log_append_block_cache_bytes: u64,
    /// Memtable budget of the TSDB's RocksDB (all its column families together).
    pub tsdb_write_buffer_bytes: u64,
    /// Memtable budget of the trace store's RocksDB.
    pub trace_write_buffer_bytes: u64,
    /// How often spans older than `traces.retention` are deleted (and the partitions finished
    /// since compacted).
    pub trace_retention_interval: PromDuration,
    /// Alerts queued for the external Alertmanagers of `alerting:`; the oldest are dropped
    /// beyond it (Prometheus's --alertmanager.notification-queue-capacity).
    pub alert_queue_capacity: usize,
    /// Most alerts sent to an external Alertmanager in one request.
    pub alert_batch_size: usize,
    /// Connections the main HTTP listener serves at once; more wait in the kernel's backlog.
    pub http_max_connections: usize,
    /// Connections each OTLP listener (gRPC, HTTP) serves at once.
    pub otlp_max_connections: usize,
    /// Connections the Postgres listener serves at once; one more is refused with
    /// Postgres's "sorry, too many clients already" (its `max_connections`, 100 by default).
    pub postgres_max_connections: usize,
    /// How long a client of the HTTP and OTLP listeners has for its TLS handshake and for
    /// each request's headers; an HTTP/1 keep-alive connection idle this long is closed.
    pub http_header_read_timeout: PromDuration,
    /// How long a connection of the HTTP and OTLP listeners (HTTP/1 or HTTP/2, gRPC
    /// included) may go without a request in flight before it is closed (Go's
    /// `http.Server.IdleTimeout`).
    pub http_idle_timeout: PromDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            remote_write_max_bytes: 32 << 20,
            remote_write_max_series_per_request: 100_000,
            remote_write_max_labels_per_series: 64,
            remote_write_max_label_name_length: 1024,
            remote_write_max_label_value_length: 16384,
            max_active_series: 0,
            ingest_max_expansion: ingest::DEFAULT_MAX_EXPANSION,
            otlp_max_message_bytes: 16 << 20,
            otlp_max_spans_per_request: ingest::otlp::DEFAULT_MAX_SPANS,
            loki_push_max_bytes: 64 << 20,
            scrape_max_body_bytes: ingest::scrape::DEFAULT_MAX_BODY_BYTES,
            push_max_bytes: 16 << 20,
            log_max_line_bytes: ingest::logs::DEFAULT_MAX_LINE_BYTES,
            log_max_future: PromDuration(ingest::logs::DEFAULT_MAX_FUTURE),
            forward_max_frame_bytes: 16 << 20,
            forward_max_decompressed_bytes: 16 << 20,
            forward_max_connections: 1024,
            forward_tls_handshake_timeout: PromDuration(Duration::from_secs(10)),
            forward_handshake_timeout: PromDuration(Duration::from_secs(10)),
            forward_frame_timeout: PromDuration(Duration::from_secs(60)),
            forward_idle_timeout: PromDuration(ingest::logs::forward::DEFAULT_IDLE_TIMEOUT),
            forward_max_frame_entries: 1_000_000,
            log_query_max_lines: 5_000_000,
            log_query_max_entries: 5000,
            log_query_max_series: 500,
            trace_search_max_spans: 200_000,
            trace_tag_values_max: 1000,
            log_index_writer_bytes: 64 << 20,
            log_index_batch_records: 100_000,
            log_max_unindexed_records: 500_000,
            log_index_interval: PromDuration(Duration::from_millis(200)),
            log_append_buffer_bytes: 16 << 20,
            log_append_compact_bytes: 32 << 20,
            tsdb_block_cache_bytes: 32 << 20,
            trace_block_cache_bytes: 16 << 20,
            log_append_block_cache_bytes: 8 << 20,
            tsdb_write_buffer_bytes: 64 << 20,
            trace_write_buffer_bytes: 32 << 20,
            trace_retention_interval: PromDuration(Duration::from_secs(600)),
            alert_queue_capacity: 10_000,
            alert_batch_size: 256,
            http_max_connections: 1024,
            otlp_max_connections: 1024,
            postgres_max_connections: 100,
            http_header_read_timeout: PromDuration(Duration::from_secs(30)),
            http_idle_timeout: PromDuration(crate::web::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// tantivy refuses an index writer with less than 15 MB per indexing thread; the log store
/// indexes with two.
const MIN_LOG_INDEX_WRITER_BYTES: u64 = 2 * 15_000_000;

impl Limits {
    /// Values the stores and listeners cannot run with, refused at load. (Durations need no
    /// check: `parse_duration` already refuses 0s, with the key and line.)
    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("remote_write_max_bytes", self.remote_write_max_bytes),
            (
                "remote_write_max_series_per_request",
                self.remote_write_max_series_per_request as u64,
            ),
            (
                "remote_write_max_labels_per_series",
                self.remote_write_max_labels_per_series as u64,
            ),
            (
                "remote_write_max_label_name_length",
                self.remote_write_max_label_name_length as u64,
            ),
            (
                "remote_write_max_label_value_length",
                self.remote_write_max_label_value_length as u64,
            ),
            ("ingest_max_expansion", self.ingest_max_expansion as u64),
            (
                "otlp_max_spans_per_request",
                self.otlp_max_spans_per_request as u64,
            ),
            ("log_max_line_bytes", self.log_max_line_bytes as u64),
            (
                "forward_max_frame_entries",
                self.forward_max_frame_entries as u64,
            ),
            ("otlp_max_message_bytes", self.otlp_max_message_bytes),
            ("loki_push_max_bytes", self.loki_push_max_bytes),
            ("scrape_max_body_bytes", self.scrape_max_body_bytes),
            ("push_max_bytes", self.push_max_bytes),
            ("forward_max_frame_bytes", self.forward_max_frame_bytes),
            (
                "forward_max_decompressed_bytes",
                self.forward_max_decompressed_bytes,
            ),
            (
                "forward_max_connections",
                self.forward_max_connections as u64,
            ),
            ("log_query_max_lines", self.log_query_max_lines as u64),
            (
                "log_index_batch_records",
                self.log_index_batch_records as u64,
            ),
            (
                "log_max_unindexed_records",
                self.log_max_unindexed_records as u64,
            ),
            ("log_append_buffer_bytes", self.log_append_buffer_bytes),
            ("tsdb_write_buffer_bytes", self.tsdb_write_buffer_bytes),
            ("trace_write_buffer_bytes", self.trace_write_buffer_bytes),
            ("trace_search_max_spans", self.trace_search_max_spans as u64),
            ("trace_tag_values_max", self.trace_tag_values_max as u64),
            ("alert_queue_capacity", self.alert_queue_capacity as u64),
            ("alert_batch_size", self.alert_batch_size as u64),
            ("http_max_connections", self.http_max_connections as u64),
            ("otlp_max_connections", self.otlp_max_connections as u64),
            (
                "postgres_max_connections",
                self.postgres_max_connections as u64,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{key} must be greater than 0"));
        }
        if self.log_index_writer_bytes < MIN_LOG_INDEX_WRITER_BYTES {
            return Err(format!(
                "limits.log_index_writer_bytes must be at least {MIN_LOG_INDEX_WRITER_BYTES} (the index needs 15 MB per indexing thread, and uses two)"
            ));
        }
        Ok(())
    }
}

/// The OTLP receiver: metrics, logs and traces arrive on these listeners.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// OTLP/gRPC listener (the OTLP default port 4317).
    pub grpc: SocketAddr,
    /// OTLP/HTTP listener (port 4318); `/v1/*` is also served on the main HTTP listener.
    pub http: SocketAddr,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            grpc: SocketAddr::from(([0, 0, 0, 0], 4317)),
            http: SocketAddr::from(([0, 0, 0, 0], 4318)),
        }
    }
}

/// The trace store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Traces {
    /// How long spans are kept, by start time.
    pub retention: PromDuration,
    /// Deprecated: the OTLP listeners' old place. `parse` moves it to the top-level `otlp`
    /// (and its `max_message_bytes` to `limits.otlp_max_message_bytes`), leaving None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<LegacyTracesOtlp>,
    pub metrics_generator: MetricsGenerator,
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            retention: PromDuration(storage::traces::TraceStoreOptions::default().retention),
            otlp: None,
            metrics_generator: MetricsGenerator::default(),
        }
    }
}

/// Span metrics and service graphs written into the TSDB from the spans stored
/// (`ingest::spanmetrics`), as Tempo's metrics-generator makes them; on by default. The
/// defaults are Tempo's but for `max_active_series`, which Tempo leaves unlimited.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsGenerator {
    pub enabled: bool,
    /// How often the series are appended.
    pub collection_interval: PromDuration,
    /// A series no span updated for this long is dropped.
    pub stale_duration: PromDuration,
    /// Most series held (each histogram bucket, `_sum` and `_count` counts); spans that
    /// would add more are dropped and counted.
    pub max_active_series: usize,
    pub span_metrics: SpanMetricsGenerator,
    pub service_graphs: ServiceGraphsGenerator,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsGenerator {
    /// `traces_spanmetrics_latency` bucket bounds, in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Span or resource attributes added as labels (`.` becomes `_`).
    pub dimensions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphsGenerator {
    /// `traces_service_graph_request_{server,client}_seconds` bucket bounds, in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Span or resource attributes added as labels.
    pub dimensions: Vec<String>,
    /// How long a client or server span waits for its other side.
    pub wait: PromDuration,
    /// Most spans waiting for their other side; more are dropped and counted.
    pub max_items: usize,
}

impl Default for MetricsGenerator {
    fn default() -> Self {
        let d = ingest::spanmetrics::Options::default();
        MetricsGenerator {
            enabled: true,
            collection_interval: PromDuration(d.collection_interval),
            stale_duration: PromDuration(d.stale_duration),
            max_active_series: d.max_active_series,
            span_metrics: SpanMetricsGenerator {
                histogram_buckets: d.span_buckets,
                dimensions: d.span_dimensions,
            },
            service_graphs: ServiceGraphsGenerator {
                histogram_buckets: d.graph_buckets,
                dimensions: d.graph_dimensions,
                wait: PromDuration(d.graph_wait),
                max_items: d.graph_max_items,
            },
        }
    }
}

impl Default for SpanMetricsGenerator {
    fn default() -> Self {
        MetricsGenerator::default().span_metrics
    }
}

impl Default for ServiceGraphsGenerator {
    fn default() -> Self {
        MetricsGenerator::default().service_graphs
    }
}

impl MetricsGenerator {
    /// The generator's options, None when it is off.
    pub fn options(&self) -> Option<ingest::spanmetrics::Options> {
        self.enabled.then(|| ingest::spanmetrics::Options {
            collection_interval: self.collection_interval.0,
            stale_duration: self.stale_duration.0,
            max_active_series: self.max_active_series,
            span_buckets: self.span_metrics.histogram_buckets.clone(),
            span_dimensions: self.span_metrics.dimensions.clone(),
            graph_buckets: self.service_graphs.histogram_buckets.clone(),
            graph_dimensions: self.service_graphs.dimensions.clone(),
            graph_wait: self.service_graphs.wait.0,
            graph_max_items: self.service_graphs.max_items,
        })
    }
}

/// The deprecated `traces.otlp` section, as it was.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LegacyTracesOtlp {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub max_message_bytes: Option<u64>,
}

/// The log store, the Fluentd forward listener and how records become streams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logs {
    /// Whole days of logs older than this are dropped.
    pub retention: PromDuration,
    /// Record keys whose values become stream labels (besides `tag`).
    pub label_keys: Vec<String>,
    /// Deprecated: moved to `limits.log_query_max_lines` by `parse`, leaving None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_query_lines: Option<usize>,
    pub forward: Forward,
    pub redact: Redact,
    /// Adds Loki 3's `detected_level` structured metadata to every record that lacks it
    /// (Loki's `discover_log_levels`), which Grafana's log volume and Logs Drilldown use.
    pub discover_log_levels: bool,
}

/// Redaction of log lines and structured metadata at ingest (`ingest::logs::redact`): the
/// presets listed, then `rules` in order. Nothing is redacted by default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redact {
    pub presets: Vec<ingest::logs::redact::Preset>,
    pub rules: Vec<RedactRule>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// The `rule` label of `novamon_log_redactions_total`; `rule_<index>` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Rust `regex` syntax.
    pub regex: String,
    /// `$1` and `${name}` expand to the match's groups.
    pub replacement: String,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            retention: PromDuration(storage::logs::LogOptions::default().retention),
            label_keys: ingest::logs::Mapping::default().label_keys,
            max_query_lines: None,
            forward: Forward::default(),
            redact: Redact::default(),
            discover_log_levels: true,
        }
    }
}

/// The Fluentd Forward Protocol v1 listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forward {
    pub listen: SocketAddr,
    /// When set, clients must pass the HELO/PING/PONG handshake with this key.
    pub shared_key: Option<Secret>,
    /// When non-empty, the handshake also requires one of these users (needs `shared_key`).
    pub users: Vec<ForwardUser>,
    /// When set, the listener speaks TLS with this certificate.
    pub tls: Option<ForwardTls>,
    pub self_hostname: String,
    /// Deprecated: moved to `limits.forward_max_frame_bytes` by `parse`, leaving None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardUser {
    pub username: String,
    pub password: Secret,
}

/// PEM files: the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for Forward {
    fn default() -> Self {
        let d = ingest::logs::forward::ForwardOptions::default();
        Forward {
            listen: SocketAddr::from(([0, 0, 0, 0], 24224)),
            shared_key: d.shared_key.map(Secret),
            users: Vec::new(),
            tls: None,
            self_hostname: d.self_hostname,
            max_frame_bytes: None,
        }
    }
}

/// The built-in Alertmanager: on by default with a route to no receiver, so alerts are
/// accepted and listed but sent nowhere until a config names receivers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alertmanager {
    pub enabled: bool,
    /// An alertmanager.yml to load (relative paths from the working directory).
    pub config_file: Option<PathBuf>,
    /// The same, inline; exclusive with `config_file`.
    pub config: Option<PassThrough<AlertmanagerSecrets>>,
    /// The URL notifications link back to (Alertmanager's --web.external-url).
    pub external_url: String,
}

impl Default for Alertmanager {
    fn default() -> Self {
        Alertmanager {
            enabled: true,
            config_file: None,
            config: None,
            external_url: String::new(),
        }
    }
}

/// A key or password from the config: read as written, printed as `<secret>` by every
/// rendering of the config (the status API, `Debug`, log lines), as Prometheus's
/// `config.Secret` is. Only [`Secret::expose`] gives the value, to what uses it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What every rendering of a secret shows.
const MASK: &str = "<secret>";

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

/// YAML the config carries without modelling it (the inline Alertmanager config, the
/// Prometheus sections novamon does not act on): kept as written for what reads it, rendered
/// (serialized, `Debug`) with the secrets `M` knows replaced by `<secret>`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct PassThrough<M> {
    value: serde_yaml::Value,
    #[serde(skip)]
    mask: std::marker::PhantomData<M>,
}

/// Which values of a pass-through document are secrets.
pub trait MaskSecrets {
    fn mask(doc: &mut serde_yaml::Value);
}

impl<M: MaskSecrets> PassThrough<M> {
    /// The document as written, secrets included.
    pub fn expose(&self) -> &serde_yaml::Value {
        &self.value
    }

    fn masked(&self) -> serde_yaml::Value {
        let mut v = self.value.clone();
        M::mask(&mut v);
        v
    }
}

impl<M: MaskSecrets> Serialize for PassThrough<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.masked().serialize(s)
    }
}

impl<M: MaskSecrets> std::fmt::Debug for PassThrough<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.masked().fmt(f)
    }
}

/// An inline alertmanager.yml: Alertmanager's own `Secret` and `SecretURL` fields.
#[derive(Clone)]
pub struct AlertmanagerSecrets;

impl MaskSecrets for AlertmanagerSecrets {
    fn mask(doc: &mut serde_yaml::Value) {
        alertmanager::mask_secrets(doc)
    }
}

/// A `remote_write` or `scrape_configs` entry: the fields Prometheus types as `Secret` in its
/// HTTP client, TLS, OAuth2, SigV4 and service-discovery configs, wherever they appear.
#[derive(Clone)]
pub struct PrometheusSecrets;

impl MaskSecrets for PrometheusSecrets {
    fn mask(doc: &mut serde_yaml::Value) {
        /// Secrets by key, in any mapping.
        const ANYWHERE: &[&str] = &[
            "password",
            "bearer_token",
            "credentials",
            "client_secret",
            "secret_key",
            "token",
        ];
        /// Secrets whose key is only one inside the mapping named first (`tls_config.key`, the
        /// private key inline; elsewhere `key` is an ordinary name).
        const NESTED: &[(&str, &str)] = &[("tls_config", "key")];
        fn walk(v: &mut serde_yaml::Value, parent: &str) {
            match v {
                serde_yaml::Value::Mapping(m) => {
                    for (k, v) in m.iter_mut() {
                        let k = k.as_str().unwrap_or_default();
                        let secret = ANYWHERE.contains(&k) || NESTED.contains(&(parent, k));
                        if secret && v.as_str().is_some_and(|s| !s.is_empty()) {
                            *v = serde_yaml::Value::String(MASK.into());
                        } else {
                            walk(v, k);
                        }
                    }
                }
                serde_yaml::Value::Sequence(s) => s.iter_mut().for_each(|v| walk(v, parent)),
                _ => {}
            }
        }
        walk(doc, "")
    }
}

/// A duration in Prometheus's notation (`90s`, `1h30m`, `15d`), printed back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromDuration(pub Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&promql_parser::util::display_duration(&self.0))
    }
}

/// Prometheus durations; unlike the query API, a config file takes no bare numbers.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.parse::<f64>().is_ok() {
        return Err(format!(
            "not a valid duration string: {s:?} (use a unit, e.g. 30s, 15d)"
        ));
    }
    promql_parser::util::parse_duration(s)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `path` is the offending key (`storage.retention`); serde_yaml's message gives its line.
    #[error("invalid config {origin}: {path}: {source}")]
    Parse {
        origin: String,
        path: String,
        source: serde_yaml::Error,
    },
    /// Well-formed, but the values do not go together (or cannot work).
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A key that moved: the config used `old`, which `parse` read into `new`. Displayed as the
/// start-up warning that tells to move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecation {
    pub old: &'static str,
    pub new: &'static str,
}

impl std::fmt::Display for Deprecation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.new.contains('.') {
            write!(
                f,
                "config key {} is deprecated: move it to {}",
                self.old, self.new
            )
        } else {
            write!(
                f,
                "config section {} is deprecated: move it to the top-level `{}:` section",
                self.old, self.new
            )
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(DEFAULT_CONFIG, "(embedded default)"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let mut config = Config::parse(&text, &p.display().to_string())?;
                config.source = Some(p.to_owned());
                Ok(config)
            }
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // An empty file is a valid (all-defaults) config, as in Prometheus.
        if text.trim().is_empty() {
            return Config::parse("{}", origin);
        }
        let mut config: Config = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            path: e.path().to_string(),
            source: e.into_inner(),
        })?;
        // Which keys the file spells out, to tell a new key that is set from its default.
        let raw: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        config.move_deprecated(&raw).map_err(invalid)?;
        config.limits.validate().map_err(invalid)?;
        config.elasticsearch.validate().map_err(invalid)?;
        config.log_redactor().map_err(invalid)?;
        config.scrape().map_err(invalid)?;
        config.remote_write().map_err(invalid)?;
        config.forward().map_err(invalid)?;
        if let Some(o) = config.traces.metrics_generator.options() {
            o.validate()
                .map_err(|e| invalid(format!("traces.metrics_generator: {e}")))?;
        }
        if config.query.max_concurrency == 0 {
            return Err(invalid(
                "query.max_concurrency must be greater than 0".to_owned(),
            ));
        }
        Ok(config)
    }

    /// Moves every deprecated key into its new place and records it in `deprecated`; a key
    /// given in both places is an error.
    fn move_deprecated(&mut self, raw: &serde_yaml::Value) -> Result<(), String> {
        let given = |path: &str| {
            path.split('.')
                .try_fold(raw, |v, k| v.get(k))
                .is_some_and(|v| !v.is_null())
        };
        let mut moved = |old: &'static str, new: &'static str| {
            if given(new) {
                return Err(format!(
                    "{old} (deprecated) and {new} are both set: keep only {new}"
                ));
            }
            self.deprecated.push(Deprecation { old, new });
            Ok(())
        };
        if let Some(old) = self.traces.otlp.take() {
            let listeners = old.grpc.is_some() || old.http.is_some();
            if listeners || old.max_message_bytes.is_none() {
                moved("traces.otlp", "otlp")?;
            }
            if let Some(n) = old.max_message_bytes {
                moved(
                    "traces.otlp.max_message_bytes",
                    "limits.otlp_max_message_bytes",
                )?;
                self.limits.otlp_max_message_bytes = n;
            }
            if let Some(a) = old.grpc {
                self.otlp.grpc = a;
            }
            if let Some(a) = old.http {
                self.otlp.http = a;
            }
        }
        if let Some(n) = self.logs.max_query_lines.take() {
            moved("logs.max_query_lines", "limits.log_query_max_lines")?;
            self.limits.log_query_max_lines = n;
        }
        if let Some(n) = self.logs.forward.max_frame_bytes.take() {
            moved(
                "logs.forward.max_frame_bytes",
                "limits.forward_max_frame_bytes",
            )?;
            self.limits.forward_max_frame_bytes = n;
        }
        Ok(())
    }

    /// The scrape jobs, checked as Prometheus checks them on load. Target files named
    /// relatively are relative to the config file's directory.
    pub fn scrape(&self) -> Result<ingest::scrape::Prepared, String> {
        let configs = self
            .scrape_configs
            .iter()
            .map(|c| {
                serde_yaml::from_value::<ingest::scrape::ScrapeConfig>(c.expose().clone())
                    .map_err(|e| format!("scrape_configs: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let base_dir = self
            .source
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        ingest::scrape::Prepared::new(
            &configs,
            self.global.scrape_interval.0,
            self.global.scrape_timeout.0,
            base_dir,
            self.limits.scrape_max_body_bytes,
        )
    }

    /// The `remote_write` destinations, checked as Prometheus checks them on load, with the
    /// global external labels they add.
    pub fn remote_write(&self) -> Result<ingest::forward::Prepared, String> {
        let configs = self
            .remote_write
            .iter()
            .map(|c| {
                serde_yaml::from_value::<ingest::forward::RemoteWriteConfig>(c.expose().clone())
                    .map_err(|e| format!("remote_write: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ingest::forward::Prepared::new(&configs, &self.global.external_labels)
            .map_err(|e| format!("remote_write: {e}"))
    }

    /// The `forward:` destinations of logs and traces, checked.
    pub fn forward(&self) -> Result<ingest::forward::PreparedSignals, String> {
        let c = match &self.forward {
            Some(f) => serde_yaml::from_value::<ingest::forward::ForwardConfig>(f.expose().clone())
                .map_err(|e| format!("forward: {e}"))?,
            None => ingest::forward::ForwardConfig::default(),
        };
        ingest::forward::PreparedSignals::new(&c)
    }

    /// On the embedded default, points its self-scrape job (`novamon`) at the address the
    /// HTTP listener got (`--http-listen` may move it, port 0 picks one).
    pub fn self_scrape_at(&mut self, addr: SocketAddr) {
        if self.source.is_some() {
            return;
        }
        let host = if addr.ip().is_unspecified() {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        };
        for job in &mut self.scrape_configs {
            if job.value.get("job_name").and_then(|j| j.as_str()) == Some("novamon") {
                job.value["static_configs"] =
                    serde_yaml::to_value([serde_yaml::Mapping::from_iter([(
                        "targets".into(),
                        serde_yaml::Value::Sequence(vec![host.clone().into()]),
                    )])])
                    .expect("a mapping serializes");
            }
        }
    }

    /// Service discoveries in `scrape_configs` this version does not implement, as
    /// `(job, kind)`, for one start-up warning each.
    pub fn unsupported_discovery(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for c in &self.scrape_configs {
            if let Ok(c) =
                serde_yaml::from_value::<ingest::scrape::ScrapeConfig>(c.expose().clone())
            {
                for kind in c.unsupported_discovery() {
                    out.push((c.job_name.clone(), kind.to_string()));
                }
            }
        }
        out
    }

    /// Deprecated keys the config used (already moved to their new places), for one
    /// start-up warning each.
    pub fn deprecated_keys(&self) -> &[Deprecation] {
        &self.deprecated
    }

    pub fn log_options(&self) -> storage::logs::LogOptions {
        let l = &self.limits;
        storage::logs::LogOptions {
            retention: self.logs.retention.0,
            wal_fsync: self.storage.wal_fsync,
            index_interval: l.log_index_interval.0,
            index_writer_bytes: l.log_index_writer_bytes as usize,
            index_batch_records: l.log_index_batch_records,
            max_unindexed_records: l.log_max_unindexed_records,
            append_buffer_bytes: l.log_append_buffer_bytes as usize,
            append_compact_bytes: l.log_append_compact_bytes,
            append_block_cache_bytes: l.log_append_block_cache_bytes as usize,
            ..storage::logs::LogOptions::default()
        }
    }

    /// Also loads the TLS certificate and key, so a bad file stops start-up.
    pub fn forward_options(&self) -> anyhow::Result<ingest::logs::forward::ForwardOptions> {
        use ingest::logs::forward as fwd;
        let f = &self.logs.forward;
        anyhow::ensure!(
            f.users.is_empty() || f.shared_key.is_some(),
            "logs.forward.users needs logs.forward.shared_key: user authentication is part of the shared-key handshake"
        );
        let tls = match &f.tls {
            Some(t) => Some(
                fwd::ForwardTls::load(&t.cert_file, &t.key_file)
                    .map_err(|e| anyhow::anyhow!("logs.forward.tls: {e}"))?,
            ),
            None => None,
        };
        Ok(fwd::ForwardOptions {
            shared_key: f.shared_key.as_ref().map(|k| k.expose().to_owned()),
            users: f
                .users
                .iter()
                .map(|u| fwd::ForwardUser {
                    username: u.username.clone(),
                    password: u.password.expose().to_owned(),
                })
                .collect(),
            tls,
            self_hostname: self.logs.forward.self_hostname.clone(),
            max_frame_bytes: self.limits.forward_max_frame_bytes as usize,
            max_decompressed_bytes: self.limits.forward_max_decompressed_bytes,
            max_frame_entries: self.limits.forward_max_frame_entries,
            max_expansion: self.limits.ingest_max_expansion,
            max_connections: self.limits.forward_max_connections,
            tls_handshake_timeout: self.limits.forward_tls_handshake_timeout.0,
            handshake_timeout: self.limits.forward_handshake_timeout.0,
            frame_timeout: self.limits.forward_frame_timeout.0,
            idle_timeout: self.limits.forward_idle_timeout.0,
        })
    }

    pub fn ingest_limits(&self) -> ingest::Limits {
        let l = &self.limits;
        ingest::Limits {
            max_decompressed_bytes: l.remote_write_max_bytes as usize,
            max_expansion: l.ingest_max_expansion,
            max_series_per_request: l.remote_write_max_series_per_request,
            max_labels_per_series: l.remote_write_max_labels_per_series,
            max_label_name_length: l.remote_write_max_label_name_length,
            max_label_value_length: l.remote_write_max_label_value_length,
        }
    }

    /// The compiled `logs.redact` rules; a bad regex is named by its key.
    pub fn log_redactor(&self) -> Result<ingest::logs::redact::Redactor, String> {
        use ingest::logs::redact::{RedactError, Redactor, Rule};
        let r = &self.logs.redact;
        let rules: Vec<Rule> = r
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule {
                name: rule.name.clone().unwrap_or_else(|| format!("rule_{i}")),
                regex: rule.regex.clone(),
                replacement: rule.replacement.clone(),
            })
            .collect();
        Redactor::new(&r.presets, &rules).map_err(|e| match e {
            RedactError::Regex { index, source, .. } => {
                format!("logs.redact.rules[{index}].regex: {source}")
            }
        })
    }

    /// What log records must be within to be stored: the log store's retention, the future
    /// grace period and the line size.
    pub fn log_bounds(&self) -> ingest::logs::LogBounds {
        ingest::logs::LogBounds {
            max_age: self.logs.retention.0,
            max_future: self.limits.log_max_future.0,
            max_line_bytes: self.limits.log_max_line_bytes,
        }
    }

    pub fn trace_limits(&self) -> api::TraceLimits {
        api::TraceLimits {
            max_spans_inspected: self.limits.trace_search_max_spans,
            max_tag_values: self.limits.trace_tag_values_max,
        }
    }

    pub fn sender_limits(&self) -> alertmanager::SenderLimits {
        alertmanager::SenderLimits {
            queue_capacity: self.limits.alert_queue_capacity,
            max_batch: self.limits.alert_batch_size,
        }
    }

    pub fn http_listener_options(&self) -> crate::web::ListenerOptions {
        crate::web::ListenerOptions {
            max_connections: self.limits.http_max_connections,
            header_read_timeout: self.limits.http_header_read_timeout.0,
            idle_timeout: self.limits.http_idle_timeout.0,
        }
    }

    pub fn otlp_listener_options(&self) -> crate::web::ListenerOptions {
        crate::web::ListenerOptions {
            max_connections: self.limits.otlp_max_connections,
            header_read_timeout: self.limits.http_header_read_timeout.0,
            idle_timeout: self.limits.http_idle_timeout.0,
        }
    }

    pub fn tsdb_options(&self) -> storage::TsdbOptions {
        storage::TsdbOptions {
            retention: self.storage.retention.0,
            out_of_order_window: self.storage.out_of_order_window.0,
            wal_fsync: self.storage.wal_fsync,
            flush_interval: self.storage.flush_interval.0,
            open_chunk_interval: self.storage.open_chunk_interval.0,
            head_window: self.storage.head_window.0,
            max_active_series: self.limits.max_active_series,
            block_cache_bytes: self.limits.tsdb_block_cache_bytes as usize,
            write_buffer_bytes: self.limits.tsdb_write_buffer_bytes as usize,
            max_exemplars_per_series: self.storage.max_exemplars_per_series,
        }
    }

    pub fn trace_store_options(&self) -> storage::traces::TraceStoreOptions {
        storage::traces::TraceStoreOptions {
            retention: self.traces.retention.0,
            wal_fsync: self.storage.wal_fsync,
            block_cache_bytes: self.limits.trace_block_cache_bytes as usize,
            write_buffer_bytes: self.limits.trace_write_buffer_bytes as usize,
        }
    }

    /// How Elasticsearch searches read the log store: the time field and the documents one
    /// search may read (LogQL's line budget).
    pub fn elastic_search_options(&self) -> elastic::SearchOptions {
        elastic::SearchOptions {
            time_field: self.elasticsearch.timestamp_field.clone(),
            max_documents: self.limits.log_query_max_lines,
        }
    }

    /// What one LogQL query may cost.
    pub fn log_query_limits(&self) -> logql::QueryLimits {
        logql::QueryLimits {
            max_lines: self.limits.log_query_max_lines,
            max_entries: self.limits.log_query_max_entries,
            max_series: self.limits.log_query_max_series,
        }
    }

    /// The line PromQL and LogQL queries wait in, with its metrics in `registry`.
    pub fn query_gate(
        &self,
        registry: &mut prometheus_client::registry::Registry,
    ) -> api::QueryGate {
        api::QueryGate::new(self.query.max_concurrency, self.query.timeout.0, registry)
    }

    pub fn engine_options(&self) -> promql::EngineOptions {
        promql::EngineOptions {
            lookback_delta: self.query.lookback_delta.0,
            max_samples: self.query.max_samples,
            timeout: self.query.timeout.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_to_the_documented_defaults() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.storage.path, PathBuf::from("./data"));
        assert_eq!(c.storage.retention.0, Duration::from_secs(15 * 86400));
        assert_eq!(c.listeners.http, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.limits.remote_write_max_bytes, 32 << 20);
        // It scrapes itself, wherever the listener ends up.
        let mut c = c;
        c.self_scrape_at("0.0.0.0:4321".parse().unwrap());
        let job = c.scrape_configs[0].expose();
        assert_eq!(job["job_name"], "novamon");
        assert_eq!(job["static_configs"][0]["targets"][0], "localhost:4321");
        assert!(c.scrape().is_ok());
    }

    #[test]
    fn a_prometheus_yml_loads_and_its_unhandled_sections_are_reported() {
        let yml = r#"
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels: {cluster: edge-1}
  rule_query_offset: 30s
rule_files: ["rules/*.yml"]
scrape_configs:
  - job_name: node
    static_configs: [{targets: ["localhost:9100"]}]
remote_write:
  - url: http://example.invalid/api/v1/write
"#;
        let c = Config::parse(yml, "t").unwrap();
        assert_eq!(c.global.scrape_interval.0, Duration::from_secs(15));
        assert_eq!(c.global.external_labels["cluster"], "edge-1");
        assert_eq!(
            c.global.rule_query_offset.map(|d| d.0),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.remote_write().map(|p| p.is_empty()), Ok(false));
        assert!(c.scrape().is_ok());
        assert!(c.unsupported_discovery().is_empty());
        let bad = yml.replace("job_name: node", "job_name: node\n    scrape_timeout: 1m");
        let err = Config::parse(&bad, "t").unwrap_err().to_string();
        assert!(
            err.contains("scrape timeout greater than scrape interval"),
            "{err}"
        );
        let bad = yml.replace("url: http", "url: ftp");
        let err = Config::parse(&bad, "t").unwrap_err().to_string();
        assert!(err.contains("remote_write: unsupported scheme"), "{err}");
    }

    #[test]
    fn alerting_and_alertmanager_sections_load_and_are_acted_on() {
        let c = Config::load(None).unwrap();
        assert!(c.alertmanager.enabled && c.alertmanager.config_file.is_none());
        let yml = "alerting:\n  alertmanagers:\n    - static_configs: [{targets: ['am:9093']}]\n      timeout: 5s\nalertmanager:\n  enabled: false\n  config: {route: {receiver: a}, receivers: [{name: a}]}\n";
        let c = Config::parse(yml, "t").unwrap();
        assert!(!c.alertmanager.enabled);
        let back = serde_yaml::to_string(&c).unwrap();
        assert!(back.contains("timeout: 5s"), "{back}");
        let err = Config::parse("alerting:\n  alertmanagers: [{timeout: soon}]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("alerting.alertmanagers[0].timeout"), "{err}");
    }

    #[test]
    fn logs_section_defaults_and_overrides() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.logs.forward.listen, "0.0.0.0:24224".parse().unwrap());
        assert_eq!(
            c.logs.label_keys,
            ["service", "level", "host", "container_name", "namespace"]
        );
        assert!(c.logs.forward.shared_key.is_none());
        let c = Config::parse("logs:\n  retention: 3d\n  label_keys: [app]\n  forward:\n    listen: 127.0.0.1:1\n    shared_key: s\n", "t").unwrap();
        assert_eq!(c.log_options().retention, Duration::from_secs(3 * 86400));
        assert_eq!(
            c.forward_options().unwrap().shared_key.as_deref(),
            Some("s")
        );
        assert_eq!(c.logs.label_keys, ["app"]);
    }

    #[test]
    fn forward_users_need_a_shared_key_and_tls_files_must_load() {
        let c = Config::parse(
            "logs:\n  forward:\n    users: [{username: u, password: p}]\n",
            "t",
        )
        .unwrap();
        let err = c.forward_options().unwrap_err().to_string();
        assert!(
            err.contains("logs.forward.users needs logs.forward.shared_key"),
            "{err}"
        );
        let c = Config::parse(
            "logs:\n  forward:\n    shared_key: k\n    users: [{username: u, password: p}]\n",
            "t",
        )
        .unwrap();
        let users = c.forward_options().unwrap().users;
        assert_eq!(
            (users[0].username.as_str(), users[0].password.as_str()),
            ("u", "p")
        );
        let c = Config::parse(
            "logs:\n  forward:\n    tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n",
            "t",
        )
        .unwrap();
        let err = c.forward_options().unwrap_err().to_string();
        assert!(
            err.starts_with("logs.forward.tls: reading /nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn listeners_postgres_is_off_unless_set() {
        assert_eq!(Config::load(None).unwrap().listeners.postgres, None);
        let c = Config::parse("listeners:\n  postgres: 127.0.0.1:5433\n", "t").unwrap();
        assert_eq!(
            c.listeners.postgres,
            Some("127.0.0.1:5433".parse().unwrap())
        );
    }

    #[test]
    fn elasticsearch_api_prefix_listener_and_time_field() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listeners.elasticsearch, None);
        assert_eq!(c.elasticsearch.path_prefix, "/es");
        assert_eq!(c.elastic_search_options().time_field, "@timestamp");
        let c = Config::parse(
            "listeners:\n  elasticsearch: 127.0.0.1:9200\nelasticsearch:\n  path_prefix: /elastic\n  timestamp_field: ts\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.listeners.elasticsearch,
            Some("127.0.0.1:9200".parse().unwrap())
        );
        assert_eq!(c.elasticsearch.path_prefix, "/elastic");
        assert_eq!(c.elastic_search_options().time_field, "ts");
        for bad in ["es", "/", "/es/"] {
            let e = Config::parse(&format!("elasticsearch:\n  path_prefix: {bad:?}\n"), "t");
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn listeners_web_config_is_read() {
        assert_eq!(Config::load(None).unwrap().listeners.web_config, None);
        let c = Config::parse("listeners:\n  web_config: /etc/novamon/web.yml\n", "t").unwrap();
        assert_eq!(
            c.listeners.web_config.as_deref(),
            Some(Path::new("/etc/novamon/web.yml"))
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let err = Config::parse("storage:\n  path: /x\n  retension: 3d\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retension"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error_naming_key_and_line() {
        let err = Config::parse("global:\n  scrape_interval: soon\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scrape_interval"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn otlp_and_traces_sections_defaults_and_overrides() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.otlp.grpc, "0.0.0.0:4317".parse().unwrap());
        assert_eq!(c.otlp.http, "0.0.0.0:4318".parse().unwrap());
        let c = Config::parse(
            "otlp:\n  grpc: 127.0.0.1:14317\ntraces:\n  retention: 3d\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.traces.retention.0, Duration::from_secs(3 * 86400));
        assert_eq!(c.otlp.grpc, "127.0.0.1:14317".parse().unwrap());
        assert_eq!(c.otlp.http, "0.0.0.0:4318".parse().unwrap());
        assert!(c.deprecated_keys().is_empty());
        assert!(Config::parse("otlp:\n  grcp: x\n", "t").is_err());
        // The size limit is no longer an otlp key.
        assert!(Config::parse("otlp:\n  max_message_bytes: 1\n", "t").is_err());
    }

    #[test]
    fn metrics_generator_is_on_by_default_and_checked() {
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.traces.metrics_generator.options(),
            Some(ingest::spanmetrics::Options::default())
        );
        let c = Config::parse(
            "traces:\n  metrics_generator:\n    collection_interval: 1s\n    span_metrics:\n      dimensions: [http.method]\n    service_graphs:\n      wait: 2s\n",
            "t",
        )
        .unwrap();
        let o = c.traces.metrics_generator.options().unwrap();
        assert_eq!(o.collection_interval, Duration::from_secs(1));
        assert_eq!(o.span_dimensions, ["http.method"]);
        assert_eq!(o.graph_wait, Duration::from_secs(2));
        assert_eq!(o.graph_max_items, 10_000);
        let off = Config::parse("traces:\n  metrics_generator:\n    enabled: false\n", "t");
        assert_eq!(off.unwrap().traces.metrics_generator.options(), None);
        let err = Config::parse(
            "traces:\n  metrics_generator:\n    span_metrics:\n      histogram_buckets: [1, 0.5]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("traces.metrics_generator: span_metrics.histogram_buckets must be"),
            "{err}"
        );
    }

    #[test]
    fn limits_section_parses_every_key() {
        let yml = "limits:
  remote_write_max_bytes: 1001
  remote_write_max_series_per_request: 1014
  remote_write_max_labels_per_series: 1015
  remote_write_max_label_name_length: 1016
  remote_write_max_label_value_length: 1017
  max_active_series: 1021
  ingest_max_expansion: 5
  otlp_max_message_bytes: 1002
  otlp_max_spans_per_request: 1018
  loki_push_max_bytes: 1003
  log_max_line_bytes: 1019
  log_max_future: 2m
  forward_max_frame_bytes: 1004
  forward_max_decompressed_bytes: 1005
  forward_max_connections: 7
  forward_tls_handshake_timeout: 3s
  forward_handshake_timeout: 4s
  forward_frame_timeout: 5s
  forward_idle_timeout: 6s
  forward_max_frame_entries: 1020
  log_query_max_lines: 1006
  log_query_max_entries: 1021
  log_query_max_series: 1022
  log_index_writer_bytes: 40000000
  log_index_batch_records: 1007
  log_index_interval: 1s
  log_append_buffer_bytes: 1008
  log_append_compact_bytes: 1009
  tsdb_block_cache_bytes: 1023
  trace_block_cache_bytes: 1024
  log_append_block_cache_bytes: 1025
  tsdb_write_buffer_bytes: 1026
  trace_write_buffer_bytes: 1027
  trace_search_max_spans: 1010
  trace_tag_values_max: 1011
  trace_retention_interval: 1m
  alert_queue_capacity: 1012
  alert_batch_size: 1013
  http_max_connections: 1014
  otlp_max_connections: 1015
  postgres_max_connections: 1016
  http_header_read_timeout: 7s
  http_idle_timeout: 8s
";
        let c = Config::parse(yml, "t").unwrap();
        assert!(c.deprecated_keys().is_empty());
        assert_eq!(
            c.ingest_limits(),
            ingest::Limits {
                max_decompressed_bytes: 1001,
                max_expansion: 5,
                max_series_per_request: 1014,
                max_labels_per_series: 1015,
                max_label_name_length: 1016,
                max_label_value_length: 1017,
            }
        );
        assert_eq!(c.tsdb_options().max_active_series, 1021);
        assert_eq!(c.limits.otlp_max_message_bytes, 1002);
        assert_eq!(c.limits.otlp_max_spans_per_request, 1018);
        assert_eq!(c.limits.loki_push_max_bytes, 1003);
        let b = c.log_bounds();
        assert_eq!(
            (b.max_line_bytes, b.max_future),
            (1019, Duration::from_secs(120))
        );
        assert_eq!(b.max_age, c.logs.retention.0);
        let f = c.forward_options().unwrap();
        assert_eq!(
            (
                f.max_frame_bytes,
                f.max_decompressed_bytes,
                f.max_connections
            ),
            (1004, 1005, 7)
        );
        assert_eq!(f.tls_handshake_timeout, Duration::from_secs(3));
        assert_eq!(
            (
                f.handshake_timeout,
                f.frame_timeout,
                f.max_frame_entries,
                f.max_expansion
            ),
            (Duration::from_secs(4), Duration::from_secs(5), 1020, 5)
        );
        assert_eq!(f.idle_timeout, Duration::from_secs(6));
        assert_eq!(c.limits.log_query_max_lines, 1006);
        let q = c.log_query_limits();
        assert_eq!((q.max_entries, q.max_series), (1021, 1022));
        let l = c.log_options();
        assert_eq!(
            (
                l.index_writer_bytes,
                l.index_batch_records,
                l.append_buffer_bytes,
                l.append_compact_bytes
            ),
            (40_000_000, 1007, 1008, 1009)
        );
        assert_eq!(l.index_interval, Duration::from_secs(1));
        assert_eq!(
            (
                c.tsdb_options().block_cache_bytes,
                c.trace_store_options().block_cache_bytes,
                l.append_block_cache_bytes
            ),
            (1023, 1024, 1025)
        );
        assert_eq!(
            (
                c.tsdb_options().write_buffer_bytes,
                c.trace_store_options().write_buffer_bytes
            ),
            (1026, 1027)
        );
        let t = c.trace_limits();
        assert_eq!((t.max_spans_inspected, t.max_tag_values), (1010, 1011));
        assert_eq!(c.limits.trace_retention_interval.0, Duration::from_secs(60));
        let a = c.sender_limits();
        assert_eq!((a.queue_capacity, a.max_batch), (1012, 1013));
        let (h, o) = (c.http_listener_options(), c.otlp_listener_options());
        assert_eq!((h.max_connections, o.max_connections), (1014, 1015));
        assert_eq!(c.limits.postgres_max_connections, 1016);
        assert_eq!(h.header_read_timeout, Duration::from_secs(7));
        assert_eq!(o.header_read_timeout, Duration::from_secs(7));
        assert_eq!(h.idle_timeout, Duration::from_secs(8));
        assert_eq!(o.idle_timeout, Duration::from_secs(8));
        let back = serde_yaml::to_string(&c).unwrap();
        assert!(back.contains("log_index_interval: 1s"), "{back}");
        assert!(Config::parse("limits:\n  remote_write_max_byte: 1\n", "t").is_err());
    }

    /// The defaults are the values that were built in before they became configurable, and
    /// the ones the libraries default to.
    #[test]
    fn limits_default_to_the_former_built_in_values() {
        let c = Config::load(None).unwrap();
        let l = &c.limits;
        assert_eq!(l.remote_write_max_bytes, 32 << 20);
        assert_eq!(c.ingest_limits(), ingest::Limits::default());
        assert_eq!(
            c.tsdb_options().max_active_series,
            storage::TsdbOptions::default().max_active_series
        );
        assert_eq!(l.max_active_series, 0);
        assert_eq!(l.otlp_max_message_bytes, 16 << 20);
        assert_eq!(l.loki_push_max_bytes, 64 << 20);
        assert_eq!(
            l.loki_push_max_bytes as usize,
            ingest::logs::DEFAULT_PUSH_MAX_BYTES
        );
        let (f, fd) = (
            c.forward_options().unwrap(),
            ingest::logs::forward::ForwardOptions::default(),
        );
        assert_eq!(f.max_frame_bytes, 16 << 20);
        assert_eq!(f.max_decompressed_bytes, 16 << 20);
        assert_eq!(f.max_connections, 1024);
        assert_eq!(f.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(
            (
                f.max_frame_bytes,
                f.max_decompressed_bytes,
                f.max_connections,
                f.tls_handshake_timeout
            ),
            (
                fd.max_frame_bytes,
                fd.max_decompressed_bytes,
                fd.max_connections,
                fd.tls_handshake_timeout
            )
        );
        assert_eq!(
            (
                f.handshake_timeout,
                f.frame_timeout,
                f.max_frame_entries,
                f.max_expansion
            ),
            (
                fd.handshake_timeout,
                fd.frame_timeout,
                fd.max_frame_entries,
                fd.max_expansion
            )
        );
        assert_eq!(f.idle_timeout, fd.idle_timeout);
        assert_eq!(f.idle_timeout, Duration::from_secs(300));
        let b = c.log_bounds();
        assert_eq!(
            (b.max_future, b.max_line_bytes),
            (ingest::logs::DEFAULT_MAX_FUTURE, 256 << 10)
        );
        assert_eq!(b.max_age, ingest::logs::LogBounds::default().max_age);
        assert_eq!(l.log_query_max_lines, 5_000_000);
        assert_eq!(
            (l.log_query_max_entries, l.log_query_max_series),
            (5000, 500)
        );
        let (o, od) = (c.log_options(), storage::logs::LogOptions::default());
        assert_eq!(o.index_writer_bytes, 64 << 20);
        assert_eq!(o.index_batch_records, 100_000);
        assert_eq!(o.index_interval, Duration::from_millis(200));
        assert_eq!(o.append_buffer_bytes, 16 << 20);
        assert_eq!(o.append_compact_bytes, 32 << 20);
        assert_eq!(
            (
                o.index_writer_bytes,
                o.index_batch_records,
                o.index_interval,
                o.append_buffer_bytes,
                o.append_compact_bytes
            ),
            (
                od.index_writer_bytes,
                od.index_batch_records,
                od.index_interval,
                od.append_buffer_bytes,
                od.append_compact_bytes
            )
        );
        assert_eq!(c.trace_limits().max_spans_inspected, 200_000);
        assert_eq!(c.trace_limits().max_tag_values, 1000);
        assert_eq!(c.trace_limits(), api::TraceLimits::default());
        assert_eq!(l.trace_retention_interval.0, Duration::from_secs(600));
        assert_eq!(c.sender_limits().queue_capacity, 10_000);
        assert_eq!(c.sender_limits().max_batch, 256);
        assert_eq!(c.sender_limits(), alertmanager::SenderLimits::default());
        assert_eq!(c.http_listener_options().max_connections, 1024);
        assert_eq!(c.otlp_listener_options().max_connections, 1024);
        assert_eq!(
            c.http_listener_options().header_read_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(
            c.otlp_listener_options().idle_timeout,
            Duration::from_secs(300)
        );
        // Nothing moved into limits from query:, which keeps Prometheus's names.
        assert_eq!(
            c.query.max_samples,
            promql::EngineOptions::default().max_samples
        );
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        for (yml, want) in [
            (
                "limits:\n  alert_batch_size: 0\n",
                "limits.alert_batch_size must be greater than 0",
            ),
            (
                "limits:\n  trace_retention_interval: 0s\n",
                "limits.trace_retention_interval: limits: duration must be greater than 0 at line 2",
            ),
            (
                "limits:\n  log_index_writer_bytes: 1000000\n",
                "limits.log_index_writer_bytes must be at least 30000000",
            ),
        ] {
            let err = Config::parse(yml, "t").unwrap_err().to_string();
            assert!(err.starts_with("invalid config t: "), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }

    /// The keys that moved still load, into their new places, each reported once.
    #[test]
    fn deprecated_keys_load_into_their_new_place_and_are_reported() {
        let yml = "traces:
  retention: 3d
  otlp:
    grpc: 127.0.0.1:14317
    http: 127.0.0.1:14318
    max_message_bytes: 1000
logs:
  max_query_lines: 2000
  forward:
    max_frame_bytes: 3000
";
        let c = Config::parse(yml, "t").unwrap();
        assert_eq!(c.otlp.grpc, "127.0.0.1:14317".parse().unwrap());
        assert_eq!(c.otlp.http, "127.0.0.1:14318".parse().unwrap());
        assert_eq!(c.limits.otlp_max_message_bytes, 1000);
        assert_eq!(c.limits.log_query_max_lines, 2000);
        assert_eq!(c.forward_options().unwrap().max_frame_bytes, 3000);
        assert_eq!(c.traces.retention.0, Duration::from_secs(3 * 86400));
        let moved: Vec<(&str, &str)> = c.deprecated_keys().iter().map(|d| (d.old, d.new)).collect();
        assert_eq!(
            moved,
            [
                ("traces.otlp", "otlp"),
                (
                    "traces.otlp.max_message_bytes",
                    "limits.otlp_max_message_bytes"
                ),
                ("logs.max_query_lines", "limits.log_query_max_lines"),
                (
                    "logs.forward.max_frame_bytes",
                    "limits.forward_max_frame_bytes"
                ),
            ]
        );
        assert_eq!(
            c.deprecated_keys()[0].to_string(),
            "config section traces.otlp is deprecated: move it to the top-level `otlp:` section"
        );
        assert_eq!(
            c.deprecated_keys()[2].to_string(),
            "config key logs.max_query_lines is deprecated: move it to limits.log_query_max_lines"
        );
        // The effective config shows the new places only.
        let back = serde_yaml::to_string(&c).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&back).unwrap();
        assert!(v["traces"].get("otlp").is_none(), "{back}");
        assert!(v["logs"].get("max_query_lines").is_none(), "{back}");
        assert!(
            v["logs"]["forward"].get("max_frame_bytes").is_none(),
            "{back}"
        );
        let again = Config::parse(&back, "t").unwrap();
        assert!(again.deprecated_keys().is_empty());
        assert_eq!(again.otlp.grpc, c.otlp.grpc);
        assert_eq!(again.limits.log_query_max_lines, 2000);

        // Only the size limit: only that key is reported, and the listeners stay the defaults.
        let c = Config::parse("traces:\n  otlp:\n    max_message_bytes: 5\n", "t").unwrap();
        assert_eq!(c.limits.otlp_max_message_bytes, 5);
        assert_eq!(c.otlp.grpc, Otlp::default().grpc);
        assert_eq!(
            c.deprecated_keys(),
            [Deprecation {
                old: "traces.otlp.max_message_bytes",
                new: "limits.otlp_max_message_bytes"
            }]
        );
        assert!(Config::parse("traces:\n  otlp:\n    grcp: x\n", "t").is_err());
    }

    #[test]
    fn a_key_in_both_its_old_and_new_place_is_an_error() {
        for (yml, want) in [
            (
                "otlp:\n  grpc: 127.0.0.1:1\ntraces:\n  otlp:\n    http: 127.0.0.1:2\n",
                "traces.otlp (deprecated) and otlp are both set: keep only otlp",
            ),
            (
                "limits:\n  otlp_max_message_bytes: 1\ntraces:\n  otlp:\n    max_message_bytes: 2\n",
                "traces.otlp.max_message_bytes (deprecated) and limits.otlp_max_message_bytes are both set",
            ),
            (
                "limits:\n  log_query_max_lines: 1\nlogs:\n  max_query_lines: 2\n",
                "logs.max_query_lines (deprecated) and limits.log_query_max_lines are both set",
            ),
            (
                "limits:\n  forward_max_frame_bytes: 1\nlogs:\n  forward:\n    max_frame_bytes: 2\n",
                "logs.forward.max_frame_bytes (deprecated) and limits.forward_max_frame_bytes are both set",
            ),
        ] {
            let err = Config::parse(yml, "t").unwrap_err().to_string();
            assert!(err.starts_with("invalid config t: "), "{err}");
            assert!(err.contains(want), "{err}");
        }
        // The size limit under traces.otlp does not clash with the top-level listeners.
        let c = Config::parse(
            "otlp:\n  grpc: 127.0.0.1:1\ntraces:\n  otlp:\n    max_message_bytes: 2\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.otlp.grpc, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.limits.otlp_max_message_bytes, 2);
    }

    /// Every secret the config can hold, each a distinct string to look for.
    pub(crate) const SECRETS_YML: &str = "logs:
  forward:
    shared_key: fwd-shared-key-s1
    users: [{username: alice, password: fwd-user-password-s2}]
alertmanager:
  config:
    global: {slack_api_url: 'http://slack.invalid/global-s3'}
    route: {receiver: r}
    receivers:
      - name: r
        webhook_configs: [{url: 'http://hook.invalid/webhook-s4'}]
        slack_configs: [{api_url: 'http://slack.invalid/api-s5', channel: '#ops'}]
        pagerduty_configs: [{routing_key: pd-routing-key-s6}, {routing_key: pd-routing-key-s7}]
remote_write:
  - url: http://rw.invalid/api/v1/write
    basic_auth: {username: bob, password: rw-password-s8}
    tls_config: {key: rw-tls-key-s11}
scrape_configs:
  - job_name: j
    bearer_token: scrape-bearer-s12
    consul_sd_configs: [{server: 'c:8500', token: scrape-consul-token-s14}]
    azure_sd_configs: [{client_id: c, client_secret: sd-client-secret-s9}]
    ec2_sd_configs: [{access_key: a, secret_key: sd-ec2-secret-s10}]
  - job_name: k
    authorization: {credentials: scrape-credentials-s13}
";

    pub(crate) fn secrets_in(text: &str) -> Vec<String> {
        (1..=14)
            .map(|i| format!("-s{i}"))
            .filter(|s| {
                text.contains(&format!("{s}\n"))
                    || text.contains(&format!("{s}'"))
                    || text.contains(&format!("{s}\""))
            })
            .collect()
    }

    #[test]
    fn secrets_are_read_as_written_and_never_rendered() {
        let c = Config::parse(SECRETS_YML, "t").unwrap();
        let f = c.forward_options().unwrap();
        assert_eq!(f.shared_key.as_deref(), Some("fwd-shared-key-s1"));
        assert_eq!(f.users[0].password, "fwd-user-password-s2");
        let am = crate::alertmanager::check(&c);
        assert!(am.is_ok(), "{am:?}");
        let inline =
            serde_yaml::to_string(c.alertmanager.config.as_ref().unwrap().expose()).unwrap();
        assert!(inline.contains("pd-routing-key-s6"), "{inline}");
        for (what, text) in [
            ("yaml", serde_yaml::to_string(&c).unwrap()),
            ("debug", format!("{c:?}")),
        ] {
            assert_eq!(secrets_in(&text), Vec::<String>::new(), "{what}: {text}");
            assert!(text.matches("<secret>").count() >= 14, "{what}: {text}");
        }
        let back = serde_yaml::to_string(&c).unwrap();
        for shown in [
            "username: alice",
            "url: http://rw.invalid/api/v1/write",
            "access_key: a",
            "channel: '#ops'",
        ] {
            assert!(back.contains(shown), "{shown}: {back}");
        }
    }

    #[test]
    fn query_max_concurrency_defaults_to_prometheus_and_must_be_positive() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.query.max_concurrency, 20);
        let c = Config::parse("query:\n  max_concurrency: 3\n", "t").unwrap();
        assert_eq!(c.query.max_concurrency, 3);
        let err = Config::parse("query:\n  max_concurrency: 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("query.max_concurrency must be greater than 0"),
            "{err}"
        );
    }

    #[test]
    fn durations_round_trip_in_prometheus_notation() {
        let c = Config::parse("storage:\n  retention: 36h\n", "t").unwrap();
        assert_eq!(c.storage.retention.0, Duration::from_secs(36 * 3600));
        let back = serde_yaml::to_string(&c).unwrap();
        assert!(back.contains("retention: 1d12h"), "{back}");
    }

    #[test]
    fn log_redaction_rules_compile_at_load_and_a_bad_regex_is_located() {
        assert!(Config::load(None)
            .unwrap()
            .log_redactor()
            .unwrap()
            .is_empty());
        let yml = r"logs:
  redact:
    presets: [credit_cards, emails]
    rules:
      - regex: 'x'
        replacement: y
      - name: pw
        regex: '(password=)\S+'
        replacement: '${1}<redacted>'
";
        let c = Config::parse(yml, "t").unwrap();
        assert_eq!(c.logs.redact.rules[1].name.as_deref(), Some("pw"));
        assert!(!c.log_redactor().unwrap().is_empty());
        let bad = yml.replace(r"(password=)\S+", "(password=");
        let e = Config::parse(&bad, "t").unwrap_err().to_string();
        assert!(e.contains("logs.redact.rules[1].regex"), "{e}");
        let e = Config::parse("logs:\n  redact:\n    presets: [ssn]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("logs.redact.presets"), "{e}");
    }
}
