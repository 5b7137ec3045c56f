//! The C heap (glibc's malloc, which Rust's global allocator and RocksDB's C++ both use): its
//! statistics for `/metrics`. Owns no allocation policy.

/// Bytes the heap has allocated (including chunks it mapped on their own) and bytes it holds
/// free. Resident memory that grows while the bytes in use stay flat is the allocator keeping
/// freed memory, not a leak.
pub(crate) fn bytes() -> (u64, u64) {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, m.fordblks as u64)
}
