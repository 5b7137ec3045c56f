//! Where native histogram samples live. An appended sample is one key (series id | t) in the
//! `histograms` column family, written in the same WriteBatch as the rest of its append: that
//! column family is the histograms' head, durable as it is written. The checkpoint seals
//! head samples into compressed chunks (`chunk::histogram`) in the day partitions, so that
//! retention drops them with the day like float chunks. A sealed
//! chunk's key is a chunk key whose series id has [`SEALED`] set: float reads, which seek
//! by plain id, never meet one.
//!
//! Owns both key formats and the moves between them; validation rules, locking and when to
//! seal are the facade's. The head's (series id | t) key is also the exemplars' (`exemplars`),
//! which share the walks over it ([`for_each_series`], [`delete_before`]).

use std::ops::ControlFlow;

use rocksdb::{DBRawIterator, WriteBatch};

use crate::db::{self, Db, CF_HISTOGRAMS};
use crate::encoding::Cursor;
use crate::histogram::{Histogram, HistogramSample};
use crate::tsdb::chunk::histogram::{self as codec, HistogramChunk};
use crate::tsdb::chunk::MAX_SAMPLES;
use crate::tsdb::partition::{
    self, chunk_key, partition_start, window_start, Partitions, MIN_T, WINDOW_MS,
};
use crate::StorageError;

use super::corrupt;

/// Set in the series id of a sealed histogram chunk's key. Series ids count up from 0 and
/// never reach it.
const SEALED: u64 = 1 << 63;

/// Keys sort by series, then time: flipping the sign bit makes big-endian order numeric.
pub(crate) fn key(id: u64, t: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
    k
}

pub(crate) fn parse_key(k: &[u8]) -> Option<(u64, i64)> {
    let id = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let t = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?) ^ (1 << 63);
    Some((id, t as i64))
}

fn decode(v: &[u8]) -> Result<Histogram, StorageError> {
    let mut c = Cursor::new(v);
    Histogram::decode(&mut c)
        .filter(|_| c.is_empty())
        .ok_or_else(|| StorageError::Corrupt("histogram sample".into()))
}

pub(crate) fn put(
    db: &Db,
    wb: &mut WriteBatch,
    id: u64,
    s: &HistogramSample,
) -> Result<(), StorageError> {
    let mut v = Vec::new();
    s.h.encode(&mut v);
    wb.put_cf(&db::cf(db, CF_HISTOGRAMS)?, key(id, s.t), v);
    Ok(())
}

/// The histogram stored for a series at `t`, if any: in the head, else sealed. In that
/// order, so that a seal committing in between cannot hide it (a RocksDB iterator sees the
/// database as it was when created).
pub(crate) fn get(
    db: &Db,
    partitions: &Partitions,
    id: u64,
    t: i64,
) -> Result<Option<Histogram>, StorageError> {
    let cf = db::cf(db, CF_HISTOGRAMS)?;
    if let Some(v) = db.get_cf(&cf, key(id, t))? {
        return decode(&v).map(Some);
    }
    let start = partition_start(partition::clamp(t));
    if !partitions.contains(start) {
        return Ok(None);
    }
    let cf = db::cf(db, &partition::cf_name(start))?;
    let mut sealed = Vec::new();
    scan_sealed(&mut db.raw_iterator_cf(&cf), id, t, t, &mut sealed)?;
    Ok(sealed.pop().map(|s| s.h))
}

/// Whether the partition `it` reads holds any sealed histogram chunk: one seek, which saves
/// a seek per series in a partition that has none (the usual case).
pub(crate) fn has_sealed(it: &mut DBRawIterator<'_>) -> Result<bool, StorageError> {
    it.seek(chunk_key(SEALED, MIN_T, 0));
    it.status()?;
    Ok(it.valid())
}

/// Appends to `out` the sealed samples of series `id` in [lo, hi] that the partition `it`
/// reads holds, in chunk order (chunks of one window sealed at different checkpoints may
/// interleave: the caller sorts).
pub(crate) fn scan_sealed(
    it: &mut DBRawIterator<'_>,
    id: u64,
    lo: i64,
    hi: i64,
    out: &mut Vec<HistogramSample>,
) -> Result<(), StorageError> {
    partition::scan_chunks(it, id | SEALED, lo, hi, |_, value| {
        let chunk = HistogramChunk::parse(value).map_err(corrupt)?;
        if chunk.max_t() >= lo {
            for s in chunk.iter() {
                let s = s.map_err(corrupt)?;
                if (lo..=hi).contains(&s.t) {
                    out.push(s);
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    })
}

/// Adds to `wb` the sealing of `samples` (sorted, all of series `id`, read from the head):
/// per 2h window, onto the window's last sealed chunk when they all come after it and it has
/// room, else into new chunks (of at most [`MAX_SAMPLES`]) under tiebreaks from
/// `next_tiebreak`; and their deletion from the head.
pub(crate) fn seal(
    db: &Db,
    partitions: &Partitions,
    wb: &mut WriteBatch,
    id: u64,
    samples: &[HistogramSample],
    next_tiebreak: &mut u64,
) -> Result<(), StorageError> {
    let head = db::cf(db, CF_HISTOGRAMS)?;
    for s in samples {
        wb.delete_cf(&head, key(id, s.t));
    }
    for window in samples.chunk_by(|a, b| window_start(a.t) == window_start(b.t)) {
        let start = partition_start(window[0].t);
        partitions.ensure(db, start)?;
        let cf = db::cf(db, &partition::cf_name(start))?;
        let mut pieces = window;
        if let Some((k, value)) = last_sealed(db, &cf, id, window[0].t)? {
            let chunk = HistogramChunk::parse(&value).map_err(corrupt)?;
            if chunk.count() < MAX_SAMPLES && chunk.max_t() < window[0].t {
                let mut merged = chunk
                    .iter()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(corrupt)?;
                let room = usize::from(MAX_SAMPLES) - merged.len();
                let (now, rest) = window.split_at(room.min(window.len()));
                merged.extend_from_slice(now);
                wb.put_cf(&cf, k, codec::encode(&merged));
                pieces = rest;
            }
        }
        for piece in pieces.chunks(usize::from(MAX_SAMPLES)) {
            let k = chunk_key(id | SEALED, piece[0].t, *next_tiebreak);
            *next_tiebreak += 1;
            wb.put_cf(&cf, k, codec::encode(piece));
        }
    }
    Ok(())
}

type ChunkKey = [u8; partition::KEY_LEN];

/// The key and value of the sealed chunk of series `id` with the greatest key in the window
/// holding `t`, if any: the one later samples of the window extend.
fn last_sealed(
    db: &Db,
    cf: &db::Cf<'_>,
    id: u64,
    t: i64,
) -> Result<Option<(ChunkKey, Vec<u8>)>, StorageError> {
    let start = window_start(t);
    let mut it = db.raw_iterator_cf(cf);
    it.seek_for_prev(chunk_key(id | SEALED, start + WINDOW_MS - 1, u64::MAX));
    it.status()?;
    let (Some(k), Some(v)) = (it.key(), it.value()) else {
        return Ok(None);
    };
    Ok(match partition::parse_chunk_key(k) {
        Some((kid, min_t, tiebreak)) if kid == id | SEALED && min_t >= start => {
            Some((chunk_key(kid, min_t, tiebreak), v.to_vec()))
        }
        _ => None,
    })
}

/// Compacts the head, so that sealed samples stop taking disk: a deletion only hides a
/// key until a compaction reaches its file, and sealing deletes keys of every series.
pub(crate) fn compact_head(db: &Db) -> Result<(), StorageError> {
    db.compact_range_cf(&db::cf(db, CF_HISTOGRAMS)?, None::<&[u8]>, None::<&[u8]>);
    Ok(())
}

/// The series with samples in the head: (id, oldest t, newest t).
pub(crate) fn head_series(db: &Db) -> Result<Vec<(u64, i64, i64)>, StorageError> {
    let mut out = Vec::new();
    for_each_series(db, CF_HISTOGRAMS, |id, first, last| {
        out.push((id, first, last))
    })?;
    Ok(out)
}

/// Reads the head's histogram samples of one series after another through a single RocksDB
/// iterator: a query touches thousands of series, and a fresh iterator per series costs more
/// than the seek itself.
pub(crate) struct Scanner<'a> {
    it: DBRawIterator<'a>,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(db: &'a Db) -> Result<Scanner<'a>, StorageError> {
        let cf = db::cf(db, CF_HISTOGRAMS)?;
        Ok(Scanner {
            it: db.raw_iterator_cf(&cf),
        })
    }

    /// The head's histogram samples of a series in [lo, hi], ascending by t.
    pub(crate) fn scan(
        &mut self,
        id: u64,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<HistogramSample>, StorageError> {
        let mut out = Vec::new();
        self.it.seek(key(id, lo));
        while let (Some(k), Some(v)) = (self.it.key(), self.it.value()) {
            let Some((kid, t)) = parse_key(k) else {
                return Err(StorageError::Corrupt(format!("histogram key {k:02x?}")));
            };
            if kid != id || t > hi {
                break;
            }
            out.push(HistogramSample { t, h: decode(v)? });
            self.it.next();
        }
        self.it.status()?;
        Ok(out)
    }
}

/// Calls `f(id, first_t, last_t)` for every series with keys in the column family `cf`
/// (keyed by [`key`]): two seeks per series, then a jump past it, so the cost follows the
/// number of series, not of keys.
pub(crate) fn for_each_series(
    db: &Db,
    cf: &str,
    mut f: impl FnMut(u64, i64, i64),
) -> Result<(), StorageError> {
    let name = cf;
    let cf = db::cf(db, name)?;
    let mut it = db.raw_iterator_cf(&cf);
    it.seek_to_first();
    while let Some(k) = it.key() {
        let (id, first) =
            parse_key(k).ok_or_else(|| StorageError::Corrupt(format!("{name} key {k:02x?}")))?;
        it.seek_for_prev(key(id, i64::MAX));
        let last = it
            .key()
            .and_then(parse_key)
            .filter(|(kid, _)| *kid == id)
            .map_or(first, |(_, t)| t);
        f(id, first, last);
        match id.checked_add(1) {
            Some(next) => it.seek(key(next, i64::MIN)),
            None => break,
        }
    }
    it.status()?;
    Ok(())
}

/// Adds to `wb` the deletion of every key of the column family `cf` (keyed by [`key`])
/// older than `cutoff`; returns the number of series that had some.
pub(crate) fn delete_before(
    db: &Db,
    wb: &mut WriteBatch,
    cf: &str,
    cutoff: i64,
) -> Result<usize, StorageError> {
    let mut expired = Vec::new();
    for_each_series(db, cf, |id, first, _| {
        if first < cutoff {
            expired.push(id);
        }
    })?;
    let cf = db::cf(db, cf)?;
    for &id in &expired {
        wb.delete_range_cf(&cf, key(id, i64::MIN), key(id, cutoff));
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_series_then_time() {
        let mut keys = [
            key(2, -5),
            key(1, 7),
            key(1, -3),
            key(2, 0),
            key(1, i64::MIN),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().filter_map(|k| parse_key(k)).collect();
        assert_eq!(
            parsed,
            vec![(1, i64::MIN), (1, -3), (1, 7), (2, -5), (2, 0)]
        );
    }
}
