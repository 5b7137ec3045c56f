//! Log ingest: the Fluentd forward protocol listener ([`forward`]) and Loki's push API
//! ([`loki_push`]), both turning what they receive into `storage::logs::LogRecord`s through one
//! [`Mapping`] and appending them to the `LogStore`. Owns the wire formats and the mapping;
//! never reads logs back.

pub mod forward;
mod loki_push;
mod mapping;

pub use mapping::Mapping;

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
}

impl LogSink {
    pub fn new(store: Arc<dyn LogWriter>, mapping: Mapping) -> LogSink {
        LogSink {
            store,
            mapping: Arc::new(mapping),
            counters: IngestCounters::default(),
            push_max_bytes: DEFAULT_PUSH_MAX_BYTES,
        }
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
        let result = match tokio::task::spawn_blocking(move || store.append(&records)).await {
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
}

/// The log ingest HTTP endpoints: `POST /loki/api/v1/push`.
pub fn routes(sink: LogSink) -> axum::Router {
    axum::Router::new()
        .route("/loki/api/v1/push", axum::routing::post(loki_push::push))
        .layer(axum::extract::DefaultBodyLimit::max(sink.push_max_bytes))
        .with_state(sink)
}
