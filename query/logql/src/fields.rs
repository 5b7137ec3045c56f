//! The fields of log lines as Loki's `detected_fields` and `detected_field/<name>/values`
//! find them for Grafana's log details, filters and Logs Drilldown: the newest lines of a log
//! query (its pipeline applied), their structured metadata and what parsing each line as JSON
//! (nested keys flattened, with their path) or else as logfmt yields. Each field has a type
//! guessed from its newest value and its number of distinct values. Stream labels are not
//! fields. The wire shapes are the wire layer's.
//!
//! Labels only the query's own pipeline made (`regexp`, `pattern`, `label_format`) are left
//! out: Loki lists them with no parser, which Grafana takes for structured metadata.

use std::collections::{BTreeMap, BTreeSet};

use gocompat::units::parse_go_duration;
use serde_json::Value as J;
use storage::logs::Direction;

use crate::ast::{looks_like_bytes, Expr, LogExpr};
use crate::pipeline::{logfmt, sanitize, LabelMap};
use crate::{parse, EvalError, LogEngine};

/// One detected field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedField {
    pub label: String,
    /// Loki's type names: `int`, `float`, `boolean`, `duration`, `bytes`, `string`.
    pub kind: &'static str,
    /// Distinct values in the lines read.
    pub cardinality: usize,
    /// The parsers that found it (`json`, `logfmt`); empty for structured metadata.
    pub parsers: Vec<&'static str>,
    /// A JSON field's path in the line (`["user", "id"]` for `user_id`); empty otherwise.
    pub json_path: Vec<String>,
}

/// Where a field's value was found in one line.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    StructuredMetadata,
    Json,
    Logfmt,
}

/// Labels the wire layer never offers as fields: errors of the query's own parsers.
const ERROR_LABELS: [&str; 3] = ["__error__", "__error_details__", "__preserve_error__"];

#[derive(Default)]
struct Field {
    /// Type of the newest value, as Loki takes the type from one value.
    kind: &'static str,
    values: BTreeSet<String>,
    parsers: BTreeSet<&'static str>,
    json_path: Vec<String>,
}

/// Loki's type of one value, by Go's parsers in Loki's order.
fn kind(v: &str) -> &'static str {
    let go_bool = [
        "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
    ];
    if v.parse::<i64>().is_ok() {
        "int"
    } else if v.parse::<f64>().is_ok() {
        "float"
    } else if go_bool.contains(&v) {
        "boolean"
    } else if parse_go_duration(v).is_some() {
        "duration"
    } else if looks_like_bytes(v) {
        "bytes"
    } else {
        "string"
    }
}

/// A JSON object's scalar leaves: (label as the `json` parser names it, value, path).
fn json_leaves(prefix: &mut Vec<String>, v: &J, out: &mut Vec<(String, String, Vec<String>)>) {
    match v {
        J::Object(m) => {
            for (k, v) in m {
                prefix.push(k.clone());
                json_leaves(prefix, v, out);
                prefix.pop();
            }
        }
        // The json parser does not extract arrays either.
        J::Array(_) => {}
        leaf => {
            let value = match leaf {
                J::String(s) => s.clone(),
                J::Null => String::new(),
                other => other.to_string(),
            };
            out.push((sanitize(&prefix.join("_")), value, prefix.clone()));
        }
    }
}

/// The fields of one line: its structured metadata, then its JSON or logfmt pairs (named as
/// the parsers name them: `_extracted` when a stream label has the name).
fn line_fields(
    stream: &LabelMap,
    metadata: &LabelMap,
    line: &str,
    f: &mut dyn FnMut(String, String, Source, Vec<String>),
) {
    for (k, v) in metadata {
        f(k.clone(), v.clone(), Source::StructuredMetadata, Vec::new());
    }
    let rename = |name: String| {
        if stream.contains_key(&name) {
            format!("{name}_extracted")
        } else {
            name
        }
    };
    if let Ok(v @ J::Object(_)) = serde_json::from_str::<J>(line) {
        let mut leaves = Vec::new();
        json_leaves(&mut Vec::new(), &v, &mut leaves);
        for (name, value, path) in leaves {
            f(rename(name), value, Source::Json, path);
        }
    } else if let Ok(pairs) = logfmt(line) {
        // Bare words parse as keys without a value: in a plain text line they are words,
        // not fields.
        for (k, v) in pairs
            .into_iter()
            .filter(|(k, _)| line.contains(&format!("{k}=")))
        {
            let name = sanitize(&k);
            if !name.is_empty() {
                f(rename(name), v, Source::Logfmt, Vec::new());
            }
        }
    }
}

impl LogEngine {
    /// The newest `lines` lines of log query `query` in [start, end] ns, each as its stream
    /// labels, structured metadata and line.
    fn newest_lines(
        &self,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        lines: usize,
        mut f: impl FnMut(&LabelMap, &LabelMap, &str),
    ) -> Result<(), EvalError> {
        let log = log_query(query)?;
        let streams = self.select_logs_categorized(
            &log,
            start_ns,
            end_ns.saturating_add(1),
            lines,
            Direction::Backward,
        )?;
        // Newest first across streams, as the lines were read.
        let mut all: Vec<_> = streams
            .iter()
            .flat_map(|s| s.entries.iter().map(move |e| (&s.labels, e)))
            .collect();
        all.sort_by_key(|(_, e)| std::cmp::Reverse(e.ts_ns));
        for (stream, e) in all {
            f(stream, &e.structured_metadata, &e.line);
        }
        Ok(())
    }

    /// Loki's `detected_fields`: the fields of the newest `lines` lines of log query `query`
    /// in [start, end] ns, by name, at most `limit` of them.
    pub fn detected_fields(
        &self,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        lines: usize,
        limit: usize,
    ) -> Result<Vec<DetectedField>, EvalError> {
        let mut fields: BTreeMap<String, Field> = BTreeMap::new();
        self.newest_lines(query, start_ns, end_ns, lines, |stream, metadata, line| {
            line_fields(stream, metadata, line, &mut |name, value, source, path| {
                if ERROR_LABELS.contains(&name.as_str())
                    || (!fields.contains_key(&name) && fields.len() >= limit)
                {
                    return;
                }
                let field = fields.entry(name).or_insert_with(|| Field {
                    kind: kind(&value),
                    ..Field::default()
                });
                match source {
                    Source::Json => {
                        field.parsers.insert("json");
                        if field.json_path.is_empty() {
                            field.json_path = path;
                        }
                    }
                    Source::Logfmt => {
                        field.parsers.insert("logfmt");
                    }
                    Source::StructuredMetadata => {}
                }
                field.values.insert(value);
            });
        })?;
        Ok(fields
            .into_iter()
            .map(|(label, f)| DetectedField {
                label,
                kind: f.kind,
                cardinality: f.values.len(),
                parsers: f.parsers.into_iter().collect(),
                json_path: f.json_path,
            })
            .collect())
    }

    /// Loki's `detected_field/<name>/values`: the distinct values of field `name` in the
    /// newest `lines` lines of log query `query` in [start, end] ns, at most `limit`, sorted.
    pub fn detected_field_values(
        &self,
        name: &str,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        lines: usize,
        limit: usize,
    ) -> Result<Vec<String>, EvalError> {
        let mut values = BTreeSet::new();
        self.newest_lines(query, start_ns, end_ns, lines, |stream, metadata, line| {
            line_fields(stream, metadata, line, &mut |field, value, _, _| {
                if field == name && values.len() < limit {
                    values.insert(value);
                }
            });
        })?;
        Ok(values.into_iter().collect())
    }
}

fn log_query(query: &str) -> Result<LogExpr, EvalError> {
    match parse(query)? {
        Expr::Log(l) => Ok(l),
        Expr::Metric(_) => Err(EvalError::BadRequest(
            "only log queries are supported".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_gos_parsers_in_lokis_order() {
        for (v, k) in [
            ("42", "int"),
            ("-7", "int"),
            ("1", "int"),
            ("1.5", "float"),
            ("1e3", "float"),
            ("True", "boolean"),
            ("f", "boolean"),
            ("150ms", "duration"),
            ("1h2m", "duration"),
            ("10 MB", "bytes"),
            ("3KiB", "bytes"),
            ("hello", "string"),
        ] {
            assert_eq!(kind(v), k, "{v}");
        }
    }

    fn fields_of(stream: &[(&str, &str)], line: &str) -> Vec<(String, String, Vec<String>)> {
        let stream: LabelMap = stream
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let metadata: LabelMap = [("trace_id".to_owned(), "t1".to_owned())].into();
        let mut out = Vec::new();
        line_fields(&stream, &metadata, line, &mut |n, v, _, p| {
            out.push((n, v, p))
        });
        out
    }

    #[test]
    fn nested_json_keys_are_flattened_with_their_path() {
        let got = fields_of(
            &[("level", "info")],
            r#"{"level":"info","user":{"id":5,"name.first":"a"},"tags":[1]}"#,
        );
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("trace_id".into(), "t1".into(), vec![]),
                ("level_extracted".into(), "info".into(), path(&["level"])),
                ("user_id".into(), "5".into(), path(&["user", "id"])),
                (
                    "user_name_first".into(),
                    "a".into(),
                    path(&["user", "name.first"])
                ),
            ]
        );
    }

    #[test]
    fn logfmt_pairs_when_the_line_is_not_json() {
        let got = fields_of(&[("app", "a")], r#"msg="two words" took=1.5s app=x"#);
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["trace_id", "msg", "took", "app_extracted"]);
        assert_eq!(got[1].1, "two words");
        let plain = fields_of(&[("app", "a")], "GET /health 200 took 5ms");
        assert_eq!(plain.len(), 1, "words are not fields: {plain:?}");
    }
}
