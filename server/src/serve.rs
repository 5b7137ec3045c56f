//! Start-up, wiring and shutdown of the server: opens the stores, builds the engine, mounts
//! every component's routes on one HTTP listener, and on SIGINT/SIGTERM stops accepting,
//! drains in-flight requests, flushes the stores and returns.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::self_metrics::{self, Exposition, HttpMetrics, ScrapeTimeMetrics};
use crate::ui_status::UiStatus;
use crate::web::{Guard, Listener, Web};

pub fn run(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("novamon")
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    for d in config.deprecated_keys() {
        tracing::warn!("{d}");
    }
    let web = Web::open(config.listeners.web_config.as_deref()).map_err(anyhow::Error::msg)?;
    let data_dir = &config.storage.path.clone();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let opened = Instant::now();
    let tsdb_dir = data_dir.join("tsdb");
    let tsdb = Arc::new(
        storage::Tsdb::open(&tsdb_dir, config.tsdb_options())
            .with_context(|| format!("opening the TSDB at {}", tsdb_dir.display()))?,
    );
    tracing::info!(
        dir = %tsdb_dir.display(),
        series = tsdb.num_series(),
        elapsed_ms = opened.elapsed().as_millis() as u64,
        "TSDB opened"
    );
    let engine = Arc::new(promql::Engine::new(tsdb.clone(), config.engine_options()));
    let traces_dir = data_dir.join("traces");
    let traces = Arc::new(
        storage::traces::TraceStore::open(&traces_dir, config.trace_store_options())
            .with_context(|| format!("opening the trace store at {}", traces_dir.display()))?,
    );
    let otlp_state = ingest::otlp::OtlpState::new(
        traces.clone(),
        tsdb.clone(),
        config.limits.otlp_max_message_bytes as usize,
    )
    .with_max_expansion(config.limits.ingest_max_expansion)
    .with_max_spans(config.limits.otlp_max_spans_per_request)
    .with_label_limits(config.ingest_limits())
    .with_log_bounds(config.log_bounds());

    let logs_dir = data_dir.join("logs");
    let logs = Arc::new(
        storage::logs::LogStore::open(&logs_dir, config.log_options())
            .with_context(|| format!("opening the log store at {}", logs_dir.display()))?,
    );
    let mut registry = Registry::default();
    // Checked when the config was loaded.
    let redactor = config.log_redactor().map_err(anyhow::Error::msg)?;
    // Every ingest path writes logs through this one writer.
    let log_writer: Arc<dyn storage::logs::LogWriter> = if redactor.is_empty() {
        logs.clone()
    } else {
        Arc::new(ingest::logs::redact::Redacting::new(
            logs.clone(),
            redactor,
            &mut registry,
        ))
    };
    let log_sink = ingest::logs::LogSink::new(
        log_writer.clone(),
        ingest::logs::Mapping {
            label_keys: config.logs.label_keys.clone(),
        },
    )
    .with_push_max_bytes(config.limits.loki_push_max_bytes as usize)
    .with_max_expansion(config.limits.ingest_max_expansion)
    .with_bounds(config.log_bounds())
    .with_detected_levels(config.logs.discover_log_levels);
    let otlp_state = otlp_state
        .with_logs(log_writer)
        .with_detected_levels(config.logs.discover_log_levels);

    let query_gate = config.query_gate(&mut registry);
    let loki_state = api::loki::LokiState::new(
        logql::LogEngine::new(logs.clone(), config.log_query_limits()),
        query_gate.clone(),
    )
    .with_discover_log_levels(config.logs.discover_log_levels);
    let http_metrics = HttpMetrics::register(&mut registry);
    let ingest_state =
        ingest::IngestState::new(tsdb.clone(), config.ingest_limits(), &mut registry);
    let otlp_state = otlp_state.with_counters(ingest_state.counters());
    let (otlp_state, span_metrics) =
        start_span_metrics(&config, otlp_state, tsdb.clone(), &mut registry)?;
    let log_sink = log_sink.with_counters(ingest_state.counters());
    let elastic_api = api::elastic::routes(
        api::elastic::ElasticState::new(
            elastic::Searcher::new(logs.clone(), config.elastic_search_options()),
            query_gate.clone(),
            &node_name(),
            {
                let logs = logs.clone();
                Arc::new(move || logs.sync())
            },
        ),
        ingest::elastic::routes(log_sink.clone(), &config.elasticsearch.timestamp_field),
    );
    // Bound before anything that links back to it (rules' generatorURL, notifications), so
    // that those carry the real port when the config asks for port 0.
    let listener = tokio::net::TcpListener::bind(config.listeners.http)
        .await
        .with_context(|| format!("listening on {}", config.listeners.http))?;
    let http_addr = listener.local_addr()?;
    config.self_scrape_at(http_addr);
    let own_url = external_url(http_addr, web.has_tls());
    // Before anything appends: a destination starts with what is appended from now on.
    let forwarding = Arc::new(ingest::forward::Forwarding::new(
        tsdb.clone(),
        &mut registry,
    ));
    forwarding
        .apply(config.remote_write().map_err(anyhow::Error::msg)?)
        .await
        .map_err(anyhow::Error::msg)?;
    let signal_forwarding = Arc::new(ingest::forward::SignalForwarding::new(
        logs.outbox(),
        traces.outbox(),
        &mut registry,
    ));
    signal_forwarding
        .apply(config.forward().map_err(anyhow::Error::msg)?)
        .await
        .map_err(anyhow::Error::msg)?;
    let alerting = crate::alertmanager::start(&config, &mut registry, &own_url)?;
    let (scraping, sd_metrics) =
        crate::scrape::start(&config, tsdb.clone(), own_url.clone(), &mut registry)
            .await
            .map_err(anyhow::Error::msg)?;
    let federation = api::prometheus::federate::Federation::new(
        tsdb.clone(),
        config.global.external_labels.clone(),
        config.query.lookback_delta.0.as_millis() as i64,
    );
    let rules = crate::rules::start(
        &config,
        tsdb.clone(),
        engine.clone(),
        logql::LogEngine::new(logs.clone(), config.log_query_limits()),
        crate::rules::Wiring {
            sink: alerting.sink.clone(),
            alerting: alerting.reloader.clone(),
            web: web.clone(),
            slots: Arc::new(query_gate.clone()),
            scraping: scraping.clone(),
            forwarding: forwarding.clone(),
            signal_forwarding: signal_forwarding.clone(),
            federation: federation.clone(),
        },
        &mut registry,
        own_url,
    )
    .await?;
    let api_state = api::prometheus::ApiState::new(
        engine,
        tsdb.clone(),
        server_info(&config, http_addr)?,
        query_gate.clone(),
    )
    .with_rules(rules.manager.clone())
    .with_targets(Arc::new(scraping.clone()))
    .with_exemplars(tsdb.clone());
    let export = crate::export::start(
        &config,
        tsdb.clone(),
        logs.clone(),
        traces.clone(),
        &mut registry,
    )?;
    let scrape_time = ScrapeTimeMetrics::register(
        &mut registry,
        self_metrics::Stores {
            tsdb: tsdb.clone(),
            traces: traces.clone(),
            logs: logs.clone(),
        },
    );
    let exposition = Arc::new(Exposition {
        registry,
        scrape_time,
        sd_metrics,
    });

    let pushed = Arc::new(
        ingest::push::PushStore::open(&data_dir.join("pushgateway"))
            .with_context(|| format!("opening the pushed groups in {}", data_dir.display()))?,
    );
    let push_state =
        ingest::push::PushState::new(pushed.clone(), config.limits.push_max_bytes as usize);
    ingest::push::expose(&push_state, tsdb.clone(), config.global.scrape_interval.0);

    let sql = api::sql::SqlState::new(
        sql_engine(
            &config,
            tsdb.clone(),
            logs.clone(),
            traces.clone(),
            export.as_ref().map(|e| e.history.clone()),
        )?,
        query_gate.clone(),
        config.query.timeout.0,
    );
    let app = Router::new()
        .merge(ingest::routes(ingest_state))
        .merge(ingest::push::routes(push_state))
        .merge(api::pushgateway::routes(Arc::new(crate::push::Pushed(
            pushed,
        ))))
        .merge(api::prometheus::routes(api_state))
        .merge(api::prometheus::federate::routes(federation))
        .merge(rules.routes())
        .merge(alerting.routes)
        .merge(ui::routes(Arc::new(UiStatus {
            data_dir: data_dir.clone(),
            tsdb: tsdb.clone(),
            logs: logs.clone(),
            traces: traces.clone(),
            forwarding: forwarding.clone(),
            signal_forwarding: signal_forwarding.clone(),
        })))
        .merge(ingest::logs::routes(log_sink.clone()))
        .nest(&config.elasticsearch.path_prefix, elastic_api.clone())
        // `nest` leaves the prefix with a slash (`/es/`, where clients GET the version) to
        // the outer router: it is the API's root too.
        .route_service(
            &format!("{}/", config.elasticsearch.path_prefix),
            tower::ServiceExt::map_request(elastic_api.clone(), |mut r: axum::extract::Request| {
                *r.uri_mut() = axum::http::Uri::from_static("/");
                r
            }),
        )
        .merge(api::loki::routes(loki_state))
        .merge(ingest::otlp::http_routes(otlp_state.clone()))
        .merge(api::jaeger::routes(
            traces.clone(),
            config.trace_limits(),
            query_gate.clone(),
            // The metrics generator's service-graph counters are the dependency graph's
            // edge table.
            config
                .traces
                .metrics_generator
                .options()
                .map(|_| tsdb.clone() as Arc<dyn storage::Querier>),
        ))
        .merge(api::tempo::routes(
            traces.clone(),
            config.trace_limits(),
            query_gate.clone(),
        ))
        .merge(api::sql::routes(sql.clone()))
        .route(
            "/-/healthy",
            get(|| async { "Prometheus Server is Healthy.\n" }).head(|| async {}),
        )
        .route(
            "/-/ready",
            get(|| async { "Prometheus Server is Ready.\n" }).head(|| async {}),
        )
        .route("/metrics", get(self_metrics::serve).with_state(exposition))
        .layer(axum::middleware::from_fn(crate::cross_site::guard))
        .layer(from_fn_with_state(
            Guard::new(&web, Listener::Http),
            crate::web::guard,
        ))
        .layer(from_fn_with_state(http_metrics, self_metrics::track));

    tracing::info!(addr = %http_addr, tls = web.has_tls(), "HTTP listening");
    warn_if_open(&web, http_addr, "HTTP");
    let otlp = start_otlp(&config, &web, otlp_state, traces.clone()).await?;
    let forward_opts = config.forward_options()?;
    let forward_addr = config.logs.forward.listen;
    let forward = tokio::net::TcpListener::bind(forward_addr)
        .await
        .with_context(|| format!("listening on {forward_addr}"))?;
    tracing::info!(addr = %forward.local_addr()?, "forward protocol listening");
    let postgres = match config.listeners.postgres {
        Some(addr) => Some(
            crate::postgres::start(addr, sql, &web, config.limits.postgres_max_connections).await?,
        ),
        None => None,
    };
    let elastic = start_elastic(&config, &web, elastic_api).await?;
    let forward = tokio::spawn(ingest::logs::forward::serve(
        forward,
        log_sink,
        forward_opts,
    ));
    crate::web::serve(
        listener,
        app,
        web,
        Listener::Http,
        config.http_listener_options(),
        shutdown_signal(),
    )
    .await;
    otlp.stop().await;
    // After the OTLP listeners, so that it counts every span they stored.
    if let Some(flusher) = span_metrics {
        flusher.stop().await;
    }
    forward.abort();
    if let Some(elastic) = elastic {
        elastic.stop().await;
    }
    if let Some(postgres) = postgres {
        postgres.abort();
    }
    rules.manager.stop().await;
    scraping.manager.stop().await;
    if let Some(export) = export {
        export.stop();
    }
    // Unsent data stays in the outbox for the next start.
    forwarding.stop().await;
    signal_forwarding.stop().await;

    tracing::info!("stopped accepting; flushing storage");
    tokio::task::spawn_blocking(move || tsdb.flush())
        .await?
        .context("flushing the TSDB")?;
    tokio::task::spawn_blocking(move || traces.flush())
        .await?
        .context("flushing the trace store")?;
    tokio::task::spawn_blocking(move || logs.close())
        .await?
        .context("indexing the last log records")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The metrics generator (`traces.metrics_generator`), when on: counts the spans `state`
/// stores and appends its series to `tsdb` until stopped.
fn start_span_metrics(
    config: &Config,
    state: ingest::otlp::OtlpState,
    tsdb: Arc<storage::Tsdb>,
    registry: &mut Registry,
) -> anyhow::Result<(
    ingest::otlp::OtlpState,
    Option<ingest::spanmetrics::Flusher>,
)> {
    let Some(opts) = config.traces.metrics_generator.options() else {
        return Ok((state, None));
    };
    let generator = Arc::new(
        ingest::spanmetrics::SpanMetrics::new(opts, registry)
            .context("traces.metrics_generator")?,
    );
    let flusher = ingest::spanmetrics::start(generator.clone(), tsdb);
    Ok((state.with_span_metrics(generator), Some(flusher)))
}

/// The OTLP listeners (gRPC and HTTP) and the trace retention loop, stopped together.
struct Otlp {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Otlp {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn start_otlp(
    config: &Config,
    web: &Web,
    state: ingest::otlp::OtlpState,
    traces: Arc<storage::traces::TraceStore>,
) -> anyhow::Result<Otlp> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grpc_addr = config.otlp.grpc;
    let grpc = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("listening on {grpc_addr}"))?;
    tracing::info!(addr = %grpc.local_addr()?, tls = web.has_tls(), "OTLP/gRPC listening");
    warn_if_open(web, grpc.local_addr()?, "OTLP/gRPC");
    let http_addr = config.otlp.http;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("listening on {http_addr}"))?;
    tracing::info!(addr = %http.local_addr()?, tls = web.has_tls(), "OTLP/HTTP listening");
    warn_if_open(web, http.local_addr()?, "OTLP/HTTP");
    let mut tasks = Vec::new();
    let opts = config.otlp_listener_options();
    tasks.push(tokio::spawn(crate::web::serve(
        grpc,
        ingest::otlp::grpc_router(state.clone()).layer(from_fn_with_state(
            Guard::new(web, Listener::OtlpGrpc),
            crate::web::guard,
        )),
        web.clone(),
        Listener::OtlpGrpc,
        opts,
        until_stopped(stopped.clone()),
    )));
    tasks.push(tokio::spawn(crate::web::serve(
        http,
        ingest::otlp::http_routes(state).layer(from_fn_with_state(
            Guard::new(web, Listener::OtlpHttp),
            crate::web::guard,
        )),
        web.clone(),
        Listener::OtlpHttp,
        opts,
        until_stopped(stopped.clone()),
    )));
    let mut rx = stopped;
    let retention_interval = config.limits.trace_retention_interval.0;
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(retention_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = rx.wait_for(|s| *s) => return,
            }
            let store = traces.clone();
            match tokio::task::spawn_blocking(move || store.enforce_retention()).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::info!(partitions = n, "trace retention dropped partitions")
                }
                Ok(Err(e)) => tracing::error!("trace retention: {e}"),
                _ => {}
            }
            let store = traces.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.compact_finished()).await
            {
                tracing::error!("compacting finished trace partitions: {e}");
            }
        }
    }));
    Ok(Otlp { stop, tasks })
}

/// The Elasticsearch API's own listener (`listeners.elasticsearch`), serving it at its root
/// with the HTTP listener's TLS, auth and cross-site checks; stopped after the HTTP listener.
struct Elastic {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Elastic {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn start_elastic(config: &Config, web: &Web, api: Router) -> anyhow::Result<Option<Elastic>> {
    let Some(addr) = config.listeners.elasticsearch else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, tls = web.has_tls(), "Elasticsearch listening");
    warn_if_open(web, bound, "Elasticsearch");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = api
        .layer(axum::middleware::from_fn(crate::cross_site::guard))
        .layer(from_fn_with_state(
            Guard::new(web, Listener::Http),
            crate::web::guard,
        ));
    let task = tokio::spawn(crate::web::serve(
        listener,
        app,
        web.clone(),
        Listener::Http,
        config.http_listener_options(),
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    Ok(Some(Elastic { stop, task }))
}

/// The node name the Elasticsearch API reports: the host's, as Elasticsearch names a node.
fn node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "novamon".to_owned())
}

/// The SQL engine over the three stores, within the budgets the other query languages have:
/// PromQL's sample limit, LogQL's line limit and the trace search's span limit; reading the
/// exported days too when `export:` is set.
fn sql_engine(
    config: &Config,
    tsdb: Arc<storage::Tsdb>,
    logs: Arc<storage::logs::LogStore>,
    traces: Arc<storage::traces::TraceStore>,
    history: Option<sql::History>,
) -> anyhow::Result<sql::SqlEngine> {
    let opts = sql::SqlOptions {
        max_samples: config.query.max_samples,
        max_log_records: config.limits.log_query_max_lines,
        max_spans: config.limits.trace_search_max_spans,
        ..sql::SqlOptions::default()
    };
    let engine =
        sql::SqlEngine::new(tsdb, logs, traces, opts).context("starting the SQL engine")?;
    Ok(match history {
        Some(h) => engine.with_history(h),
        None => engine,
    })
}

/// Prometheus's default bind (all interfaces) stays the default; an unauthenticated listener
/// reachable from other hosts is worth one line at start-up.
fn warn_if_open(web: &Web, addr: std::net::SocketAddr, name: &str) {
    if !web.has_credentials() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "{name} listener is reachable from other hosts without authentication; set basic_auth_users in a web config file (--web.config.file) or bind to 127.0.0.1"
        );
    }
}

fn server_info(
    config: &Config,
    http_addr: std::net::SocketAddr,
) -> anyhow::Result<api::prometheus::ServerInfo> {
    Ok(api::prometheus::ServerInfo {
        start_time: std::time::SystemTime::now(),
        cwd: std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        config_yaml: serde_yaml::to_string(config).context("rendering the config")?,
        storage_retention: promql_parser::util::display_duration(&config.storage.retention.0),
        flags: [
            ("config.file", String::new()),
            (
                "storage.tsdb.path",
                config.storage.path.join("tsdb").display().to_string(),
            ),
            (
                "storage.tsdb.retention.time",
                promql_parser::util::display_duration(&config.storage.retention.0),
            ),
            ("web.listen-address", http_addr.to_string()),
            (
                "query.lookback-delta",
                promql_parser::util::display_duration(&config.query.lookback_delta.0),
            ),
            ("query.max-samples", config.query.max_samples.to_string()),
            (
                "query.max-concurrency",
                config.query.max_concurrency.to_string(),
            ),
            (
                "query.timeout",
                promql_parser::util::display_duration(&config.query.timeout.0),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    })
}

/// How alerts and notifications link back to this server: its HTTP address, with the host name
/// in place of an unspecified bind address (as Prometheus's default --web.external-url).
fn external_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
        format!("{scheme}://{host}:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
