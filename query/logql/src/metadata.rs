//! The metadata side of the log store as Loki answers it: label names and values, series,
//! index statistics and volumes of a stream selector over a time range. Owns the aggregation;
//! the Loki API's parameters and wire shapes are the wire layer's. Index statistics and
//! volumes read line lengths from the store's columns rather than the lines.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use storage::logs::{Buckets, LogQuery};
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

/// Labels Loki's `detected_labels` keeps whatever their values: what a Kubernetes user
/// filters by first.
const STATIC_LABELS: [&str; 4] = ["cluster", "namespace", "instance", "pod"];

/// Whether `s` is a UUID in its textual form (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether Loki's `detected_labels` leaves a label out: values that are all numbers (ids,
/// timestamps) or all UUIDs say nothing to filter by, except flags (at most two values, all
/// `0`/`1`) and the [`STATIC_LABELS`].
fn not_a_filter(name: &str, values: &BTreeSet<String>) -> bool {
    if values.is_empty() {
        return true;
    }
    if STATIC_LABELS.contains(&name) {
        return false;
    }
    let flags = values.len() <= 2 && values.iter().all(|v| v == "0" || v == "1");
    let ids = values
        .iter()
        .all(|v| v.parse::<f64>().is_ok() || is_uuid(v));
    ids && !flags
}

impl LogEngine {
    /// Loki's `detected_labels`: each label of the streams matching `matchers` with entries
    /// in [start, end] ns and its number of distinct values, by name, less those that are no
    /// use as a filter (see [`not_a_filter`]).
    pub fn detected_labels(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<(String, usize)>, StorageError> {
        let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for labels in self.series(matchers, start_ns, end_ns)? {
            for l in labels.iter() {
                values
                    .entry(l.name.clone())
                    .or_default()
                    .insert(l.value.clone());
            }
        }
        Ok(values
            .into_iter()
            .filter(|(name, v)| !not_a_filter(name, v))
            .map(|(name, v)| (name, v.len()))
            .collect())
    }

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
        // One bucket holding the whole range: a count and a sum per stream and segment.
        let whole = Buckets::ending_at(q.end_ns, q.end_ns.saturating_sub(q.start_ns));
        self.store()
            .scan_stream_bytes(&q, whole, &mut |labels, counts| {
                for c in counts {
                    entries += c.records;
                    bytes += c.bytes;
                }
                streams.insert(labels.clone());
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
        // An entry counts toward the first step at or after it: the buckets end on the steps.
        // Without steps, one bucket ending at `end_ns` holds the whole range.
        let buckets = match steps {
            Some(st) => Buckets {
                origin_ns: st.start_ns,
                width_ns: st.step_ns.max(1),
            },
            None => Buckets::ending_at(end_ns, end_ns.saturating_sub(start_ns).saturating_add(1)),
        };
        let mut out: BTreeMap<LabelMap, BTreeMap<i64, f64>> = BTreeMap::new();
        self.store()
            .scan_stream_bytes(&q, buckets, &mut |labels, counts| {
                let key: LabelMap = targets
                    .iter()
                    .filter_map(|t| labels.get(t).map(|v| (t.clone(), v.to_owned())))
                    .collect();
                let group = out.entry(key).or_default();
                for c in counts {
                    // Entries before the first step count toward it.
                    let at = steps.map_or(c.end_ns, |st| c.end_ns.max(st.start_ns));
                    *group.entry(at).or_default() += c.bytes as f64;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_and_uuids_are_not_filters_but_flags_and_static_labels_are() {
        assert!(not_a_filter("pid", &set(&["12", "3.5", "1700000000"])));
        assert!(not_a_filter(
            "req",
            &set(&["0b7c4f2e-9a1d-4c3e-8f6a-2d5e7b9c1a3f"])
        ));
        assert!(!not_a_filter("enabled", &set(&["0", "1"])));
        assert!(not_a_filter("n", &set(&["0", "1", "2"])));
        assert!(!not_a_filter("instance", &set(&["1", "2"])));
        assert!(!not_a_filter("app", &set(&["shop", "12"])));
        assert!(!is_uuid("0b7c4f2e-9a1d-4c3e-8f6a-2d5e7b9c1a3"));
    }
}
