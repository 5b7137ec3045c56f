//! Where exemplars live: one key per exemplar, (series id | t) as the histogram head's keys,
//! in the `exemplars` column family, written in the WriteBatch of the append that carried
//! them, so an acknowledged exemplar is as durable as the samples beside it. Each series
//! keeps its newest `max_per_series`: an append deletes, in that same WriteBatch, the stored
//! ones its new exemplars push out. Retention deletes those older than its cutoff.
//!
//! Owns the value format, the rules of Prometheus's exemplar storage (`tsdb/exemplar.go`:
//! label length, duplicates, order) and the per-series bound; which series are written,
//! locking and retention's timing are the facade's.

use rocksdb::{DBRawIterator, WriteBatch};

use crate::batch::decode_labels;
use crate::db::{self, Db, CF_EXEMPLARS};
use crate::tsdb::histstore::{key, parse_key};
use crate::{EncodedLabels, Exemplar, StorageError, EXEMPLAR_MAX_LABEL_SET_LENGTH};

/// What becomes of an exemplar, judged against its series' newest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Store,
    /// The same as the series' newest: a no-op, as a scrape repeats an exemplar until the
    /// client library replaces it.
    Duplicate,
    /// Not newer than the series' newest.
    OutOfOrder,
    /// Label names and values longer than [`EXEMPLAR_MAX_LABEL_SET_LENGTH`] characters.
    TooLong,
}

/// Prometheus's `validateExemplar`: the label length first, then against the newest.
pub(crate) fn judge(newest: Option<&Exemplar>, e: &Exemplar) -> Verdict {
    let chars: usize = e
        .labels
        .iter()
        .map(|l| l.name.chars().count() + l.value.chars().count())
        .sum();
    match newest {
        _ if chars > EXEMPLAR_MAX_LABEL_SET_LENGTH => Verdict::TooLong,
        // Go's float comparison, as Prometheus's `Exemplar.Equals`: a NaN is never a repeat.
        Some(n) if n.t == e.t && n.value == e.value && n.labels == e.labels => Verdict::Duplicate,
        Some(n) if e.t <= n.t => Verdict::OutOfOrder,
        _ => Verdict::Store,
    }
}

fn encode(e: &Exemplar) -> Vec<u8> {
    let labels = EncodedLabels::new(&e.labels);
    let mut v = Vec::with_capacity(8 + labels.bytes().len());
    v.extend_from_slice(&e.value.to_bits().to_be_bytes());
    v.extend_from_slice(labels.bytes());
    v
}

fn decode(t: i64, v: &[u8]) -> Result<Exemplar, StorageError> {
    let (bits, labels) = v
        .split_first_chunk::<8>()
        .ok_or_else(|| StorageError::Corrupt("exemplar value".into()))?;
    Ok(Exemplar {
        labels: decode_labels(labels),
        value: f64::from_bits(u64::from_be_bytes(*bits)),
        t,
    })
}

/// Reads the exemplars of one series after another through a single RocksDB iterator.
pub(crate) struct Scanner<'a> {
    it: DBRawIterator<'a>,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(db: &'a Db) -> Result<Scanner<'a>, StorageError> {
        Ok(Scanner {
            it: db.raw_iterator_cf(&db::cf(db, CF_EXEMPLARS)?),
        })
    }

    /// The stored exemplars of series `id` in [lo, hi], oldest first.
    pub(crate) fn scan(
        &mut self,
        id: u64,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<Exemplar>, StorageError> {
        let mut out = Vec::new();
        self.it.seek(key(id, lo));
        while let (Some(k), Some(v)) = (self.it.key(), self.it.value()) {
            match parse_key(k) {
                Some((kid, t)) if kid == id && t <= hi => out.push(decode(t, v)?),
                Some(_) => break,
                None => return Err(StorageError::Corrupt(format!("exemplar key {k:02x?}"))),
            }
            self.it.next();
        }
        self.it.status()?;
        Ok(out)
    }

    /// The newest stored exemplar of series `id`.
    pub(crate) fn newest(&mut self, id: u64) -> Result<Option<Exemplar>, StorageError> {
        self.it.seek_for_prev(key(id, i64::MAX));
        self.it.status()?;
        match (self.it.key().and_then(parse_key), self.it.value()) {
            (Some((kid, t)), Some(v)) if kid == id => decode(t, v).map(Some),
            _ => Ok(None),
        }
    }

    /// Adds to `wb` the newest `keep` of `accepted` (new exemplars of series `id`, oldest
    /// first, each newer than every stored one) and the deletion of the stored exemplars that
    /// leave the newest `keep` of the series. Walks the series' stored exemplars from the
    /// newest: at most the bound of an earlier run, whatever the series' history.
    pub(crate) fn put(
        &mut self,
        db: &Db,
        wb: &mut WriteBatch,
        id: u64,
        accepted: &[Exemplar],
        keep: usize,
    ) -> Result<(), StorageError> {
        let cf = db::cf(db, CF_EXEMPLARS)?;
        let written = &accepted[accepted.len().saturating_sub(keep)..];
        for e in written {
            wb.put_cf(&cf, key(id, e.t), encode(e));
        }
        let mut room = keep - written.len();
        self.it.seek_for_prev(key(id, i64::MAX));
        while let Some((kid, t)) = self.it.key().and_then(parse_key) {
            if kid != id {
                break;
            }
            match room.checked_sub(1) {
                Some(left) => room = left,
                None => wb.delete_cf(&cf, key(id, t)),
            }
            self.it.prev();
        }
        self.it.status()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;
    use proptest::prelude::*;

    fn ex(t: i64, v: f64, trace: &str) -> Exemplar {
        Exemplar {
            labels: Labels::from_pairs([("trace_id", trace)]),
            value: v,
            t,
        }
    }

    #[test]
    fn judged_as_prometheus_judges_against_the_newest() {
        let newest = ex(10, 1.0, "a");
        assert_eq!(judge(None, &newest), Verdict::Store);
        assert_eq!(judge(Some(&newest), &ex(10, 1.0, "a")), Verdict::Duplicate);
        // Same time, other content: not a repeat, and not newer.
        assert_eq!(judge(Some(&newest), &ex(10, 2.0, "a")), Verdict::OutOfOrder);
        assert_eq!(judge(Some(&newest), &ex(9, 1.0, "b")), Verdict::OutOfOrder);
        assert_eq!(judge(Some(&newest), &ex(11, 1.0, "a")), Verdict::Store);
        let nan = ex(10, f64::NAN, "a");
        assert_eq!(judge(Some(&nan), &nan), Verdict::OutOfOrder);
        // 128 characters: name and value counted in characters, not bytes.
        let at_limit = Exemplar {
            labels: Labels::from_pairs([("trace_id", "é".repeat(120))]),
            ..ex(20, 1.0, "")
        };
        assert_eq!(judge(None, &at_limit), Verdict::Store);
        let over = Exemplar {
            labels: Labels::from_pairs([("trace_id", "é".repeat(121))]),
            ..ex(20, 1.0, "")
        };
        assert_eq!(judge(None, &over), Verdict::TooLong);
    }

    proptest! {
        #[test]
        fn values_round_trip(
            t in any::<i64>(),
            bits in any::<u64>(),
            pairs in proptest::collection::vec(("[a-z_]{1,4}", "[a-z0-9\u{e9}]{1,6}"), 0..4),
        ) {
            let e = Exemplar {
                labels: Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                value: f64::from_bits(bits),
                t,
            };
            let back = decode(t, &encode(&e)).unwrap();
            prop_assert_eq!(back.value.to_bits(), bits);
            prop_assert_eq!(back.labels, e.labels);
        }

        #[test]
        fn truncated_values_are_corrupt_not_a_panic(v in proptest::collection::vec(any::<u8>(), 0..8)) {
            prop_assert!(decode(0, &v).is_err());
        }
    }
}
