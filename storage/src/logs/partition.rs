//! One day of logs as a tantivy index: the schema, writing batches with the indexed-up-to
//! sequence number in the commit payload, and searching. Owns everything tantivy-specific;
//! knows nothing about the append log or about LogQL.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::directory::MmapDirectory;
use tantivy::index::SegmentId;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value, FAST,
    STORED, STRING,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Score,
    Searcher, SegmentReader, TantivyDocument, Term,
};

use super::line_terms::{
    self, token_queries, Terms, LINE_TOKENIZER, MAX_TOKEN_BYTES, UNCLASSED_LINE_TOKENIZER,
    WHOLE_LINE_TOKENIZER,
};
use super::record::LogRecord;
use super::{BucketCount, Buckets, Direction, StreamDocs};
use crate::labels::Labels;
use crate::StorageError;

pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;
const HAS_META: &str = "has_meta";
/// The structured metadata field kept in a column of its own: ingest gives every record one
/// (Loki's `detected_level`), and in the stored metadata it would make every document one
/// the doc store must be read for.
pub(crate) const LEVEL: &str = "detected_level";
/// Each line's length in bytes, so that volumes and index statistics (which Grafana asks for
/// beside every query) read a column instead of every line.
const BYTES: &str = "bytes";

#[derive(Clone, Copy)]
struct Fields {
    ts: Field,
    stream: Field,
    line: Field,
    meta: Field,
    long: Field,
}

/// The schema of new partitions, their lines split by `line_tokenizer`.
fn schema(line_tokenizer: &str) -> (Schema, Fields) {
    let mut b = Schema::builder();
    // A column only: time ranges are answered from it (tantivy's range query reads the fast
    // field whenever there is one), and indexing it would add one term per document.
    let ts = b.add_i64_field("ts", FAST);
    // Not stored: a document's stream is read back from the fast column (one dictionary per
    // segment) instead of a copy per document in the doc store.
    let stream = b.add_text_field("stream", keyword());
    // Line filters only need to know which lines contain a term: no frequencies, no positions,
    // no field norms (nothing is scored; they cost a byte per document).
    let line_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(line_tokenizer)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
        .set_stored();
    let line = b.add_text_field("line", line_opts);
    let meta = b.add_text_field("meta", STORED);
    // Marks lines with a token too long for the index (a needle may hide in it). Indexed
    // without field norms, which tantivy's `INDEXED` adds for numbers: a byte per document,
    // about 0.7% of the raw line bytes, for a flag nothing scores.
    let long = b.add_bool_field("long", NumericOptions::default().set_indexed());
    // Lets a query that needs no lines skip the doc store for documents without metadata.
    b.add_bool_field(HAS_META, FAST);
    // Last, so that the fields before keep their ids in partitions written without it.
    b.add_text_field(LEVEL, keyword());
    b.add_u64_field(BYTES, FAST);
    (
        b.build(),
        Fields {
            ts,
            stream,
            line,
            meta,
            long,
        },
    )
}

/// Lines are most of a partition: zstd over 128 KiB blocks instead of lz4 over tantivy's
/// 16 KiB took a partition of the mixed-log benchmark from 0.85 to 0.56 of the raw line bytes;
/// level 6 over 512 KiB instead of level 3 over 128 KiB takes the lines' part a tenth lower
/// again, for a third of level 3's compression speed (still about 150 MB/s a core; a
/// decompressed block is 0.2 ms). A query reads few blocks (the newest lines of a selection sit
/// together), and tantivy caches the blocks it decompressed.
fn index_settings() -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(6),
        }),
        docstore_blocksize: DOC_STORE_BLOCK_BYTES,
        ..IndexSettings::default()
    }
}

const DOC_STORE_BLOCK_BYTES: usize = 512 << 10;

/// Decompressed doc store blocks each segment's reader keeps: as many bytes as tantivy's
/// default of 100 blocks of 128 KiB.
const DOC_STORE_CACHE_BLOCKS: usize = (100 * (128 << 10)) / DOC_STORE_BLOCK_BYTES;

/// A whole-value term and column, without the field norms tantivy keeps for scoring.
fn keyword() -> TextOptions {
    (STRING | FAST).set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

pub(crate) struct Partition {
    pub(crate) day: i64,
    pub(crate) dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// How the line terms are laid out; `None` for partitions written before terms carried
    /// their class (tantivy's default drops tokens of 40 bytes or more without flagging the
    /// line; the unclassed tokenizer's terms lack the class `token_queries` looks up): their
    /// lines are all candidates.
    line_terms: Option<Terms>,
    /// The [`HAS_META`] field; absent in partitions written before it existed.
    has_meta: Option<Field>,
    /// The [`LEVEL`] column; absent in partitions written before it existed, whose levels
    /// are in the stored metadata.
    level: Option<Field>,
    /// The [`BYTES`] column; absent in partitions written before it existed, whose lines are
    /// read to measure them.
    bytes: Option<Field>,
    /// The streams of each segment a searcher has shown, parsed once (see [`SegmentStreams`]).
    segment_streams: Mutex<HashMap<SegmentId, Arc<SegmentStreams>>>,
}

/// A segment's stream keys and their labels, by ordinal in the segment's stream column. Every
/// query needs them (to pick the selected streams, and to label what it returns) and a
/// segment never changes, so they are parsed when a searcher first shows the segment instead
/// of once per query: the JSON parse of every key of every segment was per-query work that
/// grew with the number of segments, not with the result.
pub(crate) struct SegmentStreams {
    keys: Vec<String>,
    /// `None` for a key that is not a stream key (never written so; such a stream selects
    /// nothing and its documents read as corrupt).
    labels: Vec<Option<Labels>>,
}

impl SegmentStreams {
    fn read(seg: &SegmentReader) -> Result<SegmentStreams, StorageError> {
        let (mut keys, mut labels) = (Vec::new(), Vec::new());
        if let Some(column) = seg.fast_fields().str("stream")? {
            let mut terms = column.dictionary().stream()?;
            while terms.advance() {
                // Ordinals are the positions in the dictionary's order.
                let key = String::from_utf8_lossy(terms.key()).into_owned();
                labels.push(parse_stream_key(&key));
                keys.push(key);
            }
        }
        Ok(SegmentStreams { keys, labels })
    }

    fn labels(&self, ord: u64) -> Option<&Labels> {
        self.labels.get(ord as usize)?.as_ref()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, Option<&Labels>)> {
        self.keys
            .iter()
            .zip(&self.labels)
            .map(|(k, l)| (k.as_str(), l.as_ref()))
    }
}

/// Per stream ordinal of a segment that has deletes, its documents alive and deleted (read
/// from the stream column); `None` for a segment without deletes.
fn ord_counts(seg: &SegmentReader) -> Result<Option<Vec<(u64, u64)>>, StorageError> {
    let Some(alive) = seg.alive_bitset() else {
        return Ok(None);
    };
    let Some(column) = seg.fast_fields().str("stream")? else {
        return Ok(Some(Vec::new()));
    };
    let mut counts = vec![(0u64, 0u64); column.num_terms()];
    let ords = column.ords();
    for doc in 0..seg.max_doc() {
        if let Some(c) = ords.first(doc).and_then(|o| counts.get_mut(o as usize)) {
            if alive.is_alive(doc) {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    Ok(Some(counts))
}

/// The stream labels as stored in the index: a JSON object with sorted keys.
pub(crate) fn stream_key(labels: &Labels) -> String {
    let m: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|l| (l.name.clone(), serde_json::Value::String(l.value.clone())))
        .collect();
    serde_json::Value::Object(m).to_string()
}

pub(crate) fn parse_stream_key(s: &str) -> Option<Labels> {
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(s).ok()?;
    Some(Labels::from_pairs(
        v.into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned()))),
    ))
}

/// Reads the documents a search found: its searcher, and per segment the stream column and
/// the streams it names.
pub(crate) struct Loader {
    searcher: Searcher,
    streams: Vec<Option<StrColumn>>,
    segments: Vec<Arc<SegmentStreams>>,
    /// Per segment, the [`LEVEL`] column.
    levels: Vec<Option<StrColumn>>,
}

/// What a search selects.
pub(crate) struct Selection<'a> {
    /// Whether a stream is selected.
    pub(crate) stream: &'a dyn Fn(&Labels) -> bool,
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    /// Substrings every selected line contains (case-sensitively); the index prunes with them.
    pub(crate) contains: &'a [String],
}

impl Partition {
    pub(crate) fn open(dir: &Path, day: i64) -> Result<Partition, StorageError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema(LINE_TOKENIZER);
        let directory = MmapDirectory::open(dir)?;
        // An existing partition keeps the schema it was written with (same fields, maybe an
        // older line tokenizer); tantivy refuses to open it under a different one.
        let index = if Index::exists(&directory).map_err(tantivy::TantivyError::from)? {
            Index::open(directory)?
        } else {
            Index::create(directory, schema, index_settings())?
        };
        let line_tokenizer = match index.schema().get_field_entry(fields.line).field_type() {
            tantivy::schema::FieldType::Str(o) => {
                o.get_indexing_options().map(|i| i.tokenizer().to_owned())
            }
            _ => None,
        };

        index
            .tokenizers()
            .register(LINE_TOKENIZER, line_terms::line_analyzer(Terms::Cut));
        index.tokenizers().register(
            WHOLE_LINE_TOKENIZER,
            line_terms::line_analyzer(Terms::Whole),
        );
        index.tokenizers().register(
            UNCLASSED_LINE_TOKENIZER,
            line_terms::unclassed_line_analyzer(),
        );
        let has_meta = index.schema().get_field(HAS_META).ok();
        let level = index.schema().get_field(LEVEL).ok();
        let bytes = index.schema().get_field(BYTES).ok();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
            .try_into()?;
        Ok(Partition {
            day,
            dir: dir.to_owned(),
            index,
            reader,
            fields,
            line_terms: line_tokenizer.as_deref().and_then(Terms::of_tokenizer),
            has_meta,
            level,
            bytes,
            segment_streams: Mutex::new(HashMap::new()),
        })
    }

    /// The sequence number of the last record committed to this partition (0: none).
    pub(crate) fn indexed_through(&self) -> Result<u64, StorageError> {
        let metas = self.index.load_metas()?;
        Ok(metas
            .payload
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    /// A writer with `memory_bytes` of heap for its two indexing threads.
    pub(crate) fn writer(&self, memory_bytes: usize) -> Result<IndexWriter, StorageError> {
        Ok(self.index.writer_with_num_threads(2, memory_bytes)?)
    }

    /// Adds `r`, whose stream is `stream` (its [`stream_key`]: a batch has few streams and
    /// many records, so the caller works each key out once).
    pub(crate) fn add(
        &self,
        w: &IndexWriter,
        r: &LogRecord,
        stream: &str,
    ) -> Result<(), StorageError> {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_i64(f.ts, r.ts_ns);
        doc.add_text(f.stream, stream);
        doc.add_text(f.line, &r.line);
        if r.line
            .split(|c: char| !c.is_alphanumeric())
            .any(|t| t.len() >= MAX_TOKEN_BYTES)
        {
            doc.add_bool(f.long, true);
        }
        if let Some(bytes) = self.bytes {
            doc.add_u64(bytes, r.line.len() as u64);
        }
        let mut metadata: Vec<&(String, String)> = r.metadata.iter().collect();
        if let Some(level) = self.level {
            if let Some(i) = metadata.iter().position(|(k, _)| k == LEVEL) {
                doc.add_text(level, &metadata.remove(i).1);
            }
        }
        if !metadata.is_empty() {
            let m: serde_json::Map<String, serde_json::Value> = metadata
                .into_iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            doc.add_text(f.meta, serde_json::Value::Object(m).to_string());
            if let Some(has_meta) = self.has_meta {
                doc.add_bool(has_meta, true);
            }
        }
        w.add_document(doc)?;
        Ok(())
    }

    /// Commits what `w` holds, recording `through_seq` as indexed, and makes it searchable.
    pub(crate) fn commit(&self, w: &mut IndexWriter, through_seq: u64) -> Result<(), StorageError> {
        let mut pc = w.prepare_commit()?;
        pc.set_payload(&through_seq.to_string());
        pc.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The distinct streams in this partition that have a document alive (a deleted stream's
    /// key stays in its segments' dictionaries until a merge rewrites them).
    pub(crate) fn streams(&self) -> Result<Vec<Labels>, StorageError> {
        let searcher = self.reader.searcher();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (seg, s) in searcher
            .segment_readers()
            .iter()
            .zip(self.streams_of(&searcher)?)
        {
            let counts = ord_counts(seg)?;
            for (ord, (key, labels)) in s.iter().enumerate() {
                let alive = counts
                    .as_ref()
                    .is_none_or(|c| c.get(ord).is_some_and(|n| n.0 > 0));
                if let Some(labels) = labels.filter(|_| alive) {
                    if seen.insert(key.to_owned()) {
                        out.push(labels.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Per stream key: its labels, documents alive and documents deleted but still on disk.
    /// A segment without deletes is counted from the stream terms' document frequencies
    /// (no document read); one with deletes from its stream column.
    pub(crate) fn stream_docs(&self) -> Result<HashMap<String, StreamDocs>, StorageError> {
        let searcher = self.reader.searcher();
        let mut out: HashMap<String, StreamDocs> = HashMap::new();
        for (seg, s) in searcher
            .segment_readers()
            .iter()
            .zip(self.streams_of(&searcher)?)
        {
            let counts = ord_counts(seg)?;
            let terms = seg.inverted_index(self.fields.stream)?;
            for (ord, (key, labels)) in s.iter().enumerate() {
                let Some(labels) = labels else { continue };
                let (docs, deleted) = match &counts {
                    Some(c) => c.get(ord).copied().unwrap_or_default(),
                    None => {
                        let term = Term::from_field_text(self.fields.stream, key);
                        (u64::from(terms.doc_freq(&term)?), 0)
                    }
                };
                let e = out.entry(key.to_owned()).or_insert_with(|| StreamDocs {
                    labels: labels.clone(),
                    docs: 0,
                    deleted: 0,
                });
                e.docs += docs;
                e.deleted += deleted;
            }
        }
        Ok(out)
    }

    /// Deletes, through the partition's writer `w`, every document of the streams whose key is
    /// in `keys`; they are gone once `w` commits.
    pub(crate) fn delete_streams<'k>(&self, w: &IndexWriter, keys: impl Iterator<Item = &'k str>) {
        for key in keys {
            w.delete_term(Term::from_field_text(self.fields.stream, key));
        }
    }

    /// Bytes of the partition's files on disk: its segments (deleted documents included
    /// until a merge drops them), tantivy's metadata, and files a merge has replaced but
    /// tantivy has not collected yet.
    pub(crate) fn disk_bytes(&self) -> u64 {
        // Files tantivy collects while this lists them are skipped.
        std::fs::read_dir(&self.dir).map_or(0, |entries| {
            entries
                .filter_map(|e| Some(e.ok()?.metadata().ok()?.len()))
                .sum()
        })
    }

    /// The streams of each of `searcher`'s segments, in its segment order, parsed when first
    /// seen. Segments no longer in the newest searcher leave the cache (merged away; a scan
    /// still holding an older searcher reads them again if it asks).
    fn streams_of(&self, searcher: &Searcher) -> Result<Vec<Arc<SegmentStreams>>, StorageError> {
        let readers = searcher.segment_readers();
        let mut cache = self.segment_streams.lock();
        let mut out = Vec::with_capacity(readers.len());
        for seg in readers {
            let streams = match cache.get(&seg.segment_id()) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(SegmentStreams::read(seg)?);
                    cache.insert(seg.segment_id(), s.clone());
                    s
                }
            };
            out.push(streams);
        }
        if cache.len() > out.len() {
            let live: HashSet<SegmentId> = self
                .reader
                .searcher()
                .segment_readers()
                .iter()
                .chain(readers)
                .map(SegmentReader::segment_id)
                .collect();
            cache.retain(|id, _| live.contains(id));
        }
        Ok(out)
    }

    /// The first `k` selected records in `direction` order that come after `after` (by
    /// timestamp, then address), in that order, searched in `loader`'s searcher: the rounds of
    /// one scan share it, as addresses are only comparable within one searcher (a commit or a
    /// merge in between renumbers documents).
    pub(crate) fn top(
        &self,
        loader: &Loader,
        sel: &Selection<'_>,
        direction: Direction,
        k: usize,
        after: Option<(i64, DocAddress)>,
    ) -> Result<Vec<(i64, DocAddress)>, StorageError> {
        let collector = TopCollector {
            k,
            direction,
            after: after.map(|(ts, addr)| Rank::of(direction, ts, addr)),
        };
        Ok(match self.query(loader, sel)? {
            Some(q) => loader.searcher.search(&q, &collector)?,
            None => Vec::new(),
        })
    }

    /// Selected records grouped by stream (and, with `by_metadata`, by metadata), counted
    /// (with `bytes`, their line bytes summed) per bucket of `buckets`, in no particular order
    /// and a bucket possibly more than once. Hits are counted as they are collected, by their
    /// segment's stream and level ordinals: no line is read, and the doc store only for
    /// records with other metadata (or, in partitions written before the columns, for what
    /// they lack). Memory is a count per bucket a group's hits fall in, per segment: a
    /// segment holds its records in arrival order, so consecutive hits of a group mostly share
    /// a bucket (holding every hit's timestamp instead was most of a counting query's time).
    ///
    /// More than `budget` hits fail with [`StorageError::TooManyRecords`] as soon as the
    /// collector sees them.
    pub(crate) fn grouped(
        &self,
        sel: &Selection<'_>,
        by_metadata: bool,
        bytes: bool,
        buckets: Buckets,
        budget: usize,
    ) -> Result<Vec<Group>, StorageError> {
        let loader = self.loader()?;
        let Some(q) = self.query(&loader, sel)? else {
            return Ok(Vec::new());
        };
        let collector = GroupingCollector {
            by_metadata,
            bytes: bytes.then_some(self.bytes.is_some()),
            level: by_metadata && self.level.is_some(),
            has_meta: self.has_meta.is_some(),
            buckets,
            left: Arc::new(AtomicUsize::new(budget)),
        };
        let segments = loader.searcher.search(&q, &collector)?;
        if segments.iter().any(|s| s.over_budget) {
            return Err(StorageError::TooManyRecords { limit: budget });
        }
        let mut out: Vec<Group> = Vec::new();
        let mut by_key: HashMap<(Labels, Vec<(String, String)>), usize> = HashMap::new();
        let mut group_of = |labels: &Labels, metadata: Vec<(String, String)>| {
            *by_key
                .entry((labels.clone(), metadata))
                .or_insert_with_key(|(labels, metadata)| {
                    out.push(Group {
                        labels: labels.clone(),
                        metadata: metadata.clone(),
                        hits: Vec::new(),
                    });
                    out.len() - 1
                })
        };
        let mut appended: Vec<(usize, Vec<BucketCount>)> = Vec::new();
        for seg in segments {
            for SegmentGroup {
                doc, level, hits, ..
            } in seg.groups
            {
                let addr = DocAddress::new(seg.segment, doc);
                let mut metadata = Vec::new();
                if level.is_some() {
                    if let Some(level) = level_of(&loader, addr)? {
                        add_level(&mut metadata, level);
                    }
                }
                let g = group_of(self.labels(&loader, addr)?, metadata);
                appended.push((g, hits));
            }
            for (ts, doc, len) in seg.docs {
                let addr = DocAddress::new(seg.segment, doc);
                let stored: TantivyDocument = loader.searcher.doc(addr)?;
                let len = match len {
                    Some(len) => len,
                    None => stored
                        .get_first(self.fields.line)
                        .and_then(|v| v.as_str())
                        .map_or(0, str::len) as u64,
                };
                let mut metadata = Vec::new();
                if by_metadata {
                    metadata = self.metadata(&stored);
                    if let Some(level) = level_of(&loader, addr)? {
                        add_level(&mut metadata, level);
                    }
                }
                let g = group_of(self.labels(&loader, addr)?, metadata);
                appended.push((
                    g,
                    vec![BucketCount {
                        end_ns: buckets.end_of(ts),
                        records: 1,
                        bytes: len,
                    }],
                ));
            }
        }
        for (g, hits) in appended {
            if out[g].hits.is_empty() {
                out[g].hits = hits;
            } else {
                out[g].hits.extend(hits);
            }
        }
        Ok(out)
    }

    /// A searcher and what reads its documents' streams and levels.
    pub(crate) fn loader(&self) -> Result<Loader, StorageError> {
        let searcher = self.reader.searcher();
        let segments = self.streams_of(&searcher)?;
        let streams = searcher
            .segment_readers()
            .iter()
            .map(|seg| seg.fast_fields().str("stream").ok().flatten())
            .collect();
        let levels = searcher
            .segment_readers()
            .iter()
            .map(|seg| {
                self.level
                    .and_then(|_| seg.fast_fields().str(LEVEL).ok().flatten())
            })
            .collect();
        Ok(Loader {
            searcher,
            streams,
            segments,
            levels,
        })
    }

    /// The query selecting `sel`'s records, or `None` when no stream is selected.
    fn query(
        &self,
        loader: &Loader,
        sel: &Selection<'_>,
    ) -> Result<Option<BooleanQuery>, StorageError> {
        // A stream is judged once, however many segments hold it.
        let mut judged: HashMap<&str, bool> = HashMap::new();
        for s in &loader.segments {
            for (key, labels) in s.iter() {
                judged
                    .entry(key)
                    .or_insert_with(|| labels.is_some_and(|l| (sel.stream)(l)));
            }
        }
        let total = judged.len();
        let streams: Vec<&str> = judged
            .into_iter()
            .filter_map(|(key, selected)| selected.then_some(key))
            .collect();
        if streams.is_empty() {
            return Ok(None);
        }
        let f = self.fields;
        // A range holding every segment whole selects all their documents: finding them by
        // decoding the time column was most of what a count over whole days did besides
        // counting.
        let whole = loader.searcher.segment_readers().iter().all(|seg| {
            seg.fast_fields()
                .i64("ts")
                .is_ok_and(|c| c.min_value() >= sel.start_ns && c.max_value() < sel.end_ns)
        });
        let time: Box<dyn Query> = if whole {
            Box::new(AllQuery)
        } else {
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(f.ts, sel.start_ns)),
                Bound::Excluded(Term::from_field_i64(f.ts, sel.end_ns)),
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, time)];
        // A selector matching every stream (`{service=~".+"}`) needs no stream lookup, which
        // would visit every document of the day.
        if streams.len() < total {
            clauses.push((
                Occur::Must,
                Box::new(TermSetQuery::new(
                    streams.iter().map(|s| Term::from_field_text(f.stream, s)),
                )),
            ));
        }
        // Without classed terms, every line is a candidate.
        let needles = self.line_terms.map(|terms| (sel.contains, terms));
        for (needle, terms) in needles
            .iter()
            .flat_map(|(contains, terms)| contains.iter().map(move |n| (n, *terms)))
        {
            for q in token_queries(f.line, needle, terms)? {
                let or_long: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_bool(f.long, true),
                    IndexRecordOption::Basic,
                ));
                clauses.push((
                    Occur::Must,
                    Box::new(BooleanQuery::new(vec![
                        (Occur::Should, q),
                        (Occur::Should, or_long),
                    ])),
                ));
            }
        }
        Ok(Some(BooleanQuery::new(clauses)))
    }

    /// Loads a hit of [`Partition::search`] through the loader that came with it.
    pub(crate) fn load(
        &self,
        loader: &Loader,
        ts_ns: i64,
        addr: DocAddress,
    ) -> Result<LogRecord, StorageError> {
        let doc: TantivyDocument = loader.searcher.doc(addr)?;
        let line = doc
            .get_first(self.fields.line)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| self.corrupt(addr))?;
        let mut metadata = self.metadata(&doc);
        if let Some(level) = level_of(loader, addr)? {
            add_level(&mut metadata, level);
        }
        Ok(LogRecord {
            ts_ns,
            labels: self.labels(loader, addr)?.clone(),
            line,
            metadata,
        })
    }

    fn corrupt(&self, addr: DocAddress) -> StorageError {
        StorageError::Corrupt(format!("index document {addr:?} in day {}", self.day))
    }

    /// A document's stream labels.
    fn labels<'l>(&self, loader: &'l Loader, addr: DocAddress) -> Result<&'l Labels, StorageError> {
        let seg = addr.segment_ord as usize;
        let ord = loader
            .streams
            .get(seg)
            .and_then(Option::as_ref)
            .and_then(|column| column.ords().first(addr.doc_id));
        ord.and_then(|ord| loader.segments.get(seg)?.labels(ord))
            .ok_or_else(|| self.corrupt(addr))
    }

    fn metadata(&self, doc: &TantivyDocument) -> Vec<(String, String)> {
        doc.get_first(self.fields.meta)
            .and_then(|v| v.as_str())
            .and_then(|m| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).ok()
            })
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn level_column(loader: &Loader, addr: DocAddress) -> Option<&StrColumn> {
    loader.levels.get(addr.segment_ord as usize)?.as_ref()
}

/// A document's level from the [`LEVEL`] column, if it has one.
fn level_of(loader: &Loader, addr: DocAddress) -> Result<Option<String>, StorageError> {
    let Some(column) = level_column(loader, addr) else {
        return Ok(None);
    };
    let Some(ord) = column.ords().first(addr.doc_id) else {
        return Ok(None);
    };
    let mut level = String::new();
    Ok(column.ord_to_str(ord, &mut level)?.then_some(level))
}

/// Puts the level back among the stored metadata, which stays sorted by name.
fn add_level(metadata: &mut Vec<(String, String)>, level: String) {
    let at = metadata.partition_point(|(k, _)| k.as_str() < LEVEL);
    metadata.insert(at, (LEVEL.to_owned(), level));
}

/// Records of one stream (and metadata, when grouped by it), counted per bucket (line bytes
/// 0 unless asked for), unordered.
pub(crate) struct Group {
    pub(crate) labels: Labels,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) hits: Vec<BucketCount>,
}

/// Groups hits per segment by stream and level ordinal, reading columns only; hits that need
/// the doc store (other metadata, or a column the partition lacks) are kept apart.
struct GroupingCollector {
    by_metadata: bool,
    /// `Some(true)`: lengths from the column; `Some(false)`: from the lines; `None`: not
    /// wanted.
    bytes: Option<bool>,
    /// Whether to group by the level column.
    level: bool,
    /// Whether the partition marks the documents with metadata.
    has_meta: bool,
    buckets: Buckets,
    /// Hits the query may still count, shared by the segments' collectors.
    left: Arc<AtomicUsize>,
}

/// Hits a segment's collector takes from the shared budget at a time: an atomic update per
/// hit was a quarter of a counting query's CPU.
const BUDGET_CHUNK: usize = 4096;

const MAX_RUNS_RESERVED: usize = 32;

/// Each segment's groups, and the hits read from the doc store.
struct SegmentGroups {
    segment: u32,
    /// The query's budget ran out here: the groups are incomplete.
    over_budget: bool,
    groups: Vec<SegmentGroup>,
    /// (timestamp, document, line bytes if known).
    docs: Vec<(i64, DocId, Option<u64>)>,
}

/// The hits of one (stream ordinal, level ordinal) in a segment, and one of its documents
/// (to resolve the ordinals).
struct SegmentGroup {
    doc: DocId,
    level: Option<u64>,
    /// The stream's previous group (another level), `NO_GROUP` at the end of the chain.
    next: u32,
    /// Counts of consecutive hits in one bucket.
    hits: Vec<BucketCount>,
}

const NO_GROUP: u32 = u32::MAX;

struct SegmentGrouper {
    out: SegmentGroups,
    ts: Column<i64>,
    stream: Column<u64>,
    level: Option<Column<u64>>,
    /// `None` while grouping by metadata: every document must be read for it.
    has_meta: Option<Column<bool>>,
    by_metadata: bool,
    bytes: Option<Option<Column<u64>>>,
    /// Per stream ordinal, its newest group, which chains to the stream's others (one per
    /// level): an array lookup and a few comparisons per hit instead of hashing.
    heads: Vec<u32>,
    buckets: Buckets,
    /// The capacity a new group starts with: the buckets the segment's time span covers, up
    /// to [`MAX_RUNS_RESERVED`] (growing the vectors hit by hit was a fifth of a count).
    runs_reserved: usize,
    left: Arc<AtomicUsize>,
    /// Hits taken from `left` and not counted yet; what is left over goes back at harvest
    /// (segments are collected one after another, so the next one finds it).
    reserved: usize,
}

impl Collector for GroupingCollector {
    type Fruit = Vec<SegmentGroups>;
    type Child = SegmentGrouper;

    fn for_segment(&self, segment: u32, reader: &SegmentReader) -> tantivy::Result<SegmentGrouper> {
        let ff = reader.fast_fields();
        let stream = ff
            .str("stream")?
            .ok_or_else(|| tantivy::TantivyError::SchemaError("no stream column".into()))?;
        let level = if self.level {
            ff.str(LEVEL)?.map(|c| c.ords().clone())
        } else {
            None
        };
        let has_meta = if self.by_metadata && self.has_meta {
            // A segment where no document has metadata has no such column.
            Some(
                ff.column_opt::<bool>(HAS_META)?
                    .unwrap_or_else(|| Column::build_empty_column(reader.max_doc())),
            )
        } else {
            None
        };
        let bytes = match self.bytes {
            Some(true) => Some(Some(ff.u64(BYTES)?)),
            Some(false) => Some(None),
            None => None,
        };
        let ts = ff.i64("ts")?;
        let (first, last) = (
            self.buckets.end_of(ts.min_value()),
            self.buckets.end_of(ts.max_value()),
        );
        let spanned = (last.saturating_sub(first) / self.buckets.width_ns.max(1)).saturating_add(1);
        Ok(SegmentGrouper {
            out: SegmentGroups {
                segment,
                over_budget: false,
                groups: Vec::new(),
                docs: Vec::new(),
            },
            ts,
            stream: stream.ords().clone(),
            level,
            has_meta,
            by_metadata: self.by_metadata,
            bytes,
            heads: vec![NO_GROUP; stream.num_terms()],
            buckets: self.buckets,
            runs_reserved: usize::try_from(spanned)
                .map_or(MAX_RUNS_RESERVED, |n| n.min(MAX_RUNS_RESERVED)),
            left: self.left.clone(),
            reserved: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<SegmentGroups>) -> tantivy::Result<Vec<SegmentGroups>> {
        Ok(fruits)
    }
}

impl SegmentCollector for SegmentGrouper {
    type Fruit = SegmentGroups;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if self.out.over_budget {
            return;
        }
        if self.reserved == 0 {
            // Relaxed: segments are collected one after another; the count needs no ordering.
            match self
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n > 0).then(|| n.saturating_sub(BUDGET_CHUNK))
                }) {
                Ok(had) => self.reserved = had.min(BUDGET_CHUNK),
                Err(_) => {
                    self.out.over_budget = true;
                    self.out.groups = Vec::new();
                    self.out.docs = Vec::new();
                    return;
                }
            }
        }
        self.reserved -= 1;
        let Some(ts) = self.ts.first(doc) else {
            return;
        };
        let len = match &self.bytes {
            Some(Some(col)) => Some(col.first(doc).unwrap_or(0)),
            Some(None) => None,
            None => Some(0),
        };
        let needs_doc = len.is_none()
            || (self.by_metadata
                && self
                    .has_meta
                    .as_ref()
                    .is_none_or(|c| c.first(doc).unwrap_or(false)));
        let Some(stream) = self.stream.first(doc) else {
            return;
        };
        if needs_doc {
            self.out.docs.push((ts, doc, len));
            return;
        }
        let level = self.level.as_ref().and_then(|c| c.first(doc));
        let Some(head) = self.heads.get_mut(stream as usize) else {
            return;
        };
        let groups = &mut self.out.groups;
        let mut g = *head;
        while g != NO_GROUP && groups[g as usize].level != level {
            g = groups[g as usize].next;
        }
        if g == NO_GROUP {
            groups.push(SegmentGroup {
                doc,
                level,
                next: *head,
                hits: Vec::with_capacity(self.runs_reserved),
            });
            g = (groups.len() - 1) as u32;
            *head = g;
        }
        let len = len.unwrap_or(0);
        let hits = &mut groups[g as usize].hits;
        match hits.last_mut() {
            Some(run) if self.buckets.holds(run.end_ns, ts) => {
                run.records += 1;
                run.bytes += len;
            }
            _ => hits.push(BucketCount {
                end_ns: self.buckets.end_of(ts),
                records: 1,
                bytes: len,
            }),
        }
    }

    fn harvest(self) -> SegmentGroups {
        self.left.fetch_add(self.reserved, Ordering::Relaxed);
        self.out
    }
}

/// A hit's place in a scan: ascending when going forward; bitwise complements (which reverse
/// the order of integers) when going backward, so "the first k" is always the smallest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank(i64, u32, u32);

impl Rank {
    fn of(direction: Direction, ts: i64, addr: DocAddress) -> Rank {
        match direction {
            Direction::Forward => Rank(ts, addr.segment_ord, addr.doc_id),
            Direction::Backward => Rank(!ts, !addr.segment_ord, !addr.doc_id),
        }
    }

    fn hit(self, direction: Direction) -> (i64, DocAddress) {
        match direction {
            Direction::Forward => (self.0, DocAddress::new(self.1, self.2)),
            Direction::Backward => (!self.0, DocAddress::new(!self.1, !self.2)),
        }
    }
}

/// Keeps the `k` first hits in scan order after a given one: memory is `k` hits whatever the
/// number of matches.
struct TopCollector {
    k: usize,
    direction: Direction,
    after: Option<Rank>,
}

struct TopSegmentCollector {
    segment: u32,
    ts: Column<i64>,
    k: usize,
    direction: Direction,
    after: Option<Rank>,
    /// The kept hits; the greatest (the first to give way) on top.
    heap: BinaryHeap<Rank>,
}

impl Collector for TopCollector {
    type Fruit = Vec<(i64, DocAddress)>;
    type Child = TopSegmentCollector;

    fn for_segment(
        &self,
        segment: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<TopSegmentCollector> {
        Ok(TopSegmentCollector {
            segment,
            ts: reader.fast_fields().i64("ts")?,
            k: self.k,
            direction: self.direction,
            after: self.after,
            heap: BinaryHeap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Rank>>) -> tantivy::Result<Self::Fruit> {
        let mut all: Vec<Rank> = fruits.into_iter().flatten().collect();
        if all.len() > self.k {
            all.select_nth_unstable(self.k);
            all.truncate(self.k);
        }
        all.sort_unstable();
        Ok(all.into_iter().map(|r| r.hit(self.direction)).collect())
    }
}

impl SegmentCollector for TopSegmentCollector {
    type Fruit = Vec<Rank>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let Some(ts) = self.ts.first(doc) else {
            return;
        };
        let rank = Rank::of(self.direction, ts, DocAddress::new(self.segment, doc));
        if self.after.is_some_and(|after| rank <= after) {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(rank);
        } else if self.heap.peek().is_some_and(|top| rank < *top) {
            self.heap.pop();
            self.heap.push(rank);
        }
    }

    fn harvest(self) -> Vec<Rank> {
        self.heap.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::tests::rec as record;

    #[test]
    fn new_partitions_keep_no_field_norms() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), 0).unwrap();
        let schema = p.index.schema();
        let normed: Vec<&str> = schema
            .fields()
            .filter(|(_, entry)| entry.has_fieldnorms())
            .map(|(_, entry)| entry.name())
            .collect();
        assert!(normed.is_empty(), "{normed:?}");
    }

    const IDS: [&str; 5] = [
        "a trace=4bf92f3577b34da6 done",
        "b trace=4bf92aaaaaaaaaaa done",
        "c trace=ffff0000ffff0000 done",
        "d order 1234567",
        "e words only",
    ];

    /// A partition in `dir` holding [`IDS`], lines split by `line_tokenizer`.
    fn partition_of_ids(dir: &Path, line_tokenizer: &str) -> Partition {
        Index::create(
            MmapDirectory::open(dir).unwrap(),
            schema(line_tokenizer).0,
            index_settings(),
        )
        .unwrap();
        let p = Partition::open(dir, 0).unwrap();
        let mut w = p.writer(64 << 20).unwrap();
        for (ts, line) in IDS.iter().enumerate() {
            let r = record(ts as i64, "a", line);
            p.add(&w, &r, &stream_key(&r.labels)).unwrap();
        }
        p.commit(&mut w, 1).unwrap();
        p
    }

    /// The first letters of the lines the index offers for `needle` (before the line check).
    fn candidates(p: &Partition, needle: &str) -> String {
        let loader = p.loader().unwrap();
        let any = |_: &Labels| true;
        let contains = [needle.to_owned()];
        let sel = Selection {
            stream: &any,
            start_ns: 0,
            end_ns: i64::MAX,
            contains: &contains,
        };
        p.top(&loader, &sel, Direction::Forward, 100, None)
            .unwrap()
            .into_iter()
            .map(|(ts, addr)| p.load(&loader, ts, addr).unwrap().line[..1].to_owned())
            .collect()
    }

    /// Whether the partition's index holds `term` in the line field.
    fn has_line_term(p: &Partition, term: &str) -> bool {
        p.reader.searcher().segment_readers().iter().any(|segment| {
            let index = segment.inverted_index(p.fields.line).unwrap();
            index.terms().get(term.as_bytes()).unwrap().is_some()
        })
    }

    #[test]
    fn long_ids_are_indexed_by_their_start_and_every_line_holding_a_needle_is_a_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition_of_ids(dir.path(), LINE_TOKENIZER);
        assert!(has_line_term(&p, "h0164bf92"));
        assert!(!has_line_term(&p, "h0164bf92f3577b34da6"));
        assert!(has_line_term(&p, "d00712345"));
        // A whole id, or its start, narrows to the ids that start alike.
        assert_eq!(candidates(&p, "4bf92f3577b34da6"), "ab");
        assert_eq!(candidates(&p, "trace=4bf92f35"), "ab");
        assert_eq!(candidates(&p, "order 1234567"), "d");
        // Its middle or end may be in any cut token of a covering alphabet.
        assert_eq!(candidates(&p, "77b34da6"), "abc");
        assert_eq!(candidates(&p, "1234567"), "abcd");
        // Words are whole terms as before.
        assert_eq!(candidates(&p, "only"), "e");
        assert_eq!(candidates(&p, "ords onl"), "e");
    }

    #[test]
    fn a_partition_written_with_whole_terms_keeps_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition_of_ids(dir.path(), WHOLE_LINE_TOKENIZER);
        assert_eq!(p.line_terms, Some(Terms::Whole));
        assert!(has_line_term(&p, "h0164bf92f3577b34da6"));
        assert_eq!(candidates(&p, "4bf92f3577b34da6"), "a");
        assert_eq!(candidates(&p, "77b34da6"), "a");
        assert_eq!(candidates(&p, "1234567"), "d");
    }

    #[test]
    fn deleted_streams_are_counted_as_deleted_until_merged_and_listed_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), 0).unwrap();
        // One indexing thread: one segment, holding both streams.
        let mut w = p.index.writer_with_num_threads(1, 64 << 20).unwrap();
        let recs = [
            record(1, "a", "x"),
            record(2, "b", "y"),
            record(3, "a", "z"),
        ];
        for r in &recs {
            p.add(&w, r, &stream_key(&r.labels)).unwrap();
        }
        p.commit(&mut w, 1).unwrap();
        let key_a = stream_key(&recs[0].labels);
        p.delete_streams(&w, [key_a.as_str()].into_iter());
        p.commit(&mut w, 1).unwrap();
        let docs = p.stream_docs().unwrap();
        let count = |k: &str| docs.get(k).map(|s| (s.docs, s.deleted));
        assert_eq!(count(&key_a), Some((0, 2)));
        assert_eq!(count(&stream_key(&recs[1].labels)), Some((1, 0)));
        let streams = p.streams().unwrap();
        let listed: Vec<Option<&str>> = streams.iter().map(|l| l.get("app")).collect();
        assert_eq!(listed, [Some("b")]);
        assert_eq!(p.indexed_through().unwrap(), 1);
    }

    #[test]
    fn streams_are_parsed_once_per_segment_and_forgotten_when_merged_away() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path(), 0).unwrap();
        let mut w = p.writer(64 << 20).unwrap();
        for (seq, batch) in [vec![(1, "a")], vec![(2, "b"), (3, "a")]]
            .into_iter()
            .enumerate()
        {
            for (ts, app) in batch {
                let r = record(ts, app, &format!("line {ts}"));
                p.add(&w, &r, &stream_key(&r.labels)).unwrap();
            }
            p.commit(&mut w, seq as u64 + 1).unwrap();
        }
        let first = p.loader().unwrap();
        assert!(first.segments.len() >= 2);
        assert_eq!(p.segment_streams.lock().len(), first.segments.len());
        let mut apps: Vec<String> = p
            .streams()
            .unwrap()
            .iter()
            .map(|l| l.get("app").unwrap_or_default().to_owned())
            .collect();
        apps.sort();
        assert_eq!(apps, ["a", "b"]);
        // A second query takes the parsed streams as they are.
        let again = p.loader().unwrap();
        assert!(first
            .segments
            .iter()
            .zip(&again.segments)
            .all(|(x, y)| Arc::ptr_eq(x, y)));

        let ids = p.index.searchable_segment_ids().unwrap();
        w.merge(&ids).wait().unwrap();
        p.reader.reload().unwrap();
        let merged = p.loader().unwrap();
        assert_eq!(merged.segments.len(), 1);
        assert_eq!(p.segment_streams.lock().len(), 1);
        // The merged segment's ordinals resolve to its own streams.
        let b = |l: &Labels| l.get("app") == Some("b");
        let sel = Selection {
            stream: &b,
            start_ns: 0,
            end_ns: i64::MAX,
            contains: &[],
        };
        let hits = p.top(&merged, &sel, Direction::Forward, 10, None).unwrap();
        assert_eq!(hits.len(), 1);
        let r = p.load(&merged, hits[0].0, hits[0].1).unwrap();
        assert_eq!(
            (r.labels.get("app"), r.line.as_str()),
            (Some("b"), "line 2")
        );
    }
}
