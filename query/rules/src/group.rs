//! One rule group's evaluation as Prometheus's rule manager does it: rules in order at one
//! timestamp, recording rules written through the append path, alerting rules through the
//! inactive → pending → firing → resolved state machine with `for` and `keep_firing_for`,
//! `ALERTS`/`ALERTS_FOR_STATE` series, staleness markers for series that vanish, `for` state
//! restored after a restart, and notifications handed to the `AlertSink`. Owns no timers:
//! the caller picks the timestamps (the server's clock or a unit test's).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use storage::{
    AppendMode, Appendable, Label, Labels, MatchOp, Matcher, Querier, Sample, SelectHints,
    SeriesBatch, StorageError, METRIC_NAME,
};

use super::file::{GroupSpec, Lang, RuleSpec};
use super::template::{self, Data, QuerySample};
use alertmanager::{Alert, AlertSink};
use promql::{Engine, Value};

/// How long a resolved alert is still sent, so a lost notification is repaired.
const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;
/// Prometheus's `--rules.alert.resend-delay`.
const RESEND_DELAY_MS: i64 = 60_000;
/// Prometheus's `--rules.alert.for-outage-tolerance`: older `for` state is not restored.
const OUTAGE_TOLERANCE_MS: i64 = 3_600_000;
/// Prometheus's `--rules.alert.for-grace-period`: the least time an alert with a long `for`
/// waits after a restart before it fires.
const FOR_GRACE_PERIOD_MS: i64 = 10 * 60_000;
const STALE_NAN: u64 = storage::STALE_NAN_BITS;

/// Writes rule output as Prometheus's rule appender does: best effort, so one out-of-order
/// series (after a restart that rewinds nothing, or a clock step) does not drop the others.
pub(crate) fn write(store: &dyn Appendable, batch: Vec<SeriesBatch>) -> Result<(), StorageError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut app = store.appender(AppendMode::BestEffort);
    for b in batch {
        app.append(b);
    }
    let report = app.commit()?;
    if let Some(r) = report.rejected.first() {
        tracing::debug!(
            rejected = report.rejected.len(),
            "rule output rejected: {} at {}: {}",
            r.labels,
            r.t,
            r.reason
        );
    }
    Ok(())
}

/// What evaluation reads and writes through.
pub(crate) struct Backend {
    pub engine: Arc<Engine>,
    pub querier: Arc<dyn Querier>,
    pub appendable: Arc<dyn Appendable>,
    pub logs: Option<logql::LogEngine>,
    pub slots: Option<Arc<dyn crate::QuerySlots>>,
}

/// The settings every group of a manager shares.
pub(crate) struct Env<'a> {
    pub backend: &'a Backend,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub sink: Option<&'a dyn AlertSink>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ActiveAlert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub valid_until: i64,
    pub keep_firing_since: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

pub struct RuleState {
    pub spec: RuleSpec,
    pub health: Health,
    pub last_error: Option<String>,
    pub last_eval: Option<i64>,
    pub eval_seconds: f64,
    /// Alerting rules: alerts by their label set (pending, firing, and resolved ones kept
    /// for `RESOLVED_RETENTION_MS`).
    pub active: BTreeMap<Labels, ActiveAlert>,
    /// Whether `for` state was restored; until then no ALERTS series are written, so a
    /// restart does not overwrite the state it is about to read.
    pub restored: bool,
    prev_series: HashSet<Labels>,
}

impl RuleState {
    pub fn state(&self) -> AlertState {
        self.active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }
}

pub struct Group {
    pub spec: GroupSpec,
    pub interval_ms: i64,
    pub query_offset_ms: i64,
    pub rules: Vec<RuleState>,
    pub last_eval: Option<i64>,
    pub eval_seconds: f64,
    /// Series of rules a reload removed: they get staleness markers at the next evaluation.
    stale_series: Vec<Labels>,
}

impl Group {
    pub(crate) fn new(spec: GroupSpec, default_interval_ms: i64, default_offset_ms: i64) -> Group {
        let interval_ms = spec.interval_ms.unwrap_or(default_interval_ms);
        let query_offset_ms = spec.query_offset_ms.unwrap_or(default_offset_ms);
        let rules = spec
            .rules
            .iter()
            .map(|r| RuleState {
                spec: r.clone(),
                health: Health::Unknown,
                last_error: None,
                last_eval: None,
                eval_seconds: 0.0,
                active: BTreeMap::new(),
                restored: false,
                prev_series: HashSet::new(),
            })
            .collect();
        Group {
            spec,
            interval_ms,
            query_offset_ms,
            rules,
            last_eval: None,
            eval_seconds: 0.0,
            stale_series: Vec::new(),
        }
    }

    /// Identifies the group across reloads, as Prometheus's group key.
    pub(crate) fn key(&self) -> (String, String) {
        (self.spec.file.clone(), self.spec.name.clone())
    }

    /// Marks every rule restored: for groups that start without prior state to read (unit
    /// tests, groups added by a reload).
    pub(crate) fn skip_restore(&mut self) {
        for r in &mut self.rules {
            r.restored = true;
        }
    }

    /// Takes over the runtime state of the same rules (name, kind and labels) in the group
    /// this one replaces, as Prometheus's `CopyState` does on reload.
    pub(crate) fn copy_state_from(&mut self, old: &mut Group) {
        self.last_eval = old.last_eval;
        self.eval_seconds = old.eval_seconds;
        let mut claimed = vec![false; old.rules.len()];
        for r in &mut self.rules {
            let same = old.rules.iter_mut().enumerate().find(|(i, o)| {
                !claimed[*i]
                    && o.spec.name == r.spec.name
                    && o.spec.alert == r.spec.alert
                    && o.spec.labels == r.spec.labels
            });
            if let Some((i, o)) = same {
                claimed[i] = true;
                r.active = std::mem::take(&mut o.active);
                r.prev_series = std::mem::take(&mut o.prev_series);
                r.restored = o.restored;
                r.health = o.health;
                r.last_error = o.last_error.take();
                r.last_eval = o.last_eval;
                r.eval_seconds = o.eval_seconds;
            }
        }
        self.stale_series = std::mem::take(&mut old.stale_series);
        for (i, o) in old.rules.iter_mut().enumerate() {
            if !claimed[i] {
                self.stale_series.extend(o.prev_series.drain());
            }
        }
    }

    /// Evaluates every rule at `ts` (ms) in order.
    pub(crate) fn eval(&mut self, ts: i64, env: &Env) {
        let started = Instant::now();
        let qt = ts - self.query_offset_ms;
        let limit = self.spec.limit;
        let lang = self.spec.lang;
        let interval = self.interval_ms;
        if !self.stale_series.is_empty() {
            let batch = self.stale_series.drain(..).map(|l| stale(l, qt)).collect();
            if let Err(e) = write(&*env.backend.appendable, batch) {
                tracing::warn!(group = %self.spec.name, "writing staleness markers: {e}");
            }
        }
        for rule in &mut self.rules {
            let rule_started = Instant::now();
            let result = if rule.spec.alert {
                eval_alerting(rule, ts, qt, lang, limit, env)
            } else {
                eval_recording(&rule.spec, qt, lang, limit, env)
            };
            rule.last_eval = Some(ts);
            match result {
                Ok(batch) => {
                    rule.health = Health::Ok;
                    rule.last_error = None;
                    let current: HashSet<Labels> = batch.iter().map(|b| b.labels.clone()).collect();
                    let mut batch = batch;
                    for gone in rule.prev_series.difference(&current) {
                        batch.push(stale(gone.clone(), qt));
                    }
                    rule.prev_series = current;
                    if let Err(e) = write(&*env.backend.appendable, batch) {
                        tracing::warn!(group = %self.spec.name, rule = %rule.spec.name, "writing rule output: {e}");
                    }
                }
                Err(e) => {
                    // Once per new error, not every interval while it persists.
                    if rule.last_error.as_ref() != Some(&e) {
                        tracing::warn!(group = %self.spec.name, rule = %rule.spec.name, "rule evaluation failed: {e}");
                    }
                    rule.health = Health::Err;
                    rule.last_error = Some(e);
                }
            }
            if rule.spec.alert {
                if let Some(sink) = env.sink {
                    send_alerts(rule, ts, interval, env, sink);
                }
            }
            rule.eval_seconds = rule_started.elapsed().as_secs_f64();
        }
        self.last_eval = Some(ts);
        self.eval_seconds = started.elapsed().as_secs_f64();
    }

    /// Writes staleness markers for everything the group wrote last, when it is removed.
    pub(crate) fn mark_stale(&mut self, ts: i64, env: &Env) {
        let qt = ts - self.query_offset_ms;
        let batch: Vec<SeriesBatch> = self
            .rules
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.prev_series))
            .map(|l| stale(l, qt))
            .collect();
        if let Err(e) = write(&*env.backend.appendable, batch) {
            tracing::warn!(group = %self.spec.name, "writing staleness markers: {e}");
        }
    }

    /// Restores the `activeAt` of pending alerts from `ALERTS_FOR_STATE` after a restart,
    /// as Prometheus does: only alerts whose `for` is at least the grace period, only state
    /// newer than the outage tolerance, and the time the server was down is not counted.
    pub(crate) fn restore_for_state(&mut self, ts: i64, env: &Env) {
        for rule in &mut self.rules {
            if !rule.spec.alert || rule.restored {
                continue;
            }
            let hold = rule.spec.for_ms;
            if hold < FOR_GRACE_PERIOD_MS {
                rule.restored = true;
                continue;
            }
            for a in rule.active.values_mut() {
                let Some((t, v)) = last_for_state(&a.labels, ts, env) else {
                    continue;
                };
                let down_at = t.div_euclid(1000) * 1000;
                // The value is data anyone could have written: no overflow on nonsense.
                let mut active_at = (v as i64).saturating_mul(1000);
                let remaining = hold.saturating_sub(down_at.saturating_sub(active_at));
                if remaining <= 0 {
                    // It was firing when the server stopped; the next evaluation fires it again.
                } else if remaining < FOR_GRACE_PERIOD_MS {
                    active_at = ts + FOR_GRACE_PERIOD_MS - hold;
                } else {
                    active_at = active_at.saturating_add(ts - down_at);
                }
                a.active_at = active_at;
            }
            rule.restored = true;
        }
    }
}

fn stale(labels: Labels, t: i64) -> SeriesBatch {
    SeriesBatch {
        labels,
        samples: vec![Sample {
            t,
            v: f64::from_bits(STALE_NAN),
        }],
        histograms: Vec::new(),
    }
}

/// The last `ALERTS_FOR_STATE` sample of an alert within the outage tolerance, unless stale.
fn last_for_state(alert: &Labels, ts: i64, env: &Env) -> Option<(i64, f64)> {
    let mut pairs: Vec<Label> = alert.iter().cloned().collect();
    pairs.push(Label::new(METRIC_NAME, "ALERTS_FOR_STATE"));
    let want = Labels::new(pairs);
    let matchers: Vec<Matcher> = want
        .iter()
        .filter_map(|l| Matcher::new(MatchOp::Equal, &l.name, &l.value).ok())
        .collect();
    let found = env
        .backend
        .querier
        .select_decoded(
            &matchers,
            &SelectHints::range(ts - OUTAGE_TOLERANCE_MS, ts, 1_000_000),
        )
        .map_err(|e| tracing::warn!("reading ALERTS_FOR_STATE: {e}"))
        .ok()?;
    let series = found.into_iter().find(|s| s.labels == want)?;
    let last = series.samples.last()?;
    if storage::is_stale_nan(last.v) {
        return None;
    }
    Some((last.t, last.v))
}

/// One sample of a rule's query.
struct Point {
    labels: Labels,
    v: f64,
    h: Option<promql::FloatHistogram>,
}

fn query(env: &Env, lang: Lang, expr: &str, t: i64) -> Result<Vec<Point>, String> {
    // Held while this one query evaluates, not across the rule's templates' own queries.
    let _slot = env
        .backend
        .slots
        .as_ref()
        .map(|s| s.acquire())
        .transpose()?;
    match lang {
        Lang::PromQL => {
            let res = env
                .backend
                .engine
                .instant_query(expr, t)
                .map_err(|e| e.to_string())?;
            match res.value {
                Value::Vector(v) => Ok(v
                    .into_iter()
                    .map(|s| Point {
                        labels: s.labels,
                        v: s.v,
                        h: s.h,
                    })
                    .collect()),
                Value::Scalar { v, .. } => Ok(vec![Point {
                    labels: Labels::default(),
                    v,
                    h: None,
                }]),
                other => Err(format!(
                    "rule result is not a vector or scalar: {}",
                    other.type_name()
                )),
            }
        }
        Lang::LogQL => {
            let logs = env
                .backend
                .logs
                .as_ref()
                .ok_or("LogQL rules need the log store")?;
            let logql::ast::Expr::Metric(m) = logql::parse(expr).map_err(|e| e.to_string())? else {
                return Err("a LogQL rule needs a metric query".to_owned());
            };
            let t_ns = t.saturating_mul(1_000_000);
            let series = logs
                .eval_metric(
                    &m,
                    logql::Steps {
                        start_ns: t_ns,
                        end_ns: t_ns,
                        step_ns: 1,
                    },
                )
                .map_err(|e| e.to_string())?;
            Ok(series
                .into_iter()
                .filter_map(|s| {
                    let (_, v) = s.points.into_iter().find(|(pt, _)| *pt == t_ns)?;
                    Some(Point {
                        labels: Labels::from_pairs(s.labels),
                        v,
                        h: None,
                    })
                })
                .collect())
        }
    }
}

fn eval_recording(
    spec: &RuleSpec,
    qt: i64,
    lang: Lang,
    limit: usize,
    env: &Env,
) -> Result<Vec<SeriesBatch>, String> {
    let points = query(env, lang, &spec.expr, qt)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        let mut pairs: Vec<Label> = p.labels.into_vec();
        pairs.retain(|l| l.name != METRIC_NAME);
        pairs.extend(spec.labels.iter().map(|(k, v)| Label::new(k, v)));
        pairs.push(Label::new(METRIC_NAME, &spec.name));
        let labels = Labels::new(pairs);
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels"
                    .to_owned(),
            );
        }
        out.push(match p.h {
            Some(h) => SeriesBatch {
                labels,
                samples: Vec::new(),
                histograms: vec![storage::HistogramSample {
                    t: qt,
                    h: storage::Histogram::from(&h),
                }],
            },
            None => SeriesBatch {
                labels,
                samples: vec![Sample { t: qt, v: p.v }],
                histograms: Vec::new(),
            },
        });
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

fn to_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn eval_alerting(
    rule: &mut RuleState,
    ts: i64,
    qt: i64,
    lang: Lang,
    limit: usize,
    env: &Env,
) -> Result<Vec<SeriesBatch>, String> {
    let points = query(env, lang, &rule.spec.expr, qt)?;
    let spec = &rule.spec;
    let tname = format!("__alert_{}", spec.name);
    let query_fn = |q: &str| -> Result<Vec<QuerySample>, String> {
        Ok(query(env, Lang::PromQL, q, qt)?
            .into_iter()
            .map(|p| QuerySample {
                labels: to_map(&p.labels),
                value: p.v,
            })
            .collect())
    };
    let mut fresh: BTreeMap<Labels, ActiveAlert> = BTreeMap::new();
    for p in points {
        let sample_labels = to_map(&p.labels);
        let data = Data {
            labels: &sample_labels,
            external_labels: env.external_labels,
            external_url: env.external_url,
            value: p.v,
        };
        let mut pairs: Vec<Label> = p.labels.into_vec();
        pairs.retain(|l| l.name != METRIC_NAME);
        for (k, v) in &spec.labels {
            pairs.push(Label::new(k, template::expand(&tname, v, &data, &query_fn)));
        }
        pairs.push(Label::new("alertname", &spec.name));
        let labels = Labels::new(pairs);
        let annotations = spec
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), template::expand(&tname, v, &data, &query_fn)))
            .collect();
        if fresh.contains_key(&labels) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels"
                    .to_owned(),
            );
        }
        fresh.insert(
            labels.clone(),
            ActiveAlert {
                labels,
                annotations,
                state: AlertState::Pending,
                value: p.v,
                active_at: ts,
                fired_at: None,
                resolved_at: None,
                last_sent_at: None,
                valid_until: 0,
                keep_firing_since: None,
            },
        );
    }
    let in_result: HashSet<Labels> = fresh.keys().cloned().collect();
    for (labels, a) in fresh {
        match rule.active.get_mut(&labels) {
            Some(old) if old.state != AlertState::Inactive => {
                old.value = a.value;
                old.annotations = a.annotations;
            }
            _ => {
                rule.active.insert(labels, a);
            }
        }
    }
    let mut out = Vec::new();
    let mut num_active = 0;
    let hold = rule.spec.for_ms;
    let keep_for = rule.spec.keep_firing_for_ms;
    let restored = rule.restored;
    rule.active.retain(|labels, a| {
        if !in_result.contains(labels) {
            let mut keep_firing = false;
            if a.state == AlertState::Firing && keep_for > 0 {
                let since = *a.keep_firing_since.get_or_insert(ts);
                keep_firing = ts - since < keep_for;
            }
            let drop = a.state == AlertState::Pending
                || a.resolved_at
                    .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS);
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(ts);
            }
            if !keep_firing {
                return !drop;
            }
        } else {
            a.keep_firing_since = None;
        }
        num_active += 1;
        if a.state == AlertState::Pending && ts - a.active_at >= hold {
            a.state = AlertState::Firing;
            a.fired_at = Some(ts);
        }
        if restored {
            out.push(alert_series(labels, "ALERTS", Some(a.state), qt, 1.0));
            out.push(alert_series(
                labels,
                "ALERTS_FOR_STATE",
                None,
                qt,
                a.active_at.div_euclid(1000) as f64,
            ));
        }
        true
    });
    if limit > 0 && num_active > limit {
        rule.active.clear();
        return Err(format!(
            "exceeded limit of {limit} with {num_active} alerts"
        ));
    }
    Ok(out)
}

fn alert_series(
    alert: &Labels,
    name: &str,
    state: Option<AlertState>,
    t: i64,
    v: f64,
) -> SeriesBatch {
    let mut pairs: Vec<Label> = alert.iter().cloned().collect();
    pairs.push(Label::new(METRIC_NAME, name));
    if let Some(s) = state {
        pairs.push(Label::new("alertstate", s.as_str()));
    }
    SeriesBatch {
        labels: Labels::new(pairs),
        samples: vec![Sample { t, v }],
        histograms: Vec::new(),
    }
}

/// Hands the alerts that are due to the sink: firing ones every resend delay, resolved ones
/// at once and then every resend delay while retained; `endsAt` as Prometheus sets it.
fn send_alerts(rule: &mut RuleState, ts: i64, interval: i64, env: &Env, sink: &dyn AlertSink) {
    let delta = RESEND_DELAY_MS.max(interval);
    let generator_url = format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        env.external_url,
        form_urlencoded::byte_serialize(rule.spec.expr.as_bytes()).collect::<String>()
    );
    let mut out = Vec::new();
    for a in rule.active.values_mut() {
        let due = match a.state {
            AlertState::Pending => false,
            _ => match a.last_sent_at {
                None => true,
                Some(last) => {
                    a.resolved_at.is_some_and(|r| r > last) || last + RESEND_DELAY_MS < ts
                }
            },
        };
        if !due {
            continue;
        }
        a.last_sent_at = Some(ts);
        a.valid_until = ts + 4 * delta;
        // External labels are the notifier's to add (Prometheus's notifier does), not ours.
        out.push(Alert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.fired_at.unwrap_or(a.active_at),
            ends_at: Some(a.resolved_at.unwrap_or(a.valid_until)),
            generator_url: generator_url.clone(),
        });
    }
    if !out.is_empty() {
        sink.send(out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use promql::promqltest::mem::MemStore;
    use promql::promqltest::{load, load_batch, parse_series};
    use promql::EngineOptions;

    /// Records what each evaluation handed over, with the evaluation time.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Alert>>);

    impl AlertSink for Recorder {
        fn send(&self, alerts: Vec<Alert>) {
            self.0.lock().unwrap().extend(alerts);
        }
    }

    struct Fixture {
        store: Arc<MemStore>,
        backend: Backend,
        sink: Recorder,
        ext: BTreeMap<String, String>,
    }

    impl Fixture {
        fn new(series: &[&str], interval_ms: i64) -> Fixture {
            let store = Arc::new(MemStore::default());
            let descs = parse_series(series.iter().copied()).unwrap();
            load(&*store, load_batch(interval_ms, &descs)).unwrap();
            let backend = Backend {
                engine: Arc::new(Engine::new(store.clone(), EngineOptions::default())),
                querier: store.clone(),
                appendable: store.clone(),
                logs: None,
                slots: None,
            };
            Fixture {
                store,
                backend,
                sink: Recorder::default(),
                ext: BTreeMap::new(),
            }
        }

        fn env(&self) -> Env<'_> {
            Env {
                backend: &self.backend,
                external_labels: &self.ext,
                external_url: "http://nm:9090",
                sink: Some(&self.sink),
            }
        }

        fn group(&self, yaml: &str) -> Group {
            let spec = super::super::file::parse_file("t.yml", yaml)
                .unwrap()
                .remove(0);
            Group::new(spec, 30_000, 0)
        }

        /// The samples of the series with exactly `labels`.
        fn samples(&self, labels: &[(&str, &str)]) -> Vec<Sample> {
            let want = Labels::from_pairs(labels.iter().copied());
            let ms: Vec<Matcher> = want
                .iter()
                .map(|l| Matcher::new(MatchOp::Equal, &l.name, &l.value).unwrap())
                .collect();
            self.store
                .select_decoded(
                    &ms,
                    &SelectHints::range(i64::MIN / 2, i64::MAX / 2, usize::MAX),
                )
                .unwrap()
                .into_iter()
                .find(|s| s.labels == want)
                .map(|s| s.samples)
                .unwrap_or_default()
        }
    }

    const FIRE_AT_ONCE: &str =
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n    annotations: {v: '{{ $value }}'}\n";

    #[test]
    fn notifications_resend_after_the_delay_and_resolved_ones_for_fifteen_minutes() {
        // x is 1 from 0s to 5m, then stale.
        let f = Fixture::new(&["x 1x10 stale"], 30_000);
        let mut g = f.group(FIRE_AT_ONCE);
        g.skip_restore();
        let mut sent_at = Vec::new();
        for i in 0..=50 {
            let ts = i * 30_000;
            let before = f.sink.0.lock().unwrap().len();
            g.eval(ts, &f.env());
            if f.sink.0.lock().unwrap().len() > before {
                sent_at.push(ts / 1000);
            }
        }
        // Firing from 0 (for: 0), re-sent once the 1m delay has passed (strictly), resolved at
        // 330s and then re-sent the same way until 15m after resolution.
        assert_eq!(
            sent_at,
            vec![0, 90, 180, 270, 330, 420, 510, 600, 690, 780, 870, 960, 1050, 1140, 1230]
        );
        let sent = f.sink.0.lock().unwrap();
        assert_eq!(sent[0].starts_at, 0);
        assert_eq!(sent[0].ends_at, Some(4 * 60_000));
        assert_eq!(sent[0].annotations["v"], "1");
        assert_eq!(sent[0].labels, Labels::from_pairs([("alertname", "A")]));
        assert_eq!(
            sent[0].generator_url,
            "http://nm:9090/graph?g0.expr=x+%3E+0&g0.tab=1"
        );
        let resolved = &sent[4];
        assert_eq!(resolved.ends_at, Some(330_000));
        assert!(sent[5..].iter().all(|a| a.ends_at == Some(330_000)));
        assert!(g.rules[0].active.is_empty(), "dropped after retention");
    }

    /// Query slots that take the second acquisition only while the first is released, and
    /// refuse the rest, as a full query queue does.
    struct OneSlot(Arc<std::sync::atomic::AtomicBool>);

    struct Release(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl crate::QuerySlots for OneSlot {
        fn acquire(&self) -> Result<Box<dyn Send>, String> {
            if self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err("query timed out in query queue".to_owned());
            }
            Ok(Box::new(Release(self.0.clone())))
        }
    }

    /// Every rule query takes a slot: when none is free the evaluation fails with the queue's
    /// error and the rule is unhealthy until a later evaluation gets one.
    #[test]
    fn rule_queries_take_a_query_slot_and_fail_without_one() {
        let mut f = Fixture::new(&["x 1x10"], 30_000);
        let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        f.backend.slots = Some(Arc::new(OneSlot(taken.clone())));
        let mut g = f.group("groups:\n- name: g\n  rules:\n  - record: y\n    expr: x * 2\n");
        taken.store(true, std::sync::atomic::Ordering::SeqCst);
        g.eval(0, &f.env());
        assert_eq!(g.rules[0].health, Health::Err);
        assert_eq!(
            g.rules[0].last_error.as_deref(),
            Some("query timed out in query queue")
        );
        assert!(f.samples(&[("__name__", "y")]).is_empty());
        taken.store(false, std::sync::atomic::Ordering::SeqCst);
        g.eval(30_000, &f.env());
        assert_eq!(g.rules[0].health, Health::Ok);
        assert_eq!(f.samples(&[("__name__", "y")]).len(), 1);
        assert!(
            !taken.load(std::sync::atomic::Ordering::SeqCst),
            "the slot is given back after the query"
        );
    }

    #[test]
    fn alert_series_go_stale_as_states_change() {
        let f = Fixture::new(&["x 1x4 stale"], 30_000);
        let mut g =
            f.group("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n    for: 1m\n");
        g.skip_restore();
        for i in 0..=6 {
            g.eval(i * 30_000, &f.env());
        }
        let pending = f.samples(&[
            ("__name__", "ALERTS"),
            ("alertname", "A"),
            ("alertstate", "pending"),
        ]);
        let ts: Vec<i64> = pending.iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![0, 30_000, 60_000]);
        assert!(
            storage::is_stale_nan(pending[2].v),
            "pending ends stale when it fires"
        );
        let firing = f.samples(&[
            ("__name__", "ALERTS"),
            ("alertname", "A"),
            ("alertstate", "firing"),
        ]);
        assert_eq!(
            firing.iter().map(|s| s.t).collect::<Vec<_>>(),
            vec![60_000, 90_000, 120_000, 150_000]
        );
        assert!(
            storage::is_stale_nan(firing[3].v),
            "firing ends stale when resolved"
        );
        let for_state = f.samples(&[("__name__", "ALERTS_FOR_STATE"), ("alertname", "A")]);
        assert_eq!(for_state[0].v, 0.0);
    }

    #[test]
    fn limit_and_query_offset() {
        let f = Fixture::new(&[r#"x{i="1"} 1x10"#, r#"x{i="2"} 2x10"#], 30_000);
        let mut g = f.group(
            "groups:\n- name: g\n  limit: 1\n  rules:\n  - alert: A\n    expr: x > 0\n  - record: y\n    expr: x\n",
        );
        g.skip_restore();
        g.eval(60_000, &f.env());
        assert_eq!(
            g.rules[0].last_error.as_deref(),
            Some("exceeded limit of 1 with 2 alerts")
        );
        assert!(g.rules[0].active.is_empty());
        assert_eq!(
            g.rules[1].last_error.as_deref(),
            Some("exceeded limit of 1 with 2 series")
        );
        assert_eq!(g.rules[1].health, Health::Err);

        let mut g = f.group(
            "groups:\n- name: h\n  query_offset: 1m\n  rules:\n  - record: z\n    expr: x\n",
        );
        g.eval(120_000, &f.env());
        let z = f.samples(&[("__name__", "z"), ("i", "1")]);
        assert_eq!(z, vec![Sample { t: 60_000, v: 1.0 }]);

        // global.rule_query_offset applies to groups without their own.
        let spec = super::super::file::parse_file(
            "t.yml",
            "groups:\n- name: k\n  rules:\n  - record: w\n    expr: x\n",
        )
        .unwrap()
        .remove(0);
        let mut g = Group::new(spec, 30_000, 90_000);
        g.eval(120_000, &f.env());
        let w = f.samples(&[("__name__", "w"), ("i", "1")]);
        assert_eq!(w, vec![Sample { t: 30_000, v: 1.0 }]);
    }

    /// The alert `Slow` (`x > 0` for 20m) with `x{job="j"}` and its saved pending state
    /// `ALERTS_FOR_STATE{alertname="Slow", job="j"}` as the series descriptions say, a sample
    /// per 100s.
    fn slow_alert(for_state: &str, x: &str) -> (Fixture, Group) {
        let f = Fixture::new(
            &[
                &format!(r#"ALERTS_FOR_STATE{{alertname="Slow", job="j"}} {for_state}"#),
                &format!(r#"x{{job="j"}} {x}"#),
            ],
            100_000,
        );
        let g = f.group(
            "groups:\n- name: g\n  rules:\n  - alert: Slow\n    expr: x > 0\n    for: 20m\n",
        );
        (f, g)
    }

    #[test]
    fn for_state_is_restored_without_counting_the_downtime() {
        // Pending since 100s, last written at 300s (the server stopped), evaluated again at
        // 1000s: 200s of the 20m were spent, so the alert now counts from 800s.
        let (f, mut g) = slow_alert("_ 100x2", "_x9 1");
        g.eval(1_000_000, &f.env());
        assert_eq!(
            g.rules[0].active.values().next().unwrap().active_at,
            1_000_000
        );
        assert!(
            f.samples(&[
                ("__name__", "ALERTS"),
                ("alertname", "Slow"),
                ("alertstate", "pending"),
                ("job", "j")
            ])
            .is_empty(),
            "nothing is written before the state is restored"
        );
        g.restore_for_state(1_000_000, &f.env());
        assert_eq!(
            g.rules[0].active.values().next().unwrap().active_at,
            800_000
        );
        assert!(g.rules[0].restored);
    }

    #[test]
    fn short_remaining_for_is_extended_to_the_grace_period() {
        // Pending since 100s, down at 1000s: 5m of 20m remain, less than the 10m grace period,
        // so the alert fires 10m after the restart.
        let (f, mut g) = slow_alert("_ 100x9", "_x11 1");
        g.eval(1_100_000, &f.env());
        g.restore_for_state(1_100_000, &f.env());
        let a = g.rules[0].active.values().next().unwrap();
        assert_eq!(a.active_at, 1_100_000 + 600_000 - 1_200_000);
    }

    #[test]
    fn a_reload_keeps_alert_state_and_ends_removed_rules_series() {
        let f = Fixture::new(&["x 1x20"], 30_000);
        let mut old = f.group(
            "groups:\n- name: g\n  rules:\n  - alert: Keep\n    expr: x > 0\n    for: 1m\n  - alert: Gone\n    expr: x > 0\n",
        );
        old.skip_restore();
        old.eval(0, &f.env());
        old.eval(30_000, &f.env());
        let mut new = f
            .group("groups:\n- name: g\n  rules:\n  - alert: Keep\n    expr: x > 0\n    for: 1m\n");
        new.copy_state_from(&mut old);
        new.eval(60_000, &f.env());
        let keep = new.rules[0].active.values().next().unwrap();
        assert_eq!((keep.active_at, keep.state), (0, AlertState::Firing));
        let gone = f.samples(&[
            ("__name__", "ALERTS"),
            ("alertname", "Gone"),
            ("alertstate", "firing"),
        ]);
        assert_eq!(
            gone.last().map(|s| (s.t, storage::is_stale_nan(s.v))),
            Some((60_000, true))
        );
    }
}
