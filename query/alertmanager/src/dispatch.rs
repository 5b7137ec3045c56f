//! The dispatcher: routes each alert through the tree into aggregation groups (one per route
//! and group-label values) and runs each group's timers: the first notification after
//! `group_wait`, then a flush every `group_interval` (repeats after `repeat_interval` are the
//! notification log's decision). Owns groups and timers; what a flush sends is `notify`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use storage::Labels;
use tokio::sync::Notify;

use super::config::{GroupBy, Route};
use super::{AmAlert, Core};

/// Everything a flush needs to know about its group.
pub(crate) struct Group {
    /// Alertmanager's group key: `<route key>:<group labels>`.
    pub key: String,
    pub receiver: String,
    pub group_labels: Labels,
    pub repeat_interval: Duration,
    group_wait: Duration,
    group_interval: Duration,
    group_by: GroupBy,
    alerts: Mutex<HashMap<u64, AmAlert>>,
    flushed: AtomicBool,
    /// A reload replaced the group's route: its timer task ends at its next wake-up.
    retired: AtomicBool,
    wake: Notify,
}

/// A group's identity: the route's position in the tree and the group-label values.
type GroupId = (Vec<usize>, Labels);

#[derive(Default)]
pub(crate) struct Groups(Mutex<HashMap<GroupId, Arc<Group>>>);

/// Puts an alert into the group of every route it matches, creating groups (and their
/// timer tasks) as needed.
pub(crate) fn insert(core: &Arc<Core>, fp: u64, alert: AmAlert, now: i64) {
    let mut groups = core.groups.0.lock();
    insert_locked(core, &mut groups, fp, &alert, now);
}

fn insert_locked(
    core: &Arc<Core>,
    groups: &mut HashMap<GroupId, Arc<Group>>,
    fp: u64,
    alert: &AmAlert,
    now: i64,
) {
    let config = core.config();
    for route in config.route.matching(&alert.labels) {
        let group_labels = route.group_labels(&alert.labels);
        let id = (route.id.clone(), group_labels.clone());
        let g = groups.entry(id.clone()).or_insert_with(|| {
            let g = Arc::new(Group {
                key: format!("{}:{}", route.key, label_set_string(&group_labels)),
                receiver: route.receiver.clone(),
                group_labels,
                repeat_interval: route.repeat_interval,
                group_wait: route.group_wait,
                group_interval: route.group_interval,
                group_by: route.group_by.clone(),
                alerts: Mutex::new(HashMap::new()),
                flushed: AtomicBool::new(false),
                retired: AtomicBool::new(false),
                wake: Notify::new(),
            });
            tokio::spawn(run(Arc::downgrade(core), g.clone(), id));
            g
        });
        // An alert that started longer than group_wait ago need not wait for the first flush.
        if !g.flushed.load(Ordering::Relaxed)
            && alert.starts_at + g.group_wait.as_millis() as i64 <= now
        {
            g.wake.notify_one();
        }
        g.alerts.lock().insert(fp, alert.clone());
    }
}

/// After a config reload: groups whose route is unchanged keep their timers (and so their
/// place in the group_interval rhythm); the others stop. Every stored alert is then routed
/// again through the new tree, so kept groups hold exactly what now routes to them and new
/// groups start as Alertmanager's restarted dispatcher starts them. The notification log is
/// untouched, so nothing already sent is sent again.
pub(crate) fn regroup(core: &Arc<Core>, now: i64) {
    let alerts: Vec<(u64, AmAlert)> = core
        .alerts
        .lock()
        .iter()
        .map(|(fp, a)| (*fp, a.clone()))
        .collect();
    let config = core.config();
    let mut groups = core.groups.0.lock();
    groups.retain(|(id, _), g| {
        let keep = config.route.at(id).is_some_and(|r| g.same_route(r));
        if keep {
            g.alerts.lock().clear();
        } else {
            g.retired.store(true, Ordering::Relaxed);
            g.wake.notify_one();
        }
        keep
    });
    for (fp, a) in &alerts {
        insert_locked(core, &mut groups, *fp, a, now);
    }
}

impl Group {
    fn same_route(&self, r: &Route) -> bool {
        self.key == format!("{}:{}", r.key, label_set_string(&self.group_labels))
            && self.receiver == r.receiver
            && self.group_by == r.group_by
            && self.group_wait == r.group_wait
            && self.group_interval == r.group_interval
            && self.repeat_interval == r.repeat_interval
    }

    pub(crate) fn group_interval(&self) -> Duration {
        self.group_interval
    }
}

impl Groups {
    /// Each group's receiver, group labels and alerts, for the API.
    pub(crate) fn snapshot(&self) -> Vec<(String, Labels, Vec<AmAlert>)> {
        self.0
            .lock()
            .values()
            .map(|g| {
                let alerts = g.alerts.lock().values().cloned().collect();
                (g.receiver.clone(), g.group_labels.clone(), alerts)
            })
            .collect()
    }
}

/// Go's printing of a model.LabelSet: `{a="b", c="d"}`.
fn label_set_string(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

async fn run(core: std::sync::Weak<Core>, g: Arc<Group>, id: GroupId) {
    let mut next = tokio::time::Instant::now() + g.group_wait;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = g.wake.notified() => {}
        }
        let Some(core) = core.upgrade() else { return };
        if g.retired.load(Ordering::Relaxed) {
            return;
        }
        next = tokio::time::Instant::now() + g.group_interval;
        g.flushed.store(true, Ordering::Relaxed);
        let snapshot: Vec<(u64, AmAlert)> = g
            .alerts
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        if snapshot.is_empty() {
            let mut groups = core.groups.0.lock();
            if g.alerts.lock().is_empty() {
                groups.remove(&id);
                return;
            }
            continue;
        }
        let now = core.now();
        if super::notify::flush(
            &core,
            &g,
            snapshot.iter().map(|(_, a)| a.clone()).collect(),
            now,
        )
        .await
        {
            // Resolved alerts that were delivered and have not changed since leave the group.
            let mut alerts = g.alerts.lock();
            for (fp, a) in &snapshot {
                if a.resolved_at(now) && alerts.get(fp) == Some(a) {
                    alerts.remove(fp);
                }
            }
        }
        // After the flush's notifications were answered (or gave up): a count that proves
        // to an observer that the group had its chance to notify.
        core.notifier.flushed(&g.receiver);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::routing::post;
    use prometheus_client::registry::Registry;

    use super::super::{config::AmConfig, Builtin, Clock};
    use super::*;

    type Seen = Arc<Mutex<Vec<(tokio::time::Instant, serde_json::Value)>>>;

    /// A webhook receiver on a real socket that records each notification with the (paused)
    /// time it arrived.
    async fn sink() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: axum::Json<serde_json::Value>| {
                let s = s.clone();
                async move {
                    s.lock().push((tokio::time::Instant::now(), body.0));
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (url, seen)
    }

    fn alert(name: &str, inst: &str, starts: i64, ends: i64) -> AmAlert {
        AmAlert {
            labels: Labels::from_pairs([("alertname", name), ("instance", inst)]),
            annotations: BTreeMap::new(),
            starts_at: starts,
            ends_at: ends,
            generator_url: String::new(),
            updated_at: 0,
            timeout: false,
        }
    }

    /// Sleeps in paused time in small steps so the socket I/O of notifications completes.
    async fn advance(d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A built-in Alertmanager on tokio's paused clock.
    fn start(yml: &str, dir: &std::path::Path) -> Builtin {
        let clock = Clock::Tokio {
            base_ms: 1_700_000_000_000,
            base: tokio::time::Instant::now(),
        };
        Builtin::start_with(
            AmConfig::parse(yml).unwrap(),
            dir.to_owned(),
            "http://am".into(),
            clock,
            &mut Registry::default(),
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn silenced_and_inhibited_alerts_are_left_out() {
        let (url, seen) = sink().await;
        let yml = format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 10s\n  group_interval: 1m\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{url}'}}]\ninhibit_rules:\n  - source_matchers: [severity=critical]\n    target_matchers: [severity=warning]\n    equal: [alertname]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let am = start(&yml, dir.path());
        let now = am.core.now();
        let far = now + 3_600_000;
        let with = |name: &str, inst: &str, sev: &str| {
            let mut a = alert(name, inst, now, far);
            a.labels =
                Labels::from_pairs([("alertname", name), ("instance", inst), ("severity", sev)]);
            a
        };
        let silence = super::super::silence::Silence {
            id: String::new(),
            matchers: vec![super::super::silence::SilenceMatcher {
                name: "alertname".into(),
                value: "Cpu".into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at: now,
            ends_at: far,
            updated_at: 0,
            created_by: "t".into(),
            comment: "t".into(),
        };
        let sid = am.core.silences.set(silence, now).unwrap();
        am.core
            .put_alerts(
                vec![
                    with("Disk", "a", "critical"),
                    with("Disk", "b", "warning"),
                    with("Cpu", "c", "info"),
                ],
                now,
            )
            .unwrap();
        advance(Duration::from_secs(15)).await;
        {
            let s = seen.lock();
            assert_eq!(s.len(), 1, "the silenced Cpu group sends nothing: {s:?}");
            let alerts = s[0].1["alerts"].as_array().unwrap();
            assert_eq!(alerts.len(), 1, "the warning is inhibited: {alerts:?}");
            assert_eq!(alerts[0]["labels"]["severity"], "critical");
        }
        // Once the silence is expired, the Cpu group's next flush notifies.
        am.core.silences.expire(&sid, am.core.now()).unwrap();
        advance(Duration::from_secs(60)).await;
        let s = seen.lock();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[1].1["groupLabels"]["alertname"], "Cpu");
    }

    #[tokio::test(start_paused = true)]
    async fn group_wait_interval_and_repeat_timing() {
        let (url, seen) = sink().await;
        let yml = format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{url}'}}]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let am = start(&yml, dir.path());
        let now = am.core.now();
        let t0 = tokio::time::Instant::now();
        let far = now + 10 * 3600 * 1000;
        am.core
            .put_alerts(vec![alert("Down", "a", now, far)], now)
            .unwrap();
        advance(Duration::from_secs(10)).await;
        // A second alert of the same group inside group_wait joins the first notification;
        // another alertname is another group.
        let now = am.core.now();
        am.core
            .put_alerts(
                vec![alert("Down", "b", now, far), alert("Slow", "a", now, far)],
                now,
            )
            .unwrap();
        advance(Duration::from_secs(35)).await;
        {
            let s = seen.lock();
            assert_eq!(s.len(), 2, "{s:?}");
            let down = s
                .iter()
                .find(|(_, b)| b["groupLabels"]["alertname"] == "Down")
                .unwrap();
            assert_eq!(
                down.0.duration_since(t0).as_secs(),
                30,
                "group_wait from first alert"
            );
            assert_eq!(down.1["alerts"].as_array().unwrap().len(), 2);
            assert_eq!(down.1["groupKey"], "{}:{alertname=\"Down\"}");
            assert_eq!(down.1["status"], "firing");
        }
        // Nothing new: the group_interval flushes send nothing until repeat_interval.
        advance(Duration::from_secs(50 * 60)).await;
        assert_eq!(seen.lock().len(), 2);
        advance(Duration::from_secs(15 * 60)).await;
        assert_eq!(
            seen.lock().len(),
            4,
            "repeat after 1h, at a group_interval tick"
        );
        // A resolve goes out at the next group_interval flush.
        let now = am.core.now();
        am.core
            .put_alerts(vec![alert("Slow", "a", now - 1000, now)], now)
            .unwrap();
        advance(Duration::from_secs(5 * 60)).await;
        let s = seen.lock();
        assert_eq!(s.len(), 5);
        assert_eq!(s[4].1["status"], "resolved");
        assert_eq!(s[4].1["alerts"][0]["status"], "resolved");
    }

    #[tokio::test(start_paused = true)]
    async fn completed_flushes_are_counted_per_receiver_whether_or_not_they_notify() {
        let (url, seen) = sink().await;
        let yml = format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 10s\n  group_interval: 1m\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{url}'}}]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::Tokio {
            base_ms: 1_700_000_000_000,
            base: tokio::time::Instant::now(),
        };
        let mut registry = Registry::default();
        let am = Builtin::start_with(
            AmConfig::parse(&yml).unwrap(),
            dir.path().to_owned(),
            "http://am".into(),
            clock,
            &mut registry,
        )
        .unwrap();
        let flushes = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "alertmanager_dispatcher_aggregation_group_flushes_total{receiver_name=\"hook\"} ",
                    )
                })
                .map_or(0, |v| v.parse::<u64>().unwrap())
        };
        assert_eq!(flushes(), 0);
        let now = am.core.now();
        am.core
            .put_alerts(vec![alert("Down", "a", now, now + 36_000_000)], now)
            .unwrap();
        advance(Duration::from_secs(15)).await;
        assert_eq!((flushes(), seen.lock().len()), (1, 1), "group_wait flush");
        // Two group intervals: two more flushes, and nothing sent before repeat_interval.
        advance(Duration::from_secs(120)).await;
        assert_eq!((flushes(), seen.lock().len()), (3, 1));
    }
}
