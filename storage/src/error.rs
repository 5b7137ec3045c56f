//! The one error type of the storage crate, for every store, and the classification every
//! error of novamon maps to on the wire ([`ErrorClass`]). Owns only the error shapes, their
//! messages and their classes.

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
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    /// A write after the store began shutting down.
    #[error("the store is shut down")]
    Closed,
    /// A log read selected more records than its caller's budget.
    #[error("the selection holds more than {limit} records")]
    TooManyRecords { limit: usize },
    /// Log records waited too long for the indexer to catch up.
    #[error("log indexing is {records} records behind; retry later")]
    Backlog { records: u64 },
}

/// What kind of failure an error is, whatever its crate: each wire format maps a class to its
/// status code once, so a storage failure is a 5xx everywhere and bad input a 4xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed or asks for something impossible.
    BadInput,
    NotFound,
    /// The request is over a size, sample or item budget.
    TooLarge,
    Timeout,
    /// A transient condition (shutting down, out of disk): worth retrying.
    Unavailable,
    /// A bug or corruption.
    Internal,
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

impl Classify for StorageError {
    fn class(&self) -> ErrorClass {
        match self {
            StorageError::SampleLimit { .. } | StorageError::TooManyRecords { .. } => {
                ErrorClass::TooLarge
            }
            StorageError::Invalid(_) => ErrorClass::BadInput,
            StorageError::Closed | StorageError::Backlog { .. } | StorageError::Io(_) => {
                ErrorClass::Unavailable
            }
            StorageError::Rocks(e) => rocks_class(e.kind()),
            StorageError::Index(tantivy::TantivyError::IoError(_)) => ErrorClass::Unavailable,
            StorageError::Corrupt(_) | StorageError::Index(_) | StorageError::Directory(_) => {
                ErrorClass::Internal
            }
        }
    }
}

/// RocksDB reports a full disk as an I/O error (and, until it has recovered on its own once
/// space is back, refuses writes with that same error): like the other transient kinds, a
/// retry can succeed, so senders must keep the data and retry.
fn rocks_class(kind: rocksdb::ErrorKind) -> ErrorClass {
    use rocksdb::ErrorKind as K;
    match kind {
        K::IOError | K::Busy | K::TryAgain | K::TimedOut | K::ShutdownInProgress => {
            ErrorClass::Unavailable
        }
        _ => ErrorClass::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real RocksDB error of each kind, as RocksDB formats them.
    fn rocks_error(path: &std::path::Path, create: bool) -> StorageError {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(create);
        match rocksdb::DB::open(&opts, path) {
            Ok(_) => panic!("opening {} should fail", path.display()),
            Err(e) => StorageError::Rocks(e),
        }
    }

    #[test]
    fn io_failures_are_retryable_and_other_rocksdb_failures_internal() {
        // A lock file that is a directory cannot be opened: an I/O error, as ENOSPC is.
        let locked = tempfile::tempdir().unwrap();
        std::fs::create_dir(locked.path().join("LOCK")).unwrap();
        let io = rocks_error(locked.path(), true);
        assert!(io.to_string().contains("IO error"), "{io}");
        assert_eq!(io.class(), ErrorClass::Unavailable);

        let dir = tempfile::tempdir().unwrap();
        let invalid = rocks_error(&dir.path().join("absent"), false);
        assert!(
            invalid.to_string().contains("Invalid argument"),
            "{invalid}"
        );
        assert_eq!(invalid.class(), ErrorClass::Internal);
    }
}
