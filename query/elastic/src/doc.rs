//! A stored log record seen as an Elasticsearch document. The bulk decoder stored the
//! document's `message` (or `log`) as the line and its other fields as stream labels or
//! structured metadata; a line that is a JSON object (a document without a message, or a
//! JSON log line pushed through Loki) is read back as the document's fields. Owns that view
//! (fields by dotted name, `_source`, `_id`, tokens for text matching); never reads a store.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use storage::logs::LogRecord;

use crate::INDEX_LABEL;

/// The field a line that is not a JSON object is found under.
pub const MESSAGE: &str = "message";

#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub ts_ns: i64,
    pub index: String,
    pub id: String,
    /// Every leaf field by its dotted name (`kubernetes.pod.name`), the time field included.
    pub fields: BTreeMap<String, Value>,
}

impl Document {
    /// `time_field` names the timestamp in the document (`@timestamp` unless configured).
    pub fn from_record(r: &LogRecord, time_field: &str) -> Document {
        let mut fields = BTreeMap::new();
        match serde_json::from_str::<Value>(&r.line) {
            Ok(Value::Object(obj)) => flatten("", &Value::Object(obj), &mut fields),
            _ => {
                fields.insert(MESSAGE.to_owned(), Value::String(r.line.clone()));
            }
        }
        for (k, v) in &r.metadata {
            fields.insert(k.clone(), Value::String(v.clone()));
        }
        let mut index = String::new();
        for l in r.labels.iter() {
            if l.name == INDEX_LABEL {
                index = l.value.clone();
            } else {
                fields.insert(l.name.clone(), Value::String(l.value.clone()));
            }
        }
        fields.insert(
            time_field.to_owned(),
            Value::String(rfc3339_millis(r.ts_ns)),
        );
        Document {
            ts_ns: r.ts_ns,
            index,
            id: id_of(r),
            fields,
        }
    }

    pub fn ts_ms(&self) -> i64 {
        self.ts_ns.div_euclid(1_000_000)
    }

    /// The value of a field as a query names it: `.keyword` sub-fields are the field itself
    /// (every string is both text and keyword here), `_index` and `_id` the metadata fields,
    /// and `log` the message when the document has no `log` of its own (shippers store the
    /// line under either).
    pub fn get(&self, field: &str) -> Option<Value> {
        let field = field.strip_suffix(".keyword").unwrap_or(field);
        match field {
            "_index" => return Some(Value::String(self.index.clone())),
            "_id" => return Some(Value::String(self.id.clone())),
            _ => {}
        }
        if let Some(v) = self.fields.get(field) {
            return Some(v.clone());
        }
        if field == "log" {
            return self.fields.get(MESSAGE).cloned();
        }
        None
    }

    /// `_source`, nested as the dotted names say (`a.b` under `a`).
    pub fn source(&self) -> Value {
        let mut root = Map::new();
        for (k, v) in &self.fields {
            insert_dotted(&mut root, k, v.clone());
        }
        Value::Object(root)
    }
}

/// The text of a scalar value as a keyword compares it.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A value as a number, when it is one or a string holding one.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Lowercased alphanumeric runs, as the log store's line index and Elasticsearch's standard
/// analyzer split text.
pub fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

pub fn rfc3339_millis(ts_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ts_ns).to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn rfc3339_nanos(ts_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ts_ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Leaves of `v` by dotted path; arrays are leaves (kept whole).
pub fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

fn insert_dotted(root: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        Some((head, rest)) if !head.is_empty() && !rest.is_empty() => {
            let slot = root
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            match slot {
                Value::Object(m) => insert_dotted(m, rest, v),
                // A leaf already sits where an object would: keep the full dotted name.
                _ => {
                    root.insert(path.to_owned(), v);
                }
            }
        }
        _ => {
            root.insert(path.to_owned(), v);
        }
    }
}

/// A stable id from what the record holds (64-bit FNV-1a): the same record always answers
/// the same `_id`, two records rarely share one.
fn id_of(r: &LogRecord) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(&r.ts_ns.to_be_bytes());
    for l in r.labels.iter() {
        eat(l.name.as_bytes());
        eat(l.value.as_bytes());
    }
    eat(r.line.as_bytes());
    for (k, v) in &r.metadata {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    format!("{:016x}{:08x}", h, (r.ts_ns as u64 & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::Labels;

    fn record(line: &str) -> LogRecord {
        LogRecord {
            ts_ns: 1_700_000_000_123_000_000,
            labels: Labels::from_pairs([("index", "app"), ("host", "h1")]),
            line: line.into(),
            metadata: vec![("user.name".into(), "ann".into())],
        }
    }

    #[test]
    fn plain_line_is_the_message() {
        let d = Document::from_record(&record("GET /x 500"), "@timestamp");
        assert_eq!(d.index, "app");
        assert_eq!(d.get("message"), Some(Value::from("GET /x 500")));
        assert_eq!(d.get("log"), Some(Value::from("GET /x 500")));
        assert_eq!(d.get("host.keyword"), Some(Value::from("h1")));
        assert_eq!(d.get("_index"), Some(Value::from("app")));
        let s = d.source();
        assert_eq!(s["user"]["name"], "ann");
        assert_eq!(s["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert!(s.get("index").is_none());
    }

    #[test]
    fn json_line_is_the_document() {
        let d = Document::from_record(&record(r#"{"a":{"b":2},"msg":"x"}"#), "@timestamp");
        assert_eq!(d.get("a.b"), Some(Value::from(2)));
        assert_eq!(d.get("message"), None);
        assert_eq!(d.source()["a"]["b"], 2);
        assert_eq!(
            d.id,
            Document::from_record(&record(r#"{"a":{"b":2},"msg":"x"}"#), "@timestamp").id
        );
    }

    #[test]
    fn tokens_split_and_lowercase() {
        assert_eq!(
            tokens("GET /api/v1?x=Über"),
            ["get", "api", "v1", "x", "über"]
        );
    }
}
