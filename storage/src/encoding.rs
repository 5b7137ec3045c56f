//! Byte-level helpers shared by the on-disk formats: LEB128 varints, zigzag, length-prefixed
//! byte strings and a cursor that reads them back without panicking on truncated input.
//! Owns no format of its own; each format (WAL records, label sets, chunk headers, metadata)
//! lives in the module that owns that data.

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads what the `put_*` functions wrote; every read returns `None` on truncated or
/// malformed input instead of panicking.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub(crate) fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            // The 10th byte may only carry the top bit of a u64.
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.uvarint()?).ok()?;
        if len > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(head)
    }

    pub(crate) fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_and_bytes_round_trip(a in any::<u64>(), z in any::<i64>(), b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut out = Vec::new();
            put_uvarint(&mut out, a);
            put_uvarint(&mut out, zigzag(z));
            put_bytes(&mut out, &b);
                let mut c = Cursor::new(&out);
            prop_assert_eq!(c.uvarint(), Some(a));
            prop_assert_eq!(c.uvarint().map(unzigzag), Some(z));
            prop_assert_eq!(c.bytes(), Some(&b[..]));
            prop_assert!(c.is_empty());
        }

        #[test]
        fn truncated_input_is_rejected_not_panicking(b in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut c = Cursor::new(&b);
            // Whatever the bytes, reading must terminate without panicking.
            while c.bytes().is_some() {}
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let bytes = [0xffu8; 11];
        assert_eq!(Cursor::new(&bytes).uvarint(), None);
        assert_eq!(Cursor::new(&[0x80, 0x80]).uvarint(), None);
    }
}
