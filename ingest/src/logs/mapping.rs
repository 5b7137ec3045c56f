//! How a structured record (a Fluentd event or an OTLP-like key/value set) becomes a log
//! line: the tag becomes label `tag`, chosen keys become stream labels, `log` or `message` is
//! the line (else the whole record as JSON), every other field is structured metadata.
//! Owns only that mapping.

use storage::logs::LogRecord;
use storage::{Label, Labels};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Record keys whose values become stream labels.
    pub label_keys: Vec<String>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            label_keys: ["service", "level", "host", "container_name", "namespace"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Keys whose string value is the line, in order of preference.
const LINE_KEYS: [&str; 2] = ["log", "message"];

impl Mapping {
    /// Maps one Fluentd event. Non-map records are kept whole as the line.
    pub(crate) fn fluent_record(&self, tag: &str, ts_ns: i64, record: &rmpv::Value) -> LogRecord {
        let mut labels = vec![Label::new("tag", tag)];
        let mut metadata = Vec::new();
        let Some(fields) = record.as_map() else {
            let line = scalar_text(record);
            return LogRecord {
                ts_ns,
                labels: Labels::new(labels),
                line,
                metadata,
            };
        };
        let line_key = LINE_KEYS
            .iter()
            .find(|k| {
                fields
                    .iter()
                    .any(|(fk, fv)| fk.as_str() == Some(**k) && fv.is_str())
            })
            .copied();
        let mut line = None;
        for (k, v) in fields {
            let Some(k) = k.as_str() else { continue };
            if Some(k) == line_key && line.is_none() {
                line = Some(scalar_text(v));
            } else if self.label_keys.iter().any(|l| l == k)
                && !v.is_map()
                && !v.is_array()
                && !v.is_nil()
            {
                labels.push(Label::new(sanitize_label_name(k), scalar_text(v)));
            } else {
                metadata.push((k.to_owned(), scalar_text(v)));
            }
        }
        metadata.sort();
        let line = line.unwrap_or_else(|| to_json(record).to_string());
        LogRecord {
            ts_ns,
            labels: Labels::new(labels),
            line,
            metadata,
        }
    }
}

/// Label names are `[a-zA-Z_][a-zA-Z0-9_]*`; other characters become `_`.
pub(crate) fn sanitize_label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// A value as text: strings as they are, binary as (lossy) UTF-8, anything else as JSON.
fn scalar_text(v: &rmpv::Value) -> String {
    match v {
        rmpv::Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        rmpv::Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => to_json(other).to_string(),
    }
}

/// Longest text a map key that is not a string becomes in JSON.
const MAX_KEY_BYTES: usize = 1024;

/// A map key as a JSON object key. JSON keys are strings, so a key that is not one is written
/// as its JSON text, cut at [`MAX_KEY_BYTES`]: the keys of a key are escaped again at every
/// level of such nesting, doubling in length each time (a 435-byte record became gigabytes;
/// found by the forward fuzz target).
fn key_text(k: &rmpv::Value) -> String {
    let mut s = scalar_text(k);
    if !(k.is_str() || k.is_bin()) && s.len() > MAX_KEY_BYTES {
        let mut end = MAX_KEY_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

pub(crate) fn to_json(v: &rmpv::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        rmpv::Value::Nil => J::Null,
        rmpv::Value::Boolean(b) => J::Bool(*b),
        rmpv::Value::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        rmpv::Value::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number)
        }
        rmpv::Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        rmpv::Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        rmpv::Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        rmpv::Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        rmpv::Value::Map(m) => {
            J::Object(m.iter().map(|(k, v)| (key_text(k), to_json(v))).collect())
        }
        rmpv::Value::Ext(_, b) => J::String(String::from_utf8_lossy(b).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn keys_that_are_maps_nested_deep_stay_small() {
        // {{{…: 1}: 1}: 1}, 24 levels: every level escapes the quotes of the one inside, so
        // without the cut the line would be over 16 MB.
        let mut key = Value::from("k\"q");
        for _ in 0..24 {
            key = Value::Map(vec![(key, Value::from(1))]);
        }
        let record = Value::Map(vec![(key, Value::from(1))]);
        let r = Mapping::default().fluent_record("t", 0, &record);
        assert!(r.line.len() < 4 * MAX_KEY_BYTES, "{} bytes", r.line.len());
        assert!(r.line.starts_with("{\"{"), "{}", r.line);
    }

    #[test]
    fn tag_and_chosen_keys_are_labels_log_is_the_line_rest_is_metadata() {
        let r = map(&[
            ("log", Value::from("GET / 200")),
            ("level", Value::from("info")),
            ("container_name", Value::from("web")),
            ("status", Value::from(200)),
            ("trace_id", Value::from("abc")),
        ]);
        let rec = Mapping::default().fluent_record("app.web", 7, &r);
        assert_eq!(rec.ts_ns, 7);
        assert_eq!(rec.line, "GET / 200");
        assert_eq!(
            rec.labels,
            Labels::from_pairs([
                ("tag", "app.web"),
                ("level", "info"),
                ("container_name", "web")
            ])
        );
        assert_eq!(
            rec.metadata,
            vec![
                ("status".into(), "200".into()),
                ("trace_id".into(), "abc".into())
            ]
        );
    }

    #[test]
    fn without_log_or_message_the_line_is_the_record_as_json() {
        let r = map(&[("a", Value::from(1)), ("service", Value::from("api"))]);
        let rec = Mapping {
            label_keys: vec!["service".into()],
        }
        .fluent_record("t", 0, &r);
        assert_eq!(rec.line, r#"{"a":1,"service":"api"}"#);
        assert_eq!(rec.labels.get("service"), Some("api"));
        let rec = Mapping::default().fluent_record("t", 0, &map(&[("message", Value::from("hi"))]));
        assert_eq!(rec.line, "hi");
    }
}
