//! The log store: a durable append log in RocksDB takes records before they are acknowledged,
//! a background indexer moves them in batches into tantivy indexes partitioned by UTC day, and
//! queries read the indexes. Owns durability, indexing, retention and the read API for logs;
//! knows nothing of wire formats or LogQL, and shares nothing with the TSDB.
//!
//! Exactly-once indexing: each partition's tantivy commit carries, as its payload, the sequence
//! number of the last record of the batch it commits. On open, records still in the append log
//! are indexed again, skipping those a partition already holds (sequence ≤ its payload); the
//! log is truncated only after every partition a batch touched has committed.

mod append_log;
mod line_terms;
mod partition;
mod record;

pub use record::LogRecord;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use tantivy::IndexWriter;

use crate::episode::FailureEpisode;
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::StorageError;
use append_log::AppendLog;
use partition::{stream_key, Partition, Selection, DAY_NS};

/// The hits of a partition a scan reads in its first round, and the most in any round.
const SCAN_ROUND_MIN: usize = 1024;
const SCAN_ROUND_MAX: usize = 64 * 1024;

/// How long the indexer keeps adding batches before it commits them: under load, lines become
/// searchable within about this long of their ack (plus the commit), and the segments cut are
/// few enough that merging them does not eat the indexing time.
const COMMIT_WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Partitions (days) entirely older than this are deleted.
    pub retention: Duration,
    /// fsync the append log on every write (survive power loss, not only a crash).
    pub wal_fsync: bool,
    /// How long appended records may wait before the indexer makes them searchable.
    pub index_interval: Duration,
    /// Heap of a partition's index writer, shared by its two indexing threads (tantivy needs
    /// at least 15 MB per thread).
    pub index_writer_bytes: usize,
    /// Records read from the append log per index batch.
    pub index_batch_records: usize,
    /// Records appended but not yet indexed at which appends wait for the indexer
    /// (backpressure on senders).
    pub max_unindexed_records: usize,
    /// How long an append waits for a lagging indexer before it is refused (retryably).
    pub backlog_wait: Duration,
    /// The append log's memtable size, and so roughly the most WAL bytes kept for records
    /// the index already has.
    pub append_buffer_bytes: usize,
    /// Dead SST bytes left in the append log after truncation above which the truncated
    /// range is compacted away.
    pub append_compact_bytes: u64,
    /// Capacity of the append log's block cache.
    pub append_block_cache_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            retention: Duration::from_secs(15 * 86_400),
            wal_fsync: false,
            index_interval: Duration::from_millis(200),
            index_writer_bytes: 64 << 20,
            index_batch_records: 100_000,
            max_unindexed_records: 500_000,
            backlog_wait: Duration::from_secs(10),
            append_buffer_bytes: 16 << 20,
            append_compact_bytes: 32 << 20,
            append_block_cache_bytes: 8 << 20,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// What to read: streams matching all `matchers`, records with `start_ns <= ts < end_ns`
/// whose line may contain every string of `contains` (the index narrows by the strings'
/// tokens; the caller checks the lines).
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub matchers: Vec<Matcher>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub contains: Vec<String>,
}

/// The time buckets a counting scan counts records in: `(end - width_ns, end]` for each `end`
/// on the grid `origin_ns + k·width_ns` (any integer `k`). A query's windows and steps lie on
/// such a grid, so counts per bucket answer them exactly without a timestamp per record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub origin_ns: i64,
    /// At least 1; 1 counts per timestamp.
    pub width_ns: i64,
}

impl Buckets {
    /// One bucket ending at `end_ns` for every timestamp in `(end_ns - width_ns, end_ns]`.
    pub fn ending_at(end_ns: i64, width_ns: i64) -> Buckets {
        Buckets {
            origin_ns: end_ns,
            width_ns: width_ns.max(1),
        }
    }

    /// The end of the bucket holding `ts_ns`: the first grid point at or after it.
    pub fn end_of(&self, ts_ns: i64) -> i64 {
        let w = self.width_ns.max(1);
        let d = ts_ns.saturating_sub(self.origin_ns);
        let k = d.div_euclid(w) + i64::from(d.rem_euclid(w) != 0);
        self.origin_ns.saturating_add(k.saturating_mul(w))
    }

    /// Whether `ts_ns` lies in the bucket ending at `end_ns`.
    fn holds(&self, end_ns: i64, ts_ns: i64) -> bool {
        ts_ns <= end_ns && ts_ns > end_ns.saturating_sub(self.width_ns.max(1))
    }
}

/// Records of one stream in one bucket: the bucket's end, how many, and their line bytes (0
/// when the scan does not measure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketCount {
    pub end_ns: i64,
    pub records: u64,
    pub bytes: u64,
}

/// What [`LogStore::scan_streams`] calls: a stream, metadata, and its records' counts per
/// bucket, unordered (a bucket may come more than once).
pub type StreamVisit<'a> =
    dyn FnMut(&Labels, &[(String, String)], &[BucketCount]) -> ControlFlow<()> + 'a;

/// What [`LogStore::scan_stream_bytes`] calls: a stream and its records' counts and line bytes
/// per bucket, unordered (a bucket may come more than once).
pub type StreamBytesVisit<'a> = dyn FnMut(&Labels, &[BucketCount]) -> ControlFlow<()> + 'a;

/// A stream's documents in a partition: alive, and deleted but still on disk (until a merge
/// rewrites their segment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDocs {
    pub labels: Labels,
    pub docs: u64,
    pub deleted: u64,
}

/// A partition's disk use and documents ([`LogReader::usage`]), for listings that report
/// sizes (Elasticsearch's `_cat/indices`, `_nodes/stats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionUsage {
    pub day: i64,
    /// Bytes of the partition's files on disk.
    pub disk_bytes: u64,
    /// Documents of every stream of the partition, alive and deleted: what `disk_bytes` holds.
    pub docs: u64,
    /// The streams selected, with documents alive or deleted.
    pub streams: Vec<StreamDocs>,
}

/// The records of one outbox record of the log store ([`LogStore::outbox`]), in append order.
pub fn outbox_records(body: &[u8]) -> Result<Vec<LogRecord>, StorageError> {
    crate::outbox::parts(body)?
        .into_iter()
        .map(|p| {
            LogRecord::decode(p).ok_or_else(|| StorageError::Corrupt("outbox log record".into()))
        })
        .collect()
}

impl crate::outbox::OutboxHost for Inner {
    fn outbox_db(&self) -> &crate::db::Db {
        self.log.db()
    }

    fn outbox_state(&self) -> &crate::outbox::OutboxState {
        self.log.outbox_state()
    }
}

pub struct LogStore {
    inner: Arc<Inner>,
    indexer: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    index_dir: PathBuf,
    log: AppendLog,
    opts: LogOptions,
    partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    indexer: Mutex<IndexerState>,
    /// The indexer's cursor as of its last commit: appends wait on it when indexing is
    /// [`LogOptions::max_unindexed_records`] behind.
    progress: Mutex<u64>,
    progressed: Condvar,
    /// Signalled only to stop the indexer early; it otherwise wakes every `index_interval`.
    wake: Condvar,
    wake_lock: Mutex<()>,
    stop: AtomicBool,
    /// Both fail for as long as the disk is full: each logs once per episode.
    append_failures: FailureEpisode,
    indexer_failures: FailureEpisode,
}

struct IndexerState {
    /// The next sequence number to read from the append log.
    cursor: u64,
    /// Per partition day: the last sequence number committed there.
    indexed_through: HashMap<i64, u64>,
    writers: HashMap<i64, IndexWriter>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl LogStore {
    /// Opens (or creates) the store under `dir`, indexes whatever the append log still holds,
    /// and starts the background indexer.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogStore, StorageError> {
        let index_dir = dir.join("index");
        std::fs::create_dir_all(&index_dir)?;
        let mut partitions = BTreeMap::new();
        let mut indexed_through = HashMap::new();
        for entry in std::fs::read_dir(&index_dir)? {
            let entry = entry?;
            let Some(day) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let p = Partition::open(&entry.path(), day)?;
            indexed_through.insert(day, p.indexed_through()?);
            partitions.insert(day, Arc::new(p));
        }
        let max_indexed = indexed_through.values().copied().max().unwrap_or(0);
        let log = AppendLog::open(&dir.join("log"), &opts, max_indexed + 1)?;
        // An empty log: the next record appended is the first to index.
        let cursor = log.first_seq()?.unwrap_or_else(|| log.next_seq());
        let inner = Arc::new(Inner {
            index_dir,
            log,
            opts,
            partitions: RwLock::new(partitions),
            progress: Mutex::new(cursor),
            progressed: Condvar::new(),
            indexer: Mutex::new(IndexerState {
                cursor,
                indexed_through,
                writers: HashMap::new(),
            }),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            stop: AtomicBool::new(false),
            append_failures: FailureEpisode::new("log store append"),
            indexer_failures: FailureEpisode::new("log indexer"),
        });
        let replayed = inner.index_pending()?;
        // Also when 0: the line says the start-up replay is over (tests wait for it).
        tracing::info!(
            records = replayed,
            "log store: indexed records left in the append log"
        );
        inner.apply_retention()?;
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("log-indexer".into())
            .spawn(move || worker.run())?;
        Ok(LogStore {
            inner,
            indexer: Mutex::new(Some(handle)),
        })
    }

    /// Appends records durably: on return they are in the append log's WAL and will be
    /// indexed (also after a crash).
    pub fn append(&self, records: &[LogRecord]) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.inner.stop.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let inner = &self.inner;
        inner.wait_for_indexer()?;
        inner.append_failures.observe(inner.log.append(records))?;
        Ok(())
    }

    /// Memory RocksDB holds for the append log (the tantivy index writers are apart:
    /// [`LogOptions::index_writer_bytes`] each).
    pub fn memory(&self) -> crate::StoreMemory {
        self.inner.log.memory()
    }

    /// The records waiting to be forwarded (each append's records, in append order, while a
    /// destination is registered); a record's body is read by [`outbox_records`].
    pub fn outbox(&self) -> crate::OutboxLog {
        crate::OutboxLog::new(self.inner.clone())
    }

    /// Indexes everything appended so far, now.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.inner.index_pending().map(drop)
    }

    /// Streams matching all `matchers` present in partitions overlapping [start_ns, end_ns).
    pub fn streams(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let mut out: Vec<Labels> = Vec::new();
        for p in self.inner.partitions_in(start_ns, end_ns) {
            out.extend(
                p.streams()?
                    .into_iter()
                    .filter(|labels| matches_all(labels, matchers)),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Calls `f` with each selected record in time order (`direction`) until it breaks.
    pub fn scan(
        &self,
        q: &LogQuery,
        direction: Direction,
        f: &mut dyn FnMut(LogRecord) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let mut parts = self.inner.partitions_in(q.start_ns, q.end_ns);
        if direction == Direction::Backward {
            parts.reverse();
        }
        for p in parts {
            // Rounds of the next `k` hits after the last one read, `k` doubling up to
            // `SCAN_ROUND_MAX`: a query that stops after its limit costs one pass and `limit`
            // hits of memory, one that reads everything a pass per round, and no query holds
            // more than a round of hits whatever the day's size.
            let loader = p.loader()?;
            let mut after = None;
            let mut k = SCAN_ROUND_MIN;
            loop {
                let hits = next_hits(&p, &loader, q, direction, k, after)?;
                let exhausted = hits.len() < k;
                for (ts, addr) in hits {
                    if f(p.load(&loader, ts, addr)?).is_break() {
                        return Ok(());
                    }
                    after = Some((ts, addr));
                }
                if exhausted {
                    break;
                }
                k = (k * 2).min(SCAN_ROUND_MAX);
            }
        }
        Ok(())
    }

    /// For a caller that needs no lines (counting): calls `f`, partition by partition in time
    /// order, with each stream and metadata and the counts per bucket of the selected records
    /// with both. Selects by streams and time only (`q.contains` needs lines); reads
    /// timestamps and streams from columns, the doc store only for records with metadata.
    /// More than `max_records` selected records fail with [`StorageError::TooManyRecords`]
    /// while they are being counted.
    pub fn scan_streams(
        &self,
        q: &LogQuery,
        buckets: Buckets,
        max_records: usize,
        f: &mut StreamVisit<'_>,
    ) -> Result<(), StorageError> {
        let mut left = max_records;
        for p in self.inner.partitions_in(q.start_ns, q.end_ns) {
            let groups = grouped(&p, q, true, false, buckets, left).map_err(|e| match e {
                StorageError::TooManyRecords { .. } => {
                    StorageError::TooManyRecords { limit: max_records }
                }
                e => e,
            })?;
            let counted: u64 = groups.iter().flat_map(|g| &g.hits).map(|h| h.records).sum();
            left = left.saturating_sub(usize::try_from(counted).unwrap_or(usize::MAX));
            for g in groups {
                if f(&g.labels, &g.metadata, &g.hits).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// For a caller that measures (volumes, index statistics): calls `f`, partition by
    /// partition in time order, with each stream and the counts and line bytes per bucket of
    /// its selected records. Selects by streams and time only; reads columns, not lines
    /// (except in partitions written before lengths had a column).
    pub fn scan_stream_bytes(
        &self,
        q: &LogQuery,
        buckets: Buckets,
        f: &mut StreamBytesVisit<'_>,
    ) -> Result<(), StorageError> {
        for p in self.inner.partitions_in(q.start_ns, q.end_ns) {
            for g in grouped(&p, q, false, true, buckets, usize::MAX)? {
                if f(&g.labels, &g.hits).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Each partition's disk bytes and documents, with the streams matching all `matchers`.
    pub fn usage(&self, matchers: &[Matcher]) -> Result<Vec<PartitionUsage>, StorageError> {
        let parts: Vec<Arc<Partition>> = self.inner.partitions.read().values().cloned().collect();
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let streams = p.stream_docs()?;
            out.push(PartitionUsage {
                day: p.day,
                disk_bytes: p.disk_bytes(),
                docs: streams.values().map(|s| s.docs + s.deleted).sum(),
                streams: streams
                    .into_values()
                    .filter(|s| matches_all(&s.labels, matchers))
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Deletes every record of the streams `select` takes, in every partition, durably (each
    /// partition's deletes are a tantivy commit); returns how many records were deleted.
    ///
    /// What was appended before the call is indexed first, so that the deletes reach it and
    /// nothing left in the append log brings it back when replayed after a crash (a partition
    /// skips what its committed sequence number covers, and these commits keep it). The
    /// indexer's lock is held for one partition at a time: appends never take it (they wait
    /// only if indexing falls `max_unindexed_records` behind), and the indexer runs between
    /// partitions. Records appended while the delete runs may or may not be deleted, as with
    /// any write concurrent with a delete.
    pub fn delete_streams(
        &self,
        select: &(dyn Fn(&Labels) -> bool + Sync),
    ) -> Result<u64, StorageError> {
        let inner = &self.inner;
        // First, as it may open partitions (days) the loop below must visit.
        inner.index_pending()?;
        let days: Vec<i64> = inner.partitions.read().keys().copied().collect();
        let mut deleted = 0;
        for day in days {
            let mut st = inner.indexer.lock();
            // Gone to retention meanwhile.
            let Some(p) = inner.partitions.read().get(&day).cloned() else {
                continue;
            };
            let doomed: Vec<(String, u64)> = p
                .stream_docs()?
                .into_iter()
                .filter(|(_, s)| s.docs > 0 && select(&s.labels))
                .map(|(key, s)| (key, s.docs))
                .collect();
            if doomed.is_empty() {
                continue;
            }
            // The indexer's writer for the day if it has one (a partition takes one writer at
            // a time); otherwise one for this delete only.
            let mut own = None;
            let w = match st.writers.get_mut(&day) {
                Some(w) => w,
                None => own.insert(p.writer(inner.opts.index_writer_bytes)?),
            };
            p.delete_streams(w, doomed.iter().map(|(k, _)| k.as_str()));
            let through = p.indexed_through()?;
            if let Err(e) = p.commit(w, through) {
                // As after a failed indexing commit: the writer may be dead or hold the
                // deletes; a new one starts clean and the caller may retry.
                st.writers.remove(&day);
                return Err(e);
            }
            deleted += doomed.iter().map(|(_, n)| n).sum::<u64>();
            tracing::info!(day, streams = doomed.len(), "log store: deleted streams");
        }
        Ok(deleted)
    }

    /// Stops the indexer after a final indexing pass.
    pub fn close(&self) -> Result<(), StorageError> {
        self.stop_indexer();
        self.inner.index_pending()?;
        self.inner.log.compact();
        Ok(())
    }

    fn stop_indexer(&self) {
        {
            let _guard = self.inner.wake_lock.lock();
            self.inner.stop.store(true, Ordering::Release);
            self.inner.wake.notify_all();
        }
        {
            let _progress = self.inner.progress.lock();
            self.inner.progressed.notify_all();
        }
        if let Some(h) = self.indexer.lock().take() {
            let _ = h.join();
        }
    }
}

/// What the LogQL engine and the Loki API read logs through.
pub trait LogReader: Send + Sync {
    /// Streams matching all `matchers` present in partitions overlapping [start_ns, end_ns).
    fn streams(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<Labels>, StorageError>;
    /// Calls `f` with each selected record in time order (`direction`) until it breaks.
    fn scan(
        &self,
        q: &LogQuery,
        direction: Direction,
        f: &mut dyn FnMut(LogRecord) -> ControlFlow<()>,
    ) -> Result<(), StorageError>;
    /// Calls `f` with each stream and metadata and the counts per bucket of its selected
    /// records, for callers that need no lines (`q.contains` is not applied); more than
    /// `max_records` records fail with [`StorageError::TooManyRecords`] while being counted.
    fn scan_streams(
        &self,
        q: &LogQuery,
        buckets: Buckets,
        max_records: usize,
        f: &mut StreamVisit<'_>,
    ) -> Result<(), StorageError>;
    /// Calls `f` with each stream and the counts and line bytes per bucket of its selected
    /// records, for callers that measure (`q.contains` is not applied).
    fn scan_stream_bytes(
        &self,
        q: &LogQuery,
        buckets: Buckets,
        f: &mut StreamBytesVisit<'_>,
    ) -> Result<(), StorageError>;
    /// Each partition's disk bytes and documents, with the streams matching all `matchers`.
    fn usage(&self, matchers: &[Matcher]) -> Result<Vec<PartitionUsage>, StorageError>;
}

/// What deletes logs by stream (Elasticsearch's `DELETE /<index>`): apart from [`LogReader`]
/// so that a reader handed to a query engine cannot delete.
pub trait LogDeleter: Send + Sync {
    /// Deletes every record of the streams `select` takes, durably; returns how many.
    fn delete_streams(
        &self,
        select: &(dyn Fn(&Labels) -> bool + Sync),
    ) -> Result<u64, StorageError>;
}

/// What the ingest paths write logs through.
pub trait LogWriter: Send + Sync {
    /// Appends records durably: on return they survive a crash and will be queryable.
    fn append(&self, records: &[LogRecord]) -> Result<(), StorageError>;
}

impl LogReader for LogStore {
    fn streams(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        LogStore::streams(self, matchers, start_ns, end_ns)
    }

    fn scan(
        &self,
        q: &LogQuery,
        direction: Direction,
        f: &mut dyn FnMut(LogRecord) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        LogStore::scan(self, q, direction, f)
    }

    fn scan_streams(
        &self,
        q: &LogQuery,
        buckets: Buckets,
        max_records: usize,
        f: &mut StreamVisit<'_>,
    ) -> Result<(), StorageError> {
        LogStore::scan_streams(self, q, buckets, max_records, f)
    }

    fn scan_stream_bytes(
        &self,
        q: &LogQuery,
        buckets: Buckets,
        f: &mut StreamBytesVisit<'_>,
    ) -> Result<(), StorageError> {
        LogStore::scan_stream_bytes(self, q, buckets, f)
    }

    fn usage(&self, matchers: &[Matcher]) -> Result<Vec<PartitionUsage>, StorageError> {
        LogStore::usage(self, matchers)
    }
}

impl LogDeleter for LogStore {
    fn delete_streams(
        &self,
        select: &(dyn Fn(&Labels) -> bool + Sync),
    ) -> Result<u64, StorageError> {
        LogStore::delete_streams(self, select)
    }
}

impl LogWriter for LogStore {
    fn append(&self, records: &[LogRecord]) -> Result<(), StorageError> {
        LogStore::append(self, records)
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        self.stop_indexer();
    }
}

/// The next `k` records of one partition, in `direction` order after `after`, that `q`
/// selects by stream and time and whose lines contain every string of `q.contains`.
fn next_hits(
    p: &Partition,
    loader: &partition::Loader,
    q: &LogQuery,
    direction: Direction,
    k: usize,
    after: Option<(i64, tantivy::DocAddress)>,
) -> Result<Vec<(i64, tantivy::DocAddress)>, StorageError> {
    let stream = |labels: &Labels| matches_all(labels, &q.matchers);
    let mut sel = selection(q, &q.contains, &stream);
    // Hits at the last one's timestamp may remain (after it in address order); earlier
    // (later, going backward) ones are all read.
    match (direction, after) {
        (Direction::Forward, Some((ts, _))) => sel.start_ns = sel.start_ns.max(ts),
        (Direction::Backward, Some((ts, _))) => sel.end_ns = sel.end_ns.min(ts.saturating_add(1)),
        (_, None) => {}
    }
    p.top(loader, &sel, direction, k, after)
}

/// The records of one partition that `q` selects by stream and time, grouped by stream (and
/// metadata); see [`Partition::grouped`].
fn grouped(
    p: &Partition,
    q: &LogQuery,
    by_metadata: bool,
    bytes: bool,
    buckets: Buckets,
    budget: usize,
) -> Result<Vec<partition::Group>, StorageError> {
    p.grouped(
        &selection(q, &[], &|labels| matches_all(labels, &q.matchers)),
        by_metadata,
        bytes,
        buckets,
        budget,
    )
}

fn selection<'a>(
    q: &LogQuery,
    contains: &'a [String],
    stream: &'a dyn Fn(&Labels) -> bool,
) -> Selection<'a> {
    Selection {
        stream,
        start_ns: q.start_ns,
        end_ns: q.end_ns,
        contains,
    }
}

fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

impl Inner {
    fn run(&self) {
        loop {
            {
                let mut guard = self.wake_lock.lock();
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                self.wake.wait_for(&mut guard, self.opts.index_interval);
            }
            // Records stay in the append log until indexed: a failed pass (e.g. on a full
            // disk) is retried from the same place next time.
            let _ = self.indexer_failures.observe(self.index_pending());
            if let Err(e) = self.apply_retention() {
                tracing::error!("log retention: {e}");
            }
        }
    }

    /// Holds an append back while the index is [`LogOptions::max_unindexed_records`] or more
    /// behind the log, so that senders slow down instead of searchability falling ever
    /// further behind their acknowledgements; gives up after [`BACKLOG_WAIT`] with a
    /// retryable error (an indexer that cannot make progress must not hang every sender).
    fn wait_for_indexer(&self) -> Result<(), StorageError> {
        let deadline = Instant::now() + self.opts.backlog_wait;
        let mut cursor = self.progress.lock();
        loop {
            let behind = self.log.next_seq().saturating_sub(*cursor);
            if behind < self.opts.max_unindexed_records as u64 {
                return Ok(());
            }
            if self.stop.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            if self
                .progressed
                .wait_until(&mut cursor, deadline)
                .timed_out()
            {
                return Err(StorageError::Backlog { records: behind });
            }
        }
    }

    fn partitions_in(&self, start_ns: i64, end_ns: i64) -> Vec<Arc<Partition>> {
        if end_ns <= start_ns {
            return Vec::new();
        }
        let first = start_ns.div_euclid(DAY_NS);
        let last = (end_ns - 1).div_euclid(DAY_NS);
        self.partitions
            .read()
            .range(first..=last)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn partition(&self, day: i64) -> Result<Arc<Partition>, StorageError> {
        if let Some(p) = self.partitions.read().get(&day) {
            return Ok(p.clone());
        }
        let p = Arc::new(Partition::open(&self.index_dir.join(day.to_string()), day)?);
        self.partitions.write().insert(day, p.clone());
        Ok(p)
    }

    fn retention_cutoff_day(&self) -> i64 {
        let cutoff =
            now_ns().saturating_sub(self.opts.retention.as_nanos().min(i64::MAX as u128) as i64);
        // Days ending at or before the cutoff are entirely out of retention.
        cutoff.div_euclid(DAY_NS)
    }

    /// Moves every record in the append log into the index; returns how many were indexed.
    ///
    /// Batches are added to the days' writers and committed together once per
    /// [`COMMIT_WINDOW`] (and when the log is drained): a commit cuts new segments, which
    /// tantivy later merges, so committing every batch while the indexer is behind spent the
    /// time it needed to catch up.
    fn index_pending(&self) -> Result<usize, StorageError> {
        let mut st = self.indexer.lock();
        let mut total = 0;
        loop {
            let window = Instant::now();
            let mut added: BTreeMap<i64, usize> = BTreeMap::new();
            let mut through = None;
            let mut cursor = st.cursor;
            while window.elapsed() < COMMIT_WINDOW {
                let batch = self.log.read_from(cursor, self.opts.index_batch_records)?;
                let Some(&(last_seq, _)) = batch.last() else {
                    break;
                };
                if let Err(e) = self.add_batch(&mut st, batch, &mut added) {
                    st.writers.clear();
                    return Err(e);
                }
                through = Some(last_seq);
                cursor = last_seq + 1;
            }
            let Some(last_seq) = through else {
                return Ok(total);
            };
            // Writers are kept for the days this window touched (normally today) and dropped
            // for the others, so late records for many old days do not pin writer memory.
            st.writers.retain(|d, _| added.contains_key(d));
            for (&day, &n) in &added {
                if let Err(e) = self.commit_day(&mut st, day, last_seq) {
                    // A writer whose commit failed may still hold this window's documents, or
                    // be dead after a failed segment write; the other days' writers hold
                    // documents not committed either. Dropping them all discards those, so
                    // the retry from the unchanged cursor adds each record once, to new
                    // writers (days committed already skip what they have).
                    st.writers.clear();
                    return Err(e);
                }
                total += n;
            }
            self.log.truncate_through(last_seq)?;
            st.cursor = last_seq + 1;
            *self.progress.lock() = st.cursor;
            self.progressed.notify_all();
        }
    }

    /// Adds a batch read from the append log to the writers of the days it touches, counting
    /// per day what was added.
    fn add_batch(
        &self,
        st: &mut IndexerState,
        batch: Vec<(u64, LogRecord)>,
        added: &mut BTreeMap<i64, usize>,
    ) -> Result<(), StorageError> {
        let cutoff_day = self.retention_cutoff_day();
        let mut by_day: BTreeMap<i64, Vec<LogRecord>> = BTreeMap::new();
        for (seq, rec) in batch {
            let day = rec.ts_ns.div_euclid(DAY_NS);
            if day < cutoff_day || seq <= st.indexed_through.get(&day).copied().unwrap_or(0) {
                continue;
            }
            by_day.entry(day).or_default().push(rec);
        }
        for (day, recs) in by_day {
            let p = self.partition(day)?;
            let w = match st.writers.entry(day) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(p.writer(self.opts.index_writer_bytes)?)
                }
            };
            let mut keys: HashMap<&Labels, String> = HashMap::new();
            for r in &recs {
                let key = keys
                    .entry(&r.labels)
                    .or_insert_with(|| stream_key(&r.labels));
                p.add(w, r, key)?;
            }
            *added.entry(day).or_default() += recs.len();
        }
        Ok(())
    }

    /// Commits what a day's writer holds through `last_seq`.
    fn commit_day(
        &self,
        st: &mut IndexerState,
        day: i64,
        last_seq: u64,
    ) -> Result<(), StorageError> {
        let p = self.partition(day)?;
        let w = st
            .writers
            .get_mut(&day)
            .ok_or_else(|| StorageError::Corrupt(format!("no index writer for day {day}")))?;
        p.commit(w, last_seq)?;
        st.indexed_through.insert(day, last_seq);
        Ok(())
    }

    fn apply_retention(&self) -> Result<(), StorageError> {
        let cutoff_day = self.retention_cutoff_day();
        let expired: Vec<Arc<Partition>> = {
            let mut parts = self.partitions.write();
            let keep = parts.split_off(&cutoff_day);
            std::mem::replace(&mut *parts, keep).into_values().collect()
        };
        if expired.is_empty() {
            return Ok(());
        }
        let mut st = self.indexer.lock();
        for p in expired {
            st.writers.remove(&p.day);
            st.indexed_through.remove(&p.day);
            std::fs::remove_dir_all(&p.dir)?;
            tracing::info!(day = p.day, "log retention: dropped partition");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
