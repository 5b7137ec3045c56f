//! Start-up of notification delivery: the built-in Alertmanager (from `alertmanager:`, its
//! config read from `config_file` or inline `config`) and the sender to the external
//! Alertmanagers of `alerting:`. Owns only this wiring; the rest is `query::alertmanager`.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use query::alert::AlertSink;
use query::alertmanager::{Builtin, BuiltinOptions};

use crate::config::Config;

pub struct Alerting {
    /// Where the rule manager sends its alerts: the built-in Alertmanager and/or the
    /// external ones.
    pub sink: Arc<dyn AlertSink>,
    /// The built-in Alertmanager's `/api/v2/*` (empty when it is disabled).
    pub routes: axum::Router,
}

/// The built-in Alertmanager's alertmanager.yml: from `config_file`, inline `config`, or
/// empty for the built-in default.
fn builtin_config_text(config: &Config) -> anyhow::Result<String> {
    let am = &config.alertmanager;
    Ok(match (&am.config_file, &am.config) {
        (Some(_), Some(_)) => {
            anyhow::bail!("alertmanager: set either config_file or config, not both")
        }
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("reading Alertmanager config {}", path.display()))?,
        (None, Some(inline)) => {
            serde_yaml::to_string(inline).context("rendering alertmanager.config")?
        }
        (None, None) => String::new(),
    })
}

/// What `check-config` validates beyond the file's own shape: the built-in Alertmanager's
/// config and the `alerting:` senders.
pub fn check(config: &Config) -> anyhow::Result<()> {
    if config.alertmanager.enabled {
        let text = builtin_config_text(config)?;
        if !text.trim().is_empty() {
            query::alertmanager::check_config(&text)?;
        }
    }
    if let Some(a) = &config.alerting {
        a.check()?;
    }
    Ok(())
}

pub fn start(config: &Config, registry: &mut Registry) -> anyhow::Result<Alerting> {
    let am = &config.alertmanager;
    let builtin = if am.enabled {
        let config_yaml = builtin_config_text(config)?;
        let external_url = if am.external_url.is_empty() {
            format!("http://{}", config.listeners.http)
        } else {
            am.external_url.trim_end_matches('/').to_owned()
        };
        let b = Builtin::start(
            BuiltinOptions {
                config_yaml,
                state_dir: config.storage.path.join("alertmanager"),
                external_url,
            },
            registry,
        )
        .context("starting the built-in Alertmanager")?;
        tracing::info!("built-in Alertmanager serving /api/v2");
        Some(b)
    } else {
        None
    };
    let sink = query::alertmanager::alert_sink(
        config.alerting.as_ref(),
        &config.global.external_labels,
        builtin.as_ref(),
        registry,
    )
    .context("starting the alert sender")?;
    Ok(Alerting {
        sink,
        routes: builtin.map(|b| b.routes()).unwrap_or_default(),
    })
}
