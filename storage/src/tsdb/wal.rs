//! The write-ahead log of appended samples, kept in the `wal` column family (and made
//! durable by RocksDB's own WAL, as part of each append's WriteBatch): record encoding, the
//! truncation a checkpoint adds to its batch, and iteration for replay at open.
//!
//! Owns the record format only: key = sequence number (u64 BE); value = version byte, then per
//! series: id, sample count, and per sample the zigzag varint delta of t from the previous
//! sample of the group and the value's 8 raw bytes. It does not decide what a replayed sample
//! means (the facade re-validates it exactly like an append).

use rocksdb::{IteratorMode, WriteBatch};

use crate::db::{self, Db, CF_WAL};
use crate::encoding::{put_uvarint, unzigzag, zigzag, Cursor};
use crate::{Sample, StorageError};

const VERSION: u8 = 1;

pub(crate) fn encode(groups: &[(u64, Vec<Sample>)]) -> Vec<u8> {
    // Sized for the usual record (a few bytes of id and count per series, a one- or two-byte
    // time delta and the value per sample), so that a large one is not copied as it grows.
    let samples: usize = groups.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(1 + groups.len() * 6 + samples * 10);
    out.push(VERSION);
    for (id, samples) in groups {
        let id = *id;
        put_uvarint(&mut out, id);
        put_uvarint(&mut out, samples.len() as u64);
        let mut prev = 0i64;
        for s in samples {
            put_uvarint(&mut out, zigzag(s.t.wrapping_sub(prev)));
            out.extend_from_slice(&s.v.to_bits().to_le_bytes());
            prev = s.t;
        }
    }
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<(u64, Vec<Sample>)>> {
    let mut c = Cursor::new(bytes);
    if c.u8()? != VERSION {
        return None;
    }
    let mut groups = Vec::new();
    while !c.is_empty() {
        let id = c.uvarint()?;
        let n = usize::try_from(c.uvarint()?).ok()?;
        // Every sample takes at least 9 bytes: a count beyond that is corruption, not a
        // reason to allocate.
        if n > c.rest().len() / 9 {
            return None;
        }
        let mut samples = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            let t = prev.wrapping_add(unzigzag(c.uvarint()?));
            let mut v = [0u8; 8];
            for b in &mut v {
                *b = c.u8()?;
            }
            samples.push(Sample {
                t,
                v: f64::from_bits(u64::from_le_bytes(v)),
            });
            prev = t;
        }
        groups.push((id, samples));
    }
    Some(groups)
}

pub(crate) fn put(
    db: &Db,
    batch: &mut WriteBatch,
    seq: u64,
    record: &[u8],
) -> Result<(), StorageError> {
    batch.put_cf(&db::cf(db, CF_WAL)?, seq.to_be_bytes(), record);
    Ok(())
}

/// Removes records [0, end): they are covered by the chunks written in the same batch.
pub(crate) fn truncate(db: &Db, batch: &mut WriteBatch, end: u64) -> Result<(), StorageError> {
    batch.delete_range_cf(&db::cf(db, CF_WAL)?, 0u64.to_be_bytes(), end.to_be_bytes());
    Ok(())
}

/// Compacts the truncated range away, so records already checkpointed stop taking disk
/// (a range tombstone alone only hides them).
pub(crate) fn compact_truncated(db: &Db, end: u64) -> Result<(), StorageError> {
    db.compact_range_cf(
        &db::cf(db, CF_WAL)?,
        None::<&[u8]>,
        Some(end.to_be_bytes().as_slice()),
    );
    Ok(())
}

/// Calls `f` with every record in sequence order; returns the next free sequence number.
pub(crate) fn replay(
    db: &Db,
    mut f: impl FnMut(Vec<(u64, Vec<Sample>)>) -> Result<(), StorageError>,
) -> Result<u64, StorageError> {
    let cf = db::cf(db, CF_WAL)?;
    let mut next = 0;
    for item in db.iterator_cf(&cf, IteratorMode::Start) {
        let (k, v) = item?;
        let seq = <[u8; 8]>::try_from(&*k).map(u64::from_be_bytes);
        let (Ok(seq), Some(groups)) = (seq, decode(&v)) else {
            return Err(StorageError::Corrupt(format!(
                "wal record with key {k:02x?}"
            )));
        };
        f(groups)?;
        next = seq + 1;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_round_trip_bit_exactly(groups in proptest::collection::vec(
            (any::<u64>(), proptest::collection::vec((any::<i64>(), any::<u64>()), 0..20)), 0..5)
        ) {
            let groups: Vec<(u64, Vec<Sample>)> = groups
                .into_iter()
                .map(|(id, ss)| (id, ss.into_iter().map(|(t, b)| Sample { t, v: f64::from_bits(b) }).collect()))
                .collect();
            let bytes = encode(&groups);
            let back = decode(&bytes).expect("decodes");
            let bits = |g: &[(u64, Vec<Sample>)]| -> Vec<(u64, Vec<(i64, u64)>)> {
                g.iter().map(|(id, s)| (*id, s.iter().map(|s| (s.t, s.v.to_bits())).collect())).collect()
            };
            prop_assert_eq!(bits(&back), bits(&groups));
            if bytes.len() > 1 {
                prop_assert!(decode(&bytes[..bytes.len() - 1]).is_none());
            }
        }
    }
}
