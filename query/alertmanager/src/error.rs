//! The crate's one error type: every way the built-in Alertmanager or the sender refuses a
//! config, a state directory or a request. The wire layer maps it to status codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// alertmanager.yml (or the built-in default) does not hold.
    #[error("invalid Alertmanager config: {0}")]
    Config(String),
    /// The `alerting:` section (external Alertmanagers, relabelling) does not hold.
    #[error("invalid alerting config: {0}")]
    Sender(String),
    /// The state directory (notification log, silences) cannot be opened or read.
    #[error("Alertmanager state in {path}: {msg}")]
    State { path: PathBuf, msg: String },
    /// A matcher string in Alertmanager's notation does not parse.
    #[error("{0}")]
    InvalidMatchers(String),
    /// Posted alerts that were rejected (the valid ones in the same batch are kept).
    #[error("{}", .0.join("; "))]
    InvalidAlerts(Vec<String>),
    /// No silence has this id.
    #[error("{0}")]
    SilenceNotFound(String),
    /// A silence that cannot be created or updated as posted.
    #[error("{0}")]
    InvalidSilence(String),
}
