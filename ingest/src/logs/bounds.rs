//! Which log records the store can keep: timestamps within retention (older ones would be
//! deleted at once, or never be found) and not far in the future (a day partition years
//! ahead would never be deleted), and lines no longer than Loki's `max_line_size`. Every log
//! ingest path checks its records here and refuses the rest with a reason, so nothing is
//! acknowledged and then silently lost. The texts are Loki's (`pkg/validation`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};
use storage::logs::LogRecord;

/// The default of [`LogBounds::max_future`]: Loki's `creation_grace_period`.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(10 * 60);
/// The default of [`LogBounds::max_age`]: the log store's default retention.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 24 * 3600);
/// The default of [`LogBounds::max_line_bytes`]: Loki's `max_line_size`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 << 10;

/// The bounds a log record must be within to be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBounds {
    /// Oldest accepted timestamp, as an age: the store's retention.
    pub max_age: Duration,
    /// How far ahead of the clock a timestamp may be.
    pub max_future: Duration,
    /// Longest line, in bytes.
    pub max_line_bytes: usize,
}

impl Default for LogBounds {
    fn default() -> LogBounds {
        LogBounds {
            max_age: DEFAULT_MAX_AGE,
            max_future: DEFAULT_MAX_FUTURE,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OutOfBounds {
    #[error("entry for stream '{stream}' has timestamp too old: {ts}, oldest acceptable timestamp is: {oldest}")]
    TooOld {
        stream: String,
        ts: String,
        oldest: String,
    },
    #[error("entry for stream '{stream}' has timestamp too new: {ts}")]
    TooNew { stream: String, ts: String },
    #[error("Max entry size '{limit}' bytes exceeded for stream '{stream}' while adding an entry with length '{len}' bytes")]
    LineTooLong {
        limit: usize,
        stream: String,
        len: usize,
    },
}

/// The bounds resolved against one clock reading, for checking a request's records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    oldest_ns: i64,
    newest_ns: i64,
    max_line_bytes: usize,
}

impl LogBounds {
    pub(crate) fn window(&self) -> Window {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.window_at(now)
    }

    pub(crate) fn window_at(&self, now_ns: i64) -> Window {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Window {
            oldest_ns: now_ns.saturating_sub(ns(self.max_age)),
            newest_ns: now_ns.saturating_add(ns(self.max_future)),
            max_line_bytes: self.max_line_bytes,
        }
    }
}

impl Window {
    pub(crate) fn check(&self, r: &LogRecord) -> Result<(), OutOfBounds> {
        if r.ts_ns < self.oldest_ns {
            return Err(OutOfBounds::TooOld {
                stream: r.labels.to_string(),
                ts: rfc3339(r.ts_ns),
                oldest: rfc3339(self.oldest_ns),
            });
        }
        if r.ts_ns > self.newest_ns {
            return Err(OutOfBounds::TooNew {
                stream: r.labels.to_string(),
                ts: rfc3339(r.ts_ns),
            });
        }
        if r.line.len() > self.max_line_bytes {
            return Err(OutOfBounds::LineTooLong {
                limit: self.max_line_bytes,
                stream: r.labels.to_string(),
                len: r.line.len(),
            });
        }
        Ok(())
    }
}

/// Loki formats these timestamps as RFC 3339 in seconds.
fn rfc3339(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::Labels;

    fn record(ts_ns: i64, line: &str) -> LogRecord {
        LogRecord {
            ts_ns,
            labels: Labels::from_pairs([("app", "a")]),
            line: line.into(),
            metadata: vec![],
        }
    }

    #[test]
    fn timestamps_outside_retention_and_grace_are_refused_with_lokis_text() {
        let now = 1_700_000_000_000_000_000;
        let bounds = LogBounds {
            max_age: Duration::from_secs(3600),
            max_future: Duration::from_secs(600),
            max_line_bytes: 4,
        };
        let w = bounds.window_at(now);
        assert_eq!(w.check(&record(now, "ok")), Ok(()));
        assert_eq!(w.check(&record(now + 600_000_000_000, "ok")), Ok(()));
        for ts in [0, -1, i64::MIN, now - 3_601_000_000_000] {
            let err = w.check(&record(ts, "x")).unwrap_err();
            assert!(matches!(err, OutOfBounds::TooOld { .. }), "{ts}: {err}");
        }
        assert_eq!(
            w.check(&record(-1, "x")).unwrap_err().to_string(),
            "entry for stream '{app=\"a\"}' has timestamp too old: 1969-12-31T23:59:59Z, oldest acceptable timestamp is: 2023-11-14T21:13:20Z"
        );
        assert_eq!(
            w.check(&record(i64::MAX, "x")).unwrap_err().to_string(),
            "entry for stream '{app=\"a\"}' has timestamp too new: 2262-04-11T23:47:16Z"
        );
        assert_eq!(
            w.check(&record(now, "12345")).unwrap_err().to_string(),
            "Max entry size '4' bytes exceeded for stream '{app=\"a\"}' while adding an entry with length '5' bytes"
        );
    }
}
