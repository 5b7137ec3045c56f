//! Elasticsearch's bulk API in: `POST /_bulk` and `POST /<index>/_bulk` (NDJSON action and
//! source lines, gzip), answering Elasticsearch's `{"took", "errors", "items"}` with a status
//! per item. It is a wire format in like Loki push, so it lives in `ingest` and appends
//! through the same [`LogSink`] (limits, `detected_level`, redaction, durability before the
//! answer, forwarding through the store's outbox); searching what it stored is
//! `query/elastic`'s, whose error shape ([`elastic::EsError`]) and index naming it shares.
//!
//! A document becomes a log record as a Fluentd event does (`logs::Mapping`): the time field
//! (`@timestamp` unless configured) is the timestamp, the index the stream label `index`,
//! the configured `logs.label_keys` stream labels, `log` or `message` the line and the other
//! fields structured metadata (nested objects by dotted name); a document with neither line
//! field is kept whole as a JSON line (without its time and label fields).
//!
//! Unlike Elasticsearch, which refuses a whole request over one malformed action line, each
//! bad line (broken JSON, an action line missing, an unsupported action, a document too large
//! or out of the store's time bounds) is an item error of its own, and the request's valid
//! items are stored. Must not read the log store.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use elastic::EsError;
use serde_json::{json, Map, Value};
use storage::logs::LogRecord;
use storage::{Label, Labels};

use crate::logs::LogSink;
use crate::metrics::{Protocol, Signal};

#[derive(Clone)]
struct BulkState {
    sink: LogSink,
    time_field: Arc<str>,
}

/// The bulk endpoints, relative to wherever the Elasticsearch API is mounted. `time_field`
/// names the documents' timestamp field.
pub fn routes(sink: LogSink, time_field: &str) -> Router {
    let limit = sink.push_max_bytes();
    Router::new()
        .route("/_bulk", post(bulk).put(bulk))
        .route("/{index}/_bulk", post(bulk_index).put(bulk_index))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(BulkState {
            sink,
            time_field: time_field.into(),
        })
}

async fn bulk(State(s): State<BulkState>, headers: HeaderMap, body: Bytes) -> Response {
    respond(run(s, None, headers, body).await)
}

async fn bulk_index(
    State(s): State<BulkState>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(run(s, Some(index), headers, body).await)
}

/// The one place a bulk outcome becomes a response: the items, or Elasticsearch's error.
fn respond(result: Result<Value, EsError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => {
            if e.status() >= 500 {
                tracing::warn!("elasticsearch bulk: {e}");
            }
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(e.body())).into_response()
        }
    }
}

async fn run(
    s: BulkState,
    index: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Value, EsError> {
    let started = std::time::Instant::now();
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let max = s.sink.push_max_bytes();
    let label_keys = s.sink.mapping().label_keys.clone();
    let bounds = s.sink.bounds();
    let time_field = s.time_field.clone();
    // Decompressing and decoding a large body takes a while: off the async workers.
    let decoded = tokio::task::spawn_blocking(move || {
        let body = decompress(&encoding, &body, max)?;
        let opts = Options {
            default_index: index.as_deref(),
            time_field: &time_field,
            label_keys: &label_keys,
            max_document_bytes: bounds.max_line_bytes,
            now_ns: now_ns(),
        };
        Ok::<_, EsError>(decode(&body, &opts))
    })
    .await
    .map_err(|e| EsError::Internal(format!("decoding task failed: {e}")))??;
    let Decoded {
        mut items,
        records: candidates,
    } = decoded;
    let window = bounds.window();
    let mut records = Vec::with_capacity(candidates.len());
    for (item, r) in candidates {
        match window.check(&r) {
            Ok(()) => records.push(r),
            Err(e) => {
                items[item].outcome = Err(EsError::IllegalArgument(e.to_string()));
            }
        }
    }
    let refused = items.iter().filter(|i| i.outcome.is_err()).count();
    s.sink
        .counters()
        .rejected(Signal::Logs, Protocol::ElasticBulk, refused);
    if !records.is_empty() {
        s.sink.append(Protocol::ElasticBulk, records).await?;
    }
    Ok(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": refused > 0,
        "items": items.iter().enumerate().map(|(n, i)| i.to_json(n)).collect::<Vec<_>>(),
    }))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn decompress(encoding: &str, body: &[u8], max: usize) -> Result<Vec<u8>, EsError> {
    match encoding {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            // One byte past the limit tells "exactly at the limit" from "over it".
            flate2::read::MultiGzDecoder::new(body)
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| EsError::Parse {
                    kind: "parse_exception",
                    reason: format!("gzip: {e}"),
                })?;
            if out.len() > max {
                return Err(EsError::IllegalArgument(format!(
                    "request body larger than {max} bytes"
                )));
            }
            Ok(out)
        }
        other => Err(EsError::IllegalArgument(format!(
            "unsupported Content-Encoding [{other}]"
        ))),
    }
}

/// What decoding needs besides the body.
pub(crate) struct Options<'a> {
    /// The index of the URL (`/<index>/_bulk`), for actions that name none.
    pub(crate) default_index: Option<&'a str>,
    pub(crate) time_field: &'a str,
    pub(crate) label_keys: &'a [String],
    /// A source line longer than this is refused (the store's longest line).
    pub(crate) max_document_bytes: usize,
    /// The time of documents without one.
    pub(crate) now_ns: i64,
}

/// One action of the request and what became of it.
#[derive(Debug)]
pub(crate) struct Item {
    /// `index`, `create`, `update` or `delete`, as the action line said (`index` when it could
    /// not be read).
    pub(crate) op: &'static str,
    pub(crate) index: String,
    pub(crate) id: String,
    pub(crate) outcome: Result<(), EsError>,
}

impl Item {
    fn to_json(&self, seq: usize) -> Value {
        let mut body = json!({"_index": self.index, "_id": self.id});
        match &self.outcome {
            Ok(()) => {
                body["_version"] = json!(1);
                body["result"] = json!("created");
                body["_shards"] = json!({"total": 1, "successful": 1, "failed": 0});
                body["_seq_no"] = json!(seq);
                body["_primary_term"] = json!(1);
                body["status"] = json!(201);
            }
            Err(e) => {
                body["status"] = json!(e.status());
                body["error"] = e.cause();
            }
        }
        json!({ self.op: body })
    }
}

/// The items of a request in order, and the records of its good ones with their item's
/// position.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) items: Vec<Item>,
    pub(crate) records: Vec<(usize, LogRecord)>,
}

/// Reads an NDJSON bulk body; never fails as a whole (see the module doc).
pub(crate) fn decode(body: &[u8], opts: &Options<'_>) -> Decoded {
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .peekable();
    let mut out = Decoded {
        items: Vec::new(),
        records: Vec::new(),
    };
    let mut generated = 0u64;
    while let Some((n, line)) = lines.next() {
        let action = match action(line) {
            Ok(a) => a,
            Err(reason) => {
                // A broken action line most likely still has its source line after it: that
                // line goes with it, unless it is itself an action.
                if lines.peek().is_some_and(|(_, next)| action(next).is_err()) {
                    lines.next();
                }
                out.items.push(Item {
                    op: "index",
                    index: opts.default_index.unwrap_or_default().to_owned(),
                    id: String::new(),
                    outcome: Err(EsError::IllegalArgument(format!(
                        "Malformed action/metadata line [{}], {reason}",
                        n + 1
                    ))),
                });
                continue;
            }
        };
        let (op, meta) = action;
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .or(opts.default_index)
            .unwrap_or_default()
            .to_owned();
        let id = match meta.get("_id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                generated += 1;
                format!("{:x}{:06x}", opts.now_ns, generated)
            }
        };
        let mut item = Item {
            op,
            index,
            id,
            outcome: Ok(()),
        };
        // `delete` has no source line; the others have one.
        let source = if op == "delete" {
            None
        } else {
            match lines.next() {
                Some((_, l)) => Some(l),
                None => {
                    item.outcome = Err(EsError::IllegalArgument(
                        "The bulk request must be terminated by a newline [\\n]: the last action has no source line".into(),
                    ));
                    out.items.push(item);
                    continue;
                }
            }
        };
        item.outcome = if matches!(op, "update" | "delete") {
            Err(EsError::IllegalArgument(format!(
                "[{op}] is not supported: logs are append-only; use index or create"
            )))
        } else if item.index.is_empty() {
            Err(EsError::Parse {
                kind: "action_request_validation_exception",
                reason: "Validation Failed: 1: index is missing;".into(),
            })
        } else {
            elastic::index::validate_name(&item.index)
        };
        if item.outcome.is_ok() {
            let source = source.unwrap_or_default();
            match document(source, &item.index, opts) {
                Ok(r) => out.records.push((out.items.len(), r)),
                Err(e) => item.outcome = Err(e),
            }
        }
        out.items.push(item);
    }
    out
}

/// An action line: its operation and metadata object.
fn action(line: &[u8]) -> Result<(&'static str, Map<String, Value>), String> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| format!("expected a JSON object ({e})"))?;
    let Value::Object(obj) = v else {
        return Err("expected START_OBJECT".into());
    };
    let mut it = obj.into_iter();
    let (Some((k, Value::Object(meta))), None) = (it.next(), it.next()) else {
        return Err("expected one action with an object of metadata".into());
    };
    let op = match k.as_str() {
        "index" => "index",
        "create" => "create",
        "update" => "update",
        "delete" => "delete",
        other => return Err(format!("Unknown action [{other}]")),
    };
    Ok((op, meta))
}

fn document(line: &[u8], index: &str, opts: &Options<'_>) -> Result<LogRecord, EsError> {
    let failed = |reason: String| EsError::Parse {
        kind: "document_parsing_exception",
        reason,
    };
    if line.len() > opts.max_document_bytes {
        return Err(EsError::IllegalArgument(format!(
            "document of {} bytes is larger than the largest accepted ({} bytes)",
            line.len(),
            opts.max_document_bytes
        )));
    }
    let v: Value =
        serde_json::from_slice(line).map_err(|e| failed(format!("failed to parse: {e}")))?;
    let Value::Object(mut doc) = v else {
        return Err(failed(
            "failed to parse: the document is not a JSON object".into(),
        ));
    };
    let ts_ns = match doc.remove(opts.time_field) {
        None | Some(Value::Null) => opts.now_ns,
        Some(v) => timestamp_ns(&v).ok_or_else(|| {
            failed(format!(
                "failed to parse field [{}] of type [date] in document: [{v}]",
                opts.time_field
            ))
        })?,
    };
    let mut labels = vec![Label::new(elastic::INDEX_LABEL, index)];
    for k in opts.label_keys {
        if k == elastic::INDEX_LABEL {
            continue;
        }
        let scalar = match doc.get(k.as_str()) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            _ => None,
        };
        if let Some(value) = scalar {
            doc.remove(k.as_str());
            labels.push(Label::new(crate::logs::sanitize_label_name(k), value));
        }
    }
    let line_key = ["log", "message"]
        .into_iter()
        .find(|k| doc.get(*k).is_some_and(Value::is_string));
    let (line, metadata) = match line_key.and_then(|k| doc.remove(k)) {
        Some(Value::String(line)) => {
            let mut flat = std::collections::BTreeMap::new();
            elastic::doc::flatten("", &Value::Object(doc), &mut flat);
            let metadata = flat
                .into_iter()
                .map(|(k, v)| (k, elastic::doc::text(&v)))
                .collect();
            (line, metadata)
        }
        _ => (Value::Object(doc).to_string(), Vec::new()),
    };
    Ok(LogRecord {
        ts_ns,
        labels: Labels::new(labels),
        line,
        metadata,
    })
}

/// RFC 3339 (with or without a zone, `Z` assumed), a date alone, or epoch milliseconds.
fn timestamp_ns(v: &Value) -> Option<i64> {
    if let Some(ms) = v.as_f64() {
        return Some((ms * 1e6) as i64);
    }
    let s = v.as_str()?;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return t.and_utc().timestamp_nanos_opt();
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt();
    }
    s.parse::<i64>().ok().map(|ms| ms.saturating_mul(1_000_000))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn opts<'a>(label_keys: &'a [String]) -> Options<'a> {
        Options {
            default_index: Some("dflt"),
            time_field: "@timestamp",
            label_keys,
            max_document_bytes: 200,
            now_ns: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn actions_documents_and_mapping() {
        let keys = vec!["host".to_owned()];
        let body = br#"{"index":{"_index":"app","_id":"1"}}
{"@timestamp":"2023-11-14T22:13:20.5Z","message":"hello","host":"h1","http":{"status":500}}
{"create":{}}
{"log":"from fluent bit","level":"info"}

{"index":{"_index":"app"}}
{"@timestamp":1700000000000,"a":1,"host":"h2"}
"#;
        let d = decode(body, &opts(&keys));
        assert_eq!(d.items.len(), 3);
        assert!(d.items.iter().all(|i| i.outcome.is_ok()), "{:?}", d.items);
        assert_eq!(d.items[0].id, "1");
        assert_eq!(d.items[1].op, "create");
        assert_eq!(d.items[1].index, "dflt");
        let r = &d.records[0].1;
        assert_eq!(r.ts_ns, 1_700_000_000_500_000_000);
        assert_eq!(r.line, "hello");
        assert_eq!(r.labels.get("index"), Some("app"));
        assert_eq!(r.labels.get("host"), Some("h1"));
        assert_eq!(r.metadata, [("http.status".to_owned(), "500".to_owned())]);
        let r = &d.records[1].1;
        assert_eq!(r.line, "from fluent bit");
        assert_eq!(r.ts_ns, 1_700_000_000_000_000_000);
        let r = &d.records[2].1;
        assert_eq!(r.line, r#"{"a":1}"#);
        assert_eq!(r.labels.get("host"), Some("h2"));
        assert!(r.metadata.is_empty());
    }

    #[test]
    fn bad_lines_are_item_errors_and_keep_the_good_ones() {
        let body = br#"{"index":{"_index":"app"}}
{"message":"good 1"}
{"index":{"_index":"app"}
{"message":"after a broken action"}
{"message":"no action line"}
{"index":{"_index":"app"}}
{"message": "broken
{"index":{"_index":"Bad"}}
{"message":"bad index"}
{"delete":{"_index":"app","_id":"x"}}
{"index":{"_index":"app"}}
{"message":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}
{"index":{"_index":"app"}}
{"@timestamp":"yesterday","message":"bad time"}
{"index":{"_index":"app"}}
{"message":"good 2"}
"#;
        let d = decode(body, &opts(&[]));
        let statuses: Vec<u16> = d
            .items
            .iter()
            .map(|i| i.outcome.as_ref().map_or_else(|e| e.status(), |()| 201))
            .collect();
        assert_eq!(
            statuses,
            [201, 400, 400, 400, 400, 400, 400, 400, 201],
            "{:?}",
            d.items
        );
        let lines: Vec<&str> = d.records.iter().map(|(_, r)| r.line.as_str()).collect();
        assert_eq!(lines, ["good 1", "good 2"]);
        assert_eq!(d.records[1].0, 8);
        let j = d.items[6].to_json(6);
        assert_eq!(j["index"]["error"]["type"], "illegal_argument_exception");
        assert_eq!(
            d.items[4].outcome.as_ref().unwrap_err().kind(),
            "invalid_index_name_exception"
        );
    }

    #[test]
    fn gzip_bodies() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let plain = b"{\"index\":{}}\n{\"message\":\"x\"}\n";
        gz.write_all(plain).unwrap();
        let z = gz.finish().unwrap();
        assert_eq!(decompress("gzip", &z, 100).unwrap(), plain);
        assert!(decompress("gzip", &z, 10).is_err());
        assert!(decompress("gzip", b"not gzip", 100).is_err());
        assert!(decompress("br", b"", 100).is_err());
    }

    proptest! {
        /// Whatever the body, every action line read becomes exactly one item, and every
        /// record belongs to an item that succeeded.
        #[test]
        fn any_body_gives_consistent_items(lines in prop::collection::vec(prop_oneof![
            Just(r#"{"index":{"_index":"app"}}"#.to_owned()),
            Just(r#"{"create":{}}"#.to_owned()),
            Just(r#"{"delete":{"_id":"1"}}"#.to_owned()),
            Just(r#"{"message":"m"}"#.to_owned()),
            Just(r#"{"@timestamp":5,"a":{"b":[1]}}"#.to_owned()),
            "[ -~]{0,12}",
        ], 0..12)) {
            let body = lines.join("\n");
            let d = decode(body.as_bytes(), &opts(&[]));
            prop_assert!(d.items.len() <= lines.len());
            for (i, _) in &d.records {
                prop_assert!(d.items[*i].outcome.is_ok());
            }
            let ok = d.items.iter().filter(|i| i.outcome.is_ok()).count();
            prop_assert_eq!(ok, d.records.len());
        }
    }
}
