//! The series index: series ids, label set ↔ id, per-series time bounds, and their persisted
//! form (column families `series` and `series_times`).
//!
//! Owns which series exist and when they have data. It does not hold samples (the `head`
//! and the chunk partitions do) and never writes to RocksDB itself: callers add its entries
//! to their WriteBatch so index changes commit atomically with the data that needs them.
//! Label sets are held as symbols of one table of strings (`symbols`), read through
//! [`Index::labels`]; they come in and are persisted as the bytes `series` stores
//! (`labelset::StoredLabels`). At open, label sets come from `series`, the inverted index is
//! built from them (persisting it too cost a RocksDB key per label of every new series and
//! took longer to load than to rebuild), and time bounds come from `series_times` (as of the
//! last checkpoint; WAL replay extends them).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use hashbrown::hash_table::HashTable;

use rocksdb::{IteratorMode, WriteBatch};

use crate::db::{self, Db, CF_SERIES, CF_SERIES_TIMES};
use crate::tsdb::labelset::StoredLabels;
use crate::tsdb::postings::MemPostings;
use crate::tsdb::slab::IdSlab;
use crate::tsdb::symbols::{LabelsRef, SymbolLabels, Symbols};
#[cfg(test)]
use crate::Labels;
use crate::{Matcher, StorageError};

/// A series in memory. Its time bounds and head hint are atomics so that an append may move
/// them under the TSDB's shared lock: only the append holding the series writes them (so a
/// plain load and store suffice), while readers may read them meanwhile.
pub(crate) struct SeriesInfo {
    labels: SymbolLabels,
    /// Time bounds of the series' samples; (i64::MAX, i64::MIN) while it has none.
    min_t: AtomicI64,
    max_t: AtomicI64,
    /// Of the label set's bytes: kept so that the label table grows (at every power of two of
    /// series) without hashing every label set again, which at 1M series held the append path
    /// (and so every sender) for half a second.
    hash: u64,
    /// Where the series' head was in the head's slab when last appended to: an append checks
    /// it there instead of looking the id up, a cache miss per series at a million series
    /// (`perf`: 18% of a 1M-series load). A hint only: the head may have moved it since.
    head_hint: AtomicU32,
}

impl SeriesInfo {
    pub(crate) fn min_t(&self) -> i64 {
        self.min_t.load(Ordering::Relaxed)
    }

    pub(crate) fn max_t(&self) -> i64 {
        self.max_t.load(Ordering::Relaxed)
    }

    pub(crate) fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.min_t() <= maxt && self.max_t() >= mint
    }

    /// Widens the bounds to `[min, max]`. Only the append holding the series (or one with
    /// the index to itself) calls it, so reading and then storing loses no other write.
    fn extend(&self, min: i64, max: i64) {
        if min < self.min_t() {
            self.min_t.store(min, Ordering::Relaxed);
        }
        if max > self.max_t() {
            self.max_t.store(max, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Index {
    series: IdSlab<SeriesInfo>,
    /// Label set → series: slots of `series`, keyed by the encoded bytes' hash (the same
    /// bytes, hashed in one call, find a label set).
    by_labels: HashTable<u32>,
    symbols: Symbols,
    hasher: foldhash::fast::RandomState,
    postings: MemPostings,
    /// The newest sample time of any series it held since open (`i64::MIN`: none yet): the
    /// head window counts back from it, so idleness follows the data's clock, not the wall's.
    newest: AtomicI64,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            series: IdSlab::default(),
            by_labels: HashTable::default(),
            symbols: Symbols::default(),
            hasher: foldhash::fast::RandomState::default(),
            postings: MemPostings::default(),
            newest: AtomicI64::new(i64::MIN),
        }
    }
}

/// Refuses label sets that cannot name a series: empty ones, empty names (Prometheus rejects
/// both), and names holding a NUL, which no selector can write. Takes the encoded form.
pub(crate) fn validate_labels(encoded: &[u8]) -> Result<(), StorageError> {
    let mut pairs = crate::batch::byte_pairs(encoded).peekable();
    if pairs.peek().is_none() {
        return Err(StorageError::Invalid("empty label set".into()));
    }
    for (name, _) in pairs {
        if name.is_empty() || name.contains(&0) {
            return Err(StorageError::Invalid(format!(
                "invalid label name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
    }
    Ok(())
}

fn parse_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*<&[u8; 8]>::try_from(k).ok()?))
}

fn corrupt(what: &str, key: &[u8]) -> StorageError {
    StorageError::Corrupt(format!("{what} entry with key {key:02x?}"))
}

/// Index entries for a new series.
pub(crate) fn put_series(
    db: &Db,
    batch: &mut WriteBatch,
    id: u64,
    labels: &StoredLabels,
) -> Result<(), StorageError> {
    batch.put_cf(&db::cf(db, CF_SERIES)?, id.to_be_bytes(), labels.bytes());
    Ok(())
}

pub(crate) fn delete_series(db: &Db, batch: &mut WriteBatch, id: u64) -> Result<(), StorageError> {
    batch.delete_cf(&db::cf(db, CF_SERIES)?, id.to_be_bytes());
    batch.delete_cf(&db::cf(db, CF_SERIES_TIMES)?, id.to_be_bytes());
    Ok(())
}

pub(crate) fn put_times(
    db: &Db,
    batch: &mut WriteBatch,
    id: u64,
    min_t: i64,
    max_t: i64,
) -> Result<(), StorageError> {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&min_t.to_be_bytes());
    v[8..].copy_from_slice(&max_t.to_be_bytes());
    batch.put_cf(&db::cf(db, CF_SERIES_TIMES)?, id.to_be_bytes(), v);
    Ok(())
}

impl Index {
    pub(crate) fn load(db: &Db) -> Result<Index, StorageError> {
        let mut index = Index::default();
        let cf = db::cf(db, CF_SERIES)?;
        for item in db.iterator_cf(&cf, IteratorMode::Start) {
            let (k, v) = item?;
            let id = parse_id(&k).ok_or_else(|| corrupt("series", &k))?;
            let labels = StoredLabels::from_stored(&v).ok_or_else(|| corrupt("series", &k))?;
            index.insert(id, labels);
        }
        let cf = db::cf(db, CF_SERIES_TIMES)?;
        for item in db.iterator_cf(&cf, IteratorMode::Start) {
            let (k, v) = item?;
            let id = parse_id(&k).ok_or_else(|| corrupt("series_times", &k))?;
            let (min, max) = v
                .split_first_chunk::<8>()
                .ok_or_else(|| corrupt("series_times", &k))?;
            let max: &[u8; 8] = max.try_into().map_err(|_| corrupt("series_times", &k))?;
            if let Some(s) = index.series.get_mut(id) {
                let max_t = i64::from_be_bytes(*max);
                *s.min_t.get_mut() = i64::from_be_bytes(*min);
                *s.max_t.get_mut() = max_t;
                index.note_newest(max_t);
            }
        }
        Ok(index)
    }

    /// The id of the label set encoded as an [`crate::EncodedBatch`] holds it, and the slot
    /// of its record (for [`Index::extend_time_at`]; stable until the series is removed).
    pub(crate) fn lookup(&self, encoded: &[u8]) -> Option<(u64, u32)> {
        let h = self.hasher.hash_one(encoded);
        let (series, symbols) = (&self.series, &self.symbols);
        self.by_labels
            .find(h, |&slot| {
                let s = series.at(slot).1;
                s.hash == h && symbols.read(&s.labels).is(encoded)
            })
            .map(|&slot| (series.at(slot).0, slot))
    }

    /// The slot of `id`'s record, if the series is in memory.
    pub(crate) fn slot(&self, id: u64) -> Option<u32> {
        self.series.slot(id)
    }

    /// Whether `slot` holds series `id` (a slot remembered from an earlier append).
    pub(crate) fn holds(&self, slot: u32, id: u64) -> bool {
        self.series.holds(slot, id)
    }

    #[cfg(test)]
    fn id(&self, encoded: &[u8]) -> Option<u64> {
        self.lookup(encoded).map(|(id, _)| id)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&SeriesInfo> {
        self.series.get(id)
    }

    /// The label set of a series in memory.
    pub(crate) fn labels(&self, id: u64) -> Option<LabelsRef<'_>> {
        self.get(id).map(|s| self.labels_of(s))
    }

    /// The label set of a record [`Index::get`] or [`Index::iter`] gave.
    pub(crate) fn labels_of<'a>(&'a self, s: &'a SeriesInfo) -> LabelsRef<'a> {
        self.symbols.read(&s.labels)
    }

    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &SeriesInfo)> {
        self.series.iter()
    }

    pub(crate) fn postings(&self) -> &MemPostings {
        &self.postings
    }

    /// Adds a series with no samples yet and returns its slot. An id is inserted once (the
    /// caller looked its label set up first), so neither table holds it already.
    pub(crate) fn insert(&mut self, id: u64, labels: StoredLabels) -> u32 {
        debug_assert!(self.lookup(labels.bytes()).is_none() && self.get(id).is_none());
        self.postings.add_series(id, labels.pairs());
        let hash = self.hasher.hash_one(labels.bytes());
        let slot = self.series.insert(
            id,
            SeriesInfo {
                labels: self.symbols.add(&labels),
                min_t: AtomicI64::new(i64::MAX),
                max_t: AtomicI64::new(i64::MIN),
                hash,
                head_hint: AtomicU32::new(u32::MAX),
            },
        );
        let series = &self.series;
        self.by_labels
            .insert_unique(hash, slot, |&s| series.at(s).1.hash);
        slot
    }

    /// Widens a series' time bounds to take `t`, and notes it as the newest if it is.
    /// Shared, as [`Index::extend_time_at`].
    pub(crate) fn extend_time(&self, id: u64, t: i64) {
        if let Some(slot) = self.series.slot(id) {
            self.extend_time_at(slot, t, t);
            self.note_newest(t);
        }
    }

    /// Widens the time bounds of the series at a slot [`Index::lookup`] or [`Index::insert`]
    /// gave (no lookup by id on the append path) to `[min, max]`. Shared: the caller holds
    /// the series, so no other append moves its bounds; it notes `max` with
    /// [`Index::note_newest`] itself, once for all its series.
    pub(crate) fn extend_time_at(&self, slot: u32, min: i64, max: i64) {
        self.series.at(slot).1.extend(min, max);
    }

    /// A sample at `t` was stored.
    pub(crate) fn note_newest(&self, t: i64) {
        self.newest.fetch_max(t, Ordering::Relaxed);
    }

    /// Where the series at `slot` last had its head (see `SeriesInfo::head_hint`).
    pub(crate) fn head_hint(&self, slot: u32) -> u32 {
        self.series.at(slot).1.head_hint.load(Ordering::Relaxed)
    }

    pub(crate) fn set_head_hint(&self, slot: u32, head_slot: u32) {
        let hint = &self.series.at(slot).1.head_hint;
        // Almost always unchanged: not written then, so the record's line stays clean.
        if hint.load(Ordering::Relaxed) != head_slot {
            hint.store(head_slot, Ordering::Relaxed);
        }
    }

    /// The newest sample time seen since open, if any.
    pub(crate) fn newest(&self) -> Option<i64> {
        let newest = self.newest.load(Ordering::Relaxed);
        (newest != i64::MIN).then_some(newest)
    }

    /// Series whose samples all lie before `cutoff` (or that have none), sorted by id: past
    /// retention, or idle past the head window.
    pub(crate) fn expired(&self, cutoff: i64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .series
            .iter()
            .filter(|(_, s)| s.max_t() < cutoff)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Removes series (ids sorted).
    pub(crate) fn remove(&mut self, ids: &[u64]) {
        let mut removed = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(slot) = self.series.slot(id) else {
                continue;
            };
            let hash = self.series.at(slot).1.hash;
            if let Ok(e) = self.by_labels.find_entry(hash, |&s| s == slot) {
                e.remove();
            }
            if let Some(s) = self.series.remove(id) {
                removed.push((id, s.labels));
            }
        }
        // The postings find their lists by the strings, which leave the table after.
        self.postings.remove(
            removed
                .iter()
                .map(|(id, labels)| (*id, self.symbols.read(labels))),
        );
        for (_, labels) in &removed {
            self.symbols.remove(labels);
        }
    }

    /// No sample older than `t` remains (its partitions were dropped).
    pub(crate) fn raise_min_t(&mut self, t: i64) {
        for s in self.series.values_mut() {
            let min_t = s.min_t.get_mut();
            *min_t = (*min_t).max(t);
        }
    }

    /// Sorted ids of the series matching all matchers.
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        self.postings.select(matchers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn label_sets_find_their_ids_across_growth_and_removals() {
        let sets: Vec<Labels> = (0..5000)
            .map(|i| Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]))
            .collect();
        let mut index = Index::default();
        for (i, l) in sets.iter().enumerate() {
            index.insert(i as u64 * 3, StoredLabels::encode(l));
        }
        let evens: Vec<u64> = (0..sets.len() as u64).step_by(2).map(|i| i * 3).collect();
        index.remove(&evens);
        assert_eq!(index.len(), sets.len() - evens.len());
        // Slots freed above are taken again by new series.
        index.insert(90_000, StoredLabels::encode(&sets[0]));
        assert_eq!(index.len(), sets.len() / 2 + 1);
        // The removed series' values left the string table; `__name__`, `m`, `i` and the
        // values of the series held remain.
        assert_eq!(index.symbols.len(), 3 + sets.len() / 2 + 1);
        for (i, l) in sets.iter().enumerate() {
            let want = match i {
                0 => Some(90_000),
                _ if i % 2 == 0 => None,
                _ => Some(i as u64 * 3),
            };
            assert_eq!(index.id(StoredLabels::encode(l).bytes()), want, "{l}");
            if let Some(id) = want {
                assert_eq!(index.labels(id).unwrap().to_labels(), *l);
            }
        }
        let other = StoredLabels::encode(&Labels::from_pairs([("__name__", "other")]));
        assert_eq!(index.id(other.bytes()), None);
        assert_eq!(index.select(&[]).len(), index.len());
    }

    proptest! {
        #[test]
        fn label_sets_round_trip(pairs in proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..8)) {
            let labels = Labels::from_pairs(pairs);
            let stored = StoredLabels::encode(&labels);
            prop_assert_eq!(StoredLabels::from_stored(stored.bytes()).map(|s| s.to_labels()), Some(labels));
        }
    }

    #[test]
    fn invalid_label_sets_are_refused() {
        let check = |l: Labels| validate_labels(StoredLabels::encode(&l).bytes());
        assert!(check(Labels::default()).is_err());
        assert!(check(Labels::from_pairs([("a\0b", "x")])).is_err());
        assert!(check(Labels::from_pairs([("", "x")])).is_err());
        assert!(check(Labels::from_pairs([("a", "x\0y")])).is_ok());
    }
}
