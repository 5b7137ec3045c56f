//! An outbox: what a store has to forward, kept on disk until every destination has it. The
//! store puts a record (bytes whose format the store owns) under the next sequence number in
//! a column family of its own database, in the same WriteBatch as the write it forwards: a
//! write acknowledged to its sender is also queued for every destination, and survives kill
//! -9. Each destination keeps an acknowledged offset (the first record it may not have);
//! records below every offset are range-deleted. The TSDB (`tsdb::outbox`), the log store and
//! the trace store each keep one.
//!
//! Sequence numbers are taken while the writer still decides the order of what it writes (the
//! TSDB: while an append holds its series), and writes commit in any order, so a reader only
//! sees records below the *watermark*: the lowest sequence number still being written, below
//! which every record is committed (or was never written: a failed write leaves a gap, which
//! readers skip).
//!
//! Record key: `r` | seq (u64 BE); value: the byte position of the record in the stream of
//! all records (u64 LE; the difference of two is the disk a backlog takes, before RocksDB's
//! compression), then the store's body. Offset key: `o` | destination name → seq (u64 BE).
//!
//! Owns the keys, the sequence and the offsets; knows nothing of what a body holds or what a
//! destination is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rocksdb::{ReadOptions, WriteBatch};

use crate::db::{self, Db};
use crate::encoding::{put_uvarint, Cursor};
use crate::StorageError;

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

/// An outbox's state inside its store.
pub(crate) struct OutboxState {
    /// The column family holding records and offsets.
    cf: &'static str,
    /// Whether writes put records: only while a destination is registered.
    enabled: AtomicBool,
    seqs: Mutex<Seqs>,
    /// Signalled when the watermark moves.
    moved: Condvar,
    offsets: Mutex<BTreeMap<String, u64>>,
}

impl OutboxState {
    pub(crate) fn load(db: &Db, cf_name: &'static str) -> Result<OutboxState, StorageError> {
        let cf = db::cf(db, cf_name)?;
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
        Ok(OutboxState {
            cf: cf_name,
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

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Puts `body` in `wb` under the next sequence number; the number counts as being
    /// written until the returned ticket is dropped (after the write, whatever its outcome).
    pub(crate) fn put<'s>(
        &'s self,
        db: &Db,
        wb: &mut WriteBatch,
        body: &[u8],
    ) -> Result<Ticket<'s>, StorageError> {
        let cf = db::cf(db, self.cf)?;
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
        value.extend_from_slice(body);
        wb.put_cf(&cf, record_key(seq), value);
        Ok(Ticket { state: self, seq })
    }
}

/// A sequence number being written; dropped once the write is over.
pub(crate) struct Ticket<'s> {
    state: &'s OutboxState,
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

/// What [`OutboxLog::skip`] passed over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// The first record not skipped.
    pub next: u64,
    /// What the records held: samples, lines or spans.
    pub items: u64,
    pub records: u64,
}

/// The store an outbox lives in.
pub(crate) trait OutboxHost: Send + Sync + 'static {
    fn outbox_db(&self) -> &Db;
    fn outbox_state(&self) -> &OutboxState;
}

/// A store's outbox, its records as bytes, for the forwarders (see the module doc). Cheap to
/// clone; every call reads RocksDB without taking any of the store's locks.
#[derive(Clone)]
pub struct OutboxLog {
    host: Arc<dyn OutboxHost>,
}

impl OutboxLog {
    pub(crate) fn new(host: Arc<dyn OutboxHost>) -> OutboxLog {
        OutboxLog { host }
    }

    fn db(&self) -> &Db {
        self.host.outbox_db()
    }

    fn state(&self) -> &OutboxState {
        self.host.outbox_state()
    }

    /// Makes `names` the destinations: a new one starts at the current end (it receives
    /// what is written from now on), one no longer named loses its offset and the records
    /// only it still needed. With none, writes stop putting records.
    pub fn set_destinations(&self, names: &[String]) -> Result<(), StorageError> {
        let db = self.db();
        let state = self.state();
        let cf = db::cf(db, state.cf)?;
        let mut offsets = state.offsets.lock();
        // Enabled before the end is read: any record a write takes after this is at or
        // past the end, so a new destination misses nothing written from here on.
        if !names.is_empty() {
            state.enabled.store(true, Ordering::Relaxed);
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
            state.enabled.store(false, Ordering::Relaxed);
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
        let db = self.db();
        let cf = db::cf(db, self.state().cf)?;
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

    /// Records (sequence number, body) from `from` up to the end, in order, until they hold
    /// `max_bytes` (at least one record when there is any).
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        self.scan(from, |seq, body| {
            out.push((seq, body.to_vec()));
            bytes += body.len();
            Ok(bytes < max_bytes)
        })?;
        Ok(out)
    }

    /// Bytes of the records from `from` to the end, as written (before compression).
    pub fn backlog_bytes(&self, from: u64) -> Result<u64, StorageError> {
        let db = self.db();
        let cf = db::cf(db, self.state().cf)?;
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
    /// passed (a destination over its disk cap drops them), adding up what `items` counts
    /// in each.
    pub fn skip(
        &self,
        from: u64,
        bytes: u64,
        items: impl Fn(&[u8]) -> Result<u64, StorageError>,
    ) -> Result<Skipped, StorageError> {
        let mut skipped = Skipped {
            next: from,
            ..Skipped::default()
        };
        let mut passed = 0u64;
        self.scan(from, |seq, body| {
            skipped.items += items(body)?;
            skipped.records += 1;
            skipped.next = seq + 1;
            passed += body.len() as u64;
            Ok(passed < bytes)
        })?;
        Ok(skipped)
    }

    /// [`OutboxLog::skip`] over bodies of parts (the log and trace stores'), counting the
    /// lines or spans they held.
    pub fn skip_parts(&self, from: u64, bytes: u64) -> Result<Skipped, StorageError> {
        self.skip(from, bytes, count_items)
    }

    /// Calls `f` with each readable record's sequence number and body from `from` on, while
    /// it returns true.
    pub(crate) fn scan(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let end = self.end();
        if from >= end {
            return Ok(());
        }
        let db = self.db();
        let cf = db::cf(db, self.state().cf)?;
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

/// A body of parts (the log and trace stores' records): how many items (lines, spans) the
/// parts hold, their number, then each part length-prefixed, so that the disk cap counts
/// what it drops without decoding it.
pub(crate) fn encode_parts<'a>(
    items: u64,
    parts: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, items);
    put_uvarint(&mut out, parts.len() as u64);
    for p in parts {
        crate::encoding::put_bytes(&mut out, p);
    }
    out
}

/// How many items a body of [`encode_parts`] holds.
fn count_items(body: &[u8]) -> Result<u64, StorageError> {
    Cursor::new(body)
        .uvarint()
        .ok_or_else(|| StorageError::Corrupt("outbox record".into()))
}

/// The parts of a body of [`encode_parts`].
pub(crate) fn parts(body: &[u8]) -> Result<Vec<&[u8]>, StorageError> {
    let corrupt = || StorageError::Corrupt("outbox record".into());
    let mut c = Cursor::new(body);
    c.uvarint().ok_or_else(corrupt)?;
    let n = c.uvarint().ok_or_else(corrupt)?;
    // A count beyond what the bytes could hold is corruption, not a size to allocate.
    if n > body.len() as u64 {
        return Err(corrupt());
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(c.bytes().ok_or_else(corrupt)?);
    }
    if !c.is_empty() {
        return Err(corrupt());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_cut_bodies_are_errors() {
        let body = encode_parts(7, [&b"ab"[..], b"", b"cde"].into_iter());
        assert_eq!(count_items(&body).unwrap(), 7);
        assert_eq!(parts(&body).unwrap(), [&b"ab"[..], b"", b"cde"]);
        for cut in 0..body.len() {
            assert!(parts(&body[..cut]).is_err(), "{cut}");
        }
        assert!(parts(&[1, 0xff, 0xff, 0x01]).is_err());
    }
}
