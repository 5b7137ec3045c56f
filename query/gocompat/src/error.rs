//! The crate's one error type, worded as Go's programs word it.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A template that does not parse, in text/template's words.
    #[error("{0}")]
    TemplateParse(String),
    /// A template that fails while executing, in text/template's words.
    #[error("{0}")]
    TemplateExecute(String),
    /// A duration that is not in Prometheus's notation, in its words.
    #[error("not a valid duration string: {0:?}")]
    InvalidDuration(String),
}
