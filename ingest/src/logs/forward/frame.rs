//! Decoding one Fluentd Forward Protocol v1 event frame (Message, Forward, PackedForward,
//! CompressedPackedForward) into a tag, timestamped records and the options that matter
//! (`chunk` for the ack). Owns the frame grammar only; no I/O.

use std::io::Read;

use rmpv::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    #[error("frame is not an array of 2 to 4 elements")]
    Shape,
    #[error("tag is not a string")]
    Tag,
    #[error("event time is neither an integer, a float nor an EventTime (ext type 0, 8 bytes)")]
    Time,
    #[error("entry is not a [time, record] array")]
    Entry,
    #[error("options is not a map")]
    Options,
    #[error("unsupported compression {0:?} (only gzip)")]
    Compression(String),
    #[error("packed entries do not decode: {0}")]
    Packed(String),
    #[error("gzip: {0}")]
    Gzip(String),
    #[error("chunk option is not a string")]
    Chunk,
    #[error("frame holds more than {0} entries")]
    TooManyEntries(usize),
    #[error("packed entries: {0}")]
    Scan(#[from] super::scan::ScanError),
}

/// How much one frame may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameLimits {
    /// Largest payload a CompressedPackedForward frame may decompress to.
    pub(crate) max_decompressed: u64,
    /// Most entries (events) in one frame.
    pub(crate) max_entries: usize,
    /// Most bytes of decoded msgpack values per byte of payload.
    pub(crate) max_expansion: usize,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Frame {
    pub(crate) tag: String,
    /// (nanoseconds since the epoch, record)
    pub(crate) entries: Vec<(i64, Value)>,
    /// The `chunk` option: the client wants `{"ack": chunk}` once the entries are durable.
    pub(crate) chunk: Option<String>,
    /// Size of a (Compressed)PackedForward payload, decompressed; 0 for other modes.
    pub(crate) payload_bytes: usize,
}

/// Decodes one frame within `limits`.
pub(crate) fn decode(v: Value, limits: &FrameLimits) -> Result<Frame, FrameError> {
    let Value::Array(items) = v else {
        return Err(FrameError::Shape);
    };
    if !(2..=4).contains(&items.len()) {
        return Err(FrameError::Shape);
    }
    let mut items = items.into_iter();
    let tag = match items.next() {
        Some(Value::String(s)) => s.into_str().ok_or(FrameError::Tag)?,
        _ => return Err(FrameError::Tag),
    };
    let second = items.next().ok_or(FrameError::Shape)?;
    let rest: Vec<Value> = items.collect();
    match second {
        // Forward: [tag, [[time, record], ...], option?]
        Value::Array(entries) => {
            let options = options(rest.first())?;
            if rest.len() > 1 {
                return Err(FrameError::Shape);
            }
            if entries.len() > limits.max_entries {
                return Err(FrameError::TooManyEntries(limits.max_entries));
            }
            let entries = entries.into_iter().map(entry).collect::<Result<_, _>>()?;
            Ok(Frame {
                tag,
                entries,
                chunk: chunk(options)?,
                payload_bytes: 0,
            })
        }
        // PackedForward / CompressedPackedForward: [tag, bin-or-str, option?]
        Value::Binary(_) | Value::String(_) => {
            let bytes = match second {
                Value::Binary(b) => b,
                Value::String(s) => s.into_bytes(),
                _ => return Err(FrameError::Shape),
            };
            let options = options(rest.first())?;
            if rest.len() > 1 {
                return Err(FrameError::Shape);
            }
            let bytes = match option(options, "compressed").map(|v| v.as_str()) {
                None => bytes,
                Some(Some("gzip")) => gunzip(&bytes, limits.max_decompressed)?,
                Some(other) => {
                    return Err(FrameError::Compression(other.unwrap_or("?").to_owned()))
                }
            };
            // Count entries and values before decoding any, so that a payload of tiny
            // entries is refused before its value trees are built.
            let mut values = super::scan::max_values(bytes.len(), limits.max_expansion);
            let (mut at, mut count) = (0, 0);
            while at < bytes.len() {
                if count == limits.max_entries {
                    return Err(FrameError::TooManyEntries(limits.max_entries));
                }
                let (len, n) = super::scan::complete_value(&bytes[at..], values)?
                    .ok_or_else(|| FrameError::Packed("the last entry is truncated".to_owned()))?;
                values -= n;
                at += len;
                count += 1;
            }
            let mut entries = Vec::with_capacity(count);
            let mut rd = &bytes[..];
            while !rd.is_empty() {
                let v = rmpv::decode::read_value(&mut rd)
                    .map_err(|e| FrameError::Packed(e.to_string()))?;
                entries.push(entry(v)?);
            }
            Ok(Frame {
                tag,
                entries,
                chunk: chunk(options)?,
                payload_bytes: bytes.len(),
            })
        }
        // Message: [tag, time, record, option?]
        time => {
            let mut rest = rest.into_iter();
            let record = rest.next().ok_or(FrameError::Shape)?;
            let opts = rest.next();
            let options = options(opts.as_ref())?;
            Ok(Frame {
                tag,
                entries: vec![(event_time(&time)?, record)],
                chunk: chunk(options)?,
                payload_bytes: 0,
            })
        }
    }
}

fn options(v: Option<&Value>) -> Result<Option<&[(Value, Value)]>, FrameError> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Map(m)) => Ok(Some(m)),
        Some(_) => Err(FrameError::Options),
    }
}

fn option<'a>(options: Option<&'a [(Value, Value)]>, key: &str) -> Option<&'a Value> {
    options?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn chunk(options: Option<&[(Value, Value)]>) -> Result<Option<String>, FrameError> {
    match option(options, "chunk") {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_owned()))
            .ok_or(FrameError::Chunk),
    }
}

fn entry(v: Value) -> Result<(i64, Value), FrameError> {
    let Value::Array(pair) = v else {
        return Err(FrameError::Entry);
    };
    let [time, record]: [Value; 2] = pair.try_into().map_err(|_| FrameError::Entry)?;
    Ok((event_time(&time)?, record))
}

/// Seconds (integer or float) or EventTime: ext type 0 with seconds and nanoseconds as
/// 32-bit big-endian integers.
pub(crate) fn event_time(v: &Value) -> Result<i64, FrameError> {
    match v {
        Value::Integer(i) => i
            .as_i64()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .ok_or(FrameError::Time),
        Value::F64(f) if f.is_finite() => Ok((f * 1e9) as i64),
        Value::F32(f) if f.is_finite() => Ok((f64::from(*f) * 1e9) as i64),
        Value::Ext(0, b) if b.len() == 8 => {
            let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let nanos = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            Ok(i64::from(secs) * 1_000_000_000 + i64::from(nanos))
        }
        _ => Err(FrameError::Time),
    }
}

fn gunzip(b: &[u8], max: u64) -> Result<Vec<u8>, FrameError> {
    // Fluentd may concatenate several gzip members in one chunk.
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Gzip(e.to_string()))?;
    if out.len() as u64 > max {
        return Err(FrameError::Gzip(format!(
            "decompresses to more than {max} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn limits(max_decompressed: u64) -> FrameLimits {
        FrameLimits {
            max_decompressed,
            max_entries: 1000,
            max_expansion: crate::DEFAULT_MAX_EXPANSION,
        }
    }

    fn decode(v: Value) -> Result<Frame, FrameError> {
        super::decode(v, &limits(16 << 20))
    }

    pub(crate) fn event_time_ext(secs: u32, nanos: u32) -> Value {
        let mut b = secs.to_be_bytes().to_vec();
        b.extend_from_slice(&nanos.to_be_bytes());
        Value::Ext(0, b)
    }

    fn rec(msg: &str) -> Value {
        Value::Map(vec![(Value::from("message"), Value::from(msg))])
    }

    fn opts(chunk: &str) -> Value {
        Value::Map(vec![
            (Value::from("chunk"), Value::from(chunk)),
            (Value::from("size"), Value::from(2)),
        ])
    }

    fn packed(entries: &[(Value, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, r) in entries {
            rmpv::encode::write_value(&mut out, &Value::Array(vec![t.clone(), r.clone()])).unwrap();
        }
        out
    }

    #[test]
    fn message_mode_with_integer_and_event_time() {
        let f = decode(Value::Array(vec![
            Value::from("a.b"),
            Value::from(1_700_000_000),
            rec("x"),
        ]))
        .unwrap();
        assert_eq!(
            f,
            Frame {
                tag: "a.b".into(),
                entries: vec![(1_700_000_000_000_000_000, rec("x"))],
                chunk: None,
                payload_bytes: 0,
            }
        );
        let f = decode(Value::Array(vec![
            Value::from("t"),
            event_time_ext(1_700_000_000, 123_456_789),
            rec("y"),
            opts("c1"),
        ]))
        .unwrap();
        assert_eq!(f.entries[0].0, 1_700_000_000_123_456_789);
        assert_eq!(f.chunk.as_deref(), Some("c1"));
    }

    #[test]
    fn forward_mode() {
        let entries = Value::Array(vec![
            Value::Array(vec![Value::from(10), rec("a")]),
            Value::Array(vec![event_time_ext(11, 5), rec("b")]),
        ]);
        let f = decode(Value::Array(vec![Value::from("t"), entries, opts("c2")])).unwrap();
        assert_eq!(
            f.entries,
            vec![(10_000_000_000, rec("a")), (11_000_000_005, rec("b"))]
        );
        assert_eq!(f.chunk.as_deref(), Some("c2"));
    }

    #[test]
    fn packed_and_compressed_packed_forward_modes() {
        let bin = packed(&[(Value::from(1), rec("a")), (event_time_ext(2, 7), rec("b"))]);
        let want = vec![(1_000_000_000, rec("a")), (2_000_000_007, rec("b"))];
        let f = decode(Value::Array(vec![
            Value::from("t"),
            Value::Binary(bin.clone()),
        ]))
        .unwrap();
        assert_eq!(f.entries, want);
        // Two concatenated gzip members, as Fluentd's buffer may produce.
        let mut gz = Vec::new();
        for half in [&bin[..bin.len() / 2], &bin[bin.len() / 2..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(half).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let options = Value::Map(vec![
            (Value::from("compressed"), Value::from("gzip")),
            (Value::from("chunk"), Value::from("z")),
        ]);
        let f = decode(Value::Array(vec![
            Value::from("t"),
            Value::Binary(gz),
            options,
        ]))
        .unwrap();
        assert_eq!(f.entries, want);
        assert_eq!(f.chunk.as_deref(), Some("z"));
        // Above the decompression limit the frame is refused.
        let max = bin.len() as u64 - 1;
        let frame = Value::Array(vec![
            Value::from("t"),
            Value::Binary(gz_of(&bin)),
            Value::Map(vec![(Value::from("compressed"), Value::from("gzip"))]),
        ]);
        assert_eq!(
            super::decode(frame, &limits(max)),
            Err(FrameError::Gzip(format!(
                "decompresses to more than {max} bytes"
            )))
        );
    }

    fn gz_of(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn entries_and_values_are_counted_before_decoding() {
        let entry = (Value::from(1), Value::Nil);
        let bin = packed(&vec![entry; 11]);
        let frame = |bin: Vec<u8>| Value::Array(vec![Value::from("t"), Value::Binary(bin)]);
        let l = FrameLimits {
            max_entries: 10,
            ..limits(1 << 20)
        };
        assert_eq!(
            super::decode(frame(bin.clone()), &l),
            Err(FrameError::TooManyEntries(10))
        );
        let forward = Value::Array(vec![
            Value::from("t"),
            Value::Array(vec![Value::Array(vec![Value::from(1), Value::Nil]); 11]),
        ]);
        assert_eq!(
            super::decode(forward, &l),
            Err(FrameError::TooManyEntries(10))
        );
        // A payload of 1-byte values decodes to dozens of bytes each: beyond the budget.
        let nils = packed(&[(Value::from(1), Value::Array(vec![Value::Nil; 1 << 20]))]);
        assert!(matches!(
            super::decode(frame(nils), &limits(16 << 20)),
            Err(FrameError::Scan(
                super::super::scan::ScanError::TooManyValues(_)
            ))
        ));
    }

    #[test]
    fn malformed_frames_are_rejected_with_a_reason() {
        assert_eq!(decode(Value::from(1)), Err(FrameError::Shape));
        assert_eq!(
            decode(Value::Array(vec![Value::from(1), Value::from(1), rec("a")])),
            Err(FrameError::Tag)
        );
        // A string second element is a PackedForward payload: here one integer, not an entry.
        assert_eq!(
            decode(Value::Array(vec![
                Value::from("t"),
                Value::from("x"),
                rec("a")
            ])),
            Err(FrameError::Entry)
        );
        assert!(matches!(
            decode(Value::Array(vec![
                Value::from("t"),
                Value::Binary(vec![0x92, 0x01])
            ])),
            Err(FrameError::Packed(_))
        ));
        assert_eq!(
            decode(Value::Array(vec![
                Value::from("t"),
                Value::Boolean(true),
                rec("a")
            ])),
            Err(FrameError::Time)
        );
        assert_eq!(
            decode(Value::Array(vec![
                Value::from("t"),
                Value::Array(vec![Value::from(1)])
            ])),
            Err(FrameError::Entry)
        );
        let bad = Value::Map(vec![(Value::from("compressed"), Value::from("zstd"))]);
        assert_eq!(
            decode(Value::Array(vec![
                Value::from("t"),
                Value::Binary(vec![]),
                bad
            ])),
            Err(FrameError::Compression("zstd".into()))
        );
    }
}
