//! SQL over the three stores: DataFusion plans and runs the query, and each store is a table
//! whose scan reads it through its read contract, streaming batches as it reads.
//!
//! - [`SqlEngine`]: the session factory (the three tables registered, DataFusion's memory
//!   pool bounded, DDL, DML and `SET` refused) and [`SqlEngine::query`], which runs one
//!   statement and collects at most `max_rows` rows; [`SqlEngine::describe`] plans a statement
//!   without running it and [`SqlEngine::query_with`] runs one with `$1`-style parameters
//!   bound (what a wire protocol's prepared statements need).
//! - `metrics`: the `metrics` table over [`storage::Querier`] (one row per float sample or
//!   native histogram sample); `matchers`: its filters that become the select's matchers.
//! - `logs`: the `logs` table over [`storage::logs::LogReader`] (one row per record).
//! - `spans`: the `spans` table over [`storage::traces::TraceReader`] (one row per span).
//! - `history`: exported history ([`History`]: the Hive-style layout of Parquet day files in
//!   an object store) and the table reading a store's local days and the exported days
//!   before them as one; `export`: the [`Exporter`] writing finished days there.
//! - `pgcompat`: what Postgres clients read besides the tables: `information_schema` and
//!   `pg_catalog.pg_extension` with Postgres's type names ([`PgType`]), Postgres functions
//!   DataFusion lacks (`quote_ident`, `current_setting`, …), Postgres's FROM-clause rules, and
//!   uncorrelated `IN` subqueries outside WHERE run first.
//! - `scan`: what the tables share: the plan node that runs a store read on the blocking
//!   pool and streams its batches (`StoreExec`, which EXPLAIN shows with what it applies),
//!   and the reading of the filters a scan applies itself (time ranges, equality).
//!
//! A filter a table's scan applies exactly is declared `Exact` to DataFusion (no filter is
//! left above the scan); every other filter is left to DataFusion. Knows no wire format: the
//! HTTP endpoint is `query/api`'s.

mod export;
mod history;
mod logs;
mod matchers;
mod metrics;
mod pgcompat;
mod scan;
mod spans;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use storage::logs::LogReader;
use storage::traces::TraceReader;
use storage::{Classify, ErrorClass, Querier, StorageError};

pub use datafusion::arrow;
pub use datafusion::common as datafusion_common;
pub use export::{ExportError, ExportObserver, ExportReport, Exporter};
pub use history::{History, Retention, Signal};
pub use pgcompat::{setting, PgType};

/// What one query may use.
#[derive(Clone, Debug)]
pub struct SqlOptions {
    /// DataFusion's memory pool (aggregations, sorts, joins), shared by all queries of an
    /// engine; a query that needs more fails with a resources-exhausted error.
    pub max_memory_bytes: usize,
    /// Most rows a query may answer: results are collected before they are rendered.
    pub max_rows: usize,
    /// Most samples a scan of `metrics` may read (the PromQL engine's `max_samples`).
    pub max_samples: usize,
    /// Most records a scan of `logs` may read (LogQL's entry budget).
    pub max_log_records: usize,
    /// Most spans a scan of `spans` may read (the trace search budget).
    pub max_spans: usize,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            max_memory_bytes: 512 << 20,
            max_rows: 100_000,
            max_samples: 50_000_000,
            max_log_records: 10_000_000,
            max_spans: 1_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// DataFusion's own message: parse and planning errors carry the position.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// DDL, DML or `SET`: a statement that would create, change or set something.
    #[error("{0}")]
    Refused(DataFusionError),
    /// A table no schema holds (recognized here, once, from DataFusion's planning error).
    #[error("table '{0}' not found")]
    UnknownTable(String),
    #[error("the query answers more than {limit} rows; add a LIMIT or aggregate")]
    TooManyRows { limit: usize },
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl Classify for SqlError {
    fn class(&self) -> ErrorClass {
        match self {
            SqlError::TooManyRows { .. } => ErrorClass::TooLarge,
            SqlError::Refused(_) | SqlError::UnknownTable(_) => ErrorClass::BadInput,
            SqlError::Storage(e) => e.class(),
            SqlError::DataFusion(e) => datafusion_class(e),
        }
    }
}

/// Store errors travel through DataFusion as `External`; a query over a budget or the memory
/// pool is too large; what the user wrote wrong is bad input; the rest is ours.
fn datafusion_class(e: &DataFusionError) -> ErrorClass {
    match e.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<StorageError>() {
            Some(s) => s.class(),
            None => ErrorClass::Internal,
        },
        DataFusionError::ResourcesExhausted(_) => ErrorClass::TooLarge,
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => ErrorClass::BadInput,
        _ => ErrorClass::Internal,
    }
}

/// A planning error, with an unknown table told apart from the rest.
fn planning_error(e: DataFusionError) -> SqlError {
    if let DataFusionError::Plan(msg) = e.find_root() {
        if let Some(name) = msg
            .strip_prefix("table '")
            .and_then(|m| m.strip_suffix("' not found"))
        {
            return SqlError::UnknownTable(name.to_owned());
        }
    }
    SqlError::DataFusion(e)
}

/// A statement planned but not run: the columns it answers and the types DataFusion
/// inferred for its `$1`, `$2`, … parameters (None where the statement does not tell).
#[derive(Debug)]
pub struct Described {
    pub schema: SchemaRef,
    pub parameters: Vec<Option<DataType>>,
}

/// A query's answer: its schema (also when there are no rows) and its rows.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// The catalog (Postgres's database) the tables are in, and their schema.
const DATABASE: &str = "novamon";
const SCHEMA: &str = "public";

/// The stores the tables read, and one memory pool for all queries. Cheap to clone.
#[derive(Clone)]
pub struct SqlEngine {
    metrics: Arc<dyn Querier>,
    logs: Arc<dyn LogReader>,
    spans: Arc<dyn TraceReader>,
    opts: SqlOptions,
    runtime: Arc<RuntimeEnv>,
    /// Exported days, read with the local ones when set.
    history: Option<History>,
    /// `information_schema` and `pg_catalog`, built once: the tables' schemas never change.
    catalog: pgcompat::Catalog,
    /// Who `current_user` is: the Postgres connection's user (none over HTTP).
    user: Option<Arc<str>>,
}

/// Every session's configuration. DataFusion's own `information_schema` is off: the one
/// `pgcompat` registers names types as Postgres does, and DataFusion's `SHOW TABLES` and
/// `SHOW COLUMNS` read it all the same.
fn session_config() -> SessionConfig {
    SessionConfig::new().with_default_catalog_and_schema(DATABASE, SCHEMA)
}

impl SqlEngine {
    pub fn new(
        metrics: Arc<dyn Querier>,
        logs: Arc<dyn LogReader>,
        spans: Arc<dyn TraceReader>,
        opts: SqlOptions,
    ) -> Result<SqlEngine, SqlError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(opts.max_memory_bytes, 1.0)
            // DataFusion keeps file listings forever by default: an exported day written
            // after a first query would stay unseen. Listing a signal's dates is cheap.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let schemas: Vec<(&str, SchemaRef)> =
            store_tables(metrics.clone(), logs.clone(), spans.clone(), [0; 3])
                .iter()
                .map(|(signal, table)| (signal.table(), table.schema()))
                .collect();
        let catalog = pgcompat::Catalog::new(DATABASE, &schemas, session_config().options())?;
        Ok(SqlEngine {
            metrics,
            logs,
            spans,
            opts,
            runtime,
            history: None,
            catalog,
            user: None,
        })
    }

    /// The engine for statements of the Postgres user `user` (what `current_user` answers).
    pub fn for_user(&self, user: &str) -> SqlEngine {
        SqlEngine {
            user: Some(user.into()),
            ..self.clone()
        }
    }

    /// Tables that also read the days exported to `history` that the stores no longer hold.
    pub fn with_history(mut self, history: History) -> SqlEngine {
        history.register(&self.runtime);
        self.history = Some(history);
        self
    }

    /// A table as sessions see it: its store, with exported history when there is one.
    fn table(&self, signal: Signal, local: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        match &self.history {
            Some(h) => Arc::new(history::HistoryTable::new(signal, local, h.clone())),
            None => local,
        }
    }

    /// A session with the three tables, reading the stores as they are when scanned.
    pub fn context(&self) -> Result<SessionContext, SqlError> {
        let state = SessionStateBuilder::new()
            .with_config(session_config())
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let tables = store_tables(
            self.metrics.clone(),
            self.logs.clone(),
            self.spans.clone(),
            [
                self.opts.max_samples,
                self.opts.max_log_records,
                self.opts.max_spans,
            ],
        );
        for (signal, local) in tables {
            ctx.register_table(signal.table(), self.table(signal, local))?;
        }
        self.catalog.register(&ctx, DATABASE)?;
        pgcompat::register_functions(&ctx, self.user.as_deref());
        Ok(ctx)
    }

    /// Runs one read-only statement (queries, `EXPLAIN`, `SHOW`): creating, changing or
    /// setting anything is refused, so SQL cannot reach files or change the session.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        self.query_with(sql, Vec::new()).await
    }

    /// [`SqlEngine::query`] with `params` bound to `$1`, `$2`, … in order.
    pub async fn query_with(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult, SqlError> {
        let (ctx, mut plan) = self.plan(sql).await?;
        if !params.is_empty() {
            plan = plan.with_param_values(params)?;
        }
        let plan = pgcompat::inline_uncorrelated(&ctx, plan, self.opts.max_rows).await?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            rows += batch.num_rows();
            if rows > self.opts.max_rows {
                return Err(SqlError::TooManyRows {
                    limit: self.opts.max_rows,
                });
            }
            batches.push(batch);
        }
        Ok(QueryResult { schema, batches })
    }

    /// Plans one statement as [`SqlEngine::query_with`] would, without reading any store:
    /// with `params` bound when given (a column that is a parameter then has its type).
    pub async fn describe(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Described, SqlError> {
        let (_, mut plan) = self.plan(sql).await?;
        if !params.is_empty() {
            plan = plan.with_param_values(params)?;
        }
        let mut types: Vec<(usize, Option<DataType>)> = plan
            .get_parameter_types()?
            .into_iter()
            // DataFusion names positional parameters `$1`, `$2`, …; named ones have no place.
            .filter_map(|(name, t)| {
                let i: usize = name.strip_prefix('$')?.parse().ok()?;
                (i > 0).then_some((i, t))
            })
            .collect();
        types.sort_by_key(|(i, _)| *i);
        let count = types.last().map_or(0, |(i, _)| *i);
        let mut parameters = vec![None; count];
        for (i, t) in types {
            parameters[i - 1] = t;
        }
        Ok(Described {
            schema: Arc::new(plan.schema().as_arrow().clone()),
            parameters,
        })
    }

    /// The statement's logical plan in a fresh session, refused unless it only reads.
    async fn plan(&self, sql: &str) -> Result<(SessionContext, LogicalPlan), SqlError> {
        let ctx = self.context()?;
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(planning_error)?;
        pgcompat::rewrite(&mut statement, &state, &self.catalog).map_err(planning_error)?;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(planning_error)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(SqlError::Refused)?;
        Ok((ctx, plan))
    }
}

/// The tables over the three stores, each scan reading at most its budget of samples, log
/// records and spans, in that order.
pub(crate) fn store_tables(
    metrics: Arc<dyn Querier>,
    logs: Arc<dyn LogReader>,
    spans: Arc<dyn TraceReader>,
    [max_samples, max_log_records, max_spans]: [usize; 3],
) -> [(Signal, Arc<dyn TableProvider>); 3] {
    [
        (
            Signal::Metrics,
            Arc::new(metrics::MetricsTable::new(metrics, max_samples)),
        ),
        (
            Signal::Logs,
            Arc::new(logs::LogsTable::new(logs, max_log_records)),
        ),
        (
            Signal::Spans,
            Arc::new(spans::SpansTable::new(spans, max_spans)),
        ),
    ]
}

#[cfg(test)]
mod tests;
