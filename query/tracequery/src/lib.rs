//! Trace queries through `storage::traces::TraceReader`, for the Jaeger and Tempo APIs.
//!
//! - [`search`]: walks the index the caller picked, newest first, within a scan budget, and keeps
//!   the traces with a span that satisfies the caller's predicate; trace ids and durations in
//!   the notations both APIs take.
//! - [`traceql`]: TraceQL parsed and evaluated on spans and traces; [`spansets`]: TraceQL search with Tempo's spansets.
//! - [`metrics`]: TraceQL metrics (`| rate() by (…)` and the rest, `| compare({ … })`) over a
//!   window, per step.
//! - [`dependencies`]: the service graph Jaeger's dependencies view draws, from the metrics
//!   generator's service-graph counters or from the spans.
//!
//! Knows nothing of HTTP or of either API's response shapes.

mod dependencies;
pub mod metrics;
pub mod search;
pub mod spansets;
pub mod traceql;

#[cfg(test)]
mod test_traces;

pub use dependencies::{dependencies, service_graph_dependencies, DependencyLink};
pub use search::{find_traces, hex, parse_go_duration, parse_trace_id, SearchOutcome};
