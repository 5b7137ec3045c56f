//! What the Jaeger and Tempo HTTP APIs share: reading query-string parameters, the clock in
//! nanoseconds, and running trace-store reads off the async threads. Owns no response shape;
//! each API keeps its own error envelope.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// Runs a blocking store read on tokio's blocking pool; a panicked task becomes the API's own
/// internal error.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static + From<tokio::task::JoinError>,
{
    tokio::task::spawn_blocking(f).await?
}
