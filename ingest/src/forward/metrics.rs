//! The forwarders' self-metrics, by Prometheus's names (`prometheus_remote_storage_*`, per
//! queue by `remote_name` and `url`), plus novamon's outbox figures. Owns names and labels.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub(crate) remote_name: String,
    pub(crate) url: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every family, registered once; each queue takes its own series ([`QueueMetrics`]).
#[derive(Clone, Default)]
pub(crate) struct ForwardMetrics {
    samples: Family<QueueLabels, Counter>,
    failed: Family<QueueLabels, Counter>,
    retried: Family<QueueLabels, Counter>,
    dropped: Family<QueueLabels, Counter>,
    pending: Family<QueueLabels, Gauge>,
    histograms: Family<QueueLabels, Counter>,
    exemplars: Family<QueueLabels, Counter>,
    metadata: Family<QueueLabels, Counter>,
    metadata_failed: Family<QueueLabels, Counter>,
    bytes: Family<QueueLabels, Counter>,
    highest_sent: Family<QueueLabels, FloatGauge>,
    shards: Family<QueueLabels, Gauge>,
    shards_min: Family<QueueLabels, Gauge>,
    shards_max: Family<QueueLabels, Gauge>,
    capacity: Family<QueueLabels, Gauge>,
    max_samples_per_send: Family<QueueLabels, Gauge>,
    outbox_bytes: Family<QueueLabels, Gauge>,
    outbox_dropped: Family<QueueLabels, Counter>,
    highest_read: FloatGauge,
}

impl ForwardMetrics {
    pub(crate) fn register(registry: &mut Registry) -> ForwardMetrics {
        let m = ForwardMetrics::default();
        let p = "prometheus_remote_storage_";
        for (name, help, family) in [
            ("samples", "Total number of samples sent to remote storage", &m.samples),
            ("samples_failed", "Total number of samples which failed on send to remote storage, non-recoverable errors", &m.failed),
            ("samples_retried", "Total number of samples which failed on send to remote storage but were retried because the send error was recoverable", &m.retried),
            ("samples_dropped", "Total number of samples which were dropped after being read from the outbox before being sent via remote write, either via relabelling or unintentionally because of an unknown reference ID", &m.dropped),
            ("histograms", "Total number of histograms sent to remote storage", &m.histograms),
            ("exemplars", "Total number of exemplars sent to remote storage", &m.exemplars),
            ("metadata", "Total number of metadata entries sent to remote storage", &m.metadata),
            ("metadata_failed", "Total number of metadata entries which failed on send to remote storage, non-recoverable errors", &m.metadata_failed),
            ("bytes", "The total number of bytes of data (not metadata) sent by the queue after compression", &m.bytes),
        ] {
            registry.register(format!("{p}{name}"), help, family.clone());
        }
        for (name, help, family) in [
            ("samples_pending", "The number of samples pending in the queues shards to be sent to the remote storage", &m.pending),
            ("shards", "The number of shards used for parallel sending to the remote storage", &m.shards),
            ("shards_min", "The minimum number of shards that the queue is allowed to run", &m.shards_min),
            ("shards_max", "The maximum number of shards that the queue is allowed to run", &m.shards_max),
            ("shard_capacity", "The capacity of each shard of the queue used for parallel sending to the remote storage", &m.capacity),
            ("max_samples_per_send", "The maximum number of samples to be sent, in a single request, to the remote storage", &m.max_samples_per_send),
        ] {
            registry.register(format!("{p}{name}"), help, family.clone());
        }
        registry.register(
            format!("{p}queue_highest_sent_timestamp_seconds"),
            "Timestamp from a WAL sample, the highest timestamp successfully sent by this queue, in seconds since epoch",
            m.highest_sent.clone(),
        );
        registry.register(
            format!("{p}highest_timestamp_in_seconds"),
            "Highest timestamp that has come into the remote storage via the outbox, in seconds since epoch",
            m.highest_read.clone(),
        );
        registry.register(
            "novamon_remote_storage_outbox_bytes",
            "Bytes of appended data on disk not yet forwarded to this destination (before compression)",
            m.outbox_bytes.clone(),
        );
        registry.register(
            "novamon_remote_storage_outbox_dropped_samples",
            "Samples dropped unsent because the destination's backlog exceeded max_disk_usage",
            m.outbox_dropped.clone(),
        );
        m
    }

    pub(crate) fn queue(&self, labels: QueueLabels) -> QueueMetrics {
        QueueMetrics {
            samples: self.samples.get_or_create(&labels).clone(),
            failed: self.failed.get_or_create(&labels).clone(),
            retried: self.retried.get_or_create(&labels).clone(),
            dropped: self.dropped.get_or_create(&labels).clone(),
            pending: self.pending.get_or_create(&labels).clone(),
            histograms: self.histograms.get_or_create(&labels).clone(),
            exemplars: self.exemplars.get_or_create(&labels).clone(),
            metadata: self.metadata.get_or_create(&labels).clone(),
            metadata_failed: self.metadata_failed.get_or_create(&labels).clone(),
            bytes: self.bytes.get_or_create(&labels).clone(),
            highest_sent: self.highest_sent.get_or_create(&labels).clone(),
            shards: self.shards.get_or_create(&labels).clone(),
            shards_min: self.shards_min.get_or_create(&labels).clone(),
            shards_max: self.shards_max.get_or_create(&labels).clone(),
            capacity: self.capacity.get_or_create(&labels).clone(),
            max_samples_per_send: self.max_samples_per_send.get_or_create(&labels).clone(),
            outbox_bytes: self.outbox_bytes.get_or_create(&labels).clone(),
            outbox_dropped: self.outbox_dropped.get_or_create(&labels).clone(),
            highest_read: self.highest_read.clone(),
        }
    }

    /// Takes a removed queue's series off /metrics.
    pub(crate) fn remove(&self, labels: &QueueLabels) {
        self.samples.remove(labels);
        self.failed.remove(labels);
        self.retried.remove(labels);
        self.dropped.remove(labels);
        self.pending.remove(labels);
        self.histograms.remove(labels);
        self.exemplars.remove(labels);
        self.metadata.remove(labels);
        self.metadata_failed.remove(labels);
        self.bytes.remove(labels);
        self.highest_sent.remove(labels);
        self.shards.remove(labels);
        self.shards_min.remove(labels);
        self.shards_max.remove(labels);
        self.capacity.remove(labels);
        self.max_samples_per_send.remove(labels);
        self.outbox_bytes.remove(labels);
        self.outbox_dropped.remove(labels);
    }
}

/// One queue's series. Cheap to clone: clones share the values.
#[derive(Clone)]
pub(crate) struct QueueMetrics {
    pub(crate) samples: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dropped: Counter,
    pub(crate) pending: Gauge,
    pub(crate) histograms: Counter,
    pub(crate) exemplars: Counter,
    pub(crate) metadata: Counter,
    pub(crate) metadata_failed: Counter,
    pub(crate) bytes: Counter,
    pub(crate) highest_sent: FloatGauge,
    pub(crate) shards: Gauge,
    pub(crate) shards_min: Gauge,
    pub(crate) shards_max: Gauge,
    pub(crate) capacity: Gauge,
    pub(crate) max_samples_per_send: Gauge,
    pub(crate) outbox_bytes: Gauge,
    pub(crate) outbox_dropped: Counter,
    pub(crate) highest_read: FloatGauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SignalLabels {
    pub(crate) remote_name: String,
    pub(crate) url: String,
    /// `logs` or `traces`.
    pub(crate) signal: String,
}

/// The `forward:` queues' families, named after `prometheus_remote_storage_*` with lines or
/// spans for samples (`items`), by destination and signal.
#[derive(Clone, Default)]
pub(crate) struct SignalMetrics {
    sent: Family<SignalLabels, Counter>,
    failed: Family<SignalLabels, Counter>,
    retried: Family<SignalLabels, Counter>,
    dropped: Family<SignalLabels, Counter>,
    pending: Family<SignalLabels, Gauge>,
    bytes: Family<SignalLabels, Counter>,
    outbox_bytes: Family<SignalLabels, Gauge>,
    highest_sent: Family<SignalLabels, FloatGauge>,
}

impl SignalMetrics {
    pub(crate) fn register(registry: &mut Registry) -> SignalMetrics {
        let m = SignalMetrics::default();
        let p = "novamon_forward_";
        for (name, help, family) in [
            ("items", "Total number of log lines or spans sent to the destination", &m.sent),
            ("items_failed", "Total number of log lines or spans the destination refused (non-recoverable errors), dropped", &m.failed),
            ("items_retried", "Total number of log lines or spans whose send failed and was retried (recoverable errors)", &m.retried),
            ("items_dropped", "Total number of log lines or spans dropped unsent because the destination's backlog exceeded max_disk_usage", &m.dropped),
            ("bytes", "The total number of bytes of log lines or spans sent, as sent", &m.bytes),
        ] {
            registry.register(format!("{p}{name}"), help, family.clone());
        }
        for (name, help, family) in [
            ("items_pending", "The number of log lines or spans read from the outbox and not yet sent", &m.pending),
            ("outbox_bytes", "Bytes of stored data on disk not yet forwarded to this destination (before compression)", &m.outbox_bytes),
        ] {
            registry.register(format!("{p}{name}"), help, family.clone());
        }
        registry.register(
            format!("{p}highest_sent_timestamp_seconds"),
            "Timestamp of the newest log line or span start sent, in seconds since epoch",
            m.highest_sent.clone(),
        );
        m
    }

    pub(crate) fn queue(&self, labels: &SignalLabels) -> SignalQueueMetrics {
        SignalQueueMetrics {
            sent: self.sent.get_or_create(labels).clone(),
            failed: self.failed.get_or_create(labels).clone(),
            retried: self.retried.get_or_create(labels).clone(),
            dropped: self.dropped.get_or_create(labels).clone(),
            pending: self.pending.get_or_create(labels).clone(),
            bytes: self.bytes.get_or_create(labels).clone(),
            outbox_bytes: self.outbox_bytes.get_or_create(labels).clone(),
            highest_sent: self.highest_sent.get_or_create(labels).clone(),
        }
    }

    /// Takes a removed queue's series off /metrics.
    pub(crate) fn remove(&self, labels: &SignalLabels) {
        self.sent.remove(labels);
        self.failed.remove(labels);
        self.retried.remove(labels);
        self.dropped.remove(labels);
        self.pending.remove(labels);
        self.bytes.remove(labels);
        self.outbox_bytes.remove(labels);
        self.highest_sent.remove(labels);
    }
}

/// One `forward:` queue's series.
#[derive(Clone)]
pub(crate) struct SignalQueueMetrics {
    pub(crate) sent: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dropped: Counter,
    pub(crate) pending: Gauge,
    pub(crate) bytes: Counter,
    pub(crate) outbox_bytes: Gauge,
    pub(crate) highest_sent: FloatGauge,
}
