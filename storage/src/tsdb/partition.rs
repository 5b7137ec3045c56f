//! Time partitioning of chunks: the valid time range, the 2h chunk windows, the one-day
//! partitions (one column family each, named `chunks_<start ms>`), the chunk key layout, and
//! retention's choice of which partitions have expired.
//!
//! Owns time math and chunk key bytes; it does not encode chunk contents (the `chunk`
//! module) nor decide what goes into a chunk (the `head`).
//!
//! Chunk key: series id (u64 BE) | chunk min t (i64 with the sign bit flipped, BE, so keys
//! sort by time even for negative timestamps) | tiebreak (u64 BE: 0 for the series' in-order
//! chunk starting at that time, a unique counter for out-of-order chunks). Every chunk lies
//! inside one 2h window, so the chunks holding samples ≥ mint all have keys ≥
//! (id, window_start(mint), 0): a range read is one seek plus a sequential scan.

use std::collections::BTreeSet;
use std::ops::{ControlFlow, RangeInclusive};

use parking_lot::RwLock;
use rocksdb::{Cache, DBRawIterator};

use crate::db::{self, Db};
use crate::StorageError;

/// Chunk windows: a chunk never spans a multiple of this.
pub(crate) const WINDOW_MS: i64 = 2 * 3600 * 1000;
/// Partition length; a multiple of the window so no chunk crosses partitions.
pub(crate) const PARTITION_MS: i64 = 24 * 3600 * 1000;

/// Timestamps outside ±2^62 ms (±146 million years) are refused at append, which keeps all
/// window and partition arithmetic free of overflow.
pub(crate) const MIN_T: i64 = -(1 << 62);
pub(crate) const MAX_T: i64 = 1 << 62;

pub(crate) const KEY_LEN: usize = 24;
const CF_PREFIX: &str = "chunks_";

pub(crate) fn clamp(t: i64) -> i64 {
    t.clamp(MIN_T, MAX_T)
}

/// Start of the 2h window holding `t` (t within [MIN_T, MAX_T]).
pub(crate) fn window_start(t: i64) -> i64 {
    t.div_euclid(WINDOW_MS) * WINDOW_MS
}

/// Start of the partition holding `t` (t within [MIN_T, MAX_T]).
pub(crate) fn partition_start(t: i64) -> i64 {
    t.div_euclid(PARTITION_MS) * PARTITION_MS
}

pub(crate) fn cf_name(start: i64) -> String {
    format!("{CF_PREFIX}{start}")
}

pub(crate) fn parse_cf_name(name: &str) -> Option<i64> {
    name.strip_prefix(CF_PREFIX)?.parse().ok()
}

pub(crate) fn chunk_key(id: u64, min_t: i64, tiebreak: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..16].copy_from_slice(&((min_t as u64) ^ (1 << 63)).to_be_bytes());
    k[16..].copy_from_slice(&tiebreak.to_be_bytes());
    k
}

/// (series id, chunk min t, tiebreak).
pub(crate) fn parse_chunk_key(k: &[u8]) -> Option<(u64, i64, u64)> {
    let k: &[u8; KEY_LEN] = k.try_into().ok()?;
    let word = |i: usize| {
        u64::from_be_bytes([
            k[i],
            k[i + 1],
            k[i + 2],
            k[i + 3],
            k[i + 4],
            k[i + 5],
            k[i + 6],
            k[i + 7],
        ])
    };
    Some((word(0), (word(8) ^ (1 << 63)) as i64, word(16)))
}

/// Visits, in key order, the chunks of series `id` in one partition that may hold samples in
/// [mint, maxt] — those whose min t lies in [window_start(mint), maxt] — with their tiebreak
/// and stored value: one seek, then a sequential scan. `f` may stop the scan early.
pub(crate) fn scan_chunks(
    it: &mut DBRawIterator<'_>,
    id: u64,
    mint: i64,
    maxt: i64,
    mut f: impl FnMut(u64, &[u8]) -> Result<ControlFlow<()>, StorageError>,
) -> Result<(), StorageError> {
    it.seek(chunk_key(id, window_start(mint), 0));
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        match parse_chunk_key(k) {
            Some((kid, min_t, tiebreak)) if kid == id && min_t <= maxt => {
                if f(tiebreak, v)?.is_break() {
                    return Ok(());
                }
            }
            _ => break,
        }
        it.next();
    }
    Ok(it.status()?)
}

/// The in-order chunks (tiebreak 0) of series `id` starting in the 2h window that starts at
/// `window`, as (min t, stored value), oldest first: one seek, then a sequential scan.
pub(crate) fn window_chunks(
    it: &mut DBRawIterator<'_>,
    id: u64,
    window: i64,
) -> Result<Vec<(i64, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    it.seek(chunk_key(id, window, 0));
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        match parse_chunk_key(k) {
            Some((kid, min_t, tiebreak)) if kid == id && window_start(min_t) == window => {
                if tiebreak == 0 {
                    out.push((min_t, v.to_vec()));
                }
            }
            _ => break,
        }
        it.next();
    }
    it.status()?;
    Ok(out)
}

/// The newest in-order chunk (tiebreak 0) of series `id` with min t at most `maxt`, in one
/// partition: one backwards seek. In-order chunks do not overlap, so that is the series'
/// newest in-order chunk up to `maxt`.
pub(crate) fn newest_in_order_chunk(
    it: &mut DBRawIterator<'_>,
    id: u64,
    maxt: i64,
) -> Result<Option<Vec<u8>>, StorageError> {
    it.seek_for_prev(chunk_key(id, maxt, u64::MAX));
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        match parse_chunk_key(k) {
            Some((kid, _, 0)) if kid == id => return Ok(Some(v.to_vec())),
            Some((kid, _, _)) if kid == id => it.prev(),
            _ => break,
        }
    }
    it.status()?;
    Ok(None)
}

/// The partitions that exist (as column families), by start time.
pub(crate) struct Partitions {
    starts: RwLock<BTreeSet<i64>>,
    /// The database's block cache, which new partitions read through too.
    cache: Cache,
}

impl Partitions {
    pub(crate) fn new(starts: impl IntoIterator<Item = i64>, cache: Cache) -> Partitions {
        Partitions {
            starts: RwLock::new(starts.into_iter().collect()),
            cache,
        }
    }

    /// Existing partitions that may hold samples in `range`, oldest first.
    pub(crate) fn overlapping(&self, range: RangeInclusive<i64>) -> Vec<i64> {
        let (lo, hi) = (partition_start(clamp(*range.start())), clamp(*range.end()));
        if lo > hi {
            return Vec::new();
        }
        self.starts.read().range(lo..=hi).copied().collect()
    }

    pub(crate) fn contains(&self, start: i64) -> bool {
        self.starts.read().contains(&start)
    }

    pub(crate) fn all(&self) -> Vec<i64> {
        self.starts.read().iter().copied().collect()
    }

    /// Creates the column family of the partition starting at `start` unless it exists.
    pub(crate) fn ensure(&self, db: &Db, start: i64) -> Result<(), StorageError> {
        if self.contains(start) {
            return Ok(());
        }
        let mut starts = self.starts.write();
        if starts.insert(start) {
            if let Err(e) = db.create_cf(cf_name(start), &db::chunk_cf_options(&self.cache)) {
                starts.remove(&start);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Partitions that end at or before `cutoff`: all their samples are older than it.
    pub(crate) fn expired(&self, cutoff: i64) -> Vec<i64> {
        self.starts
            .read()
            .iter()
            .copied()
            .take_while(|s| s.saturating_add(PARTITION_MS) <= cutoff)
            .collect()
    }

    /// Drops the column family of a partition: frees its files without rewriting anything.
    pub(crate) fn drop_partition(&self, db: &Db, start: i64) -> Result<(), StorageError> {
        if self.starts.write().remove(&start) {
            db.drop_cf(&cf_name(start))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_and_partitions_align_down_also_for_negative_times() {
        assert_eq!(window_start(0), 0);
        assert_eq!(window_start(WINDOW_MS - 1), 0);
        assert_eq!(window_start(WINDOW_MS), WINDOW_MS);
        assert_eq!(window_start(-1), -WINDOW_MS);
        assert_eq!(partition_start(-1), -PARTITION_MS);
        assert_eq!(partition_start(PARTITION_MS + 5), PARTITION_MS);
        assert_eq!(window_start(MIN_T) % WINDOW_MS, 0);
        assert_eq!(PARTITION_MS % WINDOW_MS, 0);
        assert_eq!(parse_cf_name(&cf_name(-PARTITION_MS)), Some(-PARTITION_MS));
        assert_eq!(parse_cf_name("series"), None);
    }

    proptest! {
        #[test]
        fn chunk_keys_round_trip_and_sort_by_series_then_time(
            a in (any::<u64>(), MIN_T..=MAX_T, any::<u64>()),
            b in (any::<u64>(), MIN_T..=MAX_T, any::<u64>()),
        ) {
            let (ka, kb) = (chunk_key(a.0, a.1, a.2), chunk_key(b.0, b.1, b.2));
            prop_assert_eq!(parse_chunk_key(&ka), Some(a));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }
    }
}
