//! Metrics from spans, as Tempo's metrics-generator makes them, built in: span metrics
//! (`traces_spanmetrics_*`, the RED panels) and service graphs (`traces_service_graph_*`, the
//! service map) of every span the OTLP receiver stored, so that Grafana's Tempo data source
//! draws both with no collector in between.
//!
//! [`SpanMetrics::observe`] takes each stored request's spans (one lock per request, no
//! allocation per span but for a series or an edge seen for the first time) and aggregates
//! them in memory, bounded: at most `max_active_series` series (spans that would add more are
//! counted as dropped), an aggregate not updated for `stale_duration` forgotten, at most
//! `max_items` edges waiting for their other side. [`start`] appends every series' cumulative
//! value through `storage::Appendable` each `collection_interval`, and once more when stopped.
//!
//! - `series`: keys, counters, histograms, staleness and the writing of a round.
//! - `spans`: the span-metrics processor. `graph`: the service-graph processor.
//!
//! Owns those aggregates and their series; writes only through `storage::Appendable`, and
//! never reads or changes the trace store.

mod graph;
mod series;
mod spans;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use storage::{AppendMode, Appendable, StorageError};

use series::{str_attribute, KeyBuf, Limit, Round};

/// What the generator makes and how much of it it keeps. The defaults are Tempo's, but for
/// `max_active_series`, which Tempo leaves unlimited.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How often the series are appended (Tempo's `collection_interval`).
    pub collection_interval: Duration,
    /// A series not updated for this long is forgotten (Tempo's `stale_duration`).
    pub stale_duration: Duration,
    /// Most series held, counting each histogram bucket, `_sum` and `_count`.
    pub max_active_series: usize,
    /// Upper bounds of `traces_spanmetrics_latency`, in seconds, ascending.
    pub span_buckets: Vec<f64>,
    /// Attributes (resource, then span) that become labels of the span metrics, with `.`
    /// and other characters a label name cannot have written `_`.
    pub span_dimensions: Vec<String>,
    /// Upper bounds of the service-graph latency histograms, in seconds, ascending.
    pub graph_buckets: Vec<f64>,
    /// Attributes that become labels of the service-graph series.
    pub graph_dimensions: Vec<String>,
    /// How long one side of an edge waits for the other (Tempo's `wait`).
    pub graph_wait: Duration,
    /// Most edges waiting at once (Tempo's `max_items`).
    pub graph_max_items: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            collection_interval: Duration::from_secs(15),
            stale_duration: Duration::from_secs(15 * 60),
            max_active_series: 50_000,
            span_buckets: doubling(0.002, 14),
            span_dimensions: Vec::new(),
            graph_buckets: doubling(0.1, 8),
            graph_dimensions: Vec::new(),
            graph_wait: Duration::from_secs(10),
            graph_max_items: 10_000,
        }
    }
}

/// `n` bounds from `start`, each twice the one before (Prometheus's `ExponentialBuckets`).
fn doubling(start: f64, n: i32) -> Vec<f64> {
    (0..n).map(|i| start * 2f64.powi(i)).collect()
}

/// Options the generator cannot run with.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    #[error("{0} must be greater than 0")]
    NotPositive(&'static str),
    #[error("{0} must be finite, positive and strictly ascending")]
    Buckets(&'static str),
    #[error("{list}: {attribute:?} becomes the label {label:?}, which another label already is")]
    DimensionClash {
        list: &'static str,
        attribute: String,
        label: String,
    },
}

impl Options {
    pub fn validate(&self) -> Result<(), OptionsError> {
        for (name, zero) in [
            ("collection_interval", self.collection_interval.is_zero()),
            ("stale_duration", self.stale_duration.is_zero()),
            ("max_active_series", self.max_active_series == 0),
            ("service_graphs.wait", self.graph_wait.is_zero()),
            ("service_graphs.max_items", self.graph_max_items == 0),
        ] {
            if zero {
                return Err(OptionsError::NotPositive(name));
            }
        }
        for (name, b) in [
            ("span_metrics.histogram_buckets", &self.span_buckets),
            ("service_graphs.histogram_buckets", &self.graph_buckets),
        ] {
            let ok =
                b.iter().all(|v| v.is_finite() && *v > 0.0) && b.windows(2).all(|w| w[0] < w[1]);
            if !ok {
                return Err(OptionsError::Buckets(name));
            }
        }
        dimension_labels(
            "span_metrics.dimensions",
            &self.span_dimensions,
            &spans::INTRINSIC,
        )?;
        dimension_labels(
            "service_graphs.dimensions",
            &self.graph_dimensions,
            &graph::EDGE_LABELS,
        )?;
        Ok(())
    }
}

/// Each attribute and its label name (invalid characters as `_`, a leading digit or none
/// prefixed with `_`), refused when two give one label or one gives a built-in label (or
/// `le`, which the histograms add).
fn dimension_labels(
    list: &'static str,
    attributes: &[String],
    builtin: &[&str],
) -> Result<Vec<(String, String)>, OptionsError> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(attributes.len());
    for a in attributes {
        let mut label = crate::otlp::label_chars(a);
        if !label.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            label.insert(0, '_');
        }
        let clash = builtin.contains(&label.as_str())
            || label == "le"
            || label.starts_with("__")
            || out.iter().any(|(_, l)| *l == label);
        if clash {
            return Err(OptionsError::DimensionClash {
                list,
                attribute: a.clone(),
                label,
            });
        }
        out.push((a.clone(), label));
    }
    Ok(out)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The generator's self-metrics on `/metrics`.
struct SelfMetrics {
    active: Gauge,
    dropped: Family<ReasonLabels, Counter>,
    unpaired: Counter,
}

struct State {
    spans: spans::SpanMetrics,
    graph: graph::ServiceGraphs,
    limit: Limit,
    key: KeyBuf,
    /// Spans not counted because the series limit refused their new series.
    limited: u64,
}

/// Running totals of what went uncounted, for the self-metrics.
#[derive(Clone, Copy)]
struct Totals {
    limited: u64,
    dropped: u64,
    unpaired: u64,
}

impl State {
    fn totals(&self) -> Totals {
        Totals {
            limited: self.limited + self.graph.limited,
            dropped: self.graph.dropped_spans,
            unpaired: self.graph.unpaired_edges,
        }
    }
}

/// The generator: see the module doc. Shared by every OTLP listener.
pub struct SpanMetrics {
    opts: Options,
    state: Mutex<State>,
    metrics: SelfMetrics,
}

impl SpanMetrics {
    /// Registers the self-metrics (`novamon_spanmetrics_*`) in `registry`.
    pub fn new(opts: Options, registry: &mut Registry) -> Result<SpanMetrics, OptionsError> {
        opts.validate()?;
        let metrics = SelfMetrics {
            active: Gauge::default(),
            dropped: Family::default(),
            unpaired: Counter::default(),
        };
        registry.register(
            "novamon_spanmetrics_active_series",
            "Series the metrics generator holds (span metrics and service graphs)",
            metrics.active.clone(),
        );
        registry.register(
            "novamon_spanmetrics_dropped_spans",
            "Spans the metrics generator did not count: series_limit (max_active_series reached) or edge_store_full (service_graphs.max_items edges waiting)",
            metrics.dropped.clone(),
        );
        registry.register(
            "novamon_spanmetrics_unpaired_edges",
            "Service-graph edges that expired with one side only and no peer attribute",
            metrics.unpaired.clone(),
        );
        let state = State {
            spans: spans::SpanMetrics::new(
                opts.span_buckets.clone(),
                dimension_labels(
                    "span_metrics.dimensions",
                    &opts.span_dimensions,
                    &spans::INTRINSIC,
                )?,
            ),
            graph: graph::ServiceGraphs::new(
                opts.graph_buckets.clone(),
                dimension_labels(
                    "service_graphs.dimensions",
                    &opts.graph_dimensions,
                    &graph::EDGE_LABELS,
                )?,
                opts.graph_wait,
                opts.graph_max_items,
            ),
            limit: Limit {
                active: 0,
                max: opts.max_active_series,
            },
            key: KeyBuf::default(),
            limited: 0,
        };
        Ok(SpanMetrics {
            opts,
            state: Mutex::new(state),
            metrics,
        })
    }

    /// Counts the spans of one stored request.
    pub fn observe(&self, batch: &[ResourceSpans]) {
        self.observe_at(batch, Instant::now());
    }

    fn observe_at(&self, batch: &[ResourceSpans], now: Instant) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let before = st.totals();
        // Edges whose wait is over are settled as spans arrive, not only at collections: a
        // long collection interval must not hold them (Tempo expires every 2s).
        st.graph.expire(now, &mut st.limit);
        for rs in batch {
            let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
            let service = str_attribute("service.name", &[resource]);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                // The trace store refuses spans with malformed ids; they are counted nowhere.
                if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                    continue;
                }
                if !st
                    .spans
                    .observe(&mut st.key, service, resource, span, now, &mut st.limit)
                {
                    st.limited += 1;
                }
                // Tempo's service graphs skip resources without a service name.
                if let Some(service) = service {
                    st.graph
                        .observe(&mut st.key, service, resource, span, now, &mut st.limit);
                }
            }
        }
        self.count(st, before);
    }

    /// Adds what the processors counted since `before` to the self-metrics.
    fn count(&self, st: &State, before: Totals) {
        let now = st.totals();
        let dropped = |reason, n: u64| {
            if n > 0 {
                self.metrics
                    .dropped
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(n);
            }
        };
        dropped("series_limit", now.limited - before.limited);
        dropped("edge_store_full", now.dropped - before.dropped);
        self.metrics.unpaired.inc_by(now.unpaired - before.unpaired);
        self.metrics.active.set(st.limit.active as i64);
    }

    /// Appends every series' value at `t_ms` (ms since the epoch) through `store`; returns
    /// the samples written.
    pub fn collect(&self, store: &dyn Appendable, t_ms: i64) -> Result<usize, StorageError> {
        let batch = self.round(t_ms, Instant::now()).batch;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut app = store.appender(AppendMode::BestEffort);
        app.append_batch(batch);
        let report = app.commit()?;
        if let Some(first) = report.rejected.first() {
            tracing::warn!(
                rejected = report.rejected.len(),
                first = %first.labels,
                reason = %first.reason,
                "span metrics samples rejected by the TSDB"
            );
        }
        Ok(report.samples_written)
    }

    fn round(&self, t_ms: i64, now: Instant) -> Round {
        let mut round = Round::new(t_ms, self.opts.collection_interval);
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let before = st.totals();
        let stale = self.opts.stale_duration;
        st.graph.collect(&mut round, now, stale, &mut st.limit);
        st.spans.collect(&mut round, now, stale, &mut st.limit);
        self.count(st, before);
        round
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The collection loop [`start`] runs; stopping it appends one last round.
pub struct Flusher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    /// Stops the loop after a last collection; returns once it is appended.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Appends `generator`'s series to `store` every collection interval, off the async
/// workers, until [`Flusher::stop`].
pub fn start(generator: Arc<SpanMetrics>, store: Arc<dyn Appendable>) -> Flusher {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(generator.opts.collection_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, with nothing observed yet.
        tick.tick().await;
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = stopped.wait_for(|s| *s) => true,
            };
            let (g, s) = (generator.clone(), store.clone());
            match tokio::task::spawn_blocking(move || g.collect(&*s, now_ms())).await {
                Ok(Err(e)) => tracing::warn!("appending span metrics: {e}"),
                Err(e) => tracing::error!("span metrics collection: {e}"),
                Ok(Ok(_)) => {}
            }
            if last {
                return;
            }
        }
    });
    Flusher { stop, task }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status};
    use prost::Message as _;

    use super::*;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    /// A span of trace `trace`, id `id`, child of `parent` (0: a root), lasting `ms`.
    fn span(trace: u8, id: u8, parent: u8, kind: SpanKind, name: &str, ms: u64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            ..Default::default()
        }
    }

    fn failed(mut s: Span) -> Span {
        s.status = Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        });
        s
    }

    fn with(mut s: Span, attrs: Vec<KeyValue>) -> Span {
        s.attributes = attrs;
        s
    }

    fn service(name: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(name)), kv("env", s("prod"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn generator(opts: Options) -> SpanMetrics {
        SpanMetrics::new(opts, &mut Registry::default()).unwrap()
    }

    /// A round's series as `name{labels}` → samples (t, v).
    fn collect(g: &SpanMetrics, t: i64, now: Instant) -> BTreeMap<String, Vec<(i64, f64)>> {
        g.round(t, now)
            .batch
            .iter()
            .map(|s| {
                (
                    s.labels().to_string(),
                    s.samples.iter().map(|s| (s.t, s.v)).collect(),
                )
            })
            .collect()
    }

    fn last(m: &BTreeMap<String, Vec<(i64, f64)>>, series: &str) -> Option<f64> {
        m.get(series).and_then(|s| s.last()).map(|s| s.1)
    }

    #[test]
    fn spans_are_counted_by_service_name_kind_and_status_with_tempo_label_values() {
        let g = generator(Options::default());
        let t0 = Instant::now();
        g.observe_at(
            &[service(
                "shop",
                vec![
                    span(1, 1, 0, SpanKind::Server, "GET /", 3),
                    span(2, 1, 0, SpanKind::Server, "GET /", 5),
                    failed(span(3, 1, 0, SpanKind::Server, "GET /", 40)),
                    span(3, 2, 1, SpanKind::Internal, "render", 0),
                ],
            )],
            t0,
        );
        let m = collect(&g, 60_000, t0);
        let ok = r#"{service="shop", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}"#;
        let err = r#"{service="shop", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_ERROR"}"#;
        let internal = r#"{service="shop", span_kind="SPAN_KIND_INTERNAL", span_name="render", status_code="STATUS_CODE_UNSET"}"#;
        let calls = |l: &str| last(&m, &format!("traces_spanmetrics_calls_total{l}"));
        assert_eq!(calls(ok), Some(2.0));
        assert_eq!(calls(err), Some(1.0));
        assert_eq!(calls(internal), Some(1.0));
        // A first write starts at 0 one collection interval earlier.
        assert_eq!(
            m[&format!("traces_spanmetrics_calls_total{ok}")],
            [(45_000, 0.0), (60_000, 2.0)]
        );
        // 3ms and 5ms: both in le=0.008 (0.002, 0.004 hold neither 5ms, 0.004 holds 3ms).
        let bucket = |le: &str| {
            last(
                &m,
                &format!(
                    r#"traces_spanmetrics_latency_bucket{{le="{le}", service="shop", span_kind="SPAN_KIND_SERVER", span_name="GET /", status_code="STATUS_CODE_UNSET"}}"#
                ),
            )
        };
        assert_eq!(bucket("0.002"), Some(0.0));
        assert_eq!(bucket("0.004"), Some(1.0));
        assert_eq!(bucket("0.008"), Some(2.0));
        assert_eq!(bucket("16.384"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(2.0));
        assert_eq!(
            last(&m, &format!("traces_spanmetrics_latency_sum{ok}")),
            Some(0.008)
        );
        assert_eq!(
            last(&m, &format!("traces_spanmetrics_latency_count{ok}")),
            Some(2.0)
        );
        let size = last(&m, &format!("traces_spanmetrics_size_total{ok}")).unwrap();
        let one = span(1, 1, 0, SpanKind::Server, "GET /", 3).encoded_len() as f64;
        assert_eq!(size, 2.0 * one);

        // Later rounds carry the cumulative value alone.
        g.observe_at(
            &[service(
                "shop",
                vec![span(4, 1, 0, SpanKind::Server, "GET /", 1)],
            )],
            t0,
        );
        let m = collect(&g, 75_000, t0);
        assert_eq!(
            m[&format!("traces_spanmetrics_calls_total{ok}")],
            [(75_000, 3.0)]
        );
    }

    #[test]
    fn dimensions_come_from_span_then_resource_attributes_under_label_names() {
        let g = generator(Options {
            span_dimensions: vec!["http.method".into(), "env".into(), "retries".into()],
            ..Options::default()
        });
        let t0 = Instant::now();
        let sp = with(
            span(1, 1, 0, SpanKind::Client, "call", 1),
            vec![
                kv("http.method", s("GET")),
                kv("retries", Value::IntValue(2)),
            ],
        );
        g.observe_at(&[service("a", vec![sp])], t0);
        let m = collect(&g, 1_000, t0);
        assert_eq!(
            last(
                &m,
                r#"traces_spanmetrics_calls_total{env="prod", http_method="GET", retries="2", service="a", span_kind="SPAN_KIND_CLIENT", span_name="call", status_code="STATUS_CODE_UNSET"}"#
            ),
            Some(1.0),
            "{m:#?}"
        );
    }

    #[test]
    fn client_and_server_spans_pair_into_one_request_whichever_comes_first() {
        let g = generator(Options::default());
        let t0 = Instant::now();
        // Trace 1: the client span arrives first; trace 2: the server span, failed.
        g.observe_at(
            &[service(
                "front",
                vec![span(1, 7, 0, SpanKind::Client, "c", 300)],
            )],
            t0,
        );
        g.observe_at(
            &[service(
                "back",
                vec![span(1, 8, 7, SpanKind::Server, "s", 150)],
            )],
            t0,
        );
        g.observe_at(
            &[service(
                "back",
                vec![failed(span(2, 8, 7, SpanKind::Server, "s", 50))],
            )],
            t0,
        );
        g.observe_at(
            &[service(
                "front",
                vec![span(2, 7, 0, SpanKind::Client, "c", 60)],
            )],
            t0,
        );
        assert_eq!(g.state.lock().graph.waiting(), 0);
        let m = collect(&g, 1_000, t0);
        let edge = r#"{client="front", server="back"}"#;
        assert_eq!(
            last(&m, &format!("traces_service_graph_request_total{edge}")),
            Some(2.0)
        );
        assert_eq!(
            last(
                &m,
                &format!("traces_service_graph_request_failed_total{edge}")
            ),
            Some(1.0)
        );
        let server = |le: &str| {
            last(
                &m,
                &format!(
                    r#"traces_service_graph_request_server_seconds_bucket{{client="front", le="{le}", server="back"}}"#
                ),
            )
        };
        // Server durations 150ms and 50ms: 0.1 holds one, 0.2 both.
        assert_eq!(
            (server("0.1"), server("0.2"), server("+Inf")),
            (Some(1.0), Some(2.0), Some(2.0))
        );
        assert_eq!(
            last(
                &m,
                &format!("traces_service_graph_request_server_seconds_sum{edge}")
            ),
            Some(0.2)
        );
        assert_eq!(
            last(
                &m,
                &format!("traces_service_graph_request_client_seconds_sum{edge}")
            ),
            Some(0.36)
        );
        assert_eq!(
            last(
                &m,
                r#"traces_service_graph_request_client_seconds_bucket{client="front", le="12.8", server="back"}"#
            ),
            Some(2.0)
        );
    }

    #[test]
    fn unpaired_sides_expire_into_virtual_nodes_or_unpaired_counts() {
        let wait = Duration::from_secs(10);
        let g = generator(Options {
            graph_wait: wait,
            ..Options::default()
        });
        let t0 = Instant::now();
        g.observe_at(
            &[
                service(
                    "front",
                    vec![
                        // A root server span: called by a user.
                        span(1, 1, 0, SpanKind::Server, "GET /", 10),
                        // A client span to an uninstrumented peer.
                        with(
                            span(1, 2, 1, SpanKind::Client, "pay", 20),
                            vec![kv("peer.service", s("payments"))],
                        ),
                        // A client span nothing answers or names.
                        span(1, 3, 1, SpanKind::Client, "lost", 20),
                    ],
                ),
                // A server span whose client never comes.
                service("back", vec![span(2, 9, 5, SpanKind::Server, "s", 5)]),
            ],
            t0,
        );
        // Not yet expired.
        let m = collect(&g, 1_000, t0 + wait / 2);
        assert!(
            m.keys().all(|k| !k.starts_with("traces_service_graph")),
            "{m:#?}"
        );
        assert_eq!(g.state.lock().graph.waiting(), 4);
        // The next request settles them, before any collection.
        g.observe_at(&[], t0 + wait);
        assert_eq!(g.state.lock().graph.waiting(), 0);
        let m = collect(&g, 2_000, t0 + wait);
        assert_eq!(
            last(
                &m,
                r#"traces_service_graph_request_total{client="user", connection_type="virtual_node", server="front"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            last(
                &m,
                r#"traces_service_graph_request_total{client="front", connection_type="virtual_node", server="payments"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            last(
                &m,
                r#"traces_service_graph_unpaired_spans_total{client="front"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            last(
                &m,
                r#"traces_service_graph_unpaired_spans_total{server="back"}"#
            ),
            Some(1.0)
        );
        assert_eq!(g.metrics.unpaired.get(), 2);
    }

    #[test]
    fn database_calls_and_messaging_get_their_connection_types() {
        let g = generator(Options::default());
        let t0 = Instant::now();
        g.observe_at(
            &[service(
                "api",
                vec![
                    with(
                        span(1, 1, 0, SpanKind::Client, "SELECT", 30),
                        vec![kv("db.system", s("postgresql"))],
                    ),
                    with(
                        span(1, 2, 0, SpanKind::Client, "GET", 30),
                        vec![
                            kv("db.name", s("orders")),
                            kv("network.peer.address", s("10.0.0.5")),
                            kv("network.peer.port", Value::IntValue(5432)),
                        ],
                    ),
                    span(1, 3, 0, SpanKind::Producer, "send", 1),
                ],
            )],
            t0,
        );
        g.observe_at(
            &[service(
                "worker",
                vec![span(1, 4, 3, SpanKind::Consumer, "recv", 2)],
            )],
            t0,
        );
        let m = collect(&g, 1_000, t0);
        for (edge, seconds) in [
            (
                r#"{client="api", connection_type="database", server="postgresql"}"#,
                0.03,
            ),
            (
                r#"{client="api", connection_type="database", server="10.0.0.5:5432"}"#,
                0.03,
            ),
            (
                r#"{client="api", connection_type="messaging_system", server="worker"}"#,
                0.002,
            ),
        ] {
            assert_eq!(
                last(&m, &format!("traces_service_graph_request_total{edge}")),
                Some(1.0),
                "{edge} {m:#?}"
            );
            assert_eq!(
                last(
                    &m,
                    &format!("traces_service_graph_request_server_seconds_sum{edge}")
                ),
                Some(seconds),
                "{edge}"
            );
        }
    }

    #[test]
    fn the_series_limit_drops_new_series_and_the_edge_store_limit_drops_spans() {
        let opts = Options {
            // One span-metrics label set: calls, size and 14 + 3 latency series.
            max_active_series: 19,
            graph_max_items: 1,
            ..Options::default()
        };
        let g = generator(opts);
        let t0 = Instant::now();
        g.observe_at(
            &[service(
                "a",
                vec![
                    span(1, 1, 0, SpanKind::Internal, "x", 1),
                    span(1, 2, 0, SpanKind::Internal, "x", 1),
                    span(1, 3, 0, SpanKind::Internal, "y", 1),
                    span(1, 4, 0, SpanKind::Client, "x", 1),
                    span(1, 5, 0, SpanKind::Client, "x", 1),
                ],
            )],
            t0,
        );
        let m = collect(&g, 1_000, t0);
        let calls: Vec<_> = m
            .keys()
            .filter(|k| k.starts_with("traces_spanmetrics_calls_total"))
            .collect();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            last(
                &m,
                r#"traces_spanmetrics_calls_total{service="a", span_kind="SPAN_KIND_INTERNAL", span_name="x", status_code="STATUS_CODE_UNSET"}"#
            ),
            Some(2.0)
        );
        // y and both client spans found no room; the second client span no edge room either,
        // and its dropped count no series room.
        let dropped = |r| {
            g.metrics
                .dropped
                .get_or_create(&ReasonLabels { reason: r })
                .get()
        };
        assert_eq!(dropped("edge_store_full"), 1);
        assert_eq!(dropped("series_limit"), 4);
        assert_eq!(g.metrics.active.get(), 19);
        // Stale series give their room back.
        let later = t0 + g.opts.stale_duration + Duration::from_secs(1);
        let m = collect(&g, 2_000, later);
        assert!(m.is_empty(), "{m:#?}");
        assert_eq!(g.metrics.active.get(), 0);
    }

    #[test]
    fn spans_with_malformed_ids_and_resources_without_a_service_are_handled_like_tempo() {
        let g = generator(Options::default());
        let t0 = Instant::now();
        let mut bad = span(1, 1, 0, SpanKind::Server, "bad", 1);
        bad.trace_id = vec![1; 3];
        let mut anon = service("x", vec![span(2, 1, 5, SpanKind::Server, "anon", 1)]);
        anon.resource = None;
        g.observe_at(&[service("a", vec![bad]), anon], t0);
        let m = collect(&g, 1_000, t0 + Duration::from_secs(60));
        let names: Vec<&String> = m.keys().filter(|k| k.contains("calls_total")).collect();
        assert_eq!(
            names,
            [
                r#"traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER", span_name="anon", status_code="STATUS_CODE_UNSET"}"#
            ]
        );
        assert!(
            m.keys().all(|k| !k.starts_with("traces_service_graph")),
            "{m:#?}"
        );
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(Options::default().validate(), Ok(()));
        let bad = |o: Options| o.validate().unwrap_err().to_string();
        assert_eq!(
            bad(Options {
                span_buckets: vec![0.1, 0.1],
                ..Options::default()
            }),
            "span_metrics.histogram_buckets must be finite, positive and strictly ascending"
        );
        assert_eq!(
            bad(Options {
                graph_max_items: 0,
                ..Options::default()
            }),
            "service_graphs.max_items must be greater than 0"
        );
        assert!(bad(Options {
            span_dimensions: vec!["http.method".into(), "http_method".into()],
            ..Options::default()
        })
        .contains("\"http_method\""));
        assert!(bad(Options {
            graph_dimensions: vec!["client".into()],
            ..Options::default()
        })
        .contains("service_graphs.dimensions"));
        assert_eq!(
            Options::default()
                .span_buckets
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>(),
            [
                "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
                "1.024", "2.048", "4.096", "8.192", "16.384"
            ]
        );
        assert_eq!(
            Options::default()
                .graph_buckets
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>(),
            ["0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8"]
        );
    }
}
