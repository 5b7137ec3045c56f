//! The cold index: series that had no sample for longer than the head window, held on disk
//! only, so that memory follows the active series rather than every series retention keeps.
//!
//! Two column families. `cold_labels` maps a cold series' label set to its id, time bounds and
//! last sample, so that a sample for it revives the same series (same id, same chunks) and is
//! validated exactly as if it had never left. `cold_index` is an inverted index per day
//! partition, like a Prometheus block's index: for each partition a cold series has data in,
//! an entry `partition | 0 | id` → (min t, max t, label set) and a posting
//! `partition | 1 | name | value | id` per label; it is dropped with its partition.
//!
//! Owns these key formats and the reads over them (matchers → cold series, label names and
//! values). It does not decide which series go cold or come back (the checkpoint's eviction
//! pass and the append path do), never holds a series in memory, and never reads chunks.
//! Entries of a revived series stay in `cold_index` until their partition is dropped: readers
//! skip the ids that are in memory.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::{DBRawIteratorWithThreadMode, WriteBatch};

use crate::db::{self, Db, CF_COLD_INDEX, CF_COLD_LABELS};
use crate::tsdb::labelset::StoredLabels;
use crate::{MatchOp, Matcher, StorageError};

const ENTRY: u8 = 0;
const POSTING: u8 = 1;

type RawIter<'a> = DBRawIteratorWithThreadMode<'a, Db>;

/// What a cold series needs to come back, or to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ColdSeries {
    pub(crate) id: u64,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    /// Its last in-order float sample (t, value bits); none for a histogram-only series.
    pub(crate) last: Option<(i64, u64)>,
}

/// A cold series found by [`select`].
pub(crate) struct Found {
    pub(crate) id: u64,
    pub(crate) labels: StoredLabels,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
}

/// Partition starts sort as unsigned big-endian numbers once the sign bit is flipped.
fn part_key(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

fn entry_key(start: i64, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&part_key(start));
    k.push(ENTRY);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `partition | 1 | len name | name`, then (when `value` is given) `| len value | value`.
fn posting_prefix(start: i64, name: &str, value: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(25 + name.len() + value.map_or(0, str::len));
    k.extend_from_slice(&part_key(start));
    k.push(POSTING);
    k.extend_from_slice(&(name.len() as u32).to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    if let Some(v) = value {
        k.extend_from_slice(&(v.len() as u32).to_be_bytes());
        k.extend_from_slice(v.as_bytes());
    }
    k
}

/// (name, value, id) of a posting key.
fn parse_posting(k: &[u8]) -> Option<(&[u8], &[u8], u64)> {
    let rest = k.get(9..)?;
    let (nl, rest) = rest.split_first_chunk::<4>()?;
    let (name, rest) = rest.split_at_checked(u32::from_be_bytes(*nl) as usize)?;
    let (vl, rest) = rest.split_first_chunk::<4>()?;
    let (value, rest) = rest.split_at_checked(u32::from_be_bytes(*vl) as usize)?;
    let id = u64::from_be_bytes(*<&[u8; 8]>::try_from(rest).ok()?);
    Some((name, value, id))
}

fn corrupt(what: &str, key: &[u8]) -> StorageError {
    StorageError::Corrupt(format!("{what} entry with key {key:02x?}"))
}

fn encode_times(min_t: i64, max_t: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&min_t.to_be_bytes());
    out.extend_from_slice(&max_t.to_be_bytes());
}

fn read_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(*b.get(at..at + 8)?.first_chunk::<8>()?))
}

impl ColdSeries {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&self.id.to_be_bytes());
        encode_times(self.min_t, self.max_t, &mut v);
        if let Some((t, bits)) = self.last {
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&bits.to_be_bytes());
        }
        v
    }

    fn decode(v: &[u8]) -> Option<ColdSeries> {
        let last = match v.len() {
            24 => None,
            40 => Some((read_i64(v, 24)?, read_i64(v, 32)? as u64)),
            _ => return None,
        };
        Some(ColdSeries {
            id: read_i64(v, 0)? as u64,
            min_t: read_i64(v, 8)?,
            max_t: read_i64(v, 16)?,
            last,
        })
    }
}

/// Adds a series leaving memory to the cold index, with an entry and postings in each of
/// `partitions` (those its data lies in).
pub(crate) fn put(
    db: &Db,
    wb: &mut WriteBatch,
    labels: &StoredLabels,
    series: &ColdSeries,
    partitions: &[i64],
) -> Result<(), StorageError> {
    wb.put_cf(
        &db::cf(db, CF_COLD_LABELS)?,
        labels.bytes(),
        series.encode(),
    );
    let index = db::cf(db, CF_COLD_INDEX)?;
    let mut entry = Vec::with_capacity(16 + labels.bytes().len());
    encode_times(series.min_t, series.max_t, &mut entry);
    entry.extend_from_slice(labels.bytes());
    for &start in partitions {
        wb.put_cf(&index, entry_key(start, series.id), &entry);
        for (name, value) in labels.pairs() {
            let mut k = posting_prefix(start, name, Some(value));
            k.extend_from_slice(&series.id.to_be_bytes());
            wb.put_cf(&index, k, []);
        }
    }
    Ok(())
}

/// The cold series with this label set, if there is one.
pub(crate) fn lookup(db: &Db, labels: &StoredLabels) -> Result<Option<ColdSeries>, StorageError> {
    let cf = db::cf(db, CF_COLD_LABELS)?;
    match db.get_pinned_cf(&cf, labels.bytes())? {
        None => Ok(None),
        Some(v) => ColdSeries::decode(&v)
            .map(Some)
            .ok_or_else(|| corrupt("cold_labels", labels.bytes())),
    }
}

/// A revived series is no longer cold (its `cold_index` entries stay: see the module doc).
pub(crate) fn forget(
    db: &Db,
    wb: &mut WriteBatch,
    labels: &StoredLabels,
) -> Result<(), StorageError> {
    wb.delete_cf(&db::cf(db, CF_COLD_LABELS)?, labels.bytes());
    Ok(())
}

/// Removes a partition's part of the cold index, and the label entries of cold series that
/// have no data after `cutoff` (those whose data all leaves with this and older partitions).
pub(crate) fn drop_partition(db: &Db, start: i64, cutoff: i64) -> Result<(), StorageError> {
    let index = db::cf(db, CF_COLD_INDEX)?;
    let labels_cf = db::cf(db, CF_COLD_LABELS)?;
    let mut wb = WriteBatch::default();
    let mut it = db.raw_iterator_cf(&index);
    let prefix = [part_key(start).as_slice(), &[ENTRY]].concat();
    it.seek(&prefix);
    while let Some((k, v)) = it.item().filter(|(k, _)| k.starts_with(&prefix)) {
        let max_t = read_i64(v, 8).ok_or_else(|| corrupt("cold_index", k))?;
        if max_t < cutoff {
            let labels = v.get(16..).ok_or_else(|| corrupt("cold_index", k))?;
            let id = k
                .get(9..)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("cold_index", k))?;
            let current = db.get_pinned_cf(&labels_cf, labels)?;
            if current
                .and_then(|c| ColdSeries::decode(&c))
                .is_some_and(|c| c.id == id && c.max_t < cutoff)
            {
                wb.delete_cf(&labels_cf, labels);
            }
        }
        it.next();
    }
    it.status()?;
    drop(it);
    let end = u64::from_be_bytes(part_key(start))
        .saturating_add(1)
        .to_be_bytes();
    wb.delete_range_cf(&index, part_key(start), end);
    db.write(wb)?;
    Ok(())
}

/// Calls `f` with every key under `prefix`, in order, until it returns false.
fn scan(
    it: &mut RawIter<'_>,
    prefix: &[u8],
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<(), StorageError> {
    it.seek(prefix);
    while let Some(k) = it.key().filter(|k| k.starts_with(prefix)) {
        if !f(k) {
            break;
        }
        it.next();
    }
    it.status()?;
    Ok(())
}

/// Ids of one partition's cold series that may match `matchers`: those of the postings of
/// the most selective matcher that needs its label present, or every entry when none does.
/// A superset: [`select`] checks each candidate's whole label set.
fn candidates(
    it: &mut RawIter<'_>,
    start: i64,
    matchers: &[Matcher],
) -> Result<Vec<u64>, StorageError> {
    let mut ids = Vec::new();
    let needs_label = |m: &&Matcher| !m.matches_empty();
    let best = matchers
        .iter()
        .filter(needs_label)
        .find(|m| m.op == MatchOp::Equal)
        .or_else(|| matchers.iter().find(needs_label));
    match best {
        Some(m) if m.op == MatchOp::Equal => {
            let prefix = posting_prefix(start, &m.name, Some(&m.value));
            scan(it, &prefix, |k| {
                ids.extend(parse_posting(k).map(|(_, _, id)| id));
                true
            })?;
        }
        Some(m) => {
            let prefix = posting_prefix(start, &m.name, None);
            // Keys come grouped by value: each value is matched once.
            let mut last: Option<(Vec<u8>, bool)> = None;
            scan(it, &prefix, |k| {
                if let Some((_, value, id)) = parse_posting(k) {
                    let keep = match &last {
                        Some((v, keep)) if v == value => *keep,
                        _ => {
                            let keep = std::str::from_utf8(value).is_ok_and(|v| m.matches(v));
                            last = Some((value.to_vec(), keep));
                            keep
                        }
                    };
                    if keep {
                        ids.push(id);
                    }
                }
                true
            })?;
        }
        None => {
            let prefix = [part_key(start).as_slice(), &[ENTRY]].concat();
            scan(it, &prefix, |k| {
                ids.extend(
                    k.get(9..)
                        .and_then(|id| <[u8; 8]>::try_from(id).ok())
                        .map(u64::from_be_bytes),
                );
                true
            })?;
        }
    }
    Ok(ids)
}

/// Cold series of `partitions` matching all `matchers` with data in [mint, maxt], sorted by
/// id, leaving out those `in_memory` says the head holds (revived, or leaving memory while
/// this runs: the caller reads those from memory).
pub(crate) fn select(
    db: &Db,
    partitions: &[i64],
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    in_memory: impl Fn(u64) -> bool,
) -> Result<Vec<Found>, StorageError> {
    // Asked by every select, also for ranges outside all stored days.
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let cf = db::cf(db, CF_COLD_INDEX)?;
    let mut it = db.raw_iterator_cf(&cf);
    let mut found: BTreeMap<u64, Option<Found>> = BTreeMap::new();
    for &start in partitions {
        for id in candidates(&mut it, start, matchers)? {
            if found.contains_key(&id) || in_memory(id) {
                continue;
            }
            let key = entry_key(start, id);
            let Some(v) = db.get_pinned_cf(&cf, &key)? else {
                continue;
            };
            let bad = || corrupt("cold_index", &key);
            let min_t = read_i64(&v, 0).ok_or_else(bad)?;
            let max_t = read_i64(&v, 8).ok_or_else(bad)?;
            let labels = StoredLabels::from_stored(v.get(16..).ok_or_else(bad)?).ok_or_else(bad)?;
            let matches = min_t <= maxt
                && max_t >= mint
                && matchers
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")));
            found.insert(
                id,
                matches.then_some(Found {
                    id,
                    labels,
                    min_t,
                    max_t,
                }),
            );
        }
    }
    Ok(found.into_values().flatten().collect())
}

/// The distinct values of one field of the posting keys under `within(partition)`, one seek
/// per value: `field` reads it from a key, and `past(partition, value)` is a key after every
/// key holding that value.
fn distinct(
    db: &Db,
    partitions: &[i64],
    within: impl Fn(i64) -> Vec<u8>,
    field: impl Fn(&[u8]) -> Option<&[u8]>,
    past: impl Fn(i64, &str) -> Vec<u8>,
) -> Result<BTreeSet<String>, StorageError> {
    let cf = db::cf(db, CF_COLD_INDEX)?;
    let mut it = db.raw_iterator_cf(&cf);
    let mut out = BTreeSet::new();
    for &start in partitions {
        let prefix = within(start);
        let mut next = prefix.clone();
        loop {
            it.seek(&next);
            let Some(k) = it.key().filter(|k| k.starts_with(&prefix)) else {
                break;
            };
            let value = field(k).ok_or_else(|| corrupt("cold_index", k))?;
            let value = String::from_utf8_lossy(value).into_owned();
            next = past(start, &value);
            out.insert(value);
        }
        it.status()?;
    }
    Ok(out)
}

/// Label names of the cold series of `partitions` (at partition granularity: a name counts
/// when a series in the partition has it, as a Prometheus block's index answers).
pub(crate) fn label_names(db: &Db, partitions: &[i64]) -> Result<BTreeSet<String>, StorageError> {
    distinct(
        db,
        partitions,
        |start| [part_key(start).as_slice(), &[POSTING]].concat(),
        |k| parse_posting(k).map(|(name, _, _)| name),
        |start, name| {
            // The byte after a name is a value length's first, never 0xff.
            let mut k = posting_prefix(start, name, None);
            k.push(0xff);
            k
        },
    )
}

/// Values of label `name` among the cold series of `partitions` (at partition granularity,
/// as [`label_names`]).
pub(crate) fn label_values(
    db: &Db,
    partitions: &[i64],
    name: &str,
) -> Result<BTreeSet<String>, StorageError> {
    distinct(
        db,
        partitions,
        |start| posting_prefix(start, name, None),
        |k| parse_posting(k).map(|(_, value, _)| value),
        |start, value| {
            let mut k = posting_prefix(start, name, Some(value));
            k.extend_from_slice(&[0xff; 8]);
            k
        },
    )
}
