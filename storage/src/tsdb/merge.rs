//! Window merges: once a 2h window can take no more in-order samples of a series, its
//! chunks there are read back and stored as one (or as few as [`MERGED_MAX_SAMPLES`] allows).
//!
//! Why: the head cuts a chunk every [`MAX_SAMPLES`](super::chunk::MAX_SAMPLES) samples, so
//! that an open chunk stays small in memory and cheap to rewrite. On disk every chunk then
//! costs a key and a header, about 50 bytes, which is a third of a 120-sample chunk of what
//! exporters send. A whole window in one chunk pays that once.
//!
//! When: after each checkpoint, for the windows that closed since the last merge (the newest
//! sample of any series is in a later window); at a final checkpoint (shutdown, flush) for
//! the open windows too. A series' window is merged only when the head holds nothing of it
//! that is not stored, and nothing that can still grow there (see [`Head::settled`]), so a
//! chunk the head writes later never repeats merged samples: out-of-order samples go to
//! chunks of their own (a tiebreak key), which merges leave alone.
//!
//! Owns which chunks are merged and when; chunk bytes are the `chunk` module's, keys the
//! `partition` module's.
//!
//! [`Head::settled`]: super::head::Head::settled

use rocksdb::WriteBatch;
use tracing::debug;

use super::chunk::{self, CorruptChunk, StoredChunk};
use super::partition::{self, chunk_key, partition_start, window_chunks, WINDOW_MS};
use super::{corrupt, Inner};
use crate::db;
use crate::{Sample, StorageError};

/// Samples a merged chunk holds at most: a 2h window at a 10 s interval fits one. Decoding a
/// chunk to read a few of its samples stays in the microseconds.
pub(crate) const MERGED_MAX_SAMPLES: usize = 1024;

/// Series whose windows are merged per WriteBatch.
const MERGE_SLICE_SERIES: usize = 4096;

/// Windows a pass looks at at most, newest first: a day. Older windows a pass skips (after a
/// jump of the newest timestamp) keep their chunks as they are.
const MAX_WINDOWS_PER_PASS: i64 = 12;

/// Stored chunks of one series as (min t, stored value), oldest first.
type Chunks = Vec<(i64, Vec<u8>)>;

/// The stored chunks replacing `chunks` (one series' in-order chunks of one window, oldest
/// first, as (min t, stored value)): their samples in pieces of at most
/// [`MERGED_MAX_SAMPLES`], each in its smallest form, as (min t, value). `None` when that
/// saves no chunk, or when the chunks overlap (the head never writes such, but stored bytes
/// are not trusted to be what it wrote).
pub(crate) fn merge(chunks: &[(i64, Vec<u8>)]) -> Result<Option<Chunks>, CorruptChunk> {
    let mut samples: Vec<Sample> = Vec::new();
    for (_, value) in chunks {
        let chunk = StoredChunk::parse(value)?;
        let before = samples.len();
        samples.reserve(usize::from(chunk.count()));
        for s in chunk.iter() {
            samples.push(s?);
        }
        if before > 0 && samples.len() > before && samples[before].t <= samples[before - 1].t {
            return Ok(None);
        }
    }
    let pieces = samples.len().div_ceil(MERGED_MAX_SAMPLES);
    if pieces >= chunks.len() {
        return Ok(None);
    }
    Ok(Some(
        samples
            .chunks(samples.len().div_ceil(pieces))
            .map(|piece| (piece[0].t, chunk::smallest(piece)))
            .collect(),
    ))
}

impl Inner {
    /// Merges the windows before `open_window` that closed since the last pass and, with
    /// `open_too` (a final checkpoint), the open window as well. Called by the checkpoint,
    /// whose lock keeps other checkpoints out meanwhile.
    pub(super) fn merge_windows(
        &self,
        merged_before: &mut Option<i64>,
        open_too: bool,
    ) -> Result<(), StorageError> {
        let Some(newest) = self.state.read().index.newest() else {
            return Ok(());
        };
        let open_window = partition::window_start(newest);
        // At the first pass since open, the window before the open one is looked at again:
        // a crash may have kept its pass from running.
        let from = merged_before.unwrap_or(open_window - WINDOW_MS);
        let to = if open_too {
            open_window + WINDOW_MS
        } else {
            open_window
        };
        let from = from.max(to - MAX_WINDOWS_PER_PASS * WINDOW_MS);
        let mut window = from;
        while window < to {
            self.merge_window(window, open_too)?;
            window += WINDOW_MS;
        }
        // The open window may still get chunks: the next pass looks at it again.
        *merged_before = Some(open_window);
        Ok(())
    }

    /// Merges window `window` of every series in memory that has samples there.
    fn merge_window(&self, window: i64, open_too: bool) -> Result<(), StorageError> {
        let start = partition_start(window);
        if !self.partitions.contains(start) {
            return Ok(());
        }
        let cf = db::cf(&self.db, &partition::cf_name(start))?;
        let end = window + WINDOW_MS - 1;
        let ids: Vec<(u64, i64)> = self
            .state
            .read()
            .index
            .iter()
            .filter(|(_, s)| s.overlaps(window, end))
            .map(|(id, s)| (id, s.min_t()))
            .collect();
        // With open chunks merged too, no append may add to one between the check and the
        // write (see `Head::settled`): appends wait for the pass, which runs at shutdown.
        let _no_appends = open_too.then(|| self.gate.write());
        let (mut before, mut after) = (0usize, 0usize);
        let mut it = self.db.raw_iterator_cf(&cf);
        for slice in ids.chunks(MERGE_SLICE_SERIES) {
            let settled: Vec<u64> = {
                let state = self.state.read();
                slice
                    .iter()
                    .filter(|&&(id, min_t)| {
                        // All of a series' samples in the window in its open chunk: nothing to
                        // merge, known without a read (every series of a new load).
                        let alone = state
                            .head
                            .open_min_t(id)
                            .is_some_and(|t| t <= min_t.max(window));
                        !alone && state.head.settled(id, window, open_too)
                    })
                    .map(|&(id, _)| id)
                    .collect()
            };
            let mut wb = WriteBatch::default();
            let mut merged_ids = Vec::new();
            for id in settled {
                let chunks = window_chunks(&mut it, id, window)?;
                if chunks.len() < 2 {
                    continue;
                }
                let Some(merged) = merge(&chunks).map_err(corrupt)? else {
                    continue;
                };
                for (min_t, _) in &chunks {
                    if !merged.iter().any(|(t, _)| t == min_t) {
                        wb.delete_cf(&cf, chunk_key(id, *min_t, 0));
                    }
                }
                for (min_t, value) in &merged {
                    wb.put_cf(&cf, chunk_key(id, *min_t, 0), value);
                }
                before += chunks.len();
                after += merged.len();
                merged_ids.push(id);
            }
            if wb.is_empty() {
                continue;
            }
            self.db.write_opt(wb, &self.write_options())?;
            if open_too {
                let mut state = self.state.write();
                for &id in &merged_ids {
                    state.head.close_open(id, window);
                }
            }
        }
        if before > 0 {
            debug!(window, chunks = before, merged = after, "window merged");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::chunk::XorChunk;
    use proptest::prelude::*;

    fn stored(samples: &[(i64, f64)]) -> (i64, Vec<u8>) {
        let c = XorChunk::from_samples(samples.iter().map(|&(t, v)| Sample { t, v }));
        (c.min_t(), c.to_value())
    }

    fn decoded(chunks: &[(i64, Vec<u8>)]) -> Vec<(i64, u64)> {
        chunks
            .iter()
            .flat_map(|(min_t, v)| {
                let c = StoredChunk::parse(v).unwrap();
                assert_eq!(c.min_t(), *min_t);
                c.iter()
                    .map(|s| s.map(|s| (s.t, s.v.to_bits())).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    proptest! {
        /// Merged chunks hold exactly the samples of the chunks they replace, in order, in
        /// fewer chunks of at most MERGED_MAX_SAMPLES each, keyed by their first sample.
        #[test]
        fn merges_keep_every_sample_in_fewer_chunks(
            sizes in prop::collection::vec(1usize..400, 2..8),
            decimals in any::<bool>(),
        ) {
            let mut t = 1_000_000i64;
            let mut chunks = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let samples: Vec<(i64, f64)> = (0..*n)
                    .map(|j| {
                        t += 15_000 + (j as i64 % 3);
                        let v = if decimals { (i * 1000 + j) as f64 / 100.0 } else { (j as f64).sqrt() };
                        (t, v)
                    })
                    .collect();
                chunks.push(stored(&samples));
            }
            let total: usize = sizes.iter().sum();
            match merge(&chunks).unwrap() {
                Some(merged) => {
                    prop_assert!(merged.len() < chunks.len());
                    let largest = merged
                        .iter()
                        .map(|(_, v)| usize::from(StoredChunk::parse(v).unwrap().count()))
                        .max();
                    prop_assert!(largest <= Some(MERGED_MAX_SAMPLES));
                    prop_assert_eq!(decoded(&merged), decoded(&chunks));
                }
                None => prop_assert!(total.div_ceil(MERGED_MAX_SAMPLES) >= chunks.len()),
            }
        }
    }

    #[test]
    fn overlapping_chunks_are_left_alone() {
        let a = stored(&[(10, 1.0), (20, 2.0), (30, 3.0)]);
        let b = stored(&[(30, 3.0), (40, 4.0)]);
        assert_eq!(merge(&[a, b]).unwrap(), None);
    }

    #[test]
    fn merged_decimal_chunks_are_packed_and_smaller_than_their_parts() {
        let samples: Vec<(i64, f64)> = (0..240)
            .map(|i| (i * 15_000, 1000.0 + (i * 7 % 13) as f64 / 4.0))
            .collect();
        let parts = [stored(&samples[..120]), stored(&samples[120..])];
        let parts_packed: usize = parts
            .iter()
            .map(|(_, v)| chunk::compact(v).unwrap().len())
            .sum();
        let merged = merge(&parts).unwrap().expect("two full chunks merge");
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].1[0], chunk::ENCODING_PACKED);
        // One header saved (count, span, min t, both columns' forms: over 20 bytes).
        assert!(
            merged[0].1.len() + 20 < parts_packed,
            "{} vs {parts_packed}",
            merged[0].1.len()
        );
    }
}
