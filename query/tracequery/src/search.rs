//! Trace search over the trace store, shared by the Jaeger and Tempo APIs: walks the index
//! the caller picked, newest first, and keeps the traces that have a span satisfying the
//! caller's predicate. Owns the scan budget; the query languages are the callers'.

use std::collections::HashSet;
use std::ops::ControlFlow;

use prost::Message;

use storage::traces::{Seek, StoredSpan, TraceReader};
use storage::StorageError;

pub struct SearchOutcome {
    /// Newest first.
    pub trace_ids: Vec<[u8; 16]>,
    pub spans_inspected: usize,
    /// Encoded size of the spans read, as Tempo's `inspectedBytes` reports it.
    pub bytes_inspected: u64,
    /// The scan budget ran out before `limit` traces were found.
    pub truncated: bool,
}

/// At most `limit` traces, newest first, with a span in [start, end] ns that `matches`;
/// reads at most `max_spans` spans (the scan budget) before answering with what it found.
pub fn find_traces(
    store: &dyn TraceReader,
    seek: &Seek,
    start_ns: u64,
    end_ns: u64,
    limit: usize,
    max_spans: usize,
    matches: &mut dyn FnMut(&StoredSpan) -> Result<bool, StorageError>,
) -> Result<SearchOutcome, StorageError> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut inspected = 0;
    let mut bytes_inspected = 0;
    let mut truncated = false;
    store.scan(seek, start_ns, end_ns, &mut |c| {
        if found.len() >= limit {
            return Ok(ControlFlow::Break(()));
        }
        if seen.contains(&c.trace_id) {
            return Ok(ControlFlow::Continue(()));
        }
        inspected += 1;
        if inspected > max_spans {
            truncated = true;
            tracing::debug!(limit = max_spans, "trace search stopped at its scan budget");
            return Ok(ControlFlow::Break(()));
        }
        if let Some(span) = c.load()? {
            bytes_inspected += span.span.encoded_len() as u64;
            if matches(&span)? {
                seen.insert(c.trace_id);
                found.push(c.trace_id);
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(SearchOutcome {
        trace_ids: found,
        spans_inspected: inspected.min(max_spans),
        bytes_inspected,
        truncated,
    })
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace id from hex, left-padded to 16 bytes (Jaeger and Tempo accept short ids).
pub fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>32}");
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Go-style durations as both APIs take them (`1.5s`, `100ms`, `250us`, `2m`, `1h`), in ns:
/// Go's notation with Loki's `d` and `w`, limited to non-negative values.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    gocompat::units::parse_go_duration(s.trim()).and_then(|ns| u64::try_from(ns).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_durations_parse() {
        assert_eq!(parse_trace_id("1").unwrap()[15], 1);
        assert_eq!(
            hex(&parse_trace_id("5b8efff798038103d269b633813fc60c").unwrap()),
            "5b8efff798038103d269b633813fc60c"
        );
        assert!(parse_trace_id("xyz").is_none());
        assert!(parse_trace_id(&"a".repeat(33)).is_none());
        assert_eq!(parse_go_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("100"), None);
        assert_eq!(parse_go_duration("5x"), None);
    }
}
