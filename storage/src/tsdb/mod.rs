//! The facade tying the TSDB together: opening (index load, head restore, WAL replay),
//! the append path, reads (select, series and label APIs, status), the periodic checkpoint
//! and retention pass, metadata and `clear`.
//!
//! Owns the locking protocol and the order of durable steps; the formats and rules live in
//! the modules it drives (`index` with `labelset`, `symbols` and `postings`, `head`, both
//! keeping their per-series records in a `slab` keyed by series id, `append`, `wal`,
//! `chunk`, `partition`, `merge`, `cold`, `meta`, `histstore`, `exemplars`; `read` and `checkpoint`
//! hold the read and durable halves of the facade itself).
//!
//! Memory holds the series written within the head window (index + head); the others live in
//! the on-disk cold index only (`cold`). The checkpoint thread moves idle series there after
//! a checkpoint has persisted them; an append of a label set not in memory looks it up there
//! first and brings the series back with its id and last sample, so nothing about it changes
//! but where its label set is held.
//!
//! Locks, always taken in this order: `checkpoint` (one checkpoint / retention / clear at a
//! time) → `create` (held by an append that adds series to memory; guards the next series
//! id) → `gate` (shared by appends, taken alone by what needs none in flight) → the append's
//! own series (`series_lock`) → `state` (index + head; readers share it) → one series' head
//! (`head`: held only while that head is read or written, with no other lock taken then). An
//! append validates its series under a shared `state`, writes its WriteBatch (WAL record + new
//! series) with no `state` lock held, then puts its samples in the head, still sharing
//! `state` — so a write that returned Ok is in RocksDB's WAL. Only series joining memory (new,
//! back from the cold index, or given a head) take `state` alone, to change the tables, before
//! their samples go in. Appends to different series run side by side throughout; two appends
//! to one series follow each other from validation to the head, as do two that add series.
//!
//! Durability: a checkpoint notes the dirty series and the next WAL sequence S under `gate`,
//! then writes their chunks and time bounds a slice of series at a time (each slice one
//! WriteBatch, snapshotted under a short exclusive `state` lock), and deletes WAL records
//! [0, S) only after the last slice is written. So at any crash point every acknowledged
//! sample is in a chunk or in the WAL, never lost; a crash between slices leaves some in both.
//! Replay at open re-validates each record against the restored head exactly as the original
//! append did, which reproduces the same decisions and finds a sample already in a chunk
//! stored (a no-op).
//!
//! Reads copy the head's data first and read RocksDB second: a checkpoint writes RocksDB
//! before it releases head data, so nothing in flight between the two is missed (data seen
//! twice is deduplicated by timestamp).
//!
//! Native histograms take a path of their own (`histstore`): an append writes each sample
//! as a key of its own in the same WriteBatch (durable without the WAL), and the checkpoint
//! seals them into compressed chunks in the day partitions (see `checkpoint` for when).
//!
//! The outbox (`outbox`) is `remote_write`'s queue: while a destination is registered, an
//! append also puts what it stored into its WriteBatch under a sequence number taken while it
//! holds its series, so what a sender was told is stored is also queued, in per-series order.
//!
//! Exemplars take no lock of their own: an append judges a series' exemplars against its
//! newest stored one while it holds the series (`series_lock`; a series it adds is held by
//! `create`), and writes them in its WriteBatch (`exemplars`), so they are durable when the
//! append returns, and an append to one series sees the exemplars of the one before it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foldhash::HashMap;
use parking_lot::{Condvar, Mutex, RwLock, RwLockWriteGuard};
use rocksdb::{WriteBatch, WriteOptions};
use tracing::{debug, warn};

use crate::batch::{EncodedSeries, RefHint, SeriesRef};
use crate::contract::BatchWriter;
use crate::db::{
    self, Db, CF_COLD_INDEX, CF_COLD_LABELS, CF_EXEMPLARS, CF_HISTOGRAMS, CF_SERIES,
    CF_SERIES_TIMES, CF_WAL,
};
use crate::episode::{FailureEpisode, Throttle};
use crate::tsdb::append::{Limits, SeriesCheck, Verdict};
use crate::tsdb::chunk::StoredChunk;
use crate::tsdb::head::Head;
use crate::{
    AppendMode, AppendReport, EncodedBatch, Exemplar, ExemplarQuerier, ExemplarSeries,
    HistogramSample, LabelQuerier, Labels, Matcher, Metadata, Querier, Rejection, Sample,
    SelectHints, SeriesBatch, SeriesSet, StorageError, TsdbStatus,
};
use checkpoint::Pass;
use cold::ColdSeries;
use index::Index;
use labelset::StoredLabels;
use meta::{KEY_NEXT_OOO_CHUNK_ID, KEY_NEXT_SERIES_ID};
use partition::{partition_start, Partitions};
use series_lock::SeriesLocks;

pub use outbox::{Outbox, OutboxRecord, Skipped};

mod append;
mod checkpoint;
mod chunk;
mod cold;
mod exemplars;
mod head;
mod histstore;
mod index;
mod labelset;
mod merge;
mod meta;
mod outbox;
mod partition;
mod postings;
mod read;
mod series_lock;
mod slab;
mod symbols;
mod wal;

#[derive(Clone, Debug)]
pub struct TsdbOptions {
    /// Samples older than now − retention are refused and their partitions dropped.
    /// `Duration::MAX` keeps everything (e.g. for test data at the epoch).
    pub retention: Duration,
    /// How far behind a series' newest sample an older sample may still be appended.
    pub out_of_order_window: Duration,
    /// fsync RocksDB's WAL on every append. Off: an acknowledged write survives kill -9 (it is
    /// in the OS page cache) but not power loss.
    pub wal_fsync: bool,
    /// Period of the background checkpoint (head → chunks) and retention pass.
    /// `Duration::ZERO` disables the background thread (checkpoints only on flush/close).
    pub flush_interval: Duration,
    /// How often a periodic checkpoint also writes the series' open (still filling) chunks
    /// and deletes the WAL records they cover; the checkpoints between write only the chunks
    /// that were cut (and out-of-order data), so an open chunk is rewritten once per period
    /// instead of at every checkpoint. It bounds the WAL a restart after a crash replays
    /// (about this period plus `flush_interval`); a clean stop writes everything.
    /// `Duration::ZERO` writes open chunks at every checkpoint.
    pub open_chunk_interval: Duration,
    /// Series with no sample newer than this before the newest sample of any series leave
    /// memory for the on-disk cold index (`cold`), where queries still find them and a new
    /// sample brings them back. `Duration::MAX` keeps every series in memory.
    pub head_window: Duration,
    /// Most series the TSDB holds in memory (those with a sample within the head window);
    /// samples that would add a series beyond it are rejected with
    /// [`crate::RejectReason::SeriesLimit`], while series in memory keep being written.
    /// 0: no limit, as in Prometheus.
    pub max_active_series: usize,
    /// Capacity of the block cache all column families read through.
    pub block_cache_bytes: usize,
    /// Budget of all memtables together: writes wait in them until this much is buffered.
    pub write_buffer_bytes: usize,
    /// Most exemplars kept per series, the newest; 0 stores none. Per series rather than
    /// Prometheus's one ring for all (`storage.exemplars.max_exemplars`), so a busy series
    /// cannot push out every other series' exemplars; on disk, so it costs no memory.
    pub max_exemplars_per_series: usize,
}

impl Default for TsdbOptions {
    fn default() -> Self {
        TsdbOptions {
            retention: Duration::from_secs(15 * 24 * 3600),
            out_of_order_window: Duration::from_secs(3600),
            wal_fsync: false,
            flush_interval: Duration::from_secs(60),
            open_chunk_interval: Duration::from_secs(600),
            head_window: Duration::from_secs(2 * 3600),
            max_active_series: 0,
            block_cache_bytes: 32 << 20,
            write_buffer_bytes: 64 << 20,
            max_exemplars_per_series: DEFAULT_MAX_EXEMPLARS_PER_SERIES,
        }
    }
}

/// Twenty: a client library keeps one exemplar per bucket and replaces it as traced requests
/// come, so twenty per series is the last twenty traced observations of each bucket: several
/// minutes of a busy histogram at a 15s scrape, dozens of points on a Grafana panel of one.
/// An append with exemplars walks the series' stored ones (at most this many) to trim them.
pub const DEFAULT_MAX_EXEMPLARS_PER_SERIES: usize = 20;

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

/// The time-series database. Send + Sync; share it behind an `Arc`.
pub struct Tsdb {
    inner: Arc<Inner>,
    worker: Option<Worker>,
}

struct Worker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

/// State only the checkpoint touches.
struct CheckpointState {
    /// WAL records below this are already deleted.
    wal_start: u64,
    next_ooo_chunk_id: u64,
    /// When a periodic checkpoint next writes the open chunks (and so can truncate the WAL);
    /// never for an interval too long to add to the clock.
    open_chunks_due: Option<Instant>,
    /// Windows before this start have had their merge pass (`merge`); none yet since open.
    merged_before: Option<i64>,
}

#[derive(Default)]
struct State {
    index: Index,
    head: Head,
}

struct Inner {
    db: Db,
    cache: rocksdb::Cache,
    opts: TsdbOptions,
    partitions: Partitions,
    checkpoint: Mutex<CheckpointState>,
    /// Shared by appends; taken alone by what needs no append in flight (the checkpoint's
    /// WAL position, retention, eviction, clear).
    gate: RwLock<()>,
    /// Held by appends that add series to memory; guards the next series id.
    create: Mutex<u64>,
    series_locks: SeriesLocks,
    next_wal_seq: AtomicU64,
    /// Counts the passes that took series out of memory (under the exclusive `gate`), so an
    /// append knows whether the ids it found before taking `gate` still stand.
    removals: AtomicU64,
    state: RwLock<State>,
    metadata: Mutex<BTreeMap<String, Metadata>>,
    /// New series refused by `max_active_series` since open.
    series_refused: AtomicU64,
    refusal_log: Throttle,
    /// Appends and checkpoints fail together when the disk is full: each logs once per
    /// episode, however often senders retry.
    append_failures: FailureEpisode,
    checkpoint_failures: FailureEpisode,
    /// What `remote_write` destinations have yet to receive (`outbox`).
    outbox: outbox::State,
}

/// How often the series limit may be logged: it is hit on every request while it lasts.
const SERIES_LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Tsdb {
    pub fn open(dir: &Path, opts: TsdbOptions) -> Result<Tsdb, StorageError> {
        std::fs::create_dir_all(dir)?;
        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let (db, chunk_cfs) = db::open(
            dir,
            |name| partition::parse_cf_name(name).is_some(),
            &cache,
            opts.write_buffer_bytes,
        )?;
        meta::check_schema(&db)?;
        let index = Index::load(&db)?;
        let max_id = index.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
        let next_series_id = meta::get_counter(&db, KEY_NEXT_SERIES_ID)?.max(max_id);
        let next_ooo_chunk_id = meta::get_counter(&db, KEY_NEXT_OOO_CHUNK_ID)?.max(1);
        let metadata = meta::load_metadata(&db)?;
        let outbox = outbox::State::load(&db)?;
        let open_chunks_due = Instant::now().checked_add(opts.open_chunk_interval);
        let inner = Inner {
            partitions: Partitions::new(
                chunk_cfs.iter().filter_map(|n| partition::parse_cf_name(n)),
                cache.clone(),
            ),
            db,
            cache,
            opts,
            checkpoint: Mutex::new(CheckpointState {
                wal_start: 0,
                next_ooo_chunk_id,
                open_chunks_due,
                merged_before: None,
            }),
            gate: RwLock::new(()),
            create: Mutex::new(next_series_id),
            series_locks: SeriesLocks::default(),
            next_wal_seq: AtomicU64::new(0),
            removals: AtomicU64::new(0),
            state: RwLock::new(State {
                index,
                head: Head::default(),
            }),
            metadata: Mutex::new(metadata),
            series_refused: AtomicU64::new(0),
            refusal_log: Throttle::new(SERIES_LIMIT_LOG_INTERVAL),
            append_failures: FailureEpisode::new("tsdb append"),
            checkpoint_failures: FailureEpisode::new("tsdb checkpoint"),
            outbox,
        };
        inner.restore_head()?;
        inner.replay_wal()?;
        // Histogram samples in their head bypass the WAL, so their time bounds come from the
        // head itself (a sealing persists those of the samples it seals).
        {
            let state = inner.state.read();
            for (id, min_t, max_t) in histstore::head_series(&inner.db)? {
                state.index.extend_time(id, min_t);
                state.index.extend_time(id, max_t);
            }
        }
        // Only after replay: series whose samples are all in the WAL have no time bounds
        // before it and would look expired.
        inner.apply_retention(now_ms())?;
        inner.evict_idle()?;
        let inner = Arc::new(inner);
        let worker = (!inner.opts.flush_interval.is_zero())
            .then(|| Worker::spawn(inner.clone()))
            .transpose()?;
        // The server logs the opening with how long it took: one line per event.
        debug!(dir = %dir.display(), series = inner.state.read().index.len(), "tsdb opened");
        Ok(Tsdb { inner, worker })
    }

    /// Validates then writes. Returns only after the samples are in RocksDB's WAL.
    /// AllOrNothing: if any sample is rejected, nothing is written (both written counts are 0
    /// and every rejection is reported), except that samples of new series refused by
    /// [`TsdbOptions::max_active_series`] do not hold back the others. BestEffort: valid samples are written, rejected ones
    /// reported. A repeat of an existing sample (same t, same value bits) counts as written.
    /// A label set that cannot be stored (empty, or an empty or NUL-containing name) fails
    /// the whole call with [`StorageError::Invalid`].
    pub fn append(
        &self,
        batch: &[SeriesBatch],
        mode: AppendMode,
    ) -> Result<AppendReport, StorageError> {
        self.append_batch(&EncodedBatch::from(batch), mode)
    }

    /// [`Tsdb::append`] of a batch whose label sets are already encoded: the write path of
    /// every wire format, which finds each series by those bytes.
    pub fn append_batch(
        &self,
        batch: &EncodedBatch,
        mode: AppendMode,
    ) -> Result<AppendReport, StorageError> {
        let inner = &self.inner;
        match inner.append(batch, mode) {
            // Invalid label sets are the sender's fault, not a failure of the store.
            Err(e @ StorageError::Invalid(_)) => Err(e),
            result => inner.append_failures.observe(result),
        }
    }

    /// The outbox `remote_write` forwards from (see [`Outbox`]).
    pub fn outbox(&self) -> Outbox {
        Outbox {
            inner: self.inner.clone(),
        }
    }

    /// Label sets of the series matching any of the matcher sets (all series when there are
    /// none) that have samples in [mint, maxt], sorted.
    pub fn series(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        self.inner.series(matcher_sets, mint, maxt)
    }

    /// Label names of the matching series (all series when there are no matcher sets) with
    /// samples in [mint, maxt], sorted.
    pub fn label_names(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.inner.label_names(matcher_sets, mint, maxt)
    }

    /// Values of label `name` on the matching series (all series when there are no matcher
    /// sets) with samples in [mint, maxt], sorted.
    pub fn label_values(
        &self,
        name: &str,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        self.inner.label_values(name, matcher_sets, mint, maxt)
    }

    /// Stores a metric family's metadata (only written when it changed).
    pub fn set_metadata(&self, metric_family: &str, md: Metadata) -> Result<(), StorageError> {
        let mut all = self.inner.metadata.lock();
        if all.get(metric_family) != Some(&md) {
            meta::put_metadata(&self.inner.db, metric_family, &md)?;
            all.insert(metric_family.to_owned(), md);
        }
        Ok(())
    }

    /// All metric families' metadata, sorted by name.
    pub fn metadata(&self) -> Result<Vec<(String, Metadata)>, StorageError> {
        Ok(self
            .inner
            .metadata
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// The figures of Prometheus's /api/v1/status/tsdb over the series in memory (those of
    /// the head window, as Prometheus's are over its head block): `min_time`/`max_time` are
    /// i64::MAX/i64::MIN when there is none, as in Prometheus; `chunk_count` is RocksDB's
    /// estimate of all stored chunks plus unpersisted head chunks.
    pub fn status(&self, top_n: usize) -> TsdbStatus {
        self.inner.status(top_n)
    }

    /// Memory RocksDB holds for the TSDB (the index and head in RAM are apart:
    /// [`Tsdb::num_series`]).
    pub fn memory(&self) -> crate::StoreMemory {
        db::memory(&self.inner.db, &self.inner.cache)
    }

    /// How many series memory holds (those of the head window); cheap, unlike
    /// [`Tsdb::status`].
    pub fn num_series(&self) -> u64 {
        self.inner.state.read().index.len() as u64
    }

    /// How many new series [`TsdbOptions::max_active_series`] refused since open (a series
    /// refused by several appends counts once per append).
    pub fn series_refused(&self) -> u64 {
        self.inner.series_refused.load(Ordering::Relaxed)
    }

    /// Checkpoints the head into chunks now (also done every `flush_interval`) and writes
    /// RocksDB's memtables out, leaving the data on disk in its compact form only (used at
    /// shutdown and before measuring disk use).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.inner.checkpoint(Pass::Final)?;
        let partitions = self
            .inner
            .partitions
            .all()
            .into_iter()
            .map(crate::tsdb::partition::cf_name);
        crate::db::flush_memtables(&self.inner.db, partitions)
    }

    /// Drops all series, samples and metadata.
    pub fn clear(&self) -> Result<(), StorageError> {
        self.inner.clear()
    }

    /// Stops the background work and checkpoints the head.
    pub fn close(mut self) -> Result<(), StorageError> {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        self.inner.checkpoint(Pass::Final)
    }
}

impl Drop for Tsdb {
    /// Stops the background thread without a final checkpoint: everything acknowledged is in
    /// the WAL and is replayed at the next open.
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

impl Worker {
    fn spawn(inner: Arc<Inner>) -> Result<Worker, StorageError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("tsdb-checkpoint".into())
            .spawn(move || loop {
                {
                    let mut stopped = flag.0.lock();
                    if !*stopped {
                        flag.1.wait_for(&mut stopped, inner.opts.flush_interval);
                    }
                    if *stopped {
                        break;
                    }
                }
                // A failed checkpoint keeps its data in the head and the WAL and is retried
                // next period (e.g. once a full disk has space again).
                let checkpoint = inner.checkpoint(Pass::Periodic);
                let _ = inner.checkpoint_failures.observe(checkpoint);
                if let Err(e) = inner.apply_retention(now_ms()) {
                    warn!(error = %e, "tsdb retention pass failed");
                }
                if let Err(e) = inner.evict_idle() {
                    warn!(error = %e, "tsdb head window pass failed");
                }
            })?;
        Ok(Worker { stop, handle })
    }

    fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if self.handle.join().is_err() {
            warn!("tsdb checkpoint thread panicked");
        }
    }
}

impl BatchWriter for Tsdb {
    fn write_batch(
        &self,
        batch: &EncodedBatch,
        mode: AppendMode,
    ) -> Result<AppendReport, StorageError> {
        self.append_batch(batch, mode)
    }

    fn write_metadata(&self, metric_family: &str, metadata: Metadata) -> Result<(), StorageError> {
        self.set_metadata(metric_family, metadata)
    }
}

/// A select reads the matching series' chunks as stored (compressed) and decodes the series
/// in order as the set is consumed; a large set is decoded on a thread of its own, a batch
/// ahead of the query evaluating it (`read::Selection`).
impl Querier for Tsdb {
    fn select(&self, matchers: &[Matcher], hints: &SelectHints) -> Result<SeriesSet, StorageError> {
        Ok(Box::new(self.inner.select(
            matchers,
            hints.start,
            hints.end,
            hints.limit,
        )?))
    }
}

impl ExemplarQuerier for Tsdb {
    fn select_exemplars(
        &self,
        start: i64,
        end: i64,
        matcher_sets: &[Vec<Matcher>],
    ) -> Result<Vec<ExemplarSeries>, StorageError> {
        self.inner.select_exemplars(start, end, matcher_sets)
    }
}

impl LabelQuerier for Tsdb {
    fn series(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        Tsdb::series(self, matcher_sets, mint, maxt)
    }

    fn label_names(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        Tsdb::label_names(self, matcher_sets, mint, maxt)
    }

    fn label_values(
        &self,
        name: &str,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        Tsdb::label_values(self, name, matcher_sets, mint, maxt)
    }

    fn metadata(&self) -> Result<Vec<(String, Metadata)>, StorageError> {
        Tsdb::metadata(self)
    }

    fn status(&self, top_n: usize) -> TsdbStatus {
        Tsdb::status(self, top_n)
    }
}

fn corrupt(e: crate::tsdb::chunk::CorruptChunk) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

impl Inner {
    fn limits(&self, now: i64) -> Limits {
        Limits {
            cutoff: now.saturating_sub(duration_ms(self.opts.retention)),
            ooo_window_ms: duration_ms(self.opts.out_of_order_window),
        }
    }

    fn write_options(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.opts.wal_fsync);
        wo
    }

    /// The value bits stored at `t` for a series, in the head or in a persisted chunk.
    fn stored_value(&self, state: &State, id: u64, t: i64) -> Result<Option<u64>, StorageError> {
        if let Some(bits) = state.head.value_at(id, t).map_err(corrupt)? {
            return Ok(Some(bits));
        }
        let start = partition_start(t);
        if !self.partitions.contains(start) {
            return Ok(None);
        }
        let Some(cf) = self.db.cf_handle(&partition::cf_name(start)) else {
            return Ok(None);
        };
        let mut it = self.db.raw_iterator_cf(&cf);
        let mut found = None;
        partition::scan_chunks(&mut it, id, t, t, |_, value| {
            let chunk = StoredChunk::parse(value).map_err(corrupt)?;
            if chunk.max_t() >= t {
                for s in chunk.iter() {
                    let s = s.map_err(corrupt)?;
                    if s.t == t {
                        found = Some(s.v.to_bits());
                        return Ok(ControlFlow::Break(()));
                    }
                    if s.t > t {
                        break;
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(found)
    }

    /// Puts an accepted sample into the head: in order when newer than the series' last.
    fn append(&self, batch: &EncodedBatch, mode: AppendMode) -> Result<AppendReport, StorageError> {
        let limits = self.limits(now_ms());

        struct Pending<'b> {
            series: EncodedSeries<'b>,
            /// Set for a series in memory or in the cold index.
            id: Option<u64>,
            /// For a series in memory: its slots in the index and (if it has one) the head,
            /// looked up once, stable while `gate` is held.
            slots: Option<(u32, Option<u32>)>,
            /// For a series not in memory: its label set as stored, and what the cold index
            /// holds of it (nothing for a new series).
            absent: Option<(StoredLabels, Option<ColdSeries>)>,
            /// A new series beyond `max_active_series`: all its samples are rejected.
            over_limit: bool,
            check: SeriesCheck,
            accepted_histograms: Vec<HistogramSample>,
            /// Of every entry of the series in the batch, in batch order.
            exemplars: Vec<&'b Exemplar>,
        }

        // The ids of series in memory, looked up before any lock: finding a label set is the
        // costliest step of a known series. Ids are never reused, so an id found here is still
        // this label set's once `gate` is taken unless a series left memory meanwhile.
        let removals = self.removals.load(Ordering::Acquire);
        // An append that adds series to memory (new, or back from the cold index) holds
        // `create` throughout, so that no two add one label set twice; the others only share
        // `gate` and hold their own series.
        let mut creating = false;
        let found: Vec<Option<(u64, u32)>> = {
            let state = self.state.read();
            batch
                .iter()
                .enumerate()
                .map(|(i, sb)| {
                    let found = match batch.ref_hint(i) {
                        RefHint::Known(r) if state.index.holds(r.index_slot, r.id) => {
                            debug_assert!(state
                                .index
                                .labels(r.id)
                                .is_some_and(|l| l.is(sb.label_bytes())));
                            Some((r.id, r.index_slot))
                        }
                        _ => state.index.lookup(sb.label_bytes()),
                    };
                    creating |= found.is_none() && sb.sample_count() > 0;
                    found
                })
                .collect()
        };
        let (mut create, _gate, ids) = loop {
            let create = creating.then(|| self.create.lock());
            let gate = self.gate.read();
            // Confirmed under `gate`: no series leaves memory while it is held, and none joins
            // but under `create`. Usually none left since the lookup, and then the ids found
            // stand as they are and only label sets not found are looked up again (another
            // append may have added them).
            let unchanged = self.removals.load(Ordering::Relaxed) == removals;
            if unchanged && create.is_none() {
                break (create, gate, found);
            }
            let mut adds = false;
            let ids: Vec<Option<(u64, u32)>> = {
                let state = self.state.read();
                batch
                    .iter()
                    .zip(&found)
                    .map(|(sb, found)| {
                        // Slots are reused once a series leaves memory: after a removal, every
                        // label set is looked up again.
                        let id = match *found {
                            _ if sb.sample_count() == 0 && sb.exemplars.is_empty() => return None,
                            Some(found) if unchanged => Some(found),
                            _ => state.index.lookup(sb.label_bytes()),
                        };
                        // Exemplars alone add no series.
                        adds |= id.is_none() && sb.sample_count() > 0;
                        id
                    })
                    .collect()
            };
            if create.is_none() && adds {
                // A series left memory since the lookup. `create` comes before `gate`, so
                // let go of `gate` and start over as an append that adds series.
                creating = true;
                continue;
            }
            break (create, gate, ids);
        };
        let series = self
            .series_locks
            .lock(ids.iter().flatten().map(|&(id, _)| id).collect());
        // Whether a series in memory appears more than once in the batch: if not, their
        // entries need no lookup table.
        let repeats = series.len() < ids.iter().flatten().count();
        // Sized up front: entries are large, and a batch has thousands.
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(batch.len());
        let mut report = AppendReport::default();
        let mut refused_series = 0u64;
        // Entries to give a reference (none held, or out of date), and their pending entry.
        let mut wanted: Vec<(usize, usize)> = Vec::new();
        {
            let state = self.state.read();
            // The index only grows under `create`, held here whenever this append adds series.
            let mut room = match self.opts.max_active_series {
                0 => usize::MAX,
                max => max.saturating_sub(state.index.len()),
            };
            // A label set repeated in the batch shares one entry. Known series are keyed by
            // id, so their label set is hashed once (by the index lookup), not twice.
            #[derive(PartialEq, Eq, Hash)]
            enum Slot<'b> {
                Known(u64),
                New(&'b [u8]),
            }
            let mut slot: HashMap<Slot<'_>, usize> = HashMap::default();
            // Entries with exemplars only, of series not in memory: they go to the series
            // another entry of the batch adds, if one does (looked up once all are seen).
            let mut unplaced = Vec::new();
            for (entry, (sb, id)) in batch.iter().zip(ids).enumerate() {
                if sb.sample_count() == 0 && (sb.exemplars.is_empty() || id.is_none()) {
                    if id.is_none() && !sb.exemplars.is_empty() {
                        unplaced.push(sb);
                    }
                    continue;
                }
                let key = id.map_or(Slot::New(sb.label_bytes()), |(id, _)| Slot::Known(id));
                let keyed = id.is_none() || repeats;
                let i = match keyed.then(|| slot.get(&key)).flatten() {
                    Some(&i) => i,
                    None => {
                        let (id, slots, absent, last) = match id {
                            Some((id, index_slot)) => {
                                let hint = match batch.ref_hint(entry) {
                                    RefHint::Known(r) => r.head_slot,
                                    _ => state.index.head_hint(index_slot),
                                };
                                let head_slot = if state.head.holds(hint, id) {
                                    Some(hint)
                                } else {
                                    state.head.slot(id)
                                };
                                let last = head_slot.and_then(|s| state.head.last_at(s));
                                (Some(id), Some((index_slot, head_slot)), None, last)
                            }
                            // Not in memory: new, or cold and coming back as it was. Only
                            // here are label sets checked: those in memory passed already.
                            None => {
                                index::validate_labels(sb.label_bytes())?;
                                let stored = StoredLabels::from_encoded(sb.label_bytes());
                                let cold = cold::lookup(&self.db, &stored)?;
                                let last = cold.and_then(|c| c.last);
                                (cold.map(|c| c.id), None, Some((stored, cold)), last)
                            }
                        };
                        let over_limit = absent.is_some() && room == 0;
                        if over_limit {
                            refused_series += 1;
                        } else if absent.is_some() {
                            room -= 1;
                        }
                        pending.push(Pending {
                            series: sb,
                            id,
                            slots,
                            absent,
                            over_limit,
                            check: SeriesCheck::new(last, sb.samples.len()),
                            accepted_histograms: Vec::new(),
                            exemplars: Vec::new(),
                        });
                        if keyed {
                            slot.insert(key, pending.len() - 1);
                        }
                        pending.len() - 1
                    }
                };
                let p = &mut pending[i];
                let current = match (p.id, p.slots) {
                    (Some(id), Some((index_slot, Some(head_slot)))) => Some(SeriesRef {
                        id,
                        index_slot,
                        head_slot,
                    }),
                    _ => None,
                };
                match batch.ref_hint(entry) {
                    RefHint::Unwanted => {}
                    RefHint::Known(r) if Some(r) == current => {}
                    _ => wanted.push((entry, i)),
                }
                p.exemplars.extend(sb.exemplars);
                if p.over_limit {
                    let times = sb.samples.iter().map(|s| s.t);
                    for t in times.chain(sb.histograms.iter().map(|h| h.t)) {
                        report.rejected.push(Rejection {
                            labels: sb.labels(),
                            t,
                            reason: crate::RejectReason::SeriesLimit,
                        });
                    }
                    continue;
                }
                for s in sb.samples {
                    let id = p.id;
                    let stored = || id.map_or(Ok(None), |id| self.stored_value(&state, id, s.t));
                    match p.check.check(limits, *s, stored)? {
                        Verdict::InOrder | Verdict::OutOfOrder => report.samples_written += 1,
                        Verdict::Noop => report.samples_written += 1,
                        Verdict::Reject(reason) => report.rejected.push(Rejection {
                            labels: sb.labels(),
                            t: s.t,
                            reason,
                        }),
                    }
                }
                // Looked up once for all of the series' histograms, and not for a series
                // without any (the float path).
                let max_t = sb
                    .histograms
                    .first()
                    .and(p.id)
                    .and_then(|id| state.index.get(id))
                    .map(|s| s.max_t());
                for h in sb.histograms {
                    match self.check_histogram(p.id, max_t, limits, h)? {
                        Verdict::InOrder | Verdict::OutOfOrder => {
                            p.accepted_histograms.push(h.clone());
                            report.histograms_written += 1;
                        }
                        Verdict::Noop => report.histograms_written += 1,
                        Verdict::Reject(reason) => report.rejected.push(Rejection {
                            labels: sb.labels(),
                            t: h.t,
                            reason,
                        }),
                    }
                }
            }
            for sb in unplaced {
                match slot.get(&Slot::New(sb.label_bytes())) {
                    Some(&i) => pending[i].exemplars.extend(sb.exemplars),
                    // Prometheus refuses an exemplar of a series it does not hold.
                    None => report.exemplars_invalid += sb.exemplars.len(),
                }
            }
        }
        if refused_series > 0 {
            self.note_refused(refused_series);
        }
        // The series limit is no fault of the samples: the others are written even in
        // AllOrNothing mode, so that existing series keep flowing while it is reached.
        let rolled_back = report
            .rejected
            .iter()
            .any(|r| r.reason != crate::RejectReason::SeriesLimit);
        if mode == AppendMode::AllOrNothing && rolled_back {
            report.samples_written = 0;
            report.histograms_written = 0;
            return Ok(report);
        }

        let mut wb = WriteBatch::default();
        // Only read when series are added, which happens under `create` only.
        let next_series_id = create.as_deref().copied().unwrap_or_default();
        let mut new_series: Vec<(u64, StoredLabels)> = Vec::new();
        let mut revived: Vec<(StoredLabels, ColdSeries)> = Vec::new();
        let mut groups: Vec<(u64, Vec<Sample>)> = Vec::with_capacity(pending.len());
        // Beside `groups` (which the WAL record is encoded from): each group's slots.
        let mut group_slots: Vec<Option<(u32, Option<u32>)>> = Vec::with_capacity(pending.len());
        let mut histogram_times: Vec<(u64, i64)> = Vec::new();
        let mut exemplar_scanner = None;
        let mut exemplars_stored = false;
        // What this append stores, for the destinations to forward.
        let mut outgoing = self.outbox.enabled().then(EncodedBatch::new);
        // The id each pending entry was written to, kept only when some entry wants it.
        let mut written: Vec<Option<u64>> =
            vec![None; if wanted.is_empty() { 0 } else { pending.len() }];
        for (pi, p) in pending.into_iter().enumerate() {
            let adds_samples = !p.check.accepted().is_empty() || !p.accepted_histograms.is_empty();
            if !adds_samples {
                // Exemplars of a series in memory are stored without samples; a series out of
                // memory (new, cold or over the limit) is not added for exemplars alone.
                if p.absent.is_some() || p.over_limit || p.exemplars.is_empty() {
                    report.exemplars_invalid += p.exemplars.len();
                    continue;
                }
            }
            let id = match (p.id, p.absent) {
                (Some(id), None) => id,
                (Some(id), Some((labels, Some(cold)))) => {
                    index::put_series(&self.db, &mut wb, id, &labels)?;
                    index::put_times(&self.db, &mut wb, id, cold.min_t, cold.max_t)?;
                    cold::forget(&self.db, &mut wb, &labels)?;
                    revived.push((labels, cold));
                    id
                }
                (_, absent) => {
                    let id = next_series_id + new_series.len() as u64;
                    let labels = absent.map_or_else(
                        || StoredLabels::from_encoded(p.series.label_bytes()),
                        |a| a.0,
                    );
                    index::put_series(&self.db, &mut wb, id, &labels)?;
                    new_series.push((id, labels));
                    id
                }
            };
            if let Some(w) = written.get_mut(pi) {
                *w = Some(id);
            }
            for h in &p.accepted_histograms {
                // Every day with data has a partition: the cold index is kept per partition.
                self.partitions.ensure(&self.db, partition_start(h.t))?;
                histstore::put(&self.db, &mut wb, id, h)?;
                histogram_times.push((id, h.t));
            }
            let mut taken = Vec::new();
            if !p.exemplars.is_empty() {
                let scanner = match &mut exemplar_scanner {
                    Some(s) => s,
                    None => exemplar_scanner.insert(exemplars::Scanner::new(&self.db)?),
                };
                taken =
                    self.add_exemplars(scanner, &mut wb, id, &p.exemplars, limits, &mut report)?;
                exemplars_stored |= !taken.is_empty();
            }
            if let Some(out) = &mut outgoing {
                let (samples, histograms) = (p.check.accepted(), &p.accepted_histograms);
                if !samples.is_empty() || !histograms.is_empty() || !taken.is_empty() {
                    out.push_raw(p.series.label_bytes(), samples, histograms, &taken);
                }
            }
            if !p.check.accepted().is_empty() {
                groups.push((id, p.check.into_accepted()));
                group_slots.push(p.slots);
            }
        }
        drop(exemplar_scanner);
        if groups.is_empty() && histogram_times.is_empty() && !exemplars_stored {
            return Ok(report);
        }
        debug_assert!(create.is_some() || new_series.is_empty());
        let next_series_id = next_series_id + new_series.len() as u64;
        if !new_series.is_empty() {
            meta::put_counter(&self.db, &mut wb, KEY_NEXT_SERIES_ID, next_series_id)?;
        }
        if !groups.is_empty() {
            let record = wal::encode(&groups);
            // Taken while this append holds its series: the records of one series are in the
            // order their samples were judged, which replay repeats. A failed write leaves a
            // gap, which nothing minds.
            let seq = self.next_wal_seq.fetch_add(1, Ordering::Relaxed);
            wal::put(&self.db, &mut wb, seq, &record)?;
        }
        // Taken while the series are held, like the WAL's sequence; released after the write.
        let _outbox_ticket = match outgoing.filter(|o| !o.is_empty()) {
            Some(out) => Some(self.outbox.put(&self.db, &mut wb, &out)?),
            None => None,
        };
        self.db.write_opt(wb, &self.write_options())?;
        if let Some(next) = create.as_deref_mut() {
            *next = next_series_id;
        }

        // Only series joining memory (new, revived, or given a head) change the index's and
        // the head's tables, under the exclusive lock; samples go in under the shared one,
        // each series under its own lock, so that appends of other series, and reads, go on
        // meanwhile.
        let structural = !new_series.is_empty()
            || !revived.is_empty()
            || group_slots
                .iter()
                .any(|slots| !matches!(slots, Some((_, Some(_)))));
        let state = if structural {
            let mut state = self.state.write();
            for (id, labels) in new_series {
                state.index.insert(id, labels);
            }
            for (labels, cold) in revived {
                state.index.insert(cold.id, labels);
                state.index.extend_time(cold.id, cold.min_t);
                state.index.extend_time(cold.id, cold.max_t);
                if let Some(last) = cold.last {
                    state.head.load(cold.id, last, None);
                }
            }
            for ((id, _), slots) in groups.iter().zip(&mut group_slots) {
                let index_slot = match *slots {
                    Some((index_slot, _)) => index_slot,
                    None => state.index.slot(*id).expect("added to the index above"),
                };
                let head_slot = match *slots {
                    Some((_, Some(head_slot))) => head_slot,
                    _ => match state.head.slot(*id) {
                        Some(head_slot) => head_slot,
                        None => state.head.add(*id),
                    },
                };
                *slots = Some((index_slot, Some(head_slot)));
            }
            RwLockWriteGuard::downgrade(state)
        } else {
            self.state.read()
        };
        {
            // A pass that does nothing but read each series' open chunk end before the
            // samples go in: short enough that the processor has many of these cache misses
            // in flight at once, where the appends below, long per series, would wait for
            // each. Done earlier, before the write above, the lines were evicted again by the
            // time they were appended to.
            let mut warmed = 0u8;
            for &(_, head_slot) in group_slots.iter().flatten() {
                if let Some(slot) = head_slot {
                    warmed ^= state.head.warm(slot);
                }
            }
            std::hint::black_box(warmed);
        }
        let mut newly_dirty = Vec::new();
        let mut newest = i64::MIN;
        for ((id, samples), slots) in groups.into_iter().zip(group_slots) {
            let Some((index_slot, Some(head_slot))) = slots else {
                unreachable!("every group has both slots once the tables are updated");
            };
            state.index.set_head_hint(index_slot, head_slot);
            if state.head.apply_at(head_slot, &samples) {
                newly_dirty.push(id);
            }
            let (min, max) = samples.iter().fold((i64::MAX, i64::MIN), |(lo, hi), s| {
                (lo.min(s.t), hi.max(s.t))
            });
            state.index.extend_time_at(index_slot, min, max);
            newest = newest.max(max);
        }
        state.head.list_dirty(&newly_dirty);
        state.index.note_newest(newest);
        for (entry, pi) in wanted {
            let Some(id) = written[pi] else { continue };
            if let (Some(index_slot), Some(head_slot)) = (state.index.slot(id), state.head.slot(id))
            {
                report.series_refs.push((
                    entry,
                    SeriesRef {
                        id,
                        index_slot,
                        head_slot,
                    },
                ));
            }
        }
        for (id, t) in histogram_times {
            state.index.extend_time(id, t);
        }
        Ok(report)
    }

    /// Judges a series' exemplars in order against its newest (stored, then each one taken)
    /// and adds those taken to `wb`, trimming the series to its bound. Returns those taken.
    fn add_exemplars(
        &self,
        scanner: &mut exemplars::Scanner<'_>,
        wb: &mut WriteBatch,
        id: u64,
        candidates: &[&Exemplar],
        limits: Limits,
        report: &mut AppendReport,
    ) -> Result<Vec<Exemplar>, StorageError> {
        let keep = self.opts.max_exemplars_per_series;
        if keep == 0 {
            report.exemplars_invalid += candidates.len();
            return Ok(Vec::new());
        }
        let newest = scanner.newest(id)?;
        let mut taken: Vec<Exemplar> = Vec::new();
        for &e in candidates {
            if e.t < limits.cutoff {
                // Retention would delete it at its next pass.
                report.exemplars_invalid += 1;
                continue;
            }
            match exemplars::judge(taken.last().or(newest.as_ref()), e) {
                exemplars::Verdict::Store => taken.push(e.clone()),
                exemplars::Verdict::Duplicate => report.exemplars_written += 1,
                exemplars::Verdict::OutOfOrder => report.exemplars_out_of_order += 1,
                exemplars::Verdict::TooLong => report.exemplars_invalid += 1,
            }
        }
        if taken.is_empty() {
            return Ok(taken);
        }
        report.exemplars_written += taken.len();
        scanner.put(&self.db, wb, id, &taken, keep)?;
        Ok(taken)
    }

    fn note_refused(&self, series: u64) {
        let total = self.series_refused.fetch_add(series, Ordering::Relaxed) + series;
        if self.refusal_log.allow(Instant::now()) {
            warn!(
                limit = self.opts.max_active_series,
                refused_series_total = total,
                "new series refused: the TSDB holds limits.max_active_series series"
            );
        }
    }

    /// Histogram samples follow the float rules on retention and duplicates: the same
    /// timestamp with a different histogram is a duplicate, the same one a no-op.
    /// `max_t` is the series' newest sample time when it is in memory: nothing is stored
    /// after it, so a newer sample, the usual case, needs no lookup.
    fn check_histogram(
        &self,
        id: Option<u64>,
        max_t: Option<i64>,
        limits: Limits,
        h: &HistogramSample,
    ) -> Result<Verdict, StorageError> {
        if h.t < limits.cutoff || partition::clamp(h.t) != h.t {
            return Ok(Verdict::Reject(crate::RejectReason::TooOld));
        }
        let Some(id) = id.filter(|_| max_t.is_none_or(|m| h.t <= m)) else {
            return Ok(Verdict::InOrder);
        };
        Ok(match histstore::get(&self.db, &self.partitions, id, h.t)? {
            Some(old) if old.same_as(&h.h) => Verdict::Noop,
            Some(_) => Verdict::Reject(crate::RejectReason::DuplicateTimestamp),
            None => Verdict::InOrder,
        })
    }

    fn clear(&self) -> Result<(), StorageError> {
        let mut cp = self.checkpoint.lock();
        let _gate = self.gate.write();
        let mut state = self.state.write();
        for start in self.partitions.all() {
            self.partitions.drop_partition(&self.db, start)?;
        }
        for cf in [
            CF_SERIES,
            CF_SERIES_TIMES,
            CF_WAL,
            CF_HISTOGRAMS,
            CF_EXEMPLARS,
            CF_COLD_LABELS,
            CF_COLD_INDEX,
        ] {
            db::clear_cf(&self.db, cf)?;
        }
        meta::clear_metadata(&self.db)?;
        *state = State::default();
        self.removals.fetch_add(1, Ordering::Release);
        self.metadata.lock().clear();
        cp.wal_start = self.next_wal_seq.load(Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
