//! Per-series exclusion between concurrent appends: an append holds the series it writes from
//! validation until its samples are in the head, so that two appends to one series are judged
//! and applied one after the other (and their WAL records follow that order), while appends to
//! different series run side by side.
//!
//! Owns the set of held series ids only; it knows nothing of samples, the head or RocksDB.
//! An append takes all its series at once or waits holding none, so two appends can never
//! wait for each other.

use foldhash::HashSet;
use parking_lot::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct SeriesLocks {
    held: Mutex<Held>,
    released: Condvar,
}

#[derive(Default)]
struct Held {
    ids: HashSet<u64>,
    /// Appends waiting for a series: only then does a release wake anyone.
    waiting: usize,
}

/// The series of one append, released on drop.
pub(crate) struct SeriesGuard<'a> {
    locks: &'a SeriesLocks,
    ids: Vec<u64>,
}

impl SeriesLocks {
    /// Takes every id of `ids` (deduplicated), waiting while any is held by another append.
    pub(crate) fn lock(&self, mut ids: Vec<u64>) -> SeriesGuard<'_> {
        ids.sort_unstable();
        ids.dedup();
        let mut held = self.held.lock();
        while ids.iter().any(|id| held.ids.contains(id)) {
            held.waiting += 1;
            self.released.wait(&mut held);
            held.waiting -= 1;
        }
        held.ids.extend(&ids);
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
        for id in &self.ids {
            held.ids.remove(id);
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
    use std::sync::Arc;
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
        assert!(locks.held.lock().ids.is_empty());
    }
}
