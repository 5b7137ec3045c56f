//! A series' label set as it is persisted and passed around outside the index: the very bytes
//! stored in the `series` column family and the cold index and carried by an
//! [`crate::EncodedBatch`] (`batch` owns that encoding), in one shared allocation, read through
//! borrowed `(name, value)` pairs. The index holds label sets as symbols instead (`symbols`)
//! and hands them out in this form: a selection's series, a series leaving memory.
//!
//! Owns the comparisons on that form (label order, equality by bytes); knows nothing of ids,
//! postings or time bounds.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::batch::{byte_pairs, str_pairs};
use crate::encoding::Cursor;
use crate::Labels;

#[derive(Clone, Debug)]
pub(crate) struct StoredLabels(Arc<[u8]>);

impl StoredLabels {
    #[cfg(test)]
    pub(crate) fn encode(labels: &Labels) -> StoredLabels {
        StoredLabels::from_encoded(crate::EncodedLabels::new(labels).bytes())
    }

    /// Copies a label set out of an [`EncodedBatch`] (well-formed by construction).
    pub(crate) fn from_encoded(bytes: &[u8]) -> StoredLabels {
        StoredLabels(bytes.into())
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
        str_pairs(&self.0)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub(crate) fn to_labels(&self) -> Labels {
        crate::batch::decode_labels(&self.0)
    }

    /// The order of [`Labels`] (byte order is `str` order).
    pub(crate) fn cmp_labels(&self, other: &StoredLabels) -> Ordering {
        self.byte_pairs().cmp(other.byte_pairs())
    }

    /// The pairs as bytes, without checking UTF-8 again.
    fn byte_pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        byte_pairs(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Label;
    use proptest::prelude::*;

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
            prop_assert_eq!(sa.bytes() == sb.bytes(), a == b);
            prop_assert_eq!(sa.cmp_labels(&sb), a.cmp(&b));
            for l in a.iter() {
                prop_assert_eq!(sa.get(&l.name), Some(l.value.as_str()));
            }
            let back = StoredLabels::from_stored(sa.bytes()).unwrap();
            prop_assert_eq!(back.to_labels(), a.clone());
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
