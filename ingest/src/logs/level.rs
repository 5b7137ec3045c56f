//! Loki 3's `detected_level`: each record gets the level of its line as structured metadata,
//! so that Grafana's log volume (`sum by (level, detected_level) (count_over_time(…))`) and
//! the Logs Drilldown app colour and filter lines whose stream has no `level` label.
//! [`add_detected_levels`] runs on the records of every log ingest path (forward, Loki push,
//! OTLP) before they are appended, on the records the path owns, so nothing is copied.
//!
//! Where the level comes from, first found wins (as Loki's distributor):
//! 1. a `detected_level` the sender already set, kept as it is;
//! 2. a stream label, then a structured metadata field, named like a level field
//!    ([`LEVEL_FIELDS`]);
//! 3. OTLP's `severity_number` (1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20 error,
//!    21–24 fatal);
//! 4. the line: a level field of a JSON object (at any depth) or of logfmt pairs, else the
//!    first level word in it;
//! 5. else `unknown`.
//!
//! Known spellings map to Loki's values (`trace`, `debug`, `info`, `warn`, `error`,
//! `critical`, `fatal`); a field value that is none of them is kept lower-cased (a syslog
//! `notice` stays `notice`), as Loki before 3.6 kept it. Owns the detection only; knows
//! nothing of wire formats.

use serde_json::Value as J;
use storage::logs::LogRecord;

/// The structured metadata key the level is stored under.
pub const DETECTED_LEVEL: &str = "detected_level";

/// Loki's default `log_level_fields`, in order of preference.
const LEVEL_FIELDS: [&str; 14] = [
    "level",
    "LEVEL",
    "Level",
    "log.level",
    "severity",
    "SEVERITY",
    "Severity",
    "SeverityText",
    "lvl",
    "LVL",
    "Lvl",
    "severity_text",
    "Severity_Text",
    "SEVERITY_TEXT",
];

/// How deep into a JSON line a level field is looked for: deep enough for `{"log":{"level":…}}`
/// shapes, bounded so a hostile line costs little.
const JSON_MAX_DEPTH: usize = 4;

/// Longest line prefix scanned for a level word: levels sit near the start, and a long line
/// should not cost a full lower-cased copy.
const SCAN_BYTES: usize = 1024;

/// Adds [`DETECTED_LEVEL`] to every record that lacks it, keeping structured metadata sorted
/// by name.
pub fn add_detected_levels(records: &mut [LogRecord]) {
    for r in records.iter_mut().filter(|r| !has_level(r)) {
        let level = detect(r);
        let at = r
            .metadata
            .partition_point(|(k, _)| k.as_str() < DETECTED_LEVEL);
        r.metadata.insert(at, (DETECTED_LEVEL.to_owned(), level));
    }
}

fn has_level(r: &LogRecord) -> bool {
    r.metadata.iter().any(|(k, _)| k == DETECTED_LEVEL)
}

/// The level of one record (see the module doc for the order).
pub(crate) fn detect(r: &LogRecord) -> String {
    for field in LEVEL_FIELDS {
        if let Some(v) = r.labels.get(field) {
            return normalize_field(v);
        }
    }
    for field in LEVEL_FIELDS {
        if let Some((_, v)) = r.metadata.iter().find(|(k, _)| k == field) {
            return normalize_field(v);
        }
    }
    if let Some((_, n)) = r.metadata.iter().find(|(k, _)| k == "severity_number") {
        return severity_number(n).to_owned();
    }
    from_line(&r.line).unwrap_or("unknown").to_owned()
}

/// Loki's value for a known spelling (any case), else None.
fn canonical(v: &str) -> Option<&'static str> {
    Some(match v.to_ascii_lowercase().as_str() {
        "trace" | "trc" => "trace",
        "debug" | "dbg" => "debug",
        "info" | "inf" | "information" => "info",
        "warn" | "wrn" | "warning" => "warn",
        "error" | "err" => "error",
        "critical" => "critical",
        "fatal" => "fatal",
        _ => return None,
    })
}

fn normalize_field(v: &str) -> String {
    canonical(v).map_or_else(|| v.to_lowercase(), str::to_owned)
}

/// OTLP's SeverityNumber ranges; a value that is not a number counts as info, as in Loki.
fn severity_number(n: &str) -> &'static str {
    match n.trim().parse::<i64>() {
        Ok(1..=4) => "trace",
        Ok(5..=8) => "debug",
        Ok(9..=12) => "info",
        Ok(13..=16) => "warn",
        Ok(17..=20) => "error",
        Ok(21..=24) => "fatal",
        Ok(_) => "unknown",
        Err(_) => "info",
    }
}

fn from_line(line: &str) -> Option<&'static str> {
    let trimmed = line.trim();
    if trimmed.starts_with('{') && trimmed.ends_with('}') {
        if let Ok(v) = serde_json::from_str::<J>(trimmed) {
            if let Some(level) = json_field(&v, 0) {
                return canonical(level).or_else(|| keyword(line));
            }
        }
    } else if line.contains('=') {
        if let Some(level) = logfmt_field(line) {
            return canonical(level).or_else(|| keyword(line));
        }
    }
    keyword(line)
}

/// The first string-valued level field of a JSON object, by [`LEVEL_FIELDS`] order at each
/// depth, shallower first.
fn json_field(v: &J, depth: usize) -> Option<&str> {
    let J::Object(m) = v else { return None };
    for field in LEVEL_FIELDS {
        if let Some(J::String(s)) = m.get(field) {
            return Some(s);
        }
    }
    if depth + 1 >= JSON_MAX_DEPTH {
        return None;
    }
    m.values().find_map(|child| json_field(child, depth + 1))
}

/// The value of the logfmt pair whose key is a level field (case-insensitive), the earliest
/// field of [`LEVEL_FIELDS`] winning.
fn logfmt_field(line: &str) -> Option<&str> {
    let pairs: Vec<(&str, &str)> = line
        .split_whitespace()
        .filter_map(|tok| tok.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    LEVEL_FIELDS.iter().find_map(|field| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| *v)
    })
}

/// The level word (whole word, any case) occurring first in the line's start.
fn keyword(line: &str) -> Option<&'static str> {
    const WORDS: [(&str, &str); 9] = [
        ("trace", "trace"),
        ("debug", "debug"),
        ("fatal", "fatal"),
        ("critical", "critical"),
        ("error", "error"),
        ("err", "error"),
        ("warning", "warn"),
        ("warn", "warn"),
        ("info", "info"),
    ];
    let mut end = line.len().min(SCAN_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let text = line[..end].to_ascii_lowercase();
    let bytes = text.as_bytes();
    let word_edge = |i: usize| i >= bytes.len() || !bytes[i].is_ascii_alphanumeric();
    let mut best: Option<(usize, &'static str)> = None;
    for (word, level) in WORDS {
        let found = text
            .match_indices(word)
            .find(|(i, _)| (*i == 0 || word_edge(i - 1)) && word_edge(i + word.len()));
        if let Some((i, _)) = found {
            if best.is_none_or(|(b, _)| i < b) {
                best = Some((i, level));
            }
        }
    }
    best.map(|(_, level)| level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use storage::Labels;

    fn record(labels: &[(&str, &str)], line: &str, metadata: &[(&str, &str)]) -> LogRecord {
        LogRecord {
            ts_ns: 1,
            labels: Labels::from_pairs(labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
            line: line.to_owned(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn level(line: &str) -> String {
        detect(&record(&[("app", "a")], line, &[]))
    }

    #[test]
    fn labels_then_metadata_then_severity_number_then_the_line() {
        let r = record(
            &[("level", "WARNING")],
            "error: x",
            &[("severity", "debug")],
        );
        assert_eq!(detect(&r), "warn");
        let r = record(&[("app", "a")], "error: x", &[("severity", "DBG")]);
        assert_eq!(detect(&r), "debug");
        let r = record(&[("app", "a")], "error: x", &[("severity_number", "17")]);
        assert_eq!(detect(&r), "error");
        let r = record(&[("app", "a")], "x", &[("severity_number", "abc")]);
        assert_eq!(detect(&r), "info");
        let r = record(&[("level", "Notice")], "x", &[]);
        assert_eq!(
            detect(&r),
            "notice",
            "an unknown field value is kept, lower-cased"
        );
    }

    #[test]
    fn json_and_logfmt_fields() {
        assert_eq!(level(r#"{"level":"ERROR","msg":"boom"}"#), "error");
        assert_eq!(level(r#"{"log":{"severity":"wrn"},"msg":"info"}"#), "warn");
        assert_eq!(level(r#"{"msg":"all fine","code":1}"#), "unknown");
        assert_eq!(level("ts=1 LVL=dbg msg=\"error later\""), "debug");
        assert_eq!(level("ts=1 level=\"info\" severity=error"), "info");
    }

    #[test]
    fn the_first_level_word_of_an_unstructured_line() {
        assert_eq!(
            level("2025-01-01 WARN disk almost full, error soon"),
            "warn"
        );
        assert_eq!(level("[Error] connection refused"), "error");
        assert_eq!(level("information: no level word here"), "unknown");
        assert_eq!(level("terrible things happen"), "unknown");
        assert_eq!(level("GET /health 200"), "unknown");
        assert_eq!(level("FATAL: out of memory"), "fatal");
    }

    #[test]
    fn a_senders_level_is_kept_and_the_others_added_in_order() {
        let given = record(&[("app", "a")], "error", &[("detected_level", "debug")]);
        let found = record(&[("app", "a")], "error", &[("a", "1"), ("z", "2")]);
        let mut records = [given.clone(), found];
        add_detected_levels(&mut records);
        assert_eq!(records[0], given);
        assert_eq!(
            records[1].metadata,
            [("a", "1"), ("detected_level", "error"), ("z", "2")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    proptest! {
        #[test]
        fn any_line_gets_a_level_without_panicking(line in ".{0,2000}") {
            let l = level(&line);
            prop_assert!(!l.is_empty());
        }
    }
}
