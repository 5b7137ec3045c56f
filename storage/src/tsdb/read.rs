//! The read side of the facade: `select` (head + chunk partitions merged, deduplicated, under
//! a sample limit; chunks read in key order, each series decoded as the answer reaches it),
//! the series / label-name / label-value APIs and the exemplar select (over the series in
//! memory and the cold index) and the status figures (memory only). Reads only; never changes the head, the index or
//! RocksDB.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{ControlFlow, Range};
use std::panic::AssertUnwindSafe;

use super::{corrupt, Inner};
use crate::tsdb::chunk::{ChunkArena, StoredChunk};
use crate::tsdb::cold;
use crate::tsdb::exemplars;
use crate::tsdb::histstore;
use crate::tsdb::index::Index;
use crate::tsdb::labelset::StoredLabels;
use crate::tsdb::partition::{self, PARTITION_MS};
use crate::tsdb::postings::Ids;
use crate::{
    ExemplarSeries, HistogramSample, Labels, Matcher, Sample, Series, SeriesSamples, StorageError,
    TsdbStatus, METRIC_NAME,
};

/// Ids matching any of the matcher sets (all series for none) with data in [mint, maxt].
fn matching_ids(index: &Index, matcher_sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<u64> {
    let ids = if matcher_sets.is_empty() {
        index.postings().all().to_vec()
    } else {
        crate::tsdb::postings::union(matcher_sets.iter().flat_map(|ms| index.select(ms)))
    };
    ids.into_iter()
        .filter(|&id| index.get(id).is_some_and(|s| s.overlaps(mint, maxt)))
        .collect()
}

fn any_overlaps(index: &Index, ids: &Ids, mint: i64, maxt: i64) -> bool {
    ids.iter()
        .any(|id| index.get(id).is_some_and(|s| s.overlaps(mint, maxt)))
}

/// Sorts by t and drops repeated timestamps (the same sample seen in the head and in a chunk,
/// or overlapping out-of-order chunks).
fn normalize(samples: &mut Vec<Sample>) {
    if !samples.windows(2).all(|w| w[0].t < w[1].t) {
        samples.sort_by_key(|s| s.t);
        samples.dedup_by_key(|s| s.t);
    }
}

/// Top `n` of (name, count), largest count first, ties by name.
fn top(mut v: Vec<(String, u64)>, n: usize) -> Vec<(String, u64)> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// A series picked for `select`, with where its undecoded points are.
struct Picked {
    id: u64,
    labels: StoredLabels,
    /// The query range narrowed to the series' time bounds.
    lo: i64,
    hi: i64,
    /// Its chunks in the select's [`ChunkArena`]: copied from the head, then read from the
    /// partitions.
    head_chunks: Range<usize>,
    stored_chunks: Range<usize>,
    ooo: Vec<Sample>,
    histograms: Vec<HistogramSample>,
}

/// Series whose head data is copied under one hold of the shared state lock.
const HEAD_COPY_SERIES: usize = 4096;

/// The series of one select in label order. Their chunks are read from RocksDB in key (id)
/// order when the select is made, as stored (compressed), and decoded in label order as the
/// set is consumed. A large select decodes on a thread of its own, at most
/// [`PIPE_DEPTH`] batches of about [`BATCH_SAMPLES`] points ahead of the consumer: the query
/// evaluates one batch while the next is decoded, and memory follows the compressed data plus
/// those few batches. The sample limit counts every point decoded; going over ends the set
/// with [`StorageError::SampleLimit`].
pub(super) struct Selection {
    source: Source,
}

enum Source {
    Inline(Decoder),
    Piped {
        batches: std::sync::mpsc::Receiver<Vec<SeriesItem>>,
        current: std::vec::IntoIter<SeriesItem>,
    },
}

type SeriesItem = Result<Series, StorageError>;

/// Points per batch a decoding thread hands over: large enough that handing over costs
/// nothing next to decoding, small enough that a few batches are a few megabytes.
const BATCH_SAMPLES: usize = 32 * 1024;

/// Batches a decoding thread may have ready before it waits for the consumer.
const PIPE_DEPTH: usize = 1;

/// Stored bytes below which a select decodes on the consumer's thread: a thread costs tens of
/// microseconds to start, more than decoding a few thousand points.
const PIPE_MIN_BYTES: usize = 64 * 1024;

/// Whether the process may run on more than one core. Asked once: the standard library
/// reads the affinity mask and cgroup quota files each time.
fn spare_core() -> bool {
    static SPARE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPARE.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

impl Selection {
    fn new(decoder: Decoder) -> Result<Selection, StorageError> {
        let worth_a_thread = decoder.chunks.bytes() >= PIPE_MIN_BYTES && spare_core();
        if !worth_a_thread {
            return Ok(Selection {
                source: Source::Inline(decoder),
            });
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(PIPE_DEPTH);
        std::thread::Builder::new()
            .name("select-decode".into())
            .spawn(move || {
                // A panic would otherwise end the set early, as if it had no more series.
                let piped = std::panic::catch_unwind(AssertUnwindSafe(|| decoder.pipe(&tx)));
                if piped.is_err() {
                    let failed = StorageError::Corrupt("decoding a select panicked".into());
                    let _ = tx.send(vec![Err(failed)]);
                }
            })?;
        Ok(Selection {
            source: Source::Piped {
                batches: rx,
                current: Vec::new().into_iter(),
            },
        })
    }
}

impl Iterator for Selection {
    type Item = SeriesItem;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Inline(d) => d.next(),
            Source::Piped { batches, current } => loop {
                if let Some(s) = current.next() {
                    return Some(s);
                }
                // The thread ends, dropping its sender, after its last batch.
                *current = batches.recv().ok()?.into_iter();
            },
        }
    }
}

/// Decodes picked series in order, counting their points against the limit.
struct Decoder {
    picked: std::vec::IntoIter<Picked>,
    chunks: ChunkArena,
    /// Points handed out so far.
    total: usize,
    limit: usize,
    done: bool,
}

impl Decoder {
    /// Sends the series in batches until the last one or the receiver is gone (the query
    /// ended early: an error, a limit, a cancelled request).
    fn pipe(mut self, tx: &std::sync::mpsc::SyncSender<Vec<SeriesItem>>) {
        let mut batch = Vec::new();
        let mut sent = 0;
        while let Some(item) = self.next() {
            batch.push(item);
            if self.total - sent >= BATCH_SAMPLES {
                if tx.send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
                sent = self.total;
            }
        }
        if !batch.is_empty() {
            // A receiver gone by now wanted nothing more.
            let _ = tx.send(batch);
        }
    }
}

impl Iterator for Decoder {
    type Item = SeriesItem;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let p = self.picked.next()?;
            match self.decode(p) {
                Ok(Some(s)) => return Some(Ok(Series::from_samples(s))),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl Decoder {
    /// The points of one picked series within its range, or `None` if it has none there.
    fn decode(&mut self, p: Picked) -> Result<Option<SeriesSamples>, StorageError> {
        let too_many = || StorageError::SampleLimit { limit: self.limit };
        let mut samples = p.ooo;
        for i in p.stored_chunks.chain(p.head_chunks) {
            let chunk = StoredChunk::parse(self.chunks.get(i)).map_err(corrupt)?;
            if chunk.max_t() < p.lo {
                continue;
            }
            chunk
                .decode_into(&mut samples, p.lo, p.hi)
                .map_err(corrupt)?;
            // Overlaps (head vs. chunk, out-of-order chunks) may inflate the raw count: only
            // fail once deduplication cannot bring it under the limit.
            if self.total + samples.len() > self.limit {
                normalize(&mut samples);
                if self.total + samples.len() > self.limit {
                    return Err(too_many());
                }
            }
        }
        normalize(&mut samples);
        self.total += samples.len() + p.histograms.len();
        if self.total > self.limit {
            return Err(too_many());
        }
        if samples.is_empty() && p.histograms.is_empty() {
            return Ok(None);
        }
        Ok(Some(SeriesSamples {
            labels: p.labels.to_labels(),
            samples,
            histograms: p.histograms,
        }))
    }
}

impl Inner {
    /// The series matching `matchers` with data in [mint, maxt], sorted by labels, their
    /// chunks read but not decoded (see [`Selection`]).
    pub(super) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        sample_limit: usize,
    ) -> Result<Selection, StorageError> {
        let (mint, maxt) = (partition::clamp(mint), partition::clamp(maxt));
        let mut picked = Vec::new();
        if mint <= maxt {
            let pick = |id, labels, min_t, max_t| Picked {
                id,
                labels,
                lo: mint.max(min_t),
                hi: maxt.min(max_t),
                head_chunks: 0..0,
                stored_chunks: 0..0,
                ooo: Vec::new(),
                histograms: Vec::new(),
            };
            // Ids come sorted, which is key order in every partition.
            let in_memory = {
                let state = self.state.read();
                let ids = state.index.select(matchers);
                for &id in &ids {
                    if let Some(s) = state.index.get(id).filter(|s| s.overlaps(mint, maxt)) {
                        picked.push(pick(
                            id,
                            state.index.labels_of(s).to_stored(),
                            s.min_t(),
                            s.max_t(),
                        ));
                    }
                }
                ids
            };
            // A series leaving memory since is in both: read from where it was picked.
            let partitions = self.partitions.overlapping(mint..=maxt);
            let cold = cold::select(&self.db, &partitions, matchers, mint, maxt, |id| {
                in_memory.binary_search(&id).is_ok()
            })?;
            if !cold.is_empty() {
                picked.extend(
                    cold.into_iter()
                        .map(|c| pick(c.id, c.labels, c.min_t, c.max_t)),
                );
                picked.sort_unstable_by_key(|p| p.id);
            }
        }
        let chunks = self.read_chunks(&mut picked, mint, maxt, sample_limit)?;
        picked.sort_by(|a, b| a.labels.cmp_labels(&b.labels));
        Selection::new(Decoder {
            picked: picked.into_iter(),
            chunks,
            total: 0,
            limit: sample_limit,
            done: false,
        })
    }

    /// Copies the head's data of the picked series (sorted by id), then reads their stored
    /// chunks, one RocksDB iterator per partition walking forward through all of them.
    fn read_chunks(
        &self,
        picked: &mut [Picked],
        mint: i64,
        maxt: i64,
        sample_limit: usize,
    ) -> Result<ChunkArena, StorageError> {
        let mut chunks = ChunkArena::default();
        // Head first, for every series, before a RocksDB iterator exists: an iterator reads
        // the database as it was when it was made, and a checkpoint releases head data only
        // after writing it, so data leaving the head after its copy is in what the iterators
        // see (see the facade's doc).
        for batch in picked.chunks_mut(HEAD_COPY_SERIES) {
            let state = self.state.read();
            for p in batch.iter_mut() {
                let start = chunks.len();
                state
                    .head
                    .copy_out(p.id, p.lo, p.hi, &mut chunks, &mut p.ooo);
                p.head_chunks = start..chunks.len();
            }
        }
        // Before the partitions' iterators: a histogram sealed after this one was made is
        // then seen twice (deduplicated below), never missed.
        let mut hists = histstore::Scanner::new(&self.db)?;
        let cfs: Vec<(i64, crate::db::Cf<'_>)> = self
            .partitions
            .overlapping(mint..=maxt)
            .into_iter()
            .filter_map(|start| {
                let cf = self.db.cf_handle(&partition::cf_name(start))?;
                Some((start, cf))
            })
            .collect();
        let mut iters: Vec<_> = cfs
            .iter()
            .map(|(start, cf)| {
                let mut it = self.db.raw_iterator_cf(cf);
                let sealed = histstore::has_sealed(&mut it)?;
                Ok((*start, it, sealed))
            })
            .collect::<Result<_, StorageError>>()?;
        // Samples of stored chunks lying wholly inside their series' range: all of them will
        // be handed out (stored chunks never repeat a sample), so past the limit the select
        // fails before reading further.
        let mut certain = 0usize;
        for p in picked.iter_mut() {
            let start = chunks.len();
            for (part, it, sealed) in &mut iters {
                if *part > p.hi || part.saturating_add(PARTITION_MS) <= p.lo {
                    continue;
                }
                if *sealed {
                    histstore::scan_sealed(it, p.id, p.lo, p.hi, &mut p.histograms)?;
                }
                partition::scan_chunks(it, p.id, p.lo, p.hi, |_, value| {
                    let chunk = StoredChunk::parse(value).map_err(corrupt)?;
                    if chunk.max_t() < p.lo {
                        return Ok(ControlFlow::Continue(()));
                    }
                    chunks.push(value);
                    if chunk.min_t() >= p.lo && chunk.max_t() <= p.hi {
                        certain += usize::from(chunk.count());
                        if certain > sample_limit {
                            return Err(StorageError::SampleLimit {
                                limit: sample_limit,
                            });
                        }
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
            }
            p.stored_chunks = start..chunks.len();
            let head = hists.scan(p.id, p.lo, p.hi)?;
            if p.histograms.is_empty() {
                p.histograms = head;
            } else {
                p.histograms.extend(head);
                p.histograms.sort_by_key(|h| h.t);
                p.histograms.dedup_by_key(|h| h.t);
            }
        }
        Ok(chunks)
    }

    /// Cold series (not in memory) matching any of the matcher sets (all for none) with data
    /// in [mint, maxt]. Called with the shared state lock held, so that every series is in
    /// memory or here.
    fn cold_matching(
        &self,
        index: &Index,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<cold::Found>, StorageError> {
        let partitions = self.partitions.overlapping(mint..=maxt);
        let all = [Vec::new()];
        let sets = if matcher_sets.is_empty() {
            &all[..]
        } else {
            matcher_sets
        };
        let mut found = BTreeMap::new();
        for ms in sets {
            for f in cold::select(&self.db, &partitions, ms, mint, maxt, |id| {
                index.get(id).is_some()
            })? {
                found.entry(f.id).or_insert(f);
            }
        }
        Ok(found.into_values().collect())
    }

    pub(super) fn series(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let state = self.state.read();
        let mut out: Vec<Labels> = matching_ids(&state.index, matcher_sets, mint, maxt)
            .into_iter()
            .filter_map(|id| state.index.labels(id).map(|l| l.to_labels()))
            .collect();
        let cold = self.cold_matching(&state.index, matcher_sets, mint, maxt)?;
        out.extend(cold.iter().map(|c| c.labels.to_labels()));
        out.sort();
        Ok(out)
    }

    /// The exemplars in [start, end] of the series matching any of the matcher sets (none for
    /// no set, as Prometheus's `Select`), sorted by series labels. Every series in memory is
    /// looked at, whatever its samples' times (an OTLP exemplar may predate its data point);
    /// cold series are those with samples in the range.
    pub(super) fn select_exemplars(
        &self,
        start: i64,
        end: i64,
        matcher_sets: &[Vec<Matcher>],
    ) -> Result<Vec<ExemplarSeries>, StorageError> {
        if matcher_sets.is_empty() {
            return Ok(Vec::new());
        }
        let series: Vec<(u64, Labels)> = {
            let state = self.state.read();
            let mut series: Vec<(u64, Labels)> =
                matching_ids(&state.index, matcher_sets, i64::MIN, i64::MAX)
                    .into_iter()
                    .filter_map(|id| Some((id, state.index.labels(id)?.to_labels())))
                    .collect();
            let cold = self.cold_matching(&state.index, matcher_sets, start, end)?;
            series.extend(cold.into_iter().map(|c| (c.id, c.labels.to_labels())));
            series
        };
        let mut scanner = exemplars::Scanner::new(&self.db)?;
        let mut out = Vec::new();
        for (id, series_labels) in series {
            let exemplars = scanner.scan(id, start, end)?;
            if !exemplars.is_empty() {
                out.push(ExemplarSeries {
                    series_labels,
                    exemplars,
                });
            }
        }
        out.sort_by(|a, b| a.series_labels.cmp(&b.series_labels));
        Ok(out)
    }

    /// Label names and values of cold series count at partition granularity when no matcher
    /// narrows them (as a Prometheus block's index answers), exactly otherwise.
    pub(super) fn label_names(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        let state = self.state.read();
        let index = &state.index;
        let mut names = BTreeSet::new();
        if matcher_sets.is_empty() {
            // Straight from the inverted index: stops at the first live series per name.
            let live = |ids: &Ids| any_overlaps(index, ids, mint, maxt);
            names.extend(
                index
                    .postings()
                    .names()
                    .filter(|(_, values)| values.values().any(live))
                    .map(|(n, _)| n.clone()),
            );
            let partitions = self.partitions.overlapping(mint..=maxt);
            names.extend(cold::label_names(&self.db, &partitions)?);
            return Ok(names.into_iter().collect());
        }
        for id in matching_ids(index, matcher_sets, mint, maxt) {
            if let Some(l) = index.labels(id) {
                names.extend(l.pairs().map(|(name, _)| name.to_owned()));
            }
        }
        for c in self.cold_matching(index, matcher_sets, mint, maxt)? {
            names.extend(c.labels.pairs().map(|(name, _)| name.to_owned()));
        }
        Ok(names.into_iter().collect())
    }

    pub(super) fn label_values(
        &self,
        name: &str,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError> {
        let state = self.state.read();
        let index = &state.index;
        let mut values = BTreeSet::new();
        if matcher_sets.is_empty() {
            if let Some(by_value) = index.postings().values(name) {
                values.extend(
                    by_value
                        .iter()
                        .filter(|(_, ids)| any_overlaps(index, ids, mint, maxt))
                        .map(|(v, _)| v.clone()),
                );
            }
            let partitions = self.partitions.overlapping(mint..=maxt);
            values.extend(cold::label_values(&self.db, &partitions, name)?);
            return Ok(values.into_iter().collect());
        }
        for id in matching_ids(index, matcher_sets, mint, maxt) {
            if let Some(v) = index.labels(id).and_then(|l| l.get(name)) {
                values.insert(v.to_owned());
            }
        }
        for c in self.cold_matching(index, matcher_sets, mint, maxt)? {
            values.extend(c.labels.get(name).map(str::to_owned));
        }
        Ok(values.into_iter().collect())
    }

    pub(super) fn status(&self, top_n: usize) -> TsdbStatus {
        let state = self.state.read();
        let index = &state.index;
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        for (_, s) in index.iter() {
            min_time = min_time.min(s.min_t());
            max_time = max_time.max(s.max_t());
        }
        let mut by_metric = Vec::new();
        let mut values_by_name = Vec::new();
        let mut bytes_by_name = Vec::new();
        let mut by_pair = Vec::new();
        let mut num_label_pairs = 0u64;
        for (name, values) in index.postings().names() {
            num_label_pairs += values.len() as u64;
            values_by_name.push((name.clone(), values.len() as u64));
            let mut bytes = 0u64;
            for (value, ids) in values {
                let n = ids.len() as u64;
                bytes += value.len() as u64 * n;
                by_pair.push((format!("{name}={value}"), n));
                if name == METRIC_NAME {
                    by_metric.push((value.clone(), n));
                }
            }
            bytes_by_name.push((name.clone(), bytes));
        }
        let persisted_chunks: u64 = self
            .partitions
            .all()
            .into_iter()
            .filter_map(|start| {
                let cf = self.db.cf_handle(&partition::cf_name(start))?;
                self.db
                    .property_int_value_cf(&cf, "rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum();
        TsdbStatus {
            num_series: index.len() as u64,
            chunk_count: persisted_chunks + state.head.unpersisted_chunks() as u64,
            min_time,
            max_time,
            num_label_pairs,
            series_count_by_metric_name: top(by_metric, top_n),
            label_value_count_by_label_name: top(values_by_name, top_n),
            memory_in_bytes_by_label_name: top(bytes_by_name, top_n),
            series_count_by_label_value_pair: top(by_pair, top_n),
        }
    }
}
