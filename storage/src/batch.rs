//! A batch of series to append, in the form the TSDB takes it: every label set encoded in one
//! buffer exactly as the index stores it (a count, then each name and value length-prefixed),
//! the samples, histograms and exemplars in one vector each. A wire decoder fills it straight from a
//! request's bytes, with no allocation per label or per series, and the TSDB finds each
//! series by those bytes (one hash, one comparison) without building an owned [`Labels`];
//! Prometheus's remote-write sends every sample as its own series entry, so this is the cost
//! of every sample received.
//!
//! Owns that layout and its invariant: every label set in a batch is canonical (UTF-8, names
//! non-empty, strictly ascending, no empty value). A writer that appends the same series again
//! and again (a scrape loop) may also carry each series' [`SeriesRef`], which the TSDB gave it
//! and reads back; what a reference means is the TSDB's.

use crate::encoding::{put_bytes, put_uvarint, Cursor};
use crate::{Exemplar, HistogramSample, Label, Labels, Sample, SeriesBatch, StorageError};

/// Series to append, label sets encoded. See the module doc.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedBatch {
    labels: Vec<u8>,
    /// Where each series' parts end in `labels`, `samples` and `histograms`; it starts where
    /// the previous one ends.
    ends: Vec<Ends>,
    samples: Vec<Sample>,
    histograms: Vec<HistogramSample>,
    exemplars: Vec<Exemplar>,
    /// Empty unless an entry was pushed with [`EncodedBatch::push_encoded_ref`]; then one per
    /// entry.
    refs: Vec<RefHint>,
}

/// Where the TSDB holds a series, as an append found it (Prometheus's `SeriesRef`). Handed
/// back with the next append of the same label set, it spares the lookup by label set, the
/// costliest step of a sample of a known series. Checked before use: a series that left
/// memory since is looked up by its labels as any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesRef {
    pub(crate) id: u64,
    pub(crate) index_slot: u32,
    pub(crate) head_slot: u32,
}

/// What an entry says of its series' reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum RefHint {
    /// Pushed without asking for one.
    #[default]
    Unwanted,
    /// Asked for, none known yet.
    Wanted,
    Known(SeriesRef),
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Ends {
    labels: usize,
    samples: usize,
    histograms: usize,
    exemplars: usize,
}

/// One series of an [`EncodedBatch`].
#[derive(Clone, Copy, Debug)]
pub struct EncodedSeries<'a> {
    labels: &'a [u8],
    pub samples: &'a [Sample],
    pub histograms: &'a [HistogramSample],
    /// Exemplars of the series; an entry may carry only these (Prometheus's remote-write
    /// sends each exemplar as an entry of its own), for a series that exists or that another
    /// entry of the batch creates.
    pub exemplars: &'a [Exemplar],
}

impl<'a> EncodedSeries<'a> {
    /// The label set as the index stores it: equal bytes, equal label sets (a key for
    /// caches of what is derived from a label set).
    pub fn label_bytes(&self) -> &'a [u8] {
        self.labels
    }

    /// The label set, owned (for reports; the write path reads the bytes).
    pub fn labels(&self) -> Labels {
        decode_labels(self.labels)
    }

    pub fn sample_count(&self) -> usize {
        self.samples.len() + self.histograms.len()
    }
}

/// One label set in a batch's encoding, for writers that append the same label set again
/// and again (a scrape's series cache): a fraction of a [`Labels`]' memory (one buffer instead
/// of a vector and two strings per label), and copied into a batch as it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EncodedLabels(Box<[u8]>);

impl EncodedLabels {
    pub fn new(labels: &Labels) -> EncodedLabels {
        let mut out = Vec::new();
        put_labels(&mut out, labels);
        EncodedLabels(out.into())
    }

    pub fn to_labels(&self) -> Labels {
        decode_labels(&self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl EncodedBatch {
    pub fn new() -> EncodedBatch {
        EncodedBatch::default()
    }

    /// An empty batch with room for `series` series of one sample each and `label_bytes`
    /// bytes of encoded label sets, for a decoder that knows what is coming: a large batch
    /// is then not copied as it grows.
    pub fn with_capacity(series: usize, label_bytes: usize) -> EncodedBatch {
        EncodedBatch {
            labels: Vec::with_capacity(label_bytes),
            ends: Vec::with_capacity(series),
            samples: Vec::with_capacity(series),
            histograms: Vec::new(),
            exemplars: Vec::new(),
            refs: Vec::new(),
        }
    }

    /// Adds samples of a series whose label set is already encoded.
    pub fn push_encoded(&mut self, labels: &EncodedLabels, samples: &[Sample]) {
        self.labels.extend_from_slice(&labels.0);
        self.samples.extend_from_slice(samples);
        self.close_series();
    }

    /// [`EncodedBatch::push_encoded`] with the series' reference from an earlier append, or
    /// `None` to be given one: [`crate::AppendReport::series_refs`] lists this entry when
    /// `series` was none or out of date. `labels` must be the label set `series` was given
    /// for.
    pub fn push_encoded_ref(
        &mut self,
        labels: &EncodedLabels,
        series: Option<SeriesRef>,
        samples: &[Sample],
    ) {
        self.refs.resize(self.ends.len(), RefHint::Unwanted);
        self.refs
            .push(series.map_or(RefHint::Wanted, RefHint::Known));
        self.push_encoded(labels, samples);
    }

    /// What entry `i` says of its reference.
    pub(crate) fn ref_hint(&self, i: usize) -> RefHint {
        self.refs.get(i).copied().unwrap_or_default()
    }

    /// Adds a series from label pairs as a decoder reads them. They must be in canonical
    /// order (names non-empty and strictly ascending); pairs with an empty value are left
    /// out ("no such label"). On error the batch is unchanged.
    pub fn push_pairs<'p>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'p str, &'p str)>,
        samples: &[Sample],
        histograms: &[HistogramSample],
    ) -> Result<(), StorageError> {
        let start = self.labels.len();
        if let Err(e) = put_label_set(&mut self.labels, pairs) {
            self.labels.truncate(start);
            return Err(e);
        }
        self.samples.extend_from_slice(samples);
        self.histograms.extend_from_slice(histograms);
        self.close_series();
        Ok(())
    }

    /// Attaches exemplars to the series pushed last (nothing when there is none).
    pub fn add_exemplars(&mut self, exemplars: impl IntoIterator<Item = Exemplar>) {
        if let Some(last) = self.ends.last_mut() {
            self.exemplars.extend(exemplars);
            last.exemplars = self.exemplars.len();
        }
    }

    /// Adds an owned series (already canonical, as every [`Labels`] is).
    pub fn push(&mut self, series: SeriesBatch) {
        self.push_owned(&series.labels, &series.samples, series.histograms);
    }

    pub(crate) fn push_owned(
        &mut self,
        labels: &Labels,
        samples: &[Sample],
        histograms: impl IntoIterator<Item = HistogramSample>,
    ) {
        put_labels(&mut self.labels, labels);
        self.samples.extend_from_slice(samples);
        self.histograms.extend(histograms);
        self.close_series();
    }

    /// Adds a series whose label set is already in this encoding (another batch's, the
    /// index's), with its exemplars.
    pub(crate) fn push_raw(
        &mut self,
        labels: &[u8],
        samples: &[Sample],
        histograms: &[HistogramSample],
        exemplars: &[Exemplar],
    ) {
        self.labels.extend_from_slice(labels);
        self.samples.extend_from_slice(samples);
        self.histograms.extend_from_slice(histograms);
        self.exemplars.extend_from_slice(exemplars);
        self.close_series();
    }

    /// [`EncodedBatch::push_raw`] of a label set read back from disk: refused (the batch
    /// unchanged) unless it is one whole label set in this encoding. Its strings are not
    /// checked again (RocksDB checksums what it reads; a pair that is not UTF-8 would end
    /// [`EncodedSeries::labels`] early, never panic).
    pub(crate) fn push_stored(
        &mut self,
        labels: &[u8],
        samples: &[Sample],
        histograms: &[HistogramSample],
        exemplars: &[Exemplar],
    ) -> Result<(), StorageError> {
        let mut c = Cursor::new(labels);
        let whole = c.uvarint().is_some_and(|n| {
            (0..n).all(|_| c.bytes().is_some() && c.bytes().is_some()) && c.is_empty()
        });
        if !whole {
            return Err(StorageError::Corrupt("stored label set".into()));
        }
        self.push_raw(labels, samples, histograms, exemplars);
        Ok(())
    }

    /// Moves every series of `other` to the end of this batch.
    pub fn append(&mut self, other: EncodedBatch) {
        if !other.refs.is_empty() {
            self.refs.resize(self.ends.len(), RefHint::Unwanted);
            self.refs.extend_from_slice(&other.refs);
        }
        let base = self.current_end();
        self.labels.extend_from_slice(&other.labels);
        self.samples.extend_from_slice(&other.samples);
        self.histograms.extend(other.histograms);
        self.exemplars.extend(other.exemplars);
        self.ends.extend(other.ends.iter().map(|e| Ends {
            labels: base.labels + e.labels,
            samples: base.samples + e.samples,
            histograms: base.histograms + e.histograms,
            exemplars: base.exemplars + e.exemplars,
        }));
    }

    /// How many series entries the batch holds (a label set may appear in several).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Float and histogram samples of all series.
    pub fn sample_count(&self) -> usize {
        self.samples.len() + self.histograms.len()
    }

    /// Exemplars of all series.
    pub fn exemplar_count(&self) -> usize {
        self.exemplars.len()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = EncodedSeries<'_>> {
        (0..self.ends.len()).map(|i| {
            let s = i
                .checked_sub(1)
                .map_or_else(Ends::default, |p| self.ends[p]);
            let e = self.ends[i];
            EncodedSeries {
                labels: &self.labels[s.labels..e.labels],
                samples: &self.samples[s.samples..e.samples],
                histograms: &self.histograms[s.histograms..e.histograms],
                exemplars: &self.exemplars[s.exemplars..e.exemplars],
            }
        })
    }

    /// Keeps the samples `keep` accepts (by timestamp), the exemplars it accepts, and the
    /// series left with either; calls `dropped` with each series that lost samples, as it
    /// was, and how many it lost (exemplars never fail a request, so their losses are not
    /// reported). Entries' references are not kept.
    pub fn retain_samples(
        &mut self,
        mut keep: impl FnMut(i64) -> bool,
        mut dropped: impl FnMut(EncodedSeries<'_>, usize),
    ) {
        let mut out = EncodedBatch::default();
        for s in self.iter() {
            let before = out.sample_count();
            out.samples.extend(s.samples.iter().filter(|x| keep(x.t)));
            out.histograms
                .extend(s.histograms.iter().filter(|h| keep(h.t)).cloned());
            let kept = out.sample_count() - before;
            if kept < s.sample_count() {
                dropped(s, s.sample_count() - kept);
            }
            let exemplars_before = out.exemplars.len();
            out.exemplars
                .extend(s.exemplars.iter().filter(|e| keep(e.t)).cloned());
            if kept > 0 || out.exemplars.len() > exemplars_before {
                out.labels.extend_from_slice(s.labels);
                out.close_series();
            }
        }
        *self = out;
    }

    /// The series as owned batches (for stores that keep [`Labels`]; exemplars are left out).
    pub fn to_series_batches(&self) -> Vec<SeriesBatch> {
        self.iter()
            .map(|s| SeriesBatch {
                labels: s.labels(),
                samples: s.samples.to_vec(),
                histograms: s.histograms.to_vec(),
            })
            .collect()
    }

    fn current_end(&self) -> Ends {
        self.ends.last().copied().unwrap_or_default()
    }

    fn close_series(&mut self) {
        self.ends.push(Ends {
            labels: self.labels.len(),
            samples: self.samples.len(),
            histograms: self.histograms.len(),
            exemplars: self.exemplars.len(),
        });
    }
}

impl From<Vec<SeriesBatch>> for EncodedBatch {
    fn from(series: Vec<SeriesBatch>) -> EncodedBatch {
        let mut batch = EncodedBatch::default();
        for s in series {
            batch.push(s);
        }
        batch
    }
}

impl From<&[SeriesBatch]> for EncodedBatch {
    fn from(series: &[SeriesBatch]) -> EncodedBatch {
        let mut batch = EncodedBatch::default();
        for s in series {
            batch.push_owned(&s.labels, &s.samples, s.histograms.iter().cloned());
        }
        batch
    }
}

/// Appends a label set's encoding, checking canonical order and leaving out empty values.
/// On error, `out` may hold part of it.
fn put_label_set<'p>(
    out: &mut Vec<u8>,
    pairs: impl IntoIterator<Item = (&'p str, &'p str)>,
) -> Result<(), StorageError> {
    let mut prev: Option<&str> = None;
    let checked = pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| {
            if n.is_empty() || prev.is_some_and(|p| p >= n) {
                return Err(StorageError::Invalid(format!(
                    "label names not strictly ascending at {n:?}"
                )));
            }
            prev = Some(n);
            Ok((n, v))
        });
    put_counted(out, checked)
}

/// Appends an owned label set's encoding. `Labels` is canonical by construction, except that
/// it may hold an empty name, which the TSDB refuses with the whole batch: kept so that it can.
fn put_labels(out: &mut Vec<u8>, labels: &Labels) {
    put_pairs(
        out,
        labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
    );
}

/// Encodes a label set from its pairs, sorted by name.
pub(crate) fn put_pairs<'p>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'p str, &'p str)>) {
    // Infallible: every item is Ok.
    let _ = put_counted(out, pairs.map(Ok::<_, StorageError>));
}

/// Writes the count first: one byte while it is below 128 (every real label set), moved up
/// to a longer varint otherwise.
fn put_counted<'p, E>(
    out: &mut Vec<u8>,
    pairs: impl Iterator<Item = Result<(&'p str, &'p str), E>>,
) -> Result<(), E> {
    let start = out.len();
    out.push(0);
    let mut count = 0u64;
    for pair in pairs {
        let (n, v) = pair?;
        put_bytes(out, n.as_bytes());
        put_bytes(out, v.as_bytes());
        count += 1;
    }
    match u8::try_from(count) {
        Ok(byte) if byte < 0x80 => out[start] = byte,
        _ => {
            let mut varint = Vec::with_capacity(10);
            put_uvarint(&mut varint, count);
            out.splice(start..start + 1, varint);
        }
    }
    Ok(())
}

/// An encoded label set, owned.
pub(crate) fn decode_labels(encoded: &[u8]) -> Labels {
    Labels::new(str_pairs(encoded).map(|(n, v)| Label::new(n, v)).collect())
}

/// The pairs of an encoded label set, as bytes.
pub(crate) fn byte_pairs(encoded: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut c = Cursor::new(encoded);
    let n = c.uvarint().unwrap_or(0);
    (0..n).map_while(move |_| Some((c.bytes()?, c.bytes()?)))
}

/// The pairs of an encoded label set; stops at the first that is not UTF-8 (never, for the
/// bytes a batch or the index holds).
pub(crate) fn str_pairs(encoded: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    byte_pairs(encoded)
        .map_while(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(pairs: &[(&str, &str)], ts: &[i64]) -> SeriesBatch {
        SeriesBatch {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: ts.iter().map(|&t| Sample { t, v: t as f64 }).collect(),
            histograms: Vec::new(),
        }
    }

    #[test]
    fn pairs_must_be_canonical_and_empty_values_are_left_out() {
        let mut b = EncodedBatch::new();
        let s = [Sample { t: 1, v: 1.0 }];
        b.push_pairs([("a", "1"), ("b", ""), ("c", "3")], &s, &[])
            .unwrap();
        assert_eq!(
            b.iter().next().unwrap().labels(),
            Labels::from_pairs([("a", "1"), ("c", "3")])
        );
        for bad in [
            &[("b", "1"), ("a", "2")][..],
            &[("a", "1"), ("a", "2")],
            &[("", "1")],
        ] {
            assert!(b.push_pairs(bad.iter().copied(), &s, &[]).is_err());
        }
        assert_eq!(b.len(), 1, "a refused series leaves nothing behind");
        assert_eq!(b.sample_count(), 1);
    }

    #[test]
    fn encoded_label_sets_append_the_same_bytes_as_owned_ones() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "node")]);
        let s = [Sample { t: 1, v: 1.0 }];
        let encoded = EncodedLabels::new(&labels);
        assert_eq!(encoded.to_labels(), labels);
        let mut a = EncodedBatch::new();
        a.push_encoded(&encoded, &s);
        let b = EncodedBatch::from(vec![SeriesBatch {
            labels,
            samples: s.to_vec(),
            histograms: Vec::new(),
        }]);
        assert_eq!(a, b);
    }

    #[test]
    fn long_label_sets_take_a_longer_count() {
        let names: Vec<String> = (0..200).map(|i| format!("l{i:03}")).collect();
        let mut b = EncodedBatch::new();
        b.push_pairs(names.iter().map(|n| (n.as_str(), "v")), &[], &[])
            .unwrap();
        assert_eq!(b.iter().next().unwrap().labels().len(), 200);
    }

    #[test]
    fn retain_keeps_what_passes_and_reports_the_rest() {
        let mut b = EncodedBatch::from(vec![
            series(&[("a", "1")], &[1, 5]),
            series(&[("a", "2")], &[6]),
            series(&[("a", "3")], &[2]),
        ]);
        let mut lost = Vec::new();
        b.retain_samples(|t| t <= 4, |s, n| lost.push((s.labels().to_string(), n)));
        assert_eq!(
            lost,
            vec![(r#"{a="1"}"#.to_string(), 1), (r#"{a="2"}"#.to_string(), 1)]
        );
        let back = b.to_series_batches();
        assert_eq!(
            back,
            vec![series(&[("a", "1")], &[1]), series(&[("a", "3")], &[2])]
        );
    }

    proptest! {
        #[test]
        fn owned_series_round_trip_through_a_batch(
            sets in proptest::collection::vec(
                (proptest::collection::vec(("[a-c_]{1,3}", "[a-c\u{e9}]{0,3}"), 0..5),
                 proptest::collection::vec(any::<i64>(), 0..4)),
                0..6),
            split in 0usize..6,
        ) {
            let all: Vec<SeriesBatch> = sets
                .iter()
                .map(|(pairs, ts)| SeriesBatch {
                    labels: Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                    samples: ts.iter().map(|&t| Sample { t, v: 0.5 }).collect(),
                    histograms: Vec::new(),
                })
                .collect();
            let split = split.min(all.len());
            let mut a = EncodedBatch::from(all[..split].to_vec());
            a.append(EncodedBatch::from(all[split..].to_vec()));
            prop_assert_eq!(a.len(), all.len());
            prop_assert_eq!(a.to_series_batches(), all.clone());
            // Pushed as pairs, the same bytes.
            let mut b = EncodedBatch::new();
            for s in &all {
                b.push_pairs(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())), &s.samples, &[]).unwrap();
            }
            prop_assert_eq!(b, EncodedBatch::from(all));
        }
    }
}
