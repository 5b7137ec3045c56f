//! Everything that can go wrong with a remote-write request, and the one place that turns it
//! into an HTTP status. Knows nothing of how requests are decoded or written.

use std::fmt;

use axum::http::StatusCode;
use storage::{Classify, ErrorClass, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// Content-Type or Content-Encoding that negotiation does not accept.
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("decompressed request body of {len} bytes exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { len: usize, limit: usize },
    #[error("reading request body: {0}")]
    ReadBody(String),
    #[error("decompressing snappy body: {0}")]
    Snappy(#[from] snap::Error),
    #[error("decoding protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A body that would decode to too much memory, found before decoding it.
    #[error("decoding protobuf: {0}")]
    Wire(#[from] crate::wire::WireError),
    #[error("too many series in the request (actual: {count}, limit: {limit})")]
    TooManySeries { count: usize, limit: usize },
    /// Protobuf that decodes but cannot be interpreted (e.g. a symbol reference out of range).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Series or samples that cannot be written, one line each.
    #[error("{0}")]
    BadData(ErrorList),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RemoteWriteError {
    /// The HTTP status for this error. Only conditions a retry can fix are 5xx: senders retry
    /// 5xx and drop 4xx, and a 4xx batch would fail the same way forever. A store that cannot
    /// write for now (a full disk) answers 503, so the sender keeps the batch and retries.
    ///
    /// Samples refused by the series limit are `BadData` (400), as Prometheus's receiver
    /// answers samples it will not append: a 429 is dropped just the same by a Prometheus
    /// sender on its default `retry_on_http_429: false`, and with that option on it would be
    /// retried for as long as the limit holds, stalling the existing series queued behind it.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RemoteWriteError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RemoteWriteError::BodyTooLarge { .. }
            | RemoteWriteError::DecompressedTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RemoteWriteError::ReadBody(_)
            | RemoteWriteError::Snappy(_)
            | RemoteWriteError::Protobuf(_)
            | RemoteWriteError::Wire(_)
            | RemoteWriteError::TooManySeries { .. }
            | RemoteWriteError::Malformed(_)
            | RemoteWriteError::BadData(_)
            | RemoteWriteError::Storage(StorageError::Invalid(_)) => StatusCode::BAD_REQUEST,
            RemoteWriteError::Storage(e) if e.class() == ErrorClass::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RemoteWriteError::Storage(_) | RemoteWriteError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// Error lines for a response body, bounded so that a request full of bad series cannot
/// produce a response larger than itself (senders log only the first KiB anyway).
#[derive(Debug, Default)]
pub struct ErrorList {
    lines: Vec<String>,
    omitted: usize,
}

impl ErrorList {
    const MAX_LINES: usize = 100;

    pub(crate) fn push(&mut self, line: String) {
        if self.lines.len() < Self::MAX_LINES {
            self.lines.push(line);
        } else {
            self.omitted += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

impl From<String> for ErrorList {
    fn from(line: String) -> ErrorList {
        let mut list = ErrorList::default();
        list.push(line);
        list
    }
}

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(line)?;
        }
        if self.omitted > 0 {
            write!(f, "\n(and {} more errors)", self.omitted)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_list_is_bounded() {
        let mut list = ErrorList::default();
        for i in 0..ErrorList::MAX_LINES + 5 {
            list.push(format!("e{i}"));
        }
        let text = list.to_string();
        assert_eq!(text.lines().count(), ErrorList::MAX_LINES + 1);
        assert!(text.starts_with("e0\ne1\n"));
        assert!(text.ends_with("\n(and 5 more errors)"));
    }

    #[test]
    fn only_storage_failures_are_retryable() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(
            RemoteWriteError::Storage(StorageError::Io(full)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let corrupt = StorageError::Corrupt("bad chunk".into());
        assert_eq!(
            RemoteWriteError::Storage(corrupt).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let invalid = StorageError::Invalid("empty label set".into());
        assert_eq!(
            RemoteWriteError::Storage(invalid).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            RemoteWriteError::Malformed("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            RemoteWriteError::BodyTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
