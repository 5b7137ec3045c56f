//! The durable append log: records acknowledged to clients live here (a RocksDB database of
//! its own, keyed by a monotonically increasing sequence number) until the indexer has
//! committed them to tantivy. Owns sequence assignment and the log's keys; knows nothing
//! about the index.

use std::path::Path;

use parking_lot::Mutex;
use rocksdb::{DBCompressionType, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::record::LogRecord;
use super::LogError;

/// Key of the highest sequence number ever assigned; never deleted, so sequence numbers keep
/// growing across restarts even when every record has been indexed.
const HIGH_WATER_KEY: &[u8] = b"hwm";
/// Record keys: this prefix then the sequence number, 8 bytes big-endian.
const RECORD_PREFIX: u8 = b'r';

pub(crate) struct AppendLog {
    db: DB,
    /// The next sequence number. Held across the write so records land in sequence order: the
    /// indexer's cursor never passes a sequence number whose write is still in flight.
    next_seq: Mutex<u64>,
    fsync: bool,
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RECORD_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl AppendLog {
    /// Opens the log; `min_next_seq` is one past the highest sequence the index has committed,
    /// so sequence numbers stay ahead of it even if this database was lost.
    pub(crate) fn open(dir: &Path, fsync: bool, min_next_seq: u64) -> Result<AppendLog, LogError> {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_max_total_wal_size(64 << 20);
        o.set_keep_log_file_num(4);
        let db = DB::open(&o, dir)?;
        let hwm = match db.get(HIGH_WATER_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| LogError::Corrupt("append log high-water mark".into()))?,
            ),
            None => 0,
        };
        let next = (hwm + 1).max(min_next_seq).max(1);
        Ok(AppendLog {
            db,
            next_seq: Mutex::new(next),
            fsync,
        })
    }

    /// Appends records; returns once they are in RocksDB's WAL (fsynced when configured).
    /// Returns the sequence number of the last record.
    pub(crate) fn append(&self, records: &[LogRecord]) -> Result<u64, LogError> {
        let mut next = self.next_seq.lock();
        let mut batch = WriteBatch::default();
        let mut buf = Vec::new();
        let mut seq = *next;
        for r in records {
            buf.clear();
            r.encode(&mut buf);
            batch.put(record_key(seq), &buf);
            seq += 1;
        }
        let last = seq - 1;
        batch.put(HIGH_WATER_KEY, last.to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(self.fsync);
        self.db.write_opt(batch, &wo)?;
        *next = seq;
        Ok(last)
    }

    /// Up to `max` records with sequence >= `from`, in sequence order.
    pub(crate) fn read_from(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, LogRecord)>, LogError> {
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
                    .map_err(|_| LogError::Corrupt("log key".into()))?,
            );
            let rec = LogRecord::decode(&v)
                .ok_or_else(|| LogError::Corrupt(format!("log record {seq}")))?;
            out.push((seq, rec));
        }
        Ok(out)
    }

    /// Forgets records up to and including `seq`: the index has committed them.
    pub(crate) fn truncate_through(&self, seq: u64) -> Result<(), LogError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(record_key(0), record_key(seq + 1));
        self.db.write(batch)?;
        Ok(())
    }

    /// The lowest sequence number still in the log, if any.
    pub(crate) fn first_seq(&self) -> Result<Option<u64>, LogError> {
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
            let log = AppendLog::open(dir.path(), false, 0).unwrap();
            assert_eq!(log.append(&[rec(1), rec(2)]).unwrap(), 2);
            assert_eq!(log.append(&[rec(3)]).unwrap(), 3);
            log.truncate_through(2).unwrap();
            let rest = log.read_from(0, 10).unwrap();
            assert_eq!(rest, vec![(3, rec(3))]);
        }
        let log = AppendLog::open(dir.path(), false, 0).unwrap();
        assert_eq!(log.first_seq().unwrap(), Some(3));
        log.truncate_through(3).unwrap();
        assert_eq!(log.first_seq().unwrap(), None);
        // The high-water mark keeps numbering ahead of what was already handed out.
        assert_eq!(log.append(&[rec(4)]).unwrap(), 4);
        drop(log);
        let log = AppendLog::open(dir.path(), false, 10).unwrap();
        assert_eq!(log.append(&[rec(5)]).unwrap(), 10);
    }
}
