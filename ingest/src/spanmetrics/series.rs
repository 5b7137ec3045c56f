//! The aggregates both processors keep and how they become samples: label-value keys built
//! without allocating, counters and classic histograms, per-series bookkeeping (last update,
//! first write, cost against the series limit) and the writing of a collection round into an
//! [`EncodedBatch`] with Tempo's registry semantics.
//!
//! Owns the in-memory series only; which labels a span gives is `spans`' and `graph`'s, and
//! the appending is the caller's.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use storage::{EncodedBatch, Sample};

/// Separates label values in a key: 0xff never occurs in UTF-8, so a key splits back into
/// exactly the values it was built from.
const SEP: u8 = 0xff;

/// Longest label value written, in bytes (Tempo's registry default): a span name or an
/// attribute is remote input, and a key holds several of them.
pub(crate) const MAX_LABEL_VALUE_BYTES: usize = 2048;

/// `v` cut at [`MAX_LABEL_VALUE_BYTES`] on a character boundary.
pub(crate) fn capped(v: &str) -> &str {
    let mut end = v.len().min(MAX_LABEL_VALUE_BYTES);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// Replaces `s` with `t`, [`capped`], reusing its buffer: what an edge keeps of remote
/// input is bounded like what a key does.
pub(crate) fn set_text(s: &mut String, t: Text<'_>) {
    s.clear();
    match t {
        Text::Str(v) => s.push_str(capped(v)),
        // Writes into a String cannot fail; numbers are far shorter than the cap.
        t => {
            let _ = write!(s, "{t}");
        }
    }
}

/// The label values of one series, as the key of its aggregate. Built in a buffer that is
/// reused span after span, so that finding an existing series allocates nothing.
#[derive(Default)]
pub(crate) struct KeyBuf(Vec<u8>);

impl KeyBuf {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Adds a value, [`capped`].
    pub(crate) fn push(&mut self, v: &str) {
        self.0.extend_from_slice(capped(v).as_bytes());
        self.0.push(SEP);
    }

    /// Adds an attribute's value ([`text`]), written in place rather than through a
    /// `String` per span; a missing attribute or one with no text form adds an empty value
    /// (no label).
    pub(crate) fn push_value(&mut self, v: Option<&AnyValue>) {
        match text(v) {
            Some(Text::Str(s)) => return self.push(s),
            // Writes into a Vec cannot fail; numbers are far shorter than the value cap.
            Some(t) => {
                let _ = write!(self.0, "{t}");
            }
            None => {}
        }
        self.0.push(SEP);
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An attribute value as text, the form the trace store indexes it under
/// (`storage::traces::value_text`), so that a dimension's value is the one a tag search
/// matches; borrowed, so that reading it allocates nothing.
pub(crate) enum Text<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Text::Str(s) => f.write_str(s),
            Text::Int(i) => write!(f, "{i}"),
            Text::Bool(b) => write!(f, "{b}"),
            Text::Double(d) => write!(f, "{d}"),
        }
    }
}

/// Strings, ints, bools and doubles have a text form; arrays, maps and bytes do not.
pub(crate) fn text(v: Option<&AnyValue>) -> Option<Text<'_>> {
    Some(match v?.value.as_ref()? {
        Value::StringValue(s) => Text::Str(s),
        Value::IntValue(i) => Text::Int(*i),
        Value::BoolValue(b) => Text::Bool(*b),
        Value::DoubleValue(d) => Text::Double(*d),
        _ => return None,
    })
}

/// The first attribute named `key` in `sets`, searched in order (Tempo: resource, then span).
pub(crate) fn attribute<'a>(key: &str, sets: &[&'a [KeyValue]]) -> Option<&'a AnyValue> {
    sets.iter()
        .flat_map(|s| s.iter())
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A string attribute's value (the other kinds name no service or database).
pub(crate) fn str_attribute<'a>(key: &str, sets: &[&'a [KeyValue]]) -> Option<&'a str> {
    match attribute(key, sets)?.value.as_ref()? {
        Value::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The values a key was built from, in order.
pub(crate) fn key_values(key: &[u8]) -> impl Iterator<Item = &str> {
    let body = key.strip_suffix(&[SEP]).unwrap_or(key);
    // Keys are built from `&str`s only, so every piece is UTF-8.
    body.split(|b| *b == SEP)
        .map(|v| std::str::from_utf8(v).unwrap_or_default())
}

/// The labels of a key: `names` paired with its values.
/// The label names of a processor's series: its built-in ones, then its dimensions' labels.
pub(crate) fn label_names<'a>(
    builtin: &[&'a str],
    dimensions: &'a [(String, String)],
) -> Vec<&'a str> {
    let dims = dimensions.iter().map(|(_, label)| label.as_str());
    builtin.iter().copied().chain(dims).collect()
}

pub(crate) fn key_labels<'a>(names: &[&'a str], key: &'a [u8]) -> Vec<(&'a str, &'a str)> {
    names.iter().copied().zip(key_values(key)).collect()
}

/// A classic histogram: a count per bucket (the last one `+Inf`), the sum and the count.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    sum: f64,
}

impl Histogram {
    pub(crate) fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            counts: vec![0; bounds.len() + 1].into(),
            sum: 0.0,
        }
    }

    /// `value` lands in the first bucket whose upper bound it does not exceed, as in
    /// Prometheus (`le` is inclusive).
    pub(crate) fn observe(&mut self, bounds: &[f64], value: f64) {
        self.counts[bounds.partition_point(|b| *b < value)] += 1;
        self.sum += value;
    }

    /// The series a histogram adds to the active series count: a bucket per bound, `+Inf`,
    /// `_sum` and `_count`.
    pub(crate) fn cost(bounds: &[f64]) -> usize {
        bounds.len() + 3
    }
}

/// One aggregate (a label set's counters and histograms) with what the registry needs to
/// know of it.
pub(crate) struct Entry<A> {
    pub(crate) agg: A,
    last_update: Instant,
    /// Whether a collection wrote it yet: its first write starts every series at 0.
    written: bool,
}

/// Aggregates by label values, with staleness. The series count they stand for is kept by
/// the caller ([`Limit`]), which every map of a generator shares.
pub(crate) struct Aggregates<A> {
    entries: HashMap<Vec<u8>, Entry<A>>,
    /// Series one aggregate writes, counted against the limit.
    cost: usize,
}

/// The series limit shared by every aggregate map of a generator.
pub(crate) struct Limit {
    pub(crate) active: usize,
    pub(crate) max: usize,
}

impl<A> Aggregates<A> {
    pub(crate) fn new(cost: usize) -> Aggregates<A> {
        Aggregates {
            entries: HashMap::new(),
            cost,
        }
    }

    /// The aggregate of `key`, created by `new` if the limit has room for its series; None
    /// when it does not (the observation is dropped).
    pub(crate) fn get(
        &mut self,
        key: &KeyBuf,
        now: Instant,
        limit: &mut Limit,
        new: impl FnOnce() -> A,
    ) -> Option<&mut A> {
        // Two lookups on a miss: `entry` would need an owned key on every hit.
        if !self.entries.contains_key(key.bytes()) {
            if limit.active + self.cost > limit.max {
                return None;
            }
            limit.active += self.cost;
            self.entries.insert(
                key.bytes().to_vec(),
                Entry {
                    agg: new(),
                    last_update: now,
                    written: false,
                },
            );
        }
        let e = self.entries.get_mut(key.bytes())?;
        e.last_update = now;
        Some(&mut e.agg)
    }

    /// Forgets the aggregates not updated for `stale`, as Tempo's registry does: their
    /// series end (a later span starts them again, from 0).
    pub(crate) fn remove_stale(&mut self, now: Instant, stale: Duration, limit: &mut Limit) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_update) <= stale);
        limit.active -= (before - self.entries.len()) * self.cost;
    }

    /// Every aggregate with its key and whether this is its first write; marks them written.
    pub(crate) fn drain_round(&mut self) -> impl Iterator<Item = (&[u8], &mut A, bool)> {
        self.entries.iter_mut().map(|(k, e)| {
            let first = !e.written;
            e.written = true;
            (k.as_slice(), &mut e.agg, first)
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A collection round being written: every series' cumulative value at `t`, preceded on its
/// first write by a 0 one collection interval earlier (Tempo writes that 0 too, so that
/// `rate` and `increase` count the first spans rather than start from them; one interval
/// back instead of Tempo's end of the previous minute keeps it after any sample the series
/// had before it went stale, since the stale duration is longer).
pub(crate) struct Round {
    pub(crate) batch: EncodedBatch,
    t: i64,
    zero_t: i64,
}

impl Round {
    pub(crate) fn new(t: i64, interval: Duration) -> Round {
        Round {
            batch: EncodedBatch::new(),
            t,
            zero_t: t - interval.as_millis() as i64,
        }
    }

    /// One series: `__name__` `name`, the `labels` (empty values left out) and `extra`.
    pub(crate) fn series(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        v: f64,
        first: bool,
    ) {
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 2);
        pairs.push(("__name__", name));
        pairs.extend_from_slice(labels);
        pairs.extend(extra);
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let at = Sample { t: self.t, v };
        let zero = Sample {
            t: self.zero_t,
            v: 0.0,
        };
        let samples: &[Sample] = if first { &[zero, at] } else { &[at] };
        if let Err(e) = self.batch.push_pairs(pairs, samples, &[]) {
            // Label names are checked when the options are, so this is a defect; losing one
            // series beats losing the round.
            tracing::warn!(name, "span metrics series not written: {e}");
        }
    }

    /// A histogram's `_bucket` series (cumulative, `le` as Prometheus writes it), `_sum`
    /// and `_count`.
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        h: &Histogram,
        first: bool,
    ) {
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            self.series(
                &format!("{name}_bucket"),
                labels,
                Some(("le", &le)),
                cumulative as f64,
                first,
            );
        }
        self.series(&format!("{name}_sum"), labels, None, h.sum, first);
        self.series(
            &format!("{name}_count"),
            labels,
            None,
            cumulative as f64,
            first,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_they_do_not_exceed() {
        let bounds = [0.1, 0.2, 0.4];
        let mut h = Histogram::new(&bounds);
        for v in [0.0, 0.1, 0.10001, 0.2, 0.4, 0.41, 100.0] {
            h.observe(&bounds, v);
        }
        assert_eq!(&*h.counts, &[2, 2, 1, 2]);
        assert!((h.sum - 101.21001).abs() < 1e-9);
    }

    #[test]
    fn keys_split_back_into_their_values_and_long_values_are_cut_on_a_char_boundary() {
        let mut k = KeyBuf::default();
        k.push("a");
        k.push("");
        let long = "é".repeat(MAX_LABEL_VALUE_BYTES);
        k.push(&long);
        k.push_value(Some(&AnyValue {
            value: Some(Value::IntValue(-7)),
        }));
        k.push_value(None);
        let v: Vec<&str> = key_values(k.bytes()).collect();
        assert_eq!(v.len(), 5);
        assert_eq!((v[0], v[1], v[3], v[4]), ("a", "", "-7", ""));
        assert_eq!(v[2].len(), MAX_LABEL_VALUE_BYTES);
        assert!(long.starts_with(v[2]));
    }

    #[test]
    fn the_limit_refuses_new_aggregates_and_stale_ones_give_their_room_back() {
        let t0 = Instant::now();
        let mut limit = Limit { active: 0, max: 5 };
        let mut a: Aggregates<u32> = Aggregates::new(2);
        let key = |s: &str| {
            let mut k = KeyBuf::default();
            k.push(s);
            k
        };
        *a.get(&key("x"), t0, &mut limit, || 0).unwrap() += 1;
        *a.get(&key("y"), t0, &mut limit, || 0).unwrap() += 1;
        assert!(a.get(&key("z"), t0, &mut limit, || 0).is_none());
        // An existing aggregate is still updated at the limit.
        *a.get(&key("x"), t0 + Duration::from_secs(10), &mut limit, || 0)
            .unwrap() += 1;
        assert_eq!(limit.active, 4);
        a.remove_stale(
            t0 + Duration::from_secs(10),
            Duration::from_secs(5),
            &mut limit,
        );
        assert_eq!((a.len(), limit.active), (1, 2));
        assert!(a.get(&key("z"), t0, &mut limit, || 0).is_some());
        let round: Vec<_> = a
            .drain_round()
            .map(|(k, v, first)| (key_values(k).next().unwrap().to_owned(), *v, first))
            .collect();
        assert_eq!(round.len(), 2);
        assert!(round.contains(&("x".to_owned(), 2, true)));
        assert!(a.drain_round().all(|(_, _, first)| !first));
    }

    #[test]
    fn a_first_write_starts_every_series_at_zero_one_interval_earlier() {
        let bounds = [0.5];
        let mut h = Histogram::new(&bounds);
        h.observe(&bounds, 0.25);
        h.observe(&bounds, 2.0);
        let mut r = Round::new(100_000, Duration::from_secs(15));
        r.histogram("h", &[("service", "a"), ("z", "")], &bounds, &h, true);
        let got: Vec<(String, Vec<(i64, f64)>)> = r
            .batch
            .iter()
            .map(|s| {
                (
                    s.labels().to_string(),
                    s.samples.iter().map(|s| (s.t, s.v)).collect(),
                )
            })
            .collect();
        let z = |v| vec![(85_000, 0.0), (100_000, v)];
        assert_eq!(
            got,
            vec![
                (r#"h_bucket{le="0.5", service="a"}"#.to_owned(), z(1.0)),
                (r#"h_bucket{le="+Inf", service="a"}"#.to_owned(), z(2.0)),
                (r#"h_sum{service="a"}"#.to_owned(), z(2.25)),
                (r#"h_count{service="a"}"#.to_owned(), z(2.0)),
            ]
        );
    }
}
