//! The head: per-series in-memory state for samples not yet (fully) in the chunk partitions —
//! the open in-order chunk as a live Gorilla encoder, chunks cut from it but not yet persisted,
//! and the sorted out-of-order buffer — plus the last in-order sample of every series.
//!
//! Owns the cut rule (a chunk holds ≤ 120 samples and never crosses a 2h window) and the
//! hand-over to a checkpoint: [`Head::snapshot`] moves unpersisted data into "flushing" slots
//! that stay readable until [`Head::commit`], so readers never miss data that is between the
//! head and RocksDB. Each series' head has a lock of its own, so that appends put samples in
//! side by side under the TSDB's shared lock while queries read. It does not validate samples
//! (the `append` module does) and never touches RocksDB.

use parking_lot::{Mutex, MutexGuard};

use crate::tsdb::chunk::{ChunkArena, CorruptChunk, XorChunk, MAX_SAMPLES};
use crate::tsdb::partition::window_start;
use crate::tsdb::slab::IdSlab;
use crate::Sample;

/// One series' head. Each is locked on its own (`Mutex<SeriesHead>`): appends put samples
/// in under the TSDB's shared lock, each holding its series so that no two write one head,
/// while queries read it.
struct SeriesHead {
    /// Last in-order sample's t, [`NO_SAMPLE`] while there is none, and value bits. Two
    /// fields rather than an `Option` of the pair, which takes a word more: the word the
    /// head's lock now takes, so a locked head is no larger than an unlocked one was.
    last_t: i64,
    last_bits: u64,
    open: Option<XorChunk>,
    /// How many samples of `open` are already stored in its partition.
    open_persisted: u16,
    /// Dirty (listed in [`Head::dirty`]) while this equals [`Head::generation`].
    dirty_generation: u32,
    /// Apart, as most series hold none of it most of the time: every byte of a head counts a
    /// million times.
    pending: Option<Box<Pending>>,
}

/// Below any time a sample may have (`partition::MIN_T`).
const NO_SAMPLE: i64 = i64::MIN;

impl Default for SeriesHead {
    fn default() -> SeriesHead {
        SeriesHead {
            last_t: NO_SAMPLE,
            last_bits: 0,
            open: None,
            open_persisted: 0,
            // Heads start at generation 0: not dirty.
            dirty_generation: 0,
            pending: None,
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Chunks cut from `open` that hold samples not yet persisted, oldest first.
    frozen: Vec<XorChunk>,
    /// Out-of-order samples not yet persisted, sorted by t, unique t.
    ooo: Vec<Sample>,
    /// Handed to the running checkpoint; still read until it commits.
    flushing_frozen: Vec<XorChunk>,
    flushing_ooo: Vec<Sample>,
}

impl SeriesHead {
    fn last(&self) -> Option<(i64, u64)> {
        (self.last_t != NO_SAMPLE).then_some((self.last_t, self.last_bits))
    }

    /// Whether the head was listed dirty in `generation`; if not, it is now (and the caller
    /// lists it).
    fn newly_dirty_in(&mut self, generation: u32) -> bool {
        std::mem::replace(&mut self.dirty_generation, generation) != generation
    }

    /// Appends a sample newer than the last one, cutting the open chunk first when it is full
    /// or the sample is in the next 2h window.
    fn push_in_order(&mut self, s: Sample) {
        let cut = self
            .open
            .as_ref()
            .is_some_and(|c| c.is_full() || window_start(c.min_t()) != window_start(s.t));
        // The cut chunk's size, which the next one is given room for. Only a full chunk's: one
        // cut by its window's end may hold a few samples, and grows as it needs from empty.
        let mut room = 0;
        if cut {
            if let Some(old) = self.open.take() {
                if old.is_full() {
                    room = old.data_len();
                }
                if old.count() > self.open_persisted {
                    self.pending
                        .get_or_insert_with(Box::default)
                        .frozen
                        .push(old);
                }
            }
        }
        if self.open.is_none() {
            self.open_persisted = 0;
        }
        let bits = s.v.to_bits();
        self.open
            .get_or_insert_with(|| XorChunk::with_capacity(room))
            .append(s.t, bits);
        (self.last_t, self.last_bits) = (s.t, bits);
    }

    /// Puts an accepted sample in (validated: no other sample at its t): into the open chunk
    /// when newer than the series' last one, else into the out-of-order buffer.
    fn put(&mut self, s: Sample) {
        if s.t > self.last_t {
            self.push_in_order(s);
        } else {
            insert_sorted(&mut self.pending.get_or_insert_with(Box::default).ooo, s);
        }
    }

    /// Whether the open chunk holds samples its partition does not.
    fn unpersisted_open(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|c| c.count() > self.open_persisted)
    }

    fn flushing_frozen(&self) -> &[XorChunk] {
        self.pending.as_ref().map_or(&[], |p| &p.flushing_frozen)
    }

    fn frozen(&self) -> &[XorChunk] {
        self.pending.as_ref().map_or(&[], |p| &p.frozen)
    }

    fn in_order_chunks(&self) -> impl Iterator<Item = &XorChunk> {
        self.flushing_frozen()
            .iter()
            .chain(self.frozen())
            .chain(&self.open)
    }
}

/// What one checkpoint writes for one series.
pub(crate) struct SeriesSnapshot {
    pub(crate) id: u64,
    /// In-order chunks to (re)write at their own key: (min t, stored value).
    pub(crate) chunks: Vec<(i64, Vec<u8>)>,
    /// Out-of-order samples to store as new chunks, sorted by t.
    pub(crate) ooo: Vec<Sample>,
    /// (min t, count) of the open chunk as written, to know what is persisted on commit.
    open: Option<(i64, u16)>,
}

impl SeriesSnapshot {
    /// Whether the chunk starting at `min_t` is complete: not the open chunk still filling
    /// (which the next checkpoint writes again).
    pub(crate) fn is_complete(&self, min_t: i64) -> bool {
        self.open
            .is_none_or(|(open_t, count)| open_t != min_t || count >= MAX_SAMPLES)
    }
}

pub(crate) struct Head {
    series: IdSlab<Mutex<SeriesHead>>,
    /// Series holding data that is not yet persisted, each listed once: a flag in the series'
    /// head says whether it is listed, so a write costs no set insertion, and taking the list
    /// starts a new generation instead of clearing a million flags under the lock. Locked on
    /// its own as appends list series under the shared lock.
    dirty: Mutex<Vec<u64>>,
    /// Changed only through `&mut Head`, so never while an append puts samples in.
    generation: u32,
}

impl Default for Head {
    fn default() -> Head {
        Head {
            series: IdSlab::default(),
            dirty: Mutex::default(),
            generation: 1,
        }
    }
}

fn bits_at(chunk: &XorChunk, t: i64) -> Result<Option<u64>, CorruptChunk> {
    if t < chunk.min_t() || t > chunk.max_t() {
        return Ok(None);
    }
    for s in chunk.iter() {
        let s = s?;
        if s.t == t {
            return Ok(Some(s.v.to_bits()));
        }
        if s.t > t {
            break;
        }
    }
    Ok(None)
}

fn bits_in(sorted: &[Sample], t: i64) -> Option<u64> {
    sorted
        .binary_search_by_key(&t, |s| s.t)
        .ok()
        .map(|i| sorted[i].v.to_bits())
}

fn insert_sorted(samples: &mut Vec<Sample>, s: Sample) {
    let pos = samples.partition_point(|x| x.t < s.t);
    samples.insert(pos, s);
}

impl Head {
    /// Restores a series' state at open from its last persisted in-order chunk.
    pub(crate) fn load(&mut self, id: u64, last: (i64, u64), open: Option<XorChunk>) {
        let head = SeriesHead {
            last_t: last.0,
            last_bits: last.1,
            open_persisted: open.as_ref().map_or(0, XorChunk::count),
            open,
            ..SeriesHead::default()
        };
        self.series.insert(id, Mutex::new(head));
    }

    fn locked(&self, id: u64) -> Option<MutexGuard<'_, SeriesHead>> {
        self.series.get(id).map(Mutex::lock)
    }

    pub(crate) fn last(&self, id: u64) -> Option<(i64, u64)> {
        self.locked(id).and_then(|h| h.last())
    }

    /// The slot of a series' head (for [`Head::last_at`] and [`Head::apply_at`]): stable until
    /// the series is removed.
    pub(crate) fn slot(&self, id: u64) -> Option<u32> {
        self.series.slot(id)
    }

    /// Whether `slot` holds series `id`'s head (a slot remembered from an earlier append).
    pub(crate) fn holds(&self, slot: u32, id: u64) -> bool {
        self.series.holds(slot, id)
    }

    pub(crate) fn last_at(&self, slot: u32) -> Option<(i64, u64)> {
        self.series.at(slot).1.lock().last()
    }

    /// Reads the byte the next append to the series at `slot` completes, and returns it for
    /// the caller to fold into a value it keeps (so the read is not optimised away). An append
    /// of a batch warms its series this way just before it puts their samples in, so that it
    /// does not wait on memory series by series: with thousands of series per batch, each
    /// open chunk's end is a cache miss (15% of ingest CPU at 20k series), and a loop of such
    /// reads alone keeps many in flight where the appends' long dependent work waits for each.
    pub(crate) fn warm(&self, slot: u32) -> u8 {
        self.series
            .at(slot)
            .1
            .lock()
            .open
            .as_ref()
            .map_or(0, XorChunk::tail)
    }

    /// The value bits of the head's sample at `t`, if the head holds one.
    pub(crate) fn value_at(&self, id: u64, t: i64) -> Result<Option<u64>, CorruptChunk> {
        let Some(h) = self.locked(id) else {
            return Ok(None);
        };
        for c in h.in_order_chunks() {
            if let Some(bits) = bits_at(c, t)? {
                return Ok(Some(bits));
            }
        }
        Ok(h.pending
            .as_ref()
            .and_then(|p| bits_in(&p.ooo, t).or_else(|| bits_in(&p.flushing_ooo, t))))
    }

    /// [`Head::apply_at`] of a series found by id, given a head if it has none.
    #[cfg(test)]
    fn apply(&mut self, id: u64, s: Sample) {
        let slot = self.slot(id).unwrap_or_else(|| self.add(id));
        if self.apply_at(slot, &[s]) {
            self.dirty.get_mut().push(id);
        }
    }

    /// Puts a series' accepted samples in, in order (validated: no other sample at any of
    /// their t), at its slot ([`Head::slot`], or [`Head::add`] for a series with no head yet):
    /// no lookup by id on the append path. Shared: the caller holds the series, so no other
    /// append writes to it meanwhile. Returns whether the series became dirty with them, for
    /// the caller to list with [`Head::list_dirty`].
    pub(crate) fn apply_at(&self, slot: u32, samples: &[Sample]) -> bool {
        let mut h = self.series.at(slot).1.lock();
        for &s in samples {
            h.put(s);
        }
        !samples.is_empty() && h.newly_dirty_in(self.generation)
    }

    /// Lists the series [`Head::apply_at`] said became dirty.
    pub(crate) fn list_dirty(&self, ids: &[u64]) {
        if !ids.is_empty() {
            self.dirty.lock().extend_from_slice(ids);
        }
    }

    /// An empty head for a series that has none, and its slot.
    pub(crate) fn add(&mut self, id: u64) -> u32 {
        debug_assert!(self.series.slot(id).is_none());
        self.series.insert(id, Mutex::default())
    }

    /// Copies what the head holds of a series within [mint, maxt]: its in-order chunks that
    /// overlap the range, as stored values into `chunks`, and its out-of-order samples in the
    /// range into `ooo`. Undecoded: the reader decodes (and trims to the range) later.
    pub(crate) fn copy_out(
        &self,
        id: u64,
        mint: i64,
        maxt: i64,
        chunks: &mut ChunkArena,
        ooo: &mut Vec<Sample>,
    ) {
        let Some(h) = self.locked(id) else {
            return;
        };
        for c in h.in_order_chunks() {
            if c.max_t() >= mint && c.min_t() <= maxt {
                chunks.push_with(c.stored_len_bound(), |out| c.write_stored(out));
            }
        }
        for buf in h.pending.iter().flat_map(|p| [&p.flushing_ooo, &p.ooo]) {
            let from = buf.partition_point(|s| s.t < mint);
            ooo.extend(buf[from..].iter().take_while(|s| s.t <= maxt));
        }
    }

    /// The series with data beyond their persisted state; they are no longer dirty until
    /// written to again (or handed back by [`Head::abort`] / [`Head::mark_dirty`]). O(1), so
    /// that it can be taken under the locks appends wait for.
    /// In no order; an id may repeat (a series removed and brought back within one
    /// generation is listed twice): sorting is left to the caller, outside the lock.
    pub(crate) fn take_dirty(&mut self) -> Vec<u64> {
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        std::mem::take(self.dirty.get_mut())
    }

    /// Series to persist again at the next checkpoint.
    pub(crate) fn mark_dirty(&mut self, ids: &[u64]) {
        for &id in ids {
            self.relist(id);
        }
    }

    /// Lists `id` as dirty unless its head already is.
    fn relist(&mut self, id: u64) {
        let listed = match self.series.get(id) {
            Some(h) => h.lock().newly_dirty_in(self.generation),
            None => false,
        };
        if listed {
            self.dirty.get_mut().push(id);
        }
    }

    /// Takes what series `ids` (from [`Head::take_dirty`]) hold beyond their persisted state,
    /// moving cut chunks and out-of-order samples to the flushing slots. Without `with_open`,
    /// open chunks are left out: a series whose open chunk holds unpersisted samples is
    /// listed dirty again at once (it is not persisted until a snapshot with `with_open` takes
    /// it), and one with nothing else to write gets no snapshot.
    pub(crate) fn snapshot(&mut self, ids: &[u64], with_open: bool) -> Vec<SeriesSnapshot> {
        let mut out = Vec::with_capacity(if with_open { ids.len() } else { 0 });
        let mut relist = Vec::new();
        for &id in ids {
            let Some(mut h) = self.locked(id) else {
                continue;
            };
            if !with_open {
                if h.unpersisted_open() {
                    relist.push(id);
                }
                if h.pending.is_none() {
                    continue;
                }
            }
            if let Some(p) = &mut h.pending {
                p.flushing_frozen.append(&mut p.frozen);
                if !p.ooo.is_empty() {
                    p.flushing_ooo.append(&mut p.ooo);
                    p.flushing_ooo.sort_by_key(|s| s.t);
                }
            }
            let mut chunks: Vec<(i64, Vec<u8>)> = h
                .flushing_frozen()
                .iter()
                .map(|c| (c.min_t(), c.to_value()))
                .collect();
            let open = match &h.open {
                Some(c) if with_open && c.count() > h.open_persisted => {
                    chunks.push((c.min_t(), c.to_value()));
                    Some((c.min_t(), c.count()))
                }
                _ => None,
            };
            out.push(SeriesSnapshot {
                id,
                chunks,
                ooo: h
                    .pending
                    .as_ref()
                    .map_or_else(Vec::new, |p| p.flushing_ooo.clone()),
                open,
            });
        }
        self.mark_dirty(&relist);
        out
    }

    /// The snapshot is in RocksDB: release what it covered.
    pub(crate) fn commit(&mut self, snaps: &[SeriesSnapshot]) {
        for snap in snaps {
            let Some(mut h) = self.locked(snap.id) else {
                continue;
            };
            if let Some(p) = &mut h.pending {
                p.flushing_frozen.clear();
                p.flushing_ooo.clear();
                if p.ooo.is_empty() && p.frozen.is_empty() {
                    h.pending = None;
                }
            }
            let Some((min_t, count)) = snap.open else {
                continue;
            };
            let h = &mut *h;
            if let Some(c) = &h.open {
                if c.min_t() == min_t {
                    h.open_persisted = h.open_persisted.max(count);
                    // A full, persisted chunk will not change again: only `last` is needed.
                    if c.is_full() && h.open_persisted == c.count() {
                        h.open = None;
                        h.open_persisted = 0;
                    }
                }
            }
        }
    }

    /// The snapshot could not be written: its data stays in the flushing slots and the next
    /// checkpoint retries it.
    pub(crate) fn abort(&mut self, snaps: &[SeriesSnapshot]) {
        let ids: Vec<u64> = snaps.iter().map(|s| s.id).collect();
        self.mark_dirty(&ids);
    }

    /// Whether the in-order chunks of a series starting in `window` (a 2h window start) are
    /// all stored and none can grow there (see `merge`): no cut chunk of that window waits to
    /// be written, and an open chunk there, if any, is stored whole and full. With
    /// `open_too`, a stored open chunk that is not full counts as settled: the caller keeps
    /// appends out until it has merged it and closed it with [`Head::close_open`].
    pub(crate) fn settled(&self, id: u64, window: i64, open_too: bool) -> bool {
        let Some(h) = self.locked(id) else {
            return true;
        };
        let in_window = |c: &XorChunk| window_start(c.min_t()) == window;
        if h.frozen().iter().chain(h.flushing_frozen()).any(in_window) {
            return false;
        }
        match &h.open {
            Some(c) if in_window(c) => c.count() == h.open_persisted && (open_too || c.is_full()),
            _ => true,
        }
    }

    /// Where a series' open chunk starts, if it has one.
    pub(crate) fn open_min_t(&self, id: u64) -> Option<i64> {
        self.locked(id)?.open.as_ref().map(XorChunk::min_t)
    }

    /// Drops a series' open chunk in `window` that a merge has stored as part of a larger
    /// chunk under another key: the next in-order sample starts a chunk of its own, instead of
    /// the open chunk being written again with samples the merged chunk holds.
    pub(crate) fn close_open(&mut self, id: u64, window: i64) {
        let Some(mut h) = self.locked(id) else {
            return;
        };
        if h.open
            .as_ref()
            .is_some_and(|c| window_start(c.min_t()) == window && c.count() == h.open_persisted)
        {
            h.open = None;
            h.open_persisted = 0;
        }
    }

    /// Whether everything the head holds of a series is persisted (so it may leave memory).
    pub(crate) fn persisted(&self, id: u64) -> bool {
        self.locked(id).is_none_or(|h| {
            h.dirty_generation != self.generation && h.pending.is_none() && !h.unpersisted_open()
        })
    }

    pub(crate) fn remove(&mut self, ids: &[u64]) {
        // Left in `dirty` if listed: a checkpoint skips ids it no longer finds.
        for &id in ids {
            self.series.remove(id);
        }
    }

    /// Chunks held in memory that are not yet persisted (out-of-order buffers not counted).
    pub(crate) fn unpersisted_chunks(&self) -> usize {
        self.series
            .iter()
            .map(|(_, h)| {
                let h = h.lock();
                h.frozen().len() + h.flushing_frozen().len() + usize::from(h.unpersisted_open())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::chunk::{StoredChunk, MAX_SAMPLES};
    use crate::tsdb::partition::WINDOW_MS;

    fn snapshot_all(h: &mut Head) -> Vec<SeriesSnapshot> {
        let ids: Vec<u64> = h.take_dirty().into_iter().collect();
        h.snapshot(&ids, true)
    }

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    fn head_samples(h: &Head, id: u64) -> Vec<(i64, f64)> {
        let mut chunks = ChunkArena::default();
        let mut out = Vec::new();
        h.copy_out(id, i64::MIN, i64::MAX, &mut chunks, &mut out);
        for i in 0..chunks.len() {
            let c = StoredChunk::parse(chunks.get(i)).unwrap();
            out.extend(c.iter().map(Result::unwrap));
        }
        out.sort_by_key(|s| s.t);
        out.into_iter().map(|s| (s.t, s.v)).collect()
    }

    #[test]
    fn a_locked_head_is_no_larger_than_an_unlocked_one_was() {
        // 120 bytes before heads had a lock: at a million series, a word more is 8 MB.
        assert!(std::mem::size_of::<Mutex<SeriesHead>>() <= 120);
    }

    #[test]
    fn cuts_chunks_at_capacity_and_window_boundaries() {
        let mut h = Head::default();
        for i in 0..i64::from(MAX_SAMPLES) + 5 {
            h.apply(1, s(i * 10, i as f64));
        }
        h.apply(1, s(WINDOW_MS, -1.0));
        let snaps = snapshot_all(&mut h);
        assert_eq!(snaps.len(), 1);
        let chunks: Vec<(i64, u16, i64)> = snaps[0]
            .chunks
            .iter()
            .map(|(min_t, v)| {
                let c = StoredChunk::parse(v).unwrap();
                (*min_t, c.count(), c.max_t())
            })
            .collect();
        assert_eq!(
            chunks,
            vec![(0, 120, 1190), (1200, 5, 1240), (WINDOW_MS, 1, WINDOW_MS)]
        );
        assert_eq!(h.last(1), Some((WINDOW_MS, (-1.0f64).to_bits())));
    }

    #[test]
    fn flushing_data_stays_readable_until_commit_and_only_new_data_is_dirty_after() {
        let mut h = Head::default();
        h.apply(1, s(100, 1.0));
        h.apply(1, s(200, 2.0));
        h.apply(1, s(150, 1.5));
        let snaps = snapshot_all(&mut h);
        assert_eq!(snaps[0].ooo, vec![s(150, 1.5)]);
        assert_eq!(h.value_at(1, 150).unwrap(), Some(1.5f64.to_bits()));
        h.apply(1, s(300, 3.0));
        h.apply(1, s(120, 1.2));
        assert_eq!(
            head_samples(&h, 1),
            vec![(100, 1.0), (120, 1.2), (150, 1.5), (200, 2.0), (300, 3.0)]
        );
        h.commit(&snaps);
        // The checkpoint took 150; the open chunk stays (not full) and is persisted up to 2.
        assert_eq!(h.value_at(1, 150).unwrap(), None);
        let next = snapshot_all(&mut h);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].ooo, vec![s(120, 1.2)]);
        let (_, v) = &next[0].chunks[0];
        assert_eq!(StoredChunk::parse(v).unwrap().count(), 3);
        h.commit(&next);
        assert!(snapshot_all(&mut h).is_empty(), "nothing left to persist");
    }

    #[test]
    fn aborted_snapshot_is_retried() {
        let mut h = Head::default();
        h.apply(7, s(5, 0.5));
        h.apply(7, s(3, 0.3));
        let snaps = snapshot_all(&mut h);
        h.abort(&snaps);
        let again = snapshot_all(&mut h);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].chunks, snaps[0].chunks);
        assert_eq!(again[0].ooo, vec![s(3, 0.3)]);
    }

    #[test]
    fn full_persisted_open_chunk_is_released_but_last_sample_kept() {
        let mut h = Head::default();
        for i in 0..i64::from(MAX_SAMPLES) {
            h.apply(1, s(i, 0.0));
        }
        let snaps = snapshot_all(&mut h);
        h.commit(&snaps);
        assert_eq!(h.unpersisted_chunks(), 0);
        assert_eq!(head_samples(&h, 1), vec![]);
        assert_eq!(h.last(1), Some((119, 0)));
    }
}
