//! Scraping in the server: the scrape manager started from `scrape_configs` (with the global
//! interval and timeout) and re-applied on reload, and the targets API's view of it
//! ([`api::prometheus::ScrapeTargets`]). Owns only that wiring; scraping is `ingest::scrape`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use ingest::scrape::{go_duration, Prepared, ScrapeManager, SdMetrics};
use storage::{Appendable, Labels, Metadata};

use crate::config::Config;

/// The running scrapers, as the reload and the API see them.
#[derive(Clone)]
pub struct Scraping {
    pub manager: Arc<ScrapeManager>,
    /// `scheme://host:port` others reach this server at: what a local target's URL becomes
    /// in `globalUrl`.
    external_url: String,
}

/// Starts scraping the config's jobs (checked already by `Config::parse`).
pub async fn start(
    config: &Config,
    store: Arc<dyn Appendable>,
    external_url: String,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<(Scraping, Arc<SdMetrics>), String> {
    for (job, kind) in config.unsupported_discovery() {
        tracing::warn!(
            job,
            discovery = kind,
            "service discovery not supported by this version: its targets are not scraped"
        );
    }
    let prepared = config.scrape()?;
    let sd = Arc::new(SdMetrics::default());
    sd.register(registry);
    let manager = ScrapeManager::new(store, sd.clone());
    manager.apply(prepared).await;
    let scraping = Scraping {
        manager,
        external_url,
    };
    Ok((scraping, sd))
}

impl Scraping {
    pub async fn apply(&self, prepared: Prepared) {
        self.manager.apply(prepared).await
    }
}

/// Prometheus's `getGlobalURL`: a target on this host is shown at the host name others use
/// (`external_url`'s); on our own port, at our external URL.
fn global_url(external_url: &str, scheme: &str, address: &str, rest: &str) -> String {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1");
    let (ext_scheme, ext_host) = external_url
        .split_once("://")
        .unwrap_or(("http", external_url));
    let (ext_name, ext_port) = ext_host.rsplit_once(':').unwrap_or((ext_host, ""));
    match (local, port == ext_port) {
        (true, true) => format!("{ext_scheme}://{ext_host}{rest}"),
        (true, false) => format!("{scheme}://{ext_name}:{port}{rest}"),
        _ => format!("{scheme}://{address}{rest}"),
    }
}

impl api::prometheus::ScrapeTargets for Scraping {
    fn pools(&self) -> Vec<String> {
        self.manager.pool_names()
    }

    fn active(&self) -> Vec<api::prometheus::ActiveTarget> {
        self.manager
            .active()
            .into_iter()
            .map(|a| {
                let t = &a.target;
                api::prometheus::ActiveTarget {
                    discovered_labels: t.discovered.clone(),
                    labels: t.labels.clone(),
                    scrape_pool: a.pool,
                    scrape_url: t.url(),
                    global_url: global_url(
                        &self.external_url,
                        &t.scheme,
                        &t.address,
                        &t.path_and_query,
                    ),
                    last_error: a.status.last_error,
                    last_scrape: a.status.last_scrape.map(|s| {
                        s.duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64)
                    }),
                    last_scrape_duration: a.status.last_duration.as_secs_f64(),
                    health: a.status.health.as_str(),
                    scrape_interval: go_duration(t.interval),
                    scrape_timeout: go_duration(t.timeout),
                }
            })
            .collect()
    }

    fn dropped(&self) -> Vec<api::prometheus::DroppedTarget> {
        self.manager
            .dropped()
            .into_iter()
            .map(|d| api::prometheus::DroppedTarget {
                discovered_labels: d.discovered,
                scrape_pool: d.pool,
            })
            .collect()
    }

    fn metadata(&self) -> Vec<(Labels, BTreeMap<String, Metadata>)> {
        self.manager.metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::global_url;

    #[test]
    fn local_targets_get_the_external_host() {
        let ext = "http://edge-1:9090";
        assert_eq!(
            global_url(ext, "http", "localhost:9090", "/metrics"),
            "http://edge-1:9090/metrics"
        );
        assert_eq!(
            global_url(ext, "http", "127.0.0.1:9100", "/metrics"),
            "http://edge-1:9100/metrics"
        );
        assert_eq!(
            global_url(ext, "https", "db:9187", "/m?x=1"),
            "https://db:9187/m?x=1"
        );
    }
}
