//! Tempo's service-graph processor: a client span (or producer) and the server span (or
//! consumer) whose parent it is make one request between two services. Each side waits in an
//! edge store keyed by trace id and the client's span id (the server's parent span id) until
//! the other arrives; a completed edge counts a request (`traces_service_graph_request_total`,
//! `…_failed_total` when either side failed) and both sides' durations
//! (`…_request_server_seconds`, `…_request_client_seconds`), by `client`, `server`,
//! `connection_type` and the configured dimensions.
//!
//! As in Tempo: a client span with a database attribute (`db.namespace`, `db.name`,
//! `db.system`, `db.system.name`) completes at once against a virtual database node; producer
//! and consumer spans are `connection_type="messaging_system"`; an edge still waiting after
//! `wait` expires, and becomes a `virtual_node` request when its one side names the other (a
//! root server span: from `user` or its peer attribute; a client span with a peer attribute:
//! to that peer), and otherwise counts in `traces_service_graph_unpaired_spans_total`. A span
//! the full store cannot hold counts in `traces_service_graph_dropped_spans_total`.
//!
//! Owns the edge store and those families; the series bookkeeping is `series`'.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::series::{
    attribute, key_labels, label_names, set_text, str_attribute, text, Aggregates, Histogram,
    KeyBuf, Limit, Round, Text,
};
use super::spans::duration_seconds;

const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
const REQUEST_FAILED: &str = "traces_service_graph_request_failed_total";
const SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
const CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";
const UNPAIRED: &str = "traces_service_graph_unpaired_spans_total";
const DROPPED: &str = "traces_service_graph_dropped_spans_total";

/// The edge labels, in key order.
pub(super) const EDGE_LABELS: [&str; 3] = ["client", "server", "connection_type"];

/// Span attributes naming the other side of an edge Tempo never sees spans of.
const PEER_ATTRIBUTES: [&str; 4] = ["peer.service", "db.name", "db.system", "db.system.name"];

/// Span attributes that make a client span a database call, most specific first.
const DATABASE_NAME_ATTRIBUTES: [&str; 4] =
    ["db.namespace", "db.name", "db.system", "db.system.name"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectionType {
    Unknown,
    MessagingSystem,
    Database,
    VirtualNode,
}

impl ConnectionType {
    fn label(self) -> &'static str {
        match self {
            ConnectionType::Unknown => "",
            ConnectionType::MessagingSystem => "messaging_system",
            ConnectionType::Database => "database",
            ConnectionType::VirtualNode => "virtual_node",
        }
    }
}

/// Trace id and the client's span id; `None` for a root server span (no parent), which no
/// client completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EdgeKey([u8; 16], Option<[u8; 8]>);

#[derive(Debug)]
struct Edge {
    client: String,
    server: String,
    client_seconds: f64,
    server_seconds: f64,
    connection_type: ConnectionType,
    failed: bool,
    peer: String,
    /// The configured dimensions' values; the side written last wins, as in Tempo.
    dimensions: Vec<String>,
    expires: Instant,
}

impl Edge {
    fn complete(&self) -> bool {
        !self.client.is_empty() && !self.server.is_empty()
    }
}

pub(crate) struct GraphAgg {
    total: f64,
    failed: f64,
    /// Whether `…_failed_total` was written yet: like Tempo, an edge gets that series with
    /// its first failure.
    failed_written: bool,
    server: Histogram,
    client: Histogram,
}

pub(crate) struct ServiceGraphs {
    buckets: Vec<f64>,
    dimensions: Vec<(String, String)>,
    wait: Duration,
    max_items: usize,
    edges: HashMap<EdgeKey, Edge>,
    /// Edges in the order they expire. An edge completed (or replaced) early leaves its
    /// entry behind, recognised by a different `expires`; compacted when it outgrows the
    /// store, so that it stays bounded however fast spans arrive.
    expiry: VecDeque<(Instant, EdgeKey)>,
    requests: Aggregates<GraphAgg>,
    unpaired: Aggregates<f64>,
    dropped: Aggregates<f64>,
    /// Spans refused because the store was full, and edges that expired unpaired, for the
    /// self-metrics.
    pub(crate) dropped_spans: u64,
    pub(crate) unpaired_edges: u64,
    /// Requests not counted because the series limit refused their new series.
    pub(crate) limited: u64,
}

/// Which side a span is, if any.
fn side(kind: i32) -> Option<(bool, ConnectionType)> {
    match SpanKind::try_from(kind).ok()? {
        SpanKind::Client => Some((true, ConnectionType::Unknown)),
        SpanKind::Producer => Some((true, ConnectionType::MessagingSystem)),
        SpanKind::Server => Some((false, ConnectionType::Unknown)),
        SpanKind::Consumer => Some((false, ConnectionType::MessagingSystem)),
        _ => None,
    }
}

impl ServiceGraphs {
    pub(crate) fn new(
        buckets: Vec<f64>,
        dimensions: Vec<(String, String)>,
        wait: Duration,
        max_items: usize,
    ) -> ServiceGraphs {
        // total, failed, and the two histograms.
        let cost = 2 + 2 * Histogram::cost(&buckets);
        ServiceGraphs {
            buckets,
            dimensions,
            wait,
            max_items,
            edges: HashMap::new(),
            expiry: VecDeque::new(),
            requests: Aggregates::new(cost),
            unpaired: Aggregates::new(1),
            dropped: Aggregates::new(1),
            dropped_spans: 0,
            unpaired_edges: 0,
            limited: 0,
        }
    }

    /// Adds one span of `service` to its edge. Spans neither client nor server, and spans
    /// whose ids are not OTLP's sizes (the trace store refuses them too), are no edge.
    pub(crate) fn observe(
        &mut self,
        key_buf: &mut KeyBuf,
        service: &str,
        resource: &[KeyValue],
        span: &Span,
        now: Instant,
        limit: &mut Limit,
    ) {
        let Some((is_client, connection_type)) = side(span.kind) else {
            return;
        };
        let Ok(trace) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
            return;
        };
        let id = if is_client {
            &span.span_id
        } else {
            &span.parent_span_id
        };
        let key = match id.len() {
            0 if !is_client => EdgeKey(trace, None),
            8 => EdgeKey(trace, Some(id.as_slice().try_into().unwrap_or_default())),
            _ => return,
        };
        if !self.edges.contains_key(&key) && self.edges.len() >= self.max_items {
            self.expire(now, limit);
            if self.edges.len() >= self.max_items {
                self.dropped_spans += 1;
                let (client, server) = if is_client {
                    (service, "")
                } else {
                    ("", service)
                };
                self.count_side(
                    key_buf,
                    Side::Dropped,
                    client,
                    server,
                    connection_type,
                    now,
                    limit,
                );
                return;
            }
        }
        let expires = now + self.wait;
        let ndims = self.dimensions.len();
        let edge = self.edges.entry(key).or_insert_with(|| {
            self.expiry.push_back((expires, key));
            Edge {
                client: String::new(),
                server: String::new(),
                client_seconds: 0.0,
                server_seconds: 0.0,
                connection_type: ConnectionType::Unknown,
                failed: false,
                peer: String::new(),
                dimensions: vec![String::new(); ndims],
                expires,
            }
        });
        let span_attrs: &[KeyValue] = &span.attributes;
        if connection_type != ConnectionType::Unknown {
            edge.connection_type = connection_type;
        }
        edge.failed |= span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
        if let Some(peer) = PEER_ATTRIBUTES
            .iter()
            .find_map(|a| str_attribute(a, &[span_attrs]))
        {
            set(&mut edge.peer, peer);
        }
        for (i, (attr, _)) in self.dimensions.iter().enumerate() {
            if let Some(t) = text(attribute(attr, &[resource, span_attrs])) {
                set_text(&mut edge.dimensions[i], t);
            }
        }
        if is_client {
            set(&mut edge.client, service);
            edge.client_seconds = duration_seconds(span);
            database(edge, resource, span_attrs, duration_seconds(span));
        } else {
            set(&mut edge.server, service);
            edge.server_seconds = duration_seconds(span);
        }
        if edge.complete() {
            if let Some(edge) = self.edges.remove(&key) {
                self.count_request(key_buf, &edge, now, limit);
            }
        }
        if self.expiry.len() > 2 * self.max_items.max(1024) {
            let edges = &self.edges;
            self.expiry
                .retain(|(t, k)| edges.get(k).is_some_and(|e| e.expires == *t));
        }
    }

    /// Expires the edges whose wait is over at `now`: a virtual-node request when the one
    /// side names the other, an unpaired span otherwise.
    pub(crate) fn expire(&mut self, now: Instant, limit: &mut Limit) {
        let mut key_buf = KeyBuf::default();
        while let Some(&(t, key)) = self.expiry.front() {
            if t > now {
                break;
            }
            self.expiry.pop_front();
            let Some(edge) = self.edges.get(&key) else {
                continue;
            };
            if edge.expires != t {
                continue;
            }
            let Some(mut edge) = self.edges.remove(&key) else {
                continue;
            };
            if edge.client.is_empty() && key.1.is_none() {
                // A root server span: called by something outside, named by its peer
                // attribute or else "user".
                edge.client = if edge.peer.is_empty() {
                    "user".to_owned()
                } else {
                    std::mem::take(&mut edge.peer)
                };
            } else if edge.server.is_empty() && !edge.peer.is_empty() {
                // A client span calling something never instrumented.
                edge.server = std::mem::take(&mut edge.peer);
            } else {
                self.unpaired_edges += 1;
                self.count_side(
                    &mut key_buf,
                    Side::Unpaired,
                    &edge.client,
                    &edge.server,
                    edge.connection_type,
                    now,
                    limit,
                );
                continue;
            }
            edge.connection_type = ConnectionType::VirtualNode;
            self.count_request(&mut key_buf, &edge, now, limit);
        }
    }

    fn count_request(
        &mut self,
        key_buf: &mut KeyBuf,
        edge: &Edge,
        now: Instant,
        limit: &mut Limit,
    ) {
        key_buf.clear();
        key_buf.push(&edge.client);
        key_buf.push(&edge.server);
        key_buf.push(edge.connection_type.label());
        for d in &edge.dimensions {
            key_buf.push(d);
        }
        let buckets = &self.buckets;
        let Some(agg) = self.requests.get(key_buf, now, limit, || GraphAgg {
            total: 0.0,
            failed: 0.0,
            failed_written: false,
            server: Histogram::new(buckets),
            client: Histogram::new(buckets),
        }) else {
            self.limited += 1;
            return;
        };
        agg.total += 1.0;
        if edge.failed {
            agg.failed += 1.0;
        }
        agg.server.observe(buckets, edge.server_seconds);
        agg.client.observe(buckets, edge.client_seconds);
    }

    #[allow(clippy::too_many_arguments)]
    fn count_side(
        &mut self,
        key_buf: &mut KeyBuf,
        side: Side,
        client: &str,
        server: &str,
        connection_type: ConnectionType,
        now: Instant,
        limit: &mut Limit,
    ) {
        key_buf.clear();
        key_buf.push(client);
        key_buf.push(server);
        key_buf.push(connection_type.label());
        let aggs = match side {
            Side::Unpaired => &mut self.unpaired,
            Side::Dropped => &mut self.dropped,
        };
        match aggs.get(key_buf, now, limit, || 0.0) {
            Some(n) => *n += 1.0,
            None => self.limited += 1,
        }
    }

    /// Expires what is due, forgets the aggregates stale at `now`, then writes the others
    /// into `round`.
    pub(crate) fn collect(
        &mut self,
        round: &mut Round,
        now: Instant,
        stale: Duration,
        limit: &mut Limit,
    ) {
        self.expire(now, limit);
        self.requests.remove_stale(now, stale, limit);
        self.unpaired.remove_stale(now, stale, limit);
        self.dropped.remove_stale(now, stale, limit);
        let names = label_names(&EDGE_LABELS, &self.dimensions);
        for (key, agg, first) in self.requests.drain_round() {
            let labels = key_labels(&names, key);
            round.series(REQUEST_TOTAL, &labels, None, agg.total, first);
            if agg.failed > 0.0 {
                round.series(
                    REQUEST_FAILED,
                    &labels,
                    None,
                    agg.failed,
                    !agg.failed_written,
                );
                agg.failed_written = true;
            }
            round.histogram(SERVER_SECONDS, &labels, &self.buckets, &agg.server, first);
            round.histogram(CLIENT_SECONDS, &labels, &self.buckets, &agg.client, first);
        }
        for (name, aggs) in [(UNPAIRED, &mut self.unpaired), (DROPPED, &mut self.dropped)] {
            for (key, n, first) in aggs.drain_round() {
                round.series(name, &key_labels(&names, key), None, *n, first);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.edges.len()
    }
}

#[derive(Clone, Copy)]
enum Side {
    Unpaired,
    Dropped,
}

fn set(s: &mut String, v: &str) {
    set_text(s, Text::Str(v));
}

/// A client span that calls a database completes its edge at once: the server is the
/// database, named by `peer.service`, `server.address`, `network.peer.address[:port]` or the
/// database attribute, in that order (Tempo's choice).
fn database(edge: &mut Edge, resource: &[KeyValue], span: &[KeyValue], seconds: f64) {
    let sets = [resource, span];
    let Some(db) = DATABASE_NAME_ATTRIBUTES
        .iter()
        .find_map(|a| str_attribute(a, &sets))
    else {
        return;
    };
    edge.connection_type = ConnectionType::Database;
    edge.server_seconds = seconds;
    if let Some(name) =
        str_attribute("peer.service", &sets).or_else(|| str_attribute("server.address", &sets))
    {
        set(&mut edge.server, name);
    } else if let Some(host) = str_attribute("network.peer.address", &sets) {
        set(&mut edge.server, host);
        if let Some(port) = text(attribute("network.peer.port", &sets)) {
            // Writes into a String cannot fail.
            let _ = write!(edge.server, ":{port}");
        }
    } else {
        set(&mut edge.server, db);
    }
}
