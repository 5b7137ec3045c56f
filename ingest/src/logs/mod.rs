//! Log ingest: the Fluentd forward protocol listener ([`forward`]) and Loki's push API
//! ([`loki_push`]), both turning what they receive into `storage::logs::LogRecord`s through one
//! [`Mapping`] and appending them to the `LogStore`. Owns the wire formats and the mapping;
//! never reads logs back.

pub mod forward;
mod loki_push;
mod mapping;

pub use mapping::Mapping;

use std::sync::Arc;

use storage::logs::{LogRecord, LogStore};

use crate::metrics::{Protocol, Signal};
use crate::IngestCounters;

/// Where ingested logs go and how records become streams. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    store: Arc<LogStore>,
    mapping: Arc<Mapping>,
    counters: IngestCounters,
}

impl LogSink {
    pub fn new(store: Arc<LogStore>, mapping: Mapping) -> LogSink {
        LogSink {
            store,
            mapping: Arc::new(mapping),
            counters: IngestCounters::default(),
        }
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
    ) -> Result<(), storage::logs::LogError> {
        let store = self.store.clone();
        let n = records.len();
        let result = match tokio::task::spawn_blocking(move || store.append(&records)).await {
            Ok(r) => r,
            Err(_) => Err(storage::logs::LogError::Closed),
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
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(sink)
}
