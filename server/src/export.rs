//! The `export:` section and its wiring: finished days of the three stores written as Parquet
//! into a directory by `sql::Exporter` every `interval`, the SQL tables reading those days
//! back once the stores no longer hold them, and the exporter's progress as
//! `novamon_export_*` series on `/metrics`.
//!
//! Wires only: which days are written and how is `sql::export`'s, the layout `sql::history`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::{Config, PromDuration};

/// `export:`: where and how often finished days are exported.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The directory the `signal=…/date=…/part-0.parquet` files go under.
    pub directory: PathBuf,
    /// How often the exporter looks for days to write.
    #[serde(default = "default_interval")]
    pub interval: PromDuration,
    /// How long after its end (UTC) a day is taken as finished: late data arriving within
    /// it is still exported.
    #[serde(default = "default_delay")]
    pub delay: PromDuration,
}

fn default_interval() -> PromDuration {
    PromDuration(Duration::from_secs(3600))
}

fn default_delay() -> PromDuration {
    PromDuration(Duration::from_secs(3600))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: &'static str,
}

/// The exporter's progress as `/metrics` series.
struct Progress {
    days: Family<SignalLabels, Counter>,
    rows: Family<SignalLabels, Counter>,
    bytes: Family<SignalLabels, Counter>,
    failures: Counter,
    last_success: Gauge,
}

impl Progress {
    fn register(registry: &mut Registry) -> Progress {
        let p = Progress {
            days: Family::default(),
            rows: Family::default(),
            bytes: Family::default(),
            failures: Counter::default(),
            last_success: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("novamon_export");
        r.register(
            "days",
            "Day partitions written as Parquet, per signal",
            p.days.clone(),
        );
        r.register(
            "rows",
            "Rows written as Parquet, per signal",
            p.rows.clone(),
        );
        r.register(
            "bytes",
            "Bytes of Parquet files written, per signal",
            p.bytes.clone(),
        );
        r.register(
            "failures",
            "Export passes that left a finished day unwritten",
            p.failures.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "When the last pass that left no finished day unwritten ended",
            p.last_success.clone(),
        );
        // Every signal's series exist from the start, at 0.
        for signal in sql::Signal::ALL {
            let l = SignalLabels {
                signal: signal.table(),
            };
            p.days.get_or_create(&l).inc_by(0);
            p.rows.get_or_create(&l).inc_by(0);
            p.bytes.get_or_create(&l).inc_by(0);
        }
        p
    }
}

impl sql::ExportObserver for Progress {
    fn day_exported(&self, signal: sql::Signal, rows: u64, bytes: u64) {
        let l = SignalLabels {
            signal: signal.table(),
        };
        self.days.get_or_create(&l).inc();
        self.rows.get_or_create(&l).inc_by(rows);
        self.bytes.get_or_create(&l).inc_by(bytes);
    }

    fn pass_finished(&self, ok: bool, at: SystemTime) {
        if ok {
            let s = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            self.last_success.set(s as i64);
        } else {
            self.failures.inc();
        }
    }
}

/// The running exporter: the history the SQL tables read, and its task.
pub(crate) struct Export {
    pub history: sql::History,
    task: tokio::task::JoinHandle<()>,
}

impl Export {
    /// Stops the exporter; a day being written is left under its temporary name, which the
    /// next start writes again.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Starts the exporter when `export:` is set: a pass at start-up, then one every `interval`.
pub(crate) fn start(
    config: &Config,
    tsdb: Arc<storage::Tsdb>,
    logs: Arc<storage::logs::LogStore>,
    traces: Arc<storage::traces::TraceStore>,
    registry: &mut Registry,
) -> anyhow::Result<Option<Export>> {
    let Some(c) = &config.export else {
        return Ok(None);
    };
    let retention = sql::Retention {
        metrics: config.storage.retention.0,
        logs: config.logs.retention.0,
        spans: config.traces.retention.0,
    };
    let history = sql::History::local(&c.directory, retention).context("export.directory")?;
    let exporter = sql::Exporter::new(tsdb, logs, traces, history.clone(), c.delay.0);
    let progress = Progress::register(registry);
    let interval = c.interval.0;
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match exporter.run(SystemTime::now(), &progress).await {
                Ok(report) if !report.written.is_empty() => {
                    tracing::info!(days = report.written.len(), "exported days as Parquet")
                }
                Ok(_) => {}
                Err(e) => tracing::error!("export: {e}"),
            }
        }
    });
    Ok(Some(Export { history, task }))
}
