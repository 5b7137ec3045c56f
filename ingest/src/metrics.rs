//! Self-metrics of the ingest paths, registered in the coordinator's `prometheus-client`
//! registry: the remote-write receiver's own counters and, for every path, what was stored
//! and refused per signal and protocol. Owns the metric names and label values; does not
//! serve them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why samples were not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    InvalidLabels,
    NativeHistogram,
    OutOfOrder,
    OutOfBounds,
    DuplicateTimestamp,
    TooFarInFuture,
    /// Samples of new series refused by `limits.max_active_series`.
    SeriesLimit,
    /// Valid samples of a 1.0 request that was rejected as a whole.
    RolledBack,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::InvalidLabels => "invalid_labels",
            DropReason::NativeHistogram => "native_histogram",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::OutOfBounds => "out_of_bounds",
            DropReason::DuplicateTimestamp => "duplicate_timestamp",
            DropReason::TooFarInFuture => "too_far_in_future",
            DropReason::SeriesLimit => "series_limit",
            DropReason::RolledBack => "rolled_back",
        }
    }
}

impl From<storage::RejectReason> for DropReason {
    fn from(r: storage::RejectReason) -> DropReason {
        match r {
            storage::RejectReason::OutOfOrder => DropReason::OutOfOrder,
            storage::RejectReason::TooOld => DropReason::OutOfBounds,
            storage::RejectReason::DuplicateTimestamp => DropReason::DuplicateTimestamp,
            storage::RejectReason::SeriesLimit => DropReason::SeriesLimit,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// What an ingest path stores: samples, log records or spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Signal {
    Metrics,
    Logs,
    Traces,
}

/// The wire protocol items arrived by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    RemoteWrite,
    OtlpGrpc,
    OtlpHttp,
    Forward,
    LokiPush,
    ElasticBulk,
}

/// Every path that exists, so each series is exposed (at 0) before its first item and a
/// `rate()` over it starts at the first scrape.
const PATHS: [(Signal, Protocol); 10] = [
    (Signal::Metrics, Protocol::RemoteWrite),
    (Signal::Metrics, Protocol::OtlpGrpc),
    (Signal::Metrics, Protocol::OtlpHttp),
    (Signal::Logs, Protocol::OtlpGrpc),
    (Signal::Logs, Protocol::OtlpHttp),
    (Signal::Logs, Protocol::Forward),
    (Signal::Logs, Protocol::LokiPush),
    (Signal::Logs, Protocol::ElasticBulk),
    (Signal::Traces, Protocol::OtlpGrpc),
    (Signal::Traces, Protocol::OtlpHttp),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    signal: &'static str,
    protocol: &'static str,
}

impl PathLabels {
    fn new(signal: Signal, protocol: Protocol) -> PathLabels {
        PathLabels {
            signal: match signal {
                Signal::Metrics => "metrics",
                Signal::Logs => "logs",
                Signal::Traces => "traces",
            },
            protocol: match protocol {
                Protocol::RemoteWrite => "remote_write",
                Protocol::OtlpGrpc => "otlp_grpc",
                Protocol::OtlpHttp => "otlp_http",
                Protocol::Forward => "forward",
                Protocol::LokiPush => "loki_push",
                Protocol::ElasticBulk => "elasticsearch_bulk",
            },
        }
    }
}

/// Items stored and refused by every ingest path, per signal and protocol: what the status
/// page's ingest rates are computed from. Cheap to clone: clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct IngestCounters {
    stored: Family<PathLabels, Counter>,
    rejected: Family<PathLabels, Counter>,
}

impl IngestCounters {
    fn register(registry: &mut Registry) -> IngestCounters {
        let counters = IngestCounters::default();
        registry.register(
            "novamon_ingested",
            "Items stored by the ingest paths (samples, log records, spans) by signal and protocol",
            counters.stored.clone(),
        );
        registry.register(
            "novamon_ingest_rejected",
            "Items received by the ingest paths but not stored, by signal and protocol",
            counters.rejected.clone(),
        );
        for (signal, protocol) in PATHS {
            let _ = counters
                .stored
                .get_or_create(&PathLabels::new(signal, protocol));
            let _ = counters
                .rejected
                .get_or_create(&PathLabels::new(signal, protocol));
        }
        counters
    }

    pub(crate) fn stored(&self, signal: Signal, protocol: Protocol, n: usize) {
        if n > 0 {
            self.stored
                .get_or_create(&PathLabels::new(signal, protocol))
                .inc_by(n as u64);
        }
    }

    pub(crate) fn rejected(&self, signal: Signal, protocol: Protocol, n: usize) {
        if n > 0 {
            self.rejected
                .get_or_create(&PathLabels::new(signal, protocol))
                .inc_by(n as u64);
        }
    }
}

/// Counters of the remote-write receiver. Cheap to clone: clones share the counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct IngestMetrics {
    requests: Family<RequestLabels, Counter>,
    samples_written: Family<ProtocolLabels, Counter>,
    samples_rejected: Family<ReasonLabels, Counter>,
    pub(crate) counters: IngestCounters,
}

impl IngestMetrics {
    /// Creates the counters and registers them in `registry` (which appends the final period
    /// to help texts).
    pub(crate) fn register(registry: &mut Registry) -> IngestMetrics {
        let metrics = IngestMetrics {
            counters: IngestCounters::register(registry),
            ..IngestMetrics::default()
        };
        registry.register(
            "novamon_remote_write_requests",
            "Remote-write requests by protocol version (1.0, 2.0, unknown when negotiation failed) and HTTP status code",
            metrics.requests.clone(),
        );
        registry.register(
            "novamon_remote_write_samples_ingested",
            "Float samples written to the TSDB from remote-write requests",
            metrics.samples_written.clone(),
        );
        registry.register(
            "novamon_remote_write_samples_rejected",
            "Samples (float and native histogram) received by remote-write but not written, by reason",
            metrics.samples_rejected.clone(),
        );
        metrics
    }

    pub(crate) fn request(&self, protocol: Option<&'static str>, code: u16) {
        let protocol = protocol.unwrap_or("unknown");
        self.requests
            .get_or_create(&RequestLabels { protocol, code })
            .inc();
    }

    pub(crate) fn written(&self, protocol: &'static str, samples: usize) {
        self.counters
            .stored(Signal::Metrics, Protocol::RemoteWrite, samples);
        if samples > 0 {
            self.samples_written
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(samples as u64);
        }
    }

    pub(crate) fn rejected(&self, reason: DropReason, samples: usize) {
        self.counters
            .rejected(Signal::Metrics, Protocol::RemoteWrite, samples);
        if samples > 0 {
            self.samples_rejected
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc_by(samples as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn counters_are_exposed_with_their_labels() {
        let mut registry = Registry::default();
        let metrics = IngestMetrics::register(&mut registry);
        metrics.request(Some("2.0"), 204);
        metrics.request(None, 415);
        metrics.written("2.0", 3);
        metrics.rejected(DropReason::TooFarInFuture, 2);
        metrics.rejected(DropReason::OutOfOrder, 0);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"novamon_remote_write_requests_total{protocol="2.0",code="204"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"novamon_remote_write_requests_total{protocol="unknown",code="415"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"novamon_remote_write_samples_ingested_total{protocol="2.0"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"novamon_remote_write_samples_rejected_total{reason="too_far_in_future"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains("out_of_order"), "{text}");
        assert!(
            text.contains(r#"novamon_ingested_total{signal="metrics",protocol="remote_write"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"novamon_ingest_rejected_total{signal="metrics",protocol="remote_write"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"novamon_ingested_total{signal="traces",protocol="otlp_grpc"} 0"#),
            "every path is exposed before its first item: {text}"
        );
        assert!(
            !text.contains(".."),
            "help texts must not end in a period: {text}"
        );
    }
}
