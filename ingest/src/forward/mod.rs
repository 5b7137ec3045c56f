//! Forwarding: what the stores stored, sent on to other receivers from each store's on-disk
//! outbox (`storage::Outbox`, `storage::OutboxLog`), so that a receiver outage or a restart
//! loses nothing. Metrics go out with Prometheus's `remote_write:`, as its queue manager
//! sends them ([`Forwarding`]); logs and traces with novamon's `forward:`
//! ([`SignalForwarding`]).
//!
//! - `config`: the `remote_write` entries ([`RemoteWriteConfig`]) and their checks, compiled
//!   into destinations ([`Prepared`]); the HTTP client settings every destination shares.
//! - `queue`: one queue per `remote_write` destination: the outbox reader, the shards,
//!   batching, retries and back-off, the acknowledged offset, the disk cap, resharding.
//! - `send`: remote-write encoding (1.0 and 2.0, with the receiver's message types), one
//!   POST of any body and its response classified, the back-off between retries.
//! - `signal_config`, `signal_queue`, `signal_send`: `forward:`'s destinations
//!   ([`ForwardConfig`]), one queue each over the log or trace store's outbox, and the Loki
//!   push and OTLP encodings.
//! - `grpc`: OTLP over gRPC for `forward:` (`protocol: otlp_grpc`), its answers classified.
//! - `metrics`: `prometheus_remote_storage_*` and `novamon_forward_*`.
//!
//! Reads only the outboxes and the metric metadata; writes nothing but the outboxes' offsets.

mod config;
mod grpc;
mod metrics;
mod queue;
mod send;
mod signal_config;
mod signal_queue;
mod signal_send;

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use storage::Tsdb;

/// Shared with `http_sd_configs`, whose URL is split as a destination's is.
pub(crate) use config::UrlParts;
pub use config::{MetadataConfig, Prepared, QueueConfig, RemoteWriteConfig};
use metrics::{ForwardMetrics, QueueLabels, SignalLabels, SignalMetrics};
use queue::Queue;
pub use signal_config::{
    ForwardConfig, PreparedSignals, Protocol, Signal, SignalDestinationConfig, SignalQueueConfig,
};
use signal_queue::SignalQueue;

/// The running queues, applied from the config at start-up and on every reload.
pub struct Forwarding {
    tsdb: Arc<Tsdb>,
    metrics: ForwardMetrics,
    queues: tokio::sync::Mutex<BTreeMap<String, Queue>>,
    /// What the status page reads, without waiting for an apply in progress.
    running: parking_lot::Mutex<Vec<Arc<queue::Shared>>>,
}

/// One destination as the status page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationStatus {
    pub name: String,
    pub url: String,
    /// "1.0" or "2.0" (after the fallback, what is sent now).
    pub protocol: &'static str,
    pub shards: i64,
    pub samples_sent: u64,
    pub samples_failed: u64,
    pub samples_retried: u64,
    pub samples_pending: i64,
    /// Bytes on disk not yet sent.
    pub backlog_bytes: i64,
    /// Samples dropped unsent because the backlog passed `max_disk_usage`.
    pub samples_dropped_disk_full: u64,
    /// Seconds since the epoch of the newest sample sent, 0 before any.
    pub highest_sent_seconds: f64,
    pub last_error: Option<String>,
}

impl Forwarding {
    /// Registers the `prometheus_remote_storage_*` metrics; nothing runs until [`apply`].
    ///
    /// [`apply`]: Forwarding::apply
    pub fn new(tsdb: Arc<Tsdb>, registry: &mut Registry) -> Forwarding {
        Forwarding {
            tsdb,
            metrics: ForwardMetrics::register(registry),
            queues: tokio::sync::Mutex::new(BTreeMap::new()),
            running: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Runs `prepared`'s destinations: one unchanged keeps its queue; a changed one restarts
    /// from its acknowledged offset; a removed one stops and its backlog is dropped; a new
    /// one starts with what is appended from now on.
    pub async fn apply(&self, prepared: Prepared) -> Result<(), String> {
        let mut queues = self.queues.lock().await;
        let keys: Vec<String> = prepared
            .destinations
            .iter()
            .map(|d| d.key.clone())
            .collect();
        let outbox = self.tsdb.outbox();
        let register = outbox.clone();
        tokio::task::spawn_blocking(move || register.set_destinations(&keys))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("registering remote_write destinations: {e}"))?;
        let mut old = std::mem::take(&mut *queues);
        for dest in prepared.destinations {
            if let Some(q) = old.remove(&dest.key) {
                if q.dest.raw == dest.raw && q.dest.external_labels == dest.external_labels {
                    queues.insert(dest.key.clone(), q);
                    continue;
                }
                self.stop_queue(q).await;
            }
            let labels = QueueLabels {
                remote_name: dest.name.clone(),
                url: dest.raw.url.clone(),
            };
            let tsdb = self.tsdb.clone();
            let metadata: queue::MetadataSource =
                Arc::new(move || tsdb.metadata().unwrap_or_default());
            let q = Queue::start(
                dest.clone(),
                outbox.clone(),
                self.metrics.queue(labels),
                metadata,
            )
            .map_err(|e| format!("starting the remote_write queue {}: {e}", dest.name))?;
            queues.insert(dest.key.clone(), q);
        }
        for (_, q) in old {
            self.stop_queue(q).await;
        }
        *self.running.lock() = queues.values().map(|q| q.shared.clone()).collect();
        Ok(())
    }

    async fn stop_queue(&self, q: Queue) {
        let labels = QueueLabels {
            remote_name: q.dest.name.clone(),
            url: q.dest.raw.url.clone(),
        };
        q.stop().await;
        self.metrics.remove(&labels);
    }

    /// Stops every queue (at shutdown); what was in flight is sent again at the next start.
    pub async fn stop(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().await);
        self.running.lock().clear();
        for (_, q) in queues {
            q.stop().await;
        }
    }

    /// Each destination's figures, in name order.
    pub fn status(&self) -> Vec<DestinationStatus> {
        let mut out: Vec<DestinationStatus> = self
            .running
            .lock()
            .iter()
            .map(|s| {
                let m = &s.metrics;
                DestinationStatus {
                    name: s.dest.name.clone(),
                    url: s.dest.raw.url.clone(),
                    protocol: s.protocol(),
                    shards: m.shards.get(),
                    samples_sent: m.samples.get(),
                    samples_failed: m.failed.get(),
                    samples_retried: m.retried.get(),
                    samples_pending: m.pending.get(),
                    backlog_bytes: m.outbox_bytes.get(),
                    samples_dropped_disk_full: m.outbox_dropped.get(),
                    highest_sent_seconds: m.highest_sent.get(),
                    last_error: s.last_error.lock().clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The `forward:` queues, applied from the config at start-up and on every reload.
pub struct SignalForwarding {
    logs: storage::OutboxLog,
    traces: storage::OutboxLog,
    metrics: SignalMetrics,
    queues: tokio::sync::Mutex<BTreeMap<(Signal, String), SignalQueue>>,
    /// What the status page reads, without waiting for an apply in progress.
    running: parking_lot::Mutex<Vec<Arc<signal_queue::SignalShared>>>,
}

/// One `forward:` destination as the status page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalStatus {
    pub name: String,
    pub signal: &'static str,
    pub url: String,
    pub items_sent: u64,
    pub items_failed: u64,
    pub items_retried: u64,
    /// Dropped unsent because the backlog passed `max_disk_usage`.
    pub items_dropped: u64,
    pub items_pending: i64,
    /// Bytes on disk not yet sent.
    pub backlog_bytes: i64,
    pub last_error: Option<String>,
}

impl SignalForwarding {
    /// Registers the `novamon_forward_*` metrics; nothing runs until [`apply`].
    ///
    /// [`apply`]: SignalForwarding::apply
    pub fn new(
        logs: storage::OutboxLog,
        traces: storage::OutboxLog,
        registry: &mut Registry,
    ) -> SignalForwarding {
        SignalForwarding {
            logs,
            traces,
            metrics: SignalMetrics::register(registry),
            queues: tokio::sync::Mutex::new(BTreeMap::new()),
            running: parking_lot::Mutex::new(Vec::new()),
        }
    }

    fn outbox(&self, signal: Signal) -> &storage::OutboxLog {
        match signal {
            Signal::Logs => &self.logs,
            Signal::Traces => &self.traces,
        }
    }

    fn labels(d: &signal_config::SignalDestination) -> SignalLabels {
        SignalLabels {
            remote_name: d.raw.name.clone(),
            url: d.raw.url.clone(),
            signal: d.signal.as_str().to_owned(),
        }
    }

    /// Runs `prepared`'s destinations: an unchanged one keeps its queue; a changed one
    /// restarts from its acknowledged offset; a removed one stops and its backlog is dropped;
    /// a new one starts with what is stored from now on.
    pub async fn apply(&self, prepared: PreparedSignals) -> Result<(), String> {
        let mut queues = self.queues.lock().await;
        for signal in [Signal::Logs, Signal::Traces] {
            let keys: Vec<String> = prepared
                .destinations
                .iter()
                .filter(|d| d.signal == signal)
                .map(|d| d.key())
                .collect();
            let outbox = self.outbox(signal).clone();
            tokio::task::spawn_blocking(move || outbox.set_destinations(&keys))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| {
                    format!("registering forward.{} destinations: {e}", signal.as_str())
                })?;
        }
        let mut old = std::mem::take(&mut *queues);
        for dest in prepared.destinations {
            let id = (dest.signal, dest.raw.name.clone());
            if let Some(q) = old.remove(&id) {
                if q.shared.dest.raw == dest.raw {
                    queues.insert(id, q);
                    continue;
                }
                self.stop_queue(q).await;
            }
            let metrics = self.metrics.queue(&Self::labels(&dest));
            let outbox = self.outbox(dest.signal).clone();
            queues.insert(id, SignalQueue::start(dest, outbox, metrics));
        }
        for (_, q) in old {
            self.stop_queue(q).await;
        }
        *self.running.lock() = queues.values().map(|q| q.shared.clone()).collect();
        Ok(())
    }

    async fn stop_queue(&self, q: SignalQueue) {
        let labels = Self::labels(&q.shared.dest);
        q.stop().await;
        self.metrics.remove(&labels);
    }

    /// Stops every queue (at shutdown); what was in flight is sent again at the next start.
    pub async fn stop(&self) {
        let queues = std::mem::take(&mut *self.queues.lock().await);
        self.running.lock().clear();
        for (_, q) in queues {
            q.stop().await;
        }
    }

    /// Each destination's figures, logs first, in name order.
    pub fn status(&self) -> Vec<SignalStatus> {
        self.running
            .lock()
            .iter()
            .map(|s| {
                let m = &s.metrics;
                SignalStatus {
                    name: s.dest.raw.name.clone(),
                    signal: s.dest.signal.as_str(),
                    url: s.dest.raw.url.clone(),
                    items_sent: m.sent.get(),
                    items_failed: m.failed.get(),
                    items_retried: m.retried.get(),
                    items_dropped: m.dropped.get(),
                    items_pending: m.pending.get(),
                    backlog_bytes: m.outbox_bytes.get(),
                    last_error: s.last_error.lock().clone(),
                }
            })
            .collect()
    }
}
