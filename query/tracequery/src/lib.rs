//! Trace queries through `storage::traces::TraceReader`, for the Jaeger and Tempo APIs.
//!
//! - [`search`]: walks the index the caller picked, newest first, within a scan budget, and keeps
//!   the traces with a span that satisfies the caller's predicate; trace ids and durations in
//!   the notations both APIs take.
//! - [`traceql`]: the TraceQL subset Grafana's Tempo data source sends, parsed and evaluated
//!   per span; [`spansets`]: TraceQL search with Tempo's spansets.
//! - [`dependencies`]: the service graph Jaeger's dependencies view draws.
//!
//! Knows nothing of HTTP or of either API's response shapes.

mod dependencies;
pub mod search;
pub mod spansets;
pub mod traceql;

pub use dependencies::{dependencies, DependencyLink};
pub use search::{find_traces, hex, parse_go_duration, parse_trace_id, SearchOutcome};
