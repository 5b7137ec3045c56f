//! The per-signal exports both transports call: store what is valid, report the rest as OTLP
//! partial success (count + first reason). Blocking: callers run them off the async workers.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use storage::AppendMode;

use super::error::OtlpError;
use super::OtlpState;
use super::{logs_to_records, metrics_to_series};
use crate::metrics::Signal;

pub(crate) fn traces(
    state: &OtlpState,
    req: &ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, OtlpError> {
    let report = state.traces.write(&req.resource_spans)?;
    // Only once stored: a request the store failed is retried by the sender.
    if let Some(generator) = &state.span_metrics {
        generator.observe(&req.resource_spans);
    }
    let c = &state.counters;
    c.stored(Signal::Traces, state.transport, report.spans_written);
    c.rejected(Signal::Traces, state.transport, report.rejected);
    if report.rejected > 0 {
        tracing::debug!(
            rejected = report.rejected,
            reason = report.reason.as_deref().unwrap_or(""),
            "OTLP spans rejected"
        );
    }
    Ok(ExportTraceServiceResponse {
        partial_success: (report.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: report.rejected as i64,
            error_message: report.reason.unwrap_or_default(),
        }),
    })
}

pub(crate) fn metrics(
    state: &OtlpState,
    req: &ExportMetricsServiceRequest,
) -> Result<ExportMetricsServiceResponse, OtlpError> {
    let mut converted = metrics_to_series::convert(&req.resource_metrics);
    // OTLP counts data points; a rejected sample of a histogram's series rejects its point.
    let mut rejected = converted.rejected_points;
    let mut reason = converted.reason;
    let mut app = state.metrics_store.appender(AppendMode::BestEffort);
    for (family, md) in converted.metadata {
        app.set_metadata(&family, md);
    }
    for s in converted.series {
        match crate::remote_write::check_limits(
            s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            &state.label_limits,
        ) {
            None => {
                if let Some(exemplars) = converted.exemplars.remove(&s.labels) {
                    app.append_exemplars(&s.labels, exemplars);
                }
                app.append(s)
            }
            Some(e) => {
                rejected += s.samples.len() + s.histograms.len();
                reason.get_or_insert_with(|| {
                    format!("{e}: {}", s.labels.metric_name().unwrap_or(""))
                });
            }
        }
    }
    let report = app.commit()?;
    if let Some(first) = report.rejected.first() {
        rejected += report.rejected.len();
        reason.get_or_insert_with(|| {
            format!(
                "{}: {}",
                first.reason,
                first.labels.metric_name().unwrap_or("")
            )
        });
    }
    let c = &state.counters;
    c.stored(
        Signal::Metrics,
        state.transport,
        report.samples_written + report.histograms_written,
    );
    c.rejected(Signal::Metrics, state.transport, rejected);
    Ok(ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: reason.unwrap_or_default(),
        }),
    })
}

pub(crate) fn logs(
    state: &OtlpState,
    req: &ExportLogsServiceRequest,
) -> Result<ExportLogsServiceResponse, OtlpError> {
    let records = logs_to_records::convert(&req.resource_logs);
    let c = &state.counters;
    let Some(store) = &state.logs else {
        c.rejected(Signal::Logs, state.transport, records.len());
        return Ok(ExportLogsServiceResponse {
            partial_success: (!records.is_empty()).then(|| ExportLogsPartialSuccess {
                rejected_log_records: records.len() as i64,
                error_message: "this server has no log store configured".to_owned(),
            }),
        });
    };
    // Records the store would never return are refused, and reported, not stored.
    let window = state.log_bounds.window();
    let (mut rejected, mut reason) = (0usize, None);
    let records: Vec<_> = records
        .into_iter()
        .filter(|r| match window.check(r) {
            Ok(()) => true,
            Err(e) => {
                rejected += 1;
                reason.get_or_insert_with(|| e.to_string());
                false
            }
        })
        .collect();
    let mut records = records;
    if state.detect_levels {
        crate::logs::level::add_detected_levels(&mut records);
    }
    store.append(&records)?;
    c.stored(Signal::Logs, state.transport, records.len());
    c.rejected(Signal::Logs, state.transport, rejected);
    Ok(ExportLogsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: rejected as i64,
            error_message: reason.unwrap_or_default(),
        }),
    })
}
