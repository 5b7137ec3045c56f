//! The running rule manager: one task per group evaluating on its interval against the TSDB,
//! reloads that swap the rule set atomically (a bad file leaves the running rules alone),
//! and the read side the HTTP API uses. Owns scheduling and the group list; what one
//! evaluation does is `group`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use storage::{Appendable, Querier};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::file::{self, GroupSpec};
use super::group::{Backend, Env, Group, Health};
use super::metrics::{Iteration, RuleMetrics};
use alertmanager::AlertSink;
use logql::LogEngine;
use promql::Engine;

/// The rule settings of the configuration file.
#[derive(Clone, Debug)]
pub struct RuleConfig {
    /// `rule_files` patterns as written.
    pub patterns: Vec<String>,
    /// The directory relative patterns are resolved against: the config file's.
    pub base_dir: PathBuf,
    /// `global.evaluation_interval`: the interval of groups that set none.
    pub evaluation_interval: Duration,
    /// `global.rule_query_offset`: the `query_offset` of groups that set none.
    pub query_offset: Duration,
    pub external_labels: BTreeMap<String, String>,
    /// Prefix of the alerts' `generatorURL`.
    pub external_url: String,
}

/// The query slots rule queries take, shared with the query APIs: as in Prometheus, whose
/// rule queries go through the engine's `--query.max-concurrency` like any other query.
pub trait QuerySlots: Send + Sync {
    /// Blocks (evaluations run on the blocking pool) until a slot is free, no longer than the
    /// engine's query timeout; the slot is held until the returned guard is dropped. The error
    /// fails the rule's evaluation with its text.
    fn acquire(&self) -> Result<Box<dyn Send>, String>;
}

/// Why a rule set was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Pattern(String),
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Reads and validates every file the patterns match.
pub(crate) fn load(
    patterns: &[String],
    base: &std::path::Path,
) -> Result<Vec<GroupSpec>, RulesError> {
    let files = file::expand_globs(patterns, base).map_err(RulesError::Pattern)?;
    let mut specs = Vec::new();
    let mut errs = Vec::new();
    for f in &files {
        match file::load_file(f) {
            Ok(g) => specs.extend(g),
            Err(e) => errs.extend(e),
        }
    }
    if errs.is_empty() {
        Ok(specs)
    } else {
        Err(RulesError::Invalid(errs))
    }
}

struct Shared {
    backend: Backend,
    sink: Arc<dyn AlertSink>,
    metrics: RuleMetrics,
}

/// The settings one generation of groups runs with.
struct Generation {
    external_labels: BTreeMap<String, String>,
    external_url: String,
}

struct Running {
    group: Arc<Mutex<Group>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Owns the groups of the current rule set and their evaluation tasks.
pub struct RuleManager {
    shared: Arc<Shared>,
    running: Mutex<Vec<Running>>,
    /// Set after the first load: groups that appear in later reloads have no earlier state
    /// to restore, as in Prometheus.
    loaded_once: Mutex<bool>,
    /// Held for a whole reload, so a SIGHUP and a `POST /-/reload` at once cannot both
    /// start groups.
    applying: tokio::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one evaluation must not take the API down with a poisoned lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RuleManager {
    /// Registers the `prometheus_rule_*` self-metrics in `registry`. Every rule query takes
    /// one of `slots` while it evaluates, when given.
    pub fn new(
        querier: Arc<dyn Querier>,
        appendable: Arc<dyn Appendable>,
        engine: Arc<Engine>,
        logs: Option<LogEngine>,
        sink: Arc<dyn AlertSink>,
        slots: Option<Arc<dyn QuerySlots>>,
        registry: &mut Registry,
    ) -> Arc<RuleManager> {
        Arc::new(RuleManager {
            shared: Arc::new(Shared {
                backend: Backend {
                    engine,
                    querier,
                    appendable,
                    logs,
                    slots,
                },
                sink,
                metrics: RuleMetrics::register(registry),
            }),
            running: Mutex::new(Vec::new()),
            loaded_once: Mutex::new(false),
            applying: tokio::sync::Mutex::new(()),
        })
    }

    /// Loads the rule files and replaces the running groups, carrying the state of groups
    /// that stay. When any file is bad nothing changes and the error says why. Must be
    /// called inside the tokio runtime. Returns the number of groups now running.
    pub async fn apply(&self, cfg: &RuleConfig) -> Result<usize, RulesError> {
        let _applying = self.applying.lock().await;
        let specs = {
            let (patterns, base) = (cfg.patterns.clone(), cfg.base_dir.clone());
            tokio::task::spawn_blocking(move || load(&patterns, &base))
                .await
                .map_err(|e| RulesError::Pattern(e.to_string()))??
        };
        let default_ms = cfg.evaluation_interval.as_millis().max(1) as i64;
        let restore = !std::mem::replace(&mut *lock(&self.loaded_once), true);
        let old: Vec<Running> = std::mem::take(&mut *lock(&self.running));
        // Stop the old tasks first so no evaluation runs while state moves over.
        for r in &old {
            let _ = r.stop.send(true);
        }
        let mut old_groups = Vec::with_capacity(old.len());
        for r in old {
            let _ = r.task.await;
            old_groups.push(r.group);
        }
        let generation = Arc::new(Generation {
            external_labels: cfg.external_labels.clone(),
            external_url: cfg.external_url.clone(),
        });
        let mut new_running = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut g = Group::new(spec, default_ms, cfg.query_offset.as_millis() as i64);
            let prev = old_groups.iter().position(|o| lock(o).key() == g.key());
            match prev {
                Some(i) => {
                    let o = old_groups.remove(i);
                    g.copy_state_from(&mut lock(&o));
                }
                None if !restore => g.skip_restore(),
                None => {}
            }
            self.shared
                .metrics
                .loaded(&g.key(), g.interval_ms, g.rules.len());
            new_running.push(self.start(g, generation.clone()));
        }
        // Groups that are gone: their series end now rather than fading out over the lookback.
        for g in &old_groups {
            self.shared.metrics.removed(&lock(g).key());
        }
        if !old_groups.is_empty() {
            let shared = self.shared.clone();
            let generation = generation.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let env = env(&shared, &generation);
                for g in old_groups {
                    lock(&g).mark_stale(now_ms(), &env);
                }
            })
            .await;
        }
        let n = new_running.len();
        *lock(&self.running) = new_running;
        Ok(n)
    }

    fn start(&self, group: Group, generation: Arc<Generation>) -> Running {
        let interval = Duration::from_millis(group.interval_ms.max(1) as u64);
        let needs_restore = group.rules.iter().any(|r| r.spec.alert && !r.restored);
        let group = Arc::new(Mutex::new(group));
        let (stop, mut stopped) = watch::channel(false);
        let shared = self.shared.clone();
        let g = group.clone();
        let interval_ms = interval.as_millis() as i64;
        let offset = {
            let g = lock(&group);
            group_offset(&g.key(), interval_ms)
        };
        let task = tokio::spawn(async move {
            let now = now_ms();
            let first = aligned(now, interval_ms, offset) + interval_ms;
            let start = tokio::time::Instant::now() + Duration::from_millis((first - now) as u64);
            let mut tick = tokio::time::interval_at(start, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut evals = 0u32;
            let mut prev: Option<i64> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                evals += 1;
                // As Prometheus: restore after the second evaluation, when recording rules
                // the alerts depend on have caught up.
                let restore_now = needs_restore && evals == 2;
                let (shared, generation, g) = (shared.clone(), generation.clone(), g.clone());
                let done = tokio::task::spawn_blocking(move || {
                    let env = env(&shared, &generation);
                    let mut g = lock(&g);
                    // A timer that fires a hair early by the wall clock must not repeat the
                    // previous timestamp.
                    let mut ts = aligned(now_ms(), interval_ms, offset);
                    if g.last_eval == Some(ts) {
                        ts += interval_ms;
                    }
                    // Ticks skipped while an evaluation overran show as a gap of several
                    // intervals since this task's previous one.
                    let missed =
                        prev.map_or(0, |last| ((ts - last) / interval_ms - 1).max(0) as u64);
                    g.eval(ts, &env);
                    shared.metrics.iterated(
                        &g.key(),
                        &Iteration {
                            ts,
                            missed,
                            duration_seconds: g.eval_seconds,
                            rules: g.rules.len(),
                            failed: g.rules.iter().filter(|r| r.health == Health::Err).count(),
                        },
                    );
                    if restore_now {
                        g.restore_for_state(now_ms(), &env);
                    }
                    ts
                })
                .await;
                match done {
                    Ok(ts) => prev = Some(ts),
                    Err(e) => tracing::error!("rule group evaluation panicked: {e}"),
                }
            }
        });
        Running { group, stop, task }
    }

    /// Stops every group's task (on shutdown).
    pub async fn stop(&self) {
        let _applying = self.applying.lock().await;
        let running = std::mem::take(&mut *lock(&self.running));
        for r in &running {
            let _ = r.stop.send(true);
        }
        for r in running {
            let _ = r.task.await;
        }
    }

    /// Calls `f` with every running group, in load order.
    pub fn with_groups<R>(&self, f: impl FnOnce(&[&Group]) -> R) -> R {
        let running = lock(&self.running);
        let guards: Vec<MutexGuard<Group>> = running.iter().map(|r| lock(&r.group)).collect();
        let refs: Vec<&Group> = guards.iter().map(|g| &**g).collect();
        f(&refs)
    }
}

/// A group's evaluations fall on `offset + k·interval`: regular timestamps for its series,
/// spread over the interval so groups do not all run at once (Prometheus does the same with
/// a hash of the group).
fn group_offset(key: &(String, String), interval_ms: i64) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % interval_ms.max(1) as u64) as i64
}

/// The latest evaluation timestamp at or before `now`.
fn aligned(now: i64, interval_ms: i64, offset: i64) -> i64 {
    now - (now - offset).rem_euclid(interval_ms.max(1))
}

fn env<'a>(shared: &'a Shared, generation: &'a Generation) -> Env<'a> {
    Env {
        backend: &shared.backend,
        external_labels: &generation.external_labels,
        external_url: &generation.external_url,
        sink: Some(shared.sink.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertmanager::Alert;

    struct Discard;

    impl AlertSink for Discard {
        fn send(&self, _: Vec<Alert>) {}
    }

    /// The value of the series whose line in `text` starts with `series`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_metrics_as_prometheus_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let tsdb =
            Arc::new(storage::Tsdb::open(&dir.path().join("tsdb"), Default::default()).unwrap());
        let engine = Arc::new(Engine::new(tsdb.clone(), Default::default()));
        // Two rules; the second returns two series over the group's limit of one and fails.
        std::fs::write(
            dir.path().join("r.yml"),
            "groups:\n- name: g\n  interval: 100ms\n  limit: 1\n  rules:\n  - record: one\n    expr: vector(1)\n  - record: two\n    expr: vector(1) or label_replace(vector(2), \"a\", \"b\", \"\", \"\")\n",
        )
        .unwrap();
        let mut registry = Registry::default();
        let manager = RuleManager::new(
            tsdb.clone(),
            tsdb,
            engine,
            None,
            Arc::new(Discard),
            None,
            &mut registry,
        );
        let mut cfg = RuleConfig {
            patterns: vec!["r.yml".to_owned()],
            base_dir: dir.path().to_path_buf(),
            evaluation_interval: Duration::from_secs(60),
            query_offset: Duration::ZERO,
            external_labels: BTreeMap::new(),
            external_url: String::new(),
        };
        assert_eq!(manager.apply(&cfg).await.unwrap(), 1);
        let group = format!(
            "{{rule_group=\"{};g\"}}",
            dir.path().join("r.yml").display()
        );
        let text = || {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, &registry).unwrap();
            t
        };
        let iterations = format!("prometheus_rule_group_iterations_total{group}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while value(&text(), &iterations).unwrap_or(0.0) < 3.0 {
            assert!(std::time::Instant::now() < deadline, "{}", text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        manager.stop().await;
        let t = text();
        let get = |name: &str| {
            value(&t, &format!("{name}{group}")).unwrap_or_else(|| panic!("{name} missing: {t}"))
        };
        let n = get("prometheus_rule_group_iterations_total");
        let missed = get("prometheus_rule_group_iterations_missed_total");
        assert_eq!(
            get("prometheus_rule_evaluations_total"),
            2.0 * (n - missed),
            "{t}"
        );
        assert_eq!(
            get("prometheus_rule_evaluation_failures_total"),
            n - missed,
            "{t}"
        );
        assert_eq!(get("prometheus_rule_group_rules"), 2.0);
        assert_eq!(get("prometheus_rule_group_interval_seconds"), 0.1);
        let last = get("prometheus_rule_group_last_evaluation_timestamp_seconds");
        assert!((now_ms() as f64 / 1000.0 - last).abs() < 5.0, "{t}");
        let took = get("prometheus_rule_group_last_duration_seconds");
        assert!(took > 0.0 && took < 5.0, "{t}");

        // A reload that drops the group drops its series.
        manager.apply(&cfg).await.unwrap();
        cfg.patterns.clear();
        assert_eq!(manager.apply(&cfg).await.unwrap(), 0);
        let t = text();
        assert!(!t.contains("rule_group="), "{t}");
    }

    #[test]
    fn evaluation_times_are_aligned_to_the_group_offset() {
        let key = ("f.yml".to_owned(), "g".to_owned());
        let off = group_offset(&key, 60_000);
        assert!((0..60_000).contains(&off));
        assert_eq!(off, group_offset(&key, 60_000), "stable");
        for now in [0, 59_999, 60_000 + off, 1_700_000_123_456] {
            let t = aligned(now, 60_000, off);
            assert!(t <= now && now - t < 60_000);
            assert_eq!((t - off).rem_euclid(60_000), 0);
        }
    }
}
