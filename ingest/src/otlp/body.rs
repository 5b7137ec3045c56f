//! OTLP/HTTP request bodies: content negotiation, bounded gzip decompression and decoding of
//! protobuf or OTLP/JSON into the request message. Owns nothing else.

use std::io::Read;

use axum::http::{header, HeaderMap};
use prost::Message;
use serde::de::DeserializeOwned;

use super::error::OtlpError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Protobuf,
    Json,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

pub(crate) fn format(headers: &HeaderMap) -> Result<Format, OtlpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not ASCII>"))
        .unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(OtlpError::UnsupportedMediaType(ct.to_owned())),
    }
}

/// The body as sent, decompressed, at most `limit` bytes either way.
pub(crate) fn decompress(
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, OtlpError> {
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("<not ASCII>"))
        .unwrap_or("");
    match enc.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            // One byte past the limit tells "exactly at the limit" from "over it".
            flate2::read::GzDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| OtlpError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(OtlpError::TooLarge { limit });
            }
            Ok(out)
        }
        _ => Err(OtlpError::UnsupportedEncoding(enc.to_owned())),
    }
}

pub(crate) fn decode<T: Message + Default + DeserializeOwned>(
    format: Format,
    bytes: &[u8],
) -> Result<T, OtlpError> {
    match format {
        Format::Protobuf => {
            T::decode(bytes).map_err(|e| OtlpError::BadRequest(format!("invalid protobuf: {e}")))
        }
        Format::Json => serde_json::from_slice(bytes)
            .map_err(|e| OtlpError::BadRequest(format!("invalid OTLP/JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use std::io::Write;

    fn headers(ct: &str, enc: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        if let Some(e) = enc {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        h
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn content_types_are_negotiated() {
        assert_eq!(
            format(&headers("application/x-protobuf", None)).unwrap(),
            Format::Protobuf
        );
        assert_eq!(
            format(&headers("application/json; charset=utf-8", None)).unwrap(),
            Format::Json
        );
        assert!(matches!(
            format(&headers("text/plain", None)),
            Err(OtlpError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn gzip_is_bounded_and_garbage_is_a_bad_request() {
        let h = headers("application/json", Some("gzip"));
        assert_eq!(decompress(&h, &gzip(b"abc"), 3).unwrap(), b"abc");
        assert!(matches!(
            decompress(&h, &gzip(&[0; 100]), 99),
            Err(OtlpError::TooLarge { limit: 99 })
        ));
        assert!(matches!(
            decompress(&h, b"not gzip", 99),
            Err(OtlpError::BadRequest(_))
        ));
        assert!(matches!(
            decompress(&headers("application/json", Some("br")), b"", 9),
            Err(OtlpError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn otlp_json_with_hex_ids_decodes_and_junk_does_not() {
        let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
        let req: ExportTraceServiceRequest = decode(Format::Json, json).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        assert!(
            decode::<ExportTraceServiceRequest>(Format::Json, b"{\"resourceSpans\": 7}").is_err()
        );
        assert!(
            decode::<ExportTraceServiceRequest>(Format::Protobuf, &[0xff, 0xff, 0xff]).is_err()
        );
    }
}
