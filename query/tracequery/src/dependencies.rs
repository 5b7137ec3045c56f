//! Service dependencies as Jaeger's `/api/dependencies` reports them, from one of two sources:
//! - the edge table ingest keeps: the service-graph counters the metrics generator writes
//!   (`traces_service_graph_request_total` by `client` and `server`), exact over any window
//!   and read without touching a span;
//! - a walk over the window's spans, newest first within a budget: for each span whose parent
//!   is stored and belongs to another service, one call from the parent's service to the
//!   child's (for stores without the generator's series).
//!
//! Owns both readings; the generator itself is `ingest::spanmetrics`'.

use std::collections::HashMap;
use std::ops::ControlFlow;

use storage::traces::{Seek, TraceReader};
use storage::{is_stale_nan, MatchOp, Matcher, Querier, SelectHints, StorageError};

/// The counter of completed requests between two services.
const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
/// How far before a window a counter's previous sample is looked for: several of the
/// generator's collection intervals.
const BASELINE_LOOKBACK_MS: i64 = 10 * 60 * 1000;

/// Calls from `parent` service to `child` service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub calls: u64,
}

/// The links between services from spans that started in [start, end] ns, sorted by parent
/// then child. Reads at most `max_spans` spans (newest first) and answers with what they show.
pub fn dependencies(
    store: &dyn TraceReader,
    start_ns: u64,
    end_ns: u64,
    max_spans: usize,
) -> Result<Vec<DependencyLink>, StorageError> {
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    let mut inspected = 0usize;
    store.scan(&Seek::Time, start_ns, end_ns, &mut |c| {
        inspected += 1;
        if inspected > max_spans {
            return Ok(ControlFlow::Break(()));
        }
        let Some(child) = c.load()? else {
            return Ok(ControlFlow::Continue(()));
        };
        let Ok(parent_id) = <[u8; 8]>::try_from(child.span.parent_span_id.as_slice()) else {
            return Ok(ControlFlow::Continue(()));
        };
        if let Some(parent) = store.span(&c.trace_id, &parent_id)? {
            let (p, ch) = (parent.origin.service_name(), child.origin.service_name());
            if p != ch {
                *counts.entry((p.to_owned(), ch.to_owned())).or_default() += 1;
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(sorted_links(counts))
}

fn sorted_links(counts: HashMap<(String, String), u64>) -> Vec<DependencyLink> {
    let mut links: Vec<DependencyLink> = counts
        .into_iter()
        .map(|((parent, child), calls)| DependencyLink {
            parent,
            child,
            calls,
        })
        .collect();
    links.sort();
    links
}

/// The links between services from the service-graph counters: for each `client` → `server`
/// pair, the requests counted in [start, end] ns (the counters' increase, counting resets as
/// Prometheus's `increase` does, without extrapolation). Pairs with no request are left out.
pub fn service_graph_dependencies(
    metrics: &dyn Querier,
    start_ns: u64,
    end_ns: u64,
) -> Result<Vec<DependencyLink>, StorageError> {
    let (start_ms, end_ms) = ((start_ns / 1_000_000) as i64, (end_ns / 1_000_000) as i64);
    let name = Matcher::new(MatchOp::Equal, "__name__", REQUEST_TOTAL)
        .map_err(|e| StorageError::Invalid(e.to_string()))?;
    let hints = SelectHints {
        start: start_ms.saturating_sub(BASELINE_LOOKBACK_MS),
        end: end_ms,
        // Series are decoded one at a time and folded into one number each: what is held is
        // one series' samples, whatever the window.
        limit: usize::MAX,
        ..SelectHints::default()
    };
    let mut counts: HashMap<(String, String), f64> = HashMap::new();
    for series in metrics.select(&[name], &hints)? {
        let series = series?.into_samples()?;
        let (Some(client), Some(server)) =
            (series.labels.get("client"), series.labels.get("server"))
        else {
            continue;
        };
        let calls = increase(
            series
                .samples
                .iter()
                .filter(|s| !is_stale_nan(s.v))
                .map(|s| (s.t, s.v)),
            start_ms,
        );
        *counts
            .entry((client.to_owned(), server.to_owned()))
            .or_default() += calls;
    }
    let calls = counts
        .into_iter()
        .map(|(pair, calls)| (pair, calls.round() as u64))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    Ok(sorted_links(calls))
}

/// A counter's increase over the samples after `start_ms`, from its last sample at or before
/// `start_ms` (from zero when the series began inside the window: the generator writes a
/// pair's first sample at the collection that first counted it).
fn increase(samples: impl Iterator<Item = (i64, f64)>, start_ms: i64) -> f64 {
    let mut previous: Option<f64> = None;
    let mut total = 0.0;
    for (t, v) in samples {
        if t > start_ms {
            let base = previous.unwrap_or(0.0);
            // A counter that went down was reset: it counted `v` since.
            total += if v >= base { v - base } else { v };
        }
        previous = Some(v);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_starts_at_the_sample_before_the_window_and_counts_resets() {
        // Before the window: 10; inside: 12, 15, reset to 3, 4.
        assert_eq!(
            increase(
                [(0, 10.0), (100, 12.0), (200, 15.0), (300, 3.0), (400, 4.0)].into_iter(),
                50
            ),
            9.0
        );
        // Born inside the window: counted from zero.
        assert_eq!(increase([(100, 2.0), (200, 5.0)].into_iter(), 50), 5.0);
        // Nothing after the start.
        assert_eq!(increase([(0, 7.0)].into_iter(), 50), 0.0);
    }
}
