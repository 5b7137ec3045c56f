//! A series' label set as the index holds it in memory: the very bytes persisted in the
//! `series` column family (a count, then each name and value length-prefixed), in one shared
//! allocation, read through borrowed `(name, value)` pairs. An owned [`Labels`] costs a vector
//! plus two heap strings per label, three to four times as much for a typical series.
//!
//! Owns that encoding and the comparisons the index needs (equality with a [`Labels`], label
//! order, the hash [`Labels`] has); knows nothing of ids, postings or time bounds.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::encoding::{put_bytes, put_uvarint, Cursor};
use crate::labels::hash_label_pairs;
use crate::{Label, Labels};

#[derive(Clone, Debug)]
pub(crate) struct StoredLabels(Arc<[u8]>);

impl StoredLabels {
    pub(crate) fn encode(labels: &Labels) -> StoredLabels {
        let mut out = Vec::with_capacity(
            labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 2)
                .sum::<usize>()
                + 1,
        );
        put_uvarint(&mut out, labels.len() as u64);
        for l in labels {
            put_bytes(&mut out, l.name.as_bytes());
            put_bytes(&mut out, l.value.as_bytes());
        }
        StoredLabels(out.into())
    }

    /// Takes persisted bytes as they are, once they are checked to be a well-formed label set
    /// (so that [`StoredLabels::pairs`] yields all of it).
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<StoredLabels> {
        let mut c = Cursor::new(bytes);
        for _ in 0..c.uvarint()? {
            std::str::from_utf8(c.bytes()?).ok()?;
            std::str::from_utf8(c.bytes()?).ok()?;
        }
        c.is_empty().then(|| StoredLabels(bytes.into()))
    }

    /// What is persisted.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `(name, value)` pairs, sorted by name.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        // Checked by `from_stored` (or written from `&str`s): this never ends early.
        self.byte_pairs()
            .map_while(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub(crate) fn to_labels(&self) -> Labels {
        Labels::new(
            self.pairs()
                .map(|(name, value)| Label::new(name, value))
                .collect(),
        )
    }

    /// Whether this is the label set `labels`. Compares bytes: the index looks up every
    /// series of every request, and checking UTF-8 again there cost a tenth of ingest.
    pub(crate) fn is(&self, labels: &Labels) -> bool {
        self.byte_pairs().eq(labels
            .iter()
            .map(|l| (l.name.as_bytes(), l.value.as_bytes())))
    }

    /// The order of [`Labels`] (byte order is `str` order).
    pub(crate) fn cmp_labels(&self, other: &StoredLabels) -> Ordering {
        self.byte_pairs().cmp(other.byte_pairs())
    }

    /// The pairs as bytes, without checking UTF-8 again.
    fn byte_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut c = Cursor::new(&self.0);
        let n = c.uvarint().unwrap_or(0);
        (0..n).map_while(move |_| Some((c.bytes()?, c.bytes()?)))
    }
}

/// The same hash as the [`Labels`] it encodes, so either can look the other up.
impl Hash for StoredLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_label_pairs(self.byte_pairs(), state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    fn labels_strategy() -> impl Strategy<Value = Labels> {
        proptest::collection::vec(("[a-c_]{1,3}", "[a-c\u{e9}]{0,3}"), 0..5).prop_map(|pairs| {
            Labels::new(pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect())
        })
    }

    proptest! {
        #[test]
        fn agrees_with_owned_labels(a in labels_strategy(), b in labels_strategy()) {
            let (sa, sb) = (StoredLabels::encode(&a), StoredLabels::encode(&b));
            prop_assert_eq!(sa.to_labels(), a.clone());
            prop_assert!(sa.is(&a));
            prop_assert_eq!(sa.is(&b), a == b);
            prop_assert_eq!(sa.cmp_labels(&sb), a.cmp(&b));
            let h = foldhash::fast::FixedState::with_seed(7);
            prop_assert_eq!(h.hash_one(&sa), h.hash_one(&a));
            for l in a.iter() {
                prop_assert_eq!(sa.get(&l.name), Some(l.value.as_str()));
            }
            let back = StoredLabels::from_stored(sa.bytes()).unwrap();
            prop_assert!(back.is(&a));
        }

        #[test]
        fn refuses_malformed_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Some(s) = StoredLabels::from_stored(&bytes) {
                // Whatever it accepts reads back as a whole.
                let n = Cursor::new(&bytes).uvarint().unwrap_or(0);
                prop_assert_eq!(s.pairs().count() as u64, n);
            }
        }
    }
}
