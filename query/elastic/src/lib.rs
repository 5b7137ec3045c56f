//! Elasticsearch's search semantics over novamon's log store, free of HTTP: what a search
//! request means and what it answers, as Elasticsearch 8 would. The wire layer
//! (`query/api/src/elastic`) only routes requests here and writes the JSON back; the bulk
//! decoder (`ingest::elastic`) uses the index naming and error shape from here.
//!
//! - [`error`] holds [`EsError`], its status classification and Elasticsearch's error body.
//! - [`index`] holds index names (what Elasticsearch accepts) and index patterns (`logs-*,-x`),
//!   which select streams by their `index` label.
//! - [`doc`] holds a stored log record seen as an Elasticsearch document (`_source`, fields).
//! - [`dsl`] holds the query DSL model (`bool`, `range`, `term(s)`, `match`, `match_phrase`,
//!   `exists`, `query_string`, …) and its evaluation on a document.
//! - [`lucene`] holds the `query_string` (Lucene) parser into the DSL model.
//! - [`aggs`] holds aggregations (`date_histogram`, `terms`, `histogram`, metric aggregations)
//!   computed over the matching documents.
//! - [`search`] holds a search request run through the log store's read contract
//!   (`storage::logs::LogReader::scan`, the same read LogQL's line selection uses) and the
//!   index listings (`_cat/indices`, `_mapping`, `_field_caps`), and index deletion.
//!
//! Must not: serve HTTP, write to a store (but delete an index's streams, `DELETE /<index>`,
//! through `storage::logs::LogDeleter`), or keep a second index of its own.

pub mod aggs;
pub mod doc;
pub mod dsl;
pub mod error;
pub mod index;
pub mod lucene;
pub mod search;

pub use error::EsError;
pub use search::{DeleteOptions, IndexInfo, SearchOptions, Searcher};

/// The version novamon claims: clients (Beats, Logstash, the official clients, Grafana)
/// refuse servers below 7.10 or outside the 8.x wire compatibility they expect.
pub const VERSION: &str = "8.11.0";
/// The Lucene version Elasticsearch 8.11 ships, which `GET /` reports beside it.
pub const LUCENE_VERSION: &str = "9.8.0";
/// The stream label an index name becomes.
pub const INDEX_LABEL: &str = "index";
