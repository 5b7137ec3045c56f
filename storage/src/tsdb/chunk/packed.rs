//! The packed chunk encoding, what a complete chunk of decimal values is stored in: the
//! timestamps and the values' integer mantissas (value = m / 10^k, one scale k per chunk, as
//! in the `decimal` encoding) as two columns of integers, each stored in the cheapest of four
//! forms: deltas or deltas of deltas, written either fixed-width above their minimum in units
//! of their greatest common divisor (frame of reference), or in the bucketed variable-length
//! code the other encodings use.
//!
//! Why: what exporters send changes by bounded random amounts (a counter by 0.75–2.25 MB a
//! scrape, a gauge by a few pages of 4096 bytes), so the residuals are close to uniform over a
//! range, for which a fixed width of log2(range) bits is as small as any code gets; the
//! bucketed code rounds each up to 8, 16, 24 or 32 bits plus its prefix, and a divisor that
//! all residuals share (4096 for memory gauges) is bits no code without it can drop. Regular
//! scrapes leave a timestamp column of zero-width residuals: a header and no bits.
//!
//! Values that are not exact decimals, such as sums of decimals carrying float rounding
//! errors (0.1 + 0.2 = 0.30000000000000004, a `_sum` of observed latencies), are stored as
//! the mantissas of the nearest decimals plus a third column of corrections: each value's
//! bits minus its decimal's, as integers, a few units in the last place. Decoding adds them
//! back, so every finite value round-trips bit-exactly; the scale taken is the one whose two
//! columns are smallest. Without it such a series stays in the XOR form at 6 bytes a sample.
//!
//! Owns this format only. A chunk is stored this way only when every value decodes back to
//! exactly its bits (any finite value with a mantissa within ±2^53); the caller keeps the XOR
//! form otherwise, or when it is smaller.
//!
//! Layout after the common header (encoding byte, count, max t − min t): min t (8 bytes,
//! big-endian, where every stored chunk has it), the time column, the value scale (one
//! byte; its top bit set when corrections follow), the first mantissa (zigzag varint), the
//! value column, then the corrections' column if any. A column: a form byte (bit 0: deltas
//! of deltas, bit 1: bucketed, bit 2: the residuals are the values themselves), for deltas of
//! deltas the first delta (zigzag varint), for the fixed-width form the minimum (zigzag
//! varint), the width (one byte) and, when the width is not 0, the divisor (varint); then the
//! residual bits, byte-length prefixed.

use super::{
    bucketed_len, decimal, read_bucketed, write_bucketed, BitReader, BitWriter, CorruptChunk,
    Decode, Samples, DOD_BUCKETS, ENCODING_PACKED,
};
use crate::encoding::{put_uvarint, unzigzag, zigzag, Cursor};
use crate::Sample;

/// Payload bits of the value column's buckets, when the bucketed form is the cheaper.
const VALUE_BUCKETS: [u32; 4] = [8, 16, 24, 32];

const FORM_DOD: u8 = 1;
const FORM_BUCKETED: u8 = 2;
const FORM_RAW: u8 = 4;

/// Set in the scale byte when a column of corrections follows the values.
const SCALE_CORRECTED: u8 = 0x80;

/// The stored form of `samples` in this encoding (header included), or `None` when some
/// value is not one this encoding gives back exactly.
pub(super) fn encode(samples: &[(i64, u64)]) -> Option<Vec<u8>> {
    let (first, last) = (samples.first()?, samples.last()?);
    let count = u16::try_from(samples.len()).ok()?;
    let (scale, mantissas, corrections) = match decimal::mantissas(samples) {
        Some((scale, mantissas)) => (scale, mantissas, None),
        None => {
            let (scale, mantissas, corrections) = near_decimals(samples)?;
            (scale | SCALE_CORRECTED, mantissas, Some(corrections))
        }
    };
    let times: Vec<i64> = samples.iter().map(|&(t, _)| t).collect();
    let mut out = Vec::with_capacity(32 + samples.len() * 2);
    out.push(ENCODING_PACKED);
    put_uvarint(&mut out, u64::from(count));
    put_uvarint(&mut out, last.0.wrapping_sub(first.0) as u64);
    out.extend_from_slice(&first.0.to_be_bytes());
    write_column(&mut out, &times, &DOD_BUCKETS);
    out.push(scale);
    put_uvarint(&mut out, zigzag(mantissas[0]));
    write_column(&mut out, &mantissas, &VALUE_BUCKETS);
    if let Some(corrections) = corrections {
        // Independent of each other: stored as they are, fixed-width above their minimum.
        let at = out.len();
        Form::of(None, &corrections, false).write(&mut out, &corrections, &VALUE_BUCKETS);
        out[at] |= FORM_RAW;
    }
    Some(out)
}

/// For values that are not all exact decimals: the scale, mantissas and corrections (see
/// the module doc) whose fixed-width columns take the fewest bits, or `None` when some value
/// is not finite or too large for a mantissa.
fn near_decimals(samples: &[(i64, u64)]) -> Option<(u8, Vec<i64>, Vec<i64>)> {
    let fixed_bits = |xs: &mut dyn Iterator<Item = i64>| -> u64 {
        let (mut lo, mut hi, mut n) = (i64::MAX, i64::MIN, 0u64);
        for x in xs {
            (lo, hi, n) = (lo.min(x), hi.max(x), n + 1);
        }
        let range = if n == 0 {
            0
        } else {
            hi.wrapping_sub(lo) as u64
        };
        n * u64::from(64 - range.leading_zeros())
    };
    let mut best: Option<(u64, u8, Vec<i64>, Vec<i64>)> = None;
    for k in 0..decimal::SCALES {
        // A larger scale only makes mantissas larger: once one is out of range, all are.
        let Some(pairs) = samples
            .iter()
            .map(|&(_, bits)| decimal::near(bits, k))
            .collect::<Option<Vec<_>>>()
        else {
            break;
        };
        let (mantissas, corrections): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
        let cost = fixed_bits(&mut mantissas.windows(2).map(|w| w[1].wrapping_sub(w[0])))
            + fixed_bits(&mut corrections.iter().copied());
        if best.as_ref().is_none_or(|b| cost < b.0) {
            best = Some((cost, k as u8, mantissas, corrections));
        }
    }
    best.map(|(_, k, mantissas, corrections)| (k, mantissas, corrections))
}

/// Appends the column of `xs` (whose first value the reader already knows) in its cheapest
/// form. The four forms are sized first and only the smallest is written (the first of
/// equals, in the order deltas, deltas of deltas, each fixed-width then bucketed), rather
/// than all four written to compare their lengths: every persisted chunk comes through here.
fn write_column(out: &mut Vec<u8>, xs: &[i64], buckets: &[u32]) {
    let deltas: Vec<i64> = xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    // Deltas of deltas start from the first delta, stored as it is.
    let dods: Option<(i64, Vec<i64>)> = deltas.first().map(|&d0| {
        (
            d0,
            deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect(),
        )
    });
    let mut best: Option<(usize, Form, &[i64])> = None;
    for bucketed in [false, true] {
        let candidates = [
            Some((None, &deltas[..])),
            dods.as_ref().map(|(d0, r)| (Some(*d0), &r[..])),
        ];
        for (first_delta, residuals) in candidates.into_iter().flatten() {
            let form = Form::of(first_delta, residuals, bucketed);
            let len = form.len(residuals, buckets);
            if best.as_ref().is_none_or(|(b, _, _)| len < *b) {
                best = Some((len, form, residuals));
            }
        }
    }
    if let Some((_, form, residuals)) = best {
        form.write(out, residuals, buckets);
    }
}

/// One form of a column (see the module doc), decided before it is written.
struct Form {
    /// Set for deltas of deltas.
    first_delta: Option<i64>,
    /// `None` for the bucketed code; else the fixed width's minimum, divisor and width.
    fixed: Option<(i64, u64, u32)>,
}

impl Form {
    fn of(first_delta: Option<i64>, residuals: &[i64], bucketed: bool) -> Form {
        let fixed = (!bucketed).then(|| {
            let min = residuals.iter().copied().min().unwrap_or(0);
            // Offsets from the minimum as unsigned: a wrapped difference of two i64s fits.
            let offsets = residuals.iter().map(|&r| r.wrapping_sub(min) as u64);
            // Once the divisor is 1 it stays 1: no more divisions.
            let divisor_of = |g, o| if g == 1 { 1 } else { gcd(g, o) };
            let (divisor, max) = offsets.fold((0, 0), |(g, m), o| (divisor_of(g, o), m.max(o)));
            let width = match divisor {
                0 => 0,
                g => 64 - (max / g).leading_zeros(),
            };
            (min, divisor, width)
        });
        Form { first_delta, fixed }
    }

    /// The bytes [`Form::write`] appends.
    fn len(&self, residuals: &[i64], buckets: &[u32]) -> usize {
        let mut len = 1 + self.first_delta.map_or(0, |d0| uvarint_len(zigzag(d0)));
        let bits = match self.fixed {
            None => residuals
                .iter()
                .map(|&r| bucketed_len(r, buckets) as usize)
                .sum(),
            Some((min, divisor, width)) => {
                len += uvarint_len(zigzag(min)) + 1;
                if width > 0 {
                    len += uvarint_len(divisor);
                }
                residuals.len() * width as usize
            }
        };
        let bytes = bits.div_ceil(8);
        len + uvarint_len(bytes as u64) + bytes
    }

    fn write(&self, out: &mut Vec<u8>, residuals: &[i64], buckets: &[u32]) {
        let mut bw = BitWriter::default();
        let dod = if self.first_delta.is_some() {
            FORM_DOD
        } else {
            0
        };
        let bucketed = if self.fixed.is_none() {
            FORM_BUCKETED
        } else {
            0
        };
        out.push(dod | bucketed);
        if let Some(d0) = self.first_delta {
            put_uvarint(out, zigzag(d0));
        }
        match self.fixed {
            None => {
                let bits: u32 = residuals.iter().map(|&r| bucketed_len(r, buckets)).sum();
                bw.bytes.reserve(bits.div_ceil(8) as usize);
                for &r in residuals {
                    write_bucketed(&mut bw, r, buckets);
                }
            }
            Some((min, divisor, width)) => {
                put_uvarint(out, zigzag(min));
                out.push(width as u8);
                if width > 0 {
                    put_uvarint(out, divisor);
                    bw.bytes
                        .reserve((residuals.len() * width as usize).div_ceil(8));
                    for &r in residuals {
                        let o = r.wrapping_sub(min) as u64;
                        // Most columns share no divisor: spare them a division each.
                        bw.write_bits(if divisor == 1 { o } else { o / divisor }, width);
                    }
                }
            }
        }
        put_uvarint(out, bw.bytes.len() as u64);
        out.extend_from_slice(&bw.bytes);
    }
}

/// The bytes `put_uvarint` takes for `v`.
fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How a column's residuals are read.
#[derive(Clone, Copy)]
enum Residuals {
    Fixed { min: i64, divisor: u64, width: u32 },
    Bucketed(&'static [u32]),
}

/// Reads one column back, value by value.
#[derive(Clone)]
struct Column<'a> {
    bits: BitReader<'a>,
    residuals: Residuals,
    /// The first delta for deltas of deltas.
    first_delta: Option<i64>,
    /// Residuals are the values themselves, not deltas.
    raw: bool,
    x: i64,
    delta: i64,
    read: u16,
}

impl<'a> Column<'a> {
    fn parse(
        c: &mut Cursor<'a>,
        first: i64,
        buckets: &'static [u32],
    ) -> Result<Column<'a>, CorruptChunk> {
        let bad = || CorruptChunk("bad packed column");
        let form = c.u8().ok_or_else(bad)?;
        if form & !(FORM_DOD | FORM_BUCKETED | FORM_RAW) != 0
            || form & (FORM_DOD | FORM_RAW) == FORM_DOD | FORM_RAW
        {
            return Err(bad());
        }
        let first_delta = if form & FORM_DOD != 0 {
            Some(unzigzag(c.uvarint().ok_or_else(bad)?))
        } else {
            None
        };
        let residuals = if form & FORM_BUCKETED != 0 {
            Residuals::Bucketed(buckets)
        } else {
            let min = unzigzag(c.uvarint().ok_or_else(bad)?);
            let width = u32::from(c.u8().ok_or_else(bad)?);
            if width > 64 {
                return Err(bad());
            }
            let divisor = if width > 0 {
                c.uvarint().ok_or_else(bad)?
            } else {
                0
            };
            Residuals::Fixed {
                min,
                divisor,
                width,
            }
        };
        let data = c.bytes().ok_or_else(bad)?;
        Ok(Column {
            bits: BitReader { data, pos: 0 },
            residuals,
            first_delta,
            raw: form & FORM_RAW != 0,
            x: first,
            delta: 0,
            read: 0,
        })
    }

    fn residual(&mut self) -> Option<i64> {
        match self.residuals {
            Residuals::Fixed {
                min,
                divisor,
                width,
            } => Some(min.wrapping_add(self.bits.read_bits(width)?.wrapping_mul(divisor) as i64)),
            Residuals::Bucketed(buckets) => read_bucketed(&mut self.bits, buckets),
        }
    }

    fn next(&mut self) -> Option<i64> {
        if self.raw {
            self.x = self.residual()?;
            return Some(self.x);
        }
        self.delta = match (self.read, self.first_delta) {
            (0, _) => 0,
            (1, Some(d0)) => d0,
            (_, Some(_)) => self.delta.wrapping_add(self.residual()?),
            (_, None) => self.residual()?,
        };
        self.read += 1;
        self.x = self.x.wrapping_add(self.delta);
        Some(self.x)
    }
}

/// A packed chunk's columns, parsed from its data (what follows the common header).
#[derive(Clone)]
pub(crate) struct Columns<'a> {
    times: Column<'a>,
    values: Column<'a>,
    scale: usize,
    corrections: Option<Column<'a>>,
}

impl<'a> Columns<'a> {
    pub(super) fn parse(data: &'a [u8]) -> Result<Columns<'a>, CorruptChunk> {
        let (min_t, rest) = data
            .split_first_chunk::<8>()
            .ok_or(CorruptChunk("truncated data"))?;
        let mut c = Cursor::new(rest);
        let min_t = i64::from_be_bytes(*min_t);
        let times = Column::parse(&mut c, min_t, &DOD_BUCKETS)?;
        let scale = c.u8().ok_or(CorruptChunk("missing scale"))?;
        let corrected = scale & SCALE_CORRECTED != 0;
        let scale = decimal::check_scale(scale & !SCALE_CORRECTED)?;
        let first = unzigzag(c.uvarint().ok_or(CorruptChunk("missing first value"))?);
        let values = Column::parse(&mut c, first, &VALUE_BUCKETS)?;
        let corrections = corrected
            .then(|| Column::parse(&mut c, 0, &VALUE_BUCKETS))
            .transpose()?;
        Ok(Columns {
            times,
            values,
            scale,
            corrections,
        })
    }
}

pub(crate) type PackedIter<'a> = Samples<Columns<'a>>;

impl<'a> PackedIter<'a> {
    pub(super) fn new(columns: Columns<'a>, count: u16) -> PackedIter<'a> {
        Samples {
            decoder: columns,
            remaining: count,
        }
    }
}

impl Decode for Columns<'_> {
    type Item = Sample;

    fn decode(&mut self) -> Option<Sample> {
        let t = self.times.next()?;
        let m = self.values.next()?;
        let mut v = decimal::value(m, self.scale);
        if let Some(corrections) = &mut self.corrections {
            v = f64::from_bits((v.to_bits() as i64).wrapping_add(corrections.next()?) as u64);
        }
        Some(Sample { t, v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(stored: &[u8]) -> Vec<(i64, u64)> {
        super::super::StoredChunk::parse(stored)
            .expect("parses")
            .iter()
            .map(|s| s.map(|s| (s.t, s.v.to_bits())))
            .collect::<Result<_, _>>()
            .expect("decodes")
    }

    #[test]
    fn regular_scrapes_of_a_shared_step_cost_no_bits_per_sample() {
        // A memory gauge moving by whole pages, scraped every 15 s.
        let samples: Vec<(i64, u64)> = (0..120)
            .map(|i| {
                (
                    i * 15_000,
                    (8e9 + ((i * 7) % 9 - 4) as f64 * 4096.0).to_bits(),
                )
            })
            .collect();
        let stored = encode(&samples).expect("decimal");
        assert_eq!(decode(&stored), samples);
        // Header and two column headers, then 4 bits a sample for nine steps of 4096.
        assert!(stored.len() <= 30 + 60, "{} bytes", stored.len());
    }

    #[test]
    fn a_missed_scrape_costs_one_bit_a_sample_not_a_wider_code() {
        let mut t = 0;
        let samples: Vec<(i64, u64)> = (0..120)
            .map(|i| {
                t += if i == 60 { 30_000 } else { 15_000 };
                (t, 1.0f64.to_bits())
            })
            .collect();
        let stored = encode(&samples).expect("decimal");
        assert_eq!(decode(&stored), samples);
        // 27 bytes of headers, then one bit per timestamp (15 s or twice that, in units
        // of 15 s) and none per value.
        assert!(
            stored.len() <= 27 + 119_usize.div_ceil(8),
            "{} bytes",
            stored.len()
        );
    }

    #[test]
    fn values_without_a_mantissa_are_refused() {
        assert!(encode(&[(0, 1.0f64.to_bits()), (1, 1e300f64.to_bits())]).is_none());
        assert!(encode(&[(0, f64::NAN.to_bits())]).is_none());
        assert!(encode(&[(0, f64::INFINITY.to_bits())]).is_none());
        assert!(encode(&[]).is_none());
    }

    #[test]
    fn sums_of_decimals_are_stored_as_decimals_with_corrections() {
        // A gauge moving by hundredths, summed in floats (ends at 8.400000000000034).
        let mut v = 10.0f64;
        let samples: Vec<(i64, u64)> = (0..120)
            .map(|i| {
                v += ((i * i * 7 + i * 3) % 9 - 4) as f64 * 0.01;
                (i * 15_000, v.to_bits())
            })
            .collect();
        assert!(decimal::mantissas(&samples).is_none(), "not exact decimals");
        let stored = encode(&samples).expect("near decimals");
        assert_eq!(decode(&stored), samples);
        let xor = crate::tsdb::chunk::XorChunk::from_samples(samples.iter().map(|&(t, b)| {
            crate::Sample {
                t,
                v: f64::from_bits(b),
            }
        }))
        .to_value();
        // Four bits of mantissa delta and a few of correction a sample, against XOR's dozens.
        assert!(stored.len() <= 40 + 120 * 10 / 8, "{} bytes", stored.len());
        assert!(
            xor.len() > 3 * stored.len(),
            "{} vs {}",
            xor.len(),
            stored.len()
        );
        // One third is no decimal at any scale; it still round-trips.
        let third = [(0, (1.0f64 / 3.0).to_bits()), (1, (2.0f64 / 3.0).to_bits())];
        assert_eq!(decode(&encode(&third).expect("finite")), third);
    }

    use proptest::prelude::*;

    proptest! {
        /// Each form is as long as sized, and a column is written in its shortest form.
        #[test]
        fn columns_take_their_shortest_form_as_sized(
            xs in proptest::collection::vec(prop_oneof![
                -3i64..3,
                (0i64..1000).prop_map(|x| x * 4096),
                any::<i64>(),
            ], 0..130),
        ) {
            let deltas: Vec<i64> = xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
            let dods: Vec<i64> = deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
            let mut shortest = usize::MAX;
            for bucketed in [false, true] {
                let mut forms = vec![(None, &deltas)];
                forms.extend(deltas.first().map(|&d0| (Some(d0), &dods)));
                for (first_delta, residuals) in forms {
                    let form = Form::of(first_delta, residuals, bucketed);
                    for buckets in [&DOD_BUCKETS[..], &VALUE_BUCKETS[..]] {
                        let mut out = Vec::new();
                        form.write(&mut out, residuals, buckets);
                        prop_assert_eq!(out.len(), form.len(residuals, buckets));
                    }
                    shortest = shortest.min(form.len(residuals, &VALUE_BUCKETS));
                }
            }
            let mut out = Vec::new();
            write_column(&mut out, &xs, &VALUE_BUCKETS);
            prop_assert_eq!(out.len(), shortest);
        }
    }
}
