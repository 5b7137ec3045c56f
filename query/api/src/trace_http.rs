//! What the Jaeger and Tempo HTTP APIs share: their read budgets ([`TraceLimits`]), reading
//! query-string parameters, the clock in nanoseconds, and the error type both fail with, which
//! also runs trace-store reads off the async threads (searches once the query gate admits
//! them). Owns no response shape: each API renders its own error envelope through
//! [`ErrorBody`].

use std::marker::PhantomData;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use storage::{Classify, StorageError};

use crate::admission::{QueryGate, QueueTimeout};
use crate::status::http_status;

/// How much one Jaeger or Tempo request may read from the trace store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceLimits {
    /// Most spans one trace search (and Jaeger's dependency graph) reads before answering
    /// with what it found.
    pub max_spans_inspected: usize,
    /// Most values per attribute that Tempo's tag-values endpoints read.
    pub max_tag_values: usize,
}

impl Default for TraceLimits {
    fn default() -> Self {
        TraceLimits {
            max_spans_inspected: 200_000,
            max_tag_values: 1000,
        }
    }
}

/// How one API answers a failed request (Jaeger's JSON envelope, Tempo's plain text).
pub(crate) trait ErrorBody {
    fn render(status: StatusCode, msg: String) -> Response;
}

/// A failed request, answered in the envelope of the API `B`. `B` is only a marker, so the
/// error stays `Send` whatever it is.
pub(crate) struct ApiError<B> {
    status: StatusCode,
    msg: String,
    body: PhantomData<fn() -> B>,
}

impl<B> ApiError<B> {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
            body: PhantomData,
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }

    /// Runs a blocking store read on tokio's blocking pool; a panicked task becomes an internal
    /// error.
    pub(crate) async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, Self> + Send + 'static,
    ) -> Result<T, Self>
    where
        B: 'static,
    {
        tokio::task::spawn_blocking(f).await?
    }

    /// Runs a search on the blocking pool once `gate` lets it in: searches scan as much as a
    /// PromQL or LogQL query and share their slots. The slot is held until the read ends.
    pub(crate) async fn admitted<T: Send + 'static>(
        gate: &QueryGate,
        f: impl FnOnce() -> Result<T, Self> + Send + 'static,
    ) -> Result<T, Self>
    where
        B: 'static,
    {
        let slot = gate.admit(None).await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
        .await?
    }
}

impl<B> From<QueueTimeout> for ApiError<B> {
    /// A search that could not start within the engine's timeout: the query timeout status
    /// Loki answers too.
    fn from(e: QueueTimeout) -> Self {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())
    }
}

impl<B> From<StorageError> for ApiError<B> {
    fn from(e: StorageError) -> Self {
        ApiError::new(http_status(e.class()), e.to_string())
    }
}

impl<B> From<tokio::task::JoinError> for ApiError<B> {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl<B: ErrorBody> IntoResponse for ApiError<B> {
    fn into_response(self) -> Response {
        B::render(self.status, self.msg)
    }
}

/// The query string as name/value pairs, in order.
pub(crate) fn params(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The first non-empty value of `name`: both APIs treat an empty parameter as absent.
pub(crate) fn param<'a>(ps: &'a [(String, String)], name: &str) -> Option<&'a str> {
    ps.iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
