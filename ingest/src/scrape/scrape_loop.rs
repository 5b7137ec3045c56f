//! One target's scrape loop (Prometheus's `scrapeLoop`): scrapes at the target's offset in
//! every interval, turns the body into samples with the target's labels (`honor_labels`,
//! `metric_relabel_configs`, the label limits, `sample_limit`), appends them through
//! `storage::Appendable` with the report series (`up`, `scrape_duration_seconds`, …) and the
//! OpenMetrics exemplars (to the exemplar storage, which is always on), and
//! writes staleness markers for series that disappeared, for every series when a scrape
//! fails, and when the loop stops. Owns the per-target series cache; knows nothing of
//! discovery or the API beyond the [`TargetStatus`] it keeps current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foldhash::HashMap;
use parking_lot::Mutex;
use storage::relabel;
use storage::{
    AppendMode, Appendable, Appender, EncodedBatch, EncodedLabels, Exemplar, Label, Labels,
    Metadata, Sample, SeriesBatch, SeriesRef,
};
use tokio::sync::watch;

use super::client::{Connection, Fetched, HttpSettings};
use super::config::PoolConfig;
use super::exposition::{Entry, Format, Parser};
use super::target::Target;

/// What a pool's loops share.
pub(crate) struct PoolShared {
    pub config: PoolConfig,
    pub http: HttpSettings,
    /// Set while the pool has more targets than its `target_limit`: every scrape of every
    /// target fails with it instead of fetching, as in Prometheus (`up` 0, the error as
    /// `lastError`, staleness markers for what the targets exposed).
    pub forced_error: Mutex<Option<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What the targets API shows of a target, updated after every scrape.
#[derive(Clone, Debug)]
pub struct TargetStatus {
    pub health: Health,
    pub last_error: String,
    pub last_scrape: Option<SystemTime>,
    pub last_duration: Duration,
    /// The metadata of the families in the last successful scrape.
    pub metadata: BTreeMap<String, Metadata>,
}

impl Default for TargetStatus {
    fn default() -> Self {
        TargetStatus {
            health: Health::Unknown,
            last_error: String::new(),
            last_scrape: None,
            last_duration: Duration::ZERO,
            metadata: BTreeMap::new(),
        }
    }
}

/// A running loop.
pub(crate) struct LoopHandle {
    pub target: Target,
    pub status: Arc<Mutex<TargetStatus>>,
    /// `Some(stale)` stops it; `stale`: end its series with staleness markers.
    stop: watch::Sender<Option<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopHandle {
    pub(crate) fn start(
        target: Target,
        pool: Arc<PoolShared>,
        store: Arc<dyn Appendable>,
    ) -> LoopHandle {
        let status = Arc::new(Mutex::new(TargetStatus::default()));
        let (stop, stopped) = watch::channel(None);
        let task = tokio::spawn(run(target.clone(), pool, store, status.clone(), stopped));
        LoopHandle {
            target,
            status,
            stop,
            task,
        }
    }

    /// Stops the loop and waits for it. With `stale` its series end now (the target is
    /// gone); without, a loop for the same target under a new config takes them over.
    pub(crate) async fn stop(self, stale: bool) {
        let _ = self.stop.send(Some(stale));
        let _ = self.task.await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The first scrape: the next instant at the target's offset within the interval, counted
/// from the Unix epoch so that the phase survives restarts.
fn first_tick(target: &Target) -> Instant {
    let interval = target.interval.as_nanos().max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let offset = target.offset().as_nanos();
    let wait = (offset + interval - now % interval) % interval;
    Instant::now() + Duration::from_nanos(wait as u64)
}

async fn run(
    target: Target,
    pool: Arc<PoolShared>,
    store: Arc<dyn Appendable>,
    status: Arc<Mutex<TargetStatus>>,
    mut stop: watch::Receiver<Option<bool>>,
) {
    let mut conn = Connection::default();
    let mut cache = Some(Cache::default());
    let mut ticker = tokio::time::interval_at(first_tick(&target).into(), target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let target = Arc::new(target);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let started = Instant::now();
        let t = now_ms();
        let forced = pool.forced_error.lock().clone();
        let fetched = match forced {
            Some(e) => Err(e),
            None => conn.scrape(&pool.http, &target).await,
        };
        let duration = started.elapsed();
        let (p, s, tg) = (pool.clone(), store.clone(), target.clone());
        let mut c = cache.take().expect("returned by every scrape");
        let st = status.clone();
        let done = tokio::task::spawn_blocking(move || {
            let out = ingest(&mut c, &tg, &p, s.as_ref(), fetched, t, duration, &st);
            (c, out)
        })
        .await;
        let Ok((c, out)) = done else {
            tracing::error!(target = %target.url(), "scrape append panicked");
            break;
        };
        cache = Some(c);
        let mut st = status.lock();
        st.last_scrape = Some(UNIX_EPOCH + Duration::from_millis(t as u64));
        st.last_duration = duration;
        match out.error {
            None => {
                st.health = Health::Up;
                st.last_error.clear();
                st.metadata = out.metadata;
            }
            Some(e) => {
                st.health = Health::Down;
                st.last_error = e;
            }
        }
    }
    // Gone from the config or the discovery: its series end now.
    let stale = stop.borrow().unwrap_or(true);
    if let (true, Some(mut c)) = (stale, cache) {
        let t = now_ms();
        let _ = tokio::task::spawn_blocking(move || {
            let mut app = store.appender(AppendMode::BestEffort);
            c.generation += 1;
            c.stale(app.as_mut(), t, true);
            if let Err(e) = app.commit() {
                tracing::warn!(target = %target.url(), "writing staleness markers: {e}");
            }
        })
        .await;
    }
}

/// A series the target exposed, by its text as written.
struct CacheEntry {
    /// Encoded as the store takes them (a tenth of the memory of owned labels, for every
    /// series of every target). `None`: dropped by `metric_relabel_configs`.
    labels: Option<EncodedLabels>,
    /// Where the TSDB holds it, once an append said: spares the TSDB's lookup by label set.
    series: Option<SeriesRef>,
    /// The scrape (generation) it was last seen in, and first.
    seen: u64,
    first: u64,
    /// Exposed with its own timestamp: no staleness markers (unless
    /// `track_timestamps_staleness`).
    explicit_ts: bool,
    /// The last exemplar without a timestamp of its own appended for the series, while no
    /// exemplar with one came after it (boxed: most series have none).
    untimed_exemplar: Option<Box<Exemplar>>,
}

impl CacheEntry {
    /// The exemplar to append with this scrape's sample, if any. To Prometheus's exemplar
    /// storage, an exemplar without a timestamp of its own whose labels and value are those of
    /// the series' newest, also without one, is that same exemplar whatever the scrape times
    /// (`Exemplar.Equals`), and ignored: what a client library serves scrape after scrape
    /// until it replaces it is stored once. The storage knows times only, so the loop
    /// remembers.
    fn exemplar(
        &mut self,
        e: &super::exposition::Exemplar<'_>,
        sample_ts: i64,
    ) -> Option<Exemplar> {
        let new = exemplar(e, sample_ts);
        if e.timestamp_ms.is_some() {
            self.untimed_exemplar = None;
            return Some(new);
        }
        // Go's float comparison: a NaN never repeats.
        let repeat = self
            .untimed_exemplar
            .as_ref()
            .is_some_and(|last| last.labels == new.labels && last.value == new.value);
        if repeat {
            return None;
        }
        self.untimed_exemplar = Some(Box::new(new.clone()));
        Some(new)
    }
}

#[derive(Default)]
struct Cache {
    series: HashMap<Box<[u8]>, CacheEntry>,
    generation: u64,
    /// The report series' label sets, built once.
    report: Vec<Labels>,
}

impl Cache {
    /// After a scrape whose exemplars were not written: those it remembered as appended
    /// are appended again next time, for the storage to judge.
    fn forget_exemplars(&mut self) {
        let cur = self.generation;
        for e in self.series.values_mut().filter(|e| e.seen == cur) {
            e.untimed_exemplar = None;
        }
    }

    /// Staleness markers at `t` for the series of the previous scrape not seen in this one;
    /// with `all`, also for those seen in this one (the loop is ending). Forgets series seen
    /// before the previous scrape: they already got theirs.
    fn stale(&mut self, app: &mut dyn Appender, t: i64, all: bool) {
        let (now, prev) = (self.generation, self.generation.saturating_sub(1));
        let marker = [Sample {
            t,
            v: f64::from_bits(storage::STALE_NAN_BITS),
        }];
        let mut markers = EncodedBatch::new();
        self.series.retain(|_, e| {
            let ended = e.seen == prev || (all && e.seen == now);
            if ended && !e.explicit_ts {
                if let Some(l) = &e.labels {
                    markers.push_encoded(l, &marker);
                }
            }
            e.seen >= prev && !all
        });
        if !markers.is_empty() {
            app.append_batch(markers);
        }
    }
}

fn batch(labels: Labels, t: i64, v: f64) -> SeriesBatch {
    SeriesBatch {
        labels,
        samples: vec![Sample { t, v }],
        histograms: Vec::new(),
    }
}

/// What one scrape came to.
struct Outcome {
    error: Option<String>,
    metadata: BTreeMap<String, Metadata>,
}

#[derive(Default)]
struct Counts {
    scraped: usize,
    post_relabel: usize,
    added: usize,
}

/// Appends one scrape: its samples (all or nothing), staleness markers and report series.
#[allow(clippy::too_many_arguments)]
fn ingest(
    cache: &mut Cache,
    target: &Target,
    pool: &PoolShared,
    store: &dyn Appendable,
    fetched: Result<Fetched, String>,
    t: i64,
    duration: Duration,
    status: &Mutex<TargetStatus>,
) -> Outcome {
    cache.generation += 1;
    let mut app = store.appender(AppendMode::BestEffort);
    let mut metadata = BTreeMap::new();
    // The series text of each entry the samples' batch holds, in order (the batch is the
    // appender's first): for the references the commit gives back.
    let mut entries = Vec::new();
    let parsed = match &fetched {
        Ok(f) => samples(
            cache,
            target,
            pool,
            app.as_mut(),
            f,
            t,
            &mut metadata,
            &mut entries,
        ),
        Err(e) => Err(e.clone()),
    };
    let (error, counts) = match parsed {
        Ok(c) => {
            // Stored only when it changed since the last successful scrape.
            let known = status.lock();
            for (family, m) in &metadata {
                if known.metadata.get(family) != Some(m) {
                    app.set_metadata(family, m.clone());
                }
            }
            (None, c)
        }
        Err(e) => {
            // Nothing of a failed scrape is kept; it counts as an empty one, so every series
            // of the previous scrape ends.
            app.rollback();
            app = store.appender(AppendMode::BestEffort);
            // Series first met in it were never written: forgotten, not marked stale.
            let cur = cache.generation;
            cache.series.retain(|_, e| e.first != cur);
            cache.forget_exemplars();
            for e in cache.series.values_mut() {
                if e.seen == cur {
                    e.seen = cur - 1;
                }
            }
            (Some(e), Counts::default())
        }
    };
    cache.stale(app.as_mut(), t, false);
    report(
        cache,
        target,
        app.as_mut(),
        t,
        duration,
        error.is_none(),
        &counts,
    );
    match app.commit() {
        Ok(report) => {
            for (entry, series) in report.series_refs {
                let known = entries
                    .get(entry)
                    .and_then(|key| cache.series.get_mut(*key));
                if let Some(e) = known {
                    e.series = Some(series);
                }
            }
        }
        Err(e) => {
            cache.forget_exemplars();
            return Outcome {
                error: Some(e.to_string()),
                metadata: BTreeMap::new(),
            };
        }
    }
    Outcome { error, metadata }
}

const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn report(
    cache: &mut Cache,
    target: &Target,
    app: &mut dyn Appender,
    t: i64,
    duration: Duration,
    up: bool,
    c: &Counts,
) {
    if cache.report.is_empty() {
        cache.report = REPORT
            .iter()
            .map(|name| {
                let mut ls = target.labels.as_slice().to_vec();
                ls.push(Label::new(storage::METRIC_NAME, *name));
                Labels::new(ls)
            })
            .collect();
    }
    let values = [
        if up { 1.0 } else { 0.0 },
        duration.as_secs_f64(),
        c.scraped as f64,
        c.post_relabel as f64,
        c.added as f64,
    ];
    for (labels, v) in cache.report.iter().zip(values) {
        app.append(batch(labels.clone(), t, v));
    }
}

/// A family's metadata; a family with no `TYPE` line is `unknown`, as in Prometheus.
fn family_meta<'m>(m: &'m mut BTreeMap<String, Metadata>, family: &str) -> &'m mut Metadata {
    m.entry(family.to_string()).or_insert_with(|| Metadata {
        kind: "unknown".into(),
        ..Metadata::default()
    })
}

/// Parses the body and appends its samples; an error fails the whole scrape. `entries` gets
/// each appended entry's series text.
#[allow(clippy::too_many_arguments)]
fn samples<'f>(
    cache: &mut Cache,
    target: &Target,
    pool: &PoolShared,
    app: &mut dyn Appender,
    fetched: &'f Fetched,
    t: i64,
    metadata: &mut BTreeMap<String, Metadata>,
    entries: &mut Vec<&'f [u8]>,
) -> Result<Counts, String> {
    let raw = &pool.config.raw;
    let format = Format::from_content_type(fetched.content_type.as_deref());
    let mut parser = Parser::new(&fetched.body, format);
    let mut counts = Counts::default();
    let mut duplicates = 0usize;
    let mut out = EncodedBatch::new();
    let gen = cache.generation;
    while let Some(entry) = parser.next().map_err(|e| e.to_string())? {
        let s = match entry {
            Entry::Sample(s) => s,
            Entry::Type { family, kind } => {
                family_meta(metadata, family).kind = kind.as_str().into();
                continue;
            }
            Entry::Help { family, text } => {
                family_meta(metadata, family).help = text.into_owned();
                continue;
            }
            Entry::Unit { family, unit } => {
                family_meta(metadata, family).unit = unit.into();
                continue;
            }
        };
        counts.scraped += 1;
        let ts = match s.timestamp_ms {
            Some(ts) if raw.honor_timestamps => ts,
            _ => t,
        };
        let entry = match cache.series.get_mut(s.series) {
            Some(e) if e.seen == gen => {
                duplicates += 1;
                continue;
            }
            Some(e) => {
                e.seen = gen;
                e
            }
            None => {
                let labels = sample_labels(&s, target, pool)?;
                counts.added += 1;
                let explicit_ts = s.timestamp_ms.is_some()
                    && raw.honor_timestamps
                    && !raw.track_timestamps_staleness;
                cache.series.entry(s.series.into()).or_insert(CacheEntry {
                    labels: labels.as_ref().map(EncodedLabels::new),
                    series: None,
                    seen: gen,
                    first: gen,
                    explicit_ts,
                    untimed_exemplar: None,
                })
            }
        };
        let Some(labels) = &entry.labels else {
            continue;
        };
        counts.post_relabel += 1;
        if raw.sample_limit > 0 && counts.post_relabel > raw.sample_limit {
            return Err("sample limit exceeded".into());
        }
        out.push_encoded_ref(labels, entry.series, &[Sample { t: ts, v: s.value }]);
        if let Some(e) = s.exemplar.as_ref().and_then(|e| entry.exemplar(e, ts)) {
            out.add_exemplars([e]);
        }
        entries.push(s.series);
    }
    app.append_batch(out);
    if duplicates > 0 {
        tracing::debug!(target = %target.url(), duplicates, "duplicate series in one scrape: the first was kept");
    }
    Ok(counts)
}

/// An exemplar as the storage takes it (Prometheus's scrape loop): without a timestamp of its
/// own it gets its sample's, empty labels are left out (the appender's `WithoutEmpty`). The
/// storage judges it (label length, order, the per-series bound) and never fails the scrape.
fn exemplar(e: &super::exposition::Exemplar<'_>, sample_ts: i64) -> Exemplar {
    let mut pairs = Vec::new();
    e.for_each_label(|n, v| {
        if !v.is_empty() {
            pairs.push(Label::new(n, v));
        }
    });
    Exemplar {
        labels: Labels::new(pairs),
        value: e.value,
        t: e.timestamp_ms.unwrap_or(sample_ts),
    }
}

/// A sample's label set: its own labels with the target's (`honor_labels` deciding
/// conflicts), then `metric_relabel_configs`, then the label limits. `None`: dropped.
fn sample_labels(
    s: &super::exposition::Sample<'_>,
    target: &Target,
    pool: &PoolShared,
) -> Result<Option<Labels>, String> {
    let raw = &pool.config.raw;
    let mut exposed: Vec<Label> = vec![Label::new(storage::METRIC_NAME, s.name())];
    s.for_each_label(|n, v| {
        if !v.is_empty() {
            exposed.push(Label::new(n, v.into_owned()));
        }
    });
    let has = |ls: &[Label], n: &str| ls.iter().any(|l| l.name == n);
    let mut ls = exposed.clone();
    if raw.honor_labels {
        for l in target.labels.iter() {
            if !has(&ls, &l.name) {
                ls.push(l.clone());
            }
        }
    } else {
        let mut conflicts = Vec::new();
        for l in target.labels.iter() {
            if let Some(i) = ls.iter().position(|x| x.name == l.name) {
                conflicts.push(ls.remove(i));
            }
            ls.push(l.clone());
        }
        for c in conflicts {
            let mut name = format!("exported_{}", c.name);
            while has(&exposed, &name) || target.labels.get(&name).is_some() {
                name.insert_str(0, "exported_");
            }
            ls.retain(|l| l.name != name);
            ls.push(Label::new(name, c.value));
        }
    }
    let Some(ls) = relabel::process(ls, &pool.config.metric_relabel) else {
        return Ok(None);
    };
    let labels = Labels::new(ls);
    check_limits(&labels, raw)?;
    Ok(Some(labels))
}

/// Prometheus's label limit checks and messages (`%.50s`: names cut at 50 characters).
fn check_limits(labels: &Labels, raw: &super::config::ScrapeConfig) -> Result<(), String> {
    let metric = labels.metric_name().unwrap_or_default();
    let cut = |s: &str| s.chars().take(50).collect::<String>();
    if metric.is_empty() {
        return Err(
            "invalid metric name or label names: no metric name left after relabelling".into(),
        );
    }
    if raw.label_limit > 0 && labels.len() > raw.label_limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            cut(metric),
            labels.len(),
            raw.label_limit
        ));
    }
    for l in labels.iter() {
        if raw.label_name_length_limit > 0 && l.name.len() > raw.label_name_length_limit {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {}, limit: {})",
                cut(metric),
                cut(&l.name),
                l.name.len(),
                raw.label_name_length_limit
            ));
        }
        if raw.label_value_length_limit > 0 && l.value.len() > raw.label_value_length_limit {
            return Err(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {}, limit: {})",
                cut(metric),
                cut(&l.name),
                cut(&l.value),
                l.value.len(),
                raw.label_value_length_limit
            ));
        }
    }
    Ok(())
}
