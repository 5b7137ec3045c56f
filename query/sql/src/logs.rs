//! The `logs` table: one row per record of the log store, read through
//! [`storage::logs::LogReader`]. Columns: `ts` (ns, UTC), `line`, `labels` (the stream),
//! `metadata` (structured metadata), `trace_id` and `span_id` (from the metadata, as OTLP logs
//! carry them) and `level` (`detected_level`, else a `level` in the metadata or stream).
//!
//! The scan applies time bounds on `ts` exactly, and hands `line LIKE '%text%'` to the index
//! (which DataFusion checks again: the index's match is a candidate test). A query that reads
//! neither `ts` nor `line` (counts by stream, level or metadata) is answered from the store's
//! counts per stream without reading a line: the same read LogQL's metric queries make.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, MapBuilder, StringBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, Like, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use storage::logs::{Buckets, Direction, LogQuery, LogReader};
use storage::{Labels, StorageError};

use crate::scan::{
    append_map, batch, map_builder, map_type, projected, store_error, timestamp_type, BatchRows,
    Batches, Out, StoreExec, StoreScan, TimeRange,
};

const LEVEL_KEYS: [&str; 2] = ["detected_level", "level"];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("ts", timestamp_type(TimeUnit::Nanosecond), false),
        Field::new("line", DataType::Utf8, false),
        Field::new("labels", map_type(), false),
        Field::new("metadata", map_type(), false),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("level", DataType::Utf8, true),
    ]))
});

pub(crate) struct LogsTable {
    store: Arc<dyn LogReader>,
    max_records: usize,
}

impl LogsTable {
    pub(crate) fn new(store: Arc<dyn LogReader>, max_records: usize) -> LogsTable {
        LogsTable { store, max_records }
    }
}

impl fmt::Debug for LogsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogsTable")
    }
}

/// The text `line LIKE '%text%'` asks lines to contain, when the pattern has no other
/// wildcard or escape.
fn contains(e: &Expr) -> Option<String> {
    let Expr::Like(Like {
        negated: false,
        expr,
        pattern,
        escape_char: None,
        case_insensitive: false,
    }) = e
    else {
        return None;
    };
    if !matches!(&**expr, Expr::Column(c) if c.name == "line") {
        return None;
    }
    let Expr::Literal(
        ScalarValue::Utf8(Some(p))
        | ScalarValue::Utf8View(Some(p))
        | ScalarValue::LargeUtf8(Some(p)),
        _,
    ) = &**pattern
    else {
        return None;
    };
    let text = p.strip_prefix('%')?.strip_suffix('%')?;
    (!text.is_empty() && !text.contains(['%', '_', '\\'])).then(|| text.to_owned())
}

#[async_trait]
impl TableProvider for LogsTable {
    fn schema(&self) -> SchemaRef {
        SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if TimeRange::of(f, "ts", 1).is_some() {
                    TableProviderFilterPushDown::Exact
                } else if contains(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = projected(&SCHEMA, projection)?;
        let reads_lines = schema
            .fields()
            .iter()
            .any(|f| f.name() == "ts" || f.name() == "line");
        let contains: Vec<String> = filters.iter().filter_map(contains).collect();
        let scan = LogsScan {
            store: self.store.clone(),
            schema: schema.clone(),
            range: TimeRange::from_filters(filters, "ts", 1),
            // Counts cannot apply `contains`: a filter on lines needs the lines.
            counts: !reads_lines && contains.is_empty(),
            contains,
            max_records: self.max_records,
        };
        Ok(Arc::new(StoreExec::new(
            "logs",
            Arc::new(scan),
            schema,
            limit,
        )))
    }
}

struct LogsScan {
    store: Arc<dyn LogReader>,
    schema: SchemaRef,
    range: TimeRange,
    contains: Vec<String>,
    /// Whether rows come from per-stream counts rather than records.
    counts: bool,
    max_records: usize,
}

impl fmt::Debug for LogsScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

impl StoreScan for LogsScan {
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ts_ns={}, contains={:?}, read={}",
            self.range,
            self.contains,
            if self.counts { "counts" } else { "records" }
        )
    }

    fn run(&self, out: &mut Out) -> Result<()> {
        if self.range.is_empty() {
            return Ok(());
        }
        let q = LogQuery {
            matchers: Vec::new(),
            start_ns: self.range.lo,
            // The store's end is exclusive.
            end_ns: self.range.hi.saturating_add(1),
            contains: self.contains.clone(),
        };
        let mut batches = Batches::new(Rows::new(&self.schema), out);
        if self.counts {
            // One bucket holding the whole range: a count per stream and metadata.
            let width = self
                .range
                .hi
                .saturating_sub(self.range.lo)
                .saturating_add(1);
            let buckets = Buckets::ending_at(self.range.hi, width);
            self.store
                .scan_streams(
                    &q,
                    buckets,
                    self.max_records,
                    &mut |labels, metadata, hits| {
                        let records: u64 = hits.iter().map(|h| h.records).sum();
                        for _ in 0..records {
                            let sent = batches.push(|rows| rows.push(0, labels, "", metadata));
                            if sent.is_break() {
                                return sent;
                            }
                        }
                        ControlFlow::Continue(())
                    },
                )
                .map_err(store_error)?;
        } else {
            let mut read = 0usize;
            self.store
                .scan(&q, Direction::Forward, &mut |r| {
                    read += 1;
                    if read > self.max_records {
                        return batches.fail(store_error(StorageError::TooManyRecords {
                            limit: self.max_records,
                        }));
                    }
                    if !self.range.contains(r.ts_ns) {
                        return ControlFlow::Continue(());
                    }
                    batches.push(|rows| rows.push(r.ts_ns, &r.labels, &r.line, &r.metadata))
                })
                .map_err(store_error)?;
        }
        batches.finish()
    }
}

enum Column {
    Ts(TimestampNanosecondBuilder),
    Line(StringBuilder),
    Labels(Box<MapBuilder<StringBuilder, StringBuilder>>),
    Metadata(Box<MapBuilder<StringBuilder, StringBuilder>>),
    /// A metadata key's value.
    Field(&'static str, StringBuilder),
    Level(StringBuilder),
}

struct Rows {
    schema: SchemaRef,
    columns: Vec<Column>,
    len: usize,
}

impl Rows {
    fn new(schema: &SchemaRef) -> Rows {
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "ts" => Column::Ts(
                    TimestampNanosecondBuilder::new()
                        .with_data_type(timestamp_type(TimeUnit::Nanosecond)),
                ),
                "line" => Column::Line(StringBuilder::new()),
                "labels" => Column::Labels(Box::new(map_builder())),
                "metadata" => Column::Metadata(Box::new(map_builder())),
                "trace_id" => Column::Field("trace_id", StringBuilder::new()),
                "span_id" => Column::Field("span_id", StringBuilder::new()),
                _ => Column::Level(StringBuilder::new()),
            })
            .collect();
        Rows {
            schema: schema.clone(),
            columns,
            len: 0,
        }
    }

    fn push(
        &mut self,
        ts_ns: i64,
        labels: &Labels,
        line: &str,
        metadata: &[(String, String)],
    ) -> Result<()> {
        let field = |key: &str| {
            metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        for c in &mut self.columns {
            match c {
                Column::Ts(b) => b.append_value(ts_ns),
                Column::Line(b) => b.append_value(line),
                Column::Labels(b) => append_map(
                    b,
                    labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                )?,
                Column::Metadata(b) => {
                    append_map(b, metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())))?
                }
                Column::Field(key, b) => b.append_option(field(key)),
                Column::Level(b) => b.append_option(
                    LEVEL_KEYS
                        .iter()
                        .find_map(|k| field(k))
                        .or_else(|| labels.get("level")),
                ),
            }
        }
        self.len += 1;
        Ok(())
    }
}

impl BatchRows for Rows {
    fn len(&self) -> usize {
        self.len
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| match c {
                Column::Ts(b) => ArrayBuilder::finish(b),
                Column::Line(b) | Column::Field(_, b) | Column::Level(b) => ArrayBuilder::finish(b),
                Column::Labels(b) | Column::Metadata(b) => ArrayBuilder::finish(b.as_mut()),
            })
            .collect();
        let rows = std::mem::take(&mut self.len);
        batch(&self.schema, columns, rows)
    }
}
