//! Why an OTLP request failed, and how each transport reports it. Owns the mapping to HTTP
//! status codes and gRPC codes (the OTLP spec's: malformed → 400 / InvalidArgument, too large →
//! 413 / ResourceExhausted). A store failure maps by its class: transient (a full disk,
//! shutting down) → 503 / Unavailable, which clients retry; input the store refuses → 400 /
//! InvalidArgument; a bug or corruption → 500 / Internal, which a retry would not mend.

use storage::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub(crate) enum OtlpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}: use gzip or none")]
    UnsupportedEncoding(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("internal: {0}")]
    Internal(String),
}

impl OtlpError {
    pub(crate) fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            OtlpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OtlpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            OtlpError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            OtlpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            OtlpError::Storage(e) => match e.class() {
                ErrorClass::BadInput => StatusCode::BAD_REQUEST,
                ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorClass::Unavailable | ErrorClass::Timeout => StatusCode::SERVICE_UNAVAILABLE,
                ErrorClass::NotFound | ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            OtlpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn grpc_status(&self) -> tonic::Status {
        match self {
            OtlpError::BadRequest(_)
            | OtlpError::UnsupportedMediaType(_)
            | OtlpError::UnsupportedEncoding(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            OtlpError::TooLarge { .. } => tonic::Status::resource_exhausted(self.to_string()),
            OtlpError::Storage(e) => match e.class() {
                ErrorClass::BadInput => tonic::Status::invalid_argument(self.to_string()),
                ErrorClass::TooLarge => tonic::Status::resource_exhausted(self.to_string()),
                ErrorClass::Unavailable | ErrorClass::Timeout => {
                    tonic::Status::unavailable(self.to_string())
                }
                ErrorClass::NotFound | ErrorClass::Internal => {
                    tonic::Status::internal(self.to_string())
                }
            },
            OtlpError::Internal(_) => tonic::Status::internal(self.to_string()),
        }
    }

    /// google.rpc.Status code, for the OTLP/HTTP error body.
    pub(crate) fn rpc_code(&self) -> i32 {
        self.grpc_status().code() as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tonic::Code;

    #[test]
    fn store_failures_map_by_their_class() {
        let cases = [
            (
                storage::StorageError::Invalid("empty label name".into()),
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            (
                storage::StorageError::Closed,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
            ),
            (
                storage::StorageError::Corrupt("bad key".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        ];
        for (e, http, grpc) in cases {
            let e = OtlpError::Storage(e);
            assert_eq!(
                (e.http_status(), e.grpc_status().code()),
                (http, grpc),
                "{e}"
            );
        }
        let e = OtlpError::Internal("task panicked".into());
        assert_eq!(e.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
