//! Native histogram samples in the `histograms` column family, one key per sample
//! (series id | t), written in the same WriteBatch as the rest of an append. Owns that key
//! format; validation rules and locking are the facade's.

use rocksdb::{DBRawIterator, WriteBatch};

use crate::db::{self, Db, CF_HISTOGRAMS};
use crate::encoding::Cursor;
use crate::histogram::{Histogram, HistogramSample};
use crate::StorageError;

/// Keys sort by series, then time: flipping the sign bit makes big-endian order numeric.
fn key(id: u64, t: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(u64, i64)> {
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

/// The histogram stored for a series at `t`, if any.
pub(crate) fn get(db: &Db, id: u64, t: i64) -> Result<Option<Histogram>, StorageError> {
    let cf = db::cf(db, CF_HISTOGRAMS)?;
    match db.get_cf(&cf, key(id, t))? {
        Some(v) => decode(&v).map(Some),
        None => Ok(None),
    }
}

/// Reads the histogram samples of one series after another through a single RocksDB
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

    /// The histogram samples of a series in [lo, hi], ascending by t.
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

/// Calls `f(id, first_t, last_t)` for every series with histogram samples: two seeks per
/// series, then a jump past it, so the cost follows the number of series, not of samples.
fn for_each_series(db: &Db, mut f: impl FnMut(u64, i64, i64)) -> Result<(), StorageError> {
    let cf = db::cf(db, CF_HISTOGRAMS)?;
    let mut it = db.raw_iterator_cf(&cf);
    it.seek_to_first();
    while let Some(k) = it.key() {
        let (id, first) =
            parse_key(k).ok_or_else(|| StorageError::Corrupt(format!("histogram key {k:02x?}")))?;
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

/// Time bounds (id, min_t, max_t) of the histogram samples of every series that has some.
pub(crate) fn bounds(db: &Db) -> Result<Vec<(u64, i64, i64)>, StorageError> {
    let mut out = Vec::new();
    for_each_series(db, |id, first, last| out.push((id, first, last)))?;
    Ok(out)
}

/// Adds to `wb` the deletion of every histogram sample older than `cutoff`; returns the
/// number of series that had some.
pub(crate) fn delete_before(
    db: &Db,
    wb: &mut WriteBatch,
    cutoff: i64,
) -> Result<usize, StorageError> {
    let mut expired = Vec::new();
    for_each_series(db, |id, first, _| {
        if first < cutoff {
            expired.push(id);
        }
    })?;
    let cf = db::cf(db, CF_HISTOGRAMS)?;
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
