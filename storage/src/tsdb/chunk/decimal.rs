//! The decimal chunk encoding, for chunks whose every value is a decimal number of at most 15
//! fractional digits (what exporters print: counters like `12345.67`, integer byte counts,
//! gauges like `0.25`). Each value is stored as an integer mantissa `m` with one scale `k`
//! for the whole chunk (value = m / 10^k), the mantissas as deltas or deltas of deltas in
//! bucketed bit widths, the timestamps exactly as the XOR encoding stores them. A counter's
//! XOR'd float bits keep some 40 significant bits a sample; its mantissa's deltas fit in a
//! dozen.
//!
//! Chunks are no longer written in this form (the `packed` encoding took its place, smaller
//! wherever this one applies); it is read for what earlier versions stored.
//!
//! Owns this format only. A chunk was encoded this way only when decoding gives back every
//! value's bits exactly (checked value by value with the very arithmetic the decoder uses),
//! so NaNs, infinities and -0.0 never are; the caller keeps the XOR form otherwise.

#[cfg(test)]
use super::{bucketed_len, write_bucketed, BitWriter, TimeWriter, ENCODING_DECIMAL};
use super::{read_bucketed, CorruptChunk, Decode, Samples, Timestamps};
#[cfg(test)]
use crate::encoding::put_uvarint;
use crate::Sample;

/// Payload bits of the mantissa buckets, smallest first.
const VALUE_BUCKETS: [u32; 4] = [8, 16, 24, 32];

/// Powers of ten that are exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Mantissas beyond ±2^53 are not exact as f64.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// The mode byte: the scale in the low bits, this bit set when mantissas are stored as deltas
/// of deltas (counters) rather than deltas (gauges).
const DOD_MODE: u8 = 0x80;

/// How the values of one decimal chunk are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mode {
    scale: u8,
    dod: bool,
}

impl Mode {
    pub(super) fn parse(byte: u8) -> Result<Mode, CorruptChunk> {
        let scale = byte & !DOD_MODE;
        check_scale(scale)?;
        Ok(Mode {
            scale,
            dod: byte & DOD_MODE != 0,
        })
    }

    #[cfg(test)]
    fn byte(self) -> u8 {
        self.scale | if self.dod { DOD_MODE } else { 0 }
    }
}

/// The value of mantissa `m` at scale `k`: the decoder's arithmetic, which the encoder checks.
pub(super) fn value(m: i64, k: usize) -> f64 {
    if k == 0 {
        m as f64
    } else {
        m as f64 / POW10[k]
    }
}

/// The mantissa of `bits` at scale `k`, if decoding it gives back exactly `bits`.
fn mantissa(bits: u64, k: usize) -> Option<i64> {
    near(bits, k).and_then(|(m, correction)| (correction == 0).then_some(m))
}

/// The smallest scale k at which every value of `samples` is a mantissa m (value = m /
/// 10^k) that decodes back to exactly its bits, and those mantissas.
pub(super) fn mantissas(samples: &[(i64, u64)]) -> Option<(u8, Vec<i64>)> {
    (0..POW10.len()).find_map(|k| {
        let ms: Option<Vec<i64>> = samples.iter().map(|&(_, bits)| mantissa(bits, k)).collect();
        ms.map(|ms| (k as u8, ms))
    })
}

/// The mantissa of `bits` rounded at scale `k`, and the correction that gives back exactly
/// `bits` from it: `bits` minus the bits of the mantissa's value, as integers (see
/// `packed`). `None` for a value that is not finite or whose mantissa is beyond ±2^53.
pub(super) fn near(bits: u64, k: usize) -> Option<(i64, i64)> {
    let v = f64::from_bits(bits);
    if !v.is_finite() {
        return None;
    }
    let m = (v * POW10[k]).round();
    if m.abs() > MAX_MANTISSA {
        return None;
    }
    let m = m as i64;
    Some((m, (bits as i64).wrapping_sub(value(m, k).to_bits() as i64)))
}

/// The scales a chunk can be stored at.
pub(super) const SCALES: usize = POW10.len();

/// A stored scale byte, checked.
pub(super) fn check_scale(scale: u8) -> Result<usize, CorruptChunk> {
    match usize::from(scale) {
        k if k < POW10.len() => Ok(k),
        _ => Err(CorruptChunk("bad decimal scale")),
    }
}

/// The stored form of `samples` in this encoding (header included), or `None` when some
/// value is not a decimal this encoding gives back exactly: the writer of earlier versions,
/// kept to test the reader with.
#[cfg(test)]
pub(super) fn encode(samples: &[(i64, u64)]) -> Option<Vec<u8>> {
    let (first, last) = (samples.first()?, samples.last()?);
    let count = u16::try_from(samples.len()).ok()?;
    let (scale, mantissas) = mantissas(samples)?;
    let deltas: Vec<i64> = mantissas
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .collect();
    // The first delta counts as a change from a delta of 0.
    let dods: Vec<i64> = deltas
        .first()
        .copied()
        .into_iter()
        .chain(deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])))
        .collect();
    let cost = |vs: &[i64]| -> u32 { vs.iter().map(|&v| bucketed_len(v, &VALUE_BUCKETS)).sum() };
    let dod = cost(&dods) < cost(&deltas);
    let mode = Mode { scale, dod };

    let mut bw = BitWriter::default();
    let mut times = TimeWriter::default();
    times.write(&mut bw, first.0);
    bw.write_bits(mantissas[0] as u64, 64);
    let values = if dod { dods } else { deltas };
    for (&(t, _), v) in samples[1..].iter().zip(values) {
        times.write(&mut bw, t);
        write_bucketed(&mut bw, v, &VALUE_BUCKETS);
    }
    let mut out = Vec::with_capacity(bw.bytes.len() + 16);
    out.push(ENCODING_DECIMAL);
    put_uvarint(&mut out, u64::from(count));
    put_uvarint(&mut out, last.0.wrapping_sub(first.0) as u64);
    out.push(mode.byte());
    out.extend_from_slice(&bw.bytes);
    Some(out)
}

pub(crate) type DecimalIter<'a> = Samples<Decoder<'a>>;

pub(crate) struct Decoder<'a> {
    ts: Timestamps<'a>,
    mode: Mode,
    m: i64,
    m_delta: i64,
}

impl<'a> DecimalIter<'a> {
    pub(super) fn new(data: &'a [u8], count: u16, mode: Mode) -> DecimalIter<'a> {
        Samples {
            decoder: Decoder {
                ts: Timestamps::new(data),
                mode,
                m: 0,
                m_delta: 0,
            },
            remaining: count,
        }
    }
}

impl Decode for Decoder<'_> {
    type Item = Sample;

    fn decode(&mut self) -> Option<Sample> {
        if self.ts.next()? {
            self.m = self.ts.r.read_bits(64)? as i64;
        } else {
            let v = read_bucketed(&mut self.ts.r, &VALUE_BUCKETS)?;
            self.m_delta = if self.mode.dod {
                self.m_delta.wrapping_add(v)
            } else {
                v
            };
            self.m = self.m.wrapping_add(self.m_delta);
        }
        Some(Sample {
            t: self.ts.t,
            v: value(self.m, usize::from(self.mode.scale)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_decimals_qualify() {
        assert_eq!(mantissa(12345.67f64.to_bits(), 2), Some(1_234_567));
        assert_eq!(mantissa(12345.67f64.to_bits(), 1), None);
        assert_eq!(mantissa(0.1f64.to_bits(), 1), Some(1));
        assert_eq!(mantissa(4096.0f64.to_bits(), 0), Some(4096));
        for bits in [
            f64::NAN.to_bits(),
            crate::STALE_NAN_BITS,
            f64::INFINITY.to_bits(),
            (-0.0f64).to_bits(),
        ] {
            assert!(
                (0..POW10.len()).all(|k| mantissa(bits, k).is_none()),
                "{bits:x}"
            );
        }
        assert_eq!(mantissa(((1u64 << 60) as f64).to_bits(), 0), None);
        assert!(encode(&[(0, 1.0f64.to_bits()), (1, (1.0f64 / 3.0).to_bits())]).is_none());
    }
}
