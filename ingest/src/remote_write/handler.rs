//! The `POST /api/v1/write` handler: negotiation, bounded body read, decode, append, and the
//! single mapping from outcome to HTTP response. Owns the write semantics of each protocol
//! (1.0 all-or-nothing, 2.0 partial); storage owns what a valid sample is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use storage::{AppendMode, AppendReport, RejectReason, StorageError};

use super::decode::{decode, DecodedWrite};
use super::error::{ErrorList, RemoteWriteError};
use super::negotiate::{self, Protocol};
use crate::metrics::DropReason;
use crate::IngestState;

/// Prometheus refuses samples this far ahead of its clock as out of bounds.
const MAX_AHEAD: Duration = Duration::from_secs(10 * 60);
const TOO_FAR_IN_FUTURE: &str = "out of bounds: timestamp is too far in the future";

/// What a request wrote, as reported in the 2.0 response headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Written {
    samples: usize,
    histograms: usize,
    exemplars: usize,
}

pub(crate) async fn write(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (protocol, written, result) = match negotiate(&headers) {
        Err(err) => (None, Written::default(), Err(err)),
        Ok(protocol) => {
            let (written, result) = receive(&state, protocol, body).await;
            (Some(protocol), written, result)
        }
    };
    let response = respond(protocol, written, result);
    state
        .metrics
        .request(protocol.map(Protocol::as_str), response.status().as_u16());
    response
}

fn negotiate(headers: &HeaderMap) -> Result<Protocol, RemoteWriteError> {
    let get = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not ASCII>"))
    };
    let protocol = negotiate::protocol(get(header::CONTENT_TYPE))?;
    negotiate::check_encoding(get(header::CONTENT_ENCODING))?;
    Ok(protocol)
}

async fn receive(
    state: &IngestState,
    protocol: Protocol,
    body: Body,
) -> (Written, Result<(), RemoteWriteError>) {
    let bytes = match read_body(body, state.limits.max_compressed_bytes()).await {
        Ok(bytes) => bytes,
        Err(err) => return (Written::default(), Err(err)),
    };
    let state = state.clone();
    match tokio::task::spawn_blocking(move || ingest(&state, protocol, &bytes)).await {
        Ok(outcome) => outcome,
        Err(e) => (
            Written::default(),
            Err(RemoteWriteError::Internal(e.to_string())),
        ),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, RemoteWriteError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return RemoteWriteError::BodyTooLarge { limit };
            }
            source = err.source();
        }
        RemoteWriteError::ReadBody(e.to_string())
    })
}

/// Decodes and writes one request. Blocking: runs on the blocking pool.
fn ingest(
    state: &IngestState,
    protocol: Protocol,
    body: &[u8],
) -> (Written, Result<(), RemoteWriteError>) {
    let decoded = match decode(protocol, body, &state.limits) {
        Ok(d) => d,
        Err(err) => return (Written::default(), Err(err)),
    };
    let max_t = now_ms().saturating_add(MAX_AHEAD.as_millis() as i64);
    let result = match protocol {
        Protocol::V1 => write_all_or_nothing(state, decoded, max_t),
        Protocol::V2 => write_best_effort(state, decoded, max_t),
    };
    match result {
        Ok((report, errors)) => {
            state.metrics.written(
                protocol.as_str(),
                report.samples_written + report.histograms_written,
            );
            let written = Written {
                samples: report.samples_written,
                histograms: report.histograms_written,
                exemplars: report.exemplars_written,
            };
            let outcome = if errors.is_empty() {
                Ok(())
            } else {
                Err(RemoteWriteError::BadData(errors))
            };
            (written, outcome)
        }
        Err(err) => (Written::default(), Err(err)),
    }
}

/// Remote-write 1.0: any invalid series or rejected sample fails the whole request and nothing
/// is written, as Prometheus rolls back its appender.
fn write_all_or_nothing(
    state: &IngestState,
    decoded: DecodedWrite,
    max_t: i64,
) -> Result<(AppendReport, ErrorList), RemoteWriteError> {
    let metrics = &state.metrics;
    let total = decoded.series.sample_count();
    if !decoded.invalid.is_empty() {
        let mut errors = ErrorList::default();
        for inv in &decoded.invalid {
            metrics.rejected(inv.reason, inv.samples);
            errors.push(inv.message.clone());
        }
        // Histogram-carrying series are also in `series`; their samples are rolled back too.
        metrics.rejected(DropReason::RolledBack, total);
        return Err(RemoteWriteError::BadData(errors));
    }
    let future = decoded
        .series
        .iter()
        .flat_map(|s| {
            let floats = s.samples.iter().map(|x| x.t);
            floats.chain(s.histograms.iter().map(|h| h.t))
        })
        .filter(|&t| t > max_t)
        .count();
    if future > 0 {
        metrics.rejected(DropReason::TooFarInFuture, future);
        metrics.rejected(DropReason::RolledBack, total - future);
        return Err(RemoteWriteError::BadData(
            TOO_FAR_IN_FUTURE.to_string().into(),
        ));
    }
    let report = append(state, decoded, AppendMode::AllOrNothing)?;
    let over_limit = |r: &storage::Rejection| r.reason == RejectReason::SeriesLimit;
    if let Some(first) = report.rejected.first() {
        if report.rejected.iter().all(over_limit) {
            // Only new series over the limit were refused and the rest is written (see
            // `RemoteWriteError::status` for why this is a 400).
            metrics.rejected(DropReason::SeriesLimit, report.rejected.len());
            let message = first.reason.to_string();
            return Ok((report, message.into()));
        }
        for r in &report.rejected {
            metrics.rejected(r.reason.into(), 1);
        }
        metrics.rejected(
            DropReason::RolledBack,
            total.saturating_sub(report.rejected.len()),
        );
        tracing::debug!(series = %first.labels, t = first.t, reason = %first.reason, "remote-write 1.0 request rejected");
        // Prometheus answers with the first append error's text alone.
        return Err(RemoteWriteError::BadData(first.reason.to_string().into()));
    }
    Ok((report, ErrorList::default()))
}

/// Remote-write 2.0: valid samples are written, the rest listed in the error, one line each.
fn write_best_effort(
    state: &IngestState,
    mut decoded: DecodedWrite,
    max_t: i64,
) -> Result<(AppendReport, ErrorList), RemoteWriteError> {
    let metrics = &state.metrics;
    let mut errors = ErrorList::default();
    for inv in &decoded.invalid {
        metrics.rejected(inv.reason, inv.samples);
        errors.push(inv.message.clone());
    }
    decoded.series.retain_samples(
        |t| t <= max_t,
        |series, dropped| {
            metrics.rejected(DropReason::TooFarInFuture, dropped);
            errors.push(format!(
                "{TOO_FAR_IN_FUTURE} for series {}",
                series.labels()
            ));
        },
    );
    let report = append(state, decoded, AppendMode::BestEffort)?;
    for r in &report.rejected {
        metrics.rejected(r.reason.into(), 1);
        errors.push(format!("{} for series {}", r.reason, r.labels));
    }
    Ok((report, errors))
}

/// One transaction: the samples, and the metadata unless the samples were refused.
fn append(
    state: &IngestState,
    decoded: DecodedWrite,
    mode: AppendMode,
) -> Result<AppendReport, StorageError> {
    let mut app = state.metrics_store.appender(mode);
    app.append_batch(decoded.series);
    for (family, md) in decoded.metadata {
        app.set_metadata(&family, md);
    }
    app.commit()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The one place a remote-write outcome becomes an HTTP response. Errors are plain text, as
/// Prometheus's receiver answers. 2.0 responses carry the written counts whenever negotiation
/// succeeded, whether the request succeeded or not, as the 2.0 spec requires.
fn respond(
    protocol: Option<Protocol>,
    written: Written,
    result: Result<(), RemoteWriteError>,
) -> Response {
    let mut response = match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => {
            let status = err.status();
            // A store that cannot write for now logs that itself, once per episode: senders
            // retry every few seconds, and one line each would flood the log.
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(%err, "remote-write request failed");
            } else {
                tracing::debug!(%status, %err, "remote-write request refused");
            }
            let mut r = (status, format!("{err}\n")).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
    };
    if protocol == Some(Protocol::V2) {
        let headers = response.headers_mut();
        for (name, n) in [
            ("x-prometheus-remote-write-samples-written", written.samples),
            (
                "x-prometheus-remote-write-histograms-written",
                written.histograms,
            ),
            (
                "x-prometheus-remote-write-exemplars-written",
                written.exemplars,
            ),
        ] {
            headers.insert(name, HeaderValue::from(n));
        }
    }
    response
}

#[cfg(test)]
mod tests;
