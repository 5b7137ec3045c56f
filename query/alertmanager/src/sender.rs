//! Delivery of the rule manager's alerts to external Alertmanagers, as Prometheus's notifier
//! does it: external labels added, `alert_relabel_configs` applied, a bounded queue (the
//! oldest alerts dropped when full), batches of at most 256 alerts (by default) POSTed to every configured
//! Alertmanager's `/api/v2/alerts`, no retry (the rule manager re-sends). Owns the
//! `alerting:` config section, the queue and the `prometheus_notifications_*` metrics. The
//! queue's capacity and the batch size are [`SenderLimits`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};
use storage::{Label, Labels};
use tokio::sync::Notify;

use super::http::HttpClient;
use crate::alert::{Alert, AlertSink};
use crate::Error;
use storage::relabel::{self, RelabelConfig};

/// The sender's queue and batch sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderLimits {
    /// Alerts queued for delivery; beyond it the oldest are dropped (Prometheus's
    /// `--alertmanager.notification-queue-capacity`).
    pub queue_capacity: usize,
    /// Most alerts POSTed to an Alertmanager in one request.
    pub max_batch: usize,
}

impl Default for SenderLimits {
    /// Prometheus's: a queue of 10,000, batches of 256.
    fn default() -> Self {
        SenderLimits {
            queue_capacity: 10_000,
            max_batch: 256,
        }
    }
}

/// prometheus.yml's `alerting:` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    alert_relabel_configs: Vec<RelabelConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    alertmanagers: Vec<AlertmanagerConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AlertmanagerConfig {
    #[serde(default)]
    static_configs: Vec<StaticConfig>,
    #[serde(default = "default_scheme")]
    scheme: String,
    #[serde(default = "default_prefix")]
    path_prefix: String,
    #[serde(default = "default_timeout")]
    timeout: Timeout,
    #[serde(default = "default_api")]
    api_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    alert_relabel_configs: Vec<RelabelConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct StaticConfig {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

fn default_scheme() -> String {
    "http".into()
}
fn default_prefix() -> String {
    "/".into()
}
fn default_timeout() -> Timeout {
    Timeout(Duration::from_secs(10))
}
fn default_api() -> String {
    "v2".into()
}

#[derive(Clone, Copy, Debug)]
struct Timeout(Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        gocompat::units::parse_prometheus_duration(&s)
            .map(Timeout)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Timeout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&promql_parser::util::display_duration(&self.0))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AmLabel {
    alertmanager: String,
}

struct Target {
    url: String,
    timeout: Duration,
    relabel: Vec<relabel::Rule>,
}

struct Metrics {
    sent: Family<AmLabel, Counter>,
    errors: Family<AmLabel, Counter>,
    dropped: Counter,
    queue_length: Gauge,
    queue_capacity: Gauge,
    discovered: Gauge,
}

/// Where alerts go and how they are labelled on the way: swapped whole by a reload.
struct Settings {
    targets: Vec<Target>,
    relabel: Vec<relabel::Rule>,
    external_labels: Vec<Label>,
    limits: SenderLimits,
}

/// Checked `alerting:` settings, external labels and queue limits, ready for the sender to
/// switch to.
pub struct SenderSettings(Settings);

impl SenderSettings {
    /// Validates `alerting:` (none: no Alertmanager to send to).
    pub fn new(
        cfg: Option<&AlertingConfig>,
        external_labels: &BTreeMap<String, String>,
    ) -> Result<SenderSettings, Error> {
        let (targets, relabel) = match cfg {
            Some(cfg) => targets(cfg)?,
            None => (Vec::new(), Vec::new()),
        };
        Ok(SenderSettings(Settings {
            targets,
            relabel,
            external_labels: external_labels
                .iter()
                .map(|(k, v)| Label::new(k, v))
                .collect(),
            limits: SenderLimits::default(),
        }))
    }

    /// Queue capacity and batch size other than Prometheus's defaults.
    pub fn with_limits(mut self, limits: SenderLimits) -> SenderSettings {
        self.0.limits = limits;
        self
    }
}

/// The sink that queues alerts for the external Alertmanagers.
pub(crate) struct Sender {
    queue: Arc<Mutex<VecDeque<Value>>>,
    wake: Arc<Notify>,
    settings: Arc<RwLock<Arc<Settings>>>,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// Registers the `prometheus_notifications_*` metrics and starts the delivery task. With
    /// no Alertmanager configured alerts are dropped on arrival until a reload adds one.
    pub(crate) fn start(
        settings: SenderSettings,
        registry: &mut Registry,
        client: HttpClient,
    ) -> Sender {
        let metrics = Arc::new(Metrics {
            sent: Family::default(),
            errors: Family::default(),
            dropped: Counter::default(),
            queue_length: Gauge::default(),
            queue_capacity: Gauge::default(),
            discovered: Gauge::default(),
        });
        registry.register(
            "prometheus_notifications_sent",
            "Total number of alerts sent.",
            metrics.sent.clone(),
        );
        registry.register(
            "prometheus_notifications_errors",
            "Total number of sent alerts affected by errors.",
            metrics.errors.clone(),
        );
        registry.register(
            "prometheus_notifications_dropped",
            "Total number of alerts dropped due to errors when sending to Alertmanager.",
            metrics.dropped.clone(),
        );
        registry.register(
            "prometheus_notifications_queue_length",
            "The number of alert notifications in the queue.",
            metrics.queue_length.clone(),
        );
        registry.register(
            "prometheus_notifications_queue_capacity",
            "The capacity of the alert notifications queue.",
            metrics.queue_capacity.clone(),
        );
        registry.register(
            "prometheus_notifications_alertmanagers_discovered",
            "The number of alertmanagers discovered and active.",
            metrics.discovered.clone(),
        );
        let s = Sender {
            queue: Arc::default(),
            wake: Arc::default(),
            settings: Arc::new(RwLock::new(Arc::new(Settings {
                targets: Vec::new(),
                relabel: Vec::new(),
                external_labels: Vec::new(),
                limits: SenderLimits::default(),
            }))),
            metrics: metrics.clone(),
        };
        s.apply(settings);
        tokio::spawn(deliver(
            client,
            s.queue.clone(),
            s.wake.clone(),
            s.settings.clone(),
            metrics,
        ));
        s
    }

    /// Switches to `settings` (a reload); queued alerts go to the new targets.
    pub(crate) fn apply(&self, settings: SenderSettings) {
        let settings = settings.0;
        self.metrics.discovered.set(settings.targets.len() as i64);
        self.metrics
            .queue_capacity
            .set(settings.limits.queue_capacity as i64);
        for t in &settings.targets {
            let l = AmLabel {
                alertmanager: t.url.clone(),
            };
            let _ = self.metrics.sent.get_or_create(&l);
            let _ = self.metrics.errors.get_or_create(&l);
        }
        *self.settings.write() = Arc::new(settings);
    }
}

impl AlertingConfig {
    /// Validates what starting the sender would: API versions, schemes, relabel rules.
    pub fn check(&self) -> Result<(), Error> {
        targets(self).map(|_| ())
    }
}

/// The Alertmanager endpoints to post to and the global relabelling rules.
fn targets(cfg: &AlertingConfig) -> Result<(Vec<Target>, Vec<relabel::Rule>), Error> {
    let compile = |cfgs: &[RelabelConfig]| {
        cfgs.iter()
            .map(|c| c.compile().map_err(Error::Sender))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut targets = Vec::new();
    for am in &cfg.alertmanagers {
        if am.api_version != "v2" {
            return Err(Error::Sender(format!(
                "api_version {:?} is not supported: Alertmanager's v2 API is the only one left",
                am.api_version
            )));
        }
        if am.scheme != "http" && am.scheme != "https" {
            return Err(Error::Sender(format!("unknown scheme {:?}", am.scheme)));
        }
        for sc in &am.static_configs {
            for t in &sc.targets {
                let prefix = am.path_prefix.trim_matches('/');
                let path = if prefix.is_empty() {
                    "/api/v2/alerts".to_owned()
                } else {
                    format!("/{prefix}/api/v2/alerts")
                };
                targets.push(Target {
                    url: format!("{}://{t}{path}", am.scheme),
                    timeout: am.timeout.0,
                    relabel: compile(&am.alert_relabel_configs)?,
                });
            }
        }
    }
    let relabel = compile(&cfg.alert_relabel_configs)?;
    Ok((targets, relabel))
}

fn to_json(labels: &Labels, a: &Alert) -> Value {
    let mut v = json!({
        "labels": Value::Object(labels.iter().map(|l| (l.name.clone(), Value::String(l.value.clone()))).collect()),
        "annotations": a.annotations,
        "startsAt": super::rfc3339_millis(a.starts_at),
        "generatorURL": a.generator_url,
    });
    if let Some(e) = a.ends_at {
        v["endsAt"] = Value::String(super::rfc3339_millis(e));
    }
    v
}

impl AlertSink for Sender {
    fn send(&self, alerts: Vec<Alert>) {
        let settings = self.settings.read().clone();
        if settings.targets.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            // External labels fill in what the alert does not set itself.
            let mut ls = a.labels.as_slice().to_vec();
            for e in &settings.external_labels {
                if a.labels.get(&e.name).is_none() {
                    ls.push(e.clone());
                }
            }
            let Some(ls) = relabel::process(ls, &settings.relabel).map(Labels::new) else {
                continue;
            };
            if ls.is_empty() {
                continue;
            }
            out.push((ls, a));
        }
        if out.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        for (ls, a) in out {
            q.push_back(json!({"labels": ls.iter().map(|l| (l.name.clone(), l.value.clone())).collect::<BTreeMap<_, _>>(), "alert": to_json(&ls, &a)}));
        }
        let capacity = settings.limits.queue_capacity;
        if q.len() > capacity {
            let n = q.len() - capacity;
            q.drain(..n);
            self.metrics.dropped.inc_by(n as u64);
            tracing::warn!(
                dropped = n,
                "alert notification queue full, dropping alerts"
            );
        }
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }
}

async fn deliver(
    client: HttpClient,
    queue: Arc<Mutex<VecDeque<Value>>>,
    wake: Arc<Notify>,
    settings: Arc<RwLock<Arc<Settings>>>,
    metrics: Arc<Metrics>,
) {
    loop {
        wake.notified().await;
        loop {
            let max_batch = settings.read().limits.max_batch.max(1);
            let batch: Vec<Value> = {
                let mut q = queue.lock();
                let n = q.len().min(max_batch);
                let b = q.drain(..n).collect();
                metrics.queue_length.set(q.len() as i64);
                b
            };
            if batch.is_empty() {
                break;
            }
            let targets = settings.read().clone();
            let mut tasks = tokio::task::JoinSet::new();
            for (i, t) in targets.targets.iter().enumerate() {
                // Per-Alertmanager relabelling can drop alerts for this target only.
                let body: Vec<Value> =
                    batch
                        .iter()
                        .filter_map(|item| {
                            if t.relabel.is_empty() {
                                return Some(item["alert"].clone());
                            }
                            let ls =
                                Labels::from_pairs(item["labels"].as_object()?.iter().map(
                                    |(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()),
                                ));
                            let ls = Labels::new(relabel::process(ls.into_vec(), &t.relabel)?);
                            let mut a = item["alert"].clone();
                            a["labels"] = Value::Object(
                                ls.iter()
                                    .map(|l| (l.name.clone(), Value::String(l.value.clone())))
                                    .collect(),
                            );
                            Some(a)
                        })
                        .collect();
                if body.is_empty() {
                    continue;
                }
                let (client, targets, metrics) = (client.clone(), targets.clone(), metrics.clone());
                tasks.spawn(async move {
                    let t = &targets.targets[i];
                    let l = AmLabel {
                        alertmanager: t.url.clone(),
                    };
                    let n = body.len() as u64;
                    let start = Instant::now();
                    let res = client
                        .post_json(&t.url, &Value::Array(body), t.timeout)
                        .await;
                    let err = match res {
                        Ok(r) if (200..300).contains(&r.status) => None,
                        Ok(r) => Some(format!("bad response status {}", r.status)),
                        Err(e) => Some(e),
                    };
                    match err {
                        None => {
                            metrics.sent.get_or_create(&l).inc_by(n);
                        }
                        Some(e) => {
                            metrics.errors.get_or_create(&l).inc_by(n);
                            tracing::error!(
                                alertmanager = t.url,
                                count = n,
                                elapsed_ms = start.elapsed().as_millis() as u64,
                                "error sending alerts: {e}"
                            );
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::post;

    use super::*;

    #[tokio::test]
    async fn batches_relabels_and_posts_to_every_alertmanager() {
        let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let mut urls = Vec::new();
        for name in ["one", "two"] {
            let g = got.clone();
            let app = axum::Router::new().route(
                "/prefix/api/v2/alerts",
                post(move |body: axum::Json<Value>| {
                    let g = g.clone();
                    async move { g.lock().push((name.to_owned(), body.0)) }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push(l.local_addr().unwrap().to_string());
            tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        }
        let cfg: AlertingConfig = serde_yaml::from_str(&format!(
            "alert_relabel_configs: [{{source_labels: [severity], regex: debug, action: drop}}]\nalertmanagers:\n  - static_configs: [{{targets: ['{}', '{}']}}]\n    path_prefix: /prefix/\n    timeout: 5s\n",
            urls[0], urls[1]
        ))
        .unwrap();
        let mut reg = Registry::default();
        let ext = BTreeMap::from([
            ("cluster".to_owned(), "eu".to_owned()),
            ("alertname".to_owned(), "ignored".to_owned()),
        ]);
        let s = Sender::start(
            SenderSettings::new(Some(&cfg), &ext).unwrap(),
            &mut reg,
            HttpClient::new(),
        );
        let alert = |name: &str, sev: &str| Alert {
            labels: Labels::from_pairs([("alertname", name), ("severity", sev)]),
            annotations: BTreeMap::from([("summary".to_owned(), "s".to_owned())]),
            starts_at: 1_700_000_000_000,
            ends_at: Some(1_700_000_060_000),
            generator_url: "http://prom/graph".into(),
        };
        s.send(vec![alert("Down", "page"), alert("Noise", "debug")]);
        for _ in 0..100 {
            if got.lock().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = got.lock();
        assert_eq!(got.len(), 2, "{got:?}");
        for (_, body) in got.iter() {
            assert_eq!(
                body,
                &json!([{
                    "labels": {"alertname": "Down", "severity": "page", "cluster": "eu"},
                    "annotations": {"summary": "s"},
                    "startsAt": "2023-11-14T22:13:20.000Z",
                    "endsAt": "2023-11-14T22:14:20.000Z",
                    "generatorURL": "http://prom/graph",
                }])
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains(&format!("prometheus_notifications_sent_total{{alertmanager=\"http://{}/prefix/api/v2/alerts\"}} 1", urls[0])), "{text}");
    }

    #[tokio::test]
    async fn queue_capacity_and_batch_size_come_from_the_limits() {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            post(move |body: axum::Json<Value>| {
                let g = g.clone();
                async move { g.lock().push(body.0) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let cfg: AlertingConfig = serde_yaml::from_str(&format!(
            "alertmanagers: [{{static_configs: [{{targets: ['{url}']}}]}}]"
        ))
        .unwrap();
        let mut reg = Registry::default();
        let limits = SenderLimits {
            queue_capacity: 2,
            max_batch: 1,
        };
        let s = Sender::start(
            SenderSettings::new(Some(&cfg), &BTreeMap::new())
                .unwrap()
                .with_limits(limits),
            &mut reg,
            HttpClient::new(),
        );
        let alert = |name: &str| Alert {
            labels: Labels::from_pairs([("alertname", name)]),
            annotations: BTreeMap::new(),
            starts_at: 1_700_000_000_000,
            ends_at: None,
            generator_url: String::new(),
        };
        // Queued without yielding to the delivery task: the oldest of three is dropped.
        s.send(vec![alert("a"), alert("b"), alert("c")]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains("prometheus_notifications_dropped_total 1"),
            "{text}"
        );
        assert!(
            text.contains("prometheus_notifications_queue_capacity 2"),
            "{text}"
        );
        for _ in 0..100 {
            if got.lock().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let names: Vec<Value> = got
            .lock()
            .iter()
            .map(|b| {
                assert_eq!(b.as_array().unwrap().len(), 1, "{b}");
                b[0]["labels"]["alertname"].clone()
            })
            .collect();
        assert_eq!(names, [json!("b"), json!("c")]);
    }

    #[test]
    fn unsupported_settings_are_errors() {
        for yml in [
            "alertmanagers: [{api_version: v1, static_configs: [{targets: [a:1]}]}]",
            "alertmanagers: [{scheme: ftp, static_configs: [{targets: [a:1]}]}]",
            "alert_relabel_configs: [{action: nope}]\nalertmanagers: [{static_configs: [{targets: [a:1]}]}]",
        ] {
            let cfg: AlertingConfig = serde_yaml::from_str(yml).unwrap();
            assert!(
                SenderSettings::new(Some(&cfg), &BTreeMap::new()).is_err(),
                "{yml}"
            );
        }
        assert!(
            serde_yaml::from_str::<AlertingConfig>("alertmanagers: [{timeout: soon}]").is_err()
        );
    }
}
