//! The values a query returns and the errors it fails with: the engine's public result types.
//! Owns no evaluation logic.

use storage::{Classify, ErrorClass, Labels, Sample, StorageError};

use crate::float_histogram::FloatHistogram;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    /// Evaluation timestamp (ms).
    pub t: i64,
    /// The float value (0 when the sample is a histogram).
    pub v: f64,
    /// Set when the sample is a native histogram.
    pub h: Option<FloatHistogram>,
}

/// A native histogram at a timestamp (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramPoint {
    pub t: i64,
    pub h: FloatHistogram,
}

/// One series of a range vector (matrix).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    /// Histogram points, sorted by t (a timestamp holds a float or a histogram).
    pub histograms: Vec<HistogramPoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<InstantSample>),
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// Prometheus's name for the result type (`resultType` in the HTTP API).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// Prometheus's warning annotations ("PromQL warning: ...").
    pub warnings: Vec<String>,
    /// Prometheus's info annotations ("PromQL info: ...").
    pub infos: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse or does not type-check.
    #[error("{0}")]
    Parse(String),
    /// The query is valid but fails while evaluating.
    #[error("{0}")]
    Execution(String),
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    #[error("query timed out in expression evaluation")]
    Timeout,
    #[error(transparent)]
    Storage(StorageError),
}

impl Classify for QueryError {
    fn class(&self) -> ErrorClass {
        match self {
            QueryError::Parse(_) | QueryError::Execution(_) => ErrorClass::BadInput,
            QueryError::TooManySamples => ErrorClass::TooLarge,
            QueryError::Timeout => ErrorClass::Timeout,
            QueryError::Storage(e) => e.class(),
        }
    }
}

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::SampleLimit { .. } => QueryError::TooManySamples,
            other => QueryError::Storage(other),
        }
    }
}
