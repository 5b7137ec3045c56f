//! The native histogram chunk encoding (encoding byte 3): up to [`MAX_SAMPLES`] histogram
//! samples of one series, modelled on Prometheus's float histogram chunk. Timestamps are
//! stored as in the float chunks; the bucket layout (schema, zero threshold, spans, custom
//! bounds, bucket counts) is written with the first sample and again only when it changes;
//! the sum is XOR'd like a float value. The counts (total, zero bucket, every bucket) are
//! either XOR'd against the same count of the previous sample or, when every count in the
//! chunk is an integer (always so for integer histograms, usually for float ones), stored as
//! integer deltas of deltas in bucketed widths: a bucket growing at a steady rate costs one
//! bit a sample.
//!
//! Owns this byte format only: which samples form a chunk and where it is stored are the
//! histogram store's (`tsdb::histstore`). Every value round-trips bit-exactly (NaN sums, the
//! staleness marker, -0.0 counts force the XOR form).
//!
//! Stored form: encoding byte, sample count (uvarint), max t − min t (uvarint), mode byte
//! (0 XOR, 1 integer), then the bit stream. Per sample: its timestamp; a bit saying whether
//! a layout follows (absent for the first sample, whose layout always does); the layout as
//! a bucketed byte length and its bytes; the counter-reset hint in 2 bits (3 escapes to 8
//! more bits); the sum; the counts.

use super::{
    read_bucketed, read_count_and_span, write_bucketed, BitReader, BitWriter, CorruptChunk, Decode,
    Samples, TimeWriter, Timestamps, XorReader, XorWriter, MAX_SAMPLES,
};
use crate::encoding::{put_uvarint, unzigzag, zigzag, Cursor};
use crate::histogram::{Histogram, HistogramSample, HistogramSpan};

const ENCODING_HISTOGRAM: u8 = 3;

/// Payload bits of the integer counts' buckets, smallest first: Prometheus's varbit widths.
/// Bucket counts move by a few observations a step, finer than the decimal encoding's
/// widths for whole counters (measured on a 24-bucket latency histogram: 18 bytes a sample
/// against 24.5).
const COUNT_BUCKETS: [u32; 7] = [3, 6, 9, 12, 18, 25, 56];
const MODE_XOR: u8 = 0;
const MODE_INTEGER: u8 = 1;

/// Integers beyond ±2^53 are not exact as f64.
const MAX_INTEGER: f64 = 9_007_199_254_740_992.0;

/// `v` as an integer, if converting back gives exactly its bits (so never -0.0 or NaN).
fn as_integer(v: f64) -> Option<i64> {
    if !v.is_finite() || v.trunc() != v || v.abs() > MAX_INTEGER {
        return None;
    }
    let m = v as i64;
    ((m as f64).to_bits() == v.to_bits()).then_some(m)
}

/// A sample's counts in stream order: total, zero bucket, positive then negative buckets.
fn counts(h: &Histogram) -> impl Iterator<Item = f64> + '_ {
    [h.count, h.zero_count]
        .into_iter()
        .chain(h.positive_buckets.iter().copied())
        .chain(h.negative_buckets.iter().copied())
}

fn same_layout(a: &Histogram, b: &Histogram) -> bool {
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && a.positive_buckets.len() == b.positive_buckets.len()
        && a.negative_buckets.len() == b.negative_buckets.len()
        && a.custom_values.len() == b.custom_values.len()
        && a.custom_values
            .iter()
            .zip(&b.custom_values)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

fn layout_bytes(h: &Histogram) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, zigzag(i64::from(h.schema)));
    out.extend_from_slice(&h.zero_threshold.to_bits().to_le_bytes());
    for spans in [&h.positive_spans, &h.negative_spans] {
        put_uvarint(&mut out, spans.len() as u64);
        for s in spans {
            put_uvarint(&mut out, zigzag(i64::from(s.offset)));
            put_uvarint(&mut out, u64::from(s.length));
        }
    }
    put_uvarint(&mut out, h.custom_values.len() as u64);
    for v in &h.custom_values {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    put_uvarint(&mut out, h.positive_buckets.len() as u64);
    put_uvarint(&mut out, h.negative_buckets.len() as u64);
    out
}

/// The bucket layout a run of samples shares, as decoded.
#[derive(Default)]
struct Layout {
    schema: i32,
    zero_threshold: f64,
    positive_spans: Vec<HistogramSpan>,
    negative_spans: Vec<HistogramSpan>,
    custom_values: Vec<f64>,
    positive_len: usize,
    negative_len: usize,
}

impl Layout {
    /// Parses [`layout_bytes`]; `budget` bounds the bucket counts (every count costs at least
    /// one bit of the rest of the stream), so a corrupt length cannot allocate.
    fn parse(bytes: &[u8], budget: usize) -> Option<Layout> {
        let mut c = Cursor::new(bytes);
        let f64_at = |c: &mut Cursor| -> Option<f64> {
            let mut v = [0u8; 8];
            for b in &mut v {
                *b = c.u8()?;
            }
            Some(f64::from_bits(u64::from_le_bytes(v)))
        };
        let schema = i32::try_from(unzigzag(c.uvarint()?)).ok()?;
        let zero_threshold = f64_at(&mut c)?;
        let mut spans = || -> Option<Vec<HistogramSpan>> {
            let n = usize::try_from(c.uvarint()?).ok()?;
            if n > c.rest().len() / 2 {
                return None;
            }
            (0..n)
                .map(|_| {
                    Some(HistogramSpan {
                        offset: i32::try_from(unzigzag(c.uvarint()?)).ok()?,
                        length: u32::try_from(c.uvarint()?).ok()?,
                    })
                })
                .collect()
        };
        let positive_spans = spans()?;
        let negative_spans = spans()?;
        let n = usize::try_from(c.uvarint()?).ok()?;
        if n > c.rest().len() / 8 {
            return None;
        }
        let custom_values = (0..n).map(|_| f64_at(&mut c)).collect::<Option<_>>()?;
        let positive_len = usize::try_from(c.uvarint()?).ok()?;
        let negative_len = usize::try_from(c.uvarint()?).ok()?;
        if !c.is_empty() || positive_len.checked_add(negative_len)? > budget {
            return None;
        }
        Some(Layout {
            schema,
            zero_threshold,
            positive_spans,
            negative_spans,
            custom_values,
            positive_len,
            negative_len,
        })
    }
}

/// Encodes `samples` (sorted by t, 1 to [`MAX_SAMPLES`] of them) as one stored chunk.
pub(crate) fn encode(samples: &[HistogramSample]) -> Vec<u8> {
    debug_assert!(!samples.is_empty() && samples.len() <= usize::from(MAX_SAMPLES));
    let integer = samples
        .iter()
        .all(|s| counts(&s.h).all(|v| as_integer(v).is_some()));
    let mut bw = BitWriter::default();
    let mut times = TimeWriter::default();
    let mut sum = XorWriter::NEW;
    // Per count: (last value, last delta) in integer mode, the XOR state otherwise.
    let mut ints: Vec<(i64, i64)> = Vec::new();
    let mut xors: Vec<XorWriter> = Vec::new();
    let mut prev: Option<&Histogram> = None;
    for s in samples {
        let first = times.write(&mut bw, s.t);
        let new_layout = prev.is_none_or(|p| !same_layout(p, &s.h));
        if !first {
            bw.write_bit(new_layout);
        }
        if new_layout {
            let bytes = layout_bytes(&s.h);
            write_bucketed(&mut bw, bytes.len() as i64, &COUNT_BUCKETS);
            for b in bytes {
                bw.write_bits(u64::from(b), 8);
            }
            let n = counts(&s.h).count();
            ints = vec![(0, 0); n];
            xors = vec![XorWriter::NEW; n];
        }
        match s.h.counter_reset_hint {
            hint @ 0..=2 => bw.write_bits(u64::from(hint), 2),
            hint => {
                bw.write_bits(3, 2);
                bw.write_bits(u64::from(hint), 8);
            }
        }
        sum.write(&mut bw, s.h.sum.to_bits());
        for (i, v) in counts(&s.h).enumerate() {
            match as_integer(v).filter(|_| integer) {
                Some(m) => {
                    let (last, delta) = &mut ints[i];
                    let d = m.wrapping_sub(*last);
                    write_bucketed(&mut bw, d.wrapping_sub(*delta), &COUNT_BUCKETS);
                    (*last, *delta) = (m, d);
                }
                None => xors[i].write(&mut bw, v.to_bits()),
            }
        }
        prev = Some(&s.h);
    }
    let (min_t, max_t) = (samples[0].t, samples[samples.len() - 1].t);
    let mut out = Vec::with_capacity(bw.bytes.len() + 16);
    out.push(ENCODING_HISTOGRAM);
    put_uvarint(&mut out, samples.len() as u64);
    put_uvarint(&mut out, max_t.wrapping_sub(min_t) as u64);
    out.push(if integer { MODE_INTEGER } else { MODE_XOR });
    out.extend_from_slice(&bw.bytes);
    out
}

/// A stored histogram chunk, parsed just far enough to know where it ends.
pub(crate) struct HistogramChunk<'a> {
    count: u16,
    max_t: i64,
    integer: bool,
    data: &'a [u8],
}

impl<'a> HistogramChunk<'a> {
    pub(crate) fn parse(value: &'a [u8]) -> Result<HistogramChunk<'a>, CorruptChunk> {
        let mut c = Cursor::new(value);
        if c.u8() != Some(ENCODING_HISTOGRAM) {
            return Err(CorruptChunk("not a histogram chunk"));
        }
        let (count, span) = read_count_and_span(&mut c)?;
        if count == 0 {
            return Err(CorruptChunk("empty histogram chunk"));
        }
        let integer = match c.u8() {
            Some(MODE_XOR) => false,
            Some(MODE_INTEGER) => true,
            _ => return Err(CorruptChunk("bad histogram mode")),
        };
        let data = c.rest();
        let min_t = i64::from_be_bytes(
            *data
                .first_chunk::<8>()
                .ok_or(CorruptChunk("truncated data"))?,
        );
        Ok(HistogramChunk {
            count,
            max_t: min_t.wrapping_add(span as i64),
            integer,
            data,
        })
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    pub(crate) fn max_t(&self) -> i64 {
        self.max_t
    }

    pub(crate) fn iter(&self) -> HistogramIter<'a> {
        Samples {
            decoder: HistogramDecoder {
                ts: Timestamps::new(self.data),
                integer: self.integer,
                layout: Layout::default(),
                sum: XorReader::default(),
                ints: Vec::new(),
                xors: Vec::new(),
            },
            remaining: self.count,
        }
    }
}

pub(crate) type HistogramIter<'a> = Samples<HistogramDecoder<'a>>;

pub(crate) struct HistogramDecoder<'a> {
    ts: Timestamps<'a>,
    integer: bool,
    layout: Layout,
    sum: XorReader,
    ints: Vec<(i64, i64)>,
    xors: Vec<XorReader>,
}

impl HistogramDecoder<'_> {
    fn read_layout(&mut self) -> Option<()> {
        let r = &mut self.ts.r;
        let len = usize::try_from(read_bucketed(r, &COUNT_BUCKETS)?).ok()?;
        if len > remaining_bits(r) / 8 {
            return None;
        }
        let bytes: Vec<u8> = (0..len)
            .map(|_| r.read_bits(8).map(|b| b as u8))
            .collect::<Option<_>>()?;
        self.layout = Layout::parse(&bytes, remaining_bits(r))?;
        let n = 2 + self.layout.positive_len + self.layout.negative_len;
        self.ints = vec![(0, 0); n];
        self.xors = vec![XorReader::default(); n];
        Some(())
    }

    fn read_count(&mut self, i: usize) -> Option<f64> {
        let r = &mut self.ts.r;
        if self.integer {
            let (last, delta) = &mut self.ints[i];
            *delta = delta.wrapping_add(read_bucketed(r, &COUNT_BUCKETS)?);
            *last = last.wrapping_add(*delta);
            Some(*last as f64)
        } else {
            self.xors[i].read(r).map(f64::from_bits)
        }
    }
}

fn remaining_bits(r: &BitReader<'_>) -> usize {
    (r.data.len() * 8).saturating_sub(r.pos)
}

impl Decode for HistogramDecoder<'_> {
    type Item = HistogramSample;

    fn decode(&mut self) -> Option<HistogramSample> {
        let first = self.ts.next()?;
        if first || self.ts.r.read_bit()? {
            self.read_layout()?;
        }
        let r = &mut self.ts.r;
        let counter_reset_hint = match r.read_bits(2)? as u8 {
            3 => r.read_bits(8)? as u8,
            hint => hint,
        };
        let sum = f64::from_bits(self.sum.read(r)?);
        let count = self.read_count(0)?;
        let zero_count = self.read_count(1)?;
        let (pos, neg) = (self.layout.positive_len, self.layout.negative_len);
        let positive_buckets = (2..2 + pos)
            .map(|i| self.read_count(i))
            .collect::<Option<_>>()?;
        let negative_buckets = (2 + pos..2 + pos + neg)
            .map(|i| self.read_count(i))
            .collect::<Option<_>>()?;
        let l = &self.layout;
        Some(HistogramSample {
            t: self.ts.t,
            h: Histogram {
                counter_reset_hint,
                schema: l.schema,
                zero_threshold: l.zero_threshold,
                zero_count,
                count,
                sum,
                positive_spans: l.positive_spans.clone(),
                positive_buckets,
                negative_spans: l.negative_spans.clone(),
                negative_buckets,
                custom_values: l.custom_values.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span() -> impl Strategy<Value = HistogramSpan> {
        (-3i32..3, 0u32..4).prop_map(|(offset, length)| HistogramSpan { offset, length })
    }

    fn count() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => (0u32..1_000_000).prop_map(f64::from),
            1 => any::<f64>(),
            1 => Just(-0.0),
            1 => Just(f64::from_bits(crate::STALE_NAN_BITS)),
        ]
    }

    prop_compose! {
        fn histogram()(
            hint in prop_oneof![0u8..3, any::<u8>()],
            schema in prop_oneof![Just(3i32), -53i32..9],
            zero_threshold in prop_oneof![Just(1e-128), any::<f64>()],
            scalars in proptest::array::uniform3(count()),
            ps in proptest::collection::vec(span(), 0..3),
            ns in proptest::collection::vec(span(), 0..2),
            pb in proptest::collection::vec(count(), 0..6),
            nb in proptest::collection::vec(count(), 0..3),
            cv in proptest::collection::vec(any::<f64>(), 0..3),
        ) -> Histogram {
            Histogram {
                counter_reset_hint: hint, schema, zero_threshold,
                zero_count: scalars[0], count: scalars[1], sum: scalars[2],
                positive_spans: ps, positive_buckets: pb, negative_spans: ns, negative_buckets: nb,
                custom_values: cv,
            }
        }
    }

    fn decode(value: &[u8]) -> Vec<HistogramSample> {
        let chunk = HistogramChunk::parse(value).expect("parses");
        chunk.iter().collect::<Result<_, _>>().expect("decodes")
    }

    /// A histogram like a request-duration one: 12 buckets, each growing by its own rate.
    fn steady(i: u32) -> Histogram {
        let buckets: Vec<f64> = (0..12u32).map(|b| f64::from(i * (b % 5 + 1))).collect();
        Histogram {
            schema: 3,
            zero_threshold: 1e-128,
            count: buckets.iter().sum(),
            sum: f64::from(i) * 0.37,
            positive_spans: vec![HistogramSpan {
                offset: -2,
                length: 12,
            }],
            positive_buckets: buckets,
            ..Histogram::default()
        }
    }

    #[test]
    fn a_steady_integer_histogram_takes_a_few_bytes_a_sample() {
        let samples: Vec<HistogramSample> = (0..120u32)
            .map(|i| HistogramSample {
                t: i64::from(i) * 15_000,
                h: steady(i),
            })
            .collect();
        let stored = encode(&samples);
        let back = decode(&stored);
        assert!(back
            .iter()
            .zip(&samples)
            .all(|(a, b)| a.t == b.t && a.h.same_as(&b.h)));
        // The per-sample form (`Histogram::encode`) takes 8 bytes a count, ~150 here.
        let per_sample = stored.len() as f64 / samples.len() as f64;
        assert!(per_sample < 12.0, "{per_sample} bytes/sample");
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let samples: Vec<HistogramSample> = (0..5u32)
            .map(|i| HistogramSample {
                t: i64::from(i),
                h: steady(i),
            })
            .collect();
        let stored = encode(&samples);
        for cut in 0..stored.len() {
            if let Ok(chunk) = HistogramChunk::parse(&stored[..cut]) {
                assert!(chunk.iter().any(|s| s.is_err()), "cut at {cut}");
            }
        }
        assert!(HistogramChunk::parse(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn round_trips_bit_exactly(
            start in any::<i64>(),
            steps in proptest::collection::vec((0i64..100_000, histogram(), any::<bool>()), 1..40),
        ) {
            // Layout changes are rarer than value changes: repeat the previous layout with
            // new counts half of the time.
            let mut samples: Vec<HistogramSample> = Vec::new();
            let mut t = start;
            for (d, mut h, keep_layout) in steps {
                t = t.wrapping_add(d);
                if let (true, Some(prev)) = (keep_layout, samples.last()) {
                    let p = &prev.h;
                    h.schema = p.schema;
                    h.zero_threshold = p.zero_threshold;
                    h.positive_spans = p.positive_spans.clone();
                    h.negative_spans = p.negative_spans.clone();
                    h.custom_values = p.custom_values.clone();
                    h.positive_buckets.resize(p.positive_buckets.len(), 1.0);
                    h.negative_buckets.resize(p.negative_buckets.len(), 2.0);
                }
                samples.push(HistogramSample { t, h });
            }
            let stored = encode(&samples);
            let chunk = HistogramChunk::parse(&stored).expect("parses");
            prop_assert_eq!(chunk.max_t(), samples[samples.len() - 1].t);
            let back = decode(&stored);
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                prop_assert_eq!(a.t, b.t);
                prop_assert!(a.h.same_as(&b.h), "{:?} != {:?}", a.h, b.h);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(chunk) = HistogramChunk::parse(&bytes) {
                for s in chunk.iter() {
                    if s.is_err() {
                        break;
                    }
                }
            }
        }
    }
}
