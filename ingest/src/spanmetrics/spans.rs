//! Tempo's span-metrics processor: every span counted by service, span name, kind, status
//! and the configured dimensions (`traces_spanmetrics_calls_total`), its duration in a
//! histogram (`traces_spanmetrics_latency`) and its encoded size summed
//! (`traces_spanmetrics_size_total`).
//!
//! Owns those three families' labels and values; the series bookkeeping is `series`'.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::series::{
    attribute, key_labels, label_names, Aggregates, Histogram, KeyBuf, Limit, Round,
};

const CALLS: &str = "traces_spanmetrics_calls_total";
const LATENCY: &str = "traces_spanmetrics_latency";
const SIZE: &str = "traces_spanmetrics_size_total";

/// The intrinsic labels, in key order.
pub(super) const INTRINSIC: [&str; 4] = ["service", "span_name", "span_kind", "status_code"];

pub(crate) struct SpanAgg {
    calls: f64,
    size: f64,
    latency: Histogram,
}

pub(crate) struct SpanMetrics {
    buckets: Vec<f64>,
    /// Attribute names, and the label each becomes.
    dimensions: Vec<(String, String)>,
    aggs: Aggregates<SpanAgg>,
}

/// The value Tempo writes for a span kind: the OTLP enum's name.
pub(crate) fn kind_label(kind: i32) -> &'static str {
    SpanKind::try_from(kind).map_or("SPAN_KIND_UNSPECIFIED", |k| k.as_str_name())
}

/// The value Tempo writes for a status code: the OTLP enum's name.
fn status_label(span: &Span) -> &'static str {
    let code = span.status.as_ref().map_or(0, |s| s.code);
    StatusCode::try_from(code).map_or("STATUS_CODE_UNSET", |c| c.as_str_name())
}

/// A span's duration in seconds; one ending before it starts lasted 0 (as in Tempo).
pub(crate) fn duration_seconds(span: &Span) -> f64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e9
}

impl SpanMetrics {
    pub(crate) fn new(buckets: Vec<f64>, dimensions: Vec<(String, String)>) -> SpanMetrics {
        // calls, size, and the latency histogram.
        let cost = 2 + Histogram::cost(&buckets);
        SpanMetrics {
            buckets,
            dimensions,
            aggs: Aggregates::new(cost),
        }
    }

    /// Counts one span of `service` (None: the resource has no `service.name`, and the
    /// label is left out). False when the series limit refused its new series.
    pub(crate) fn observe(
        &mut self,
        key: &mut KeyBuf,
        service: Option<&str>,
        resource: &[KeyValue],
        span: &Span,
        now: Instant,
        limit: &mut Limit,
    ) -> bool {
        key.clear();
        key.push(service.unwrap_or(""));
        key.push(&span.name);
        key.push(kind_label(span.kind));
        key.push(status_label(span));
        for (attr, _) in &self.dimensions {
            key.push_value(attribute(attr, &[resource, &span.attributes]));
        }
        let buckets = &self.buckets;
        let Some(agg) = self.aggs.get(key, now, limit, || SpanAgg {
            calls: 0.0,
            size: 0.0,
            latency: Histogram::new(buckets),
        }) else {
            return false;
        };
        agg.calls += 1.0;
        agg.size += span.encoded_len() as f64;
        agg.latency.observe(buckets, duration_seconds(span));
        true
    }

    /// Forgets the aggregates stale at `now`, then writes the others into `round`.
    pub(crate) fn collect(
        &mut self,
        round: &mut Round,
        now: Instant,
        stale: Duration,
        limit: &mut Limit,
    ) {
        self.aggs.remove_stale(now, stale, limit);
        let names = label_names(&INTRINSIC, &self.dimensions);
        for (key, agg, first) in self.aggs.drain_round() {
            let labels = key_labels(&names, key);
            round.series(CALLS, &labels, None, agg.calls, first);
            round.histogram(LATENCY, &labels, &self.buckets, &agg.latency, first);
            round.series(SIZE, &labels, None, agg.size, first);
        }
    }
}
