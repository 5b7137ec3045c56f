//! The durable side of the facade: restoring the head at open, WAL replay, the checkpoint
//! (head → chunk partitions + WAL truncation in one WriteBatch) and the retention pass. See
//! the facade's doc for the ordering guarantees these keep.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rocksdb::WriteBatch;
use tracing::{debug, info};

use super::{corrupt, duration_ms, now_ms, CheckpointState, Inner};
use super::{histstore, wal};
use crate::db::{self, CF_EXEMPLARS, CF_HISTOGRAMS};
use crate::tsdb::append::{SeriesCheck, Verdict};
use crate::tsdb::chunk::{self, StoredChunk, XorChunk, MAX_SAMPLES};
use crate::tsdb::cold::{self, ColdSeries};
use crate::tsdb::head::SeriesSnapshot;
use crate::tsdb::index;
use crate::tsdb::meta::{self, KEY_NEXT_OOO_CHUNK_ID};
use crate::tsdb::partition::{self, chunk_key, partition_start, window_start, PARTITION_MS};
use crate::{Sample, StorageError};

/// Series per checkpoint slice: the state lock is held while one slice is snapshotted and
/// again while it is released, so this bounds how long an append or a read can wait on a
/// checkpoint (a few milliseconds), while keeping each WriteBatch large enough to write
/// efficiently.
const CHECKPOINT_SLICE_SERIES: usize = 16_384;

/// Histogram samples sealed per WriteBatch: large enough to write efficiently, small
/// enough that a batch stays a few megabytes.
const SEAL_BATCH_SAMPLES: usize = 20_000;

/// Which checkpoint this is: what it seals of the histogram head, and whether it stores the
/// float series' open chunks in their smallest form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The periodic one: histogram samples of windows ready to seal; chunks cut since the last
    /// checkpoint; and, once per `open_chunk_interval`, open chunks as the head holds them
    /// (the next such checkpoint writes them again while they fill).
    Periodic,
    /// At shutdown and on an explicit flush: every histogram sample, and open chunks compacted
    /// too (a restart decodes them into an appendable chunk whatever their form), and the open
    /// windows merged as well as the closed ones (`merge`), so that the disk holds the data in
    /// its compact form only.
    Final,
}

/// A series' head as restored at open: id, last sample (t, value bits), open chunk.
type RestoredHead = (u64, (i64, u64), XorChunk);

/// Read-ahead of the iterators restoring the head at open.
const RESTORE_READAHEAD_BYTES: usize = 2 << 20;

/// Series moved to the cold index per exclusive hold of `gate` (a WriteBatch of about ten
/// keys per series and partition): appends wait for one slice, not for the whole pass.
const EVICT_SLICE_SERIES: usize = 4096;

impl Inner {
    /// Restores each series' last float sample and its open chunk from its newest in-order
    /// chunk. That chunk is usually in the partition of the series' max t, but max t may be a
    /// native histogram's, so earlier partitions are searched too, newest first.
    /// The series are split over the cores (a million series are a million seeks, mostly
    /// waiting on reads), each part walking its own iterators forward in key order.
    pub(super) fn restore_head(&self) -> Result<(), StorageError> {
        let mut state = self.state.write();
        let mut todo: Vec<(i64, u64)> = state
            .index
            .iter()
            .filter(|(_, s)| s.max_t() != i64::MIN)
            .map(|(id, s)| (partition::clamp(s.max_t()), id))
            .collect();
        todo.sort_unstable();
        let mut partitions = self.partitions.all();
        partitions.sort_unstable_by(|a, b| b.cmp(a));
        let handles = partitions
            .iter()
            .map(|&start| db::cf(&self.db, &partition::cf_name(start)).map(|cf| (start, cf)))
            .collect::<Result<Vec<_>, _>>()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let part = todo.len().div_ceil(threads).max(1);
        let restored = std::thread::scope(|scope| {
            let workers: Vec<_> = todo
                .chunks(part)
                .map(|series| scope.spawn(|| self.newest_chunks(&handles, series)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for (id, last, open) in restored.into_iter().flatten() {
            state.head.load(id, last, Some(open));
        }
        Ok(())
    }

    /// The last sample and open chunk of each of `series` ((max t, id) in key order), read
    /// from the partitions `handles` (newest first).
    fn newest_chunks(
        &self,
        handles: &[(i64, db::Cf<'_>)],
        series: &[(i64, u64)],
    ) -> Result<Vec<RestoredHead>, StorageError> {
        // Reads ahead: the seeks walk each partition forward. Through the block cache: a
        // seek for the previous key reads its data block again even when the iterator is on
        // it already, and a block holds the newest chunks of dozens of series, so reading
        // past the cache decompressed each block dozens of times (a quarter of the CPU of an
        // open with 1M series). Nothing in the cache is hot yet at open.
        let mut iters: Vec<_> = handles
            .iter()
            .map(|(start, cf)| {
                let mut opts = rocksdb::ReadOptions::default();
                opts.set_readahead_size(RESTORE_READAHEAD_BYTES);
                (*start, self.db.raw_iterator_cf_opt(cf, opts))
            })
            .collect();
        let mut out = Vec::with_capacity(series.len());
        for &(max_t, id) in series {
            let newest_first = iters
                .iter_mut()
                .filter(|(start, _)| *start <= partition_start(max_t));
            let mut newest = None;
            for (_, it) in newest_first {
                newest = partition::newest_in_order_chunk(it, id, max_t)?;
                if newest.is_some() {
                    break;
                }
            }
            let Some(value) = newest else {
                // A series with native histograms only has no float chunk.
                debug!(series = id, max_t, "no in-order float chunk for series");
                continue;
            };
            let chunk = StoredChunk::parse(&value).map_err(corrupt)?;
            let samples: Vec<Sample> = chunk.iter().collect::<Result<_, _>>().map_err(corrupt)?;
            let Some(last) = samples.last() else { continue };
            let last = (last.t, last.v.to_bits());
            // A merged chunk (`merge`) can hold a whole window; the head holds a full chunk's
            // worth of its end, which the next sample cuts.
            let samples = &samples[samples.len().saturating_sub(usize::from(MAX_SAMPLES))..];
            // A full chunk is kept too (persisted, so the next sample cuts and drops it): the
            // WAL replayed next can hold its samples, as checkpoints between those that write
            // open chunks write the chunks that were cut, and replay then finds them here
            // rather than with a read per sample.
            out.push((id, last, XorChunk::from_samples(samples.iter().copied())));
        }
        Ok(out)
    }

    /// Re-applies WAL records not yet covered by chunks, validating each sample as the append
    /// did (so replaying is idempotent); sets the WAL sequence counters.
    pub(super) fn replay_wal(&self) -> Result<(), StorageError> {
        let limits = self.limits(now_ms());
        let mut records = 0u64;
        let mut state = self.state.write();
        let next = wal::replay(&self.db, |groups| {
            records += 1;
            for (id, samples) in groups {
                // The series' slots are looked up once per record, not per sample: a WAL of
                // remote writes holds a sample or two per series per record, and the lookups
                // (a cache miss each at 1M series) were a quarter of replay's CPU.
                let Some(index_slot) = state.index.slot(id) else {
                    // Removed by retention after the record was written.
                    continue;
                };
                let mut head_slot = state.head.slot(id);
                let last = head_slot.and_then(|slot| state.head.last_at(slot));
                let mut check = SeriesCheck::new(last, samples.len());
                for s in samples {
                    let verdict = check.check(limits, s, || self.stored_value(&state, id, s.t))?;
                    match verdict {
                        Verdict::InOrder | Verdict::OutOfOrder => {
                            let slot = *head_slot.get_or_insert_with(|| state.head.add(id));
                            if state.head.apply_at(slot, &[s]) {
                                state.head.list_dirty(&[id]);
                            }
                            state.index.extend_time_at(index_slot, s.t, s.t);
                            state.index.note_newest(s.t);
                        }
                        Verdict::Noop => {}
                        Verdict::Reject(reason) => {
                            debug!(series = id, t = s.t, %reason, "wal sample dropped at replay")
                        }
                    }
                }
            }
            Ok(())
        })?;
        drop(state);
        if records > 0 {
            info!(records, "wal replayed");
        }
        self.next_wal_seq.store(next, Ordering::Relaxed);
        // Replayed records stay in the WAL until the next checkpoint truncates [0, next).
        self.checkpoint.lock().wal_start = if records > 0 { 0 } else { next };
        Ok(())
    }

    /// Persists the head: notes the WAL position S and the dirty series under the append
    /// lock, then writes those series' chunks a slice at a time (each slice snapshotted under
    /// the state lock, written without it, then released from the head), and only once every
    /// slice is in RocksDB deletes WAL records [0, S). Appends and reads wait for one slice,
    /// never for the whole head. A crash between slices leaves samples both in chunks and in
    /// the WAL, which replay recognises as already stored.
    ///
    /// A periodic checkpoint within `open_chunk_interval` of the last one that wrote open
    /// chunks writes only cut chunks and out-of-order data, and deletes no WAL record: the
    /// open chunks' samples are still only in the WAL. A million series' open chunks are
    /// most of what a checkpoint would write, each rewritten until it fills.
    ///
    /// Then the windows that closed meanwhile are merged (`merge`); a final checkpoint merges
    /// the open ones too.
    pub(super) fn checkpoint(&self, which: Pass) -> Result<(), StorageError> {
        let mut cp = self.checkpoint.lock();
        self.write_head(&mut cp, which)?;
        self.merge_windows(&mut cp.merged_before, which == Pass::Final)
    }

    /// The checkpoint's first part: the head into chunks, then the WAL truncated.
    fn write_head(&self, cp: &mut CheckpointState, which: Pass) -> Result<(), StorageError> {
        let mut tiebreak = cp.next_ooo_chunk_id;
        let sealed = self.seal_histograms(which, &mut tiebreak);
        // Chunk ids handed out by batches already written stay used, even on failure.
        cp.next_ooo_chunk_id = tiebreak;
        sealed?;
        let open = which == Pass::Final || cp.open_chunks_due.is_some_and(|t| Instant::now() >= t);
        let (mut dirty, wal_end) = {
            // With no append in flight, every record below the WAL position is in the head.
            let _gate = self.gate.write();
            let mut state = self.state.write();
            (
                state.head.take_dirty(),
                self.next_wal_seq.load(Ordering::Relaxed),
            )
        };
        // Sorted outside the locks: slices in key order write to RocksDB in key order.
        dirty.sort_unstable();
        dirty.dedup();
        if dirty.is_empty() && (!open || cp.wal_start >= wal_end) {
            return Ok(());
        }
        let mut next_ooo = cp.next_ooo_chunk_id;
        let mut slices = dirty.chunks(CHECKPOINT_SLICE_SERIES);
        while let Some(slice) = slices.next() {
            let (snaps, times) = self.snapshot_slice(slice, open);
            let result = self.write_slice(&snaps, &times, &mut next_ooo, which == Pass::Final);
            let mut state = self.state.write();
            match result {
                Ok(()) => state.head.commit(&snaps),
                Err(e) => {
                    state.head.abort(&snaps);
                    for rest in slices {
                        state.head.mark_dirty(rest);
                    }
                    // Chunk ids handed out by slices already written stay used.
                    cp.next_ooo_chunk_id = next_ooo;
                    return Err(e);
                }
            }
        }
        cp.next_ooo_chunk_id = next_ooo;
        if !open {
            debug!(series = dirty.len(), "checkpoint of cut chunks written");
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        wal::truncate(&self.db, &mut wb, wal_end)?;
        self.db.write_opt(wb, &self.write_options())?;
        cp.wal_start = wal_end;
        cp.open_chunks_due = Instant::now().checked_add(self.opts.open_chunk_interval);
        debug!(series = dirty.len(), wal_end, "checkpoint written");
        wal::compact_truncated(&self.db, wal_end)
    }

    /// Moves histogram samples from the histogram head into sealed chunks (see `histstore`),
    /// a batch at a time: all of them, or those of each series' windows that are ready —
    /// closed (the newest sample of any series is in a later window) or holding a quarter
    /// chunk. So the head stays small, and a chunk is rewritten a few times at most as its
    /// window fills. Each batch also persists its series' time bounds (which appends of
    /// histograms do not) and the chunk id counter. Appends and reads go on meanwhile: a batch
    /// moves its samples atomically, and both look at the head before the chunks.
    fn seal_histograms(&self, which: Pass, next_tiebreak: &mut u64) -> Result<(), StorageError> {
        let Some(newest) = self.state.read().index.newest() else {
            return Ok(());
        };
        let open_window = window_start(newest);
        let mut head = histstore::Scanner::new(&self.db)?;
        let (mut wb, mut in_batch, mut sealed) = (WriteBatch::default(), 0usize, 0usize);
        for (id, _, _) in histstore::head_series(&self.db)? {
            let mut samples = head.scan(id, partition::MIN_T, partition::MAX_T)?;
            if which == Pass::Periodic {
                let closed = samples.partition_point(|s| window_start(s.t) < open_window);
                // The open window waits until it holds a quarter chunk.
                if samples.len() - closed < usize::from(MAX_SAMPLES / 4) {
                    samples.truncate(closed);
                }
            }
            let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
                continue;
            };
            // A series out of memory keeps its bounds in the cold index, which covers these.
            let bounds = self
                .state
                .read()
                .index
                .get(id)
                .map(|s| (s.min_t(), s.max_t()));
            if let Some((min_t, max_t)) = bounds {
                index::put_times(&self.db, &mut wb, id, min_t.min(first.t), max_t.max(last.t))?;
            }
            histstore::seal(
                &self.db,
                &self.partitions,
                &mut wb,
                id,
                &samples,
                next_tiebreak,
            )?;
            in_batch += samples.len();
            sealed += samples.len();
            if in_batch >= SEAL_BATCH_SAMPLES {
                self.write_sealed(std::mem::take(&mut wb), *next_tiebreak)?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            self.write_sealed(wb, *next_tiebreak)?;
        }
        if sealed > 0 {
            debug!(samples = sealed, "histogram samples sealed into chunks");
            histstore::compact_head(&self.db)?;
        }
        Ok(())
    }

    fn write_sealed(&self, mut wb: WriteBatch, next_tiebreak: u64) -> Result<(), StorageError> {
        meta::put_counter(&self.db, &mut wb, KEY_NEXT_OOO_CHUNK_ID, next_tiebreak)?;
        Ok(self.db.write_opt(wb, &self.write_options())?)
    }

    /// Snapshots series `ids` under the exclusive state lock: what they hold beyond their
    /// persisted state (open chunks only with `open`), and the time bounds (id, min t, max t)
    /// of those with something to write, to persist with it.
    pub(super) fn snapshot_slice(
        &self,
        ids: &[u64],
        open: bool,
    ) -> (Vec<SeriesSnapshot>, Vec<(u64, i64, i64)>) {
        let mut state = self.state.write();
        let snaps = state.head.snapshot(ids, open);
        let times = snaps
            .iter()
            .filter_map(|s| state.index.get(s.id).map(|i| (s.id, i.min_t(), i.max_t())))
            .collect();
        (snaps, times)
    }

    /// Writes one slice of a checkpoint in one WriteBatch: its chunks, its series' time bounds
    /// and the out-of-order chunk counter past the ids it used (so that a crash before the
    /// next slice never hands them out twice).
    pub(super) fn write_slice(
        &self,
        snaps: &[SeriesSnapshot],
        times: &[(u64, i64, i64)],
        next_ooo: &mut u64,
        compact_open: bool,
    ) -> Result<(), StorageError> {
        let mut wb = WriteBatch::default();
        // Complete chunks are stored in their smallest encoding; an open one stays as the head
        // holds it (unless `compact_open`), as every checkpoint until it fills writes it again.
        let mut put_chunk = |id: u64,
                             min_t: i64,
                             tiebreak: u64,
                             value: &[u8],
                             complete: bool|
         -> Result<(), StorageError> {
            let start = partition_start(min_t);
            self.partitions.ensure(&self.db, start)?;
            let cf = db::cf(&self.db, &partition::cf_name(start))?;
            let key = chunk_key(id, min_t, tiebreak);
            if complete {
                wb.put_cf(&cf, key, chunk::compact(value).map_err(corrupt)?);
            } else {
                wb.put_cf(&cf, key, value);
            }
            Ok(())
        };
        for snap in snaps {
            for (min_t, value) in &snap.chunks {
                let complete = compact_open || snap.is_complete(*min_t);
                put_chunk(snap.id, *min_t, 0, value, complete)?;
            }
            // Out-of-order samples become new chunks of their own, split like in-order ones.
            for window in snap
                .ooo
                .chunk_by(|a, b| window_start(a.t) == window_start(b.t))
            {
                for part in window.chunks(usize::from(MAX_SAMPLES)) {
                    let c = XorChunk::from_samples(part.iter().copied());
                    put_chunk(snap.id, c.min_t(), *next_ooo, &c.to_value(), true)?;
                    *next_ooo += 1;
                }
            }
        }
        for &(id, min_t, max_t) in times {
            index::put_times(&self.db, &mut wb, id, min_t, max_t)?;
        }
        meta::put_counter(&self.db, &mut wb, KEY_NEXT_OOO_CHUNK_ID, *next_ooo)?;
        self.db.write_opt(wb, &self.write_options())?;
        Ok(())
    }

    /// Drops partitions that ended before now − retention and the series with no sample
    /// since then. Expired series are looked for under the shared state lock, confirmed and
    /// deleted from RocksDB under the exclusive `gate` (no sample can revive them meanwhile; reads
    /// go on), and only their removal from memory takes the exclusive state lock.
    pub(super) fn apply_retention(&self, now: i64) -> Result<(), StorageError> {
        let cutoff = self.limits(now).cutoff;
        let _cp = self.checkpoint.lock();
        let expired_partitions = self.partitions.expired(cutoff);
        let candidates = self.state.read().index.expired(cutoff);
        {
            let _gate = self.gate.write();
            let ids: Vec<u64> = {
                let state = self.state.read();
                candidates
                    .into_iter()
                    .filter(|&id| state.index.get(id).is_some_and(|s| s.max_t() < cutoff))
                    .collect()
            };
            let mut wb = WriteBatch::default();
            for &id in &ids {
                index::delete_series(&self.db, &mut wb, id)?;
            }
            // Histograms are not in the partitions: their old samples go key range by range.
            let trimmed = histstore::delete_before(&self.db, &mut wb, CF_HISTOGRAMS, cutoff)?;
            // Exemplars go the same way, with the samples they illustrate.
            histstore::delete_before(&self.db, &mut wb, CF_EXEMPLARS, cutoff)?;
            if !wb.is_empty() {
                self.db.write_opt(wb, &self.write_options())?;
            }
            if trimmed > 0 {
                debug!(series = trimmed, "retention trimmed histogram samples");
            }
            if !ids.is_empty() || !expired_partitions.is_empty() {
                let mut state = self.state.write();
                if !ids.is_empty() {
                    state.index.remove(&ids);
                    state.head.remove(&ids);
                    self.removals.fetch_add(1, Ordering::Release);
                    info!(series = ids.len(), "retention removed series");
                }
                if let Some(&newest) = expired_partitions.last() {
                    state.index.raise_min_t(newest + PARTITION_MS);
                }
            }
        }
        for start in expired_partitions {
            cold::drop_partition(&self.db, start, cutoff)?;
            self.partitions.drop_partition(&self.db, start)?;
            info!(partition = start, "retention dropped partition");
        }
        Ok(())
    }

    /// Moves the series with no sample within the head window (counted back from the newest
    /// sample of any series) from memory to the cold index, once all they hold is persisted.
    /// Like retention: candidates under the shared state lock; confirmed and written to
    /// RocksDB under the exclusive `gate` (no sample can arrive for them meanwhile) a slice at a
    /// time; removed from memory under the exclusive lock only after their cold entries are
    /// written, so a reader always finds a series in one place or the other.
    pub(super) fn evict_idle(&self) -> Result<(), StorageError> {
        let _cp = self.checkpoint.lock();
        let (cutoff, candidates) = {
            let state = self.state.read();
            let Some(newest) = state.index.newest() else {
                return Ok(());
            };
            let cutoff = newest.saturating_sub(duration_ms(self.opts.head_window));
            (cutoff, state.index.expired(cutoff))
        };
        let mut evicted = 0usize;
        for slice in candidates.chunks(EVICT_SLICE_SERIES) {
            let _gate = self.gate.write();
            let mut wb = WriteBatch::default();
            let mut ids = Vec::with_capacity(slice.len());
            {
                let state = self.state.read();
                for &id in slice {
                    let Some(s) = state.index.get(id).filter(|s| s.max_t() < cutoff) else {
                        continue;
                    };
                    if !state.head.persisted(id) {
                        continue;
                    }
                    let series = ColdSeries {
                        id,
                        min_t: s.min_t(),
                        max_t: s.max_t(),
                        last: state.head.last(id),
                    };
                    let partitions = self.partitions.overlapping(s.min_t()..=s.max_t());
                    let labels = state.index.labels_of(s).to_stored();
                    cold::put(&self.db, &mut wb, &labels, &series, &partitions)?;
                    index::delete_series(&self.db, &mut wb, id)?;
                    ids.push(id);
                }
            }
            if ids.is_empty() {
                continue;
            }
            self.db.write_opt(wb, &self.write_options())?;
            let mut state = self.state.write();
            state.index.remove(&ids);
            state.head.remove(&ids);
            self.removals.fetch_add(1, Ordering::Release);
            evicted += ids.len();
        }
        if evicted > 0 {
            debug!(
                series = evicted,
                cutoff, "idle series left memory for the cold index"
            );
        }
        Ok(())
    }
}
