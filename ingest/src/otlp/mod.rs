//! OTLP receiver, all three signals, over gRPC (tonic, [`grpc_routes`]) and HTTP
//! ([`http_routes`]: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON, optionally
//! gzip). Both transports decode to the same request messages and call the same per-signal
//! export functions, so their answers agree. Owns decoding, limits, the metric naming
//! translation and partial-success reporting; writes only through the stores' public APIs.

mod body;
mod error;
mod export;
mod grpc;
mod http;
mod logs_to_records;
mod metric_names;
mod metrics_to_series;

use std::sync::Arc;

use storage::logs::LogWriter;
use storage::traces::TraceWriter;
use storage::Appendable;

use crate::metrics::Protocol;
use crate::IngestCounters;

pub use grpc::{grpc_router, grpc_routes, serve_grpc};
pub use http::http_routes;

/// What the OTLP endpoints share. Cheap to clone.
#[derive(Clone)]
pub struct OtlpState {
    traces: Arc<dyn TraceWriter>,
    metrics_store: Arc<dyn Appendable>,
    /// Where OTLP logs go; without one they are refused (partial success) rather than lost
    /// silently.
    logs: Option<Arc<dyn LogWriter>>,
    /// Largest request accepted, after decompression (gRPC: the decoded message).
    max_bytes: usize,
    counters: IngestCounters,
    /// The transport whose routes hold this copy of the state, for the counters.
    transport: Protocol,
}

impl OtlpState {
    pub fn new(
        traces: Arc<dyn TraceWriter>,
        metrics_store: Arc<dyn Appendable>,
        max_bytes: usize,
    ) -> OtlpState {
        OtlpState {
            traces,
            metrics_store,
            logs: None,
            max_bytes,
            counters: IngestCounters::default(),
            transport: Protocol::OtlpHttp,
        }
    }

    /// Counts what is stored and refused in `counters` (registered by `IngestState::new`).
    pub fn with_counters(mut self, counters: IngestCounters) -> OtlpState {
        self.counters = counters;
        self
    }

    fn on(mut self, transport: Protocol) -> OtlpState {
        self.transport = transport;
        self
    }

    /// Stores OTLP logs in `logs`.
    pub fn with_logs(mut self, logs: Arc<dyn LogWriter>) -> OtlpState {
        self.logs = Some(logs);
        self
    }
}
