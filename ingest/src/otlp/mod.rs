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
mod shapes;

use std::sync::Arc;

use storage::logs::LogWriter;
use storage::traces::TraceWriter;
use storage::Appendable;

use crate::logs::LogBounds;
use crate::metrics::Protocol;
use crate::wire::{self, Shape};
use crate::IngestCounters;
use error::OtlpError;

/// The default of [`OtlpState::with_max_spans`]: the OpenTelemetry Collector's batch
/// processor sends at most 8192 per request by default.
pub const DEFAULT_MAX_SPANS: usize = 100_000;

pub use grpc::{grpc_router, grpc_routes, serve_grpc};
pub use http::http_routes;
pub(crate) use metric_names::label_chars;

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
    /// Most bytes of decoded structures per byte of protobuf.
    max_expansion: usize,
    /// Most spans one trace export may carry.
    max_spans: usize,
    /// The label limits of remote-write, which metric series from OTLP are held to too.
    label_limits: crate::Limits,
    /// The timestamps and line sizes log records must be within to be stored.
    log_bounds: LogBounds,
    /// Whether log records get Loki's `detected_level` (see `logs::level`).
    detect_levels: bool,
    counters: IngestCounters,
    /// Counts the spans stored into span metrics and service graphs, when on.
    span_metrics: Option<Arc<crate::spanmetrics::SpanMetrics>>,
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
            max_expansion: crate::DEFAULT_MAX_EXPANSION,
            max_spans: DEFAULT_MAX_SPANS,
            label_limits: crate::Limits::default(),
            log_bounds: LogBounds::default(),
            detect_levels: false,
            counters: IngestCounters::default(),
            span_metrics: None,
            transport: Protocol::OtlpHttp,
        }
    }

    /// Counts what is stored and refused in `counters` (registered by `IngestState::new`).
    pub fn with_counters(mut self, counters: IngestCounters) -> OtlpState {
        self.counters = counters;
        self
    }

    /// Most bytes of decoded structures per byte of protobuf (400 / INVALID_ARGUMENT above),
    /// checked on the wire bytes before decoding.
    pub fn with_max_expansion(mut self, max: usize) -> OtlpState {
        self.max_expansion = max;
        self
    }

    /// The labels-per-series and label length limits of remote-write (`limits`); a metric
    /// series over them is rejected (partial success) with Mimir's words.
    pub fn with_label_limits(mut self, limits: crate::Limits) -> OtlpState {
        self.label_limits = limits;
        self
    }

    /// Most spans one trace export may carry (400 / INVALID_ARGUMENT above).
    pub fn with_max_spans(mut self, max: usize) -> OtlpState {
        self.max_spans = max;
        self
    }

    /// The bounds OTLP log records must be within; the others are rejected (partial success).
    /// Adds Loki's `detected_level` to log records without one (Loki's `discover_log_levels`).
    pub fn with_detected_levels(mut self, on: bool) -> OtlpState {
        self.detect_levels = on;
        self
    }

    pub fn with_log_bounds(mut self, bounds: LogBounds) -> OtlpState {
        self.log_bounds = bounds;
        self
    }

    /// Walks a protobuf request before decoding it: refuses one whose decoded form would
    /// exceed the expansion budget or that carries too many spans.
    fn check_protobuf(&self, bytes: &[u8], shape: &'static Shape) -> Result<(), OtlpError> {
        let budget = wire::budget(
            bytes.len(),
            self.max_expansion,
            crate::EXPANSION_FLOOR_BYTES,
        );
        let scan = wire::scan(bytes, shape, budget).map_err(|e| match e {
            wire::WireError::Malformed(_) => {
                OtlpError::BadRequest(format!("invalid protobuf: {e}"))
            }
            wire::WireError::TooLarge { .. } => OtlpError::BadRequest(e.to_string()),
        })?;
        let spans = scan.count(shapes::SPAN);
        if spans > self.max_spans {
            return Err(OtlpError::BadRequest(format!(
                "request has {spans} spans, more than the limit of {}",
                self.max_spans
            )));
        }
        Ok(())
    }

    /// Scans an OTLP/JSON request before decoding it: refuses one whose decoded form would
    /// exceed the expansion budget, as [`Self::check_protobuf`] does for protobuf.
    fn check_json(&self, bytes: &[u8], shape: &'static Shape) -> Result<(), OtlpError> {
        let budget = wire::budget(
            bytes.len(),
            self.max_expansion,
            crate::EXPANSION_FLOOR_BYTES,
        );
        wire::scan_json(bytes, shape.largest(), budget).map_err(|e| match e {
            wire::WireError::Malformed(_) => {
                OtlpError::BadRequest(format!("invalid OTLP/JSON: {e}"))
            }
            wire::WireError::TooLarge { .. } => OtlpError::BadRequest(e.to_string()),
        })
    }

    fn on(mut self, transport: Protocol) -> OtlpState {
        self.transport = transport;
        self
    }

    /// Has `generator` count every span stored.
    pub fn with_span_metrics(
        mut self,
        generator: Arc<crate::spanmetrics::SpanMetrics>,
    ) -> OtlpState {
        self.span_metrics = Some(generator);
        self
    }

    /// Stores OTLP logs in `logs`.
    pub fn with_logs(mut self, logs: Arc<dyn LogWriter>) -> OtlpState {
        self.logs = Some(logs);
        self
    }
}
