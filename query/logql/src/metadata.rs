//! The metadata side of the log store as Loki answers it: label names and values, series,
//! index statistics and volumes of a stream selector over a time range. Owns the aggregation;
//! the Loki API's parameters and wire shapes are the wire layer's.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use storage::logs::{Direction, LogQuery};
use storage::StorageError;
use storage::{Labels, Matcher};

use crate::{LabelMap, LogEngine, Series, Steps};

/// Loki's `index/stats` for a selector: streams, chunks (one per stream here), entries and
/// bytes of line text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub streams: u64,
    pub chunks: u64,
    pub entries: u64,
    pub bytes: u64,
}

impl LogEngine {
    /// Label sets of the streams matching `matchers` with entries in [start, end] ns.
    pub fn series(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        self.store().streams(matchers, start_ns, end_ns)
    }

    /// Label names of the matching streams, sorted.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<BTreeSet<String>, StorageError> {
        let streams = self.series(matchers, start_ns, end_ns)?;
        Ok(streams
            .iter()
            .flat_map(|l| l.iter().map(|l| l.name.clone()))
            .collect())
    }

    /// Values of label `name` in the matching streams, sorted.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<BTreeSet<String>, StorageError> {
        let streams = self.series(matchers, start_ns, end_ns)?;
        Ok(streams
            .iter()
            .filter_map(|l| l.get(name).map(str::to_owned))
            .collect())
    }

    /// Streams, entries and bytes selected by `matchers` in [start, end] ns.
    pub fn index_stats(
        &self,
        matchers: Vec<Matcher>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<IndexStats, StorageError> {
        let q = LogQuery {
            matchers,
            start_ns,
            end_ns: end_ns.saturating_add(1),
            contains: vec![],
        };
        let (mut streams, mut entries, mut bytes) = (BTreeSet::new(), 0u64, 0u64);
        self.store().scan(&q, Direction::Forward, &mut |r| {
            entries += 1;
            bytes += r.line.len() as u64;
            streams.insert(r.labels);
            ControlFlow::Continue(())
        })?;
        let streams = streams.len() as u64;
        Ok(IndexStats {
            streams,
            chunks: streams,
            entries,
            bytes,
        })
    }

    /// Bytes of line text per group, largest total first, at most `limit` groups. Groups are
    /// the values of `targets`, or of the selector's label names when `targets` is empty
    /// (Loki's volume for `aggregateBy=series`). With `steps`, an entry counts toward the
    /// first step at or after it; without, every entry counts at `end_ns`.
    pub fn volume(
        &self,
        matchers: Vec<Matcher>,
        targets: Vec<String>,
        start_ns: i64,
        end_ns: i64,
        steps: Option<Steps>,
        limit: usize,
    ) -> Result<Vec<Series>, StorageError> {
        let targets = if targets.is_empty() {
            matchers.iter().map(|m| m.name.clone()).collect()
        } else {
            targets
        };
        let q = LogQuery {
            matchers,
            start_ns,
            end_ns: end_ns.saturating_add(1),
            contains: vec![],
        };
        let mut out: BTreeMap<LabelMap, BTreeMap<i64, f64>> = BTreeMap::new();
        self.store().scan(&q, Direction::Forward, &mut |r| {
            let key: LabelMap = targets
                .iter()
                .filter_map(|t| r.labels.get(t).map(|v| (t.clone(), v.to_owned())))
                .collect();
            let t = match steps {
                Some(st) => {
                    st.start_ns
                        + ((r.ts_ns - st.start_ns).max(0) + st.step_ns - 1) / st.step_ns
                            * st.step_ns
                }
                None => end_ns,
            };
            *out.entry(key).or_default().entry(t).or_default() += r.line.len() as f64;
            ControlFlow::Continue(())
        })?;
        let mut series: Vec<Series> = out
            .into_iter()
            .map(|(labels, pts)| Series {
                labels,
                points: pts.into_iter().collect(),
            })
            .collect();
        series.sort_by(|a, b| {
            let total = |s: &Series| s.points.iter().map(|p| p.1).sum::<f64>();
            total(b).total_cmp(&total(a))
        });
        series.truncate(limit);
        Ok(series)
    }
}
