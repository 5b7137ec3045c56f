//! Start-up and reload of notification delivery: the built-in Alertmanager (from
//! `alertmanager:`, its config read from `config_file` or inline `config`) and the sender to
//! the external Alertmanagers of `alerting:`. Owns only this wiring; the rest is
//! the `alertmanager` crate.

use std::sync::Arc;

use alertmanager::AlertSink;
use alertmanager::{Builtin, BuiltinConfig, BuiltinOptions, ExternalSender, SenderSettings};
use anyhow::Context;
use prometheus_client::registry::Registry;

use crate::config::Config;

pub struct Alerting {
    /// Where the rule manager sends its alerts: the built-in Alertmanager and/or the
    /// external ones.
    pub sink: Arc<dyn AlertSink>,
    /// The built-in Alertmanager's `/api/v2/*` (empty when it is disabled).
    pub routes: axum::Router,
    pub reloader: Reloader,
}

/// Re-reads `alertmanager:` and `alerting:` on a config reload. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    builtin: Option<Builtin>,
    sender: ExternalSender,
}

/// A reload's new settings, all checked, not yet in use.
pub struct Prepared {
    builtin: Option<BuiltinConfig>,
    sender: SenderSettings,
}

impl Reloader {
    /// Reads and validates the new settings; nothing running changes.
    pub fn prepare(&self, config: &Config) -> anyhow::Result<Prepared> {
        if config.alertmanager.enabled != self.builtin.is_some() {
            tracing::warn!(
                "alertmanager.enabled changed: the built-in Alertmanager is started or removed only at start-up"
            );
        }
        let builtin = match &self.builtin {
            Some(_) => Some(
                BuiltinConfig::parse(&builtin_config_text(config)?)
                    .context("loading the Alertmanager config")?,
            ),
            None => None,
        };
        let sender = SenderSettings::new(config.alerting.as_ref(), &config.global.external_labels)
            .context("alerting")?
            .with_limits(config.sender_limits());
        Ok(Prepared { builtin, sender })
    }

    pub fn apply(&self, prepared: Prepared) {
        if let (Some(b), Some(c)) = (&self.builtin, prepared.builtin) {
            b.apply(c);
        }
        self.sender.apply(prepared.sender);
    }
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
            serde_yaml::to_string(inline.expose()).context("rendering alertmanager.config")?
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
            alertmanager::check_config(&text)?;
        }
    }
    if let Some(a) = &config.alerting {
        a.check()?;
    }
    Ok(())
}

pub fn start(config: &Config, registry: &mut Registry, own_url: &str) -> anyhow::Result<Alerting> {
    let am = &config.alertmanager;
    let builtin = if am.enabled {
        let config_yaml = builtin_config_text(config)?;
        let external_url = if am.external_url.is_empty() {
            own_url.to_owned()
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
    let settings = SenderSettings::new(config.alerting.as_ref(), &config.global.external_labels)
        .context("alerting")?
        .with_limits(config.sender_limits());
    let (sink, sender) = alertmanager::alert_sink(settings, builtin.as_ref(), registry);
    Ok(Alerting {
        sink,
        routes: builtin
            .as_ref()
            .map(|b| api::alertmanager_v2::routes(b.clone()))
            .unwrap_or_default(),
        reloader: Reloader { builtin, sender },
    })
}
