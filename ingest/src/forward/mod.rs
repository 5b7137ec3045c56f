//! Forwarding with Prometheus `remote_write:`: what the TSDB stored, sent on to other
//! receivers as Prometheus's queue manager sends it, from the TSDB's on-disk outbox
//! (`storage::Outbox`), so that a receiver outage or a restart loses nothing.
//!
//! - `config`: the `remote_write` entries ([`RemoteWriteConfig`]) and their checks, compiled
//!   into destinations ([`Prepared`]).
//! - `queue`: one queue per destination: the outbox reader, the shards, batching, retries
//!   and back-off, the acknowledged offset, the disk cap, resharding.
//! - `send`: encoding (1.0 and 2.0, with the receiver's message types) and one POST.
//! - `metrics`: `prometheus_remote_storage_*`.
//!
//! Reads only the outbox and the metric metadata; writes nothing but the outbox's offsets.

mod config;
mod metrics;
mod queue;
mod send;

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use storage::Tsdb;

pub use config::{MetadataConfig, Prepared, QueueConfig, RemoteWriteConfig};
use metrics::{ForwardMetrics, QueueLabels};
use queue::Queue;

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
