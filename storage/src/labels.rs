//! Label sets: the identity of a series. Owns the canonical form (sorted by name, no empty
//! values) that the index, the wire formats and the query engines all agree on; knows nothing
//! of how label sets are stored or matched.

use std::fmt;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label set in canonical form: sorted by name, names unique, no empty values (an empty
/// value means "no such label", as in Prometheus). Immutable and shared: a clone is a
/// reference count, since every scraped or selected sample's series carries its labels along
/// (a scrape appends the same label set every interval; the engine copies them per series).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Labels(std::sync::Arc<[Label]>);

/// Hashes `name 0xff value 0xff …` (0xff never occurs in UTF-8, so the stream is unambiguous)
/// in runs of up to 256 bytes: the TSDB hashes every label set of every request, and with a
/// fast hasher four small writes per label cost more than the hashing itself.
impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_label_pairs(
            self.0
                .iter()
                .map(|l| (l.name.as_bytes(), l.value.as_bytes())),
            state,
        );
    }
}

/// [`Labels`]' hash over any sequence of `(name, value)` pairs, so that another form of a
/// label set (the TSDB index's encoded one) hashes the same.
pub(crate) fn hash_label_pairs<'a, H: std::hash::Hasher>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    state: &mut H,
) {
    const SEP: u8 = 0xff;
    let mut buf = [0u8; 256];
    let mut len = 0;
    for part in pairs.flat_map(|(n, v)| [n, v]) {
        if len + part.len() >= buf.len() {
            state.write(&buf[..len]);
            len = 0;
            if part.len() >= buf.len() {
                state.write(part);
                state.write_u8(SEP);
                continue;
            }
        }
        buf[len..len + part.len()].copy_from_slice(part);
        buf[len + part.len()] = SEP;
        len += part.len() + 1;
    }
    state.write(&buf[..len]);
}

impl Labels {
    /// Canonicalises: drops empty values, sorts by name; of repeated names the last wins.
    pub fn new(mut labels: Vec<Label>) -> Labels {
        labels.retain(|l| !l.value.is_empty());
        // Senders sort their labels: canonical input is kept as it is (moved, not re-sorted).
        if labels.windows(2).all(|w| w[0].name < w[1].name) {
            return Labels(labels.into());
        }
        // Stable sort keeps insertion order among equal names, so "last wins" is well defined.
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(labels.len());
        for l in labels {
            match out.last_mut() {
                Some(prev) if prev.name == l.name => *prev = l,
                _ => out.push(l),
            }
        }
        Labels(out.into())
    }

    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Labels {
        Labels::new(pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// The labels as an owned vector (copied when the set is shared).
    pub fn into_vec(self) -> Vec<Label> {
        self.0.to_vec()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Prometheus's text form: `name{a="b", c="d"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_content_across_separators_and_buffer_runs() {
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        let hash = |l: &Labels| state.hash_one(l);
        let long = "x".repeat(300);
        let sets = [
            Labels::from_pairs([("a", "b"), ("cd", "e")]),
            Labels::from_pairs([("a", "bc"), ("d", "e")]),
            Labels::from_pairs([("a", long.as_str()), ("b", "c")]),
            Labels::from_pairs([("a", &long[1..]), ("b", "c")]),
            Labels::from_pairs([("a", "b"), ("c", &long[..250])]),
            Labels::from_pairs([("a", "b"), ("c", &long[..251])]),
        ];
        for (i, a) in sets.iter().enumerate() {
            assert_eq!(hash(a), hash(&a.clone()));
            for b in &sets[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a} and {b}");
            }
        }
    }

    #[test]
    fn canonical_form_sorts_drops_empty_and_keeps_last_duplicate() {
        let l = Labels::from_pairs([("b", "1"), ("a", "x"), ("c", ""), ("b", "2")]);
        let pairs: Vec<_> = l
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(pairs, vec![("a", "x"), ("b", "2")]);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn display_matches_prometheus_text_form() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "p"), ("instance", "a:1")]);
        assert_eq!(l.to_string(), r#"up{instance="a:1", job="p"}"#);
    }
}
