//! Query admission as Prometheus's engine does it (`--query.max-concurrency`): at most
//! `max_concurrency` queries evaluate at once; the others wait in line, each no longer than
//! its timeout, and one that cannot start in time fails with Prometheus's "query timed out in
//! query queue". One [`QueryGate`] is shared by the PromQL and LogQL query endpoints, the
//! Jaeger and Tempo searches and the rule evaluations: they evaluate on the same blocking pool
//! and cores, so one bound keeps them from starving each other. Exposes Prometheus's
//! `prometheus_engine_queries` (waiting or running) and
//! `prometheus_engine_queries_concurrent_max`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Prometheus's default `--query.max-concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 20;

/// The line queries wait in for an evaluation slot. Cheap to clone.
#[derive(Clone)]
pub struct QueryGate {
    slots: Arc<Semaphore>,
    /// The longest any query waits: the engine's query timeout.
    max_wait: Duration,
    queries: Gauge,
}

impl QueryGate {
    /// `max_concurrency` must be positive (the config refuses 0).
    pub fn new(max_concurrency: usize, max_wait: Duration, registry: &mut Registry) -> QueryGate {
        let queries = Gauge::default();
        registry.register(
            "prometheus_engine_queries",
            "The current number of queries being executed or waiting.",
            queries.clone(),
        );
        let max = Gauge::<i64>::default();
        max.set(i64::try_from(max_concurrency).unwrap_or(i64::MAX));
        registry.register(
            "prometheus_engine_queries_concurrent_max",
            "The max number of concurrent queries.",
            max,
        );
        QueryGate {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            max_wait,
            queries,
        }
    }

    /// Waits for a slot, at most `timeout` (the request's own, when it gives one) and never
    /// longer than the engine's timeout. The slot is held until the [`Admitted`] is dropped.
    pub(crate) async fn admit(&self, timeout: Option<Duration>) -> Result<Admitted, QueueTimeout> {
        // Counted from here, so that a query that gives up waiting is uncounted on drop.
        let counted = Counted::new(self.queries.clone());
        let wait = timeout.map_or(self.max_wait, |t| t.min(self.max_wait));
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Admitted {
                _slot: slot,
                _counted: counted,
            }),
            // Elapsed, or the semaphore closed (it never is): the query did not start.
            _ => Err(QueueTimeout),
        }
    }
}

impl rules::QuerySlots for QueryGate {
    /// Rule groups evaluate on the blocking pool, where waiting on the runtime is allowed.
    fn acquire(&self) -> Result<Box<dyn Send>, String> {
        tokio::runtime::Handle::current()
            .block_on(self.admit(None))
            .map(|a| Box::new(a) as Box<dyn Send>)
            .map_err(|e| e.to_string())
    }
}

/// A query's evaluation slot: held for as long as the query runs.
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _counted: Counted,
}

/// One query in `prometheus_engine_queries` while this lives.
struct Counted(Gauge);

impl Counted {
    fn new(g: Gauge) -> Counted {
        g.inc();
        Counted(g)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A query that could not start within its timeout; each API renders it as its timeout error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct QueueTimeout;

impl std::fmt::Display for QueueTimeout {
    /// Prometheus's `ErrQueryTimeout("query queue")`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("query timed out in query queue")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn gate(max: usize, max_wait: Duration) -> (QueryGate, Registry) {
        let mut r = Registry::default();
        let g = QueryGate::new(max, max_wait, &mut r);
        (g, r)
    }

    /// A gate with Prometheus's default slots, for tests that do not exercise admission.
    pub(crate) fn open_gate() -> QueryGate {
        gate(DEFAULT_MAX_CONCURRENCY, Duration::from_secs(3600)).0
    }

    pub(crate) fn exposed(r: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, r).unwrap();
        out
    }

    #[tokio::test]
    async fn a_full_gate_queues_then_admits_or_times_out() {
        let (g, r) = gate(1, Duration::from_secs(3600));
        assert!(exposed(&r).contains("prometheus_engine_queries_concurrent_max 1\n"));
        let first = g.admit(None).await.unwrap();
        assert_eq!(g.queries.get(), 1);
        // The request's own timeout bounds the wait.
        assert_eq!(
            g.admit(Some(Duration::from_millis(1))).await.err(),
            Some(QueueTimeout)
        );
        assert_eq!(g.queries.get(), 1, "a query that gave up is not counted");
        let g2 = g.clone();
        let second = tokio::spawn(async move { g2.admit(None).await.map(|_| ()) });
        tokio::time::timeout(Duration::from_secs(10), async {
            while g.queries.get() != 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second query never queued");
        assert!(!second.is_finished());
        drop(first);
        assert_eq!(second.await.unwrap(), Ok(()));
        assert_eq!(g.queries.get(), 0);
        assert!(exposed(&r).contains("prometheus_engine_queries 0\n"));
    }

    /// The Prometheus and Loki query endpoints over empty stores, all sharing `gate`.
    fn app(dir: &std::path::Path, gate: &QueryGate) -> axum::Router {
        let tsdb = Arc::new(storage::Tsdb::open(&dir.join("tsdb"), Default::default()).unwrap());
        let logs =
            Arc::new(storage::logs::LogStore::open(&dir.join("logs"), Default::default()).unwrap());
        let engine = Arc::new(promql::Engine::new(tsdb.clone(), Default::default()));
        let info = crate::prometheus::ServerInfo {
            start_time: std::time::SystemTime::now(),
            cwd: String::new(),
            config_yaml: String::new(),
            storage_retention: String::new(),
            flags: Default::default(),
        };
        let loki = crate::loki::LokiState::new(
            logql::LogEngine::new(logs, logql::QueryLimits::default()),
            gate.clone(),
        );
        crate::prometheus::routes(crate::prometheus::ApiState::new(
            engine,
            tsdb,
            info,
            gate.clone(),
        ))
        .merge(crate::loki::routes(loki))
    }

    /// GETs `uri` from `app`: (status, body).
    pub(crate) async fn get(app: &axum::Router, uri: &str) -> (u16, String) {
        use tower::ServiceExt;
        let req = axum::http::Request::get(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_wait_for_a_slot_and_time_out_with_each_apis_error() {
        let dir = tempfile::tempdir().unwrap();
        let (g, _r) = gate(1, Duration::from_secs(3600));
        let app = app(dir.path(), &g);
        let held = g.admit(None).await.unwrap();
        // Prometheus: the request's `timeout` bounds its wait.
        for uri in [
            "/api/v1/query?query=1&timeout=1ms",
            "/api/v1/query_range?query=1&start=0&end=60&step=15&timeout=1ms",
        ] {
            assert_eq!(
                get(&app, uri).await,
                (
                    503,
                    r#"{"status":"error","errorType":"timeout","error":"query timed out in query queue"}"#.to_owned()
                ),
                "{uri}"
            );
        }
        // Metadata endpoints are not queries: they do not wait.
        assert_eq!(get(&app, "/api/v1/labels").await.0, 200);
        // A query without a timeout waits, counted, and runs once the slot is free.
        let waiting = tokio::spawn({
            let app = app.clone();
            async move { get(&app, "/api/v1/query?query=1").await }
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            while g.queries.get() != 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the query never queued");
        drop(held);
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 200, "{body}");

        // Loki's query endpoints wait up to the engine timeout, then answer its timeout status.
        let (g, _r) = gate(1, Duration::from_millis(1));
        let app = self::app(&dir.path().join("2"), &g);
        let _held = g.admit(None).await.unwrap();
        for uri in [
            "/loki/api/v1/query?query=vector(1)",
            "/loki/api/v1/query_range?query=%7Ba%3D%22b%22%7D",
        ] {
            assert_eq!(
                get(&app, uri).await,
                (504, "query timed out in query queue\n".to_owned()),
                "{uri}"
            );
        }
    }

    /// Trace searches and the dependency graph share the gate and time out in each API's
    /// envelope; fetching one trace by id is a point read and does not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trace_searches_wait_for_a_slot_and_time_out_with_each_apis_error() {
        let f = crate::trace_fixture::fixture();
        let (g, _r) = gate(1, Duration::from_millis(1));
        let app =
            crate::jaeger::routes(f.store.clone(), Default::default(), g.clone(), None).merge(
                crate::tempo::routes(f.store.clone(), Default::default(), g.clone()),
            );
        let held = g.admit(None).await.unwrap();
        let msg = "query timed out in query queue";
        for uri in [
            "/jaeger/api/traces?service=frontend",
            "/jaeger/api/dependencies?lookback=3600000",
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, 504, "{uri}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                v["errors"],
                serde_json::json!([{ "code": 504, "msg": msg }]),
                "{uri}"
            );
        }
        for uri in [
            "/tempo/api/search?tags=service.name%3Dfrontend",
            "/tempo/api/search?q=%7B%7D",
        ] {
            assert_eq!(get(&app, uri).await, (504, msg.to_owned()), "{uri}");
        }
        let by_id = format!("/tempo/api/traces/{}", crate::trace_fixture::TRACE_A);
        assert_eq!(get(&app, &by_id).await.0, 200);
        assert_eq!(get(&app, "/jaeger/api/services").await.0, 200);
        drop(held);
        assert_eq!(
            get(&app, "/jaeger/api/traces?service=frontend").await.0,
            200
        );
        assert_eq!(get(&app, "/tempo/api/search?q=%7B%7D").await.0, 200);
    }

    /// Rule queries take the same slots from the blocking pool and time out the same way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rule_queries_take_the_same_slots() {
        use rules::QuerySlots;
        let (g, _r) = gate(1, Duration::from_millis(1));
        let held = g.admit(None).await.unwrap();
        let slots = g.clone();
        let refused = tokio::task::spawn_blocking(move || slots.acquire().map(|_| ()))
            .await
            .unwrap();
        assert_eq!(refused, Err("query timed out in query queue".to_owned()));
        drop(held);
        let slots = g.clone();
        let counted = tokio::task::spawn_blocking(move || {
            let slot = slots.acquire().unwrap();
            let n = slots.queries.get();
            drop(slot);
            n
        })
        .await
        .unwrap();
        assert_eq!(counted, 1);
        assert_eq!(g.queries.get(), 0);
    }

    #[tokio::test]
    async fn the_engine_timeout_bounds_every_wait() {
        let (g, _r) = gate(1, Duration::from_millis(1));
        let _held = g.admit(None).await.unwrap();
        for t in [None, Some(Duration::from_secs(3600))] {
            assert_eq!(g.admit(t).await.err(), Some(QueueTimeout), "{t:?}");
        }
    }
}
