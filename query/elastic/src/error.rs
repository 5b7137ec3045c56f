//! The one error type of the Elasticsearch API and the one place it becomes Elasticsearch's
//! error body (`{"error": {"root_cause": [...], "type", "reason"}, "status"}`) and status.
//! Owns the classification only; the wire layers write the body and status they get here.

use serde_json::{json, Value};
use storage::{Classify, ErrorClass, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum EsError {
    /// A request body or parameter Elasticsearch would refuse while parsing it; `kind` is
    /// its exception type (`parsing_exception`, `x_content_parse_exception`, …).
    #[error("{reason}")]
    Parse { kind: &'static str, reason: String },
    /// A well-formed request asking for something invalid (`illegal_argument_exception`).
    #[error("{0}")]
    IllegalArgument(String),
    #[error("Invalid index name [{index}], {reason}")]
    InvalidIndexName { index: String, reason: String },
    #[error("no such index [{0}]")]
    IndexNotFound(String),
    /// A search that would read more documents than a query may.
    #[error("the search would read more than {0} documents; narrow the time range or the query")]
    TooManyDocuments(usize),
    /// A search that found no query slot in time: Elasticsearch's full search queue.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// A bug: a failed task, a response that could not be built.
    #[error("{0}")]
    Internal(String),
}

impl Classify for EsError {
    fn class(&self) -> ErrorClass {
        match self {
            EsError::Parse { .. }
            | EsError::IllegalArgument(_)
            | EsError::InvalidIndexName { .. } => ErrorClass::BadInput,
            EsError::IndexNotFound(_) => ErrorClass::NotFound,
            EsError::TooManyDocuments(_) => ErrorClass::TooLarge,
            EsError::Rejected(_) => ErrorClass::Unavailable,
            EsError::Storage(e) => e.class(),
            EsError::Internal(_) => ErrorClass::Internal,
        }
    }
}

impl EsError {
    pub fn parse(reason: impl Into<String>) -> EsError {
        EsError::Parse {
            kind: "parsing_exception",
            reason: reason.into(),
        }
    }

    /// Elasticsearch's exception type for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            EsError::Parse { kind, .. } => kind,
            EsError::IllegalArgument(_) => "illegal_argument_exception",
            EsError::InvalidIndexName { .. } => "invalid_index_name_exception",
            EsError::IndexNotFound(_) => "index_not_found_exception",
            // What Elasticsearch answers when a search trips a limit (its circuit breakers
            // and `too_many_buckets` come as this, with a 4xx).
            EsError::TooManyDocuments(_) => "search_phase_execution_exception",
            EsError::Rejected(_) => "es_rejected_execution_exception",
            EsError::Internal(_) => "exception",
            EsError::Storage(e) => match e.class() {
                ErrorClass::Unavailable => "unavailable_shards_exception",
                ErrorClass::Timeout => "timeout_exception",
                _ => "exception",
            },
        }
    }

    /// The HTTP status Elasticsearch answers this error with.
    pub fn status(&self) -> u16 {
        if let EsError::Rejected(_) = self {
            // Shippers and clients back off and retry on 429.
            return 429;
        }
        match self.class() {
            ErrorClass::BadInput | ErrorClass::TooLarge => 400,
            ErrorClass::NotFound => 404,
            ErrorClass::Timeout => 504,
            ErrorClass::Unavailable => 503,
            ErrorClass::Internal => 500,
        }
    }

    /// The `error` object alone (as a bulk item or an msearch response carries it).
    pub fn cause(&self) -> Value {
        let mut cause = json!({"type": self.kind(), "reason": self.to_string()});
        if let EsError::IndexNotFound(index) | EsError::InvalidIndexName { index, .. } = self {
            cause["index"] = json!(index);
            cause["resource.type"] = json!("index_or_alias");
            cause["resource.id"] = json!(index);
        }
        if let EsError::IndexNotFound(_) = self {
            // An index that does not exist has no uuid; Elasticsearch says so.
            cause["index_uuid"] = json!("_na_");
        }
        cause
    }

    /// The whole error body: the cause, repeated as the only root cause, and the status.
    pub fn body(&self) -> Value {
        let cause = self.cause();
        let mut error = cause.clone();
        error["root_cause"] = json!([cause]);
        json!({"error": error, "status": self.status()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_elasticsearch_shape() {
        let e = EsError::IndexNotFound("logs-x".into());
        let b = e.body();
        assert_eq!(b["status"], 404);
        assert_eq!(b["error"]["type"], "index_not_found_exception");
        assert_eq!(b["error"]["reason"], "no such index [logs-x]");
        assert_eq!(
            b["error"]["root_cause"][0]["type"],
            "index_not_found_exception"
        );
        assert_eq!(b["error"]["index"], "logs-x");
        assert_eq!(b["error"]["index_uuid"], "_na_");
        assert_eq!(b["error"]["resource.type"], "index_or_alias");
    }

    #[test]
    fn statuses_follow_the_class() {
        assert_eq!(EsError::parse("x").status(), 400);
        assert_eq!(EsError::TooManyDocuments(1).status(), 400);
        assert_eq!(EsError::Storage(StorageError::Closed).status(), 503);
    }
}
