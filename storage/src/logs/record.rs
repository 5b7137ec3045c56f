//! One log record (timestamp, stream labels, line, structured metadata) and its byte encoding
//! in the append log. Owns the encoding only; where records live is the append log's and the
//! index's business.

use crate::labels::Labels;

/// A log line as stored and returned by queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// The stream: the labels that identify where the line came from.
    pub labels: Labels,
    pub line: String,
    /// Structured metadata: per-line fields that are not stream labels, sorted by name.
    pub metadata: Vec<(String, String)>,
}

impl LogRecord {
    /// ts (8 bytes BE), label count, labels, line, metadata count, metadata; strings are
    /// u32-BE-length-prefixed UTF-8.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ts_ns.to_be_bytes());
        out.extend_from_slice(&(self.labels.len() as u32).to_be_bytes());
        for l in self.labels.iter() {
            put_str(out, &l.name);
            put_str(out, &l.value);
        }
        put_str(out, &self.line);
        out.extend_from_slice(&(self.metadata.len() as u32).to_be_bytes());
        for (k, v) in &self.metadata {
            put_str(out, k);
            put_str(out, v);
        }
    }

    pub(crate) fn decode(mut b: &[u8]) -> Option<LogRecord> {
        let ts_ns = i64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
        let n = take_u32(&mut b)?;
        let mut pairs = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            pairs.push((take_str(&mut b)?, take_str(&mut b)?));
        }
        let line = take_str(&mut b)?;
        let n = take_u32(&mut b)?;
        let mut metadata = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            metadata.push((take_str(&mut b)?, take_str(&mut b)?));
        }
        b.is_empty().then(|| LogRecord {
            ts_ns,
            labels: Labels::from_pairs(pairs),
            line,
            metadata,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?))
}

fn take_str(b: &mut &[u8]) -> Option<String> {
    let n = take_u32(b)? as usize;
    String::from_utf8(take(b, n)?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_round_trips(ts in any::<i64>(), labels in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9 ]{1,5}", 0..4),
                                     line in ".*", metadata in proptest::collection::vec(("[a-z]{1,4}", ".*"), 0..3)) {
            let r = LogRecord { ts_ns: ts, labels: Labels::from_pairs(labels), line, metadata };
            let mut buf = Vec::new();
            r.encode(&mut buf);
            prop_assert_eq!(LogRecord::decode(&buf), Some(r));
            prop_assert_eq!(LogRecord::decode(&buf[..buf.len() - 1]), None);
        }
    }
}
