//! The HTTP status of each [`ErrorClass`], for the APIs whose errors are a status and a
//! message (Loki, Jaeger, Tempo). The Prometheus API maps classes to its own error types in
//! `prometheus::response`.

use axum::http::StatusCode;
use storage::ErrorClass;

pub(crate) fn http_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadInput => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
