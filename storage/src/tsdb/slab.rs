//! [`IdSlab`]: per-series records keyed by series id, held in fixed-size pages with a small
//! table from id to slot.
//!
//! Why not a `HashMap<u64, T>`: a hash map holds its values in its buckets, and a table sized
//! for a million series has two million of them, so every byte of a record costs about two
//! (or, boxed, a pointer per bucket plus an allocation per record). Here the table holds only a
//! 4-byte slot number per bucket and the records sit densely in pages, which never move: growth
//! allocates one more page instead of copying every record while the caller holds its lock.
//! Slots freed by removed series are reused, so the pages grow with the series held at once,
//! not with every series ever seen.
//!
//! Owns storage and lookup only; knows nothing of what a record means.

use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};

/// Records per page: large enough that the page list stays short, small enough that the
/// last, partly used page costs little.
const PAGE: usize = 1024;

/// `PAGE` slots, each empty or holding an id and its record.
type Page<T> = Box<[Option<(u64, T)>]>;

pub(crate) struct IdSlab<T> {
    pages: Vec<Page<T>>,
    /// Slots below `pages.len() * PAGE` that hold nothing, reused first.
    free: Vec<u32>,
    /// Slot numbers, hashed by the id their slot holds.
    ids: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl<T> Default for IdSlab<T> {
    fn default() -> IdSlab<T> {
        IdSlab {
            pages: Vec::new(),
            free: Vec::new(),
            ids: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

/// `(id, record)` at a slot that is known to be occupied.
fn occupied<T>(pages: &[Page<T>], slot: u32) -> &(u64, T) {
    let slot = slot as usize;
    pages[slot / PAGE][slot % PAGE]
        .as_ref()
        .expect("the id table lists occupied slots only")
}

fn occupied_mut<T>(pages: &mut [Page<T>], slot: u32) -> &mut (u64, T) {
    let slot = slot as usize;
    pages[slot / PAGE][slot % PAGE]
        .as_mut()
        .expect("the id table lists occupied slots only")
}

impl<T> IdSlab<T> {
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The slot holding `id`: stable until `id` is removed.
    pub(crate) fn slot(&self, id: u64) -> Option<u32> {
        let pages = &self.pages;
        self.ids
            .find(self.hasher.hash_one(id), |&s| occupied(pages, s).0 == id)
            .copied()
    }

    /// The id and record at a slot [`IdSlab::slot`] or [`IdSlab::insert`] gave.
    pub(crate) fn at(&self, slot: u32) -> (u64, &T) {
        let (id, value) = occupied(&self.pages, slot);
        (*id, value)
    }

    /// Whether `slot` holds `id`: a slot remembered from earlier, checked without a lookup
    /// (ids are never reused, so a slot that holds the id holds its record).
    pub(crate) fn holds(&self, slot: u32, id: u64) -> bool {
        let slot = slot as usize;
        self.pages
            .get(slot / PAGE)
            .and_then(|p| p[slot % PAGE].as_ref())
            .is_some_and(|(held, _)| *held == id)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        self.slot(id).map(|s| self.at(s).1)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let slot = self.slot(id)?;
        Some(&mut occupied_mut(&mut self.pages, slot).1)
    }

    /// Puts `value` as the record of `id` (replacing one it had) and returns its slot.
    pub(crate) fn insert(&mut self, id: u64, value: T) -> u32 {
        let hash = self.hasher.hash_one(id);
        let Self {
            pages,
            free,
            ids,
            hasher,
        } = self;
        let rehash = |&s: &u32| hasher.hash_one(occupied(pages, s).0);
        match ids.entry(hash, |&s| occupied(pages, s).0 == id, rehash) {
            Entry::Occupied(e) => {
                let slot = *e.get();
                occupied_mut(pages, slot).1 = value;
                slot
            }
            Entry::Vacant(e) => {
                let slot = free.pop().unwrap_or_else(|| {
                    let next = pages.len() * PAGE;
                    pages.push((0..PAGE).map(|_| None).collect());
                    // The new page's slots but the first, taken below, lowest reused first.
                    free.extend((next + 1..next + PAGE).rev().map(|s| s as u32));
                    next as u32
                });
                pages[slot as usize / PAGE][slot as usize % PAGE] = Some((id, value));
                e.insert(slot);
                slot
            }
        }
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let hash = self.hasher.hash_one(id);
        let pages = &mut self.pages;
        let slot = self
            .ids
            .find_entry(hash, |&s| occupied(pages, s).0 == id)
            .ok()?
            .remove()
            .0;
        self.free.push(slot);
        pages[slot as usize / PAGE][slot as usize % PAGE]
            .take()
            .map(|(_, v)| v)
    }

    /// Every `(id, record)`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.pages
            .iter()
            .flat_map(|p| p.iter().flatten())
            .map(|(id, v)| (*id, v))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pages
            .iter_mut()
            .flat_map(|p| p.iter_mut().flatten())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct ids, so that inserts replace and removes hit.
        prop_oneof![
            (0..3000u64, any::<u32>()).prop_map(|(id, v)| Op::Insert(id, v)),
            (0..3000u64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 0..6000)) {
            let mut slab = IdSlab::default();
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(id, v) => {
                        let slot = slab.insert(id, v);
                        prop_assert_eq!(slab.at(slot), (id, &v));
                        model.insert(id, v);
                    }
                    Op::Remove(id) => prop_assert_eq!(slab.remove(id), model.remove(&id)),
                }
            }
            prop_assert_eq!(slab.len(), model.len());
            let mut held: Vec<(u64, u32)> = slab.iter().map(|(id, v)| (id, *v)).collect();
            held.sort_unstable();
            let mut expected: Vec<(u64, u32)> = model.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(&held, &expected);
            for (id, v) in expected {
                prop_assert_eq!(slab.get(id), Some(&v));
            }
            // Slots are reused: never more pages than the most records held at once need.
            prop_assert!(slab.pages.len() <= 3000usize.div_ceil(PAGE));
        }
    }

    #[test]
    fn slots_are_stable_and_reused() {
        let mut slab = IdSlab::default();
        let a = slab.insert(10, "a");
        let b = slab.insert(20, "b");
        assert_ne!(a, b);
        assert_eq!(slab.insert(10, "A"), a);
        assert_eq!(slab.slot(20), Some(b));
        assert_eq!(slab.remove(10), Some("A"));
        assert_eq!(slab.get(10), None);
        assert_eq!(slab.insert(30, "c"), a, "the freed slot is taken again");
        assert!(slab.holds(a, 30) && !slab.holds(a, 10) && !slab.holds(b, 30));
        assert!(
            !slab.holds(1 << 20, 30),
            "a slot beyond the pages holds nothing"
        );
        let d = slab.insert(40, "d");
        *slab.get_mut(40).unwrap() = "D";
        assert_eq!(slab.at(d), (40, &"D"));
        for v in slab.values_mut() {
            *v = "x";
        }
        assert!(slab.iter().all(|(_, v)| *v == "x"));
        assert_eq!(slab.len(), 3);
    }
}
