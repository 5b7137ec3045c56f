//! Per-series exclusion between concurrent appends: an append holds the series it writes from
//! validation until its samples are in the head, so that two appends to one series are judged
//! and applied one after the other (and their WAL records follow that order), while appends to
//! different series run side by side.
//!
//! Owns the set of held series ids only; it knows nothing of samples, the head or RocksDB.
//! An append takes all its series at once or waits holding none, so two appends can never
//! wait for each other.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct SeriesLocks {
    held: Mutex<Held>,
    released: Condvar,
}

/// The id sets of the appends in flight, each sorted: a handful at a time (one per request
/// being appended), so checking a new set against each by a merge walk costs less than
/// hashing every id in and out of one shared set.
#[derive(Default)]
struct Held {
    sets: Vec<Arc<[u64]>>,
    /// Appends waiting for a series: only then does a release wake anyone.
    waiting: usize,
}

/// The series of one append, released on drop.
pub(crate) struct SeriesGuard<'a> {
    locks: &'a SeriesLocks,
    ids: Arc<[u64]>,
}

/// Whether two sorted id lists share an id.
fn overlap(a: &[u64], b: &[u64]) -> bool {
    let (Some(a_first), Some(b_first), Some(a_last), Some(b_last)) =
        (a.first(), b.first(), a.last(), b.last())
    else {
        return false;
    };
    if a_last < b_first || b_last < a_first {
        return false;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

impl SeriesLocks {
    /// Takes every id of `ids` (deduplicated), waiting while any is held by another append.
    pub(crate) fn lock(&self, mut ids: Vec<u64>) -> SeriesGuard<'_> {
        ids.sort_unstable();
        ids.dedup();
        let ids: Arc<[u64]> = ids.into();
        let mut held = self.held.lock();
        while held.sets.iter().any(|set| overlap(set, &ids)) {
            held.waiting += 1;
            self.released.wait(&mut held);
            held.waiting -= 1;
        }
        held.sets.push(ids.clone());
        SeriesGuard { locks: self, ids }
    }
}

impl SeriesGuard<'_> {
    /// How many distinct series are held.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

impl Drop for SeriesGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock();
        if let Some(i) = held.sets.iter().position(|s| Arc::ptr_eq(s, &self.ids)) {
            held.sets.swap_remove(i);
        }
        if held.waiting > 0 {
            self.locks.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn disjoint_sets_are_held_together_and_overlapping_ones_wait() {
        let locks = Arc::new(SeriesLocks::default());
        let a = locks.lock(vec![3, 1, 3]);
        let b = locks.lock(vec![2, 4]);
        let entered = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (locks, entered) = (locks.clone(), entered.clone());
            std::thread::spawn(move || {
                let _c = locks.lock(vec![4, 5]);
                entered.store(true, Ordering::SeqCst);
            })
        };
        drop(a);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !entered.load(Ordering::SeqCst),
            "series 4 is still held by b"
        );
        drop(b);
        waiter.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
        assert!(locks.held.lock().sets.is_empty());
    }

    #[test]
    fn overlap_of_sorted_lists() {
        assert!(!overlap(&[], &[1]));
        assert!(!overlap(&[1, 3, 5], &[2, 4, 6]));
        assert!(!overlap(&[1, 2], &[3, 4]));
        assert!(overlap(&[1, 4, 9], &[2, 4]));
        assert!(overlap(&[7], &[1, 7, 8]));
    }
}
