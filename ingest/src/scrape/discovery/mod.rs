//! Where targets come from: `static_configs` as written (read by the manager), and the
//! service discoveries, one module each:
//!
//! - `file`: `file_sd_configs`, target files polled and re-read when they change.
//! - `http`: `http_sd_configs`, a URL fetched every `refresh_interval` by a task of its own.
//!
//! Each hands the manager [`Discovered`] groups; what becomes of a group is `target`'s.

mod file;
mod http;

use storage::Label;

use super::config::TargetGroup;

pub(crate) use file::{FileDiscovery, POLL};
pub(crate) use http::{HttpDiscovery, HttpSource};

/// A group with the meta labels its discovery adds.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovered {
    pub group: TargetGroup,
    pub meta: Vec<Label>,
}
