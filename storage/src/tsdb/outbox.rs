//! The TSDB's outbox: what `remote_write` forwards (the generic outbox, `crate::outbox`, in
//! the `outbox` column family). While at least one destination is registered, each append
//! that stores anything also puts what it stored (label sets, accepted samples, histograms
//! and exemplars) under the next sequence number, in the append's own WriteBatch. Sequence
//! numbers are taken while the append holds its series (as the WAL's are), so the records of
//! one series are in the order its samples were judged.
//!
//! Record body, per series: the label set as the index encodes it (length-prefixed), float
//! samples (count, then zigzag delta of t and the value's 8 bytes), histograms (count, then t
//! and the histogram's encoding), exemplars (count, then labels, value, t).
//!
//! Owns that format; knows nothing of the wire or of what a destination is.

use std::sync::Arc;
use std::time::Duration;

use rocksdb::WriteBatch;

use super::Inner;
use crate::db::{Db, CF_OUTBOX};
use crate::encoding::{put_bytes, put_uvarint, unzigzag, zigzag, Cursor};
pub use crate::outbox::Skipped;
use crate::outbox::{OutboxHost, OutboxLog, OutboxState, Ticket};
use crate::{EncodedBatch, Exemplar, Histogram, HistogramSample, Labels, Sample, StorageError};

/// The outbox's state inside the TSDB.
pub(super) struct State(OutboxState);

impl State {
    pub(super) fn load(db: &Db) -> Result<State, StorageError> {
        OutboxState::load(db, CF_OUTBOX).map(State)
    }

    pub(super) fn enabled(&self) -> bool {
        self.0.enabled()
    }

    /// Puts `batch` in `wb` under the next sequence number (see [`OutboxState::put`]).
    /// Called while the append holds its series.
    pub(super) fn put<'s>(
        &'s self,
        db: &Db,
        wb: &mut WriteBatch,
        batch: &EncodedBatch,
    ) -> Result<Ticket<'s>, StorageError> {
        self.0.put(db, wb, &encode(batch))
    }
}

impl OutboxHost for Inner {
    fn outbox_db(&self) -> &Db {
        &self.db
    }

    fn outbox_state(&self) -> &OutboxState {
        &self.outbox.0
    }
}

/// One appended batch as stored: everything it stored, in append order.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRecord {
    pub seq: u64,
    pub batch: EncodedBatch,
}

/// The outbox of a [`crate::Tsdb`], for the forwarders: [`OutboxLog`]'s calls with records
/// decoded. Cheap to clone; every call reads RocksDB without taking any TSDB lock.
#[derive(Clone)]
pub struct Outbox {
    pub(super) inner: Arc<Inner>,
}

impl Outbox {
    fn log(&self) -> OutboxLog {
        OutboxLog::new(self.inner.clone())
    }

    /// See [`OutboxLog::set_destinations`].
    pub fn set_destinations(&self, names: &[String]) -> Result<(), StorageError> {
        self.log().set_destinations(names)
    }

    /// See [`OutboxLog::offset`].
    pub fn offset(&self, name: &str) -> Option<u64> {
        self.log().offset(name)
    }

    /// See [`OutboxLog::ack`].
    pub fn ack(&self, name: &str, upto: u64) -> Result<(), StorageError> {
        self.log().ack(name, upto)
    }

    /// See [`OutboxLog::end`].
    pub fn end(&self) -> u64 {
        self.log().end()
    }

    /// See [`OutboxLog::wait`].
    pub fn wait(&self, from: u64, timeout: Duration) -> bool {
        self.log().wait(from, timeout)
    }

    /// Records from `from` up to the end, in order, until they hold `max_bytes` (at least
    /// one record when there is any).
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<OutboxRecord>, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        self.log().scan(from, |seq, body| {
            out.push(OutboxRecord {
                seq,
                batch: decode(body)?,
            });
            bytes += body.len();
            Ok(bytes < max_bytes)
        })?;
        Ok(out)
    }

    /// See [`OutboxLog::backlog_bytes`].
    pub fn backlog_bytes(&self, from: u64) -> Result<u64, StorageError> {
        self.log().backlog_bytes(from)
    }

    /// Passes over the oldest records from `from` until at least `bytes` of them are
    /// passed (a destination over its disk cap drops them), counting their samples.
    pub fn skip(&self, from: u64, bytes: u64) -> Result<Skipped, StorageError> {
        self.log()
            .skip(from, bytes, |body| Ok(decode(body)?.sample_count() as u64))
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
