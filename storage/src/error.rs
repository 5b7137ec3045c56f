//! The storage error type returned at the crate boundary. Owns only the error shapes and
//! their messages.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Stored bytes that do not decode: a bug or disk corruption, never bad user input.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// Prometheus's text for the same condition.
    #[error("query processing would load too many samples into memory in query execution")]
    SampleLimit { limit: usize },
    /// A request the storage cannot serve (e.g. an empty label set).
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
