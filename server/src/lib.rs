//! The novamon server: the configuration file ([`config`]), the command line ([`cli`]),
//! start-up and wiring of the stores, ingest listeners, engines and HTTP APIs ([`serve`]), and
//! access control and transport of the listeners ([`web`]). `main.rs` is the binary's entry
//! point and this library's only user, besides the fuzz targets (`tests/fuzz`), which feed the
//! configuration and web config parsers.
//!
//! The server only wires: storage layouts belong to `storage`, wire formats to `ingest`,
//! query semantics and the read-side HTTP APIs to the crates under `query/`.

pub mod alertmanager;
pub mod cli;
pub mod config;
mod cross_site;
mod export;
mod heap;
mod postgres;
mod push;
mod rules;
mod scrape;
mod self_metrics;
pub mod serve;
mod ui_status;
pub mod web;
