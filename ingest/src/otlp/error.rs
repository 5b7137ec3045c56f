//! Why an OTLP request failed, and how each transport reports it. Owns the mapping to HTTP
//! status codes and gRPC codes (the OTLP spec's: malformed → 400 / InvalidArgument, too large →
//! 413 / ResourceExhausted, store failure → 500 / Unavailable so clients retry).

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
            OtlpError::Storage(_) | OtlpError::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            OtlpError::Storage(_) | OtlpError::Internal(_) => {
                tonic::Status::unavailable(self.to_string())
            }
        }
    }

    /// google.rpc.Status code, for the OTLP/HTTP error body.
    pub(crate) fn rpc_code(&self) -> i32 {
        self.grpc_status().code() as i32
    }
}
