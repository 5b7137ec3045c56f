//! novamon's ingest paths: wire formats in, translated into the storage contract.
//!
//! - [`remote_write`]: Prometheus remote-write 1.0 and 2.0 on `POST /api/v1/write` ([`routes`]).
//! - [`otlp`]: OTLP metrics, logs and traces over gRPC and HTTP (protobuf and JSON).
//! - [`logs`]: the Fluentd forward protocol listener and Loki's push API.
//! - [`elastic`]: Elasticsearch's bulk API, into the same log sink.
//! - [`scrape`]: scraping targets (`scrape_configs`), as Prometheus does.
//! - [`push`]: the Pushgateway's push API, its groups stored and exposed to queries.
//! - [`spanmetrics`]: span metrics and service graphs from the spans OTLP stored, as
//!   Tempo's metrics-generator makes them.
//! - [`forward`]: the way out: `remote_write` destinations fed from the TSDB's outbox, in
//!   the same wire format remote-write comes in.
//! - `metrics`: the per-signal, per-protocol ingest self-metrics.
//!
//! Owns wire formats and their validation, in both directions; writes metrics only through
//! `storage::Appendable`, logs and traces through their stores' write calls, reads only the
//! TSDB's outbox and metadata (to forward them), and never serves anything but ingest
//! endpoints.

pub mod elastic;
pub mod forward;
pub mod logs;
mod metrics;
pub mod otlp;
pub mod push;
pub mod remote_write;
pub mod scrape;
pub mod spanmetrics;
mod wire;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use prometheus_client::registry::Registry;
use storage::Appendable;

pub use metrics::IngestCounters;
use metrics::IngestMetrics;

/// The default of [`Limits::max_expansion`], [`otlp::OtlpState::with_max_expansion`] and
/// [`logs::LogSink::with_max_expansion`]: real requests decode to 2 to 6 times their
/// protobuf size; a body of empty items, to 50 times and more.
pub const DEFAULT_MAX_EXPANSION: usize = 16;

/// Bodies smaller than this are budgeted as if this large: a lone empty item in a tiny body
/// expands far more than its share, and a few KiB of structures are harmless.
pub(crate) const EXPANSION_FLOOR_BYTES: usize = 64 << 10;

/// Request size limits of the remote-write endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed body (413 above), checked against snappy's declared length before
    /// anything is allocated. The body as sent is capped at snappy's worst-case expansion of
    /// this: no larger body can hold a valid payload.
    pub max_decompressed_bytes: usize,
    /// Most bytes of decoded structures per byte of decompressed protobuf (400 above),
    /// checked on the wire bytes before decoding.
    pub max_expansion: usize,
    /// Most series one request may carry (400 above), counted before decoding.
    pub max_series_per_request: usize,
    /// Most labels one series may have; a series with more is invalid.
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes; a series with a longer one is invalid.
    pub max_label_name_length: usize,
    /// Longest label value, in bytes; a series with a longer one is invalid.
    pub max_label_value_length: usize,
}

impl Limits {
    pub(crate) fn max_compressed_bytes(&self) -> usize {
        snap::raw::max_compress_len(self.max_decompressed_bytes)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        // Prometheus has no label limits; these are looser than Mimir's (30 labels, 2 KiB
        // values) so that wide kube-state-metrics series pass, and still bound a series.
        Limits {
            max_decompressed_bytes: 32 << 20,
            max_expansion: DEFAULT_MAX_EXPANSION,
            max_series_per_request: 100_000,
            max_labels_per_series: 64,
            max_label_name_length: 1024,
            max_label_value_length: 16384,
        }
    }
}

/// What the ingest handlers share. Cheap to clone.
#[derive(Clone)]
pub struct IngestState {
    metrics_store: Arc<dyn Appendable>,
    limits: Limits,
    metrics: IngestMetrics,
}

impl IngestState {
    /// Registers the ingest self-metrics in `registry` (served by the caller on /metrics).
    pub fn new(
        metrics_store: Arc<dyn Appendable>,
        limits: Limits,
        registry: &mut Registry,
    ) -> IngestState {
        IngestState {
            metrics_store,
            limits,
            metrics: IngestMetrics::register(registry),
        }
    }

    /// The per-signal, per-protocol counters, for the other ingest paths to count into.
    pub fn counters(&self) -> IngestCounters {
        self.metrics.counters.clone()
    }
}

/// The ingest endpoints: `POST /api/v1/write` (remote-write 1.0 and 2.0).
pub fn routes(state: IngestState) -> Router {
    Router::new()
        .route("/api/v1/write", post(remote_write::handler::write))
        // The handler enforces its own limit, on the compressed body.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
