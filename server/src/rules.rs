//! The rule manager in the server: started from the configuration's `rule_files`,
//! `global.evaluation_interval` and `global.external_labels`, and reloaded from the config
//! file on SIGHUP and `POST /-/reload` together with the Alertmanager settings, the scrape
//! jobs, the `remote_write` and `forward` destinations and the web config file (a bad file is rejected and everything running stays). Owns only start-up and reload; evaluation is
//! the `rules` crate's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alertmanager::AlertSink;
use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rules::{RuleConfig, RuleManager};

use crate::config::Config;

/// The running manager and where its settings are re-read from on reload.
#[derive(Clone)]
pub struct Rules {
    pub manager: Arc<RuleManager>,
    config_path: Option<PathBuf>,
    external_url: String,
    also: Wiring,
}

/// What the rule manager is wired to: where its alerts go, and what a reload re-reads
/// besides the rule settings.
#[derive(Clone)]
pub struct Wiring {
    pub sink: Arc<dyn AlertSink>,
    pub alerting: crate::alertmanager::Reloader,
    pub web: crate::web::Web,
    /// The query gate the query APIs share: rule queries wait in it too.
    pub slots: Arc<dyn rules::QuerySlots>,
    /// The scrape jobs, re-applied from the reloaded config.
    pub scraping: crate::scrape::Scraping,
    /// The `remote_write` destinations, re-applied from the reloaded config.
    pub forwarding: Arc<ingest::forward::Forwarding>,
    /// The `forward:` destinations of logs and traces, re-applied likewise.
    pub signal_forwarding: Arc<ingest::forward::SignalForwarding>,
    /// `/federate`, which adds the reloaded config's external labels.
    pub federation: Arc<api::prometheus::federate::Federation>,
}

fn rule_config(config: &Config, path: Option<&Path>, external_url: &str) -> RuleConfig {
    // As Prometheus: relative rule_files are relative to the config file's directory.
    let base_dir = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    RuleConfig {
        patterns: config.rule_files.clone(),
        base_dir,
        evaluation_interval: config.global.evaluation_interval.0,
        query_offset: config
            .global
            .rule_query_offset
            .map(|d| d.0)
            .unwrap_or_default(),
        external_labels: config.global.external_labels.clone(),
        external_url: external_url.to_owned(),
    }
}

/// Loads the rule files and starts evaluating; a bad rule file stops start-up, as in
/// Prometheus.
pub async fn start(
    config: &Config,
    tsdb: Arc<storage::Tsdb>,
    engine: Arc<promql::Engine>,
    logs: logql::LogEngine,
    also: Wiring,
    registry: &mut prometheus_client::registry::Registry,
    external_url: String,
) -> anyhow::Result<Rules> {
    let manager = RuleManager::new(
        tsdb.clone(),
        tsdb,
        engine,
        Some(logs),
        also.sink.clone(),
        Some(also.slots.clone()),
        registry,
    );
    let path = config.source.clone();
    let n = manager
        .apply(&rule_config(config, path.as_deref(), &external_url))
        .await
        .context("loading rule files")?;
    if n > 0 {
        tracing::info!(groups = n, "rule groups loaded");
    }
    let rules = Rules {
        manager,
        config_path: path,
        external_url,
        also,
    };
    tokio::spawn(reload_on_sighup(rules.clone()));
    Ok(rules)
}

/// The address other machines reach us at; an unspecified bind address means this host.
impl Rules {
    /// Re-reads the config file, its rule files, the Alertmanager settings and the web config
    /// file; on any error nothing changes. The rule files are checked last, by the swap that
    /// applies them.
    async fn reload(&self) -> Result<(), String> {
        let config = Config::load(self.config_path.as_deref()).map_err(|e| e.to_string())?;
        let web = self.also.web.prepare()?;
        let alerting = self
            .also
            .alerting
            .prepare(&config)
            .map_err(|e| format!("{e:#}"))?;
        let scrape = config.scrape()?;
        let remote_write = config.remote_write()?;
        let forward = config.forward()?;
        let cfg = rule_config(&config, self.config_path.as_deref(), &self.external_url);
        match self.manager.apply(&cfg).await {
            Ok(n) => {
                self.also.alerting.apply(alerting);
                self.also.scraping.apply(scrape).await;
                self.also.forwarding.apply(remote_write).await?;
                self.also.signal_forwarding.apply(forward).await?;
                self.also
                    .federation
                    .set_external_labels(config.global.external_labels.clone());
                if let Some(web) = web {
                    self.also.web.apply(web);
                }
                tracing::info!(groups = n, "configuration reloaded");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn reload_logged(&self, trigger: &str) -> Result<(), String> {
        self.reload().await.inspect_err(|e| {
            tracing::error!(
                trigger,
                "reload rejected, the previous configuration keeps running: {e}"
            );
        })
    }

    /// `POST /-/reload` (and `PUT`, as Prometheus): 200 when reloaded, 500 with the reason.
    pub fn routes(&self) -> Router {
        let handler = |rules: Rules| async move {
            match rules.reload_logged("/-/reload").await {
                Ok(()) => (StatusCode::OK, String::new()),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("failed to reload config: {e}\n"),
                ),
            }
        };
        let (a, b) = (self.clone(), self.clone());
        Router::new().route(
            "/-/reload",
            post(move || handler(a.clone())).put(move || handler(b.clone())),
        )
    }
}

async fn reload_on_sighup(rules: Rules) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let _ = rules.reload_logged("SIGHUP").await;
    }
}
