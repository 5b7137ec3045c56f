//! The scrape manager: one pool per `scrape_configs` job, each keeping a loop per active
//! target, synced with discovery (static groups at apply, target files polled, HTTP and DNS
//! discovery tasks waking it when their groups change), and swapped on reload so that
//! unchanged jobs keep their loops and state. Owns the set of running loops and what the
//! targets API reads of them.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use storage::{Appendable, Labels, Metadata};

use super::client::HttpSettings;
use super::config::ScrapeConfig;
use super::discovery::{
    Discovered, DnsSource, FileDiscovery, HttpSource, Running, SdMetrics, Source, POLL,
};
use super::scrape_loop::{LoopHandle, PoolShared, TargetStatus};
use super::target::{populate, Outcome, Target};

/// Scrape configs checked and compiled, ready to apply (a reload prepares first, so a bad
/// config changes nothing).
pub struct Prepared {
    pools: Vec<(ScrapeConfig, Arc<PoolShared>, Vec<Source>)>,
    base_dir: PathBuf,
}

/// The ceiling on a scrape body when `body_size_limit` is unset or larger (Prometheus has
/// none; one runaway target must not take the process's memory).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 256 << 20;

impl Prepared {
    /// Checks `configs` as Prometheus does on load, with the global interval and timeout as
    /// defaults. `base_dir`: what relative target-file paths are relative to (the config
    /// file's directory).
    pub fn new(
        configs: &[ScrapeConfig],
        global_interval: Duration,
        global_timeout: Duration,
        base_dir: PathBuf,
        max_body_bytes: u64,
    ) -> Result<Prepared, String> {
        let mut pools = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            if configs[..i].iter().any(|o| o.job_name == c.job_name) {
                return Err(format!(
                    "found multiple scrape configs with job name {:?}",
                    c.job_name
                ));
            }
            let config = c.compile(global_interval, global_timeout)?;
            let http = HttpSettings::new(c, config.accept.clone(), max_body_bytes)
                .map_err(|e| format!("job {:?}: {e}", c.job_name))?;
            let mut sources = Vec::new();
            for sd in &c.http_sd_configs {
                let s = HttpSource::new(sd)
                    .map_err(|e| format!("job {:?}: http_sd_configs: {e}", c.job_name))?;
                sources.push(Source::Http(Arc::new(s)));
            }
            for sd in &c.dns_sd_configs {
                sd.check()
                    .map_err(|e| format!("job {:?}: dns_sd_configs: {e}", c.job_name))?;
                sources.push(Source::Dns(Arc::new(DnsSource::new(sd))));
            }
            pools.push((
                c.clone(),
                Arc::new(PoolShared {
                    config,
                    http,
                    forced_error: Default::default(),
                }),
                sources,
            ));
        }
        Ok(Prepared { pools, base_dir })
    }
}

struct Pool {
    raw: ScrapeConfig,
    shared: Arc<PoolShared>,
    files: Vec<FileDiscovery>,
    /// HTTP and DNS discoveries, running while the pool lives: dropping the pool ends their
    /// tasks.
    running: Vec<Running>,
    loops: HashMap<u64, LoopHandle>,
    dropped: Vec<Labels>,
}

/// The running scrapers.
pub struct ScrapeManager {
    store: Arc<dyn Appendable>,
    /// Serialises applying configs and discovery syncs (which await loops' ends).
    ops: tokio::sync::Mutex<PathBuf>,
    pools: parking_lot::Mutex<BTreeMap<String, Pool>>,
    /// Notified by HTTP and DNS discovery tasks when their groups change.
    wake: Arc<tokio::sync::Notify>,
    sd: Arc<SdMetrics>,
}

/// An active target as the API shows it.
pub struct ActiveTarget {
    pub pool: String,
    pub target: Target,
    pub status: TargetStatus,
}

/// A target relabelled away.
pub struct DroppedTarget {
    pub pool: String,
    pub discovered: Labels,
}

fn key(t: &Target) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.labels.hash(&mut h);
    t.url().hash(&mut h);
    h.finish()
}

impl ScrapeManager {
    /// A manager with no jobs; target files are polled while it lives. Its discoveries count
    /// into `sd` (which `/metrics` shows).
    pub fn new(store: Arc<dyn Appendable>, sd: Arc<SdMetrics>) -> Arc<ScrapeManager> {
        let m = Arc::new(ScrapeManager {
            store,
            ops: tokio::sync::Mutex::new(PathBuf::from(".")),
            pools: parking_lot::Mutex::new(BTreeMap::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
            sd,
        });
        tokio::spawn(poll_files(Arc::downgrade(&m)));
        m
    }

    /// Swaps in `prepared`: jobs whose config did not change keep their loops; changed jobs
    /// get new loops (no staleness: the series continue); removed jobs and targets end their
    /// series with staleness markers.
    pub async fn apply(&self, prepared: Prepared) {
        let mut base = self.ops.lock().await;
        *base = prepared.base_dir;
        let mut stopping = Vec::new();
        let mut fresh = Vec::new();
        {
            let mut pools = self.pools.lock();
            let wanted: Vec<&str> = prepared
                .pools
                .iter()
                .map(|(c, _, _)| c.job_name.as_str())
                .collect();
            let gone: Vec<String> = pools
                .keys()
                .filter(|k| !wanted.contains(&k.as_str()))
                .cloned()
                .collect();
            for job in gone {
                self.sd.remove_discovered(&job);
                let p = pools.remove(&job).expect("listed");
                stopping.extend(p.loops.into_values().map(|l| (l, true)));
            }
            for (raw, shared, sources) in prepared.pools {
                if pools.get(&raw.job_name).is_some_and(|p| p.raw == raw) {
                    continue;
                }
                if let Some(old) = pools.remove(&raw.job_name) {
                    stopping.extend(old.loops.into_values().map(|l| (l, false)));
                }
                let files = raw
                    .file_sd_configs
                    .iter()
                    .cloned()
                    .map(|c| FileDiscovery::new(c, self.sd.clone()))
                    .collect();
                let running = sources
                    .iter()
                    .map(|s| s.start(&raw.job_name, self.wake.clone(), &self.sd))
                    .collect();
                fresh.push(raw.job_name.clone());
                pools.insert(
                    raw.job_name.clone(),
                    Pool {
                        raw,
                        shared,
                        files,
                        running,
                        loops: HashMap::new(),
                        dropped: Vec::new(),
                    },
                );
            }
        }
        for (l, stale) in stopping {
            l.stop(stale).await;
        }
        for job in fresh {
            self.sync(&job, &base, true).await;
        }
    }

    /// Re-reads the job's target files (all of them with `force`), takes its HTTP and DNS
    /// discoveries' news and, when its groups changed, starts and stops loops to match.
    async fn sync(&self, job: &str, base: &std::path::Path, force: bool) {
        let stopping: Vec<LoopHandle> = {
            let mut pools = self.pools.lock();
            let Some(pool) = pools.get_mut(job) else {
                return;
            };
            let mut changed = force;
            for f in &mut pool.files {
                changed |= f.refresh(base);
            }
            for r in &pool.running {
                changed |= r.take_changed();
            }
            if !changed {
                return;
            }
            let groups: Vec<Discovered> = pool
                .raw
                .static_configs
                .iter()
                .map(|g| Discovered {
                    group: g.clone(),
                    meta: Vec::new(),
                })
                .chain(pool.files.iter().flat_map(|f| f.groups().cloned()))
                .chain(pool.running.iter().flat_map(Running::groups))
                .collect();
            self.sd
                .set_discovered(job, groups.iter().map(|d| d.group.targets.len()).sum());
            let mut active = HashMap::new();
            pool.dropped.clear();
            for d in &groups {
                for o in populate(&pool.shared.config, &d.group, &d.meta) {
                    match o {
                        Outcome::Active(t) => {
                            active.insert(key(&t), *t);
                        }
                        Outcome::Dropped(l) => pool.dropped.push(l),
                        Outcome::Invalid(l, e) => {
                            tracing::warn!(job, target = %l, "target left out: {e}")
                        }
                    }
                }
            }
            // Prometheus still runs a loop per target, each failing with the error.
            let limit = pool.raw.target_limit;
            *pool.shared.forced_error.lock() = (limit > 0 && active.len() > limit).then(|| {
                format!(
                    "target_limit exceeded (number of targets: {}, limit: {limit})",
                    active.len()
                )
            });
            let gone: Vec<u64> = pool
                .loops
                .keys()
                .filter(|k| !active.contains_key(k))
                .copied()
                .collect();
            let stopping = gone.iter().filter_map(|k| pool.loops.remove(k)).collect();
            for (k, t) in active {
                if let std::collections::hash_map::Entry::Vacant(e) = pool.loops.entry(k) {
                    e.insert(LoopHandle::start(
                        t,
                        pool.shared.clone(),
                        self.store.clone(),
                    ));
                }
            }
            stopping
        };
        for l in stopping {
            l.stop(true).await;
        }
    }

    /// Stops every loop (shutdown). No staleness markers, as in Prometheus: the series go on
    /// after a restart.
    pub async fn stop(&self) {
        let _guard = self.ops.lock().await;
        let loops: Vec<LoopHandle> = std::mem::take(&mut *self.pools.lock())
            .into_values()
            .flat_map(|p| p.loops.into_values())
            .collect();
        for l in loops {
            l.stop(false).await;
        }
    }

    pub fn pool_names(&self) -> Vec<String> {
        self.pools.lock().keys().cloned().collect()
    }

    pub fn active(&self) -> Vec<ActiveTarget> {
        let pools = self.pools.lock();
        let mut out: Vec<ActiveTarget> = pools
            .iter()
            .flat_map(|(job, p)| {
                p.loops.values().map(move |l| ActiveTarget {
                    pool: job.clone(),
                    target: l.target.clone(),
                    status: l.status.lock().clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.pool, &a.target.labels).cmp(&(&b.pool, &b.target.labels)));
        out
    }

    pub fn dropped(&self) -> Vec<DroppedTarget> {
        let pools = self.pools.lock();
        pools
            .iter()
            .flat_map(|(job, p)| {
                p.dropped.iter().map(move |d| DroppedTarget {
                    pool: job.clone(),
                    discovered: d.clone(),
                })
            })
            .collect()
    }

    /// Each active target's labels and the metadata of its last successful scrape.
    pub fn metadata(&self) -> Vec<(Labels, BTreeMap<String, Metadata>)> {
        let pools = self.pools.lock();
        pools
            .values()
            .flat_map(|p| p.loops.values())
            .map(|l| (l.target.labels.clone(), l.status.lock().metadata.clone()))
            .collect()
    }
}

/// Polls the target files of every job while the manager lives, and syncs the jobs whose
/// HTTP and DNS discoveries say their groups changed.
async fn poll_files(m: Weak<ScrapeManager>) {
    let Some(wake) = m.upgrade().map(|m| m.wake.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let Some(m) = m.upgrade() else { return };
        let base = m.ops.lock().await;
        let jobs: Vec<String> = m
            .pools
            .lock()
            .iter()
            .filter(|(_, p)| !p.files.is_empty() || !p.running.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for job in jobs {
            m.sync(&job, &base, false).await;
        }
    }
}
