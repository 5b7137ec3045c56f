//! Service dependencies as Jaeger's `/api/dependencies` reports them: for each span in the
//! window whose parent is stored and belongs to another service, one call from the parent's
//! service to the child's. Owns the walk and its budget.

use std::collections::HashMap;
use std::ops::ControlFlow;

use storage::traces::{Seek, TraceReader};
use storage::StorageError;

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
    let mut links: Vec<DependencyLink> = counts
        .into_iter()
        .map(|((parent, child), calls)| DependencyLink {
            parent,
            child,
            calls,
        })
        .collect();
    links.sort();
    Ok(links)
}
