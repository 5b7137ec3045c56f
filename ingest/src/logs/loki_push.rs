//! Loki's push API, `POST /loki/api/v1/push`: JSON (optionally gzip-encoded) and snappy
//! protobuf (`logproto.PushRequest`, written as prost derives). Owns the wire shapes and the
//! stream-selector parsing of protobuf label strings; answers 204 once records are durable.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use storage::logs::LogRecord;
use storage::{Label, Labels};

use super::LogSink;

mod proto {
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
}

pub(crate) async fn push(State(sink): State<LogSink>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let records = match decode(
        &header("content-type"),
        &header("content-encoding"),
        &body,
        sink.push_max_bytes,
    ) {
        Ok(r) => r,
        Err(PushError::BadRequest(msg)) => {
            return (StatusCode::BAD_REQUEST, msg + "\n").into_response()
        }
    };
    match sink
        .append(crate::metrics::Protocol::LokiPush, records)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!("loki push: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

/// Decodes a push body of at most `max` bytes (decompressed).
pub(crate) fn decode(
    content_type: &str,
    encoding: &str,
    body: &[u8],
    max: usize,
) -> Result<Vec<LogRecord>, PushError> {
    let bad = |m: String| PushError::BadRequest(m);
    let body = match encoding {
        "" | "identity" => body.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
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
    if content_type.starts_with("application/json") {
        decode_json(&body)
    } else {
        // Loki's default: snappy-compressed protobuf (the block format, no Content-Encoding).
        let raw = if encoding.is_empty() {
            snappy(&body, max)?
        } else {
            body
        };
        decode_proto(&raw)
    }
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

fn decode_proto(b: &[u8]) -> Result<Vec<LogRecord>, PushError> {
    let req = <proto::PushRequest as prost::Message>::decode(b)
        .map_err(|e| PushError::BadRequest(format!("protobuf: {e}")))?;
    let mut out = Vec::new();
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
            });
        }
    }
    Ok(out)
}

fn decode_json(b: &[u8]) -> Result<Vec<LogRecord>, PushError> {
    let bad = |m: &str| PushError::BadRequest(m.to_owned());
    let v: serde_json::Value =
        serde_json::from_slice(b).map_err(|e| PushError::BadRequest(format!("json: {e}")))?;
    let streams = v
        .get("streams")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("json: missing \"streams\""))?;
    let mut out = Vec::new();
    for s in streams {
        let labels = s
            .get("stream")
            .and_then(|l| l.as_object())
            .map(|m| {
                Labels::new(
                    m.iter()
                        .filter_map(|(k, v)| Some(Label::new(k, v.as_str()?)))
                        .collect(),
                )
            })
            .unwrap_or_default();
        if labels.is_empty() {
            return Err(bad("error at least one label pair is required per stream"));
        }
        for value in s
            .get("values")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let parts = value
                .as_array()
                .ok_or_else(|| bad("json: a value is not an array"))?;
            let ts = parts
                .first()
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| bad("json: timestamp is not a string of nanoseconds"))?;
            let line = parts
                .get(1)
                .and_then(|l| l.as_str())
                .ok_or_else(|| bad("json: line is not a string"))?;
            let mut metadata: Vec<(String, String)> = parts
                .get(2)
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            metadata.sort();
            out.push(LogRecord {
                ts_ns: ts,
                labels: labels.clone(),
                line: line.to_owned(),
                metadata,
            });
        }
    }
    Ok(out)
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

    fn decode(ct: &str, encoding: &str, body: &[u8]) -> Result<Vec<LogRecord>, PushError> {
        super::decode(ct, encoding, body, crate::logs::DEFAULT_PUSH_MAX_BYTES)
    }

    #[test]
    fn bodies_over_the_limit_are_refused_decompressed() {
        let body = br#"{"streams":[{"stream":{"app":"a"},"values":[["1","hello"]]}]}"#;
        let max = body.len();
        assert!(super::decode("application/json", "", body, max).is_ok());
        let want = Err(PushError::BadRequest(format!(
            "request body larger than {} bytes",
            max - 1
        )));
        assert_eq!(super::decode("application/json", "", body, max - 1), want);
        let snappy = snap::raw::Encoder::new().compress_vec(body).unwrap();
        assert!(snappy.len() < max - 1);
        assert_eq!(
            super::decode("application/json", "snappy", &snappy, max - 1),
            want
        );
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
}
