//! Interned label strings of the series in memory: each distinct name and value held once and
//! counted by the series holding it, so that a series' label set is a few small integers
//! ([`SymbolLabels`]) read through the table ([`LabelsRef`]).
//!
//! Why: a label set held as its own bytes repeats `__name__`, the job and every common value in
//! every series, ~100 bytes for a node exporter's series; as varint symbols it is ~12. A string
//! leaves the table with the last series holding it, so the table follows the series in memory,
//! not every value ever seen.
//!
//! Owns the strings, their counts and the compact form; knows nothing of series ids, postings or
//! what is persisted (label sets are stored and compared in their encoded form,
//! `labelset::StoredLabels`).

use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};

use crate::encoding::{put_uvarint, Cursor};
use crate::tsdb::labelset::StoredLabels;
use crate::{Label, Labels};

#[derive(Default)]
pub(crate) struct Symbols {
    /// By symbol; a free symbol holds an empty string and no count.
    entries: Vec<Symbol>,
    /// Symbols whose last holder left, reused first.
    free: Vec<u32>,
    /// Symbols, hashed by their string.
    by_text: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

struct Symbol {
    text: Box<str>,
    holders: u32,
}

impl Symbols {
    /// The symbol of `text`, counting one more holder.
    fn intern(&mut self, text: &str) -> u32 {
        let Symbols {
            entries,
            free,
            by_text,
            hasher,
        } = self;
        let hash = hasher.hash_one(text);
        let rehash = |&s: &u32| hasher.hash_one(&*entries[s as usize].text);
        match by_text.entry(hash, |&s| *entries[s as usize].text == *text, rehash) {
            Entry::Occupied(e) => {
                let s = *e.get();
                entries[s as usize].holders += 1;
                s
            }
            Entry::Vacant(e) => {
                let symbol = Symbol {
                    text: text.into(),
                    holders: 1,
                };
                let s = match free.pop() {
                    Some(s) => {
                        entries[s as usize] = symbol;
                        s
                    }
                    None => {
                        entries.push(symbol);
                        u32::try_from(entries.len() - 1).expect("fewer than 2^32 label strings")
                    }
                };
                e.insert(s);
                s
            }
        }
    }

    /// One holder of `s` fewer; the string leaves with the last.
    fn release(&mut self, s: u32) {
        let entry = &mut self.entries[s as usize];
        entry.holders -= 1;
        if entry.holders > 0 {
            return;
        }
        let hash = self.hasher.hash_one(&*entry.text);
        if let Ok(e) = self.by_text.find_entry(hash, |&held| held == s) {
            e.remove();
        }
        entry.text = Box::default();
        self.free.push(s);
    }

    fn text(&self, s: u32) -> &str {
        &self.entries[s as usize].text
    }

    /// Interns a label set (well-formed: checked when it was stored or received).
    pub(crate) fn add(&mut self, labels: &StoredLabels) -> SymbolLabels {
        let mut codes = Vec::with_capacity(16);
        for (name, value) in labels.pairs() {
            put_uvarint(&mut codes, u64::from(self.intern(name)));
            put_uvarint(&mut codes, u64::from(self.intern(value)));
        }
        SymbolLabels(codes.into())
    }

    /// Releases a label set's strings.
    pub(crate) fn remove(&mut self, labels: &SymbolLabels) {
        for s in labels.symbols() {
            self.release(s);
        }
    }

    pub(crate) fn read<'a>(&'a self, labels: &'a SymbolLabels) -> LabelsRef<'a> {
        LabelsRef {
            symbols: self,
            codes: &labels.0,
        }
    }

    /// Strings held, for the tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_text.len()
    }
}

/// A label set as symbols: name, value, name, value, ... as varints, sorted by name.
pub(crate) struct SymbolLabels(Box<[u8]>);

impl SymbolLabels {
    fn symbols(&self) -> impl Iterator<Item = u32> + '_ {
        let mut c = Cursor::new(&self.0);
        // Written by `Symbols::add` from u32s: every varint is whole and fits.
        std::iter::from_fn(move || c.uvarint().map(|s| s as u32))
    }
}

/// A label set read through the table it was interned in.
#[derive(Clone, Copy)]
pub(crate) struct LabelsRef<'a> {
    symbols: &'a Symbols,
    codes: &'a [u8],
}

impl<'a> LabelsRef<'a> {
    /// The `(name, value)` pairs, sorted by name.
    pub(crate) fn pairs(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut c = Cursor::new(self.codes);
        let symbols = self.symbols;
        std::iter::from_fn(move || {
            let name = c.uvarint()? as u32;
            let value = c.uvarint()? as u32;
            Some((symbols.text(name), symbols.text(value)))
        })
    }

    pub(crate) fn get(self, name: &str) -> Option<&'a str> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub(crate) fn to_labels(self) -> Labels {
        Labels::new(self.pairs().map(|(n, v)| Label::new(n, v)).collect())
    }

    /// The label set in its stored encoding.
    pub(crate) fn to_stored(self) -> StoredLabels {
        let mut out = Vec::with_capacity(128);
        crate::batch::put_pairs(&mut out, self.pairs());
        StoredLabels::from_encoded(&out)
    }

    /// Whether this is the label set encoded as an [`crate::EncodedBatch`] holds it.
    pub(crate) fn is(self, encoded: &[u8]) -> bool {
        let mut theirs = crate::batch::byte_pairs(encoded);
        let mut ours = self.pairs();
        loop {
            match (ours.next(), theirs.next()) {
                (None, None) => return true,
                (Some((n, v)), Some((tn, tv))) if n.as_bytes() == tn && v.as_bytes() == tv => {}
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels_strategy() -> impl Strategy<Value = Labels> {
        proptest::collection::vec(("[a-c_]{1,3}", "[a-c\u{e9}]{0,3}"), 0..5)
            .prop_map(Labels::from_pairs)
    }

    proptest! {
        /// Label sets read back as they went in, however many share strings, and every string
        /// leaves the table with its last holder (symbols are then reused).
        #[test]
        fn label_sets_read_back_and_strings_leave_with_their_last_holder(
            sets in proptest::collection::vec(labels_strategy(), 1..12),
            keep in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let mut table = Symbols::default();
            let stored: Vec<StoredLabels> = sets.iter().map(StoredLabels::encode).collect();
            let interned: Vec<SymbolLabels> = stored.iter().map(|s| table.add(s)).collect();
            for ((set, st), sym) in sets.iter().zip(&stored).zip(&interned) {
                let read = table.read(sym);
                prop_assert_eq!(read.to_labels(), set.clone());
                prop_assert!(read.is(st.bytes()));
                let again = read.to_stored();
                prop_assert_eq!(again.bytes(), st.bytes());
                for l in set.iter() {
                    prop_assert_eq!(read.get(&l.name), Some(l.value.as_str()));
                }
                for other in &stored {
                    prop_assert_eq!(read.is(other.bytes()), other.bytes() == st.bytes());
                }
            }
            let mut kept = Vec::new();
            for ((set, sym), keep) in sets.iter().zip(interned).zip(&keep) {
                if *keep {
                    kept.push((set, sym));
                } else {
                    table.remove(&sym);
                }
            }
            let strings: std::collections::BTreeSet<&str> = kept
                .iter()
                .flat_map(|(set, _)| set.iter().flat_map(|l| [l.name.as_str(), l.value.as_str()]))
                .collect();
            prop_assert_eq!(table.len(), strings.len());
            // New strings take freed symbols and old ones still read right.
            let fresh = StoredLabels::encode(&Labels::from_pairs([("zz", "new")]));
            let fresh_sym = table.add(&fresh);
            prop_assert_eq!(table.read(&fresh_sym).to_labels(), fresh.to_labels());
            for (set, sym) in &kept {
                prop_assert_eq!(table.read(sym).to_labels(), (*set).clone());
            }
        }
    }
}
