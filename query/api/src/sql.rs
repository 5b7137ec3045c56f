//! `POST /api/v1/sql` over the SQL engine (`sql`): the body is `{"query": "…"}`; the answer
//! is chosen by `Accept`:
//! - JSON by default: `{"columns": [{"name", "type"}], "rows": [[…], …]}`, one array per
//!   row in column order; numbers as JSON numbers (non-finite floats as `"NaN"`, `"+Inf"`,
//!   `"-Inf"`, as Prometheus writes them), maps and structs as objects, lists as arrays,
//!   timestamps and everything else as Arrow's display text (RFC 3339 for timestamps);
//! - `text/csv`: a header line of column names, then one line per row (RFC 4180 quoting;
//!   NULL as an empty field);
//! - `application/vnd.apache.arrow.stream`: the Arrow IPC stream of the result.
//!
//! Errors are `{"error": "…"}` with the status of their class (DataFusion's parse and plan
//! errors, with their position, are 400). Queries wait for a slot of the [`QueryGate`] and run
//! no longer than the query timeout ([`SqlState::run`], which the Postgres wire protocol's
//! `postgres` module shares). Owns the wire shapes only; planning is `sql`'s.

use std::sync::Arc;
use std::time::Duration;

use ::sql::arrow::array::{Array, AsArray};
use ::sql::arrow::datatypes::{DataType, Float32Type, Float64Type};
use ::sql::arrow::ipc::writer::StreamWriter;
use ::sql::arrow::util::display::{ArrayFormatter, FormatOptions};
use ::sql::datafusion_common::ScalarValue;
use ::sql::{Described, QueryResult, SqlEngine, SqlError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value as J};
use storage::{Classify, ErrorClass};

use crate::admission::{QueryGate, QueueTimeout};

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Clone)]
pub struct SqlState {
    engine: SqlEngine,
    gate: QueryGate,
    timeout: Duration,
}

impl SqlState {
    /// Queries wait for a slot of `gate` and run at most `timeout` (the query timeout).
    pub fn new(engine: SqlEngine, gate: QueryGate, timeout: Duration) -> SqlState {
        SqlState {
            engine,
            gate,
            timeout,
        }
    }
}

/// Why a statement did not answer, whichever interface sent it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{0}")]
    Queue(QueueTimeout),
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Sql(#[from] SqlError),
}

impl SqlState {
    /// The same gate and timeout, for statements of the Postgres user `user`.
    pub(crate) fn for_user(&self, user: &str) -> SqlState {
        SqlState {
            engine: self.engine.for_user(user),
            ..self.clone()
        }
    }

    /// Runs one statement with `params` bound to `$1`, `$2`, …: after a slot of the query
    /// gate, within the query timeout.
    pub(crate) async fn run(
        &self,
        query: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult, RunError> {
        let _admitted = self.gate.admit(None).await.map_err(RunError::Queue)?;
        tokio::time::timeout(self.timeout, self.engine.query_with(query, params))
            .await
            .map_err(|_| RunError::Timeout(self.timeout))?
            .map_err(RunError::Sql)
    }

    /// Plans one statement, with `params` bound when given, without running it (no store is
    /// read, so no slot is taken), within the query timeout.
    pub(crate) async fn describe(
        &self,
        query: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Described, RunError> {
        tokio::time::timeout(self.timeout, self.engine.describe(query, params))
            .await
            .map_err(|_| RunError::Timeout(self.timeout))?
            .map_err(RunError::Sql)
    }
}

pub fn routes(state: SqlState) -> Router {
    Router::new()
        .route("/api/v1/sql", post(query))
        .with_state(Arc::new(state))
}

#[derive(serde::Deserialize)]
struct Request {
    query: String,
}

/// An error answer: the class's status and the message.
pub(crate) struct SqlFailure(StatusCode, String);

impl SqlFailure {
    pub(crate) fn message(&self) -> &str {
        &self.1
    }

    fn of(class: ErrorClass, msg: impl Into<String>) -> SqlFailure {
        SqlFailure(crate::status::http_status(class), msg.into())
    }
}

impl From<SqlError> for SqlFailure {
    fn from(e: SqlError) -> SqlFailure {
        SqlFailure::of(e.class(), e.to_string())
    }
}

impl From<RunError> for SqlFailure {
    fn from(e: RunError) -> SqlFailure {
        match e {
            RunError::Sql(e) => e.into(),
            e @ (RunError::Queue(_) | RunError::Timeout(_)) => {
                SqlFailure::of(ErrorClass::Timeout, e.to_string())
            }
        }
    }
}

impl IntoResponse for SqlFailure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn query(State(s): State<Arc<SqlState>>, headers: HeaderMap, body: Bytes) -> Response {
    match run(&s, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(s: &SqlState, headers: &HeaderMap, body: &[u8]) -> Result<Response, SqlFailure> {
    let req: Request = serde_json::from_slice(body).map_err(|e| {
        SqlFailure::of(
            ErrorClass::BadInput,
            format!("the body must be {{\"query\": \"…\"}}: {e}"),
        )
    })?;
    let result = s.run(&req.query, Vec::new()).await?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains(ARROW_STREAM) {
        Ok((
            [(header::CONTENT_TYPE, ARROW_STREAM)],
            arrow_stream(&result)?,
        )
            .into_response())
    } else if accept.contains("text/csv") {
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            csv(&result)?,
        )
            .into_response())
    } else {
        Ok(axum::Json(rows_json(&result)?).into_response())
    }
}

fn internal(e: impl std::fmt::Display) -> SqlFailure {
    SqlFailure::of(ErrorClass::Internal, e.to_string())
}

fn arrow_stream(r: &QueryResult) -> Result<Vec<u8>, SqlFailure> {
    let mut w = StreamWriter::try_new(Vec::new(), &r.schema).map_err(internal)?;
    for b in &r.batches {
        w.write(b).map_err(internal)?;
    }
    w.into_inner().map_err(internal)
}

fn csv(r: &QueryResult) -> Result<String, SqlFailure> {
    let mut out = String::new();
    let names: Vec<String> = r
        .schema
        .fields()
        .iter()
        .map(|f| csv_field(f.name()))
        .collect();
    out.push_str(&names.join(","));
    out.push('\n');
    let options = FormatOptions::default();
    for b in &r.batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        for row in 0..b.num_rows() {
            for (i, f) in formatters.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if b.column(i).is_valid(row) {
                    out.push_str(&csv_field(&f.value(row).to_string()));
                }
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn rows_json(r: &QueryResult) -> Result<J, SqlFailure> {
    let columns: Vec<J> = r
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut rows = Vec::new();
    for b in &r.batches {
        for row in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), row))
                .collect::<Result<Vec<J>, _>>()?;
            rows.push(J::Array(cells));
        }
    }
    Ok(json!({ "columns": columns, "rows": rows }))
}

/// One value as JSON (see the module doc; the Postgres wire protocol's `json` columns too).
pub(crate) fn cell(a: &dyn Array, i: usize) -> Result<J, SqlFailure> {
    if a.is_null(i) {
        return Ok(J::Null);
    }
    Ok(match a.data_type() {
        DataType::Boolean => J::Bool(a.as_boolean().value(i)),
        DataType::Utf8 => J::String(a.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => J::String(a.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => J::String(a.as_string_view().value(i).to_owned()),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i))),
        t if t.is_integer() => {
            let text = display(a, i)?;
            text.parse::<i64>()
                .map(J::from)
                .or_else(|_| text.parse::<u64>().map(J::from))
                .unwrap_or(J::String(text))
        }
        DataType::Map(..) => {
            let entries = a.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut m = Map::new();
            for e in 0..entries.len() {
                let key = match cell(keys.as_ref(), e)? {
                    J::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, cell(values.as_ref(), e)?);
            }
            J::Object(m)
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), cell(c.as_ref(), i)?);
            }
            J::Object(m)
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            J::Array(
                (0..items.len())
                    .map(|e| cell(items.as_ref(), e))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => J::String(display(a, i)?),
    })
}

fn display(a: &dyn Array, i: usize) -> Result<String, SqlFailure> {
    Ok(ArrayFormatter::try_new(a, &FormatOptions::default())
        .map_err(internal)?
        .value(i)
        .to_string())
}

/// Prometheus's spelling of the floats JSON has no number for.
fn float(v: f64) -> J {
    if v.is_nan() {
        J::String("NaN".into())
    } else if v == f64::INFINITY {
        J::String("+Inf".into())
    } else if v == f64::NEG_INFINITY {
        J::String("-Inf".into())
    } else {
        J::from(v)
    }
}
