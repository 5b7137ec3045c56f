//! What the Alertmanager v2 API asks of the built-in Alertmanager, as typed calls on
//! [`Builtin`]: take alerts, list alerts and aggregation groups with their silenced/inhibited
//! state, create, read and expire silences, status and receivers. Owns the semantics of those
//! answers (filters, muting, ordering, validation messages); the JSON shapes and status codes
//! are the wire layer's.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;
use storage::{Labels, Matcher};

use crate::silence::{SetError, Silence};
use crate::{fingerprint, matchers, notify, AmAlert, Builtin, Core, Error};

/// Which alerts a listing keeps: all `matchers` match, the state flags allow it (each `true`
/// keeps alerts in that state) and, when given, one of its receivers matches `receiver`.
pub struct AlertFilter {
    pub matchers: Vec<Matcher>,
    pub active: bool,
    pub silenced: bool,
    pub inhibited: bool,
    pub receiver: Option<Regex>,
}

impl Default for AlertFilter {
    fn default() -> AlertFilter {
        AlertFilter {
            matchers: Vec::new(),
            active: true,
            silenced: true,
            inhibited: true,
            receiver: None,
        }
    }
}

impl AlertFilter {
    fn receiver_matches(&self, r: &str) -> bool {
        self.receiver.as_ref().is_none_or(|re| re.is_match(r))
    }
}

/// An alert as the API lists it. Times are ms since the epoch, 0 = unset.
pub struct AlertView {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at: i64,
    pub generator_url: String,
    pub fingerprint: u64,
    pub receivers: Vec<String>,
    /// Ids of the silences muting it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of the alerts inhibiting it.
    pub inhibited_by: Vec<String>,
}

impl AlertView {
    /// Neither silenced nor inhibited.
    pub fn active(&self) -> bool {
        self.silenced_by.is_empty() && self.inhibited_by.is_empty()
    }
}

/// One aggregation group of the dispatcher with its unresolved alerts.
pub struct GroupView {
    pub labels: Labels,
    pub receiver: String,
    pub alerts: Vec<AlertView>,
}

/// A silence with its state now (`expired`, `active`, `pending`).
pub struct SilenceView {
    pub silence: Silence,
    pub state: &'static str,
}

/// The running instance's status.
pub struct StatusView {
    /// The alertmanager.yml text in force.
    pub original_config: String,
    pub started_at: i64,
}

impl Core {
    /// The view of `a`, or `None` when `f` leaves it out.
    fn view(
        &self,
        f: &AlertFilter,
        a: &AmAlert,
        receivers: Vec<String>,
        firing: &[AmAlert],
        now: i64,
    ) -> Option<AlertView> {
        if !matchers::all_match(&f.matchers, &a.labels) {
            return None;
        }
        let (silenced_by, inhibited_by) = self.mutes(&a.labels, firing, now);
        let v = AlertView {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            updated_at: a.updated_at,
            generator_url: a.generator_url.clone(),
            fingerprint: fingerprint(&a.labels),
            receivers,
            silenced_by,
            inhibited_by,
        };
        let active = v.active();
        if (!f.active && active)
            || (!f.silenced && !v.silenced_by.is_empty())
            || (!f.inhibited && !v.inhibited_by.is_empty())
        {
            return None;
        }
        Some(v)
    }
}

impl Builtin {
    /// Milliseconds since the epoch on this Alertmanager's clock.
    pub fn now(&self) -> i64 {
        self.core.now()
    }

    /// Alertmanager's alert intake (`POST /api/v2/alerts`): valid alerts are kept even when
    /// others are rejected; the error lists the rejections in Alertmanager's words.
    pub fn post_alerts(&self, alerts: Vec<crate::Alert>) -> Result<(), Error> {
        let now = self.core.now();
        let alerts = alerts.into_iter().map(AmAlert::from).collect();
        self.core.put_alerts(alerts, now)
    }

    /// Firing alerts that `f` keeps, by fingerprint.
    pub fn alerts(&self, f: &AlertFilter) -> Vec<AlertView> {
        let core = &self.core;
        let now = core.now();
        let firing = core.firing_alerts(now);
        let config = core.config();
        let mut out: Vec<AlertView> = firing
            .iter()
            .filter_map(|a| {
                let receivers: Vec<String> = config
                    .route
                    .matching(&a.labels)
                    .iter()
                    .map(|r| r.receiver.clone())
                    .collect();
                if !receivers.iter().any(|r| f.receiver_matches(r)) {
                    return None;
                }
                core.view(f, a, receivers, &firing, now)
            })
            .collect();
        out.sort_by_key(|v| v.fingerprint);
        out
    }

    /// The dispatcher's aggregation groups with the unresolved alerts `f` keeps (Grafana's
    /// alert list reads these), sorted by group labels then receiver as Alertmanager sorts
    /// them; groups left empty are omitted.
    pub fn alert_groups(&self, f: &AlertFilter) -> Vec<GroupView> {
        let core = &self.core;
        let now = core.now();
        let firing = core.firing_alerts(now);
        let groups: Vec<_> = core
            .groups
            .snapshot()
            .into_iter()
            .filter(|(receiver, _, _)| f.receiver_matches(receiver))
            .collect();
        let mut receivers_of: HashMap<u64, Vec<String>> = HashMap::new();
        for (receiver, _, alerts) in &groups {
            for a in alerts {
                receivers_of
                    .entry(fingerprint(&a.labels))
                    .or_default()
                    .push(receiver.clone());
            }
        }
        let mut out: Vec<GroupView> = groups
            .into_iter()
            .filter_map(|(receiver, labels, alerts)| {
                let mut alerts: Vec<AmAlert> =
                    alerts.into_iter().filter(|a| !a.resolved_at(now)).collect();
                notify::sort_alerts(&mut alerts);
                let alerts: Vec<AlertView> = alerts
                    .iter()
                    .filter_map(|a| {
                        let receivers = receivers_of
                            .get(&fingerprint(&a.labels))
                            .cloned()
                            .unwrap_or_default();
                        core.view(f, a, receivers, &firing, now)
                    })
                    .collect();
                (!alerts.is_empty()).then_some(GroupView {
                    labels,
                    receiver,
                    alerts,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.labels
                .cmp(&b.labels)
                .then_with(|| a.receiver.cmp(&b.receiver))
        });
        out
    }

    /// Silences listed by `GET /api/v2/silences`: for each filter matcher, one of the
    /// silence's own matchers on that label equal-matches the filter's value.
    pub fn silences(&self, filter: &[Matcher]) -> Vec<SilenceView> {
        let now = self.core.now();
        self.core
            .silences
            .list(now)
            .into_iter()
            .filter(|s| {
                filter.iter().all(|f| {
                    s.matchers
                        .iter()
                        .any(|m| m.name == f.name && f.matches(&m.value))
                })
            })
            .map(|s| SilenceView {
                state: s.state(now).as_str(),
                silence: s,
            })
            .collect()
    }

    /// Creates a silence, or updates the one with `s.id`; returns its id. Persisted before
    /// returning, so a restart keeps it.
    pub fn set_silence(&self, s: Silence) -> Result<String, Error> {
        let now = self.core.now();
        if s.starts_at >= s.ends_at {
            return Err(Error::InvalidSilence(
                "Failed to create silence: start time must be before end time".into(),
            ));
        }
        if s.ends_at < now {
            return Err(Error::InvalidSilence(
                "Failed to create silence: end time can't be in the past".into(),
            ));
        }
        let id = self.core.silences.set(s, now).map_err(Error::from)?;
        self.core.persist();
        Ok(id)
    }

    pub fn silence(&self, id: &str) -> Option<SilenceView> {
        let now = self.core.now();
        self.core.silences.get(id).map(|s| SilenceView {
            state: s.state(now).as_str(),
            silence: s,
        })
    }

    /// Expires a silence now.
    pub fn expire_silence(&self, id: &str) -> Result<(), Error> {
        self.core
            .silences
            .expire(id, self.core.now())
            .map_err(Error::from)?;
        self.core.persist();
        Ok(())
    }

    pub fn status(&self) -> StatusView {
        StatusView {
            original_config: self.core.config().original.clone(),
            started_at: self.core.started_at,
        }
    }

    /// The configured receivers' names, in configuration order.
    pub fn receivers(&self) -> Vec<String> {
        self.core
            .config()
            .receivers
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }
}

impl From<SetError> for Error {
    fn from(e: SetError) -> Error {
        match e {
            SetError::NotFound => Error::SilenceNotFound(e.to_string()),
            SetError::Invalid(m) => Error::InvalidSilence(m),
        }
    }
}
