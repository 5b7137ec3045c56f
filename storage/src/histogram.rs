//! The stored form of a native histogram sample (Prometheus's FloatHistogram layout: float
//! counts, absolute bucket values, spans) and its compact binary encoding used by the WAL and
//! chunks. Owns no arithmetic; the query engine interprets these values.

use crate::encoding::{put_uvarint, unzigzag, zigzag, Cursor};

/// A run of consecutive buckets after a gap of `offset` bucket indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSpan {
    pub offset: i32,
    pub length: u32,
}

/// Prometheus's counter-reset hint, kept as its wire value
/// (0 unknown, 1 counter reset, 2 not a counter reset, 3 gauge).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub counter_reset_hint: u8,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<HistogramSpan>,
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<HistogramSpan>,
    pub negative_buckets: Vec<f64>,
    /// Custom bucket bounds (schema -53 only).
    pub custom_values: Vec<f64>,
}

impl Histogram {
    /// Whether this is the staleness marker (sum is the stale NaN).
    pub fn is_stale(&self) -> bool {
        crate::is_stale_nan(self.sum)
    }

    /// Bit-exact equality (NaN sums compare by bits), the duplicate-sample rule.
    pub fn same_as(&self, other: &Histogram) -> bool {
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        self.counter_reset_hint == other.counter_reset_hint
            && self.schema == other.schema
            && self.zero_threshold.to_bits() == other.zero_threshold.to_bits()
            && self.zero_count.to_bits() == other.zero_count.to_bits()
            && self.count.to_bits() == other.count.to_bits()
            && self.sum.to_bits() == other.sum.to_bits()
            && self.positive_spans == other.positive_spans
            && self.negative_spans == other.negative_spans
            && bits(&self.positive_buckets) == bits(&other.positive_buckets)
            && bits(&self.negative_buckets) == bits(&other.negative_buckets)
            && bits(&self.custom_values) == bits(&other.custom_values)
    }

    /// Appends the encoding: hint, schema, scalars, then each span list and value list
    /// length-prefixed (floats as raw bits).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.counter_reset_hint);
        put_uvarint(out, zigzag(self.schema as i64));
        for f in [self.zero_threshold, self.zero_count, self.count, self.sum] {
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        for spans in [&self.positive_spans, &self.negative_spans] {
            put_uvarint(out, spans.len() as u64);
            for s in spans {
                put_uvarint(out, zigzag(s.offset as i64));
                put_uvarint(out, s.length as u64);
            }
        }
        for vals in [
            &self.positive_buckets,
            &self.negative_buckets,
            &self.custom_values,
        ] {
            put_uvarint(out, vals.len() as u64);
            for f in vals {
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
    }

    /// Decodes one histogram from the cursor; `None` on truncated or malformed input.
    pub(crate) fn decode(c: &mut Cursor) -> Option<Histogram> {
        let counter_reset_hint = c.u8()?;
        let schema = i32::try_from(unzigzag(c.uvarint()?)).ok()?;
        let zero_threshold = f64_at(c)?;
        let zero_count = f64_at(c)?;
        let count = f64_at(c)?;
        let sum = f64_at(c)?;
        let positive_spans = spans(c)?;
        let negative_spans = spans(c)?;
        let positive_buckets = floats(c)?;
        let negative_buckets = floats(c)?;
        let custom_values = floats(c)?;
        Some(Histogram {
            counter_reset_hint,
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive_spans,
            positive_buckets,
            negative_spans,
            negative_buckets,
            custom_values,
        })
    }
}

fn f64_at(c: &mut Cursor) -> Option<f64> {
    let mut v = [0u8; 8];
    for b in &mut v {
        *b = c.u8()?;
    }
    Some(f64::from_bits(u64::from_le_bytes(v)))
}

fn spans(c: &mut Cursor) -> Option<Vec<HistogramSpan>> {
    let n = usize::try_from(c.uvarint()?).ok()?;
    // A span takes at least 2 bytes: a larger count is corruption, not a reason to allocate.
    if n > c.rest().len() / 2 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let offset = i32::try_from(unzigzag(c.uvarint()?)).ok()?;
        let length = u32::try_from(c.uvarint()?).ok()?;
        out.push(HistogramSpan { offset, length });
    }
    Some(out)
}

fn floats(c: &mut Cursor) -> Option<Vec<f64>> {
    let n = usize::try_from(c.uvarint()?).ok()?;
    if n > c.rest().len() / 8 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f64_at(c)?);
    }
    Some(out)
}

/// One histogram sample of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub h: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span() -> impl Strategy<Value = HistogramSpan> {
        (any::<i32>(), any::<u32>()).prop_map(|(offset, length)| HistogramSpan { offset, length })
    }

    prop_compose! {
        fn histogram()(
            hint in 0u8..4, schema in -53i32..9,
            scalars in proptest::array::uniform4(any::<f64>()),
            ps in proptest::collection::vec(span(), 0..4),
            ns in proptest::collection::vec(span(), 0..4),
            pb in proptest::collection::vec(any::<f64>(), 0..8),
            nb in proptest::collection::vec(any::<f64>(), 0..8),
            cv in proptest::collection::vec(any::<f64>(), 0..4),
        ) -> Histogram {
            Histogram {
                counter_reset_hint: hint, schema,
                zero_threshold: scalars[0], zero_count: scalars[1], count: scalars[2], sum: scalars[3],
                positive_spans: ps, positive_buckets: pb, negative_spans: ns, negative_buckets: nb,
                custom_values: cv,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(h in histogram()) {
            let mut buf = Vec::new();
            h.encode(&mut buf);
            let mut c = Cursor::new(&buf);
            let back = Histogram::decode(&mut c).expect("decodes");
            prop_assert!(c.is_empty());
            prop_assert!(back.same_as(&h));
        }

        #[test]
        fn truncation_is_an_error(h in histogram(), cut in 0usize..64) {
            let mut buf = Vec::new();
            h.encode(&mut buf);
            let cut = cut.min(buf.len().saturating_sub(1));
            prop_assert!(Histogram::decode(&mut Cursor::new(&buf[..cut])).is_none());
        }
    }
}
