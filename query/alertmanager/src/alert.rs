//! The alert as the rule manager hands it to whoever delivers notifications: an external
//! Alertmanager, the built-in one, or both. Owns only the hand-over shape; rule evaluation
//! lives in `rules`, delivery and routing in `alertmanager`.

use std::collections::BTreeMap;

use storage::Labels;

/// One alert in Alertmanager's v2 `postableAlert` terms. Times are milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    /// Set on resolved alerts, and on firing ones to the time after which the receiver may
    /// consider them resolved if not re-sent (Prometheus: 4 × max(resend delay, group interval)).
    pub ends_at: Option<i64>,
    pub generator_url: String,
}

/// Where the rule manager sends the alerts of each evaluation. Must not block on the network:
/// implementations queue and deliver in the background.
pub trait AlertSink: Send + Sync {
    fn send(&self, alerts: Vec<Alert>);
}
