//! The stores as the embedded UI's status page shows them: each store's directory and its
//! counts, and the `remote_write` and `forward` queues' figures, read on request. Owns only the choice of what to count.

use std::path::PathBuf;
use std::sync::Arc;

use ui::{Count, Store};

pub struct UiStatus {
    pub data_dir: PathBuf,
    pub tsdb: Arc<storage::Tsdb>,
    pub logs: Arc<storage::logs::LogStore>,
    pub traces: Arc<storage::traces::TraceStore>,
    pub forwarding: Arc<ingest::forward::Forwarding>,
    pub signal_forwarding: Arc<ingest::forward::SignalForwarding>,
}

impl ui::StatusSource for UiStatus {
    /// Absolute, so the page says where the data is whatever directory novamon started in.
    fn data_dir(&self) -> PathBuf {
        std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone())
    }

    fn stores(&self) -> Vec<Store> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        vec![
            Store {
                name: "tsdb",
                dir: self.data_dir.join("tsdb"),
                counts: vec![Count {
                    what: "series",
                    value: Ok(self.tsdb.num_series()),
                }],
            },
            Store {
                name: "logs",
                dir: self.data_dir.join("logs"),
                counts: vec![Count {
                    what: "streams",
                    value: self
                        .logs
                        .streams(&[], i64::MIN, i64::MAX)
                        .map(|s| s.len() as u64)
                        .map_err(|e| err(&e)),
                }],
            },
            Store {
                name: "traces",
                dir: self.data_dir.join("traces"),
                counts: vec![
                    Count {
                        what: "spans (estimate)",
                        value: self.traces.estimated_spans().map_err(|e| err(&e)),
                    },
                    Count {
                        what: "services",
                        value: self
                            .traces
                            .services()
                            .map(|s| s.len() as u64)
                            .map_err(|e| err(&e)),
                    },
                ],
            },
        ]
    }

    fn remote_write(&self) -> Vec<ui::RemoteWrite> {
        self.forwarding
            .status()
            .into_iter()
            .map(|d| ui::RemoteWrite {
                name: d.name,
                url: d.url,
                protocol: d.protocol,
                shards: d.shards,
                samples_sent: d.samples_sent,
                samples_failed: d.samples_failed,
                samples_retried: d.samples_retried,
                samples_pending: d.samples_pending,
                backlog_bytes: d.backlog_bytes,
                samples_dropped_disk_full: d.samples_dropped_disk_full,
                highest_sent_seconds: d.highest_sent_seconds,
                last_error: d.last_error,
            })
            .collect()
    }

    fn forward(&self) -> Vec<ui::Forward> {
        self.signal_forwarding
            .status()
            .into_iter()
            .map(|d| ui::Forward {
                name: d.name,
                signal: d.signal,
                url: d.url,
                sent: d.items_sent,
                failed: d.items_failed,
                retried: d.items_retried,
                pending: d.items_pending,
                backlog_bytes: d.backlog_bytes,
                dropped_disk_full: d.items_dropped,
                last_error: d.last_error,
            })
            .collect()
    }
}
