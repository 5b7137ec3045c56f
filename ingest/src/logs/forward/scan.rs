//! Finding where a msgpack value ends, and how many values it holds, without decoding it.
//! The listener only builds a value tree once the whole frame has arrived, and only if the
//! tree stays within its budget: a msgpack `nil` is 1 byte, its decoded `rmpv::Value` dozens.

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("invalid msgpack marker 0xc1")]
    Marker,
    #[error("frame holds more than {0} msgpack values")]
    TooManyValues(usize),
}

/// How many msgpack values `len` bytes may decode to: `max_expansion` bytes of value trees
/// per byte, small frames counted as [`crate::EXPANSION_FLOOR_BYTES`].
pub(crate) fn max_values(len: usize, max_expansion: usize) -> usize {
    crate::wire::budget(len, max_expansion, crate::EXPANSION_FLOOR_BYTES)
        / std::mem::size_of::<rmpv::Value>()
}

/// The length of the complete msgpack value at the start of `buf` and the number of values
/// it is made of (None if it has not fully arrived yet), refusing one made of more than
/// `max_values` values.
pub(crate) fn complete_value(
    buf: &[u8],
    max_values: usize,
) -> Result<Option<(usize, usize)>, ScanError> {
    Scanner::default().resume(buf, max_values)
}

/// A scan of a value that arrives in pieces: each call resumes after the last whole item
/// the previous one saw, so a large frame trickling in is scanned once, not once per read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanner {
    /// End of the last whole item scanned.
    pos: usize,
    /// Items still to scan.
    pending: u64,
    values: usize,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner {
            pos: 0,
            pending: 1,
            values: 0,
        }
    }
}

impl Scanner {
    /// [`complete_value`] over `buf`, which must start with what the previous calls saw.
    /// Once the value is complete the scanner starts over, for the next value.
    pub(crate) fn resume(
        &mut self,
        buf: &[u8],
        max_values: usize,
    ) -> Result<Option<(usize, usize)>, ScanError> {
        while self.pending > 0 {
            match self.item(buf, max_values)? {
                Some(next) => *self = next,
                None => return Ok(None),
            }
        }
        let done = std::mem::take(self);
        Ok(Some((done.pos, done.values)))
    }

    /// The state after the item at `self.pos`, or None if it has not fully arrived.
    fn item(&self, buf: &[u8], max_values: usize) -> Result<Option<Scanner>, ScanError> {
        let mut pos = self.pos;
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        let values = self.values + 1;
        if values > max_values {
            return Err(ScanError::TooManyValues(max_values));
        }
        let be = |pos: usize, n: usize| -> Option<u64> {
            let b = buf.get(pos..pos + n)?;
            Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
        };
        // (bytes of a length prefix, fixed payload bytes, children per length unit)
        let (len_bytes, skip, children): (usize, u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, 0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (0, u64::from(marker & 0x1f), 0),
            0xc1 => return Err(ScanError::Marker),
            0xc4 | 0xd9 => (1, 0, 0),
            0xc5 | 0xda => (2, 0, 0),
            0xc6 | 0xdb => (4, 0, 0),
            // ext: length, then a type byte
            0xc7 => (1, 1, 0),
            0xc8 => (2, 1, 0),
            0xc9 => (4, 1, 0),
            0xca => (0, 4, 0),
            0xcb => (0, 8, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xce | 0xd2 => (0, 4, 0),
            0xcf | 0xd3 => (0, 8, 0),
            0xd4 => (0, 2, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc => (2, 0, 1),
            0xdd => (4, 0, 1),
            0xde => (2, 0, 2),
            0xdf => (4, 0, 2),
        };
        let mut skip = skip;
        let mut children = children;
        if len_bytes > 0 {
            let Some(n) = be(pos, len_bytes) else {
                return Ok(None);
            };
            pos += len_bytes;
            if matches!(marker, 0xdc..=0xdf) {
                children = children.saturating_mul(n);
            } else {
                skip = skip.saturating_add(n);
            }
        }
        let Some(end) = usize::try_from(skip)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|end| *end <= buf.len())
        else {
            return Ok(None);
        };
        Ok(Some(Scanner {
            pos: end,
            pending: (self.pending - 1).saturating_add(children),
            values,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn finds_the_end_of_every_kind_of_value() {
        let values = [
            Value::Nil,
            Value::from(-5),
            Value::from(1u64 << 40),
            Value::from(1.5f64),
            Value::F32(2.5),
            Value::from("x".repeat(40)),
            Value::from("y".repeat(300)),
            Value::Binary(vec![1; 70_000]),
            Value::Ext(0, vec![0; 8]),
            Value::Ext(3, vec![0; 20]),
            Value::Array((0..20).map(Value::from).collect()),
            Value::Map(vec![(Value::from("k"), Value::Array(vec![Value::Nil]))]),
        ];
        for v in values {
            let mut b = encode(&v);
            let len = b.len();
            b.extend_from_slice(&[0xc0, 0xc0]);
            assert_eq!(
                complete_value(&b, 1 << 20).unwrap().map(|(l, _)| l),
                Some(len),
                "{v:?}"
            );
            for cut in 0..len {
                assert_eq!(
                    complete_value(&b[..cut], 1 << 20),
                    Ok(None),
                    "{v:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn a_value_arriving_in_pieces_is_scanned_where_the_last_call_stopped() {
        let v = Value::Array(vec![
            Value::from("x".repeat(300)),
            Value::Nil,
            Value::from(7),
        ]);
        let mut b = encode(&v);
        let len = b.len();
        b.push(0xc0);
        let mut s = Scanner::default();
        for cut in [1, 2, 5, 200, len - 1] {
            assert_eq!(s.resume(&b[..cut], 100), Ok(None), "cut {cut}");
        }
        // The string's item stays unscanned until it is whole; the array marker was taken.
        assert_eq!(s.resume(&b[..len], 100), Ok(Some((len, 4))));
        assert_eq!(s, Scanner::default());
    }

    #[test]
    fn counts_values_and_refuses_too_many() {
        let v = Value::Array(vec![Value::Nil; 100]);
        let b = encode(&v);
        assert_eq!(complete_value(&b, 101), Ok(Some((b.len(), 101))));
        assert_eq!(complete_value(&b, 100), Err(ScanError::TooManyValues(100)));
        // An array claiming 4 billion elements, with none sent: incomplete, not allocated.
        assert_eq!(
            complete_value(&[0xdd, 0xff, 0xff, 0xff, 0xff], 1 << 40),
            Ok(None)
        );
        assert_eq!(complete_value(&[0xc1], 10), Err(ScanError::Marker));
    }
}
