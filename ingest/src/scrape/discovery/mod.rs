//! Where targets come from: `static_configs` as written (read by the manager), and the
//! service discoveries, one module each:
//!
//! - `file`: `file_sd_configs`, target files polled and re-read when they change.
//! - `http`: `http_sd_configs`, a URL fetched every `refresh_interval`.
//! - `dns`: `dns_sd_configs`, names looked up every `refresh_interval`.
//!
//! Each hands the manager [`Discovered`] groups; `http` and `dns` refresh on a task of their
//! own ([`Running`]) that wakes the manager when their groups change. What becomes of a group
//! is `target`'s. All of them count into [`SdMetrics`] (`metrics`).

mod dns;
mod file;
mod http;
mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use storage::Label;

use super::config::TargetGroup;

pub use dns::dns_answer;
pub(crate) use dns::DnsSource;
pub(crate) use file::{FileDiscovery, POLL};
pub use http::http_sd_answer;
pub(crate) use http::HttpSource;
pub use metrics::SdMetrics;

/// A group with the meta labels its discovery adds.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovered {
    pub group: TargetGroup,
    pub meta: Vec<Label>,
}

/// A discovery entry that refreshes by itself.
pub(crate) trait Refresh: Send + 'static {
    /// Prometheus's name for it, the `mechanism` label of the refresh metrics.
    const MECHANISM: &'static str;
    fn interval(&self) -> Duration;
    /// The groups to hold now, or `None` to keep the last ones (a failed refresh).
    fn refresh(&mut self) -> impl Future<Output = Option<Vec<Discovered>>> + Send;
}

/// A refreshing entry of a pool, checked at config load and started on apply.
pub(crate) enum Source {
    Http(Arc<HttpSource>),
    Dns(Arc<DnsSource>),
}

impl Source {
    pub(crate) fn start(
        &self,
        job: &str,
        wake: Arc<tokio::sync::Notify>,
        metrics: &Arc<SdMetrics>,
    ) -> Running {
        let m = metrics.clone();
        match self {
            Source::Http(s) => Running::start(
                http::HttpRefresh::new(job.into(), s.clone(), m.clone()),
                wake,
                m,
            ),
            Source::Dns(s) => Running::start(
                dns::DnsRefresh::new(job.into(), s.clone(), m.clone()),
                wake,
                m,
            ),
        }
    }
}

/// The groups last refreshed, and whether the manager has seen them.
#[derive(Default)]
struct Latest {
    groups: Vec<Discovered>,
    changed: bool,
}

/// One running entry: its task and its groups. Dropping it (the pool's end or reload) ends
/// the task.
pub(crate) struct Running {
    latest: Arc<Mutex<Latest>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Refreshes now and every interval; `wake` is notified whenever the groups change.
    fn start<R: Refresh>(r: R, wake: Arc<tokio::sync::Notify>, metrics: Arc<SdMetrics>) -> Running {
        metrics.mechanism_started(R::MECHANISM);
        let latest = Arc::new(Mutex::new(Latest::default()));
        let task = tokio::spawn(run(r, latest.clone(), wake, metrics));
        Running { latest, task }
    }

    /// Whether the groups changed since the last call.
    pub(crate) fn take_changed(&self) -> bool {
        std::mem::take(&mut self.latest.lock().changed)
    }

    pub(crate) fn groups(&self) -> Vec<Discovered> {
        self.latest.lock().groups.clone()
    }
}

async fn run<R: Refresh>(
    mut r: R,
    latest: Arc<Mutex<Latest>>,
    wake: Arc<tokio::sync::Notify>,
    metrics: Arc<SdMetrics>,
) {
    // The first tick is at once: Prometheus refreshes right away.
    let mut tick = tokio::time::interval(r.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let refreshed = r.refresh().await;
        metrics.refreshed(R::MECHANISM, started.elapsed(), refreshed.is_none());
        let Some(groups) = refreshed else {
            continue;
        };
        let mut l = latest.lock();
        if l.groups != groups {
            l.groups = groups;
            l.changed = true;
            drop(l);
            wake.notify_one();
        }
    }
}

/// Prometheus logs every failed refresh; a peer that stays unreachable, refreshed every few
/// seconds, would flood the log, so novamon warns when failures start, repeats them at DEBUG,
/// and says when a refresh succeeds again (as `storage`'s failure episodes do).
pub(crate) struct Episode {
    /// The discovery, as the log names it (`http_sd`).
    what: &'static str,
    failing: bool,
}

impl Episode {
    pub(crate) fn new(what: &'static str) -> Episode {
        Episode {
            what,
            failing: false,
        }
    }

    pub(crate) fn failed(&mut self, job: &str, source: &str, err: &str) {
        let what = self.what;
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(
                job,
                source,
                error = err,
                "{what}: still unable to refresh target groups"
            );
        } else {
            tracing::warn!(
                job,
                source,
                error = err,
                "{what}: unable to refresh target groups, keeping the last ones; logged again only once it succeeds"
            );
        }
    }

    pub(crate) fn succeeded(&mut self, job: &str, source: &str) {
        if std::mem::replace(&mut self.failing, false) {
            tracing::info!(
                job,
                source,
                "{}: refreshing target groups succeeds again",
                self.what
            );
        }
    }
}
