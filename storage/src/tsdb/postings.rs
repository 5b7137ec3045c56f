//! The in-memory inverted index: label name → value → sorted series ids, plus the sorted list
//! of all ids, and the set operations that resolve label matchers against it.
//!
//! Owns matcher resolution over ids; knows nothing about label sets' storage, time ranges or
//! samples. Negative matchers and matchers that match the empty string also select series
//! that lack the label, computed as "all series minus those with a non-matching value", so
//! no matcher needs a scan over all series' label sets.

use std::collections::BTreeMap;

use roaring::RoaringTreemap;

use crate::tsdb::symbols::LabelsRef;
use crate::{MatchOp, Matcher};

/// Above this many ids a list turns into a bitmap. Most label values (an instance, a pod) hold
/// few series, where a bitmap's containers cost more than plain ids; the few long lists (a job,
/// a metric name, every series) hold most of the ids and cost ~2 bits per id as a bitmap
/// instead of 64. At a million node-exporter-like series that is ~60 MB of ~70.
const BITMAP_ABOVE: usize = 1024;

/// One posting list: the ids of the series holding one label pair (or all series), sorted.
#[derive(Debug)]
pub(crate) enum Ids {
    Sorted(Vec<u64>),
    /// Never turned back into `Sorted`: a long list that shrinks is rare and costs little.
    Bitmap(RoaringTreemap),
}

impl Default for Ids {
    fn default() -> Ids {
        Ids::Sorted(Vec::new())
    }
}

impl Ids {
    pub(crate) fn len(&self) -> usize {
        match self {
            Ids::Sorted(v) => v.len(),
            Ids::Bitmap(b) => b.len() as usize,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (sorted, bitmap) = match self {
            Ids::Sorted(v) => (Some(v.iter().copied()), None),
            Ids::Bitmap(b) => (None, Some(b.iter())),
        };
        sorted
            .into_iter()
            .flatten()
            .chain(bitmap.into_iter().flatten())
    }

    pub(crate) fn to_vec(&self) -> Vec<u64> {
        match self {
            Ids::Sorted(v) => v.clone(),
            Ids::Bitmap(b) => b.iter().collect(),
        }
    }

    fn contains(&self, id: u64) -> bool {
        match self {
            Ids::Sorted(v) => v.binary_search(&id).is_ok(),
            Ids::Bitmap(b) => b.contains(id),
        }
    }

    /// Ids mostly arrive in increasing order, so this is a push.
    fn insert(&mut self, id: u64) {
        match self {
            Ids::Sorted(list) => {
                match list.last() {
                    Some(&last) if last >= id => {
                        if let Err(pos) = list.binary_search(&id) {
                            list.insert(pos, id);
                        }
                    }
                    _ => list.push(id),
                }
                if list.len() > BITMAP_ABOVE {
                    // Sorted, so the bitmap is built by appending.
                    *self = Ids::Bitmap(
                        RoaringTreemap::from_sorted_iter(list.iter().copied())
                            .expect("posting lists are sorted"),
                    );
                }
            }
            Ids::Bitmap(b) => {
                b.insert(id);
            }
        }
    }

    /// Removes `gone` (sorted).
    fn remove(&mut self, gone: &[u64]) {
        match self {
            Ids::Sorted(list) => *list = subtract(list, gone),
            Ids::Bitmap(b) => {
                for &id in gone {
                    b.remove(id);
                }
            }
        }
    }

    /// `acc` (sorted) less the ids not in this list. A short `acc` probes the list; a long
    /// one is merged with it, which costs the list's length but no lookup per id.
    fn retain_in(&self, acc: &mut Vec<u64>) {
        if acc.len().saturating_mul(16) < self.len() {
            acc.retain(|&id| self.contains(id));
        } else {
            *acc = merge(acc, self.iter(), true);
        }
    }

    /// `acc` (sorted) less the ids in this list.
    fn remove_from(&self, acc: &mut Vec<u64>) {
        if acc.len().saturating_mul(16) < self.len() {
            acc.retain(|&id| !self.contains(id));
        } else {
            *acc = merge(acc, self.iter(), false);
        }
    }
}

/// The ids of `a` (sorted) that are (`keep_common`) or are not in `b` (sorted).
fn merge(a: &[u64], b: impl Iterator<Item = u64>, keep_common: bool) -> Vec<u64> {
    let mut b = b.peekable();
    let mut out = Vec::with_capacity(a.len());
    for &x in a {
        while b.next_if(|&y| y < x).is_some() {}
        if (b.peek() == Some(&x)) == keep_common {
            out.push(x);
        }
    }
    out
}

/// A matcher's candidates: one list of the index, or a union of several built for the query.
enum Candidates<'a> {
    List(&'a Ids),
    Union(Vec<u64>),
}

impl Candidates<'_> {
    fn len(&self) -> usize {
        match self {
            Candidates::List(ids) => ids.len(),
            Candidates::Union(v) => v.len(),
        }
    }

    fn to_vec(&self) -> Vec<u64> {
        match self {
            Candidates::List(ids) => ids.to_vec(),
            Candidates::Union(v) => v.clone(),
        }
    }

    fn retain_in(&self, acc: &mut Vec<u64>) {
        match self {
            Candidates::List(ids) => ids.retain_in(acc),
            Candidates::Union(v) => *acc = intersect(acc, v),
        }
    }

    fn remove_from(&self, acc: &mut Vec<u64>) {
        match self {
            Candidates::List(ids) => ids.remove_from(acc),
            Candidates::Union(v) => *acc = subtract(acc, v),
        }
    }
}

#[derive(Default)]
pub(crate) struct MemPostings {
    by_name: BTreeMap<String, BTreeMap<String, Ids>>,
    all: Ids,
}

impl MemPostings {
    pub(crate) fn add_series<'a>(
        &mut self,
        id: u64,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.all.insert(id);
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
            Some(list) => list.insert(id),
            None => {
                values.insert(value.to_owned(), Ids::Sorted(vec![id]));
            }
        }
    }

    /// Removes series (sorted by id) with their label sets: only the lists of their own
    /// label pairs are rewritten, not every list of the index.
    pub(crate) fn remove<'a>(&mut self, removed: impl IntoIterator<Item = (u64, LabelsRef<'a>)>) {
        let mut ids = Vec::new();
        // Ids stay sorted per pair because `removed` is sorted.
        let mut by_pair: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
        for (id, labels) in removed {
            ids.push(id);
            for pair in labels.pairs() {
                by_pair.entry(pair).or_default().push(id);
            }
        }
        if ids.is_empty() {
            return;
        }
        self.all.remove(&ids);
        for ((name, value), gone) in by_pair {
            let Some(values) = self.by_name.get_mut(name) else {
                continue;
            };
            if let Some(list) = values.get_mut(value) {
                list.remove(&gone);
                if list.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    pub(crate) fn all(&self) -> &Ids {
        &self.all
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, Ids>)> {
        self.by_name.iter()
    }

    pub(crate) fn values(&self, name: &str) -> Option<&BTreeMap<String, Ids>> {
        self.by_name.get(name)
    }

    /// Ids of series with a value of `m.name` for which `keep(value)` holds.
    fn with_values(&self, name: &str, keep: impl Fn(&str) -> bool) -> Candidates<'_> {
        let Some(values) = self.by_name.get(name) else {
            return Candidates::Union(Vec::new());
        };
        let mut lists = values.iter().filter(|(v, _)| keep(v)).map(|(_, ids)| ids);
        match (lists.next(), lists.next()) {
            (None, _) => Candidates::Union(Vec::new()),
            (Some(one), None) => Candidates::List(one),
            (Some(a), Some(b)) => {
                Candidates::Union(union([a, b].into_iter().chain(lists).flat_map(Ids::iter)))
            }
        }
    }

    fn exact(&self, name: &str, value: &str) -> Candidates<'_> {
        match self.by_name.get(name).and_then(|v| v.get(value)) {
            Some(ids) => Candidates::List(ids),
            None => Candidates::Union(Vec::new()),
        }
    }

    /// Sorted ids of the series matching all matchers (all series when there are none).
    pub(crate) fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        // Matchers that cannot match an absent label narrow down positively; the others are
        // applied by subtracting the series whose value fails them.
        let mut positive = Vec::new();
        let mut negative = Vec::new();
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
                if matching.len() == 0 {
                    return Vec::new();
                }
                positive.push(matching);
            }
        }
        // The shortest list first: every other only filters it.
        positive.sort_by_key(Candidates::len);
        let mut ids = match positive.split_first() {
            Some((first, rest)) => {
                let mut ids = first.to_vec();
                for l in rest {
                    l.retain_in(&mut ids);
                }
                ids
            }
            None => self.all.to_vec(),
        };
        for failing in &negative {
            failing.remove_from(&mut ids);
        }
        ids
    }
}

/// Elements of `a` also in `b` (both sorted).
fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    merge(a, b.iter().copied(), true)
}

/// Elements of `a` not in `b` (both sorted).
fn subtract(a: &[u64], b: &[u64]) -> Vec<u64> {
    merge(a, b.iter().copied(), false)
}

/// The sorted, distinct ids of several lists. Concatenate-and-sort keeps it O(n log n) however
/// many lists a regex matcher produces (pairwise merging would be quadratic in their number).
pub(crate) fn union(ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut out: Vec<u64> = ids.into_iter().collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::labelset::StoredLabels;
    use crate::tsdb::symbols::{SymbolLabels, Symbols};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value).unwrap()
    }

    /// [`MemPostings::remove`] with label sets interned for the call, as the index does.
    fn remove(p: &mut MemPostings, removed: &[(u64, crate::Labels)]) {
        let mut table = Symbols::default();
        let interned: Vec<(u64, SymbolLabels)> = removed
            .iter()
            .map(|(id, l)| (*id, table.add(&StoredLabels::encode(l))))
            .collect();
        p.remove(interned.iter().map(|(id, l)| (*id, table.read(l))));
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
        assert_eq!(p.all().to_vec(), [1, 2, 3, 5]);
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
        .map(|(id, l)| (id, crate::Labels::from_pairs(l)));
        remove(&mut p, &removed);
        assert_eq!(
            p.values("__name__").map(|v| v.len()),
            Some(1),
            "down is gone"
        );
        assert_eq!(p.select(&[m(MatchOp::Equal, "__name__", "up")]), vec![2, 5]);
        assert_eq!(p.all().to_vec(), [2, 5]);
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
            prop_assert_eq!(union(va.iter().chain(&vb).copied()), a.union(&b).copied().collect::<Vec<_>>());
            let u3 = union(va.iter().chain(&vb).chain(&[7, 59]).copied());
            let expected: BTreeSet<u64> = a.union(&b).copied().chain([7, 59]).collect();
            prop_assert_eq!(u3, expected.into_iter().collect::<Vec<_>>());
        }

        /// A list long enough to become a bitmap, built out of order and thinned, filters and
        /// subtracts like a set, whether the other side is short (probed) or long (merged).
        #[test]
        fn long_lists_agree_with_btreeset(
            ids in proptest::collection::vec(0u64..40_000, 0..3000),
            gone in proptest::collection::btree_set(0u64..40_000, 0..600),
            acc in proptest::collection::btree_set(0u64..40_000, 0..3000),
        ) {
            let mut list = Ids::default();
            for &id in &ids {
                list.insert(id);
            }
            let gone: Vec<u64> = gone.into_iter().collect();
            list.remove(&gone);
            let model: BTreeSet<u64> =
                ids.iter().copied().filter(|id| gone.binary_search(id).is_err()).collect();
            let in_model = |acc: &[u64], want: bool| -> Vec<u64> {
                acc.iter().copied().filter(|id| model.contains(id) == want).collect()
            };
            prop_assert_eq!(list.len(), model.len());
            prop_assert_eq!(list.iter().collect::<Vec<_>>(), list.to_vec());
            prop_assert_eq!(list.to_vec(), model.iter().copied().collect::<Vec<_>>());
            let distinct = ids.iter().collect::<BTreeSet<_>>().len();
            prop_assert_eq!(matches!(list, Ids::Bitmap(_)), distinct > BITMAP_ABOVE);
            for short in [true, false] {
                let take = if short { 20 } else { usize::MAX };
                let acc: Vec<u64> = acc.iter().copied().take(take).collect();
                let (mut kept, mut left) = (acc.clone(), acc.clone());
                list.retain_in(&mut kept);
                list.remove_from(&mut left);
                prop_assert_eq!(kept, in_model(&acc, true));
                prop_assert_eq!(left, in_model(&acc, false));
            }
        }
    }

    /// Selection over lists on both sides of the bitmap threshold agrees with filtering every
    /// series' labels.
    #[test]
    fn selection_over_long_lists_agrees_with_a_scan() {
        let series: Vec<(u64, [(&str, String); 3])> = (0..6000u64)
            .map(|i| {
                let id = i * 2 + 7;
                (
                    id,
                    [
                        ("i", (i / 90).to_string()),
                        ("j", (i % 3).to_string()),
                        ("n", (i % 7).to_string()),
                    ],
                )
            })
            .collect();
        let mut p = MemPostings::default();
        for (id, labels) in &series {
            p.add_series(*id, labels.iter().map(|(n, v)| (*n, v.as_str())));
        }
        let cases = [
            vec![m(MatchOp::Equal, "j", "1")],
            vec![m(MatchOp::Equal, "j", "1"), m(MatchOp::Equal, "i", "4")],
            vec![
                m(MatchOp::RegexMatch, "n", "[0-3]"),
                m(MatchOp::NotEqual, "j", "2"),
            ],
            vec![
                m(MatchOp::NotEqual, "j", "0"),
                m(MatchOp::RegexNoMatch, "i", "1.*"),
            ],
            vec![m(MatchOp::Equal, "i", "3"), m(MatchOp::NotEqual, "n", "5")],
        ];
        for matchers in cases {
            let want: Vec<u64> = series
                .iter()
                .filter(|(_, l)| {
                    matchers.iter().all(|m| {
                        m.matches(l.iter().find(|(n, _)| *n == m.name).map_or("", |(_, v)| v))
                    })
                })
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(p.select(&matchers), want, "{matchers:?}");
        }
        let removed: Vec<(u64, crate::Labels)> = series[..3000]
            .iter()
            .map(|(id, l)| {
                (
                    *id,
                    crate::Labels::from_pairs(l.iter().map(|(n, v)| (*n, v.clone()))),
                )
            })
            .collect();
        remove(&mut p, &removed);
        assert_eq!(
            p.all().to_vec(),
            series[3000..].iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        assert_eq!(p.select(&[m(MatchOp::Equal, "j", "1")]).len(), 1000);
    }
}
