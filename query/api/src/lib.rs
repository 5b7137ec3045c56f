//! The read-side wire layer: each module translates one HTTP API's requests into engine and
//! store calls and their results into that API's exact wire shapes, status codes and error
//! envelopes, and does nothing else.
//!
//! - [`prometheus`]: `/api/v1/…` as Prometheus serves it (queries, series and labels,
//!   metadata, status, rules and alerts) over the PromQL engine, the TSDB and the rule manager.
//! - [`loki`]: `/loki/api/v1/…` over the LogQL engine, with live tail.
//! - [`jaeger`], [`tempo`]: the Jaeger query service and the Tempo API over trace queries.
//! - [`alertmanager_v2`]: Alertmanager's `/api/v2/…` over the built-in Alertmanager.
//! - [`sql`]: `POST /api/v1/sql` over the SQL engine (JSON rows, CSV or Arrow IPC).
//! - [`elastic`]: Elasticsearch's REST API (search, multi-search, listings, the shippers'
//!   probes) over the Elasticsearch semantics of the `elastic` crate.
//! - [`postgres`]: the Postgres wire protocol over the same SQL engine (not HTTP: the server
//!   hands it the connections of its `listeners.postgres`).
//! - `admission`: the query gate PromQL and LogQL queries and trace searches wait in
//!   ([`QueryGate`]).
//! - `form`, `handler`, `trace_http`, `status`: what several APIs share (Go's `Request.Form`,
//!   the blocking-pool route adapter, the Jaeger/Tempo parameter and error helpers, the HTTP
//!   status of each error class).
//!
//! Ingest endpoints are the `ingest` crate's; evaluation is the engines'.

mod admission;
pub mod alertmanager_v2;
pub mod elastic;
mod form;
mod handler;
pub mod jaeger;
pub mod loki;
pub mod postgres;
pub mod prometheus;
pub mod pushgateway;
pub mod sql;
mod status;
pub mod tempo;
mod trace_http;

pub use admission::{QueryGate, DEFAULT_MAX_CONCURRENCY};
pub use trace_http::TraceLimits;

#[cfg(test)]
mod trace_fixture;
