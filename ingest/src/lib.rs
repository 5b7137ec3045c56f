//! novamon's ingest paths: wire formats in, translated into the storage contract.
//!
//! - [`remote_write`]: Prometheus remote-write 1.0 and 2.0 on `POST /api/v1/write` ([`routes`]).
//! - [`otlp`]: OTLP metrics, logs and traces over gRPC and HTTP (protobuf and JSON).
//! - [`logs`]: the Fluentd forward protocol listener and Loki's push API.
//! - `metrics`: the per-signal, per-protocol ingest self-metrics.
//!
//! Owns wire formats and their validation; writes metrics only through
//! `storage::Appendable`, logs and traces through their stores' write calls, and never serves
//! anything but ingest endpoints.

pub mod logs;
mod metrics;
pub mod otlp;
pub mod remote_write;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use prometheus_client::registry::Registry;
use storage::Appendable;

pub use metrics::IngestCounters;
use metrics::IngestMetrics;

/// Request size limits of the ingest endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed body (413 above), checked against snappy's declared length before
    /// anything is allocated. The body as sent is capped at snappy's worst-case expansion of
    /// this: no larger body can hold a valid payload.
    pub max_decompressed_bytes: usize,
}

impl Limits {
    pub(crate) fn max_compressed_bytes(&self) -> usize {
        snap::raw::max_compress_len(self.max_decompressed_bytes)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_decompressed_bytes: 32 << 20,
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
