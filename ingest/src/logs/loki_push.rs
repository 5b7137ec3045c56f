//! Loki's push API, `POST /loki/api/v1/push`: JSON (optionally gzip-encoded) and snappy
//! protobuf (`logproto.PushRequest`, written as prost derives). Owns the wire shapes and the
//! stream-selector parsing of protobuf label strings; answers 204 once records are durable.

use std::collections::BTreeMap;
use std::io::Read;
use std::mem::size_of;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use storage::logs::LogRecord;
use storage::{Classify, ErrorClass, Label, Labels};

use super::{LogSink, Records};
use crate::wire::{Field, Shape};

pub(crate) mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        /// A stream selector: `{a="b", c="d"}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PushError {
    #[error("{0}")]
    BadRequest(String),
    /// A content type a browser may send cross-site without asking (a form or plain text):
    /// refused so that no web page can push logs through a visitor's browser.
    #[error("unsupported Content-Type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The store cannot write for now (a full disk): worth retrying.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<storage::StorageError> for PushError {
    fn from(e: storage::StorageError) -> PushError {
        match e.class() {
            ErrorClass::Unavailable => PushError::Unavailable(e.to_string()),
            _ => PushError::Internal(e.to_string()),
        }
    }
}

impl From<crate::wire::WireError> for PushError {
    fn from(e: crate::wire::WireError) -> PushError {
        match e {
            crate::wire::WireError::Malformed(_) => PushError::BadRequest(format!("protobuf: {e}")),
            crate::wire::WireError::TooLarge { .. } => PushError::BadRequest(e.to_string()),
        }
    }
}

/// The one place a push outcome becomes an HTTP response: Loki's statuses, plain text.
fn respond(result: Result<(), PushError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ PushError::BadRequest(_)) => {
            (StatusCode::BAD_REQUEST, e.to_string() + "\n").into_response()
        }
        Err(e @ PushError::UnsupportedMediaType(_)) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string() + "\n").into_response()
        }
        // A store that cannot write for now (a full disk) logs that itself, once per
        // episode; the 503 makes Promtail and the Loki clients keep the batch and retry.
        Err(e @ PushError::Unavailable(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string() + "\n").into_response()
        }
        Err(e @ PushError::Internal(_)) => {
            tracing::error!("loki push: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string() + "\n").into_response()
        }
    }
}

pub(crate) async fn push(State(sink): State<LogSink>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let format = match format(&header("content-type")) {
        Ok(f) => f,
        Err(e) => return respond(Err(e)),
    };
    let encoding = header("content-encoding");
    let budget = Budget {
        max_bytes: sink.push_max_bytes,
        max_expansion: sink.max_expansion,
    };
    // Decompressing and decoding a large body takes a while: off the async workers.
    let decoded =
        tokio::task::spawn_blocking(move || decode(format, &encoding, &body, budget)).await;
    let records = match decoded {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return respond(Err(e)),
        Err(e) => {
            let e = PushError::Internal(format!("decoding task failed: {e}"));
            return respond(Err(e));
        }
    };
    // As Loki's distributor: entries within bounds are stored, the others listed in a 400.
    let window = sink.bounds.window();
    let mut refused = Vec::new();
    let records: Vec<LogRecord> = records
        .into_iter()
        .filter(|r| match window.check(r) {
            Ok(()) => true,
            Err(e) => {
                refused.push(e.to_string());
                false
            }
        })
        .collect();
    let protocol = crate::metrics::Protocol::LokiPush;
    sink.counters
        .rejected(crate::metrics::Signal::Logs, protocol, refused.len());
    if !records.is_empty() {
        if let Err(e) = sink.append(protocol, records).await {
            return respond(Err(e.into()));
        }
    }
    if refused.is_empty() {
        return respond(Ok(()));
    }
    let mut message = refused[..refused.len().min(MAX_ERROR_LINES)].join("\n");
    if refused.len() > MAX_ERROR_LINES {
        message += &format!("\n(and {} more errors)", refused.len() - MAX_ERROR_LINES);
    }
    respond(Err(PushError::BadRequest(message)))
}

/// Error lines in one response, so that a request of bad entries cannot make a larger answer.
const MAX_ERROR_LINES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Protobuf,
}

/// Loki reads `application/json` (parameters allowed) as JSON and anything else as snappy
/// protobuf; the simple types of HTML forms are refused instead.
fn format(content_type: &str) -> Result<Format, PushError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Format::Json),
        "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data" => {
            Err(PushError::UnsupportedMediaType(content_type.to_owned()))
        }
        _ => Ok(Format::Protobuf),
    }
}

/// How large a push may be: its body decompressed, and the records it decodes to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) max_bytes: usize,
    pub(crate) max_expansion: usize,
}

impl Budget {
    fn decoded_bytes(&self, body_len: usize) -> usize {
        crate::wire::budget(body_len, self.max_expansion, crate::EXPANSION_FLOOR_BYTES)
    }
}

/// Decodes a push body of at most `budget.max_bytes` bytes (decompressed).
pub(crate) fn decode(
    format: Format,
    encoding: &str,
    body: &[u8],
    budget: Budget,
) -> Result<Vec<LogRecord>, PushError> {
    let max = budget.max_bytes;
    let bad = |m: String| PushError::BadRequest(m);
    let body = match encoding {
        "" | "identity" => body.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            // One byte past the limit tells "exactly at the limit" from "over it".
            flate2::read::MultiGzDecoder::new(body)
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("gzip: {e}")))?;
            out
        }
        "snappy" => snappy(body, max)?,
        other => return Err(bad(format!("unsupported Content-Encoding {other:?}"))),
    };
    if body.len() > max {
        return Err(bad(format!("request body larger than {max} bytes")));
    }
    let mut records = Records::new(budget.decoded_bytes(body.len()));
    match format {
        Format::Json => {
            crate::wire::scan_json(&body, JSON_ELEMENT, budget.decoded_bytes(body.len()))?;
            decode_json(&body, &mut records)?
        }
        Format::Protobuf => {
            // Loki's default: snappy-compressed protobuf (the block format, no Content-Encoding).
            let raw = if encoding.is_empty() {
                snappy(&body, max)?
            } else {
                body
            };
            crate::wire::scan(&raw, &PUSH_REQUEST, budget.decoded_bytes(raw.len()))?;
            decode_proto(&raw, &mut records)?;
        }
    }
    Ok(records.into_records())
}

// What the protobuf messages decode to, for the walk that bounds a body before decoding.
static LABEL_PAIR: Shape = Shape {
    name: "LabelPair",
    size: size_of::<proto::LabelPair>(),
    fields: &[],
};
static TIMESTAMP: Shape = Shape {
    name: "Timestamp",
    size: size_of::<proto::Timestamp>(),
    fields: &[],
};
static ENTRY: Shape = Shape {
    name: "Entry",
    size: size_of::<proto::Entry>(),
    fields: &[
        (1, Field::Message(&TIMESTAMP)),
        (3, Field::Message(&LABEL_PAIR)),
    ],
};
static STREAM: Shape = Shape {
    name: "Stream",
    size: size_of::<proto::Stream>(),
    fields: &[(2, Field::Message(&ENTRY))],
};
static PUSH_REQUEST: Shape = Shape {
    name: "PushRequest",
    size: size_of::<proto::PushRequest>(),
    fields: &[(1, Field::Message(&STREAM))],
};

fn too_large(limit: usize) -> PushError {
    crate::wire::WireError::TooLarge { limit }.into()
}

fn snappy(b: &[u8], max: usize) -> Result<Vec<u8>, PushError> {
    let len =
        snap::raw::decompress_len(b).map_err(|e| PushError::BadRequest(format!("snappy: {e}")))?;
    if len > max {
        return Err(PushError::BadRequest(format!(
            "request body larger than {max} bytes"
        )));
    }
    snap::raw::Decoder::new()
        .decompress_vec(b)
        .map_err(|e| PushError::BadRequest(format!("snappy: {e}")))
}

fn decode_proto(b: &[u8], out: &mut Records) -> Result<(), PushError> {
    let req = <proto::PushRequest as prost::Message>::decode(b)
        .map_err(|e| PushError::BadRequest(format!("protobuf: {e}")))?;
    for s in req.streams {
        let labels = parse_selector(&s.labels).map_err(PushError::BadRequest)?;
        for e in s.entries {
            let ts = e.timestamp.map_or(0, |t| {
                t.seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.nanos))
            });
            let mut metadata: Vec<_> = e
                .structured_metadata
                .into_iter()
                .map(|p| (p.name, p.value))
                .collect();
            metadata.sort();
            out.push(LogRecord {
                ts_ns: ts,
                labels: labels.clone(),
                line: e.line,
                metadata,
            })
            .map_err(too_large)?;
        }
    }
    Ok(())
}

/// Loki's JSON push body, decoded straight into typed values (no JSON tree).
#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<JsonEntry>,
}

/// The most one element of a JSON array in a push decodes to, for the scan before decoding.
const JSON_ELEMENT: usize = if size_of::<JsonStream>() > size_of::<JsonEntry>() {
    size_of::<JsonStream>()
} else {
    size_of::<JsonEntry>()
};

/// `[timestamp_ns_string, line, {structured metadata}?]`
#[derive(Deserialize)]
struct JsonEntry(
    String,
    String,
    #[serde(default)] Option<BTreeMap<String, String>>,
);

fn decode_json(b: &[u8], out: &mut Records) -> Result<(), PushError> {
    let bad = |m: &str| PushError::BadRequest(m.to_owned());
    let push: JsonPush =
        serde_json::from_slice(b).map_err(|e| PushError::BadRequest(format!("json: {e}")))?;
    for s in push.streams {
        let labels = Labels::new(
            s.stream
                .into_iter()
                .map(|(k, v)| Label::new(k, v))
                .collect(),
        );
        if labels.is_empty() {
            return Err(bad("error at least one label pair is required per stream"));
        }
        for JsonEntry(ts, line, metadata) in s.values {
            let ts = ts
                .parse::<i64>()
                .map_err(|_| bad("json: timestamp is not a string of nanoseconds"))?;
            // BTreeMap order is the sorted order records keep.
            let metadata = metadata.unwrap_or_default().into_iter().collect();
            out.push(LogRecord {
                ts_ns: ts,
                labels: labels.clone(),
                line,
                metadata,
            })
            .map_err(too_large)?;
        }
    }
    Ok(())
}

/// Parses `{a="b", c="d"}` (Go-quoted values) into labels.
fn parse_selector(s: &str) -> Result<Labels, String> {
    let err = || format!("error parsing labels {s:?}");
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(err)?;
    let mut labels = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(err)?;
        let name = rest[..eq].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err());
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(err)?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(err()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c)) => value.push(c),
                    None => return Err(err()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push(Label::new(name, value));
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').map_or(rest, str::trim_start);
    }
    if labels.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    Ok(Labels::new(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn budget(max_bytes: usize) -> Budget {
        Budget {
            max_bytes,
            max_expansion: crate::DEFAULT_MAX_EXPANSION,
        }
    }

    fn decode(ct: &str, encoding: &str, body: &[u8]) -> Result<Vec<LogRecord>, PushError> {
        super::decode(
            format(ct)?,
            encoding,
            body,
            budget(crate::logs::DEFAULT_PUSH_MAX_BYTES),
        )
    }

    #[test]
    fn bodies_over_the_limit_are_refused_decompressed() {
        let body = br#"{"streams":[{"stream":{"app":"a"},"values":[["1","hello"]]}]}"#;
        let max = body.len();
        assert!(super::decode(Format::Json, "", body, budget(max)).is_ok());
        let want = Err(PushError::BadRequest(format!(
            "request body larger than {} bytes",
            max - 1
        )));
        assert_eq!(super::decode(Format::Json, "", body, budget(max - 1)), want);
        let snappy = snap::raw::Encoder::new().compress_vec(body).unwrap();
        assert!(snappy.len() < max - 1);
        assert_eq!(
            super::decode(Format::Json, "snappy", &snappy, budget(max - 1)),
            want
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, body).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            super::decode(Format::Json, "gzip", &gz, budget(max - 1)),
            want
        );
    }

    /// Short entries of a stream with long labels: each record copies the labels, so the
    /// records would be hundreds of times the body.
    #[test]
    fn records_are_bounded_relative_to_the_body() {
        let labels = format!(r#"{{"app":"{}"}}"#, "x".repeat(4096));
        let values = vec![r#"["1",""]"#; 20_000].join(",");
        let body = format!(r#"{{"streams":[{{"stream":{labels},"values":[{values}]}}]}}"#);
        let err = super::decode(Format::Json, "", body.as_bytes(), budget(1 << 30)).unwrap_err();
        assert!(
            matches!(&err, PushError::BadRequest(m) if m.contains("would decode to more than")),
            "{err}"
        );
        // The same stream with a few entries is fine.
        let few = format!(r#"{{"streams":[{{"stream":{labels},"values":[["1",""]]}}]}}"#);
        assert_eq!(
            super::decode(Format::Json, "", few.as_bytes(), budget(1 << 30))
                .unwrap()
                .len(),
            1
        );
    }

    /// Empty entries are 2 bytes of protobuf and a hundred decoded: refused before decoding.
    #[test]
    fn protobuf_of_empty_entries_is_refused_before_decoding() {
        let entries = [0x12, 0x00].repeat(1 << 20);
        let mut st = vec![0x0a, 0x09];
        st.extend_from_slice(br#"{app="a"}"#);
        st.extend_from_slice(&entries);
        let mut req = vec![0x0a];
        prost::encoding::encode_varint(st.len() as u64, &mut req);
        req.extend_from_slice(&st);
        let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
        let err = super::decode(Format::Protobuf, "", &body, budget(64 << 20)).unwrap_err();
        assert!(
            matches!(&err, PushError::BadRequest(m) if m.contains("would decode to more than")),
            "{err}"
        );
    }

    /// `{}` streams are three bytes of JSON and a struct each: refused before serde decodes.
    #[test]
    fn json_of_empty_streams_is_refused_before_decoding() {
        let body = format!(r#"{{"streams":[{}]}}"#, vec!["{}"; 1 << 20].join(","));
        let err = super::decode(Format::Json, "", body.as_bytes(), budget(64 << 20)).unwrap_err();
        assert!(
            matches!(&err, PushError::BadRequest(m) if m.contains("would decode to more than")),
            "{err}"
        );
    }

    #[test]
    fn content_types_follow_loki_and_form_types_are_refused() {
        assert_eq!(format("application/json; charset=utf-8"), Ok(Format::Json));
        assert_eq!(format("Application/JSON"), Ok(Format::Json));
        assert_eq!(format("application/x-protobuf"), Ok(Format::Protobuf));
        assert_eq!(format(""), Ok(Format::Protobuf));
        for ct in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                format(ct),
                Err(PushError::UnsupportedMediaType(ct.to_owned())),
                "{ct}"
            );
        }
    }

    #[test]
    fn json_push_with_structured_metadata() {
        let body = br#"{"streams":[{"stream":{"app":"a"},"values":[["1700000000000000001","hello",{"trace_id":"t1"}],["2","x"]]}]}"#;
        let recs = decode("application/json", "", body).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_ns, 1_700_000_000_000_000_001);
        assert_eq!(recs[0].labels, Labels::from_pairs([("app", "a")]));
        assert_eq!(
            recs[0].metadata,
            vec![("trace_id".to_owned(), "t1".to_owned())]
        );
        assert!(decode(
            "application/json",
            "",
            br#"{"streams":[{"stream":{},"values":[["1","x"]]}]}"#
        )
        .is_err());
        assert!(decode(
            "application/json",
            "",
            br#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#
        )
        .is_err());
    }

    #[test]
    fn snappy_protobuf_push() {
        let req = proto::PushRequest {
            streams: vec![proto::Stream {
                labels: r#"{app="a", msg="say \"hi\""}"#.into(),
                entries: vec![proto::Entry {
                    timestamp: Some(proto::Timestamp {
                        seconds: 2,
                        nanos: 5,
                    }),
                    line: "l".into(),
                    structured_metadata: vec![proto::LabelPair {
                        name: "k".into(),
                        value: "v".into(),
                    }],
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        let recs = decode("application/x-protobuf", "", &body).unwrap();
        assert_eq!(recs[0].ts_ns, 2_000_000_005);
        assert_eq!(
            recs[0].labels,
            Labels::from_pairs([("app", "a"), ("msg", "say \"hi\"")])
        );
        assert_eq!(recs[0].metadata, vec![("k".into(), "v".into())]);
        assert!(decode("application/x-protobuf", "", b"not snappy").is_err());
    }

    #[test]
    fn selector_parsing_rejects_garbage() {
        assert!(parse_selector("{}").is_err());
        assert!(parse_selector("app=a").is_err());
        assert!(parse_selector(r#"{app="a""#).is_err());
        assert_eq!(
            parse_selector(r#"{ a = "1" ,b="2"}"#).unwrap(),
            Labels::from_pairs([("a", "1"), ("b", "2")])
        );
    }

    async fn post(app: &axum::Router, ct: &str, body: String) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let req = axum::http::Request::post("/loki/api/v1/push")
            .header("content-type", ct)
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Entries the store would never return (time 0, -1, i64::MIN, years ahead) are refused
    /// with Loki's 400 and its texts; the others in the request are stored. Form content
    /// types are refused (415) before anything is read.
    #[tokio::test]
    async fn push_refuses_out_of_bounds_entries_and_form_content_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            storage::logs::LogStore::open(dir.path(), Default::default()).unwrap(),
        );
        let app = crate::logs::routes(LogSink::new(store.clone(), Default::default()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let ahead = now + 10 * 365 * 86_400 * 1_000_000_000;
        let body = format!(
            r#"{{"streams":[{{"stream":{{"app":"a"}},"values":[["{now}","kept"],["0","x"],["-1","x"],["{}","x"],["{ahead}","x"]]}}]}}"#,
            i64::MIN
        );
        let (status, text) = post(&app, "application/json", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let lines: Vec<&str> = text.trim_end().lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with(
            "entry for stream '{app=\"a\"}' has timestamp too old: 1970-01-01T00:00:00Z, oldest acceptable timestamp is: "
        ), "{text}");
        assert!(
            lines[3].starts_with("entry for stream '{app=\"a\"}' has timestamp too new: "),
            "{text}"
        );
        store.sync().unwrap();
        let q = storage::logs::LogQuery {
            start_ns: i64::MIN,
            end_ns: i64::MAX,
            ..Default::default()
        };
        let mut stored = Vec::new();
        store
            .scan(&q, storage::logs::Direction::Forward, &mut |r| {
                stored.push(r.line);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(stored, vec!["kept".to_owned()]);
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let (status, _) = post(&app, ct, body.clone()).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        }
    }
}
