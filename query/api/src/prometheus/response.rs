//! The Prometheus API envelope: `{"status":"success","data":…}` and
//! `{"status":"error","errorType":…,"error":…}` with the status code Prometheus gives each
//! error type. Every error of the API is turned into a response here and nowhere else.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use promql::QueryError;
use storage::{Classify, ErrorClass};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    BadData,
    Execution,
    Timeout,
    NotFound,
    Unavailable,
    Internal,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::NotFound => "not_found",
            ErrorType::Unavailable => "unavailable",
            ErrorType::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) typ: ErrorType,
    pub(crate) msg: String,
}

impl ApiError {
    pub(crate) fn bad_data(msg: impl Into<String>) -> ApiError {
        ApiError {
            typ: ErrorType::BadData,
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid_param(name: &str, msg: String) -> ApiError {
        ApiError::bad_data(format!("invalid parameter {name:?}: {msg}"))
    }

    pub(crate) fn internal(msg: impl std::fmt::Display) -> ApiError {
        ApiError {
            typ: ErrorType::Internal,
            msg: msg.to_string(),
        }
    }

    pub(crate) fn from_query(e: QueryError) -> ApiError {
        match e {
            QueryError::Parse(msg) => ApiError::invalid_param("query", msg),
            QueryError::Timeout => ApiError {
                typ: ErrorType::Timeout,
                msg: e.to_string(),
            },
            QueryError::Storage(s) => ApiError::from(s),
            QueryError::Execution(_) | QueryError::TooManySamples => ApiError {
                typ: ErrorType::Execution,
                msg: e.to_string(),
            },
        }
    }
}

/// Prometheus's error type for each class of failure.
impl From<storage::StorageError> for ApiError {
    fn from(e: storage::StorageError) -> ApiError {
        let typ = match e.class() {
            ErrorClass::BadInput => ErrorType::BadData,
            ErrorClass::TooLarge => ErrorType::Execution,
            ErrorClass::Timeout => ErrorType::Timeout,
            ErrorClass::NotFound => ErrorType::NotFound,
            ErrorClass::Unavailable => ErrorType::Unavailable,
            ErrorClass::Internal => ErrorType::Internal,
        };
        ApiError {
            typ,
            msg: e.to_string(),
        }
    }
}

/// Prometheus's answer to a query that could not start within its timeout.
impl From<crate::admission::QueueTimeout> for ApiError {
    fn from(e: crate::admission::QueueTimeout) -> ApiError {
        ApiError {
            typ: ErrorType::Timeout,
            msg: e.to_string(),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            status: &'static str,
            #[serde(rename = "errorType")]
            error_type: &'a str,
            error: &'a str,
        }
        let body = Body {
            status: "error",
            error_type: self.typ.as_str(),
            error: &self.msg,
        };
        json_response(
            self.typ.status(),
            serde_json::to_string(&body).unwrap_or_default(),
        )
    }
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"status":"success","data":…}` plus `warnings` when there are any.
pub(crate) fn success<T: Serialize>(data: T, warnings: Vec<String>) -> Response {
    #[derive(Serialize)]
    struct Body<T> {
        status: &'static str,
        data: T,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    }
    match serde_json::to_string(&Body {
        status: "success",
        data,
        warnings,
    }) {
        Ok(s) => json_response(StatusCode::OK, s),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;
