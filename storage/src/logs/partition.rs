//! One day of logs as a tantivy index: the schema, writing batches with the indexed-up-to
//! sequence number in the commit payload, and searching. Owns everything tantivy-specific;
//! knows nothing about the append log or about LogQL.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
    STRING,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher,
    SegmentReader, TantivyDocument, Term,
};

use super::record::LogRecord;
use super::LogError;
use crate::labels::Labels;

pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// Tokens of this many bytes or more are not indexed; a line holding one is flagged in the
/// `long` field instead, and every token lookup also selects flagged lines, so a needle that is
/// part of an unindexed token is still found.
const MAX_TOKEN_BYTES: usize = 255;
const LINE_TOKENIZER: &str = "novamon_line";
const WRITER_MEMORY: usize = 32 << 20;

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
    let ts = b.add_i64_field("ts", INDEXED | FAST);
    // Not stored: a document's stream is read back from the fast column (one dictionary per
    // segment) instead of a copy per document in the doc store.
    let stream = b.add_text_field("stream", STRING | FAST);
    // Line filters only need to know which lines contain a term: no frequencies, no positions.
    let line_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(LINE_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic),
        )
        .set_stored();
    let line = b.add_text_field("line", line_opts);
    let meta = b.add_text_field("meta", STORED);
    let long = b.add_bool_field("long", INDEXED);
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

pub(crate) struct Partition {
    pub(crate) day: i64,
    pub(crate) dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// False for partitions written before lines were tokenized with [`LINE_TOKENIZER`]
    /// (tantivy's default drops tokens of 40 bytes or more without flagging the line), whose
    /// term dictionary cannot prove a line lacks a needle: their lines are all candidates.
    prunes_lines: bool,
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
    labels: HashMap<(usize, u64), Labels>,
}

/// What a search selects.
pub(crate) struct Selection<'a> {
    pub(crate) streams: &'a [String],
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    /// Substrings every selected line contains (case-sensitively); the index prunes with them.
    pub(crate) contains: &'a [String],
}

impl Partition {
    pub(crate) fn open(dir: &Path, day: i64) -> Result<Partition, LogError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir)?;
        // An existing partition keeps the schema it was written with (same fields, maybe an
        // older line tokenizer); tantivy refuses to open it under a different one.
        let index = if Index::exists(&directory).map_err(tantivy::TantivyError::from)? {
            Index::open(directory)?
        } else {
            Index::create(directory, schema, Default::default())?
        };
        let line_tokenizer = match index.schema().get_field_entry(fields.line).field_type() {
            tantivy::schema::FieldType::Str(o) => {
                o.get_indexing_options().map(|i| i.tokenizer().to_owned())
            }
            _ => None,
        };

        // Like tantivy's default analyzer (split on non-alphanumerics, lowercase) with a higher
        // length limit; `token_queries` relies on exactly these rules.
        index.tokenizers().register(
            LINE_TOKENIZER,
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
                .filter(LowerCaser)
                .build(),
        );
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
        })
    }

    /// The sequence number of the last record committed to this partition (0: none).
    pub(crate) fn indexed_through(&self) -> Result<u64, LogError> {
        let metas = self.index.load_metas()?;
        Ok(metas
            .payload
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    pub(crate) fn writer(&self) -> Result<IndexWriter, LogError> {
        Ok(self.index.writer_with_num_threads(1, WRITER_MEMORY)?)
    }

    pub(crate) fn add(&self, w: &IndexWriter, r: &LogRecord) -> Result<(), LogError> {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_i64(f.ts, r.ts_ns);
        doc.add_text(f.stream, stream_key(&r.labels));
        doc.add_text(f.line, &r.line);
        if r.line
            .split(|c: char| !c.is_alphanumeric())
            .any(|t| t.len() >= MAX_TOKEN_BYTES)
        {
            doc.add_bool(f.long, true);
        }
        if !r.metadata.is_empty() {
            let m: serde_json::Map<String, serde_json::Value> = r
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            doc.add_text(f.meta, serde_json::Value::Object(m).to_string());
        }
        w.add_document(doc)?;
        Ok(())
    }

    /// Commits what `w` holds, recording `through_seq` as indexed, and makes it searchable.
    pub(crate) fn commit(&self, w: &mut IndexWriter, through_seq: u64) -> Result<(), LogError> {
        let mut pc = w.prepare_commit()?;
        pc.set_payload(&through_seq.to_string());
        pc.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The distinct stream keys in this partition.
    pub(crate) fn streams(&self) -> Result<BTreeSet<String>, LogError> {
        let searcher = self.reader.searcher();
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
    ) -> Result<(Loader, Vec<(i64, DocAddress)>), LogError> {
        let searcher = self.reader.searcher();
        let streams = searcher
            .segment_readers()
            .iter()
            .map(|seg| seg.fast_fields().str("stream"))
            .collect::<Result<Vec<_>, _>>()?;
        let loader = Loader {
            searcher,
            streams,
            labels: HashMap::new(),
        };
        if sel.streams.is_empty() {
            return Ok((loader, Vec::new()));
        }
        let searcher = &loader.searcher;
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (
                Occur::Must,
                Box::new(TermSetQuery::new(
                    sel.streams
                        .iter()
                        .map(|s| Term::from_field_text(f.stream, s)),
                )),
            ),
            (
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_i64(f.ts, sel.start_ns)),
                    Bound::Excluded(Term::from_field_i64(f.ts, sel.end_ns)),
                )),
            ),
        ];
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
    ) -> Result<LogRecord, LogError> {
        let f = self.fields;
        let corrupt = || LogError::Corrupt(format!("index document {addr:?} in day {}", self.day));
        let doc: TantivyDocument = loader.searcher.doc(addr)?;
        let line = doc
            .get_first(f.line)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(corrupt)?;
        let seg = addr.segment_ord as usize;
        let column = loader
            .streams
            .get(seg)
            .and_then(Option::as_ref)
            .ok_or_else(corrupt)?;
        let ord = column.ords().first(addr.doc_id).ok_or_else(corrupt)?;
        let labels = match loader.labels.entry((seg, ord)) {
            std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut key = String::new();
                if !column.ord_to_str(ord, &mut key)? {
                    return Err(corrupt());
                }
                e.insert(parse_stream_key(&key).ok_or_else(corrupt)?)
                    .clone()
            }
        };
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let metadata = text(f.meta)
            .and_then(|m| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&m).ok()
            })
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(LogRecord {
            ts_ns,
            labels,
            line,
            metadata,
        })
    }
}

/// Index lookups implied by "the line contains `needle`". The line tokenizer splits on
/// non-alphanumeric characters and lowercases, so a token of the needle with a separator on
/// both sides is a whole token of the line; the first one may be the end of a longer token,
/// the last one the start of one (regex lookups in the term dictionary cover those). Non-ASCII
/// and over-long tokens are left to the line check.
fn token_queries(field: Field, needle: &str) -> Result<Vec<Box<dyn Query>>, LogError> {
    let mut out: Vec<Box<dyn Query>> = Vec::new();
    let bytes = needle.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !needle[i..].starts_with(|c: char| c.is_alphanumeric()) {
            i += needle[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let start = i;
        while i < bytes.len() && needle[i..].starts_with(|c: char| c.is_alphanumeric()) {
            i += needle[i..].chars().next().map_or(1, char::len_utf8);
        }
        let tok = &needle[start..i];
        if !tok.is_ascii() || tok.len() >= MAX_TOKEN_BYTES {
            continue;
        }
        let tok = tok.to_ascii_lowercase();
        let open_left = start == 0;
        let open_right = i == bytes.len();
        let q: Box<dyn Query> = match (open_left, open_right) {
            (false, false) => Box::new(TermQuery::new(
                Term::from_field_text(field, &tok),
                IndexRecordOption::Basic,
            )),
            (true, false) => Box::new(RegexQuery::from_pattern(&format!(".*{tok}"), field)?),
            (false, true) => Box::new(RegexQuery::from_pattern(&format!("{tok}.*"), field)?),
            (true, true) => Box::new(RegexQuery::from_pattern(&format!(".*{tok}.*"), field)?),
        };
        out.push(q);
    }
    Ok(out)
}

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
