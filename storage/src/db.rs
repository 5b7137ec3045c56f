//! The RocksDB handle and the column-family plumbing every other module uses: the fixed
//! column families and their options, opening, looking up handles, and emptying a column
//! family cheaply. Owns no key format; the modules that own data define their keys.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor,
    DBCompressionType, Options,
};

use crate::StorageError;

pub(crate) type Db = rocksdb::DB;
pub(crate) type Cf<'a> = Arc<BoundColumnFamily<'a>>;

/// Series id (u64 BE) → encoded label set.
pub(crate) const CF_SERIES: &str = "series";
/// Series id → (min t, max t) as of the last checkpoint.
pub(crate) const CF_SERIES_TIMES: &str = "series_times";
/// Counters, schema version, metric metadata.
pub(crate) const CF_META: &str = "meta";
/// Appended samples not yet checkpointed into chunks: seq (u64 BE) → record.
pub(crate) const CF_WAL: &str = "wal";

/// The native histogram head: series id (u64 BE) | t (sign-flipped u64 BE) → encoded
/// histogram, until a checkpoint seals the sample into a chunk of its day partition.
pub(crate) const CF_HISTOGRAMS: &str = "histograms";

/// Exemplars: series id (u64 BE) | t (sign-flipped u64 BE) → value and label set
/// (`tsdb::exemplars`), the newest few of each series.
pub(crate) const CF_EXEMPLARS: &str = "exemplars";

/// Label set of a series idle past the head window → its id, time bounds and last sample.
pub(crate) const CF_COLD_LABELS: &str = "cold_labels";
/// Per-partition inverted index of the series idle past the head window (`tsdb::cold`).
pub(crate) const CF_COLD_INDEX: &str = "cold_index";

/// Appended data waiting to be forwarded by `remote_write` (`tsdb::outbox`): records by
/// sequence number, and each destination's acknowledged offset.
pub(crate) const CF_OUTBOX: &str = "outbox";

const FIXED_CFS: [&str; 9] = [
    CF_SERIES,
    CF_SERIES_TIMES,
    CF_META,
    CF_WAL,
    CF_HISTOGRAMS,
    CF_EXEMPLARS,
    CF_COLD_LABELS,
    CF_COLD_INDEX,
    CF_OUTBOX,
];

/// Column families earlier versions wrote: `series_by_labels` (label set → id, never read)
/// and `postings` (the inverted index, now rebuilt from `series` at open).
const RETIRED_CFS: [&str; 2] = ["series_by_labels", "postings"];

/// Column family options reading through `cache`, compressed with `compression`.
///
/// Every column family of a database shares one LRU block cache, which also holds the index
/// and filter blocks. RocksDB's defaults give each column family a 32 MiB cache of its own
/// (the TSDB adds a column family per day) and keep every open file's index and filter blocks
/// on the heap outside any cache, so memory would grow with the column families and the data
/// on disk rather than stay within the cache's size.
pub(crate) fn cf_options(cache: &Cache, compression: DBCompressionType) -> Options {
    table_options(cache, compression, |_| {})
}

fn table_options(
    cache: &Cache,
    compression: DBCompressionType,
    tune: impl FnOnce(&mut BlockBasedOptions),
) -> Options {
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_cache_index_and_filter_blocks(true);
    // The newest files' index blocks are read by nearly every lookup: never evicted.
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Index and filter in 4 KiB partitions under a small pinned top level. Whole, a file's
    // index or filter grows with its keys (MiBs for a day of a million series), and the LRU
    // cache is split in shards of 512 KiB (64 for 32 MiB): a block larger than its shard is
    // read from the file and checksummed again at every lookup (measured: 90% of the CPU of
    // an ingest of new series, each looked up in `cold_labels`).
    t.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    t.set_partition_filters(true);
    t.set_metadata_block_size(4096);
    t.set_pin_top_level_index_and_filter(true);
    t.set_cache_index_and_filter_blocks_with_high_priority(true);
    tune(&mut t);
    let mut o = Options::default();
    o.set_block_based_table_factory(&t);
    o.set_compression_type(compression);
    o
}

/// The TSDB's fixed column families. zstd for the data kept: its entropy coding finds what
/// repeats from series to series in label sets and time bounds, where lz4's byte matches find
/// little (20k node-exporter series in 64 KiB blocks: label sets 273 → 95 KB, time bounds
/// 100 → 21 KB). lz4 for the write-ahead log and the outbox, whose records are written once,
/// read once and deleted: the cheaper compressor where the data does not stay.
fn index_cf_options(cache: &Cache, name: &str) -> Options {
    let compression = match name {
        CF_WAL | CF_OUTBOX => DBCompressionType::Lz4,
        _ => DBCompressionType::Zstd,
    };
    table_options(cache, compression, |t| match name {
        // Looked up for every label set new to memory, and almost always missing: a bloom
        // filter answers that without reading a data block.
        CF_COLD_LABELS => t.set_bloom_filter(10.0, false),
        // Only ever read whole, at open: large blocks let the compressor find the label names
        // and values that repeat from series to series.
        CF_SERIES | CF_SERIES_TIMES => t.set_block_size(64 << 10),
        _ => {}
    })
}

/// A trace partition's family (`spans`: the spans by trace id). A trace is read by id in every
/// partition, and most partitions hold none of its spans: a bloom filter on the 16-byte trace
/// id prefix answers that without reading a data block. zstd rather than lz4: the index keys
/// and the spans' attributes repeat names and values that its entropy coding finds
/// (`traces_bench --spans 200000`: index 178 → 141 bytes/span, spans 71 → 64). The index is
/// read in runs of neighbouring keys, and its blocks are 16 KiB, where zstd and the shared
/// key prefixes find more than in 4 KiB (index 80.3 → 76.2 bytes/span; 74.2 in 64 KiB, whose
/// larger reads the time keys' point lookups pay for).
///
/// Span records are in 16 KiB blocks too, and in the last level (where a finished partition's
/// compaction puts them) compressed with a zstd dictionary trained on the file's own records:
/// a span repeats its neighbours' attribute names and values, which a small block alone
/// holds few of (`traces_bench --spans 1000000`, the whole directory after the finished
/// partitions' compaction: 122.3 → 94.3 bytes/span, spans 62.5 → 34.4; 16 KiB blocks alone
/// 41.5 at 200k; trace by id p50 28 → 38 µs, one block of a trace still read). A dictionary
/// is built from the whole output file held in memory, so spans files are 16 MiB rather than
/// RocksDB's 64 (peak memory of that run 125 MB before, 181 MB with 64 MiB files, 128 MB).
pub(crate) fn trace_cf_options(cache: &Cache, spans: bool) -> Options {
    let mut o = table_options(cache, DBCompressionType::Zstd, |t| {
        t.set_block_size(16 << 10);
        if spans {
            t.set_bloom_filter(10.0, false);
        }
    });
    if spans {
        o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(16));
        const DICTIONARY: i32 = 16 << 10;
        o.set_bottommost_compression_type(DBCompressionType::Zstd);
        // zstd's default window and level (32767 is RocksDB's "the library's default").
        o.set_bottommost_compression_options(-14, 32767, 0, DICTIONARY, true);
        o.set_bottommost_zstd_max_train_bytes(100 * DICTIONARY, true);
        o.set_target_file_size_base(16 << 20);
    }
    o
}

/// Chunk column families: compression shrinks them although the chunks are compressed
/// already — what it finds is the keys' shared window start and tiebreak and the chunk
/// headers, alike across series — and more in blocks of 16 KiB than of 4 KiB (`ingest_compare`'s
/// 20k load: 1.51 bytes per sample uncompressed, 1.14 in lz4 blocks of 4 KiB, 1.09 in 16 KiB,
/// 1.08 in 64 KiB). zstd takes 3% more than lz4 off merged chunks; a block read from disk
/// decompresses in microseconds either way, and the cache holds blocks decompressed. A read
/// of one series decompresses a block, so blocks stay small beside what a query reads.
pub(crate) fn chunk_cf_options(cache: &Cache) -> Options {
    table_options(cache, DBCompressionType::Zstd, |t| {
        t.set_block_size(16 << 10)
    })
}

/// A key and its value as an iterator reads them.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The entries of `cf` whose keys start with `prefix`, in key order: one seek, then a
/// sequential read that ends at the first key past the prefix.
pub(crate) fn prefixed<'a>(
    db: &'a Db,
    cf: &Cf<'a>,
    prefix: &'a [u8],
) -> impl Iterator<Item = Result<KeyValue, StorageError>> + 'a {
    db.iterator_cf(
        cf,
        rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
    )
    .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
    .map(|item| item.map_err(StorageError::from))
}

/// Memory one RocksDB database holds, as RocksDB estimates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// Memtables, flushed or not yet (bounded by the database's write buffer size).
    pub memtables: u64,
    /// Open files' readers outside the block cache.
    pub table_readers: u64,
    /// The block cache in use (bounded by its capacity).
    pub block_cache: u64,
}

/// What `db` and its block cache hold now.
pub(crate) fn memory(db: &Db, cache: &Cache) -> StoreMemory {
    match rocksdb::perf::get_memory_usage_stats(Some(&[db]), Some(&[cache])) {
        Ok(m) => StoreMemory {
            memtables: m.mem_table_total,
            table_readers: m.mem_table_readers_total,
            block_cache: m.cache_total,
        },
        // Only fails to allocate its own bookkeeping; the cache still knows its usage.
        Err(_) => StoreMemory {
            block_cache: cache.get_usage() as u64,
            ..StoreMemory::default()
        },
    }
}

/// What every RocksDB database of the stores opens with: created when missing, two background
/// jobs (this is a single-node process beside its own query threads), one memtable budget for
/// all column families (with a column family per day, per-family buffers would add up), and an
/// info log of warnings and errors only: at info level RocksDB writes every column family's
/// options at each open and statistics every few minutes, hundreds of kilobytes nobody reads.
pub(crate) fn db_options(write_buffer_bytes: usize) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_db_write_buffer_size(write_buffer_bytes);
    opts.set_log_level(rocksdb::LogLevel::Warn);
    opts.set_keep_log_file_num(4);
    opts
}

/// Opens (creating if needed) the database with the fixed column families and every
/// existing column family accepted by `is_chunk_cf`. Returns the names of the latter.
pub(crate) fn open(
    dir: &Path,
    is_chunk_cf: impl Fn(&str) -> bool,
    cache: &Cache,
    write_buffer_bytes: usize,
) -> Result<(Db, Vec<String>), StorageError> {
    let mut opts = db_options(write_buffer_bytes);
    // Rarely written column families would otherwise pin old WAL files forever.
    opts.set_max_total_wal_size(128 << 20);

    let existing = match Db::list_cf(&opts, dir) {
        Ok(names) => names,
        // No database yet: it is created with the fixed column families.
        Err(_) if !dir.join("CURRENT").exists() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let retired: Vec<&str> = RETIRED_CFS
        .into_iter()
        .filter(|r| existing.iter().any(|n| n == r))
        .collect();
    let chunk_cfs: Vec<String> = existing.into_iter().filter(|n| is_chunk_cf(n)).collect();
    let descriptors = FIXED_CFS
        .iter()
        .chain(&retired)
        .map(|n| ColumnFamilyDescriptor::new(*n, index_cf_options(cache, n)))
        .chain(
            chunk_cfs
                .iter()
                .map(|n| ColumnFamilyDescriptor::new(n, chunk_cf_options(cache))),
        );
    let db = Db::open_cf_descriptors(&opts, dir, descriptors)?;
    // RocksDB opens a database only with all of its column families; retired ones are
    // opened once more and dropped.
    for name in retired {
        db.drop_cf(name)?;
    }
    Ok((db, chunk_cfs))
}

/// The handle of a column family that must exist.
pub(crate) fn cf<'a>(db: &'a Db, name: &str) -> Result<Cf<'a>, StorageError> {
    db.cf_handle(name)
        .ok_or_else(|| StorageError::Corrupt(format!("missing column family {name}")))
}

/// Writes every memtable to SST files, so RocksDB's own log files holding the same data can
/// be deleted: what is on disk afterwards is the compact form.
pub(crate) fn flush_memtables(
    db: &Db,
    chunk_cfs: impl IntoIterator<Item = String>,
) -> Result<(), StorageError> {
    let names: Vec<String> = FIXED_CFS
        .iter()
        .map(|n| (*n).to_owned())
        .chain(chunk_cfs)
        .collect();
    let cfs = names
        .iter()
        .map(|n| cf(db, n))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Cf> = cfs.iter().collect();
    db.flush_cfs_opt(&refs, &rocksdb::FlushOptions::default())?;
    Ok(())
}

/// Deletes every key of a column family with one range tombstone (plus a point delete for
/// the last key, as ranges exclude their end): O(1) regardless of how much it holds.
pub(crate) fn clear_cf(db: &Db, name: &str) -> Result<(), StorageError> {
    let cf = cf(db, name)?;
    let mut it = db.raw_iterator_cf(&cf);
    it.seek_to_last();
    let last = it.key().map(<[u8]>::to_vec);
    it.status()?;
    drop(it);
    if let Some(last) = last {
        db.delete_range_cf(&cf, [].as_slice(), last.as_slice())?;
        db.delete_cf(&cf, &last)?;
    }
    Ok(())
}
