//! The C heap (glibc's malloc, which Rust's global allocator and RocksDB's C++ both use): its
//! statistics for `/metrics`, and a trimmer that gives the memory it holds free back to the
//! system. Owns no allocation policy beyond that.
//!
//! glibc keeps freed memory in its arenas (one per thread that contended, up to 8 per core)
//! for reuse and returns it only from the top of each heap. With novamon's mix of threads
//! (async workers, the blocking pool, RocksDB's and tantivy's) the memory held free grew by
//! some 6 MB a minute in the soak while the memory in use stayed flat; `malloc_trim` releases
//! the free pages inside the arenas too.

use std::time::Duration;

/// How often the trimmer runs: often enough that free memory cannot pile up between two
/// trims, rarely enough that its walk over the free lists costs nothing measurable.
const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// Bytes the heap has allocated (including chunks it mapped on their own) and bytes it holds
/// free. Resident memory that grows while the bytes in use stay flat is the allocator keeping
/// freed memory, not a leak.
pub(crate) fn bytes() -> (u64, u64) {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, m.fordblks as u64)
}

/// Starts the thread that trims the heap every [`TRIM_INTERVAL`] for as long as the process
/// runs.
pub(crate) fn spawn_trimmer() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_INTERVAL);
            // SAFETY: malloc_trim only returns free pages to the system, under the
            // allocator's own locks; no memory in use is touched.
            unsafe { libc::malloc_trim(0) };
        })?;
    Ok(())
}
