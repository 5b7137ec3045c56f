//! The outbox: what `remote_write` forwards, kept on disk until every destination has it.
//! While at least one destination is registered, each append that stores anything also puts
//! what it stored (label sets, accepted samples, histograms and exemplars) under the next
//! sequence number in the `outbox` column family, in the append's own WriteBatch: a write
//! acknowledged to its sender is also queued for every destination, and survives kill -9.
//! Each destination keeps an acknowledged offset (the first record it may not have); records
//! below every offset are range-deleted.
//!
//! Sequence numbers are taken while the append holds its series (as the WAL's are), so the
//! records of one series are in the order its samples were judged. Appends to other series
//! commit in any order, so a reader only sees records below the *watermark*: the lowest
//! sequence number still being written, below which every record is committed (or was never
//! written: a failed append leaves a gap, which readers skip).
//!
//! Record key: `r` | seq (u64 BE); value: the byte position of the record in the stream of
//! all records (u64 LE; the difference of two is the disk a backlog takes, before RocksDB's
//! compression), then per series: the label set as the index encodes it (length-prefixed),
//! float samples (count, then zigzag delta of t and the value's 8 bytes), histograms (count,
//! then t and the histogram's encoding), exemplars (count, then labels, value, t).
//! Offset key: `o` | destination name → seq (u64 BE).
//!
//! Owns that format and the sequence; knows nothing of the wire or of what a destination is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rocksdb::{ReadOptions, WriteBatch};

use super::Inner;
use crate::db::{self, Db, CF_OUTBOX};
use crate::encoding::{put_bytes, put_uvarint, unzigzag, zigzag, Cursor};
use crate::{EncodedBatch, Exemplar, Histogram, HistogramSample, Labels, Sample, StorageError};

const RECORD: u8 = b'r';
const OFFSET: u8 = b'o';

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [RECORD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn offset_key(name: &str) -> Vec<u8> {
    let mut k = vec![OFFSET];
    k.extend_from_slice(name.as_bytes());
    k
}

/// The sequence: what is taken, what is still being written.
struct Seqs {
    next: u64,
    /// Byte position after the last record taken.
    position: u64,
    writing: BTreeSet<u64>,
}

impl Seqs {
    fn watermark(&self) -> u64 {
        self.writing.first().copied().unwrap_or(self.next)
    }
}

/// The outbox's state inside the TSDB.
pub(super) struct State {
    /// Whether appends write records: only while a destination is registered.
    enabled: std::sync::atomic::AtomicBool,
    seqs: Mutex<Seqs>,
    /// Signalled when the watermark moves.
    moved: Condvar,
    offsets: Mutex<BTreeMap<String, u64>>,
}

impl State {
    pub(super) fn load(db: &Db) -> Result<State, StorageError> {
        let cf = db::cf(db, CF_OUTBOX)?;
        let mut offsets = BTreeMap::new();
        for item in db::prefixed(db, &cf, &[OFFSET]) {
            let (k, v) = item?;
            let name = String::from_utf8(k[1..].to_vec());
            let seq = <[u8; 8]>::try_from(&*v).map(u64::from_be_bytes);
            let (Ok(name), Ok(seq)) = (name, seq) else {
                return Err(StorageError::Corrupt(format!("outbox offset {k:02x?}")));
            };
            offsets.insert(name, seq);
        }
        let mut it = db.raw_iterator_cf(&cf);
        it.seek_for_prev(record_key(u64::MAX));
        let (mut next, mut position) = (0, 0);
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.first() == Some(&RECORD) {
                let seq = parse_seq(k)?;
                next = seq + 1;
                position = record_position(v)? + v.len() as u64 - 8;
            }
        }
        it.status()?;
        // Every record below the offsets may be gone: numbering goes on after them.
        next = offsets.values().copied().fold(next, u64::max);
        Ok(State {
            enabled: (!offsets.is_empty()).into(),
            seqs: Mutex::new(Seqs {
                next,
                position,
                writing: BTreeSet::new(),
            }),
            moved: Condvar::new(),
            offsets: Mutex::new(offsets),
        })
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Puts `batch` in `wb` under the next sequence number; the number counts as being
    /// written until the returned ticket is dropped (after the write, whatever its outcome).
    /// Called while the append holds its series.
    pub(super) fn put<'s>(
        &'s self,
        db: &Db,
        wb: &mut WriteBatch,
        batch: &EncodedBatch,
    ) -> Result<Ticket<'s>, StorageError> {
        let body = encode(batch);
        let cf = db::cf(db, CF_OUTBOX)?;
        let (seq, position) = {
            let mut s = self.seqs.lock();
            let taken = (s.next, s.position);
            s.next += 1;
            s.position += body.len() as u64;
            s.writing.insert(taken.0);
            taken
        };
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&position.to_le_bytes());
        value.extend_from_slice(&body);
        wb.put_cf(&cf, record_key(seq), value);
        Ok(Ticket { state: self, seq })
    }
}

/// A sequence number being written; dropped once the write is over.
pub(super) struct Ticket<'s> {
    state: &'s State,
    seq: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut s = self.state.seqs.lock();
        let was = s.watermark();
        s.writing.remove(&self.seq);
        if s.watermark() != was {
            self.state.moved.notify_all();
        }
    }
}

fn parse_seq(k: &[u8]) -> Result<u64, StorageError> {
    k.get(1..)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt(format!("outbox key {k:02x?}")))
}

fn record_position(v: &[u8]) -> Result<u64, StorageError> {
    v.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| StorageError::Corrupt("outbox record".into()))
}

/// One appended batch as stored: everything it stored, in append order.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRecord {
    pub seq: u64,
    pub batch: EncodedBatch,
}

/// What [`Outbox::skip`] passed over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// The first record not skipped.
    pub next: u64,
    pub samples: u64,
    pub records: u64,
}

/// The outbox of a [`crate::Tsdb`], for the forwarders (see the module doc). Cheap to
/// clone; every call reads RocksDB without taking any TSDB lock.
#[derive(Clone)]
pub struct Outbox {
    pub(super) inner: Arc<Inner>,
}

impl Outbox {
    fn state(&self) -> &State {
        &self.inner.outbox
    }

    /// Makes `names` the destinations: a new one starts at the current end (it receives
    /// what is appended from now on), one no longer named loses its offset and the records
    /// only it still needed. With none, appends stop writing records.
    pub fn set_destinations(&self, names: &[String]) -> Result<(), StorageError> {
        let db = &self.inner.db;
        let cf = db::cf(db, CF_OUTBOX)?;
        let state = self.state();
        let mut offsets = state.offsets.lock();
        // Enabled before the end is read: any record an append takes after this is at or
        // past the end, so a new destination misses nothing appended from here on.
        if !names.is_empty() {
            state
                .enabled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let end = state.seqs.lock().next;
        let mut wb = WriteBatch::default();
        for name in names {
            if !offsets.contains_key(name) {
                wb.put_cf(&cf, offset_key(name), end.to_be_bytes());
                offsets.insert(name.clone(), end);
            }
        }
        let gone: Vec<String> = offsets
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in gone {
            wb.delete_cf(&cf, offset_key(&name));
            offsets.remove(&name);
        }
        if names.is_empty() {
            state
                .enabled
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let low = offsets.values().copied().min().unwrap_or(end);
        wb.delete_range_cf(&cf, record_key(0), record_key(low));
        db.write(wb)?;
        Ok(())
    }

    /// The destination's acknowledged offset: the first record it may not have.
    pub fn offset(&self, name: &str) -> Option<u64> {
        self.state().offsets.lock().get(name).copied()
    }

    /// Records the destination has every record below `upto`, and deletes the records
    /// every destination has. An offset never moves back.
    pub fn ack(&self, name: &str, upto: u64) -> Result<(), StorageError> {
        let db = &self.inner.db;
        let cf = db::cf(db, CF_OUTBOX)?;
        let mut offsets = self.state().offsets.lock();
        let Some(old) = offsets.get(name).copied() else {
            return Ok(());
        };
        if upto <= old {
            return Ok(());
        }
        let low_before = offsets.values().copied().min().unwrap_or(0);
        offsets.insert(name.to_owned(), upto);
        let low = offsets.values().copied().min().unwrap_or(upto);
        let mut wb = WriteBatch::default();
        wb.put_cf(&cf, offset_key(name), upto.to_be_bytes());
        if low > low_before {
            wb.delete_range_cf(&cf, record_key(low_before), record_key(low));
        }
        db.write(wb)?;
        Ok(())
    }

    /// The first sequence number not yet readable: every record below it is committed.
    pub fn end(&self) -> u64 {
        self.state().seqs.lock().watermark()
    }

    /// Waits until records at or past `from` are readable, at most `timeout`; returns
    /// whether they are.
    pub fn wait(&self, from: u64, timeout: Duration) -> bool {
        let state = self.state();
        let deadline = Instant::now() + timeout;
        let mut s = state.seqs.lock();
        while s.watermark() <= from {
            if state.moved.wait_until(&mut s, deadline).timed_out() {
                return s.watermark() > from;
            }
        }
        true
    }

    /// Records from `from` up to the end, in order, until they hold `max_bytes` (at least
    /// one record when there is any).
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<OutboxRecord>, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        self.scan(from, |seq, body| {
            out.push(OutboxRecord {
                seq,
                batch: decode(body)?,
            });
            bytes += body.len();
            Ok(bytes < max_bytes)
        })?;
        Ok(out)
    }

    /// Bytes of the records from `from` to the end, as written (before compression).
    pub fn backlog_bytes(&self, from: u64) -> Result<u64, StorageError> {
        let db = &self.inner.db;
        let cf = db::cf(db, CF_OUTBOX)?;
        let end = self.end();
        let mut first = None;
        let mut it = db.raw_iterator_cf(&cf);
        it.seek(record_key(from));
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.first() == Some(&RECORD) && parse_seq(k)? < end {
                first = Some(record_position(v)?);
            }
        }
        it.status()?;
        let position = self.state().seqs.lock().position;
        Ok(first.map_or(0, |p| position.saturating_sub(p)))
    }

    /// Passes over the oldest records from `from` until at least `bytes` of them are
    /// passed (a destination over its disk cap drops them), counting their samples.
    pub fn skip(&self, from: u64, bytes: u64) -> Result<Skipped, StorageError> {
        let mut skipped = Skipped {
            next: from,
            ..Skipped::default()
        };
        let mut passed = 0u64;
        self.scan(from, |seq, body| {
            let batch = decode(body)?;
            skipped.samples += batch.sample_count() as u64;
            skipped.records += 1;
            skipped.next = seq + 1;
            passed += body.len() as u64;
            Ok(passed < bytes)
        })?;
        Ok(skipped)
    }

    /// Calls `f` with each readable record's sequence number and body from `from` on, while
    /// it returns true.
    fn scan(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let end = self.end();
        if from >= end {
            return Ok(());
        }
        let db = &self.inner.db;
        let cf = db::cf(db, CF_OUTBOX)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(record_key(end));
        let mut it = db.raw_iterator_cf_opt(&cf, ro);
        it.seek(record_key(from));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let seq = parse_seq(k)?;
            record_position(v)?;
            if !f(seq, &v[8..])? {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }
}

fn put_labels(out: &mut Vec<u8>, labels: &Labels) {
    put_uvarint(out, labels.len() as u64);
    for l in labels.iter() {
        put_bytes(out, l.name.as_bytes());
        put_bytes(out, l.value.as_bytes());
    }
}

fn encode(batch: &EncodedBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() * 64 + batch.sample_count() * 10);
    for s in batch.iter() {
        put_bytes(&mut out, s.label_bytes());
        put_uvarint(&mut out, s.samples.len() as u64);
        let mut prev = 0i64;
        for x in s.samples {
            put_uvarint(&mut out, zigzag(x.t.wrapping_sub(prev)));
            out.extend_from_slice(&x.v.to_bits().to_le_bytes());
            prev = x.t;
        }
        put_uvarint(&mut out, s.histograms.len() as u64);
        for h in s.histograms {
            put_uvarint(&mut out, zigzag(h.t));
            h.h.encode(&mut out);
        }
        put_uvarint(&mut out, s.exemplars.len() as u64);
        for e in s.exemplars {
            put_labels(&mut out, &e.labels);
            out.extend_from_slice(&e.value.to_bits().to_le_bytes());
            put_uvarint(&mut out, zigzag(e.t));
        }
    }
    out
}

fn decode(body: &[u8]) -> Result<EncodedBatch, StorageError> {
    decode_checked(body).ok_or_else(|| StorageError::Corrupt("outbox record".into()))
}

fn decode_checked(body: &[u8]) -> Option<EncodedBatch> {
    fn f64_at(c: &mut Cursor) -> Option<f64> {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = c.u8()?;
        }
        Some(f64::from_bits(u64::from_le_bytes(b)))
    }
    // A count beyond what the bytes left could hold is corruption, not a size to allocate.
    fn count(c: &mut Cursor, min_item: usize) -> Option<usize> {
        let n = usize::try_from(c.uvarint()?).ok()?;
        (n <= c.rest().len() / min_item).then_some(n)
    }
    let mut c = Cursor::new(body);
    let mut batch = EncodedBatch::new();
    while !c.is_empty() {
        let labels = c.bytes()?;
        let n = count(&mut c, 9)?;
        let mut samples = Vec::with_capacity(n);
        let mut prev = 0i64;
        for _ in 0..n {
            let t = prev.wrapping_add(unzigzag(c.uvarint()?));
            samples.push(Sample {
                t,
                v: f64_at(&mut c)?,
            });
            prev = t;
        }
        let n = count(&mut c, 2)?;
        let mut histograms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = unzigzag(c.uvarint()?);
            histograms.push(HistogramSample {
                t,
                h: Histogram::decode(&mut c)?,
            });
        }
        let n = count(&mut c, 10)?;
        let mut exemplars = Vec::with_capacity(n);
        for _ in 0..n {
            let pairs = count(&mut c, 2)?;
            let mut ls = Vec::with_capacity(pairs);
            for _ in 0..pairs {
                let name = std::str::from_utf8(c.bytes()?).ok()?;
                let value = std::str::from_utf8(c.bytes()?).ok()?;
                ls.push(crate::Label::new(name, value));
            }
            let value = f64_at(&mut c)?;
            let t = unzigzag(c.uvarint()?);
            exemplars.push(Exemplar {
                labels: Labels::new(ls),
                value,
                t,
            });
        }
        batch
            .push_stored(labels, &samples, &histograms, &exemplars)
            .ok()?;
    }
    Some(batch)
}

#[cfg(test)]
mod tests;
