//! The exporter: writes each signal's finished days that are not yet exported as Parquet
//! (zstd) into [`History`], read through the same tables SQL queries (so a file's schema is
//! the table's), one file a day. A day is written under a hidden temporary name and then
//! renamed, so a crash never leaves a partial file under the final name, and a day whose file
//! exists is not read again; the store's order and fixed writer settings make a rerun write
//! the same bytes.
//!
//! Owns deciding which days to write and writing them; must not read exported files (that is
//! `history`'s table) nor delete anything from a store: retention stays the stores' own.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::col;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::ObjectStoreExt;
use storage::logs::LogReader;
use storage::traces::TraceReader;
use storage::Querier;

use crate::history::{day_start_ns, History, Signal};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The history's directory or URL cannot be used.
    #[error("export destination: {0}")]
    Destination(String),
    #[error("reading {signal} for {date}: {source}")]
    Read {
        signal: &'static str,
        date: String,
        source: DataFusionError,
    },
    #[error("writing {path}: {source}")]
    Write { path: String, source: ParquetError },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Told about the exporter's progress (the server turns it into `/metrics`).
pub trait ExportObserver: Send + Sync {
    /// A day of `signal` was written: `rows` rows in a file of `bytes` bytes.
    fn day_exported(&self, signal: Signal, rows: u64, bytes: u64);
    /// A pass over every signal ended; `ok` when each finished day is exported.
    fn pass_finished(&self, ok: bool, at: SystemTime);
}

/// What one pass wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// `(signal, date)` of each day written, in the order written.
    pub written: Vec<(Signal, String)>,
}

/// Writes finished days of the three stores into a [`History`].
pub struct Exporter {
    tables: [(Signal, Arc<dyn TableProvider>); 3],
    history: History,
    /// How long after its end a day is taken as finished: data arriving late (out of order,
    /// from a slow sender) lands before then.
    delay: Duration,
}

impl Exporter {
    pub fn new(
        metrics: Arc<dyn Querier>,
        logs: Arc<dyn LogReader>,
        spans: Arc<dyn TraceReader>,
        history: History,
        delay: Duration,
    ) -> Exporter {
        // No read budget: a query's budget protects interactive memory, and the export
        // streams a day through one Parquet writer whatever its size.
        Exporter {
            tables: crate::store_tables(metrics, logs, spans, [usize::MAX; 3]),
            history,
            delay,
        }
    }

    /// Exports every finished day still in a store's retention that has rows and no file;
    /// a day that fails is left for the next pass, the other days are still tried.
    pub async fn run(
        &self,
        now: SystemTime,
        observer: &dyn ExportObserver,
    ) -> Result<ExportReport, ExportError> {
        let mut report = ExportReport::default();
        let mut first_error = None;
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let finished_before = crate::history::day_of(
            Signal::Logs,
            now_ns.saturating_sub(self.delay.as_nanos() as i64),
        );
        for (signal, table) in &self.tables {
            // The day retention starts in may be partly gone; what is left of it is kept.
            let first = self.history.first_local_day(*signal, now) - 1;
            for day in first..finished_before {
                match self.export_day(*signal, table.clone(), day).await {
                    Ok(Some((rows, bytes))) => {
                        observer.day_exported(*signal, rows, bytes);
                        report
                            .written
                            .push((*signal, crate::history::date_of_day(day)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        observer.pass_finished(first_error.is_none(), now);
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Writes `day` of `signal` unless its file exists or it has no row: `(rows, bytes)`.
    async fn export_day(
        &self,
        signal: Signal,
        table: Arc<dyn TableProvider>,
        day: i64,
    ) -> Result<Option<(u64, u64)>, ExportError> {
        let (file, tmp) = self.history.day_files(signal, day);
        match self.history.store.head(&file).await {
            Ok(_) => return Ok(None),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let date = crate::history::date_of_day(day);
        let read = |source| ExportError::Read {
            signal: signal.table(),
            date: date.clone(),
            source,
        };
        // One partition: batches come in the store's order, so a rerun writes the same rows
        // in the same order.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let time = col(signal.time_column());
        let frame = ctx
            .read_table(table)
            .and_then(|f| {
                f.filter(
                    time.clone()
                        .gt_eq(signal.time_literal(day_start_ns(day)))
                        .and(time.lt(signal.time_literal(day_start_ns(day + 1)))),
                )
            })
            .map_err(read)?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await.map_err(read)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let write = |source| ExportError::Write {
            path: tmp.to_string(),
            source,
        };
        let mut writer = None;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(read)?;
            if batch.num_rows() == 0 {
                continue;
            }
            if writer.is_none() {
                // Opened at the first row: a day without rows leaves nothing behind.
                writer = Some(
                    AsyncArrowWriter::try_new(
                        BufWriter::new(self.history.store.clone(), tmp.clone()),
                        schema.clone(),
                        Some(props.clone()),
                    )
                    .map_err(write)?,
                );
            }
            let w = writer.as_mut().expect("opened above");
            w.write(&batch).await.map_err(write)?;
            rows += batch.num_rows() as u64;
        }
        let Some(writer) = writer else {
            return Ok(None);
        };
        writer.close().await.map_err(write)?;
        self.history.store.rename(&tmp, &file).await?;
        let bytes = self.history.store.head(&file).await?.size;
        Ok(Some((rows, bytes)))
    }
}

#[cfg(test)]
mod tests;
