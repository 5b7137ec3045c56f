//! The durable append log: records acknowledged to clients live here (a RocksDB database of
//! its own, keyed by a monotonically increasing sequence number) until the indexer has
//! committed them to tantivy. Owns sequence assignment and the log's keys; knows nothing
//! about the index.
//!
//! Indexed records must leave the disk too, not only the key space: a range delete alone
//! leaves them in SST files until some compaction happens to reach them, which doubled the
//! bytes on disk per logged byte. So truncation drops the SST files the range covers whole,
//! and compacts the range once the dead SST bytes pass `LogOptions::append_compact_bytes`;
//! closing compacts everything, which also retires the WAL.
//!
//! While a forwarding destination is registered, each append also puts its records in the
//! outbox (`crate::outbox`, the `outbox` column family of the same database) in the same
//! WriteBatch: one write, one fsync, and an acknowledged append is queued for forwarding.

use std::path::Path;

use parking_lot::Mutex;
use rocksdb::{
    Cache, ColumnFamilyDescriptor, DBCompressionType, IteratorMode, WriteBatch, WriteOptions, DB,
};

use super::record::LogRecord;
use super::LogOptions;
use crate::outbox::{encode_parts, OutboxState};
use crate::{db, StorageError, StoreMemory};

/// The outbox's column family: records waiting to be forwarded, and the destinations' offsets.
const CF_OUTBOX: &str = "outbox";

/// Key of the highest sequence number ever assigned; never deleted, so sequence numbers keep
/// growing across restarts even when every record has been indexed.
const HIGH_WATER_KEY: &[u8] = b"hwm";
/// Record keys: this prefix then the sequence number, 8 bytes big-endian.
const RECORD_PREFIX: u8 = b'r';

pub(crate) struct AppendLog {
    db: DB,
    cache: Cache,
    /// The next sequence number. Held across the write so records land in sequence order: the
    /// indexer's cursor never passes a sequence number whose write is still in flight.
    next_seq: Mutex<u64>,
    fsync: bool,
    /// SST bytes left after truncation (all of them dead: the indexer keeps up, so live
    /// records are normally still in the memtable) above which the truncated range is
    /// compacted away.
    compact_bytes: u64,
    outbox: OutboxState,
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RECORD_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl AppendLog {
    /// Opens the log with `opts`' fsync and sizes; `min_next_seq` is one past the highest
    /// sequence the index has committed, so sequence numbers stay ahead of it even if this
    /// database was lost.
    pub(crate) fn open(
        dir: &Path,
        opts: &LogOptions,
        min_next_seq: u64,
    ) -> Result<AppendLog, StorageError> {
        let cache = Cache::new_lru_cache(opts.append_block_cache_bytes);
        // Uncompressed: records normally leave before a flush, and when indexing lags, the
        // flush, the compactions and the indexer's read would each pay lz4 again (a fifth of
        // the process's CPU while ingesting logs faster than they were indexed).
        let mut o = db::cf_options(&cache, DBCompressionType::None);
        o.create_if_missing(true);
        o.set_max_total_wal_size(64 << 20);
        // RocksDB's info log as the other stores keep it: warnings only (at its default
        // level it wrote 47 KB of flush and compaction chatter into the data directory in
        // one two-minute benchmark run).
        o.set_log_level(rocksdb::LogLevel::Warn);
        o.set_keep_log_file_num(4);
        // The memtable size is roughly the most WAL bytes kept for already indexed records.
        o.set_write_buffer_size(opts.append_buffer_bytes);
        o.create_missing_column_families(true);
        // Forwarded records are read once, mostly long after their write: compressed.
        let outbox_cf =
            ColumnFamilyDescriptor::new(CF_OUTBOX, db::cf_options(&cache, DBCompressionType::Lz4));
        // Named, or RocksDB would open the default family with default options.
        let default_cf =
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, o.clone());
        let db = DB::open_cf_descriptors(&o, dir, [default_cf, outbox_cf])?;
        let outbox = OutboxState::load(&db, CF_OUTBOX)?;
        let hwm = match db.get(HIGH_WATER_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("append log high-water mark".into()))?,
            ),
            None => 0,
        };
        let next = (hwm + 1).max(min_next_seq).max(1);
        Ok(AppendLog {
            db,
            cache,
            next_seq: Mutex::new(next),
            fsync: opts.wal_fsync,
            compact_bytes: opts.append_compact_bytes,
            outbox,
        })
    }

    pub(crate) fn memory(&self) -> StoreMemory {
        db::memory(&self.db, &self.cache)
    }

    /// Appends records; returns once they are in RocksDB's WAL (fsynced when configured).
    /// Returns the sequence number of the last record.
    pub(crate) fn append(&self, records: &[LogRecord]) -> Result<u64, StorageError> {
        let mut next = self.next_seq.lock();
        let mut batch = WriteBatch::default();
        let mut buf = Vec::new();
        let mut seq = *next;
        let forwarding = self.outbox.enabled();
        let mut encoded = Vec::new();
        for r in records {
            buf.clear();
            r.encode(&mut buf);
            batch.put(record_key(seq), &buf);
            if forwarding {
                encoded.push(buf.clone());
            }
            seq += 1;
        }
        let last = seq - 1;
        batch.put(HIGH_WATER_KEY, last.to_be_bytes());
        let _outbox_ticket = if forwarding {
            let body = encode_parts(records.len() as u64, encoded.iter().map(Vec::as_slice));
            Some(self.outbox.put(&self.db, &mut batch, &body)?)
        } else {
            None
        };
        let mut wo = WriteOptions::default();
        wo.set_sync(self.fsync);
        self.db.write_opt(batch, &wo)?;
        *next = seq;
        Ok(last)
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn outbox_state(&self) -> &OutboxState {
        &self.outbox
    }

    /// The sequence number the next appended record gets.
    pub(crate) fn next_seq(&self) -> u64 {
        *self.next_seq.lock()
    }

    /// Up to `max` records with sequence >= `from`, in sequence order.
    pub(crate) fn read_from(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, LogRecord)>, StorageError> {
        let start = record_key(from);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&start, rocksdb::Direction::Forward))
        {
            let (k, v) = item?;
            if k.len() != 9 || k[0] != RECORD_PREFIX || out.len() >= max {
                break;
            }
            let seq = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("log key".into()))?,
            );
            let rec = LogRecord::decode(&v)
                .ok_or_else(|| StorageError::Corrupt(format!("log record {seq}")))?;
            out.push((seq, rec));
        }
        Ok(out)
    }

    /// Forgets records up to and including `seq`: the index has committed them.
    pub(crate) fn truncate_through(&self, seq: u64) -> Result<(), StorageError> {
        let (from, to) = (record_key(0), record_key(seq + 1));
        let mut batch = WriteBatch::default();
        batch.delete_range(from, to);
        self.db.write(batch)?;
        // Inclusive at both ends: `to` itself may be the first record not yet indexed.
        self.db.delete_file_in_range(from, record_key(seq))?;
        if self.sst_bytes() > self.compact_bytes {
            self.db.compact_range(Some(from), Some(to));
        }
        Ok(())
    }

    /// Compacts the whole log: what was truncated leaves the disk, and the memtable's flush
    /// lets RocksDB delete the WAL.
    pub(crate) fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }

    fn sst_bytes(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// The lowest sequence number still in the log, if any.
    pub(crate) fn first_seq(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.read_from(0, 1)?.first().map(|(s, _)| *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;

    fn rec(i: i64) -> LogRecord {
        LogRecord {
            ts_ns: i,
            labels: Labels::from_pairs([("a", "b")]),
            line: format!("l{i}"),
            metadata: vec![],
        }
    }

    #[test]
    fn sequences_survive_reopen_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AppendLog::open(dir.path(), &LogOptions::default(), 0).unwrap();
            assert_eq!(log.append(&[rec(1), rec(2)]).unwrap(), 2);
            assert_eq!(log.append(&[rec(3)]).unwrap(), 3);
            log.truncate_through(2).unwrap();
            let rest = log.read_from(0, 10).unwrap();
            assert_eq!(rest, vec![(3, rec(3))]);
        }
        let log = AppendLog::open(dir.path(), &LogOptions::default(), 0).unwrap();
        assert_eq!(log.first_seq().unwrap(), Some(3));
        log.truncate_through(3).unwrap();
        assert_eq!(log.first_seq().unwrap(), None);
        // The high-water mark keeps numbering ahead of what was already handed out.
        assert_eq!(log.append(&[rec(4)]).unwrap(), 4);
        drop(log);
        let log = AppendLog::open(dir.path(), &LogOptions::default(), 10).unwrap();
        assert_eq!(log.append(&[rec(5)]).unwrap(), 10);
        // Three opens and a truncation, and RocksDB's info log holds nothing: warnings only.
        let info_log = std::fs::metadata(dir.path().join("LOG")).unwrap();
        assert_eq!(info_log.len(), 0);
    }

    fn disk_bytes(dir: &Path) -> u64 {
        // Background flushes and compactions delete files while this lists them.
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.metadata().ok()?.len()))
            .sum()
    }

    #[test]
    fn truncated_records_leave_the_disk_and_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let log = AppendLog::open(dir.path(), &LogOptions::default(), 0).unwrap();
        // Incompressible lines (lz4 would hide the dead bytes otherwise), 160 batches of 2 MB.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut batch = |n: i64| -> Vec<LogRecord> {
            (0..250)
                .map(|i| {
                    let line: String = (0..512)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            format!("{x:016x}")
                        })
                        .collect();
                    LogRecord {
                        line,
                        ..rec(n * 1000 + i)
                    }
                })
                .collect()
        };
        // The indexer lags: records are truncated 16 batches (32 MB) after they were appended,
        // long after the memtable holding them was flushed.
        const LAG: usize = 16;
        let mut lasts = Vec::new();
        let mut peak = 0;
        for n in 0..160 {
            lasts.push(log.append(&batch(n)).unwrap());
            if lasts.len() > LAG {
                log.truncate_through(lasts[lasts.len() - 1 - LAG]).unwrap();
            }
            peak = peak.max(disk_bytes(dir.path()));
        }
        // 320 MB went through; what is on disk stays bounded by the records not yet truncated,
        // the memtable/WAL and the compaction threshold, not by what was written.
        let bound = (LAG as u64 * (2 << 20))
            + 2 * LogOptions::default().append_buffer_bytes as u64
            + LogOptions::default().append_compact_bytes
            + (16 << 20);
        assert!(peak < bound, "peak {peak} bytes, bound {bound}");
        log.truncate_through(lasts[lasts.len() - 2]).unwrap();
        log.compact();
        let after = disk_bytes(dir.path());
        assert!(after < 4 << 20, "{after} bytes after compaction");
        // The last batch was never truncated: all of it is still there, in order.
        let rest = log.read_from(0, 1000).unwrap();
        assert_eq!(rest.len(), 250);
        assert_eq!(rest[0].1.ts_ns, 159_000);
        assert_eq!(rest.last().map(|r| r.0), lasts.last().copied());
    }
}
