//! Stores that accept every write and keep nothing, so that a target costs its decoding and
//! not a RocksDB write, and the runtime the async entry points run on.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use storage::logs::{LogRecord, LogWriter};
use storage::traces::{TraceWriter, WriteReport};
use storage::{
    AppendMode, AppendReport, Appendable, Appender, EncodedBatch, Exemplar, Labels, Metadata,
    SeriesBatch, StorageError,
};

struct Discard;

struct DiscardAppender;

impl Appender for DiscardAppender {
    fn append(&mut self, _: SeriesBatch) {}

    fn append_batch(&mut self, _: EncodedBatch) {}

    fn append_exemplars(&mut self, _: &Labels, _: Vec<Exemplar>) {}

    fn set_metadata(&mut self, _: &str, _: Metadata) {}

    fn commit(self: Box<Self>) -> Result<AppendReport, StorageError> {
        Ok(AppendReport::default())
    }

    fn rollback(self: Box<Self>) {}
}

impl Appendable for Discard {
    fn appender(&self, _: AppendMode) -> Box<dyn Appender + '_> {
        Box::new(DiscardAppender)
    }
}

impl LogWriter for Discard {
    fn append(&self, _: &[LogRecord]) -> Result<(), StorageError> {
        Ok(())
    }
}

impl TraceWriter for Discard {
    fn write(&self, batch: &[ResourceSpans]) -> Result<WriteReport, StorageError> {
        let spans = batch
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        Ok(WriteReport {
            spans_written: spans,
            ..WriteReport::default()
        })
    }
}

pub(crate) fn metrics() -> Arc<dyn Appendable> {
    Arc::new(Discard)
}

pub(crate) fn logs() -> Arc<dyn LogWriter> {
    Arc::new(Discard)
}

pub(crate) fn traces() -> Arc<dyn TraceWriter> {
    Arc::new(Discard)
}

/// Runs `f` to completion on one runtime kept for the whole process: building one per input
/// would cost more than most inputs.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        })
        .block_on(f)
}
