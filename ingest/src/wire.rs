//! What a protobuf message will take in memory once prost decodes it, read from the wire
//! bytes before anything is decoded. A few bytes on the wire can become a large struct (an
//! empty repeated message is 2 bytes, its decoded struct a hundred), so every protobuf
//! receiver walks the body with its message's [`Shape`] first and refuses a body whose
//! decoded form would exceed its budget, or that holds more items of a kind than allowed.
//! JSON bodies get the same treatment from [`scan_json`], a structural scan that needs no
//! schema: `{"resourceSpans":[{},{},…]}` is three bytes per struct serde would build.
//! Owns the wire walks only; each protocol turns [`WireError`] into its own answer.

use std::mem::size_of;

/// The decoded form of one message type: its struct's size and those of its fields whose
/// occurrences allocate (sub-messages, repeated strings, packed varints).
pub(crate) struct Shape {
    /// Reported in [`Scan::count`] and in errors.
    pub(crate) name: &'static str,
    /// Bytes one decoded message of this type takes (its struct).
    pub(crate) size: usize,
    pub(crate) fields: &'static [(u32, Field)],
}

impl Shape {
    /// The largest struct of any message in this shape's tree: the most one element of a JSON
    /// array can decode to, since a schema-free scan cannot tell which message it is.
    pub(crate) fn largest(&'static self) -> usize {
        let mut seen: Vec<&'static str> = Vec::new();
        let mut todo = vec![self];
        let mut max = 0;
        while let Some(s) = todo.pop() {
            // Shapes refer to each other in cycles (AnyValue holds arrays of AnyValue).
            if seen.contains(&s.name) {
                continue;
            }
            seen.push(s.name);
            max = max.max(s.size);
            todo.extend(s.fields.iter().filter_map(|(_, f)| match f {
                Field::Message(sub) => Some(*sub),
                _ => None,
            }));
        }
        max
    }
}

pub(crate) enum Field {
    /// A (repeated or optional) sub-message.
    Message(&'static Shape),
    /// A repeated string or bytes field: each occurrence is its own heap buffer.
    Strings,
    /// A packed repeated varint field whose elements take this many bytes each.
    Varints(usize),
}

/// A `String` or `Vec<u8>` as it sits in a struct.
const BUFFER: usize = size_of::<Vec<u8>>();

/// prost refuses messages nested deeper than this; so does the walk.
const MAX_DEPTH: usize = 100;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Malformed(&'static str),
    #[error("request would decode to more than {limit} bytes of in-memory structures")]
    TooLarge { limit: usize },
}

/// What a walk found: how many messages of each shape the body holds.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    counts: Vec<(&'static str, usize)>,
}

impl Scan {
    /// Messages of the shape named `name` in the body.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.counts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }
}

/// Walks `body` as a message of `shape`, refusing it once its decoded structures would take
/// more than `budget` bytes. Stops at the first byte over the budget, so the walk itself is
/// bounded by the body.
pub(crate) fn scan(body: &[u8], shape: &'static Shape, budget: usize) -> Result<Scan, WireError> {
    let mut budget = Budget::new(budget);
    budget.charge(shape.size)?;
    budget.scan(body, shape)
}

/// The budget for a body of `len` bytes: `expansion` times its size, with small bodies
/// treated as `floor` bytes (a single empty item legitimately expands far more than large
/// bodies can).
pub(crate) fn budget(len: usize, expansion: usize, floor: usize) -> usize {
    len.max(floor).saturating_mul(expansion)
}

/// What a decoder may still allocate for one body: a decoder that reads the body in place
/// charges what it builds, and walks the parts it leaves to prost with [`Budget::scan`].
pub(crate) struct Budget {
    used: usize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget { used: 0, limit }
    }

    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), WireError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(WireError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// Charges what prost will build of `body`, a message of `shape` (its own struct
    /// excluded: the caller charges it where it keeps it).
    pub(crate) fn scan(&mut self, body: &[u8], shape: &'static Shape) -> Result<Scan, WireError> {
        let mut walk = Walk {
            budget: self,
            scan: Scan::default(),
        };
        walk.message(body, shape, 0)?;
        Ok(walk.scan)
    }
}

struct Walk<'b> {
    budget: &'b mut Budget,
    scan: Scan,
}

impl Walk<'_> {
    fn charge(&mut self, bytes: usize) -> Result<(), WireError> {
        self.budget.charge(bytes)
    }

    fn message(
        &mut self,
        mut buf: &[u8],
        shape: &'static Shape,
        depth: usize,
    ) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::Malformed("messages nested too deeply"));
        }
        while !buf.is_empty() {
            let (number, value) = next_field(&mut buf)?;
            match value {
                // Scalars: free when singular, an element when repeated and unpacked.
                Value::Varint(_) | Value::Fixed64(_) | Value::Fixed32(_) => self.charge(8)?,
                Value::Bytes(body) => {
                    let len = body.len();
                    let field = shape
                        .fields
                        .iter()
                        .find(|(n, _)| *n == number)
                        .map(|(_, f)| f);
                    match field {
                        Some(Field::Message(sub)) => {
                            self.charge(sub.size)?;
                            self.count(sub.name);
                            self.message(body, sub, depth + 1)?;
                        }
                        Some(Field::Strings) => self.charge(BUFFER + len)?,
                        Some(Field::Varints(elem)) => {
                            // Every element ends in the one byte with the high bit clear.
                            let n = body.iter().filter(|b| **b < 0x80).count();
                            self.charge(n.saturating_mul(*elem))?;
                        }
                        // A singular string or bytes field, or packed fixed-width numbers:
                        // as large decoded as on the wire.
                        None => self.charge(len)?,
                    }
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, name: &'static str) {
        match self.scan.counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.scan.counts.push((name, 1)),
        }
    }
}

/// serde_json's own recursion limit; the scan refuses deeper bodies before serde sees them.
const JSON_MAX_DEPTH: usize = 128;

/// Where a JSON value sits, which decides what serde allocates for it.
#[derive(Clone, Copy)]
enum Slot {
    /// The body itself, or an element of an array: a struct (or buffer) of its own.
    Own,
    /// A member of an object: a field of the struct its object already was charged as.
    Member,
    /// An object's key: a field name, not kept.
    Key,
}

/// Scans a JSON body before serde decodes it into typed structs, refusing one whose decoded
/// form would take more than `budget` bytes. Every object or array that is the body or an
/// array element is charged `element` bytes (the largest struct an element can decode to),
/// every such string its buffer, every such scalar a word; members of objects are fields of
/// their object's struct and only their strings' bytes are charged. Malformed JSON that the
/// scan can step over is left for serde to report, with its own words.
pub(crate) fn scan_json(body: &[u8], element: usize, budget: usize) -> Result<(), WireError> {
    let mut budget = Budget::new(budget);
    let mut walk = Walk {
        budget: &mut budget,
        scan: Scan::default(),
    };
    // An open container, and for objects whether the next value is a member (after `:`).
    let mut stack: Vec<(u8, bool)> = Vec::new();
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        let slot = match stack.last() {
            None | Some((b'[', _)) => Slot::Own,
            Some((_, true)) => Slot::Member,
            Some((_, false)) => Slot::Key,
        };
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b':' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = true;
                }
                i += 1;
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = false;
                }
                i += 1;
            }
            b'{' | b'[' => {
                if stack.len() >= JSON_MAX_DEPTH {
                    return Err(WireError::Malformed("JSON nested too deeply"));
                }
                if let Slot::Own = slot {
                    walk.charge(element)?;
                }
                stack.push((b, false));
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b'"' => {
                let len = string_len(&body[i + 1..]);
                walk.charge(match slot {
                    Slot::Own => BUFFER + len,
                    Slot::Member => len,
                    Slot::Key => 0,
                })?;
                i += len + 2;
            }
            _ => {
                // A number or literal: a word in a struct, or an element of its own.
                while body.get(i).is_some_and(|c| !b" \t\n\r:,{}[]\"".contains(c)) {
                    i += 1;
                }
                if let Slot::Own = slot {
                    walk.charge(8)?;
                }
            }
        }
    }
    Ok(())
}

/// Bytes up to the closing quote of a string whose opening quote has been read (escapes
/// stepped over); the rest of the body when it is never closed.
fn string_len(rest: &[u8]) -> usize {
    let mut j = 0;
    while let Some(&c) = rest.get(j) {
        match c {
            b'"' => return j,
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    rest.len()
}

/// A field's value as the wire holds it (groups, long deprecated, are refused).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// Reads the next field of a message: its number and value. For decoders that read a message
/// in place instead of having prost build it.
#[inline]
pub(crate) fn next_field<'a>(buf: &mut &'a [u8]) -> Result<(u32, Value<'a>), WireError> {
    let key = varint(buf)?;
    // Field numbers are 1 to 2^29 - 1.
    let number = u32::try_from(key >> 3)
        .ok()
        .filter(|n| (1..1 << 29).contains(n))
        .ok_or(WireError::Malformed("field number out of range"))?;
    let value = match key & 7 {
        0 => Value::Varint(varint(buf)?),
        1 => Value::Fixed64(u64::from_le_bytes(
            take(buf, 8)?.try_into().expect("8 bytes"),
        )),
        5 => Value::Fixed32(u32::from_le_bytes(
            take(buf, 4)?.try_into().expect("4 bytes"),
        )),
        2 => {
            let len = usize::try_from(varint(buf)?)
                .map_err(|_| WireError::Malformed("length out of range"))?;
            Value::Bytes(take(buf, len)?)
        }
        _ => return Err(WireError::Malformed("unsupported wire type")),
    };
    Ok((number, value))
}

/// Most varints of a body are one byte (every tag, most lengths and small counts), and they
/// are read a few dozen times per sample: those take the short path.
#[inline]
fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Ok(u64::from(b))
        }
        _ => varint_long(buf),
    }
}

#[inline(never)]
fn varint_long(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf
            .split_first()
            .ok_or(WireError::Malformed("truncated varint"))?;
        *buf = rest;
        // The tenth byte holds the 64th bit only: more is an overflow, as prost finds.
        if i == 9 && b > 1 {
            return Err(WireError::Malformed("varint overflows 64 bits"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(WireError::Malformed("varint longer than 10 bytes"))
}

#[inline]
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if buf.len() < n {
        return Err(WireError::Malformed(
            "field runs past the end of its message",
        ));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    static LEAF: Shape = Shape {
        name: "Leaf",
        size: 100,
        fields: &[],
    };
    static ROOT: Shape = Shape {
        name: "Root",
        size: 10,
        fields: &[
            (1, Field::Message(&LEAF)),
            (2, Field::Strings),
            (3, Field::Varints(8)),
        ],
    };

    #[test]
    fn empty_messages_are_charged_their_struct_and_counted() {
        let body = [0x0a, 0x00].repeat(5);
        let scan = scan(&body, &ROOT, 10 + 500).unwrap();
        assert_eq!(scan.count("Leaf"), 5);
        assert_eq!(
            super::scan(&body, &ROOT, 10 + 499).unwrap_err(),
            WireError::TooLarge { limit: 509 }
        );
    }

    #[test]
    fn strings_and_packed_varints_are_charged_per_element() {
        // Two repeated strings of 1 byte, and a packed field of three 1-byte varints.
        let body = [0x12, 0x01, b'a', 0x12, 0x01, b'b', 0x1a, 0x03, 1, 2, 3];
        let want = 10 + 2 * (BUFFER + 1) + 3 * 8;
        assert!(scan(&body, &ROOT, want).is_ok());
        assert!(scan(&body, &ROOT, want - 1).is_err());
    }

    #[test]
    fn the_largest_struct_is_found_through_cycles() {
        static CYCLE: Shape = Shape {
            name: "Cycle",
            size: 7,
            fields: &[(1, Field::Message(&CYCLE)), (2, Field::Message(&ROOT))],
        };
        assert_eq!(CYCLE.largest(), 100);
    }

    #[test]
    fn truncated_and_odd_input_is_malformed() {
        for body in [&[0x0a, 0x05, 0x00][..], &[0x0a], &[0x0b], &[0xff; 11]] {
            assert!(
                matches!(scan(body, &ROOT, usize::MAX), Err(WireError::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn json_elements_are_charged_their_struct_and_members_their_strings() {
        // The body's object, two empty array elements, nothing for keys or the number member.
        let body = br#"{"a": [{}, {"n": 1}], "s": "xyz"}"#;
        assert!(scan_json(body, 100, 3 * 100 + 3).is_ok());
        assert_eq!(
            scan_json(body, 100, 3 * 100 + 2),
            Err(WireError::TooLarge { limit: 302 })
        );
        // Array elements: strings their buffer, scalars a word; escaped quotes stay inside.
        let body = br#"["a\"b", 1, true]"#;
        assert!(scan_json(body, 10, 10 + BUFFER + 4 + 16).is_ok());
        assert!(scan_json(body, 10, 10 + BUFFER + 4 + 15).is_err());
    }

    #[test]
    fn json_bombs_are_refused_early_and_junk_is_left_to_serde() {
        let body = format!(r#"{{"resourceSpans":[{}{{}}]}}"#, "{},".repeat(100_000));
        assert_eq!(
            scan_json(body.as_bytes(), 200, budget(body.len(), 16, 1024)),
            Err(WireError::TooLarge {
                limit: 16 * body.len()
            })
        );
        let deep = "[".repeat(JSON_MAX_DEPTH + 1);
        assert_eq!(
            scan_json(deep.as_bytes(), 1, usize::MAX),
            Err(WireError::Malformed("JSON nested too deeply"))
        );
        assert!(scan_json(&"[".repeat(JSON_MAX_DEPTH).into_bytes(), 1, usize::MAX).is_ok());
        for junk in [&b"}}]]"[..], b"\"open", b"{\"a\":\"b\\", b"nul", b""] {
            assert!(scan_json(junk, 1, usize::MAX).is_ok(), "{junk:?}");
        }
    }

    #[test]
    fn budget_has_a_floor_for_small_bodies() {
        assert_eq!(budget(10, 16, 4096), 16 * 4096);
        assert_eq!(budget(1 << 20, 16, 4096), 16 << 20);
    }
}
