//! novamon's time-series database on RocksDB.
//!
//! The public surface is the contract in `/work/notes/contract.md`: [`Tsdb`] (append, select,
//! series/label APIs, metadata, status, checkpoint, retention) and the [`Queryable`] trait the
//! query engine reads through.
//!
//! Layout in RocksDB (one database per `dir`):
//! - `series` (id → label set), `series_by_labels` (label set → id), `postings`
//!   (`name\0value\0id` → empty) and `series_times` (id → min t, max t as of the last
//!   checkpoint): the persisted index, lz4-compressed (module `index`).
//! - `meta`: schema version, id counters, metric metadata.
//! - `wal`: samples appended since the last checkpoint, one record per append.
//! - `chunks_<partition start ms>`: one uncompressed column family per UTC day holding
//!   Gorilla chunks keyed by series id | min t | tiebreak; retention drops whole families.
//!
//! In memory: the label set ↔ id maps, the inverted index, per-series time bounds, and the
//! head (open chunk per series, out-of-order buffer, unpersisted cut chunks).
//!
//! Details that refine the original design:
//! - `series_times` is an extra column family: it lets open find each series' newest chunk
//!   with one seek (instead of scanning partitions) and restores the time bounds the series and
//!   label APIs filter on.
//! - A checkpoint writes the chunks and deletes the WAL records they cover in one WriteBatch,
//!   so no crash can leave a sample both in a chunk and in the WAL (replay would also be
//!   harmless, but this keeps restarts cheap and the invariant simple).
//! - Retention at open runs after WAL replay: before it, series whose samples are only in
//!   the WAL would look empty and be removed.
//! - Timestamps are limited to ±2^62 ms (anything else is rejected as out of bounds), which
//!   keeps window/partition arithmetic overflow-free; query ranges are clamped to it.
//! - After retention drops partitions, a series' min time is raised to the end of the dropped
//!   range rather than recomputed, so it is a lower bound (the series/label APIs may include a
//!   series for a range just before its first remaining sample, as Prometheus does at block
//!   granularity).

mod append;
mod chunk;
mod db;
mod encoding;
mod error;
mod head;
mod histogram;
mod histstore;
mod index;
mod labels;
pub mod logs;
mod matcher;
mod meta;
mod partition;
mod postings;
pub mod traces;
mod tsdb;
mod wal;

pub use error::StorageError;
pub use histogram::{Histogram, HistogramSample, HistogramSpan};
pub use labels::{Label, Labels, METRIC_NAME};
pub use matcher::{MatchOp, Matcher};
pub use tsdb::{Tsdb, TsdbOptions};

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

/// One series' samples, sorted by `t` with unique timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    /// Native histogram samples, sorted by `t` (a timestamp holds a float or a histogram).
    pub histograms: Vec<HistogramSample>,
}

/// What a query engine needs from the TSDB. Implemented by [`Tsdb`].
pub trait Queryable: Send + Sync {
    /// Series matching all matchers that have samples in [mint, maxt] (inclusive), with those
    /// samples. Fails with [`StorageError::SampleLimit`] when more than `sample_limit` samples in
    /// total would be returned (checked while reading, so memory stays bounded).
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        sample_limit: usize,
    ) -> Result<Vec<SeriesSamples>, StorageError>;
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
    /// Remote-write 1.0: if any sample is rejected, nothing is written.
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
    pub rejected: Vec<Rejection>,
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
}

/// Prometheus's messages for the same rejections.
impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::OutOfOrder => "out of order sample",
            RejectReason::TooOld => "out of bounds",
            RejectReason::DuplicateTimestamp => "duplicate sample for timestamp",
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
