//! One day of logs as a tantivy index: the schema, writing batches with the indexed-up-to
//! sequence number in the commit payload, and searching. Owns everything tantivy-specific;
//! knows nothing about the append log or about LogQL.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
    STRING,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Score,
    Searcher, SegmentReader, TantivyDocument, Term,
};

use super::line_terms::{
    self, token_queries, LINE_TOKENIZER, MAX_TOKEN_BYTES, UNCLASSED_LINE_TOKENIZER,
};
use super::record::LogRecord;
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

fn schema() -> (Schema, Fields) {
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
                .set_tokenizer(LINE_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
        .set_stored();
    let line = b.add_text_field("line", line_opts);
    let meta = b.add_text_field("meta", STORED);
    let long = b.add_bool_field("long", INDEXED);
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
/// 16 KiB took a partition of the mixed-log benchmark from 0.85 to 0.56 of the raw line bytes.
/// A query reads few blocks (the newest lines of a selection sit together), and tantivy caches
/// the blocks it decompressed.
fn index_settings() -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: 128 << 10,
        ..IndexSettings::default()
    }
}

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
    /// False for partitions written before lines were tokenized with [`LINE_TOKENIZER`]
    /// (tantivy's default drops tokens of 40 bytes or more without flagging the line; the
    /// unclassed tokenizer's terms lack the class `token_queries` looks up): their lines are
    /// all candidates.
    prunes_lines: bool,
    /// The [`HAS_META`] field; absent in partitions written before it existed.
    has_meta: Option<Field>,
    /// The [`LEVEL`] column; absent in partitions written before it existed, whose levels
    /// are in the stored metadata.
    level: Option<Field>,
    /// The [`BYTES`] column; absent in partitions written before it existed, whose lines are
    /// read to measure them.
    bytes: Option<Field>,
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

/// Reads the documents a search found: its searcher, each segment's stream column, and the
/// streams already parsed (a day has few streams and many lines).
pub(crate) struct Loader {
    searcher: Searcher,
    streams: Vec<Option<StrColumn>>,
    /// Per segment, which documents have metadata (`None`: unknown, read the document).
    has_meta: Vec<Option<Column<bool>>>,
    /// Per segment, the [`LEVEL`] column.
    levels: Vec<Option<StrColumn>>,
    labels: HashMap<(usize, u64), Labels>,
}

/// What a search selects.
pub(crate) struct Selection<'a> {
    /// Whether a stream key is selected.
    pub(crate) stream: &'a dyn Fn(&str) -> bool,
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    /// Substrings every selected line contains (case-sensitively); the index prunes with them.
    pub(crate) contains: &'a [String],
}

impl Partition {
    pub(crate) fn open(dir: &Path, day: i64) -> Result<Partition, StorageError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
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
            .register(LINE_TOKENIZER, line_terms::line_analyzer());
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
            .try_into()?;
        Ok(Partition {
            day,
            dir: dir.to_owned(),
            index,
            reader,
            fields,
            prunes_lines: line_tokenizer.as_deref() == Some(LINE_TOKENIZER),
            has_meta,
            level,
            bytes,
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

    /// The distinct stream keys in this partition.
    pub(crate) fn streams(&self) -> Result<BTreeSet<String>, StorageError> {
        self.streams_of(&self.reader.searcher())
    }

    fn streams_of(&self, searcher: &Searcher) -> Result<BTreeSet<String>, StorageError> {
        let mut out = BTreeSet::new();
        for seg in searcher.segment_readers() {
            let inv = seg.inverted_index(self.fields.stream)?;
            let mut s = inv.terms().stream()?;
            while s.advance() {
                if let Ok(k) = std::str::from_utf8(s.key()) {
                    out.insert(k.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Selected records' timestamps and addresses (unsorted), and what loads them.
    pub(crate) fn search(
        &self,
        sel: &Selection<'_>,
    ) -> Result<(Loader, Vec<(i64, DocAddress)>), StorageError> {
        let searcher = self.reader.searcher();
        let streams = searcher
            .segment_readers()
            .iter()
            .map(|seg| seg.fast_fields().str("stream"))
            .collect::<Result<Vec<_>, _>>()?;
        let has_meta = searcher
            .segment_readers()
            .iter()
            .map(|seg| {
                self.has_meta
                    .and_then(|_| seg.fast_fields().bool(HAS_META).ok())
            })
            .collect();
        let levels = searcher
            .segment_readers()
            .iter()
            .map(|seg| {
                self.level
                    .and_then(|_| seg.fast_fields().str(LEVEL).ok().flatten())
            })
            .collect();
        let loader = Loader {
            searcher,
            streams,
            has_meta,
            levels,
            labels: HashMap::new(),
        };
        let searcher = &loader.searcher;
        let all = self.streams_of(searcher)?;
        let total = all.len();
        let streams: Vec<String> = all.into_iter().filter(|k| (sel.stream)(k)).collect();
        if streams.is_empty() {
            return Ok((loader, Vec::new()));
        }
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(f.ts, sel.start_ns)),
                Bound::Excluded(Term::from_field_i64(f.ts, sel.end_ns)),
            )),
        )];
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
        let needles = if self.prunes_lines { sel.contains } else { &[] };
        for needle in needles {
            for q in token_queries(f.line, needle)? {
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
        let hits = searcher.search(&BooleanQuery::new(clauses), &TsCollector)?;
        Ok((loader, hits))
    }

    /// Loads a hit of [`Partition::search`] through the loader that came with it.
    pub(crate) fn load(
        &self,
        loader: &mut Loader,
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
            labels: self.labels(loader, addr)?.1.clone(),
            line,
            metadata,
        })
    }

    /// Hits of [`Partition::search`] grouped by stream (metadata aside), each hit as its
    /// timestamp and line length, ascending by time. Reads the [`BYTES`] column, or the lines
    /// of a partition written before it.
    pub(crate) fn group_bytes(
        &self,
        loader: &mut Loader,
        hits: Vec<(i64, DocAddress)>,
    ) -> Result<Vec<StreamBytes>, StorageError> {
        let columns: Vec<Option<Column<u64>>> = loader
            .searcher
            .segment_readers()
            .iter()
            .map(|seg| self.bytes.and_then(|_| seg.fast_fields().u64(BYTES).ok()))
            .collect();
        let mut groups: Vec<StreamBytes> = Vec::new();
        let mut by_ord: HashMap<(usize, u64), usize> = HashMap::new();
        for (ts, addr) in hits {
            let seg = addr.segment_ord as usize;
            let len = match columns.get(seg).and_then(Option::as_ref) {
                Some(col) => col.first(addr.doc_id).unwrap_or(0),
                None => {
                    let doc: TantivyDocument = loader.searcher.doc(addr)?;
                    let line = doc.get_first(self.fields.line).and_then(|v| v.as_str());
                    line.map_or(0, str::len) as u64
                }
            };
            let (ord, labels) = self.labels(loader, addr)?;
            let g = *by_ord.entry((seg, ord)).or_insert_with(|| {
                groups.push((labels.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((ts, len));
        }
        // One stream has an ordinal per segment: merge its groups.
        let mut merged: Vec<StreamBytes> = Vec::new();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, points) in groups {
            match merged.last_mut() {
                Some(last) if last.0 == labels => last.1.extend(points),
                _ => merged.push((labels, points)),
            }
        }
        for g in &mut merged {
            g.1.sort_unstable_by_key(|p| p.0);
        }
        Ok(merged)
    }

    /// Hits of [`Partition::search`] grouped by stream and metadata, each group's timestamps
    /// in ascending order. Reads no lines, and the doc store only for documents that have
    /// metadata.
    pub(crate) fn group(
        &self,
        loader: &mut Loader,
        hits: Vec<(i64, DocAddress)>,
    ) -> Result<Vec<StreamHits>, StorageError> {
        let mut groups: Vec<StreamHits> = Vec::new();
        let mut by_key: HashMap<(Labels, Vec<(String, String)>), usize> = HashMap::new();
        // Documents without metadata: the group of each segment's stream ordinal.
        let mut by_ord: HashMap<(usize, u64, Option<u64>), usize> = HashMap::new();
        let mut group_of = |labels: &Labels, metadata: Vec<(String, String)>| {
            *by_key
                .entry((labels.clone(), metadata))
                .or_insert_with_key(|(labels, metadata)| {
                    groups.push((labels.clone(), metadata.clone(), Vec::new()));
                    groups.len() - 1
                })
        };
        let mut stamps: Vec<(usize, i64)> = Vec::with_capacity(hits.len());
        for (ts, addr) in hits {
            let seg = addr.segment_ord as usize;
            let has_meta = match loader.has_meta.get(seg).and_then(Option::as_ref) {
                Some(col) => col.first(addr.doc_id).unwrap_or(false),
                None => true,
            };
            let g = if has_meta {
                let doc: TantivyDocument = loader.searcher.doc(addr)?;
                let mut metadata = self.metadata(&doc);
                if let Some(level) = level_of(loader, addr)? {
                    add_level(&mut metadata, level);
                }
                group_of(self.labels(loader, addr)?.1, metadata)
            } else {
                let level_ord = level_ord(loader, addr);
                let (ord, labels) = self.labels(loader, addr)?;
                match by_ord.get(&(seg, ord, level_ord)) {
                    Some(&g) => g,
                    None => {
                        let labels = labels.clone();
                        let mut metadata = Vec::new();
                        if let Some(level) = level_of(loader, addr)? {
                            add_level(&mut metadata, level);
                        }
                        let g = group_of(&labels, metadata);
                        by_ord.insert((seg, ord, level_ord), g);
                        g
                    }
                }
            };
            stamps.push((g, ts));
        }
        for (g, ts) in stamps {
            groups[g].2.push(ts);
        }
        for g in &mut groups {
            g.2.sort_unstable();
        }
        Ok(groups)
    }

    fn corrupt(&self, addr: DocAddress) -> StorageError {
        StorageError::Corrupt(format!("index document {addr:?} in day {}", self.day))
    }

    /// A document's stream ordinal in its segment, and the stream's labels.
    fn labels<'l>(
        &self,
        loader: &'l mut Loader,
        addr: DocAddress,
    ) -> Result<(u64, &'l Labels), StorageError> {
        let seg = addr.segment_ord as usize;
        let column = loader
            .streams
            .get(seg)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.corrupt(addr))?;
        let ord = column
            .ords()
            .first(addr.doc_id)
            .ok_or_else(|| self.corrupt(addr))?;
        let labels = match loader.labels.entry((seg, ord)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut key = String::new();
                if !column.ord_to_str(ord, &mut key)? {
                    return Err(self.corrupt(addr));
                }
                e.insert(parse_stream_key(&key).ok_or_else(|| self.corrupt(addr))?)
            }
        };
        Ok((ord, labels))
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

/// The ordinal of a document's level in its segment's [`LEVEL`] column, if it has one.
fn level_ord(loader: &Loader, addr: DocAddress) -> Option<u64> {
    level_column(loader, addr)?.ords().first(addr.doc_id)
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

/// A stream and its records' (timestamp, line bytes).
pub(crate) type StreamBytes = (Labels, Vec<(i64, u64)>);

/// A stream, metadata, and the timestamps of the records with both.
pub(crate) type StreamHits = (Labels, Vec<(String, String)>, Vec<i64>);

/// Collects (timestamp, address) of every match, reading the timestamp from the fast field.
struct TsCollector;

struct TsSegmentCollector {
    segment: u32,
    ts: Column<i64>,
    out: Vec<(i64, DocAddress)>,
}

impl Collector for TsCollector {
    type Fruit = Vec<(i64, DocAddress)>;
    type Child = TsSegmentCollector;

    fn for_segment(
        &self,
        segment: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<TsSegmentCollector> {
        Ok(TsSegmentCollector {
            segment,
            ts: reader.fast_fields().i64("ts")?,
            out: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<(i64, DocAddress)>>) -> tantivy::Result<Self::Fruit> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for TsSegmentCollector {
    type Fruit = Vec<(i64, DocAddress)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(t) = self.ts.first(doc) {
            self.out.push((t, DocAddress::new(self.segment, doc)));
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.out
    }
}
