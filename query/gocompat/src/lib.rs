//! What novamon must do exactly as Go does, because the programs it replaces are written in Go
//! and their users see the difference: Go's text/template ([`template`]), Go's float formatting
//! ([`fmt`]), Go's time printing ([`time`]) and Go's duration and go-humanize byte-size notations ([`units`]).
//!
//! Used by the PromQL and LogQL engines, the rules and the Alertmanager. Knows nothing of
//! metrics, logs, storage or HTTP.

mod error;
pub mod fmt;
pub mod template;
pub mod time;
pub mod units;

pub use error::Error;
