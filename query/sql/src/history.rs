//! Exported history: where the exporter puts each signal's finished days (Hive-style,
//! `signal=<table>/date=YYYY-MM-DD/part-0.parquet` under a root of an object store), and
//! [`HistoryTable`], which answers a table from its local store for the days the store still
//! holds whole and from the exported Parquet for the days before, as one table.
//!
//! Owns the layout, the day arithmetic and the boundary between local and exported days;
//! must not write (that is `export`'s) nor know how a store keeps its days: a store is asked
//! only through its table.

use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{col, lit, Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::export::ExportError;
use crate::scan::TimeRange;

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The partition column the exported directories add to a table (`date=YYYY-MM-DD`).
const DATE_COLUMN: &str = "date";

/// One of the three tables, as history knows it: its name and its time column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Logs,
    Spans,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Spans];

    /// The table's name, which is also the `signal=` directory's value.
    pub fn table(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Spans => "spans",
        }
    }

    pub(crate) fn time_column(self) -> &'static str {
        match self {
            Signal::Metrics | Signal::Logs => "ts",
            Signal::Spans => "start",
        }
    }

    /// Nanoseconds per unit of the time column.
    pub(crate) fn unit_ns(self) -> i64 {
        match self {
            Signal::Metrics => 1_000_000,
            Signal::Logs | Signal::Spans => 1,
        }
    }

    /// A time-column literal of `ns` nanoseconds (a multiple of the unit: a day boundary).
    pub(crate) fn time_literal(self, ns: i64) -> Expr {
        let tz = Some("+00:00".into());
        lit(match self {
            Signal::Metrics => ScalarValue::TimestampMillisecond(Some(ns / 1_000_000), tz),
            Signal::Logs | Signal::Spans => ScalarValue::TimestampNanosecond(Some(ns), tz),
        })
    }
}

/// How long each store keeps its data: the days before a store's retention began are read
/// from the export.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub metrics: Duration,
    pub logs: Duration,
    pub spans: Duration,
}

impl Retention {
    fn of(&self, signal: Signal) -> Duration {
        match signal {
            Signal::Metrics => self.metrics,
            Signal::Logs => self.logs,
            Signal::Spans => self.spans,
        }
    }
}

/// Where exported history lives: an object store, the URL DataFusion knows it by, and the
/// root under which the `signal=` directories are. Cheap to clone.
#[derive(Clone)]
pub struct History {
    pub(crate) store: Arc<dyn ObjectStore>,
    url: ObjectStoreUrl,
    root: Path,
    retention: Retention,
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "History({}{})", self.url.as_str(), self.root)
    }
}

impl History {
    /// History in `store`, known to DataFusion as `url` (`s3://bucket`), under `root`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        url: &str,
        root: &str,
        retention: Retention,
    ) -> Result<History, ExportError> {
        Ok(History {
            store,
            url: ObjectStoreUrl::parse(url)
                .map_err(|e| ExportError::Destination(format!("{url}: {e}")))?,
            root: Path::from(root),
            retention,
        })
    }

    /// History in a local directory (created if missing).
    pub fn local(dir: &FsPath, retention: Retention) -> Result<History, ExportError> {
        let bad =
            |e: &dyn fmt::Display| ExportError::Destination(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| bad(&e))?;
        let dir = dir.canonicalize().map_err(|e| bad(&e))?;
        let root = Path::from_filesystem_path(&dir).map_err(|e| bad(&e))?;
        Ok(History {
            store: Arc::new(LocalFileSystem::new()),
            url: ObjectStoreUrl::local_filesystem(),
            root,
            retention,
        })
    }

    /// Makes the store reachable from sessions built on `runtime`.
    pub(crate) fn register(&self, runtime: &RuntimeEnv) {
        runtime.register_object_store(self.url.as_ref(), self.store.clone());
    }

    /// `signal=<table>` under the root.
    pub(crate) fn signal_dir(&self, signal: Signal) -> Path {
        self.root.clone().join(format!("signal={}", signal.table()))
    }

    /// The file a day is exported to, and the name it is written under first.
    pub(crate) fn day_files(&self, signal: Signal, day: i64) -> (Path, Path) {
        let dir = self
            .signal_dir(signal)
            .join(format!("{DATE_COLUMN}={}", date_of_day(day)));
        // A leading dot hides the unfinished file from DataFusion's listing and pyarrow's.
        (
            dir.clone().join("part-0.parquet"),
            dir.join(".part-0.parquet.tmp"),
        )
    }

    /// The first day (days since the epoch) the signal's store holds whole at `now`: a
    /// store drops a partition only once all of it is past retention, so the day its
    /// retention starts in may already be partly gone, never a later one.
    pub fn first_local_day(&self, signal: Signal, now: SystemTime) -> i64 {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let start = now_ns.saturating_sub(self.retention.of(signal).as_nanos() as i64);
        start.div_euclid(DAY_NS) + 1
    }

    fn listing(&self, signal: Signal, schema: &SchemaRef) -> Result<ListingTable> {
        let url =
            ListingTableUrl::parse(format!("{}{}/", self.url.as_str(), self.signal_dir(signal)))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![(DATE_COLUMN.to_owned(), DataType::Utf8)]);
        ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(schema.clone()),
        )
    }
}

/// Day `day` (since the epoch) as `YYYY-MM-DD` (the proleptic Gregorian calendar, UTC).
pub(crate) fn date_of_day(day: i64) -> String {
    // A day past chrono's calendar (only a query's open bound) takes its first or last date.
    // Both sort before every real date as text, so as a lower bound they keep every partition:
    // pruning weakens, the query's own time filter still applies.
    let date = chrono::DateTime::from_timestamp(day.saturating_mul(86_400), 0)
        .map(|t| t.date_naive())
        .unwrap_or(if day < 0 {
            chrono::NaiveDate::MIN
        } else {
            chrono::NaiveDate::MAX
        });
    date.format("%Y-%m-%d").to_string()
}

/// The day (since the epoch) holding `t` in the signal's unit.
pub(crate) fn day_of(signal: Signal, t: i64) -> i64 {
    (i128::from(t) * i128::from(signal.unit_ns())).div_euclid(i128::from(DAY_NS)) as i64
}

/// Nanoseconds at the start of `day`.
pub(crate) fn day_start_ns(day: i64) -> i64 {
    day.saturating_mul(DAY_NS)
}

/// A table read from its local store from the first day the store holds whole, and from the
/// exported Parquet before. Filters are answered `Inexact`: the Parquet side only prunes by
/// them, so DataFusion applies them again above both.
pub(crate) struct HistoryTable {
    signal: Signal,
    local: Arc<dyn TableProvider>,
    history: History,
}

impl HistoryTable {
    pub(crate) fn new(
        signal: Signal,
        local: Arc<dyn TableProvider>,
        history: History,
    ) -> HistoryTable {
        HistoryTable {
            signal,
            local,
            history,
        }
    }
}

impl fmt::Debug for HistoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HistoryTable({})", self.signal.table())
    }
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.local.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(self
            .local
            .supports_filters_pushdown(filters)?
            .into_iter()
            .map(|p| match p {
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                p => p,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let signal = self.signal;
        let column = signal.time_column();
        let range = TimeRange::from_filters(filters, column, signal.unit_ns());
        let first_local = self.history.first_local_day(signal, SystemTime::now());
        let boundary = signal.time_literal(day_start_ns(first_local));

        let mut local_filters = filters.to_vec();
        local_filters.push(col(column).gt_eq(boundary.clone()));
        let mut plans = vec![
            self.local
                .scan(state, projection, &local_filters, limit)
                .await?,
        ];
        if !range.is_empty() && day_of(signal, range.lo) < first_local {
            let last = day_of(signal, range.hi).min(first_local - 1);
            let mut exported_filters = filters.to_vec();
            // The date directories the range needs, compared as text: pruned before listing.
            exported_filters
                .push(col(DATE_COLUMN).gt_eq(lit(date_of_day(day_of(signal, range.lo)))));
            exported_filters.push(col(DATE_COLUMN).lt_eq(lit(date_of_day(last))));
            let listing = self.history.listing(signal, &self.local.schema())?;
            plans.push(
                listing
                    .scan(state, projection, &exported_filters, limit)
                    .await?,
            );
        }
        UnionExec::try_new(plans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_days() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(-1), "1969-12-31");
        assert_eq!(date_of_day(11_016), "2000-02-29");
        assert_eq!(date_of_day(20_794), "2026-12-07");
        assert!(date_of_day(i64::MIN / 86_400).as_str() < "1970-01-01");
        assert!(date_of_day(i64::MAX / 86_400).as_str() < "1970-01-01");
        assert_eq!(day_of(Signal::Metrics, 86_400_000 - 1), 0);
        assert_eq!(day_of(Signal::Logs, DAY_NS), 1);
        assert_eq!(day_of(Signal::Spans, -1), -1);
    }
}
