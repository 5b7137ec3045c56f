//! Log ingest: the Fluentd forward protocol listener ([`forward`]) and Loki's push API
//! ([`loki_push`]), both turning what they receive into `storage::logs::LogRecord`s through one
//! [`Mapping`], adding Loki's `detected_level` ([`level`]) and appending them to the
//! `LogStore` (through [`redact::Redacting`] when redaction rules are configured). Owns the wire formats and the mapping;
//! never reads logs back.

mod bounds;
pub mod forward;
pub mod level;
pub(crate) mod loki_push;
mod mapping;
pub mod redact;

pub use bounds::{LogBounds, DEFAULT_MAX_AGE, DEFAULT_MAX_FUTURE, DEFAULT_MAX_LINE_BYTES};
pub(crate) use mapping::sanitize_label_name;
pub use mapping::Mapping;

use std::mem::size_of;
use std::sync::Arc;

use storage::logs::{LogRecord, LogWriter};

use crate::metrics::{Protocol, Signal};
use crate::IngestCounters;

/// The default of [`LogSink::with_push_max_bytes`].
pub const DEFAULT_PUSH_MAX_BYTES: usize = 64 << 20;

/// Where ingested logs go and how records become streams. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    store: Arc<dyn LogWriter>,
    mapping: Arc<Mapping>,
    counters: IngestCounters,
    push_max_bytes: usize,
    max_expansion: usize,
    bounds: LogBounds,
    detect_levels: bool,
}

impl LogSink {
    pub fn new(store: Arc<dyn LogWriter>, mapping: Mapping) -> LogSink {
        LogSink {
            store,
            mapping: Arc::new(mapping),
            counters: IngestCounters::default(),
            push_max_bytes: DEFAULT_PUSH_MAX_BYTES,
            max_expansion: crate::DEFAULT_MAX_EXPANSION,
            bounds: LogBounds::default(),
            detect_levels: false,
        }
    }

    /// Adds Loki's `detected_level` to records without one (Loki's `discover_log_levels`).
    pub fn with_detected_levels(mut self, on: bool) -> LogSink {
        self.detect_levels = on;
        self
    }

    /// Most bytes of decoded records per byte of decompressed push body (400 above).
    pub fn with_max_expansion(mut self, max: usize) -> LogSink {
        self.max_expansion = max;
        self
    }

    /// The timestamps and line sizes records must be within to be stored.
    pub fn with_bounds(mut self, bounds: LogBounds) -> LogSink {
        self.bounds = bounds;
        self
    }

    /// Largest Loki push body accepted, as sent and decompressed.
    pub fn with_push_max_bytes(mut self, max: usize) -> LogSink {
        self.push_max_bytes = max;
        self
    }

    /// Counts what is stored and refused in `counters` (registered by `IngestState::new`).
    pub fn with_counters(mut self, counters: IngestCounters) -> LogSink {
        self.counters = counters;
        self
    }

    /// Appends durably, off the async runtime (RocksDB's WAL write blocks).
    pub(crate) async fn append(
        &self,
        protocol: Protocol,
        records: Vec<LogRecord>,
    ) -> Result<(), storage::StorageError> {
        let store = self.store.clone();
        let n = records.len();
        let detect_levels = self.detect_levels;
        let mut records = records;
        let append = move || {
            if detect_levels {
                level::add_detected_levels(&mut records);
            }
            store.append(&records)
        };
        let result = match tokio::task::spawn_blocking(append).await {
            Ok(r) => r,
            Err(_) => Err(storage::StorageError::Closed),
        };
        match result {
            Ok(()) => self.counters.stored(Signal::Logs, protocol, n),
            Err(_) => self.counters.rejected(Signal::Logs, protocol, n),
        }
        result
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    pub(crate) fn bounds(&self) -> LogBounds {
        self.bounds
    }

    pub(crate) fn push_max_bytes(&self) -> usize {
        self.push_max_bytes
    }

    pub(crate) fn counters(&self) -> &IngestCounters {
        &self.counters
    }
}

/// The records of one request or frame, charged against a budget as they are built: every
/// record holds its own copy of its stream's labels, so many short entries with long labels
/// would otherwise grow far beyond the body they came in.
pub(crate) struct Records {
    out: Vec<LogRecord>,
    used: usize,
    budget: usize,
}

impl Records {
    pub(crate) fn new(budget: usize) -> Records {
        Records {
            out: Vec::new(),
            used: 0,
            budget,
        }
    }

    /// Adds a record, or returns the budget it would exceed.
    pub(crate) fn push(&mut self, r: LogRecord) -> Result<(), usize> {
        let pair = |k: &str, v: &str| 2 * size_of::<String>() + k.len() + v.len();
        let cost = size_of::<LogRecord>()
            + r.line.len()
            + r.labels
                .iter()
                .map(|l| pair(&l.name, &l.value))
                .sum::<usize>()
            + r.metadata.iter().map(|(k, v)| pair(k, v)).sum::<usize>();
        self.used = self.used.saturating_add(cost);
        if self.used > self.budget {
            return Err(self.budget);
        }
        self.out.push(r);
        Ok(())
    }

    pub(crate) fn into_records(self) -> Vec<LogRecord> {
        self.out
    }
}

/// The log ingest HTTP endpoints: `POST /loki/api/v1/push`.
pub fn routes(sink: LogSink) -> axum::Router {
    axum::Router::new()
        .route("/loki/api/v1/push", axum::routing::post(loki_push::push))
        .layer(axum::extract::DefaultBodyLimit::max(sink.push_max_bytes))
        .with_state(sink)
}
