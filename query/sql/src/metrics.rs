//! The `metrics` table: one row per sample of the TSDB, read through [`storage::Querier`].
//! Columns: `ts` (ms, UTC), `value` (NULL for a native histogram), `metric`, `job` and
//! `instance` (NULL when the series has none), `labels` (every label but the name) and
//! `histogram` (a native histogram's count, sum, schema and zero bucket; NULL for floats).
//! Staleness markers are not samples and are not rows.
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
    ArrayBuilder, ArrayRef, Float64Builder, Int32Builder, MapBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use storage::{
    is_stale_nan, HistogramSample, Labels, MatchOp, Matcher, Point, Querier, Sample, SelectHints,
    METRIC_NAME,
};

use crate::matchers::{matchers, LABEL_COLUMNS};
use crate::scan::{
    append_map, batch, map_builder, map_type, projected, store_error, timestamp_type, BatchRows,
    Batches, Out, StoreExec, StoreScan, TimeRange, BATCH_ROWS,
};

const MS: i64 = 1_000_000;

fn histogram_fields() -> Fields {
    Fields::from(vec![
        Field::new("count", DataType::Float64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("schema", DataType::Int32, false),
        Field::new("zero_threshold", DataType::Float64, false),
        Field::new("zero_count", DataType::Float64, false),
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
    Histogram(StructBuilder),
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
                "histogram" => {
                    Column::Histogram(StructBuilder::from_fields(histogram_fields(), BATCH_ROWS))
                }
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
                Column::Histogram(b) => append_histogram(b, &row),
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
                Column::Ts(b) => ArrayBuilder::finish(b),
                Column::Value(b) => ArrayBuilder::finish(b),
                Column::Metric(b) | Column::Label(_, b) => ArrayBuilder::finish(b),
                Column::Labels(b) => ArrayBuilder::finish(b.as_mut()),
                Column::Histogram(b) => ArrayBuilder::finish(b),
            })
            .collect();
        let rows = std::mem::take(&mut self.len);
        batch(&self.schema, columns, rows)
    }
}

fn append_histogram(b: &mut StructBuilder, row: &Row<'_>) {
    let h = match row {
        Row::Histogram(h) => Some(&h.h),
        Row::Float(_) => None,
    };
    let f64_field = |b: &mut StructBuilder, i: usize, v: Option<f64>| {
        b.field_builder::<Float64Builder>(i)
            .expect("the histogram's fields")
            .append_value(v.unwrap_or_default());
    };
    f64_field(b, 0, h.map(|h| h.count));
    f64_field(b, 1, h.map(|h| h.sum));
    b.field_builder::<Int32Builder>(2)
        .expect("the histogram's fields")
        .append_value(h.map_or(0, |h| h.schema));
    f64_field(b, 3, h.map(|h| h.zero_threshold));
    f64_field(b, 4, h.map(|h| h.zero_count));
    b.append(h.is_some());
}
