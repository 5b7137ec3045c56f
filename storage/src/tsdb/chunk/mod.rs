//! The chunk codec: Gorilla compression of (timestamp, float) samples — delta-of-delta
//! timestamps and XOR'd value bits — plus the small header a stored chunk carries, and the
//! packed encoding (`packed`) a complete chunk is stored in instead when all its values are
//! decimals (a third of the XOR form's size on what exporters send, see [`compact`]); the
//! `decimal` encoding earlier versions stored such chunks in is still read.
//!
//! Owns the byte format of one chunk and nothing else: which samples go into which chunk
//! (≤ [`MAX_SAMPLES`], never across a 2h window) is the head's rule, where chunks are stored is
//! the partition module's. Values are handled as raw `u64` bit patterns end to end, so every
//! f64 (NaN payloads, the staleness marker, ±Inf, -0.0) round-trips bit-exactly. Timestamp
//! arithmetic wraps, so any i64 sequence round-trips too (the head only ever feeds sorted
//! timestamps within one 2h window, which take the short encodings).
//!
//! Timestamp buckets (delta-of-delta `d`): `0` → d = 0; `10` + 8 bits; `110` + 14 bits;
//! `1110` + 24 bits; `1111` + 64 bits. The 8-bit bucket is there for scrape jitter of a few
//! ms, the 24-bit one covers any delta inside a 2h chunk window.

use crate::encoding::{put_uvarint, Cursor};
use crate::Sample;

/// A chunk holds at most this many samples (as in Prometheus: small enough that decoding a
/// chunk to find one sample stays cheap, large enough to amortise the header).
pub(crate) const MAX_SAMPLES: u16 = 120;

/// The encoding byte at the start of a stored chunk. 0 is never written (so a zeroed value
/// is detected as corrupt); 2 is reserved for integer native histograms, 3 is the
/// [`histogram`] chunk's; 4 (decimal) is read but no longer written.
pub(crate) const ENCODING_XOR: u8 = 1;
const ENCODING_DECIMAL: u8 = 4;
pub(crate) const ENCODING_PACKED: u8 = 5;

mod decimal;
pub(crate) mod histogram;
mod packed;

pub(crate) use decimal::DecimalIter;
pub(crate) use packed::PackedIter;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt chunk: {0}")]
pub(crate) struct CorruptChunk(&'static str);

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Unused low bits in the last byte.
    free: u32,
}

impl BitWriter {
    /// Makes room for `additional` bytes, growing by a quarter (at least 16 bytes, to a
    /// multiple of 16, as the allocator's small size classes go) instead of doubling: an open
    /// chunk lives in memory for every active series, and a doubled buffer is a third empty on
    /// average, which at a million series is tens of megabytes held for nothing.
    fn reserve(&mut self, additional: usize) {
        let (len, cap) = (self.bytes.len(), self.bytes.capacity());
        if len + additional > cap {
            let target = (cap + (cap / 4).max(16))
                .max(len + additional)
                .next_multiple_of(16);
            self.bytes.reserve_exact(target - len);
        }
    }

    fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` (≤ 64) bits of `v`, most significant first: the free bits of the
    /// last byte first, then the rest as whole bytes at once (this runs for every sample
    /// appended, under the lock appends share).
    fn write_bits(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        // The bits to write, left-aligned in 128 (so that shifting by up to 64 is defined).
        let mut bits = u128::from(v) << (128 - n);
        let mut n = n;
        if self.free > 0 {
            let take = n.min(self.free);
            if let Some(last) = self.bytes.last_mut() {
                *last |= ((bits >> 120) as u8) >> (8 - self.free);
            }
            bits <<= take;
            self.free -= take;
            n -= take;
        }
        if n > 0 {
            let whole = n.div_ceil(8);
            self.reserve(whole as usize);
            self.bytes
                .extend_from_slice(&bits.to_be_bytes()[..whole as usize]);
            self.free = whole * 8 - n;
        }
    }
}

#[derive(Clone)]
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    fn read_bits(&mut self, mut n: u32) -> Option<u64> {
        if self.pos + n as usize > self.data.len() * 8 {
            return None;
        }
        // Decoding is most of a query's storage time: take the bits out of one big-endian
        // word when they lie within 8 whole bytes, byte by byte only near the end.
        let (byte, shift) = (self.pos / 8, (self.pos % 8) as u32);
        if n > 0 && shift + n <= 64 {
            if let Some(bytes) = self.data.get(byte..byte + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                self.pos += n as usize;
                return Some((u64::from_be_bytes(word) << shift) >> (64 - n));
            }
        }
        let mut v = 0u64;
        while n > 0 {
            let byte = self.data[self.pos / 8];
            let avail = 8 - (self.pos % 8) as u32;
            let take = n.min(avail);
            let bits = (u32::from(byte) >> (avail - take)) & ((1u32 << take) - 1);
            v = (v << take) | u64::from(bits);
            self.pos += take as usize;
            n -= take;
        }
        Some(v)
    }
}

/// Payload bits of the timestamp buckets, smallest first (see [`write_bucketed`]).
const DOD_BUCKETS: [u32; 3] = [8, 14, 24];

/// Writes `v` as `0` when it is 0, else as bucket i's prefix (i + 1 one bits and a zero)
/// and `v` in `buckets[i]` bits for the first bucket it fits, else as `buckets.len() + 1`
/// one bits and all 64 bits.
fn write_bucketed(bw: &mut BitWriter, v: i64, buckets: &[u32]) {
    if v == 0 {
        bw.write_bit(false);
        return;
    }
    for (i, &bits) in buckets.iter().enumerate() {
        if fits_signed(v, bits) {
            let ones = i as u32 + 1;
            bw.write_bits(((1u64 << ones) - 1) << 1, ones + 1);
            bw.write_bits(v as u64, bits);
            return;
        }
    }
    let ones = buckets.len() as u32 + 1;
    bw.write_bits((1u64 << ones) - 1, ones);
    bw.write_bits(v as u64, 64);
}

/// Reads what [`write_bucketed`] wrote with the same `buckets`.
fn read_bucketed(r: &mut BitReader<'_>, buckets: &[u32]) -> Option<i64> {
    if !r.read_bit()? {
        return Some(0);
    }
    for &bits in buckets {
        if !r.read_bit()? {
            return Some(sign_extend(r.read_bits(bits)?, bits));
        }
    }
    Some(r.read_bits(64)? as i64)
}

/// Bits [`write_bucketed`] spends on `v`.
fn bucketed_len(v: i64, buckets: &[u32]) -> u32 {
    if v == 0 {
        return 1;
    }
    for (i, &bits) in buckets.iter().enumerate() {
        if fits_signed(v, bits) {
            return i as u32 + 2 + bits;
        }
    }
    buckets.len() as u32 + 1 + 64
}

fn fits_signed(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// The writing side of [`Timestamps`] for encoders that see a chunk's samples at once: the
/// first timestamp in 64 bits, then deltas of deltas.
#[derive(Default)]
struct TimeWriter {
    started: bool,
    last_t: i64,
    last_delta: i64,
}

impl TimeWriter {
    /// Writes `t`; true when it was the chunk's first.
    fn write(&mut self, bw: &mut BitWriter, t: i64) -> bool {
        if !self.started {
            self.started = true;
            self.last_t = t;
            bw.write_bits(t as u64, 64);
            return true;
        }
        let delta = t.wrapping_sub(self.last_t);
        write_bucketed(bw, delta.wrapping_sub(self.last_delta), &DOD_BUCKETS);
        (self.last_t, self.last_delta) = (t, delta);
        false
    }
}

/// Sentinel for "no XOR window yet": forces the first non-zero XOR to carry its window.
const NO_WINDOW: u8 = 0xff;

/// A chunk being written: the live encoder of a series' open chunk, also used to build
/// out-of-order chunks. Appending is O(1) and allocation-free apart from the byte buffer's
/// amortised growth.
pub(crate) struct XorChunk {
    bw: BitWriter,
    count: u16,
    first_t: i64,
    last_t: i64,
    last_delta: i64,
    value: XorWriter,
}

/// The writing side of one value's XOR stream: the previous value's bits and the window of
/// meaningful bits the last written XOR opened. The first value is XOR'd with 0.
#[derive(Clone, Copy)]
struct XorWriter {
    last: u64,
    leading: u8,
    trailing: u8,
}

impl XorWriter {
    const NEW: XorWriter = XorWriter {
        last: 0,
        leading: NO_WINDOW,
        trailing: 0,
    };

    #[inline]
    fn write(&mut self, bw: &mut BitWriter, v: u64) {
        let xor = v ^ self.last;
        self.last = v;
        if xor == 0 {
            bw.write_bit(false);
            return;
        }
        bw.write_bit(true);
        // Leading zeros are stored in 5 bits, so at most 31 of them can be skipped.
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            bw.write_bit(false);
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            bw.write_bits(xor >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            bw.write_bit(true);
            bw.write_bits(u64::from(leading), 5);
            // sig is 1..=64; 64 does not fit in 6 bits and is written as 0.
            bw.write_bits(u64::from(sig) & 0x3f, 6);
            bw.write_bits(xor >> trailing, sig);
        }
    }
}

/// The reading side of [`XorWriter`].
#[derive(Clone, Copy, Default)]
struct XorReader {
    v: u64,
    leading: u32,
    trailing: u32,
}

impl XorReader {
    #[inline]
    fn read(&mut self, r: &mut BitReader<'_>) -> Option<u64> {
        if r.read_bit()? {
            if r.read_bit()? {
                self.leading = r.read_bits(5)? as u32;
                let sig = match r.read_bits(6)? as u32 {
                    0 => 64,
                    n => n,
                };
                self.trailing = 64u32.checked_sub(self.leading + sig)?;
            }
            // leading + trailing ≤ 63 by construction above, so 1 ≤ sig ≤ 64.
            let sig = 64 - self.leading - self.trailing;
            self.v ^= r.read_bits(sig)? << self.trailing;
        }
        Some(self.v)
    }
}

impl XorChunk {
    pub(crate) fn new() -> XorChunk {
        XorChunk::with_capacity(0)
    }

    /// An empty chunk with room for `bytes` of bit stream: a series' next chunk takes about
    /// what its last one took, and sized so it grows without the dozen reallocations and
    /// copies a 120-sample chunk costs from empty.
    pub(crate) fn with_capacity(bytes: usize) -> XorChunk {
        XorChunk {
            bw: BitWriter {
                bytes: Vec::with_capacity(bytes.next_multiple_of(16)),
                free: 0,
            },
            count: 0,
            first_t: 0,
            last_t: 0,
            last_delta: 0,
            value: XorWriter::NEW,
        }
    }

    pub(crate) fn from_samples(samples: impl IntoIterator<Item = Sample>) -> XorChunk {
        let mut c = XorChunk::new();
        for s in samples {
            c.append(s.t, s.v.to_bits());
        }
        c
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    pub(crate) fn is_full(&self) -> bool {
        self.count >= MAX_SAMPLES
    }

    pub(crate) fn min_t(&self) -> i64 {
        self.first_t
    }

    pub(crate) fn max_t(&self) -> i64 {
        self.last_t
    }

    /// Appends a sample whose value is given as raw bits. The caller keeps timestamps sorted
    /// and the count within [`MAX_SAMPLES`]; the encoding itself accepts anything.
    pub(crate) fn append(&mut self, t: i64, v: u64) {
        match self.count {
            0 => {
                self.first_t = t;
                self.bw.write_bits(t as u64, 64);
                self.bw.write_bits(v, 64);
                self.value.last = v;
            }
            _ => {
                let delta = t.wrapping_sub(self.last_t);
                write_bucketed(
                    &mut self.bw,
                    delta.wrapping_sub(self.last_delta),
                    &DOD_BUCKETS,
                );
                self.value.write(&mut self.bw, v);
                self.last_delta = delta;
            }
        }
        self.last_t = t;
        self.count += 1;
    }

    /// The last byte written, which the next append completes: read ahead of a run of
    /// appends so its cache line is loaded (see `Head::warm`).
    pub(crate) fn tail(&self) -> u8 {
        self.bw.bytes.last().copied().unwrap_or_default()
    }

    /// The samples written so far.
    pub(crate) fn iter(&self) -> XorIter<'_> {
        XorIter::new(&self.bw.bytes, self.count)
    }

    /// The stored form: header (encoding, count, max t as an offset from the first t)
    /// followed by the bit stream.
    pub(crate) fn to_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bw.bytes.len() + 8);
        self.write_stored(&mut out);
        out
    }

    /// Most bytes [`XorChunk::write_stored`] appends: the bit stream and a header of at most
    /// one byte and two 10-byte varints.
    pub(crate) fn stored_len_bound(&self) -> usize {
        self.bw.bytes.len() + 21
    }

    /// Appends the stored form (see [`XorChunk::to_value`]) to `out`.
    pub(crate) fn write_stored(&self, out: &mut Vec<u8>) {
        out.push(ENCODING_XOR);
        put_uvarint(out, u64::from(self.count));
        put_uvarint(out, self.last_t.wrapping_sub(self.first_t) as u64);
        out.extend_from_slice(&self.bw.bytes);
    }

    /// Bytes of the bit stream (without header).
    pub(crate) fn data_len(&self) -> usize {
        self.bw.bytes.len()
    }
}

/// Bytes per page of a [`ChunkArena`].
const ARENA_PAGE: usize = 1 << 20;

/// Stored chunk values copied back to back into pages: what a select holds of the series it
/// has not decoded yet (a tenth of their decoded size). Pages of fixed capacity, never
/// reallocated, so holding N bytes costs N bytes, not up to three times N while a single
/// buffer doubles.
#[derive(Default)]
pub(crate) struct ChunkArena {
    pages: Vec<Vec<u8>>,
    /// Where each value lies: page, start, end.
    spans: Vec<(u32, u32, u32)>,
}

impl ChunkArena {
    /// How many values it holds; the next one pushed gets this index.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn push(&mut self, value: &[u8]) {
        self.push_with(value.len(), |out| out.extend_from_slice(value));
    }

    /// Pushes the value `write` appends to the buffer it is given, at most `max_len` bytes.
    pub(crate) fn push_with(&mut self, max_len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let fits = self
            .pages
            .last()
            .is_some_and(|p| p.capacity() - p.len() >= max_len);
        if !fits {
            self.pages.push(Vec::with_capacity(ARENA_PAGE.max(max_len)));
        }
        let page_no = self.pages.len() - 1;
        let page = &mut self.pages[page_no];
        let start = page.len();
        write(page);
        self.spans
            .push((page_no as u32, start as u32, page.len() as u32));
    }

    /// The bytes of all values held.
    pub(crate) fn bytes(&self) -> usize {
        self.pages.iter().map(Vec::len).sum()
    }

    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let (page, start, end) = self.spans[i];
        &self.pages[page as usize][start as usize..end as usize]
    }
}

/// What every stored chunk's header holds after its encoding byte: the sample count and
/// max t − min t.
fn read_count_and_span(c: &mut Cursor<'_>) -> Result<(u16, u64), CorruptChunk> {
    let count = c
        .uvarint()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(CorruptChunk("bad count"))?;
    let span = c.uvarint().ok_or(CorruptChunk("bad max time"))?;
    Ok((count, span))
}

/// How a stored chunk's samples are encoded.
// A read parses every chunk it touches into one of these on the stack: boxing the packed
// columns would cost an allocation per chunk.
#[allow(clippy::large_enum_variant)]
enum Form<'a> {
    Xor,
    Decimal(decimal::Mode),
    Packed(packed::Columns<'a>),
}

/// A stored chunk, parsed just far enough to know its time range without decoding it.
pub(crate) struct StoredChunk<'a> {
    form: Form<'a>,
    count: u16,
    min_t: i64,
    max_t: i64,
    data: &'a [u8],
}

impl<'a> StoredChunk<'a> {
    pub(crate) fn parse(value: &'a [u8]) -> Result<StoredChunk<'a>, CorruptChunk> {
        let mut c = Cursor::new(value);
        let encoding = c.u8().ok_or(CorruptChunk("empty value"))?;
        if ![ENCODING_XOR, ENCODING_DECIMAL, ENCODING_PACKED].contains(&encoding) {
            return Err(CorruptChunk("unknown encoding"));
        }
        let (count, span) = read_count_and_span(&mut c)?;
        let form = match encoding {
            ENCODING_DECIMAL => Form::Decimal(decimal::Mode::parse(
                c.u8().ok_or(CorruptChunk("missing decimal mode"))?,
            )?),
            ENCODING_PACKED => Form::Packed(packed::Columns::parse(c.rest())?),
            _ => Form::Xor,
        };
        let data = c.rest();
        let min_t = match data.first_chunk::<8>() {
            Some(b) => i64::from_be_bytes(*b),
            None if count == 0 => 0,
            None => return Err(CorruptChunk("truncated data")),
        };
        Ok(StoredChunk {
            form,
            count,
            min_t,
            max_t: min_t.wrapping_add(span as i64),
            data,
        })
    }

    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    pub(crate) fn min_t(&self) -> i64 {
        self.min_t
    }

    pub(crate) fn max_t(&self) -> i64 {
        self.max_t
    }

    /// Appends the samples with lo ≤ t ≤ hi to `out`: what a select does with every chunk,
    /// without a per-sample `Result` or bounds check when the whole chunk is inside.
    pub(crate) fn decode_into(
        &self,
        out: &mut Vec<Sample>,
        lo: i64,
        hi: i64,
    ) -> Result<(), CorruptChunk> {
        match self.iter() {
            ChunkIter::Xor(it) => it.decode_into(out, lo, hi, self),
            ChunkIter::Decimal(it) => it.decode_into(out, lo, hi, self),
            ChunkIter::Packed(it) => it.decode_into(out, lo, hi, self),
        }
    }

    pub(crate) fn iter(&self) -> ChunkIter<'a> {
        match &self.form {
            Form::Xor => ChunkIter::Xor(XorIter::new(self.data, self.count)),
            Form::Decimal(mode) => {
                ChunkIter::Decimal(DecimalIter::new(self.data, self.count, *mode))
            }
            Form::Packed(columns) => {
                ChunkIter::Packed(PackedIter::new(columns.clone(), self.count))
            }
        }
    }
}

/// The samples of a stored chunk, whichever its encoding.
pub(crate) enum ChunkIter<'a> {
    Xor(XorIter<'a>),
    Decimal(DecimalIter<'a>),
    Packed(PackedIter<'a>),
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<Sample, CorruptChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ChunkIter::Xor(it) => it.next(),
            ChunkIter::Decimal(it) => it.next(),
            ChunkIter::Packed(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ChunkIter::Xor(it) => it.size_hint(),
            ChunkIter::Decimal(it) => it.size_hint(),
            ChunkIter::Packed(it) => it.size_hint(),
        }
    }
}

/// The smallest stored form of a stored chunk: the packed encoding when all its values are
/// decimals and that is smaller, else the value as it is. Done when chunks are persisted,
/// not in the head, whose open chunks must stay appendable.
pub(crate) fn compact(value: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, CorruptChunk> {
    let chunk = StoredChunk::parse(value)?;
    if !matches!(chunk.form, Form::Xor) {
        return Ok(value.into());
    }
    let samples: Vec<(i64, u64)> = chunk
        .iter()
        .map(|s| s.map(|s| (s.t, s.v.to_bits())))
        .collect::<Result<_, _>>()?;
    Ok(match packed::encode(&samples) {
        Some(d) if d.len() < value.len() => d.into(),
        _ => value.into(),
    })
}

/// The smallest stored form of a complete chunk of `samples` (sorted, unique t, within one
/// 2h window): what [`compact`] gives for their XOR form.
pub(crate) fn smallest(samples: &[Sample]) -> Vec<u8> {
    let xor = XorChunk::from_samples(samples.iter().copied()).to_value();
    match compact(&xor) {
        Ok(std::borrow::Cow::Owned(packed)) => packed,
        _ => xor,
    }
}

/// One encoding's bit-stream decoder: the next sample, or `None` if the stream ends early.
pub(crate) trait Decode {
    type Item;
    fn decode(&mut self) -> Option<Self::Item>;
}

/// The `count` samples of a chunk's bit stream, in order. Yields an error (and then stops)
/// on malformed data.
pub(crate) struct Samples<D> {
    decoder: D,
    remaining: u16,
}

impl<D: Decode<Item = Sample>> Samples<D> {
    fn decode_into(
        mut self,
        out: &mut Vec<Sample>,
        lo: i64,
        hi: i64,
        chunk: &StoredChunk<'_>,
    ) -> Result<(), CorruptChunk> {
        let truncated = || CorruptChunk("truncated bit stream");
        if chunk.min_t >= lo && chunk.max_t <= hi {
            out.reserve(usize::from(self.remaining));
            for _ in 0..self.remaining {
                out.push(self.decoder.decode().ok_or_else(truncated)?);
            }
            return Ok(());
        }
        for _ in 0..self.remaining {
            let s = self.decoder.decode().ok_or_else(truncated)?;
            if s.t > hi {
                break;
            }
            if s.t >= lo {
                out.push(s);
            }
        }
        Ok(())
    }
}

impl<D: Decode> Iterator for Samples<D> {
    type Item = Result<D::Item, CorruptChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        match self.decoder.decode() {
            Some(s) => Some(Ok(s)),
            None => {
                self.remaining = 0;
                Some(Err(CorruptChunk("truncated bit stream")))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

/// What both encodings' streams start with and interleave: the timestamps, the first in 64
/// bits and then as deltas of deltas, each followed by its value.
struct Timestamps<'a> {
    r: BitReader<'a>,
    started: bool,
    t: i64,
    delta: i64,
}

impl<'a> Timestamps<'a> {
    fn new(data: &'a [u8]) -> Timestamps<'a> {
        Timestamps {
            r: BitReader { data, pos: 0 },
            started: false,
            t: 0,
            delta: 0,
        }
    }

    /// Reads the next timestamp into `t`; true for the first, whose value follows in 64 bits.
    fn next(&mut self) -> Option<bool> {
        if !self.started {
            self.started = true;
            self.t = self.r.read_bits(64)? as i64;
            return Some(true);
        }
        self.delta = self
            .delta
            .wrapping_add(read_bucketed(&mut self.r, &DOD_BUCKETS)?);
        self.t = self.t.wrapping_add(self.delta);
        Some(false)
    }
}

pub(crate) type XorIter<'a> = Samples<XorDecoder<'a>>;

pub(crate) struct XorDecoder<'a> {
    ts: Timestamps<'a>,
    value: XorReader,
}

impl<'a> XorIter<'a> {
    fn new(data: &'a [u8], count: u16) -> XorIter<'a> {
        Samples {
            decoder: XorDecoder {
                ts: Timestamps::new(data),
                value: XorReader::default(),
            },
            remaining: count,
        }
    }
}

impl Decode for XorDecoder<'_> {
    type Item = Sample;

    fn decode(&mut self) -> Option<Sample> {
        let v = if self.ts.next()? {
            let v = self.ts.r.read_bits(64)?;
            self.value.v = v;
            v
        } else {
            self.value.read(&mut self.ts.r)?
        };
        Some(Sample {
            t: self.ts.t,
            v: f64::from_bits(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_keeps_values_apart_across_pages() {
        let mut a = ChunkArena::default();
        let values: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 37) % 1500])
            .chain([vec![7u8; ARENA_PAGE + 5], vec![], vec![9u8; 3]])
            .collect();
        for v in &values {
            a.push(v);
        }
        let mut c = XorChunk::new();
        for t in 0..100 {
            c.append(t * 15_000, (t as f64).to_bits());
        }
        a.push_with(c.stored_len_bound(), |out| c.write_stored(out));
        assert_eq!(a.len(), values.len() + 1);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(a.get(i), v.as_slice(), "value {i}");
        }
        assert_eq!(a.get(values.len()), c.to_value().as_slice());
        assert!(a
            .pages
            .iter()
            .all(|p| p.capacity() == ARENA_PAGE || p.len() > ARENA_PAGE));
    }
    use proptest::prelude::*;

    fn encode(samples: &[(i64, u64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v);
        }
        c
    }

    fn decode_bits(it: impl Iterator<Item = Result<Sample, CorruptChunk>>) -> Vec<(i64, u64)> {
        it.map(|s| s.map(|s| (s.t, s.v.to_bits())))
            .collect::<Result<_, _>>()
            .expect("decodes")
    }

    /// Values that stress the XOR encoding: special floats and arbitrary bit patterns.
    fn value_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(crate::STALE_NAN_BITS),
            Just(f64::NAN.to_bits()),
            Just(0x7ff8_dead_beef_0001),
            Just(f64::INFINITY.to_bits()),
            Just(f64::NEG_INFINITY.to_bits()),
            Just((-0.0f64).to_bits()),
            Just(0),
            Just(1.0f64.to_bits()),
            (0u32..1000).prop_map(|n| f64::from(n).to_bits()),
            any::<u64>(),
        ]
    }

    fn timestamps() -> impl Strategy<Value = Vec<i64>> {
        prop_oneof![
            // Arbitrary (unsorted, huge jumps, negative, extremes).
            proptest::collection::vec(any::<i64>(), 0..130),
            // Realistic: sorted with small or repeated steps, possibly negative.
            (
                any::<i32>(),
                proptest::collection::vec(
                    prop_oneof![Just(0i64), 0i64..20, 14_990i64..15_010, 0i64..7_200_000],
                    0..130
                )
            )
                .prop_map(|(start, steps)| {
                    steps
                        .iter()
                        .scan(i64::from(start), |t, d| {
                            *t += d;
                            Some(*t)
                        })
                        .collect()
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips_any_samples(ts in timestamps(), vs in proptest::collection::vec(value_bits(), 130)) {
            let samples: Vec<(i64, u64)> = ts.iter().copied().zip(vs.iter().copied()).collect();
            let c = encode(&samples);
            prop_assert_eq!(usize::from(c.count()), samples.len());
            prop_assert_eq!(decode_bits(c.iter()), samples.clone());

            let value = c.to_value();
            let stored = StoredChunk::parse(&value).expect("parses");
            prop_assert_eq!(usize::from(stored.count()), samples.len());
            if let Some(last) = samples.last() {
                prop_assert_eq!(stored.max_t(), last.0);
            }
            prop_assert_eq!(decode_bits(stored.iter()), samples);
        }

        #[test]
        fn decode_into_keeps_what_iterating_keeps(
            ts in timestamps(),
            vs in proptest::collection::vec(value_bits(), 130),
            lo in -100_000i64..2_000_000,
            width in 0i64..2_000_000,
        ) {
            // Chunks hold increasing timestamps (out-of-order samples go elsewhere).
            let mut ts = ts;
            ts.sort_unstable();
            ts.dedup();
            let samples: Vec<(i64, u64)> = ts.iter().copied().zip(vs.iter().copied()).collect();
            let value = encode(&samples).to_value();
            let hi = lo.saturating_add(width);
            // Both encodings: decimal when the values allow it.
            for value in [&value[..], &compact(&value).expect("compacts")[..]] {
                let stored = StoredChunk::parse(value).expect("parses");
                let expected: Vec<(i64, u64)> = samples
                    .iter()
                    .copied()
                    .take_while(|s| s.0 <= hi)
                    .filter(|s| s.0 >= lo)
                    .collect();
                let mut got = Vec::new();
                stored.decode_into(&mut got, lo, hi).expect("decodes");
                let got: Vec<(i64, u64)> = got.iter().map(|s| (s.t, s.v.to_bits())).collect();
                prop_assert_eq!(got, expected);
            }
        }

        #[test]
        fn corrupt_values_error_instead_of_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(stored) = StoredChunk::parse(&bytes) {
                let n = stored.iter().take_while(|r| r.is_ok()).count();
                prop_assert!(n <= usize::from(stored.count()));
                let mut out = Vec::new();
                let _ = stored.decode_into(&mut out, i64::MIN, i64::MAX);
                prop_assert!(out.len() <= usize::from(stored.count()));
            }
        }
    }

    /// Decimals as exporters print them (whole pages of bytes among them), and a few others.
    fn decimal_bits() -> impl Strategy<Value = u64> {
        prop_oneof![
            (any::<i32>(), 0u32..6)
                .prop_map(|(m, k)| (f64::from(m) / 10f64.powi(k as i32)).to_bits()),
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|m| (m as f64).to_bits()),
            (0u32..40).prop_map(|n| (f64::from(n) * 4096.0).to_bits()),
            Just(0.0f64.to_bits()),
        ]
    }

    proptest! {
        /// Whatever the two decimal encodings (the packed one written, the decimal one still
        /// read) accept decodes to exactly the same bits, whatever the order and spacing of the
        /// timestamps; random bit patterns are mostly refused, never mangled.
        #[test]
        fn decimal_encodings_give_back_exactly_what_they_accept(
            start in any::<i64>(),
            steps in proptest::collection::vec(prop_oneof![Just(15_000i64), 14_990i64..15_010, 0i64..100_000, any::<i64>()], 1..120),
            values in proptest::collection::vec(prop_oneof![decimal_bits(), any::<u64>()], 120),
        ) {
            let samples: Vec<(i64, u64)> = steps
                .iter()
                .scan(start, |t, d| { *t = t.wrapping_add(*d); Some(*t) })
                .zip(values.iter().copied())
                .collect();
            for stored in [decimal::encode(&samples), packed::encode(&samples)].into_iter().flatten() {
                let chunk = StoredChunk::parse(&stored).expect("parses");
                prop_assert_eq!(usize::from(chunk.count()), samples.len());
                prop_assert_eq!(chunk.min_t(), samples[0].0);
                prop_assert_eq!(chunk.max_t(), samples[samples.len() - 1].0);
                prop_assert_eq!(decode_bits(chunk.iter()), samples.clone());
            }
        }

        /// Every series of decimals is stored packed, never larger than in the decimal form
        /// but for its longer header: the decimal form's bucketed code is one of the packed
        /// form's candidates.
        #[test]
        fn decimal_series_are_always_packed_no_larger_than_in_the_decimal_form(
            ms in proptest::collection::vec(-1_000_000_000i64..1_000_000_000, 1..120),
            k in 0usize..4,
        ) {
            let samples: Vec<(i64, u64)> = ms
                .iter()
                .enumerate()
                .map(|(i, &m)| (i as i64 * 15_000, decimal::value(m, k).to_bits()))
                .collect();
            let packed = packed::encode(&samples).expect("packed");
            let decimal = decimal::encode(&samples).expect("decimal");
            prop_assert_eq!(decode_bits(StoredChunk::parse(&packed).expect("parses").iter()), samples);
            prop_assert!(packed.len() <= decimal.len() + 8, "{} > {}", packed.len(), decimal.len());
        }
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        let specials = [
            crate::STALE_NAN_BITS,
            f64::NAN.to_bits(),
            0xfff0_0000_0000_0001,
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            (-0.0f64).to_bits(),
            0.0f64.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
            1,
            u64::MAX,
        ];
        let samples: Vec<(i64, u64)> = specials
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 * 15_000, v))
            .collect();
        assert_eq!(decode_bits(encode(&samples).iter()), samples);
    }

    #[test]
    fn truncated_stream_reports_corruption() {
        let samples: Vec<(i64, u64)> = (0..50)
            .map(|i| (i * 1000 + i % 3, (i as f64 * 1.5).to_bits()))
            .collect();
        let value = encode(&samples).to_value();
        let cut = &value[..value.len() - 3];
        let stored = StoredChunk::parse(cut).expect("header intact");
        assert!(stored.iter().any(|r| r.is_err()));
        assert!(StoredChunk::parse(&[]).is_err());
        assert!(
            StoredChunk::parse(&[2, 1, 0]).is_err(),
            "histogram encodings are reserved, not readable yet"
        );
    }

    /// Deterministic xorshift so the size figures are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Encodes `series` series of `n` samples each in chunks of [`MAX_SAMPLES`] and returns
    /// (bit-stream bytes, stored-value bytes incl. header, stored bytes once compacted) per
    /// sample.
    fn bytes_per_sample(
        series: usize,
        n: usize,
        mut gen: impl FnMut(&mut Rng, usize) -> (i64, f64),
    ) -> (f64, f64, f64) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut data, mut stored, mut compacted, mut total) = (0usize, 0usize, 0usize, 0usize);
        for _ in 0..series {
            let samples: Vec<(i64, f64)> = (0..n).map(|i| gen(&mut rng, i)).collect();
            for chunk in samples.chunks(usize::from(MAX_SAMPLES)) {
                let c = XorChunk::from_samples(chunk.iter().map(|&(t, v)| Sample { t, v }));
                let back: Vec<(i64, f64)> = c
                    .iter()
                    .map(|s| s.map(|s| (s.t, s.v)))
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(back, chunk);
                data += c.data_len();
                let value = c.to_value();
                stored += value.len();
                let compact = compact(&value).unwrap();
                let again: Vec<(i64, f64)> = StoredChunk::parse(&compact)
                    .unwrap()
                    .iter()
                    .map(|s| s.map(|s| (s.t, s.v)))
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(again, chunk);
                compacted += compact.len();
                total += chunk.len();
            }
        }
        let per = |n: usize| n as f64 / total as f64;
        (per(data), per(stored), per(compacted))
    }

    #[test]
    fn bytes_per_sample_on_realistic_data() {
        const START: i64 = 1_700_000_000_000;
        let mut counter = 0.0;
        let regular_counter = bytes_per_sample(50, 1200, |r, i| {
            if i == 0 {
                counter = r.below(1_000_000) as f64;
            }
            counter += r.below(100) as f64;
            (START + i as i64 * 15_000, counter)
        });
        let mut counter = 0.0;
        let jittered_counter = bytes_per_sample(50, 1200, |r, i| {
            if i == 0 {
                counter = r.below(1_000_000) as f64;
            }
            counter += r.below(100) as f64;
            (START + i as i64 * 15_000 + r.below(11) as i64 - 5, counter)
        });
        let idle_counter = bytes_per_sample(50, 1200, |_, i| (START + i as i64 * 15_000, 42.0));
        let gauge = bytes_per_sample(50, 1200, |r, i| {
            let v = 50.0 + 10.0 * ((i as f64) / 40.0).sin() + r.below(1000) as f64 / 1000.0;
            (START + i as i64 * 15_000 + r.below(11) as i64 - 5, v)
        });
        let rounded_gauge = bytes_per_sample(50, 1200, |r, i| {
            (
                START + i as i64 * 15_000,
                (r.below(64) as f64 * 1024.0 * 1024.0).round(),
            )
        });
        let mut counter = 0.0;
        let decimal_counter = bytes_per_sample(50, 1200, |r, i| {
            if i == 0 {
                counter = r.below(1_000_000) as f64 / 100.0;
            }
            // Seconds with two decimals, as node exporter prints CPU time.
            counter = ((counter * 100.0).round() + r.below(1500) as f64) / 100.0;
            (START + i as i64 * 15_000, counter)
        });
        for (name, (data, stored, compacted)) in [
            ("counter, regular 15s", regular_counter),
            ("counter, 15s ±5ms jitter", jittered_counter),
            ("idle counter (constant)", idle_counter),
            ("noisy gauge, ±5ms jitter", gauge),
            ("integer gauge (memory bytes)", rounded_gauge),
            ("counter of seconds, 2 decimals", decimal_counter),
        ] {
            println!(
                "bytes/sample {name}: data {data:.3}, stored incl. header {stored:.3}, \
                 compacted {compacted:.3}"
            );
        }
        assert!(
            decimal_counter.2 < decimal_counter.1 * 0.6,
            "{decimal_counter:?}"
        );
        assert!(regular_counter.2 < regular_counter.1, "{regular_counter:?}");
        assert!(gauge.2 <= gauge.1, "{gauge:?}");
        assert!(regular_counter.1 < 3.0, "{regular_counter:?}");
        assert!(jittered_counter.1 < 4.0, "{jittered_counter:?}");
        assert!(idle_counter.1 < 0.5, "{idle_counter:?}");
        assert!(gauge.1 < 9.0, "{gauge:?}");
    }
}
