//! The notification side of alerting, Alertmanager-compatible: the built-in Alertmanager
//! (alert store, routing tree, grouping and timers, inhibition, silences, receivers with
//! retry, notification state that survives restarts) and the sender that delivers the rule
//! manager's alerts to external Alertmanagers as Prometheus's notifier does. Owns everything
//! after an [`Alert`] is handed over; never evaluates rules and serves no HTTP (the v2 API's
//! wire shapes are the `api` crate's, over the calls in [`service`]).
//!
//! - [`alert`]: the hand-over shape and the [`AlertSink`] the rule manager sends to.
//! - `config`: alertmanager.yml; `dispatch`: aggregation groups and their timers; `inhibit`,
//!   `silence`, `matchers`: muting; `notify`, `smtp`, `template`: receivers and messages;
//!   `sender`: delivery to external Alertmanagers (relabelling is `storage::relabel`); `state`: what survives restarts.
//! - [`service`]: what the v2 API asks of the built-in Alertmanager.

pub mod alert;
mod config;
mod dispatch;
mod error;
mod http;
mod inhibit;
mod matchers;
mod notify;
mod sender;
pub mod service;
mod silence;
mod smtp;
mod state;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use storage::Labels;

pub use alert::{Alert, AlertSink};
pub use config::mask_secrets;
pub use error::Error;
use http::HttpClient;
pub use matchers::parse as parse_matchers;
pub use sender::{AlertingConfig, SenderLimits, SenderSettings};
pub use silence::{Silence, SilenceMatcher};

/// What the built-in Alertmanager needs to start.
pub struct BuiltinOptions {
    /// alertmanager.yml text; empty means the built-in default (one route, no integrations).
    pub config_yaml: String,
    /// Where the notification log and silences are kept across restarts.
    pub state_dir: PathBuf,
    /// Base URL notifications link back to (Alertmanager's --web.external-url).
    pub external_url: String,
}

/// A running built-in Alertmanager. Cheap to clone.
#[derive(Clone)]
pub struct Builtin {
    core: Arc<Core>,
}

impl Builtin {
    /// Loads the config and the persisted state and starts the background tasks (group
    /// timers, garbage collection). Must be called inside a tokio runtime.
    pub fn start(opts: BuiltinOptions, registry: &mut Registry) -> Result<Builtin, Error> {
        let BuiltinConfig(config) = BuiltinConfig::parse(&opts.config_yaml)?;
        Builtin::start_with(
            config,
            opts.state_dir,
            opts.external_url,
            Clock::System,
            registry,
        )
    }

    fn start_with(
        config: config::AmConfig,
        state_dir: PathBuf,
        external_url: String,
        clock: Clock,
        registry: &mut Registry,
    ) -> Result<Builtin, Error> {
        let state = state::StateFile::open(&state_dir).map_err(|msg| Error::State {
            path: state_dir.clone(),
            msg,
        })?;
        let persisted = state.load().map_err(|msg| Error::State {
            path: state_dir.clone(),
            msg,
        })?;
        let core = Arc::new(Core {
            started_at: clock.now_ms(),
            config: RwLock::new(Arc::new(config)),
            clock,
            external_url,
            alerts: Mutex::new(HashMap::new()),
            silences: silence::Silences::new(persisted.silences),
            nflog: Mutex::new(persisted.nflog),
            groups: dispatch::Groups::default(),
            notifier: notify::Notifier::new(registry, HttpClient::new()),
            state,
        });
        tokio::spawn(gc(Arc::downgrade(&core)));
        Ok(Builtin { core })
    }

    /// Switches to `config` (a reload): alerts, silences and the notification log stay;
    /// aggregation groups whose route is unchanged keep their timers, the others are
    /// rebuilt by routing every alert again, as Alertmanager's restarted dispatcher does.
    pub fn apply(&self, config: BuiltinConfig) {
        *self.core.config.write() = Arc::new(config.0);
        dispatch::regroup(&self.core, self.core.now());
    }

    /// The sink that hands the rule manager's alerts to this Alertmanager in-process.
    fn sink(&self) -> Arc<dyn AlertSink> {
        Arc::new(self.clone())
    }
}

impl AlertSink for Builtin {
    fn send(&self, alerts: Vec<Alert>) {
        let now = self.core.now();
        let alerts = alerts.into_iter().map(AmAlert::from).collect();
        // The rule manager's alerts are well-formed by construction; a label set that is
        // not (e.g. empty after templating) is dropped, as the HTTP API would reject it.
        if let Err(e) = self.core.put_alerts(alerts, now) {
            tracing::warn!("built-in Alertmanager rejected alerts: {e}");
        }
    }
}

/// The sink for the rule manager: every configured destination gets every alert.
struct FanOut(Vec<Arc<dyn AlertSink>>);

impl FanOut {
    fn new(sinks: Vec<Arc<dyn AlertSink>>) -> FanOut {
        FanOut(sinks)
    }
}

impl AlertSink for FanOut {
    fn send(&self, alerts: Vec<Alert>) {
        if let Some((last, rest)) = self.0.split_last() {
            for s in rest {
                s.send(alerts.clone());
            }
            last.send(alerts);
        }
    }
}

/// A parsed and validated alertmanager.yml, ready for [`Builtin::apply`].
pub struct BuiltinConfig(config::AmConfig);

impl BuiltinConfig {
    /// Parses alertmanager.yml text; empty text is the built-in default (one route, no
    /// integrations).
    pub fn parse(yaml: &str) -> Result<BuiltinConfig, Error> {
        if yaml.trim().is_empty() {
            config::AmConfig::parse(config::DEFAULT_CONFIG).map(BuiltinConfig)
        } else {
            config::AmConfig::parse(yaml).map(BuiltinConfig)
        }
    }
}

/// Validates an alertmanager.yml as the built-in Alertmanager would load it.
pub fn check_config(yaml: &str) -> Result<(), Error> {
    config::AmConfig::parse(yaml).map(|_| ())
}

/// The sender to the external Alertmanagers of `alerting:`, kept to apply reloads. Cheap to
/// clone.
#[derive(Clone)]
pub struct ExternalSender(Arc<sender::Sender>);

impl ExternalSender {
    /// Switches to new `alerting:` targets and external labels.
    pub fn apply(&self, settings: SenderSettings) {
        self.0.apply(settings);
    }
}

/// Starts the sender for `alerting:` and returns the sink the rule manager sends to (the
/// sender and, when there is one, the built-in Alertmanager) with the sender's handle.
pub fn alert_sink(
    settings: SenderSettings,
    builtin: Option<&Builtin>,
    registry: &mut Registry,
) -> (Arc<dyn AlertSink>, ExternalSender) {
    let sender = Arc::new(sender::Sender::start(settings, registry, HttpClient::new()));
    let mut sinks: Vec<Arc<dyn AlertSink>> = Vec::new();
    if let Some(b) = builtin {
        sinks.push(b.sink());
    }
    sinks.push(sender.clone());
    (Arc::new(FanOut::new(sinks)), ExternalSender(sender))
}

/// Wall-clock milliseconds; in tests driven by tokio's paused clock so timers and alert
/// times advance together.
#[derive(Clone)]
enum Clock {
    System,
    #[cfg(test)]
    Tokio {
        base_ms: i64,
        base: tokio::time::Instant,
    },
}

impl Clock {
    fn now_ms(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            #[cfg(test)]
            Clock::Tokio { base_ms, base } => {
                base_ms
                    + tokio::time::Instant::now()
                        .duration_since(*base)
                        .as_millis() as i64
            }
        }
    }
}

/// An alert as the Alertmanager keeps it. Times are ms since the epoch; `ends_at` 0 = unset.
#[derive(Clone, Debug, PartialEq)]
struct AmAlert {
    labels: Labels,
    annotations: BTreeMap<String, String>,
    starts_at: i64,
    ends_at: i64,
    generator_url: String,
    updated_at: i64,
    /// `ends_at` was not given but set from resolve_timeout, so a later explicit one wins.
    timeout: bool,
}

impl From<Alert> for AmAlert {
    fn from(a: Alert) -> AmAlert {
        AmAlert {
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            ends_at: a.ends_at.unwrap_or(0),
            generator_url: a.generator_url,
            updated_at: 0,
            timeout: false,
        }
    }
}

impl AmAlert {
    fn resolved_at(&self, now: i64) -> bool {
        self.ends_at != 0 && self.ends_at <= now
    }

    /// Alertmanager's merge of two versions of one alert: the newer wins, keeping the
    /// earliest start, and an explicit end is not replaced by a timeout.
    fn merge(old: &AmAlert, new: &AmAlert, now: i64) -> AmAlert {
        if new.updated_at < old.updated_at {
            return AmAlert::merge(new, old, now);
        }
        let mut res = new.clone();
        res.starts_at = old.starts_at.min(new.starts_at);
        if new.resolved_at(now) {
            if old.resolved_at(now) && old.ends_at > new.ends_at {
                res.ends_at = old.ends_at;
            }
        } else if old.ends_at > new.ends_at && !old.timeout {
            res.ends_at = old.ends_at;
        }
        res
    }
}

/// Prometheus's label-set fingerprint (FNV-1a over name, 0xff, value, 0xff), which
/// Alertmanager prints as 16 hex digits.
fn fingerprint(labels: &Labels) -> u64 {
    const OFFSET: u64 = 14695981039346656037;
    const PRIME: u64 = 1099511628211;
    if labels.is_empty() {
        return OFFSET;
    }
    let mut h = OFFSET;
    let mut add = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(PRIME);
        }
    };
    for l in labels {
        add(l.name.as_bytes());
        add(&[0xff]);
        add(l.value.as_bytes());
        add(&[0xff]);
    }
    h
}

use gocompat::time::{rfc3339_millis, rfc3339_nano, ZERO_TIME};

/// The built-in Alertmanager's shared state.
struct Core {
    /// Swapped whole by a reload; readers take the `Arc` and keep a consistent config.
    config: RwLock<Arc<config::AmConfig>>,
    clock: Clock,
    external_url: String,
    alerts: Mutex<HashMap<u64, AmAlert>>,
    silences: silence::Silences,
    nflog: Mutex<state::Nflog>,
    groups: dispatch::Groups,
    started_at: i64,
    notifier: notify::Notifier,
    state: state::StateFile,
}

/// Alerts that failed validation, in Alertmanager's words, joined by `; `.
impl Core {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn config(&self) -> Arc<config::AmConfig> {
        self.config.read().clone()
    }

    /// Alertmanager's alert intake: defaults start and end, validates, merges with the stored
    /// version and dispatches. Valid alerts are kept even when others are rejected.
    fn put_alerts(self: &Arc<Self>, alerts: Vec<AmAlert>, now: i64) -> Result<(), Error> {
        let mut errors = Vec::new();
        for mut a in alerts {
            a.updated_at = now;
            if a.starts_at == 0 {
                a.starts_at = if a.ends_at == 0 { now } else { a.ends_at };
            }
            if a.ends_at == 0 {
                a.timeout = true;
                a.ends_at = now + self.config().resolve_timeout.as_millis() as i64;
            }
            if let Err(e) = validate(&a) {
                errors.push(e);
                continue;
            }
            let fp = fingerprint(&a.labels);
            let merged = {
                let mut store = self.alerts.lock();
                let merged = match store.get(&fp) {
                    // Only overlapping versions are the same occurrence of the alert.
                    Some(old) if old.ends_at >= a.starts_at && old.starts_at <= a.ends_at => {
                        AmAlert::merge(old, &a, now)
                    }
                    _ => a,
                };
                store.insert(fp, merged.clone());
                merged
            };
            dispatch::insert(self, fp, merged, now);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidAlerts(errors))
        }
    }

    /// Firing alerts in the store: the candidates that can inhibit others.
    fn firing_alerts(&self, now: i64) -> Vec<AmAlert> {
        self.alerts
            .lock()
            .values()
            .filter(|a| !a.resolved_at(now))
            .cloned()
            .collect()
    }

    /// Silence ids and inhibiting fingerprints that mute an alert with these labels now.
    fn mutes(&self, labels: &Labels, firing: &[AmAlert], now: i64) -> (Vec<String>, Vec<String>) {
        let silenced = self.silences.mutes(labels, now);
        let inhibited = inhibit::inhibited_by(&self.config().inhibit_rules, labels, firing);
        (silenced, inhibited)
    }

    /// Writes the notification log and silences so a restart neither re-pages nor forgets.
    fn persist(&self) {
        let now = self.now();
        let silences = self.silences.snapshot(now);
        let nflog = {
            let mut log = self.nflog.lock();
            log.prune(now);
            log.clone()
        };
        if let Err(e) = self.state.save(&nflog, &silences) {
            tracing::error!("saving Alertmanager state: {e}");
        }
    }
}

fn validate(a: &AmAlert) -> Result<(), String> {
    if a.ends_at != 0 && a.ends_at < a.starts_at {
        return Err("start time must be before end time".into());
    }
    if a.labels.is_empty() {
        return Err("at least one label pair required".into());
    }
    for l in &a.labels {
        if !valid_label_name(&l.name) {
            return Err(format!("invalid label set: invalid name {:?}", l.name));
        }
    }
    for k in a.annotations.keys() {
        if !valid_label_name(k) {
            return Err(format!("invalid annotations: invalid name {k:?}"));
        }
    }
    Ok(())
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Resolved alerts leave the store, and old notification-log entries and expired silences
/// the state file, every 30 minutes (Alertmanager's default GC period).
async fn gc(core: std::sync::Weak<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30 * 60));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(core) = core.upgrade() else { return };
        let now = core.now();
        core.alerts.lock().retain(|_, a| !a.resolved_at(now));
        core.persist();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(starts: i64, ends: i64, updated: i64, timeout: bool) -> AmAlert {
        AmAlert {
            labels: Labels::from_pairs([("alertname", "A")]),
            annotations: BTreeMap::new(),
            starts_at: starts,
            ends_at: ends,
            generator_url: String::new(),
            updated_at: updated,
            timeout,
        }
    }

    #[test]
    fn times_print_as_go_does() {
        assert_eq!(rfc3339_nano(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339_nano(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_millis(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
    }

    #[test]
    fn merge_keeps_earliest_start_and_explicit_ends() {
        // A re-sent firing alert with a later start keeps the first start.
        let m = AmAlert::merge(&alert(100, 500, 1, false), &alert(200, 600, 2, false), 300);
        assert_eq!((m.starts_at, m.ends_at), (100, 600));
        // An explicit later end is not shortened by a newer timeout-derived end.
        let m = AmAlert::merge(&alert(100, 900, 1, false), &alert(100, 600, 2, true), 300);
        assert_eq!(m.ends_at, 900);
        // A resolve (end in the past) wins over an older firing version.
        let m = AmAlert::merge(&alert(100, 900, 1, false), &alert(100, 250, 2, false), 300);
        assert_eq!(m.ends_at, 250);
    }

    #[test]
    fn alert_validation_uses_alertmanager_messages() {
        let mut a = alert(100, 50, 0, false);
        assert_eq!(
            validate(&a).unwrap_err(),
            "start time must be before end time"
        );
        a.ends_at = 0;
        a.labels = Labels::default();
        assert_eq!(
            validate(&a).unwrap_err(),
            "at least one label pair required"
        );
        a.labels = Labels::from_pairs([("bad-name", "x")]);
        assert!(validate(&a)
            .unwrap_err()
            .contains("invalid name \"bad-name\""));
    }
}
