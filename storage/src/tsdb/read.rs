//! The read side of the facade: `select` (head + chunk partitions merged, deduplicated, under
//! a sample limit), the series / label-name / label-value APIs and the status figures. Reads
//! only; never changes the head, the index or RocksDB.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::{corrupt, Inner};
use crate::tsdb::chunk::StoredChunk;
use crate::tsdb::histstore;
use crate::tsdb::index::Index;
use crate::tsdb::partition::{self, PARTITION_MS};
use crate::{Labels, Matcher, Sample, SeriesSamples, StorageError, TsdbStatus, METRIC_NAME};

/// Ids matching any of the matcher sets (all series for none) with data in [mint, maxt].
fn matching_ids(index: &Index, matcher_sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<u64> {
    let ids = if matcher_sets.is_empty() {
        index.postings().all().to_vec()
    } else {
        let lists: Vec<Vec<u64>> = matcher_sets.iter().map(|ms| index.select(ms)).collect();
        crate::tsdb::postings::union(lists.iter().map(Vec::as_slice))
    };
    ids.into_iter()
        .filter(|&id| index.get(id).is_some_and(|s| s.overlaps(mint, maxt)))
        .collect()
}

fn any_overlaps(index: &Index, ids: &[u64], mint: i64, maxt: i64) -> bool {
    ids.iter()
        .any(|&id| index.get(id).is_some_and(|s| s.overlaps(mint, maxt)))
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

/// A series picked for `select`, with its head samples already copied.
struct Wanted {
    id: u64,
    labels: Arc<Labels>,
    /// The query range narrowed to the series' time bounds.
    lo: i64,
    hi: i64,
    head: Vec<Sample>,
}

impl Inner {
    pub(super) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        sample_limit: usize,
    ) -> Result<Vec<SeriesSamples>, StorageError> {
        let (mint, maxt) = (partition::clamp(mint), partition::clamp(maxt));
        if mint > maxt {
            return Ok(Vec::new());
        }
        let too_many = || StorageError::SampleLimit {
            limit: sample_limit,
        };

        // Head first (see the facade's doc on why the order matters).
        let mut wanted = Vec::new();
        {
            let state = self.state.read();
            let mut in_head = 0usize;
            for id in state.index.select(matchers) {
                let Some(s) = state.index.get(id).filter(|s| s.overlaps(mint, maxt)) else {
                    continue;
                };
                let (lo, hi) = (mint.max(s.min_t), maxt.min(s.max_t));
                let mut head = Vec::new();
                state.head.samples(id, lo, hi, &mut head).map_err(corrupt)?;
                in_head += head.len();
                if in_head > sample_limit {
                    return Err(too_many());
                }
                wanted.push(Wanted {
                    id,
                    labels: s.labels.clone(),
                    lo,
                    hi,
                    head,
                });
            }
        }

        let cfs: Vec<(i64, crate::db::Cf<'_>)> = self
            .partitions
            .overlapping(mint..=maxt)
            .into_iter()
            .filter_map(|start| {
                let cf = self.db.cf_handle(&partition::cf_name(start))?;
                Some((start, cf))
            })
            .collect();
        // One iterator per partition, re-seeked for each series.
        let mut iters: Vec<_> = cfs
            .iter()
            .map(|(start, cf)| (*start, self.db.raw_iterator_cf(cf)))
            .collect();

        let mut hists = histstore::Scanner::new(&self.db)?;
        let mut total = 0usize;
        let mut out = Vec::new();
        for w in wanted {
            let mut samples: Vec<Sample> = Vec::new();
            for (start, it) in &mut iters {
                if *start > w.hi || start.saturating_add(PARTITION_MS) <= w.lo {
                    continue;
                }
                partition::scan_chunks(it, w.id, w.lo, w.hi, |_, value| {
                    let chunk = StoredChunk::parse(value).map_err(corrupt)?;
                    if chunk.max_t() < w.lo {
                        return Ok(ControlFlow::Continue(()));
                    }
                    for s in chunk.iter() {
                        let s = s.map_err(corrupt)?;
                        if s.t > w.hi {
                            break;
                        }
                        if s.t >= w.lo {
                            samples.push(s);
                        }
                    }
                    // Overlaps (head vs. chunk, out-of-order chunks) may inflate the raw
                    // count: only fail once deduplication cannot bring it under the limit.
                    if total + samples.len() > sample_limit {
                        normalize(&mut samples);
                        if total + samples.len() > sample_limit {
                            return Err(too_many());
                        }
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
            }
            samples.extend(w.head);
            normalize(&mut samples);
            let histograms = hists.scan(w.id, w.lo, w.hi)?;
            total += samples.len() + histograms.len();
            if total > sample_limit {
                return Err(too_many());
            }
            if !samples.is_empty() || !histograms.is_empty() {
                out.push(SeriesSamples {
                    labels: Labels::clone(&w.labels),
                    samples,
                    histograms,
                });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    pub(super) fn series(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Vec<Labels> {
        let state = self.state.read();
        let mut out: Vec<Labels> = matching_ids(&state.index, matcher_sets, mint, maxt)
            .into_iter()
            .filter_map(|id| state.index.get(id).map(|s| Labels::clone(&s.labels)))
            .collect();
        out.sort();
        out
    }

    pub(super) fn label_names(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Vec<String> {
        let state = self.state.read();
        let index = &state.index;
        if matcher_sets.is_empty() {
            // Straight from the inverted index: stops at the first live series per name.
            let live = |ids: &Vec<u64>| any_overlaps(index, ids, mint, maxt);
            return index
                .postings()
                .names()
                .filter(|(_, values)| values.values().any(live))
                .map(|(n, _)| n.clone())
                .collect();
        }
        let mut names = BTreeSet::new();
        for id in matching_ids(index, matcher_sets, mint, maxt) {
            if let Some(s) = index.get(id) {
                names.extend(s.labels.iter().map(|l| &l.name));
            }
        }
        names.into_iter().cloned().collect()
    }

    pub(super) fn label_values(
        &self,
        name: &str,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Vec<String> {
        let state = self.state.read();
        let index = &state.index;
        if matcher_sets.is_empty() {
            let Some(values) = index.postings().values(name) else {
                return Vec::new();
            };
            return values
                .iter()
                .filter(|(_, ids)| any_overlaps(index, ids, mint, maxt))
                .map(|(v, _)| v.clone())
                .collect();
        }
        let mut values = BTreeSet::new();
        for id in matching_ids(index, matcher_sets, mint, maxt) {
            if let Some(v) = index.get(id).and_then(|s| s.labels.get(name)) {
                values.insert(v);
            }
        }
        values.into_iter().map(str::to_owned).collect()
    }

    pub(super) fn status(&self, top_n: usize) -> TsdbStatus {
        let state = self.state.read();
        let index = &state.index;
        let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
        for (_, s) in index.iter() {
            min_time = min_time.min(s.min_t);
            max_time = max_time.max(s.max_t);
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
