//! Scraping: novamon collects by itself, as Prometheus's scrape manager does.
//!
//! - `config`: the `scrape_configs` entries ([`ScrapeConfig`]) and their load-time checks.
//! - `discovery`: `static_configs`, `file_sd_configs`, `http_sd_configs` and `dns_sd_configs`
//!   target groups, and their `prometheus_sd_*` self-metrics ([`SdMetrics`]).
//! - `target`: a discovered address to a scrape target (labels after `relabel_configs`, URL,
//!   interval, offset).
//! - `client`: the HTTP request and response of one scrape (keep-alive, TLS, credentials,
//!   gzip, timeout, body size limit).
//! - `exposition`: the Prometheus text and OpenMetrics parsers.
//! - `scrape_loop`: one loop per target: samples, report series, staleness, limits.
//! - `manager`: the pools and their loops ([`ScrapeManager`]), reloads, what the targets API
//!   reads.
//!
//! Samples and OpenMetrics exemplars go through `storage::Appendable`, as remote-write's do.
//! Serves no HTTP: the targets API's wire shapes are `query/api`'s.

pub(crate) mod client;
pub(crate) mod config;
mod discovery;
pub mod exposition;
mod manager;
mod scrape_loop;
mod target;
#[cfg(test)]
mod tests;

pub use config::{parse_bytes, ScrapeConfig};
pub use discovery::{dns_answer, http_sd_answer, Discovered, SdMetrics};
pub use manager::{ActiveTarget, DroppedTarget, Prepared, ScrapeManager, DEFAULT_MAX_BODY_BYTES};
pub use scrape_loop::{Health, TargetStatus};
pub use target::{go_duration, Target};
