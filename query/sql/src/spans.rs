//! The `spans` table: one row per span of the trace store, read through
//! [`storage::traces::TraceReader`]. Columns: `trace_id`, `span_id`, `parent_span_id` (hex;
//! NULL for a root), `service`, `name`, `kind` and `status_code` (TraceQL's names: `server`,
//! `error`, …), `start` (ns, UTC), `duration_ns`, `attributes` and `resource` (attribute
//! values as text) and `events` (the events' names).
//!
//! The scan applies time bounds on `start` and equality on `service` and `name` exactly:
//! it walks the store's index of a service (or of a service's operation) when the query
//! names one, its time index otherwise, within the bounds, newest spans first. The store's
//! seek narrows the candidates; the scan checks each equality on each span, as the store
//! asks (a value its index cannot hold walks the time index).

use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, ListBuilder, MapBuilder, StringBuilder,
    TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use storage::traces::{value_text, Seek, StoredSpan, TraceReader};
use storage::StorageError;
use tracequery::hex;

use crate::scan::{
    batch, equality, map_builder, map_type, projected, store_error, timestamp_type, BatchRows,
    Batches, Out, StoreExec, StoreScan, TimeRange,
};

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("service", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("start", timestamp_type(TimeUnit::Nanosecond), false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("status_code", DataType::Utf8, false),
        Field::new("attributes", map_type(), false),
        Field::new("resource", map_type(), false),
        Field::new("events", DataType::new_list(DataType::Utf8, true), false),
    ]))
});

pub(crate) struct SpansTable {
    store: Arc<dyn TraceReader>,
    max_spans: usize,
}

impl SpansTable {
    pub(crate) fn new(store: Arc<dyn TraceReader>, max_spans: usize) -> SpansTable {
        SpansTable { store, max_spans }
    }
}

impl fmt::Debug for SpansTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpansTable")
    }
}

/// The columns whose equality the scan applies.
const EQUALITY_COLUMNS: [&str; 2] = ["service", "name"];

/// `(column, value)` when `e` is equality on `service` or `name`.
fn column_equality(e: &Expr) -> Option<(&'static str, String)> {
    let (column, value) = equality(e)?;
    let column = EQUALITY_COLUMNS.into_iter().find(|c| *c == column)?;
    Some((column, value.to_owned()))
}

/// The index walk that finds the spans `equal` keeps: a service's operation, a service, or
/// (no service named) every span by time.
fn seek_of(equal: &[(&'static str, String)]) -> Seek {
    let value = |column: &str| {
        equal
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| v.clone())
    };
    match (value("service"), value("name")) {
        (Some(service), Some(name)) => Seek::Operation { service, name },
        (Some(service), None) => Seek::Service(service),
        (None, _) => Seek::Time,
    }
}

#[async_trait]
impl TableProvider for SpansTable {
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
                if TimeRange::of(f, "start", 1).is_some() || column_equality(f).is_some() {
                    TableProviderFilterPushDown::Exact
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
        let equal: Vec<(&'static str, String)> =
            filters.iter().filter_map(column_equality).collect();
        let scan = SpansScan {
            store: self.store.clone(),
            schema: schema.clone(),
            range: TimeRange::from_filters(filters, "start", 1),
            seek: seek_of(&equal),
            equal,
            max_spans: self.max_spans,
        };
        Ok(Arc::new(StoreExec::new(
            "spans",
            Arc::new(scan),
            schema,
            limit,
        )))
    }
}

struct SpansScan {
    store: Arc<dyn TraceReader>,
    schema: SchemaRef,
    range: TimeRange,
    seek: Seek,
    /// `service` and `name` equalities, checked on every span the seek finds.
    equal: Vec<(&'static str, String)>,
    max_spans: usize,
}

impl SpansScan {
    fn keeps(&self, span: &StoredSpan) -> bool {
        self.equal.iter().all(|(column, value)| match *column {
            "service" => span.origin.service_name() == value,
            _ => span.span.name == *value,
        })
    }
}

impl fmt::Debug for SpansScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

impl StoreScan for SpansScan {
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "start_ns={}, seek={:?}", self.range, self.seek)?;
        for (column, value) in &self.equal {
            write!(f, ", {column}={value:?}")?;
        }
        Ok(())
    }

    fn run(&self, out: &mut Out) -> Result<()> {
        if self.range.is_empty() {
            return Ok(());
        }
        let (lo, hi) = (
            u64::try_from(self.range.lo).unwrap_or(0),
            u64::try_from(self.range.hi).unwrap_or(0),
        );
        let mut batches = Batches::new(Rows::new(&self.schema), out);
        let mut read = 0usize;
        self.store
            .scan(&self.seek, lo, hi, &mut |candidate| {
                read += 1;
                if read > self.max_spans {
                    return Err(StorageError::TooManyRecords {
                        limit: self.max_spans,
                    });
                }
                // A span whose record is gone (retention between index and record) is no row.
                let Some(span) = candidate.load()? else {
                    return Ok(ControlFlow::Continue(()));
                };
                if !self.keeps(&span) {
                    return Ok(ControlFlow::Continue(()));
                }
                Ok(batches.push(|rows| {
                    rows.push(&candidate.trace_id, &candidate.span_id, &span);
                    Ok(())
                }))
            })
            .map_err(store_error)?;
        batches.finish()
    }
}

enum Column {
    TraceId(StringBuilder),
    SpanId(StringBuilder),
    Parent(StringBuilder),
    Service(StringBuilder),
    Name(StringBuilder),
    Kind(StringBuilder),
    Start(TimestampNanosecondBuilder),
    Duration(Int64Builder),
    Status(StringBuilder),
    Attributes(Box<MapBuilder<StringBuilder, StringBuilder>>),
    Resource(Box<MapBuilder<StringBuilder, StringBuilder>>),
    Events(ListBuilder<StringBuilder>),
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
                "trace_id" => Column::TraceId(StringBuilder::new()),
                "span_id" => Column::SpanId(StringBuilder::new()),
                "parent_span_id" => Column::Parent(StringBuilder::new()),
                "service" => Column::Service(StringBuilder::new()),
                "name" => Column::Name(StringBuilder::new()),
                "kind" => Column::Kind(StringBuilder::new()),
                "start" => Column::Start(
                    TimestampNanosecondBuilder::new()
                        .with_data_type(timestamp_type(TimeUnit::Nanosecond)),
                ),
                "duration_ns" => Column::Duration(Int64Builder::new()),
                "status_code" => Column::Status(StringBuilder::new()),
                "attributes" => Column::Attributes(Box::new(map_builder())),
                "resource" => Column::Resource(Box::new(map_builder())),
                _ => Column::Events(ListBuilder::new(StringBuilder::new())),
            })
            .collect();
        Rows {
            schema: schema.clone(),
            columns,
            len: 0,
        }
    }

    fn push(&mut self, trace_id: &[u8], span_id: &[u8], s: &StoredSpan) {
        let span = &s.span;
        for c in &mut self.columns {
            match c {
                Column::TraceId(b) => b.append_value(hex(trace_id)),
                Column::SpanId(b) => b.append_value(hex(span_id)),
                Column::Parent(b) => b.append_option(
                    (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                ),
                Column::Service(b) => b.append_value(s.origin.service_name()),
                Column::Name(b) => b.append_value(&span.name),
                Column::Kind(b) => b.append_value(tracequery::traceql::kind(s)),
                Column::Start(b) => {
                    b.append_value(i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX))
                }
                Column::Duration(b) => b.append_value(
                    i64::try_from(
                        span.end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano),
                    )
                    .unwrap_or(i64::MAX),
                ),
                Column::Status(b) => b.append_value(tracequery::traceql::status(s)),
                Column::Attributes(b) => append_attributes(b, &span.attributes),
                Column::Resource(b) => append_attributes(b, s.origin.resource_attributes()),
                Column::Events(b) => {
                    for e in &span.events {
                        b.values().append_value(&e.name);
                    }
                    b.append(true);
                }
            }
        }
        self.len += 1;
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
                Column::TraceId(b)
                | Column::SpanId(b)
                | Column::Parent(b)
                | Column::Service(b)
                | Column::Name(b)
                | Column::Kind(b)
                | Column::Status(b) => ArrayBuilder::finish(b),
                Column::Start(b) => ArrayBuilder::finish(b),
                Column::Duration(b) => ArrayBuilder::finish(b),
                Column::Attributes(b) | Column::Resource(b) => ArrayBuilder::finish(b.as_mut()),
                Column::Events(b) => ArrayBuilder::finish(b),
            })
            .collect();
        let rows = std::mem::take(&mut self.len);
        batch(&self.schema, columns, rows)
    }
}

/// Attributes as text (`value_text`: ints in decimal, bools as `true`/`false`); values
/// without a text form (arrays, maps) are left out.
fn append_attributes(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) {
    for kv in kvs {
        if let Some(v) = kv.value.as_ref().and_then(value_text) {
            b.keys().append_value(&kv.key);
            b.values().append_value(v);
        }
    }
    // A map of non-null entries is always valid.
    let _ = b.append(true);
}
