//! What the three tables share: [`StoreExec`], the plan node that runs a store read
//! ([`StoreScan`]) on the blocking pool and streams its batches through a small channel, so a
//! scan holds a couple of batches however much it reads and stops as soon as the query needs
//! no more rows; and the reading of the filters a scan applies itself ([`TimeRange`],
//! [`equality`]).

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, MapBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use storage::StorageError;
use tokio::sync::mpsc::Sender;

/// Rows per batch a scan sends.
pub(crate) const BATCH_ROWS: usize = 8192;

/// Batches a scan may have sent and the query not yet taken: the scan reads ahead this far.
const READ_AHEAD: usize = 2;

/// A store read, decided when the query was planned (filters, projection, limit).
pub(crate) trait StoreScan: fmt::Debug + Send + Sync + 'static {
    /// What the read applies, for EXPLAIN (`time=[…] matchers=[…]`).
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// Reads, sending batches of the projected schema to `out` until it has read everything
    /// or `out` wants no more.
    fn run(&self, out: &mut Out) -> Result<()>;
}

/// Where a scan sends its batches: stops it once the query is gone or has its LIMIT.
pub(crate) struct Out {
    tx: Sender<Result<RecordBatch>>,
    /// Rows the query still wants, when it has a LIMIT.
    left: Option<usize>,
}

impl Out {
    /// Sends `batch` (cut to the rows still wanted); `Break` when no more rows are wanted.
    pub(crate) fn send(&mut self, batch: RecordBatch) -> ControlFlow<()> {
        let batch = match self.left {
            Some(left) => {
                let take = left.min(batch.num_rows());
                self.left = Some(left - take);
                batch.slice(0, take)
            }
            None => batch,
        };
        if batch.num_rows() > 0 && self.tx.blocking_send(Ok(batch)).is_err() {
            return ControlFlow::Break(());
        }
        if self.left == Some(0) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// A table's rows being built into the next batch.
pub(crate) trait BatchRows {
    /// Rows pushed since the last batch.
    fn len(&self) -> usize;
    /// The rows pushed so far as a batch, starting the next one empty.
    fn finish(&mut self) -> Result<RecordBatch>;
}

/// The batching every store read does: cuts its rows into batches of [`BATCH_ROWS`] sent to
/// [`Out`], and keeps the first error, since the stores' callbacks can only say stop.
pub(crate) struct Batches<'o, R> {
    rows: R,
    out: &'o mut Out,
    failed: Option<DataFusionError>,
}

impl<'o, R: BatchRows> Batches<'o, R> {
    pub(crate) fn new(rows: R, out: &'o mut Out) -> Self {
        Batches {
            rows,
            out,
            failed: None,
        }
    }

    /// Pushes a row with `push`, sending the batch it fills; `Break` when the read must stop.
    pub(crate) fn push(&mut self, push: impl FnOnce(&mut R) -> Result<()>) -> ControlFlow<()> {
        if let Err(e) = push(&mut self.rows) {
            return self.fail(e);
        }
        if self.rows.len() < BATCH_ROWS {
            return ControlFlow::Continue(());
        }
        match self.rows.finish() {
            Ok(b) => self.out.send(b),
            Err(e) => self.fail(e),
        }
    }

    /// Stops the read with `e`, which [`Batches::finish`] returns.
    pub(crate) fn fail(&mut self, e: DataFusionError) -> ControlFlow<()> {
        self.failed = Some(e);
        ControlFlow::Break(())
    }

    /// Ends the read: its error, else the last partial batch sent.
    pub(crate) fn finish(mut self) -> Result<()> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        // After a LIMIT is met or the query is gone, this sends nothing.
        if self.rows.len() > 0 {
            let _ = self.out.send(self.rows.finish()?);
        }
        Ok(())
    }
}

/// The table's schema cut to the columns the query reads.
pub(crate) fn projected(schema: &SchemaRef, projection: Option<&Vec<usize>>) -> Result<SchemaRef> {
    Ok(match projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => schema.clone(),
    })
}

/// A store's error as DataFusion carries it (classified again at the engine's boundary).
pub(crate) fn store_error(e: StorageError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A batch of `rows` rows of `columns` (none, when the query reads no column: `count(*)`).
pub(crate) fn batch(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// The scan node: one partition, bounded, whose output is what the store read sends.
#[derive(Debug)]
pub(crate) struct StoreExec {
    table: &'static str,
    scan: Arc<dyn StoreScan>,
    schema: SchemaRef,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
}

impl StoreExec {
    pub(crate) fn new(
        table: &'static str,
        scan: Arc<dyn StoreScan>,
        schema: SchemaRef,
        limit: Option<usize>,
    ) -> StoreExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StoreExec {
            table,
            scan,
            schema,
            limit,
            props: Arc::new(props),
        }
    }
}

impl DisplayAs for StoreExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|c| c.name().as_str())
            .collect();
        write!(
            f,
            "StoreExec: table={}, projection=[{}]",
            self.table,
            columns.join(", ")
        )?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        f.write_str(", ")?;
        self.scan.describe(f)
    }
}

impl ExecutionPlan for StoreExec {
    fn name(&self) -> &str {
        "StoreExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "StoreExec has no children".to_owned(),
            ))
        }
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), READ_AHEAD);
        let mut out = Out {
            tx: builder.tx(),
            left: self.limit,
        };
        let scan = self.scan.clone();
        builder.spawn_blocking(move || {
            if out.left == Some(0) {
                return Ok(());
            }
            scan.run(&mut out)
        });
        Ok(builder.build())
    }

    fn fetch(&self) -> Option<usize> {
        self.limit
    }
}

/// Inclusive bounds on a timestamp column, in the column's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub lo: i64,
    pub hi: i64,
}

impl TimeRange {
    /// No bound yet: from the epoch (nothing is stored before it) to the end of time.
    pub(crate) const ALL: TimeRange = TimeRange {
        lo: 0,
        hi: i64::MAX - 1,
    };

    /// The range the filters on `column` (in units of `unit_ns` nanoseconds) leave.
    pub(crate) fn from_filters(filters: &[Expr], column: &str, unit_ns: i64) -> TimeRange {
        filters
            .iter()
            .filter_map(|f| TimeRange::of(f, column, unit_ns))
            .fold(TimeRange::ALL, |a, b| TimeRange {
                lo: a.lo.max(b.lo),
                hi: a.hi.min(b.hi),
            })
    }

    pub(crate) fn contains(&self, t: i64) -> bool {
        self.lo <= t && t <= self.hi
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    /// The bound `e` puts on `column`, if it compares the column (or a cast of it to a unit
    /// at least as fine, which changes no value) with a timestamp literal: then the scan
    /// applies it exactly.
    pub(crate) fn of(e: &Expr, column: &str, unit_ns: i64) -> Option<TimeRange> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, lit) = if is_time_column(left, column, unit_ns) {
                    (*op, right)
                } else if is_time_column(right, column, unit_ns) {
                    (op.swap()?, left)
                } else {
                    return None;
                };
                let v = literal_ns(lit)?;
                let f = i128::from(unit_ns);
                let floor = v.div_euclid(f);
                let ceil = -(-v).div_euclid(f);
                let (lo, hi) = match op {
                    Operator::Gt => (floor + 1, i128::MAX),
                    Operator::GtEq => (ceil, i128::MAX),
                    Operator::Lt => (i128::MIN, ceil - 1),
                    Operator::LtEq => (i128::MIN, floor),
                    Operator::Eq => (ceil, floor),
                    _ => return None,
                };
                Some(TimeRange {
                    lo: clamp(lo),
                    hi: clamp(hi),
                })
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_time_column(expr, column, unit_ns) => {
                let f = i128::from(unit_ns);
                let (low, high) = (literal_ns(low)?, literal_ns(high)?);
                Some(TimeRange {
                    lo: clamp(-(-low).div_euclid(f)),
                    hi: clamp(high.div_euclid(f)),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.lo, self.hi)
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// `column` itself, or cast to a timestamp whose unit is no coarser than the column's.
fn is_time_column(e: &Expr, column: &str, unit_ns: i64) -> bool {
    let (inner, cast_to) = match e {
        Expr::Cast(c) => (&*c.expr, Some(c.field.data_type())),
        Expr::TryCast(c) => (&*c.expr, Some(c.field.data_type())),
        e => (e, None),
    };
    let named = matches!(inner, Expr::Column(c) if c.name == column);
    named
        && match cast_to {
            None => true,
            Some(DataType::Timestamp(unit, _)) => unit_nanos(*unit) <= unit_ns,
            Some(_) => false,
        }
}

fn unit_nanos(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// A timestamp literal in nanoseconds.
fn literal_ns(e: &Expr) -> Option<i128> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    let (v, unit) = match v {
        ScalarValue::TimestampSecond(Some(v), _) => (*v, TimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, TimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, TimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, TimeUnit::Nanosecond),
        _ => return None,
    };
    Some(i128::from(v) * i128::from(unit_nanos(unit)))
}

/// `(column, value)` when `e` is `column = 'value'` with a non-empty string (an empty one
/// would also match an absent label in the stores, where SQL's NULL does not equal it).
pub(crate) fn equality(e: &Expr) -> Option<(&str, &str)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return None;
    };
    let (col, lit) = match (&**left, &**right) {
        (Expr::Column(c), lit) | (lit, Expr::Column(c)) => (c, lit),
        _ => return None,
    };
    let Expr::Literal(
        ScalarValue::Utf8(Some(v))
        | ScalarValue::Utf8View(Some(v))
        | ScalarValue::LargeUtf8(Some(v)),
        _,
    ) = lit
    else {
        return None;
    };
    (!v.is_empty()).then_some((col.name.as_str(), v.as_str()))
}

/// A builder for a `map<string, string>` column.
pub(crate) fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// The type [`map_builder`] builds, for schemas.
pub(crate) fn map_type() -> DataType {
    use datafusion::arrow::array::Array;
    map_builder().finish().data_type().clone()
}

/// Appends one map of `pairs` to `b`.
pub(crate) fn append_map<'a>(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    for (k, v) in pairs {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    b.append(true)?;
    Ok(())
}

/// The column types of the timestamp columns: UTC, as `now()` is, so comparisons with it
/// need no cast of the column.
pub(crate) fn timestamp_type(unit: TimeUnit) -> DataType {
    DataType::Timestamp(unit, Some("+00:00".into()))
}
