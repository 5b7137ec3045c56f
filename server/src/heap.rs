//! The process heap: jemalloc, built unprefixed so it is `malloc` itself and serves RocksDB's
//! C++ as well as Rust (the binary also names it Rust's global allocator). Owns the allocator's
//! statistics for `/metrics`. Its policy is jemalloc's defaults (background threads purge
//! freed pages after a decay time) but for that decay time, one second instead of ten, which
//! the binary sets (`main.rs`, `malloc_conf`).

use tikv_jemalloc_ctl::{epoch, stats};

/// Bytes allocated and in use, and bytes resident but not allocated (freed memory jemalloc has
/// not yet returned, its own metadata, fragmentation). Resident memory that grows while the
/// bytes in use stay flat is the allocator keeping freed memory, not a leak.
pub(crate) fn bytes() -> (u64, u64) {
    // The statistics are a snapshot refreshed by advancing the epoch; a failure leaves the
    // previous snapshot, which is still a valid (older) reading.
    let _ = epoch::advance();
    let allocated = stats::allocated::read().unwrap_or(0) as u64;
    let resident = stats::resident::read().unwrap_or(0) as u64;
    (allocated, resident.saturating_sub(allocated))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_what_is_allocated() {
        // Other tests allocate and free concurrently: a block far larger than theirs, and
        // margins of half of it.
        const BLOCK: u64 = 256 << 20;
        let before = super::bytes().0;
        let block = vec![1u8; BLOCK as usize];
        let during = super::bytes().0;
        assert!(during > before + BLOCK / 2, "{before} -> {during}");
        drop(block);
        let after = super::bytes().0;
        assert!(after + BLOCK / 2 < during, "{during} -> {after}");
    }
}
