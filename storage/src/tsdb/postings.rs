//! The in-memory inverted index: label name → value → sorted series ids, plus the sorted list
//! of all ids, and the set operations that resolve label matchers against it.
//!
//! Owns matcher resolution over ids; knows nothing about label sets' storage, time ranges or
//! samples. Negative matchers and matchers that match the empty string also select series
//! that lack the label, computed as "all series minus those with a non-matching value", so
//! no matcher needs a scan over all series' label sets.

use std::collections::BTreeMap;

use crate::tsdb::labelset::StoredLabels;
use crate::{MatchOp, Matcher};

#[derive(Default)]
pub(crate) struct MemPostings {
    by_name: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    all: Vec<u64>,
}

/// Inserts keeping the list sorted; ids mostly arrive in increasing order, so this is a push.
fn insert_sorted(list: &mut Vec<u64>, id: u64) {
    match list.last() {
        Some(&last) if last >= id => {
            if let Err(pos) = list.binary_search(&id) {
                list.insert(pos, id);
            }
        }
        _ => list.push(id),
    }
}

impl MemPostings {
    pub(crate) fn add_series<'a>(
        &mut self,
        id: u64,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        insert_sorted(&mut self.all, id);
        for (name, value) in labels {
            self.add_pair(name, value, id);
        }
    }

    fn add_pair(&mut self, name: &str, value: &str, id: u64) {
        let values = match self.by_name.get_mut(name) {
            Some(v) => v,
            None => self.by_name.entry(name.to_owned()).or_default(),
        };
        match values.get_mut(value) {
            Some(list) => insert_sorted(list, id),
            None => {
                values.insert(value.to_owned(), vec![id]);
            }
        }
    }

    /// Removes series (sorted by id) with their label sets: only the lists of their own
    /// label pairs are rewritten, not every list of the index.
    pub(crate) fn remove(&mut self, removed: &[(u64, StoredLabels)]) {
        if removed.is_empty() {
            return;
        }
        let ids: Vec<u64> = removed.iter().map(|(id, _)| *id).collect();
        self.all = subtract(&self.all, &ids);
        // Ids stay sorted per pair because `removed` is sorted.
        let mut by_pair: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
        for (id, labels) in removed {
            for pair in labels.pairs() {
                by_pair.entry(pair).or_default().push(*id);
            }
        }
        for ((name, value), gone) in by_pair {
            let Some(values) = self.by_name.get_mut(name) else {
                continue;
            };
            if let Some(list) = values.get_mut(value) {
                *list = subtract(list, &gone);
                if list.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    pub(crate) fn all(&self) -> &[u64] {
        &self.all
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Vec<u64>>)> {
        self.by_name.iter()
    }

    pub(crate) fn values(&self, name: &str) -> Option<&BTreeMap<String, Vec<u64>>> {
        self.by_name.get(name)
    }

    /// Ids of series with a value of `m.name` for which `keep(value)` holds.
    fn with_values(&self, name: &str, keep: impl Fn(&str) -> bool) -> Vec<u64> {
        let Some(values) = self.by_name.get(name) else {
            return Vec::new();
        };
        union(
            values
                .iter()
                .filter(|(v, _)| keep(v))
                .map(|(_, ids)| ids.as_slice()),
        )
    }

    /// Sorted ids of the series matching all matchers (all series when there are none).
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        // Matchers that cannot match an absent label narrow down positively; the others are
        // applied by subtracting the series whose value fails them.
        let mut positive: Vec<Vec<u64>> = Vec::new();
        let mut negative: Vec<Vec<u64>> = Vec::new();
        for m in matchers {
            if m.matches_empty() {
                let failing = match m.op {
                    MatchOp::NotEqual => self.exact(&m.name, &m.value),
                    _ => self.with_values(&m.name, |v| !m.matches(v)),
                };
                negative.push(failing);
            } else {
                let matching = match m.op {
                    MatchOp::Equal => self.exact(&m.name, &m.value),
                    _ => self.with_values(&m.name, |v| m.matches(v)),
                };
                if matching.is_empty() {
                    return Vec::new();
                }
                positive.push(matching);
            }
        }
        positive.sort_by_key(Vec::len);
        let mut ids = match positive.split_first() {
            Some((first, rest)) => rest.iter().fold(first.clone(), |acc, l| intersect(&acc, l)),
            None => self.all.clone(),
        };
        for failing in &negative {
            ids = subtract(&ids, failing);
        }
        ids
    }

    fn exact(&self, name: &str, value: &str) -> Vec<u64> {
        self.by_name
            .get(name)
            .and_then(|v| v.get(value))
            .cloned()
            .unwrap_or_default()
    }
}

pub(crate) fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Elements of `a` not in `b`.
pub(crate) fn subtract(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut j = 0;
    let mut out = Vec::with_capacity(a.len());
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Sorted union. Concatenate-and-sort keeps it O(n log n) however many lists a regex
/// matcher produces (pairwise merging would be quadratic in the number of lists).
pub(crate) fn union<'a>(lists: impl IntoIterator<Item = &'a [u64]>) -> Vec<u64> {
    let mut out: Vec<u64> = lists.into_iter().flatten().copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value).unwrap()
    }

    fn sample_index() -> MemPostings {
        let mut p = MemPostings::default();
        let series = [
            (1, vec![("__name__", "up"), ("job", "a"), ("instance", "x")]),
            (2, vec![("__name__", "up"), ("job", "b")]),
            (
                3,
                vec![("__name__", "down"), ("job", "a"), ("instance", "y")],
            ),
            (5, vec![("__name__", "up"), ("job", "c"), ("instance", "")]),
        ];
        // Out of order on purpose: lists must still come out sorted.
        for (id, labels) in series.into_iter().rev() {
            p.add_series(id, labels.into_iter().filter(|(_, v)| !v.is_empty()));
        }
        p
    }

    #[test]
    fn matchers_resolve_including_absent_labels() {
        let p = sample_index();
        assert_eq!(p.all(), &[1, 2, 3, 5]);
        assert_eq!(
            p.select(&[m(MatchOp::Equal, "__name__", "up")]),
            vec![1, 2, 5]
        );
        assert_eq!(
            p.select(&[
                m(MatchOp::Equal, "__name__", "up"),
                m(MatchOp::Equal, "job", "a")
            ]),
            vec![1]
        );
        // != selects series lacking the label too.
        assert_eq!(
            p.select(&[m(MatchOp::NotEqual, "instance", "x")]),
            vec![2, 3, 5]
        );
        assert_eq!(
            p.select(&[m(MatchOp::RegexMatch, "job", "a|b")]),
            vec![1, 2, 3]
        );
        assert_eq!(p.select(&[m(MatchOp::RegexNoMatch, "job", "a|b")]), vec![5]);
        // Matches the empty string: absent-label series included.
        assert_eq!(
            p.select(&[m(MatchOp::RegexMatch, "instance", "x|")]),
            vec![1, 2, 5]
        );
        assert_eq!(p.select(&[m(MatchOp::Equal, "instance", "")]), vec![2, 5]);
        assert_eq!(
            p.select(&[m(MatchOp::RegexMatch, "instance", ".+")]),
            vec![1, 3]
        );
        assert_eq!(
            p.select(&[m(MatchOp::Equal, "nope", "x")]),
            Vec::<u64>::new()
        );
        assert_eq!(p.select(&[]), vec![1, 2, 3, 5]);
    }

    #[test]
    fn remove_drops_ids_and_empty_entries() {
        let mut p = sample_index();
        let removed = [
            (1, vec![("__name__", "up"), ("job", "a"), ("instance", "x")]),
            (
                3,
                vec![("__name__", "down"), ("job", "a"), ("instance", "y")],
            ),
        ]
        .map(|(id, l)| (id, StoredLabels::encode(&crate::Labels::from_pairs(l))));
        p.remove(&removed);
        assert_eq!(
            p.values("__name__").map(|v| v.len()),
            Some(1),
            "down is gone"
        );
        assert_eq!(p.select(&[m(MatchOp::Equal, "__name__", "up")]), vec![2, 5]);
        assert_eq!(p.all(), &[2, 5]);
        assert!(p.values("instance").is_none());
        assert_eq!(
            p.values("job")
                .map(|v| v.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["b".into(), "c".into()])
        );
    }

    proptest! {
        #[test]
        fn set_operations_agree_with_btreeset(a in proptest::collection::btree_set(0u64..60, 0..30), b in proptest::collection::btree_set(0u64..60, 0..30)) {
            let (va, vb): (Vec<u64>, Vec<u64>) = (a.iter().copied().collect(), b.iter().copied().collect());
            prop_assert_eq!(intersect(&va, &vb), a.intersection(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(subtract(&va, &vb), a.difference(&b).copied().collect::<Vec<_>>());
            prop_assert_eq!(union([va.as_slice(), vb.as_slice()]), a.union(&b).copied().collect::<Vec<_>>());
            let u3 = union([va.as_slice(), vb.as_slice(), &[7, 59]]);
            let expected: BTreeSet<u64> = a.union(&b).copied().chain([7, 59]).collect();
            prop_assert_eq!(u3, expected.into_iter().collect::<Vec<_>>());
        }
    }
}
