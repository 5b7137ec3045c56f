//! The running rule manager: one task per group evaluating on its interval against the TSDB,
//! reloads that swap the rule set atomically (a bad file leaves the running rules alone),
//! and the read side the HTTP API uses. Owns scheduling and the group list; what one
//! evaluation does is `group`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use storage::{AppendMode, SeriesBatch, Tsdb};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::file::{self, GroupSpec};
use super::group::{Appender, Backend, Env, Group};
use crate::alert::AlertSink;
use crate::logql::LogEngine;
use crate::Engine;

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

struct TsdbAppender(Arc<Tsdb>);

impl Appender for TsdbAppender {
    fn append(&self, batch: Vec<SeriesBatch>) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        // Best effort as Prometheus's rule appender: one out-of-order series (after a restart
        // that rewinds nothing, or a clock step) must not drop the others.
        let report = self
            .0
            .append(&batch, AppendMode::BestEffort)
            .map_err(|e| e.to_string())?;
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
}

struct Shared {
    backend: Backend,
    sink: Arc<dyn AlertSink>,
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
    pub fn new(
        tsdb: Arc<Tsdb>,
        engine: Arc<Engine>,
        logs: Option<LogEngine>,
        sink: Arc<dyn AlertSink>,
    ) -> Arc<RuleManager> {
        Arc::new(RuleManager {
            shared: Arc::new(Shared {
                backend: Backend {
                    engine,
                    queryable: tsdb.clone(),
                    appender: Arc::new(TsdbAppender(tsdb)),
                    logs,
                },
                sink,
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
            new_running.push(self.start(g, generation.clone()));
        }
        // Groups that are gone: their series end now rather than fading out over the lookback.
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
                    g.eval(ts, &env);
                    if restore_now {
                        g.restore_for_state(now_ms(), &env);
                    }
                })
                .await;
                if let Err(e) = done {
                    tracing::error!("rule group evaluation panicked: {e}");
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
    pub(crate) fn with_groups<R>(&self, f: impl FnOnce(&[&Group]) -> R) -> R {
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
