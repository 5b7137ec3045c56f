//! novamon's stores and the contract the rest of novamon reads and writes them through.
//!
//! - [`contract`]: the metric store's contract ([`Appender`], [`Querier`] with
//!   [`SelectHints`] and lazy [`Series`], [`LabelQuerier`]), after Prometheus's
//!   `storage/interface.go`; writes travel as an [`EncodedBatch`] (`batch`: label sets
//!   encoded in one buffer as the index stores them).
//! - `tsdb/`: the TSDB on RocksDB ([`Tsdb`]): series index and postings, head with
//!   out-of-order buffer, write-ahead log, Gorilla chunks in one column family per UTC day,
//!   checkpoints and retention, and the [`Outbox`] `remote_write` forwards from (what each
//!   append stored, queued on disk in the same write). Its module doc is the map of its
//!   layout and locking.
//! - [`logs`]: the log store (tantivy per day, with an append log for acknowledged records).
//! - [`traces`]: the trace store (RocksDB: spans by trace, by time and by attribute).
//! - shared pieces: [`Labels`] and [`Matcher`], [`relabel`] (Prometheus's relabelling, used by
//!   scraping and alerting), native [`Histogram`]s, `encoding` (varints
//!   and the like), `db` (RocksDB helpers: column-family options that read through one
//!   bounded block cache per database, and what RocksDB holds in memory, [`StoreMemory`]),
//!   [`files`] (small files replaced atomically and durably), `episode` (one log line per failure episode, so a full disk does not flood the log), one
//!   error type ([`StorageError`]) whose class says whether a retry can succeed (a full disk:
//!   yes).
//!
//! Knows nothing of wire formats, query languages or HTTP.

mod batch;
pub mod contract;
mod db;
mod encoding;
mod episode;
mod error;
pub mod files;
mod histogram;
mod labels;
pub mod logs;
mod matcher;
mod outbox;
pub mod relabel;
pub mod traces;
mod tsdb;

pub use batch::{EncodedBatch, EncodedLabels, EncodedSeries, SeriesRef};
pub use contract::{
    Appendable, Appender, ExemplarQuerier, LabelQuerier, Point, Querier, SelectHints, Series,
    SeriesSet,
};
pub use db::StoreMemory;
pub use error::{Classify, ErrorClass, StorageError};
pub use histogram::{Histogram, HistogramSample, HistogramSpan};
pub use labels::{Label, Labels, METRIC_NAME};
pub use matcher::{MatchOp, Matcher};
pub use outbox::OutboxLog;
pub use tsdb::{Outbox, OutboxRecord, Skipped, Tsdb, TsdbOptions};

use std::fmt;

/// The staleness marker: a NaN with this exact bit pattern (Prometheus's value::StaleNaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the staleness marker (bit-exact; other NaNs are ordinary values).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub v: f64,
}

/// A sampled observation of a series pointing elsewhere, usually to a trace (Prometheus's
/// `exemplar.Exemplar`): its labels (`trace_id`, `span_id`, …), value and time in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub t: i64,
}

/// Most UTF-8 characters of an exemplar's label names and values together
/// (Prometheus's `exemplar.ExemplarMaxLabelSetLength`, from OpenMetrics); longer ones are
/// dropped.
pub const EXEMPLAR_MAX_LABEL_SET_LENGTH: usize = 128;

/// The exemplars of one series in a time range, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ExemplarSeries {
    pub series_labels: Labels,
    pub exemplars: Vec<Exemplar>,
}

/// One series' decoded samples, sorted by `t` with unique timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    /// Native histogram samples, sorted by `t` (a timestamp holds a float or a histogram).
    pub histograms: Vec<HistogramSample>,
}

/// Samples of one series to append.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesBatch {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramSample>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendMode {
    /// Remote-write 1.0: if any sample is rejected, nothing is written (samples refused by
    /// the series limit excepted: the others are written).
    AllOrNothing,
    /// Remote-write 2.0, OTLP: valid samples are written, rejected ones reported.
    BestEffort,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Float samples written (a repeat of a stored sample counts).
    pub samples_written: usize,
    /// Native histogram samples written, counted apart as remote-write 2.0 reports them.
    pub histograms_written: usize,
    /// Exemplars stored (a repeat of a series' newest counts, as a repeated sample does).
    /// Exemplars never fail an append: those refused are only counted in the next two.
    pub exemplars_written: usize,
    /// Exemplars not newer than their series' newest stored one (Prometheus's
    /// `prometheus_tsdb_exemplar_out_of_order_exemplars_total`).
    pub exemplars_out_of_order: usize,
    /// Exemplars refused otherwise: labels over [`EXEMPLAR_MAX_LABEL_SET_LENGTH`], or of a
    /// series no sample of the append or before it created.
    pub exemplars_invalid: usize,
    pub rejected: Vec<Rejection>,
    /// For entries pushed with [`EncodedBatch::push_encoded_ref`] whose reference was none
    /// or out of date: `(entry index in the batch, the series' reference now)`. Series not in
    /// memory after the append (refused) have none.
    pub series_refs: Vec<(usize, SeriesRef)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub labels: Labels,
    pub t: i64,
    pub reason: RejectReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Older than the series' last sample by more than the out-of-order window.
    OutOfOrder,
    /// Before the retention cutoff.
    TooOld,
    /// Same timestamp as an existing sample, different value.
    DuplicateTimestamp,
    /// Of a new series, while the TSDB holds `max_active_series` series.
    SeriesLimit,
}

/// Prometheus's messages for the same rejections.
impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::OutOfOrder => "out of order sample",
            RejectReason::TooOld => "out of bounds",
            RejectReason::DuplicateTimestamp => "duplicate sample for timestamp",
            // Prometheus has no such limit; Mimir's text for its own, with novamon's key.
            RejectReason::SeriesLimit => {
                "per-instance series limit exceeded (limits.max_active_series)"
            }
        })
    }
}

/// Metadata of a metric family (as in Prometheus's /api/v1/metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// counter, gauge, histogram, gaugehistogram, summary, info, stateset, unknown
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// The figures of Prometheus's /api/v1/status/tsdb. The `Vec`s hold the top `top_n` entries,
/// largest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TsdbStatus {
    pub num_series: u64,
    pub chunk_count: u64,
    pub min_time: i64,
    pub max_time: i64,
    pub num_label_pairs: u64,
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}
