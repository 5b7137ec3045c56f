//! The `metrics` table: one row per sample of the TSDB, read through [`storage::Querier`].
//! Columns: `ts` (ms, UTC), `value` (NULL for a native histogram), `metric`, `job` and
//! `instance` (NULL when the series has none), `labels` (every label but the name) and
//! `histogram` (a native histogram sample as the TSDB stores it, Prometheus's float
//! histogram: `count`, `sum`, `schema`, `zero_threshold`, `zero_count`, the
//! `counter_reset_hint` (0 unknown, 1 reset, 2 not a reset, 3 gauge), the `positive_spans`
//! and `negative_spans` (`offset`, `length`) with the absolute counts of their buckets in
//! `positive_buckets` and `negative_buckets`, and the `custom_values` bounds of schema -53;
//! NULL for floats). Staleness markers are not samples and are not rows.
//!
//! The scan applies time bounds on `ts` as the select's range, and equality, regular
//! expressions, `LIKE` and `IN` and their negations on `metric`, `job`, `instance` and
//! `labels['…']` as its matchers where matchers keep exactly the rows the filter does
//! (`matchers`): exactly, so DataFusion keeps no filter of them, and the TSDB reads only the
//! series they keep.

use std::fmt;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Float64Array, Float64Builder, Int32Array, ListArray, MapBuilder,
    StringBuilder, StructArray, TimestampMillisecondBuilder, UInt32Array, UInt8Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use storage::{
    is_stale_nan, HistogramSample, HistogramSpan, Labels, MatchOp, Matcher, Point, Querier, Sample,
    SelectHints, METRIC_NAME,
};

use crate::matchers::{matchers, LABEL_COLUMNS};
use crate::scan::{
    append_map, batch, map_builder, map_type, projected, store_error, timestamp_type, BatchRows,
    Batches, Out, StoreExec, StoreScan, TimeRange,
};

const MS: i64 = 1_000_000;

/// The `histogram` struct's fields. The lists are nullable so that a field added later
/// reads as NULL from days exported before it.
fn histogram_fields() -> Fields {
    let list = |name, item: DataType| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new_list_field(item, false))),
            true,
        )
    };
    let span = DataType::Struct(span_fields());
    Fields::from(vec![
        Field::new("count", DataType::Float64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("schema", DataType::Int32, false),
        Field::new("zero_threshold", DataType::Float64, false),
        Field::new("zero_count", DataType::Float64, false),
        Field::new("counter_reset_hint", DataType::UInt8, true),
        list("positive_spans", span.clone()),
        list("positive_buckets", DataType::Float64),
        list("negative_spans", span),
        list("negative_buckets", DataType::Float64),
        list("custom_values", DataType::Float64),
    ])
}

fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("offset", DataType::Int32, false),
        Field::new("length", DataType::UInt32, false),
    ])
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("ts", timestamp_type(TimeUnit::Millisecond), false),
        Field::new("value", DataType::Float64, true),
        Field::new("metric", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, true),
        Field::new("instance", DataType::Utf8, true),
        Field::new("labels", map_type(), false),
        Field::new("histogram", DataType::Struct(histogram_fields()), true),
    ]))
});

pub(crate) struct MetricsTable {
    store: Arc<dyn Querier>,
    max_samples: usize,
}

impl MetricsTable {
    pub(crate) fn new(store: Arc<dyn Querier>, max_samples: usize) -> MetricsTable {
        MetricsTable { store, max_samples }
    }
}

impl fmt::Debug for MetricsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsTable")
    }
}

#[async_trait]
impl TableProvider for MetricsTable {
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
                if TimeRange::of(f, "ts", MS).is_some() || matchers(f).is_some() {
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
        let mut select: Vec<Matcher> = Vec::new();
        // Each negation of a label brings `label=~".+"`: once is enough.
        for m in filters.iter().filter_map(matchers).flatten() {
            if !select.contains(&m) {
                select.push(m);
            }
        }
        if !select
            .iter()
            .any(|m| m.name == METRIC_NAME && !m.matches(""))
        {
            // Every series has a name: the select of all series (with a negation of the
            // name, of all the others).
            select.extend(Matcher::new(MatchOp::RegexMatch, METRIC_NAME, ".+").ok());
        }
        let scan = MetricsScan {
            store: self.store.clone(),
            schema: schema.clone(),
            range: TimeRange::from_filters(filters, "ts", MS),
            matchers: select,
            max_samples: self.max_samples,
        };
        Ok(Arc::new(StoreExec::new(
            "metrics",
            Arc::new(scan),
            schema,
            limit,
        )))
    }
}

struct MetricsScan {
    store: Arc<dyn Querier>,
    schema: SchemaRef,
    range: TimeRange,
    matchers: Vec<Matcher>,
    max_samples: usize,
}

impl fmt::Debug for MetricsScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

impl StoreScan for MetricsScan {
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let matchers: Vec<String> = self
            .matchers
            .iter()
            .map(|m| format!("{}{}{:?}", m.name, m.op.as_str(), m.value))
            .collect();
        write!(
            f,
            "ts_ms={}, matchers={{{}}}",
            self.range,
            matchers.join(", ")
        )
    }

    fn run(&self, out: &mut Out) -> Result<()> {
        if self.range.is_empty() {
            return Ok(());
        }
        let hints = SelectHints::range(self.range.lo, self.range.hi, self.max_samples);
        let set = self
            .store
            .select(&self.matchers, &hints)
            .map_err(store_error)?;
        let mut batches = Batches::new(Rows::new(&self.schema), out);
        'series: for series in set {
            let series = series.map_err(store_error)?;
            let labels = series.labels.clone();
            for point in series.points() {
                let sent = match point.map_err(store_error)? {
                    Point::Float(s) if !is_stale_nan(s.v) && self.range.contains(s.t) => {
                        batches.push(|rows| rows.push(&labels, Row::Float(s)))
                    }
                    Point::Histogram(h) if !h.h.is_stale() && self.range.contains(h.t) => {
                        batches.push(|rows| rows.push(&labels, Row::Histogram(&h)))
                    }
                    _ => continue,
                };
                if sent.is_break() {
                    break 'series;
                }
            }
        }
        batches.finish()
    }
}

enum Row<'a> {
    Float(Sample),
    Histogram(&'a HistogramSample),
}

/// The projected columns being built.
enum Column {
    Ts(TimestampMillisecondBuilder),
    Value(Float64Builder),
    Metric(StringBuilder),
    Label(&'static str, StringBuilder),
    Labels(Box<MapBuilder<StringBuilder, StringBuilder>>),
    Histogram(Box<HistogramColumn>),
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
                    TimestampMillisecondBuilder::new()
                        .with_data_type(timestamp_type(TimeUnit::Millisecond)),
                ),
                "value" => Column::Value(Float64Builder::new()),
                "metric" => Column::Metric(StringBuilder::new()),
                "labels" => Column::Labels(Box::new(map_builder())),
                "histogram" => Column::Histogram(Box::default()),
                label => Column::Label(
                    LABEL_COLUMNS
                        .iter()
                        .find(|l| **l == label)
                        .expect("the schema's columns"),
                    StringBuilder::new(),
                ),
            })
            .collect();
        Rows {
            schema: schema.clone(),
            columns,
            len: 0,
        }
    }

    fn push(&mut self, labels: &Labels, row: Row<'_>) -> Result<()> {
        for c in &mut self.columns {
            match c {
                Column::Ts(b) => b.append_value(match &row {
                    Row::Float(s) => s.t,
                    Row::Histogram(h) => h.t,
                }),
                Column::Value(b) => match &row {
                    Row::Float(s) => b.append_value(s.v),
                    Row::Histogram(_) => b.append_null(),
                },
                Column::Metric(b) => b.append_value(labels.metric_name().unwrap_or_default()),
                Column::Label(name, b) => b.append_option(labels.get(name)),
                Column::Labels(b) => append_map(
                    b,
                    labels
                        .iter()
                        .filter(|l| l.name != METRIC_NAME)
                        .map(|l| (l.name.as_str(), l.value.as_str())),
                )?,
                Column::Histogram(b) => b.push(match &row {
                    Row::Histogram(h) => Some(&h.h),
                    Row::Float(_) => None,
                }),
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

    fn finish(&mut self) -> Result<datafusion::arrow::record_batch::RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| match c {
                Column::Ts(b) => Ok(ArrayBuilder::finish(b)),
                Column::Value(b) => Ok(ArrayBuilder::finish(b)),
                Column::Metric(b) | Column::Label(_, b) => Ok(ArrayBuilder::finish(b)),
                Column::Labels(b) => Ok(ArrayBuilder::finish(b.as_mut())),
                Column::Histogram(b) => b.finish(),
            })
            .collect::<Result<_>>()?;
        let rows = std::mem::take(&mut self.len);
        batch(&self.schema, columns, rows)
    }
}

/// The `histogram` column being built: one entry per row, a default one (and no struct) for
/// a float sample's row.
#[derive(Default)]
struct HistogramColumn {
    valid: Vec<bool>,
    count: Vec<f64>,
    sum: Vec<f64>,
    schema: Vec<i32>,
    zero_threshold: Vec<f64>,
    zero_count: Vec<f64>,
    hint: Vec<u8>,
    positive_spans: SpanList,
    positive_buckets: FloatList,
    negative_spans: SpanList,
    negative_buckets: FloatList,
    custom_values: FloatList,
}

#[derive(Default)]
struct FloatList {
    offsets: Vec<i32>,
    values: Vec<f64>,
}

impl FloatList {
    fn push(&mut self, values: &[f64]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.values.extend_from_slice(values);
        self.offsets.push(self.values.len() as i32);
    }

    fn finish(&mut self, field: &Field) -> Result<ArrayRef> {
        let offsets = std::mem::take(&mut self.offsets);
        let values = Float64Array::from(std::mem::take(&mut self.values));
        list(field, offsets, Arc::new(values))
    }
}

#[derive(Default)]
struct SpanList {
    offsets: Vec<i32>,
    offset: Vec<i32>,
    length: Vec<u32>,
}

impl SpanList {
    fn push(&mut self, spans: &[HistogramSpan]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        for s in spans {
            self.offset.push(s.offset);
            self.length.push(s.length);
        }
        self.offsets.push(self.offset.len() as i32);
    }

    fn finish(&mut self, field: &Field) -> Result<ArrayRef> {
        let offsets = std::mem::take(&mut self.offsets);
        let spans = StructArray::try_new(
            span_fields(),
            vec![
                Arc::new(Int32Array::from(std::mem::take(&mut self.offset))),
                Arc::new(UInt32Array::from(std::mem::take(&mut self.length))),
            ],
            None,
        )?;
        list(field, offsets, Arc::new(spans))
    }
}

/// A list column of `field`'s type from its offsets (none when it has no row) and values.
fn list(field: &Field, offsets: Vec<i32>, values: ArrayRef) -> Result<ArrayRef> {
    let DataType::List(item) = field.data_type() else {
        unreachable!("the histogram's list fields");
    };
    let offsets = if offsets.is_empty() { vec![0] } else { offsets };
    Ok(Arc::new(ListArray::try_new(
        item.clone(),
        OffsetBuffer::new(offsets.into()),
        values,
        None,
    )?))
}

impl HistogramColumn {
    fn push(&mut self, h: Option<&storage::Histogram>) {
        let d = storage::Histogram::default();
        self.valid.push(h.is_some());
        let h = h.unwrap_or(&d);
        self.count.push(h.count);
        self.sum.push(h.sum);
        self.schema.push(h.schema);
        self.zero_threshold.push(h.zero_threshold);
        self.zero_count.push(h.zero_count);
        self.hint.push(h.counter_reset_hint);
        self.positive_spans.push(&h.positive_spans);
        self.positive_buckets.push(&h.positive_buckets);
        self.negative_spans.push(&h.negative_spans);
        self.negative_buckets.push(&h.negative_buckets);
        self.custom_values.push(&h.custom_values);
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let fields = histogram_fields();
        let f64s =
            |v: &mut Vec<f64>| -> ArrayRef { Arc::new(Float64Array::from(std::mem::take(v))) };
        let columns: Vec<ArrayRef> = vec![
            f64s(&mut self.count),
            f64s(&mut self.sum),
            Arc::new(Int32Array::from(std::mem::take(&mut self.schema))),
            f64s(&mut self.zero_threshold),
            f64s(&mut self.zero_count),
            Arc::new(UInt8Array::from(std::mem::take(&mut self.hint))),
            self.positive_spans.finish(&fields[6])?,
            self.positive_buckets.finish(&fields[7])?,
            self.negative_spans.finish(&fields[8])?,
            self.negative_buckets.finish(&fields[9])?,
            self.custom_values.finish(&fields[10])?,
        ];
        let valid = NullBuffer::from(std::mem::take(&mut self.valid));
        Ok(Arc::new(StructArray::try_new(
            fields,
            columns,
            Some(valid),
        )?))
    }
}
