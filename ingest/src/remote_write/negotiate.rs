//! Content negotiation for remote-write: picks the protocol version from `Content-Type` and
//! checks `Content-Encoding`. Owns only header interpretation; it never reads the body.

use std::fmt;

use super::RemoteWriteError;

const MEDIA_TYPE: &str = "application/x-protobuf";
const PROTO_V1: &str = "prometheus.WriteRequest";
const PROTO_V2: &str = "io.prometheus.write.v2.Request";

/// The remote-write protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `prometheus.WriteRequest`: all-or-nothing writes, no response statistics.
    V1,
    /// `io.prometheus.write.v2.Request`: partial writes, `X-Prometheus-Remote-Write-*-Written` headers.
    V2,
}

impl Protocol {
    /// The version as the specs name it, also used as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "1.0",
            Protocol::V2 => "2.0",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps a `Content-Type` value to the protocol. A missing header means 1.0, as in Prometheus,
/// so that senders predating the 2.0 spec keep working.
pub(crate) fn protocol(content_type: Option<&str>) -> Result<Protocol, RemoteWriteError> {
    let Some(content_type) = content_type else {
        return Ok(Protocol::V1);
    };
    let unsupported = |why: String| RemoteWriteError::UnsupportedMediaType(why);
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case(MEDIA_TYPE) {
        return Err(unsupported(format!(
            "expected {MEDIA_TYPE} as the first (media) part, got {content_type} content-type"
        )));
    }
    let mut proto = None;
    for param in parts {
        let Some((key, value)) = param.split_once('=') else {
            return Err(unsupported(format!(
                "expected parameters to be key-values, got {param} in {content_type} content-type"
            )));
        };
        if key.trim().eq_ignore_ascii_case("proto") {
            proto = Some(value.trim().trim_matches('"'));
        }
    }
    match proto {
        None | Some(PROTO_V1) => Ok(Protocol::V1),
        Some(PROTO_V2) => Ok(Protocol::V2),
        Some(other) => Err(unsupported(format!(
            "got {content_type} content type; unknown remote write protobuf message {other}, \
             supported: {PROTO_V1}, {PROTO_V2}"
        ))),
    }
}

/// Only snappy is accepted. A missing header means snappy, as in Prometheus.
pub(crate) fn check_encoding(content_encoding: Option<&str>) -> Result<(), RemoteWriteError> {
    match content_encoding.map(str::trim) {
        None => Ok(()),
        Some(enc) if enc.eq_ignore_ascii_case("snappy") => Ok(()),
        Some(enc) => Err(RemoteWriteError::UnsupportedMediaType(format!(
            "{enc} encoding (compression) is not accepted by this server; only snappy is acceptable"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_select_the_protocol() {
        assert_eq!(protocol(None).unwrap(), Protocol::V1);
        assert_eq!(
            protocol(Some("application/x-protobuf")).unwrap(),
            Protocol::V1
        );
        assert_eq!(
            protocol(Some("application/x-protobuf;proto=prometheus.WriteRequest")).unwrap(),
            Protocol::V1
        );
        assert_eq!(
            protocol(Some(
                "application/x-protobuf;proto=io.prometheus.write.v2.Request"
            ))
            .unwrap(),
            Protocol::V2
        );
        assert_eq!(
            protocol(Some(
                "Application/X-Protobuf; proto=\"io.prometheus.write.v2.Request\""
            ))
            .unwrap(),
            Protocol::V2
        );
    }

    #[test]
    fn other_content_types_are_unsupported() {
        for ct in [
            "application/json",
            "",
            "application/x-protobuf;proto=io.prometheus.write.v3.Request",
            "application/x-protobuf;proto",
            "text/plain;proto=prometheus.WriteRequest",
        ] {
            let err = protocol(Some(ct)).unwrap_err();
            assert!(
                matches!(err, RemoteWriteError::UnsupportedMediaType(_)),
                "{ct}: {err}"
            );
        }
    }

    #[test]
    fn only_snappy_encoding_is_accepted() {
        assert!(check_encoding(None).is_ok());
        assert!(check_encoding(Some("snappy")).is_ok());
        assert!(check_encoding(Some("SNAPPY")).is_ok());
        let err = check_encoding(Some("gzip")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gzip encoding (compression) is not accepted by this server; only snappy is acceptable"
        );
    }
}
