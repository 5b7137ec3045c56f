//! Notification delivery for one aggregation group flush: drops muted alerts (silences,
//! inhibition), asks the notification log whether each integration needs telling, renders
//! the integration's payload (Alertmanager's webhook JSON, Slack attachments, PagerDuty
//! Events v2, email) and sends it, retrying with exponential back-off until the flush's
//! deadline. Owns the attempt and failure counters in `/metrics`; not the grouping or timers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{MultiPart, SinglePart};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use storage::Labels;
use tokio::time::Instant;

use super::config::{Integration, IntegrationKind};
use super::dispatch::Group;
use super::http::HttpClient;
use super::smtp::SmtpConfig;
use super::state::Entry;
use super::template::{AlertData, Data};
use super::{fingerprint, AmAlert, Core};

/// Alertmanager's floor on how long a flush may keep retrying.
const MIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntegrationLabel {
    integration: String,
}

/// The label Alertmanager's `receiver-name-in-metrics` feature adds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabel {
    receiver_name: String,
}

/// Alertmanager's notification counters, by integration, and the completed group flushes,
/// by receiver.
pub(crate) struct Notifier {
    client: HttpClient,
    notifications: Family<IntegrationLabel, Counter>,
    failed: Family<IntegrationLabel, Counter>,
    requests: Family<IntegrationLabel, Counter>,
    requests_failed: Family<IntegrationLabel, Counter>,
    flushes: Family<ReceiverLabel, Counter>,
}

impl Notifier {
    pub(crate) fn new(registry: &mut Registry, client: HttpClient) -> Notifier {
        let n = Notifier {
            client,
            notifications: Family::default(),
            failed: Family::default(),
            requests: Family::default(),
            requests_failed: Family::default(),
            flushes: Family::default(),
        };
        registry.register(
            "alertmanager_notifications",
            "The total number of attempted notifications.",
            n.notifications.clone(),
        );
        registry.register(
            "alertmanager_notifications_failed",
            "The total number of failed notifications.",
            n.failed.clone(),
        );
        registry.register(
            "alertmanager_notification_requests",
            "The total number of attempted notification requests.",
            n.requests.clone(),
        );
        registry.register(
            "alertmanager_notification_requests_failed",
            "The total number of failed notification requests.",
            n.requests_failed.clone(),
        );
        registry.register(
            "alertmanager_dispatcher_aggregation_group_flushes",
            "The total number of completed aggregation group flushes (each one a notification decision, whether or not anything was sent).",
            n.flushes.clone(),
        );
        // Every integration shows up from the start, so a rate over them is never absent.
        for name in ["webhook", "slack", "pagerduty", "email"] {
            let l = IntegrationLabel {
                integration: name.to_owned(),
            };
            let _ = n.notifications.get_or_create(&l);
            let _ = n.failed.get_or_create(&l);
            let _ = n.requests.get_or_create(&l);
            let _ = n.requests_failed.get_or_create(&l);
        }
        n
    }

    /// Counts a completed flush of one of `receiver`'s aggregation groups.
    pub(crate) fn flushed(&self, receiver: &str) {
        self.flushes
            .get_or_create(&ReceiverLabel {
                receiver_name: receiver.to_owned(),
            })
            .inc();
    }
}

/// Sends what a group flush calls for; true when every integration succeeded (or had
/// nothing to send), so resolved alerts may leave the group.
pub(crate) async fn flush(
    core: &Arc<Core>,
    g: &Arc<Group>,
    alerts: Vec<AmAlert>,
    now: i64,
) -> bool {
    let firing_now = core.firing_alerts(now);
    let mut alerts: Vec<AmAlert> = alerts
        .into_iter()
        .filter(|a| {
            let (s, i) = core.mutes(&a.labels, &firing_now, now);
            s.is_empty() && i.is_empty()
        })
        .collect();
    if alerts.is_empty() {
        return true;
    }
    sort_alerts(&mut alerts);
    let config = core.config();
    let Some(receiver) = config.receiver(&g.receiver) else {
        return true;
    };
    let deadline = Instant::now() + g.group_interval().max(MIN_TIMEOUT);
    let alerts = Arc::new(alerts);
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..receiver.integrations.len() {
        let (core, g, alerts) = (core.clone(), g.clone(), alerts.clone());
        tasks
            .spawn(async move { notify_integration(&core, &g, &alerts, idx, now, deadline).await });
    }
    let mut ok = true;
    while let Some(r) = tasks.join_next().await {
        ok &= r.unwrap_or(false);
    }
    ok
}

async fn notify_integration(
    core: &Core,
    g: &Group,
    alerts: &[AmAlert],
    idx: usize,
    now: i64,
    deadline: Instant,
) -> bool {
    let config = core.config();
    let Some(integ) = config
        .receiver(&g.receiver)
        .and_then(|r| r.integrations.get(idx))
    else {
        return true;
    };
    let key = format!("{}|{}/{}/{}", g.key, g.receiver, integ.kind.name(), idx);
    let mut firing = BTreeSet::new();
    let mut resolved = BTreeSet::new();
    for a in alerts {
        let fp = fingerprint(&a.labels);
        if a.resolved_at(now) {
            resolved.insert(fp);
        } else {
            firing.insert(fp);
        }
    }
    let entry = core.nflog.lock().get(&key).cloned();
    if !needs_update(
        entry.as_ref(),
        &firing,
        &resolved,
        integ.send_resolved,
        g.repeat_interval,
        now,
    ) {
        return true;
    }
    let to_send: Vec<&AmAlert> = alerts
        .iter()
        .filter(|a| integ.send_resolved || !a.resolved_at(now))
        .collect();
    if !to_send.is_empty() {
        let data = template_data(core, g, &to_send, now);
        let payload = payload(integ, &data, g, &to_send, now);
        if !send_with_retry(&core.notifier, integ, &payload, deadline).await {
            return false;
        }
    }
    core.nflog.lock().log(
        key,
        Entry {
            firing,
            resolved,
            at: now,
        },
    );
    core.persist();
    true
}

/// Alertmanager's dedup decision against the last notification this integration got.
fn needs_update(
    entry: Option<&Entry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat: Duration,
    now: i64,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    // All resolved: tell the receiver (even without send_resolved, so the log forgets the
    // firing set) unless it never heard of any of them.
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at < now - repeat.as_millis() as i64
}

/// Alertmanager's alert order in a notification: by `job`, then `instance`, then label set.
pub(crate) fn sort_alerts(alerts: &mut [AmAlert]) {
    alerts.sort_by(|a, b| {
        for k in ["job", "instance"] {
            match (a.labels.get(k), b.labels.get(k)) {
                (None, None) => continue,
                (None, Some(_)) => return std::cmp::Ordering::Greater,
                (Some(_), None) => return std::cmp::Ordering::Less,
                (Some(x), Some(y)) if x != y => return x.cmp(y),
                _ => {}
            }
        }
        a.labels.cmp(&b.labels)
    });
}

fn template_data(core: &Core, g: &Group, alerts: &[&AmAlert], now: i64) -> Data {
    let firing = alerts.iter().any(|a| !a.resolved_at(now));
    let mut common: Option<Labels> = None;
    let mut common_ann: Option<BTreeMap<String, String>> = None;
    for a in alerts {
        common = Some(match common {
            None => a.labels.clone(),
            Some(c) => Labels::new(
                c.into_vec()
                    .into_iter()
                    .filter(|l| a.labels.get(&l.name) == Some(l.value.as_str()))
                    .collect(),
            ),
        });
        common_ann = Some(match common_ann {
            None => a.annotations.clone(),
            Some(mut c) => {
                c.retain(|k, v| a.annotations.get(k) == Some(v));
                c
            }
        });
    }
    Data {
        receiver: g.receiver.clone(),
        status: if firing { "firing" } else { "resolved" },
        alerts: alerts
            .iter()
            .map(|a| AlertData {
                firing: !a.resolved_at(now),
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                generator_url: a.generator_url.clone(),
            })
            .collect(),
        group_labels: g.group_labels.clone(),
        common_labels: common.unwrap_or_default(),
        common_annotations: common_ann.unwrap_or_default(),
        external_url: core.external_url.clone(),
    }
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

/// What one integration is sent.
enum Payload {
    Http {
        url: String,
        body: Value,
    },
    Email {
        smtp: Box<SmtpConfig>,
        from: String,
        to: String,
        message: String,
    },
}

fn payload(integ: &Integration, d: &Data, g: &Group, alerts: &[&AmAlert], now: i64) -> Payload {
    match &integ.kind {
        IntegrationKind::Webhook { url, max_alerts } => {
            let n = if *max_alerts == 0 {
                alerts.len()
            } else {
                alerts.len().min(*max_alerts)
            };
            let list: Vec<Value> = alerts[..n]
                .iter()
                .map(|a| {
                    let resolved = a.resolved_at(now);
                    json!({
                        "status": if resolved { "resolved" } else { "firing" },
                        "labels": labels_json(&a.labels),
                        "annotations": a.annotations,
                        "startsAt": super::rfc3339_nano(a.starts_at),
                        "endsAt": if resolved { super::rfc3339_nano(a.ends_at) } else { super::ZERO_TIME.to_owned() },
                        "generatorURL": a.generator_url,
                        "fingerprint": format!("{:016x}", fingerprint(&a.labels)),
                    })
                })
                .collect();
            Payload::Http {
                url: url.clone(),
                body: json!({
                    "receiver": d.receiver,
                    "status": d.status,
                    "alerts": list,
                    "groupLabels": labels_json(&d.group_labels),
                    "commonLabels": labels_json(&d.common_labels),
                    "commonAnnotations": d.common_annotations,
                    "externalURL": d.external_url,
                    "version": "4",
                    "groupKey": g.key,
                    "truncatedAlerts": alerts.len() - n,
                }),
            }
        }
        IntegrationKind::Slack(s) => {
            let mut att = serde_json::Map::new();
            let mut put = |k: &str, v: String, always: bool| {
                if always || !v.is_empty() {
                    att.insert(k.to_owned(), Value::String(v));
                }
            };
            put("title", s.title.render(d), false);
            put("title_link", s.title_link.render(d), false);
            put("pretext", s.pretext.render(d), false);
            put("text", s.text.render(d), true);
            put("fallback", s.fallback.render(d), true);
            put("color", s.color.render(d), false);
            put("footer", s.footer.render(d), false);
            att.insert("mrkdwn_in".into(), json!(["fallback", "pretext", "text"]));
            let mut body = serde_json::Map::new();
            let mut put = |k: &str, v: String| {
                if !v.is_empty() {
                    body.insert(k.to_owned(), Value::String(v));
                }
            };
            put(
                "channel",
                s.channel.as_ref().map(|c| c.render(d)).unwrap_or_default(),
            );
            put("username", s.username.render(d));
            put("icon_emoji", s.icon_emoji.render(d));
            put("icon_url", s.icon_url.render(d));
            if s.link_names {
                body.insert("link_names".into(), Value::Bool(true));
            }
            body.insert("attachments".into(), Value::Array(vec![Value::Object(att)]));
            Payload::Http {
                url: s.api_url.clone(),
                body: Value::Object(body),
            }
        }
        IntegrationKind::Pagerduty(p) => {
            let mut summary = p.description.render(d);
            if summary.len() > 1024 {
                let mut cut = 1023;
                while !summary.is_char_boundary(cut) {
                    cut -= 1;
                }
                summary.truncate(cut);
                summary.push('…');
            }
            let details: serde_json::Map<String, Value> = p
                .details
                .iter()
                .map(|(k, t)| (k.clone(), Value::String(t.render(d))))
                .collect();
            let mut payload = json!({
                "summary": summary,
                "source": p.source.render(d),
                "severity": p.severity.render(d),
                "custom_details": details,
            });
            for (k, t) in [
                ("class", &p.class),
                ("component", &p.component),
                ("group", &p.group),
            ] {
                if let Some(t) = t {
                    payload[k] = Value::String(t.render(d));
                }
            }
            let dedup: String = Sha256::digest(g.key.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Payload::Http {
                url: p.url.clone(),
                body: json!({
                    "routing_key": p.routing_key,
                    "dedup_key": dedup,
                    "event_action": if d.status == "firing" { "trigger" } else { "resolve" },
                    "payload": payload,
                    "client": p.client.render(d),
                    "client_url": p.client_url.render(d),
                }),
            }
        }
        IntegrationKind::Email(e) => {
            let mut message = String::new();
            for (k, t) in &e.headers {
                message.push_str(&format!(
                    "{k}: {}\r\n",
                    t.render(d).replace(['\r', '\n'], " ")
                ));
            }
            message.push_str(&format!(
                "Date: {}\r\nMIME-Version: 1.0\r\n",
                chrono::DateTime::from_timestamp_millis(now)
                    .unwrap_or_default()
                    .format("%a, %d %b %Y %H:%M:%S +0000")
            ));
            // multipart/alternative as Alertmanager sends it: the plain part first, HTML last
            // (the preferred alternative, RFC 2046 5.1.4); lettre picks each part's transfer
            // encoding and writes the Content-Type header with the boundary.
            let mut body = MultiPart::alternative().build();
            if let Some(t) = &e.text {
                body = body.singlepart(SinglePart::plain(t.render(d)));
            }
            if let Some(t) = &e.html {
                body = body.singlepart(SinglePart::html(t.render(d)));
            }
            message.push_str(&String::from_utf8_lossy(&body.formatted()));
            Payload::Email {
                smtp: Box::new(e.smtp.clone()),
                from: e.from.clone(),
                to: e.to.clone(),
                message,
            }
        }
    }
}

/// A failed attempt, and whether trying again can help.
pub(crate) struct SendError {
    pub retry: bool,
    pub msg: String,
}

/// Exponential back-off between attempts: 500ms, growing ×1.5, at most 60s (Alertmanager's
/// schedule, without its random jitter).
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_millis(500))
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0.mul_f64(1.5)).min(Duration::from_secs(60));
        d
    }
}

async fn send_with_retry(
    n: &Notifier,
    integ: &Integration,
    p: &Payload,
    deadline: Instant,
) -> bool {
    let label = IntegrationLabel {
        integration: integ.kind.name().to_owned(),
    };
    n.notifications.get_or_create(&label).inc();
    let mut backoff = Backoff::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        n.requests.get_or_create(&label).inc();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let res = match p {
            Payload::Http { url, body } => post_json(&n.client, url, body, remaining).await,
            Payload::Email {
                smtp,
                from,
                to,
                message,
            } => super::smtp::send(smtp, from, to, message.clone(), remaining).await,
        };
        let Err(e) = res else { return true };
        n.requests_failed.get_or_create(&label).inc();
        let delay = backoff.next_delay();
        if !e.retry || Instant::now() + delay >= deadline {
            n.failed.get_or_create(&label).inc();
            tracing::warn!(
                integration = label.integration,
                attempts,
                "notify failed: {}",
                e.msg
            );
            return false;
        }
        tracing::debug!(
            integration = label.integration,
            attempts,
            "notify attempt failed, retrying: {}",
            e.msg
        );
        tokio::time::sleep(delay).await;
    }
}

async fn post_json(
    client: &HttpClient,
    url: &str,
    body: &Value,
    timeout: Duration,
) -> Result<(), SendError> {
    let reply = client
        .post_json(url, body, timeout)
        .await
        .map_err(|e| SendError {
            retry: true,
            msg: format!("POST {url}: {e}"),
        })?;
    if (200..300).contains(&reply.status) {
        return Ok(());
    }
    Err(SendError {
        // Rate limiting and server errors pass; other client errors will not.
        retry: reply.status >= 500 || reply.status == 429,
        msg: format!(
            "POST {url}: unexpected status code {}: {}",
            reply.status,
            reply.body.chars().take(200).collect::<String>()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new();
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [500, 750, 1125, 1687]);
        for _ in 0..20 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(60));
    }

    #[test]
    fn dedup_follows_the_notification_log() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        let hour = Duration::from_secs(3600);
        let e = Entry {
            firing: set(&[1, 2]),
            resolved: set(&[]),
            at: 1000,
        };
        assert!(needs_update(None, &set(&[1]), &set(&[]), true, hour, 2000));
        assert!(
            !needs_update(None, &set(&[]), &set(&[1]), true, hour, 2000),
            "never told of it"
        );
        assert!(!needs_update(
            Some(&e),
            &set(&[1, 2]),
            &set(&[]),
            true,
            hour,
            2000
        ));
        assert!(!needs_update(
            Some(&e),
            &set(&[1]),
            &set(&[]),
            false,
            hour,
            2000
        ));
        assert!(needs_update(
            Some(&e),
            &set(&[1]),
            &set(&[2]),
            true,
            hour,
            2000
        ));
        assert!(needs_update(
            Some(&e),
            &set(&[1, 3]),
            &set(&[]),
            true,
            hour,
            2000
        ));
        assert!(needs_update(
            Some(&e),
            &set(&[]),
            &set(&[1, 2]),
            false,
            hour,
            2000
        ));
        assert!(needs_update(
            Some(&e),
            &set(&[1, 2]),
            &set(&[]),
            true,
            hour,
            1000 + 3_600_001
        ));
    }

    #[test]
    fn alerts_sort_by_job_instance_then_labels() {
        let a = |pairs: &[(&str, &str)]| AmAlert {
            labels: Labels::from_pairs(pairs.iter().copied()),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 0,
            generator_url: String::new(),
            updated_at: 0,
            timeout: false,
        };
        let mut v = vec![
            a(&[("alertname", "Z")]),
            a(&[("instance", "b"), ("job", "x")]),
            a(&[("instance", "a"), ("job", "x")]),
            a(&[("job", "a")]),
        ];
        sort_alerts(&mut v);
        let jobs: Vec<_> = v
            .iter()
            .map(|x| (x.labels.get("job"), x.labels.get("instance")))
            .collect();
        assert_eq!(
            jobs,
            [
                (Some("a"), None),
                (Some("x"), Some("a")),
                (Some("x"), Some("b")),
                (None, None)
            ]
        );
    }
}
