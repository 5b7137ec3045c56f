//! One destination's queue, Prometheus's queue manager over novamon's outbox.
//!
//! A reader thread reads outbox records from the destination's acknowledged offset (blocking
//! RocksDB reads stay off the async workers), turns each series of a record into an [`Entry`]
//! (external labels added where missing, then `write_relabel_configs`), and hands it to the
//! shard its label set hashes to, so one series is always sent by one shard, in order. Each
//! shard is a task that batches up to `max_samples_per_send` or `batch_send_deadline`, sends,
//! and retries a batch until it is sent or refused; only then does it take the next. A shard
//! holds at most `capacity` samples: the reader waits for room, so memory is bounded however
//! long the backlog on disk, and ingest never waits for a receiver.
//!
//! The acknowledged offset moves to the first record with an entry not yet sent or refused,
//! after every batch: a restart (kill -9 included) resends only what was in flight. When the
//! backlog on disk passes `max_disk_usage`, the oldest unread records are passed over and
//! counted. Every 10 s the number of shards may double (the reader waited for room most of
//! the time while sends succeeded) or halve (it never waited), within
//! `min_shards..=max_shards`; shards are drained before their number changes, so per-series
//! order holds across it.

use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use storage::{Label, Metadata, Outbox, OutboxRecord};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::warn;

use super::config::Destination;
use super::metrics::QueueMetrics;
use super::send::{
    encode_metadata, encode_v1, encode_v2, Backoff, BodyKind, Client, Entry, Outcome,
};

/// Most bytes of records the reader decodes at once.
const READ_BYTES: usize = 1 << 20;
/// How long the reader sleeps when it has read everything (it is woken by new records).
const IDLE_WAIT: Duration = Duration::from_millis(250);
const RESHARD_PERIOD: Duration = Duration::from_secs(10);
/// How often the disk cap is checked while the reader waits for room in a shard.
const CAP_CHECK: Duration = Duration::from_secs(1);
/// Most label sets whose form as sent is kept (a few hundred bytes each).
const MAX_CACHED_LABEL_SETS: usize = 200_000;

/// Where metric metadata is read from, off the async workers.
pub(crate) type MetadataSource = Arc<dyn Fn() -> Vec<(String, Metadata)> + Send + Sync>;

/// A running queue.
pub(crate) struct Queue {
    pub(crate) dest: Arc<Destination>,
    pub(crate) shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    reader: Option<std::thread::JoinHandle<()>>,
    metadata: Option<tokio::task::JoinHandle<()>>,
}

/// What the reader, the shards and the status page share.
pub(crate) struct Shared {
    pub(crate) dest: Arc<Destination>,
    outbox: Outbox,
    pub(crate) metrics: QueueMetrics,
    progress: Mutex<Progress>,
    /// Still sending 2.0: cleared for good by the spec's fallback.
    v2: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Errors are logged at most once per this period, however many batches fail.
    log_throttle: Mutex<Option<Instant>>,
}

/// Which records still have entries on their way.
#[derive(Default)]
struct Progress {
    /// Record → entries not yet sent or refused.
    outstanding: BTreeMap<u64, usize>,
    /// Every record below this was handed to the shards whole.
    read_upto: u64,
    acked: u64,
}

impl Shared {
    fn new(dest: Arc<Destination>, outbox: Outbox, metrics: QueueMetrics, start: u64) -> Shared {
        Shared {
            v2: AtomicBool::new(dest.v2),
            dest,
            outbox,
            metrics,
            progress: Mutex::new(Progress {
                outstanding: BTreeMap::new(),
                read_upto: start,
                acked: start,
            }),
            last_error: Mutex::new(None),
            log_throttle: Mutex::new(None),
        }
    }

    pub(crate) fn protocol(&self) -> &'static str {
        if self.v2.load(Ordering::Relaxed) {
            "2.0"
        } else {
            "1.0"
        }
    }

    /// Marks the entries done and moves the acknowledged offset if it can.
    fn complete(&self, entries: &[Entry]) {
        let target = {
            let mut p = self.progress.lock();
            for e in entries {
                if let Some(n) = p.outstanding.get_mut(&e.seq) {
                    *n -= 1;
                    if *n == 0 {
                        p.outstanding.remove(&e.seq);
                    }
                }
            }
            p.target()
        };
        self.ack(target);
    }

    fn ack(&self, target: Option<u64>) {
        if let Some(t) = target {
            if let Err(e) = self.outbox.ack(&self.dest.key, t) {
                self.error(format!("recording the acknowledged offset: {e}"));
            }
        }
    }

    fn error(&self, why: String) {
        let now = Instant::now();
        let mut last = self.log_throttle.lock();
        if last.is_none_or(|l| now.duration_since(l) >= Duration::from_secs(10)) {
            *last = Some(now);
            warn!(remote_name = %self.dest.name, url = %self.dest.raw.url, "remote write: {why}");
        }
        *self.last_error.lock() = Some(why);
    }
}

impl Progress {
    /// The new acknowledged offset, if it moved.
    fn target(&mut self) -> Option<u64> {
        let t = self
            .outstanding
            .keys()
            .next()
            .map_or(self.read_upto, |&k| k.min(self.read_upto));
        (t > self.acked).then(|| {
            self.acked = t;
            t
        })
    }
}

impl Queue {
    /// Starts reading the outbox from the destination's offset (registered already).
    pub(crate) fn start(
        dest: Arc<Destination>,
        outbox: Outbox,
        metrics: QueueMetrics,
        metadata: MetadataSource,
    ) -> std::io::Result<Queue> {
        let start = outbox.offset(&dest.key).unwrap_or_else(|| outbox.end());
        let q = &dest.raw.queue_config;
        metrics.shards_min.set(q.min_shards as i64);
        metrics.shards_max.set(q.max_shards as i64);
        metrics.capacity.set(q.capacity as i64);
        metrics
            .max_samples_per_send
            .set(q.max_samples_per_send as i64);
        let shared = Arc::new(Shared::new(dest.clone(), outbox, metrics, start));
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Handle::current();
        let reader = {
            let shared = shared.clone();
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("remote-write-{}", dest.name))
                .spawn(move || Reader::new(shared, runtime, stopped, start).run())?
        };
        // Requests of metadata alone are 1.0's; 2.0 would carry it inside each series, which
        // this sender does not fill in.
        let metadata = (dest.raw.metadata_config.send && !dest.v2)
            .then(|| tokio::spawn(send_metadata(shared.clone(), metadata, stopped)));
        Ok(Queue {
            dest,
            shared,
            stop,
            reader: Some(reader),
            metadata,
        })
    }

    /// Stops reading and sending. What was in flight is not acknowledged: it is sent again
    /// when the destination starts again.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(m) = self.metadata.take() {
            m.abort();
        }
        if let Some(r) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
    }
}

/// The shards of one period between reshardings.
struct Shards {
    senders: Vec<mpsc::UnboundedSender<Chunk>>,
    room: Vec<Arc<Semaphore>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Shards {
    fn spawn(
        n: usize,
        shared: &Arc<Shared>,
        runtime: &tokio::runtime::Handle,
        stopped: &watch::Receiver<bool>,
    ) -> Shards {
        let capacity = shared.dest.raw.queue_config.capacity;
        let mut shards = Shards {
            senders: Vec::with_capacity(n),
            room: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let room = Arc::new(Semaphore::new(capacity));
            shards.tasks.push(runtime.spawn(run_shard(
                shared.clone(),
                rx,
                room.clone(),
                stopped.clone(),
            )));
            shards.senders.push(tx);
            shards.room.push(room);
        }
        shared.metrics.shards.set(n as i64);
        shards
    }

    fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

struct Reader {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    stopped: watch::Receiver<bool>,
    cursor: u64,
    hasher: foldhash::fast::RandomState,
    /// Time spent waiting for room in a shard since the last resharding decision.
    waited: Duration,
    /// Samples retried at the last decision: a queue retrying is not short of shards.
    retried_at_decision: u64,
    /// Records below this were passed over by the disk cap.
    skip_below: u64,
    /// Label set as stored → as sent, with its hash (None: dropped by relabelling).
    cache: foldhash::HashMap<Box<[u8]>, SentLabels>,
}

impl Reader {
    fn new(
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
        stopped: watch::Receiver<bool>,
        cursor: u64,
    ) -> Reader {
        Reader {
            shared,
            runtime,
            stopped,
            cursor,
            hasher: foldhash::fast::RandomState::default(),
            waited: Duration::ZERO,
            retried_at_decision: 0,
            skip_below: 0,
            cache: foldhash::HashMap::default(),
        }
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    fn run(mut self) {
        let q = self.shared.dest.raw.queue_config.clone();
        let mut n = q.min_shards;
        let mut shards = Shards::spawn(n, &self.shared, &self.runtime, &self.stopped);
        let mut decided = Instant::now();
        while !self.stopping() {
            self.enforce_disk_cap(self.cursor);
            let records = match self.shared.outbox.read(self.cursor, READ_BYTES) {
                Ok(r) => r,
                Err(e) => {
                    self.shared.error(format!("reading the outbox: {e}"));
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if records.is_empty() {
                self.shared.outbox.wait(self.cursor, IDLE_WAIT);
            }
            for r in records {
                // Passed over by the disk cap while an earlier record waited for room.
                if r.seq < self.skip_below {
                    continue;
                }
                if !self.dispatch(r, &shards) {
                    break;
                }
            }
            let target = self.shared.progress.lock().target();
            self.shared.ack(target);
            if decided.elapsed() >= RESHARD_PERIOD {
                let want = self.desired_shards(n, decided.elapsed());
                decided = Instant::now();
                if want != n && self.drain() {
                    shards.abort();
                    n = want;
                    shards = Shards::spawn(n, &self.shared, &self.runtime, &self.stopped);
                }
            }
        }
        shards.abort();
    }

    fn desired_shards(&mut self, n: usize, period: Duration) -> usize {
        let q = &self.shared.dest.raw.queue_config;
        let retried = self.shared.metrics.retried.get();
        let failing = retried != self.retried_at_decision;
        self.retried_at_decision = retried;
        let waited = std::mem::take(&mut self.waited);
        if failing {
            n
        } else if waited * 2 > period {
            (n * 2).min(q.max_shards)
        } else if waited.is_zero() {
            (n / 2).max(q.min_shards)
        } else {
            n
        }
    }

    /// Waits until every entry handed out is sent or refused; false when stopping first.
    fn drain(&self) -> bool {
        while !self.shared.progress.lock().outstanding.is_empty() {
            if self.stopping() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Passes over the oldest unread records from `from` on while the backlog is over
    /// `max_disk_usage`.
    fn enforce_disk_cap(&mut self, from: u64) {
        if let Err(e) = self.try_enforce_disk_cap(from) {
            self.shared.error(format!("reading the outbox: {e}"));
        }
    }

    fn try_enforce_disk_cap(&mut self, from: u64) -> Result<(), storage::StorageError> {
        let outbox = &self.shared.outbox;
        let backlog = outbox.backlog_bytes(from)?;
        self.shared.metrics.outbox_bytes.set(backlog as i64);
        let cap = self.shared.dest.raw.max_disk_usage;
        if backlog <= cap {
            return Ok(());
        }
        let skipped = outbox.skip(from, backlog - cap)?;
        self.shared.metrics.outbox_dropped.inc_by(skipped.items);
        self.shared.error(format!(
            "backlog over max_disk_usage ({cap} bytes): dropped the oldest {} samples",
            skipped.items
        ));
        self.skip_below = self.skip_below.max(skipped.next);
        self.cursor = self.cursor.max(skipped.next);
        // Safe while a record below is still being handed out: it is in `outstanding`.
        let mut p = self.shared.progress.lock();
        p.read_upto = p.read_upto.max(skipped.next);
        Ok(())
    }

    /// A series' labels as sent (external labels, relabelling, sorted) and their hash, or
    /// None when relabelling drops it; computed once per label set.
    fn prepared(&mut self, series: storage::EncodedSeries<'_>) -> SentLabels {
        let label_bytes = series.label_bytes();
        if let Some(p) = self.cache.get(label_bytes) {
            return p.clone();
        }
        let dest = &self.shared.dest;
        let mut labels = series.labels().into_vec();
        for l in &dest.external_labels {
            if !labels.iter().any(|x| x.name == l.name) {
                labels.push(l.clone());
            }
        }
        let prepared = storage::relabel::process(labels, &dest.relabel).map(|mut labels| {
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let hash = self.hasher.hash_one(&labels);
            (Arc::<[Label]>::from(labels), hash)
        });
        // Bounded: a churn of label sets starts the cache afresh rather than growing it.
        if self.cache.len() >= MAX_CACHED_LABEL_SETS {
            self.cache.clear();
        }
        self.cache.insert(label_bytes.into(), prepared.clone());
        prepared
    }

    /// Hands a record's entries to their shards; false when stopping.
    fn dispatch(&mut self, record: OutboxRecord, shards: &Shards) -> bool {
        let shared = self.shared.clone();
        let dest = &shared.dest;
        let metrics = &shared.metrics;
        let n = shards.senders.len();
        let mut groups: Vec<Vec<Entry>> = (0..n).map(|_| Vec::new()).collect();
        let mut count = 0;
        let mut highest = i64::MIN;
        for s in record.batch.iter() {
            let Some((labels, hash)) = self.prepared(s) else {
                metrics.dropped.inc_by(s.samples.len() as u64);
                continue;
            };
            let e = Entry {
                seq: record.seq,
                labels,
                samples: s.samples.to_vec(),
                histograms: match dest.raw.send_native_histograms {
                    true => s.histograms.to_vec(),
                    false => Vec::new(),
                },
                exemplars: match dest.raw.send_exemplars {
                    true => s.exemplars.to_vec(),
                    false => Vec::new(),
                },
            };
            if e.samples.is_empty() && e.histograms.is_empty() && e.exemplars.is_empty() {
                continue;
            }
            highest = e
                .samples
                .iter()
                .map(|x| x.t)
                .chain(e.histograms.iter().map(|h| h.t))
                .fold(highest, i64::max);
            groups[(hash % n as u64) as usize].push(e);
            count += 1;
        }
        if highest > i64::MIN {
            let secs = highest as f64 / 1000.0;
            if secs > metrics.highest_read.get() {
                metrics.highest_read.set(secs);
            }
        }
        if count > 0 {
            self.shared
                .progress
                .lock()
                .outstanding
                .insert(record.seq, count);
        }
        let capacity = dest.raw.queue_config.capacity;
        for (shard, entries) in groups.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let weight: usize = entries.iter().map(Entry::weight).sum();
            // More than a shard holds goes in at once when the shard is empty.
            let permits = weight.min(capacity);
            let room = &shards.room[shard];
            if let Ok(p) = room.try_acquire_many(permits as u32) {
                p.forget();
            } else {
                let waiting = Instant::now();
                loop {
                    let room = room.clone();
                    let mut stopped = self.stopped.clone();
                    let got = self.runtime.block_on(async move {
                        tokio::select! {
                            permit = room.acquire_many(permits as u32) => {
                                Some(permit.map(|p| p.forget()).is_ok())
                            }
                            _ = stopped.wait_for(|s| *s) => Some(false),
                            _ = tokio::time::sleep(CAP_CHECK) => None,
                        }
                    });
                    match got {
                        Some(true) => break,
                        Some(false) => return false,
                        // While the shards cannot take more, the backlog behind this record
                        // still grows: keep it within the cap.
                        None => self.enforce_disk_cap(record.seq + 1),
                    }
                }
                self.waited += waiting.elapsed();
            }
            metrics.pending.inc_by(weight as i64);
            if shards.senders[shard]
                .send(Chunk { entries, permits })
                .is_err()
            {
                return false;
            }
        }
        self.cursor = self.cursor.max(record.seq + 1);
        let mut p = self.shared.progress.lock();
        p.read_upto = p.read_upto.max(self.cursor);
        true
    }
}

/// A series' labels as sent and their hash; None when relabelling drops the series.
type SentLabels = Option<(Arc<[Label]>, u64)>;

/// One record's entries for one shard, and the room they took in it.
struct Chunk {
    entries: Vec<Entry>,
    permits: usize,
}

/// One shard: batches its entries and sends each batch to completion, in order.
async fn run_shard(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    room: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let q = shared.dest.raw.queue_config.clone();
    let mut client = Client::default();
    // Entries received, each with the room freed once it is sent (a chunk's, on its last).
    let mut queued: VecDeque<(Entry, usize)> = VecDeque::new();
    let mut open = true;
    loop {
        if queued.is_empty() {
            match rx.recv().await {
                Some(c) => queue_chunk(&mut queued, c),
                None => return,
            }
        }
        let deadline = tokio::time::Instant::now() + q.batch_send_deadline;
        while open && queued.iter().map(|(e, _)| e.weight()).sum::<usize>() < q.max_samples_per_send
        {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => queue_chunk(&mut queued, c),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut batch = Vec::new();
        let (mut weight, mut freed) = (0, 0);
        while let Some((e, permits)) = queued.pop_front() {
            weight += e.weight();
            freed += permits;
            batch.push(e);
            if weight >= q.max_samples_per_send {
                break;
            }
        }
        if !send_batch(&shared, &mut client, &batch, &mut stopped).await {
            return;
        }
        room.add_permits(freed);
        shared.metrics.pending.dec_by(weight as i64);
        shared.complete(&batch);
        if !open && queued.is_empty() {
            return;
        }
    }
}

fn queue_chunk(queued: &mut VecDeque<(Entry, usize)>, chunk: Chunk) {
    let last = chunk.entries.len().saturating_sub(1);
    for (i, e) in chunk.entries.into_iter().enumerate() {
        queued.push_back((e, if i == last { chunk.permits } else { 0 }));
    }
}

/// The 2.42 receiver's words for samples refused one by one (the whole request rolled
/// back): a batch resent after a restart may hold samples it already has beside new ones.
fn refused_per_sample(why: &str) -> bool {
    [
        "out of order sample",
        "duplicate sample for timestamp",
        "out of bounds",
    ]
    .iter()
    .any(|m| why.contains(m))
}

/// Sends a batch until it is sent or refused; false when stopping first. A 400 that names
/// per-sample refusals is resent in halves, so that only the refused entries are dropped.
async fn send_batch(
    shared: &Shared,
    client: &mut Client,
    batch: &[Entry],
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let mut parts = vec![batch];
    while let Some(part) = parts.pop() {
        match send_part(shared, client, part, stopped).await {
            Delivery::Done => {}
            Delivery::Stopped => return false,
            Delivery::Split => {
                let (a, b) = part.split_at(part.len() / 2);
                // The first half first: a series in both keeps its order.
                parts.push(b);
                parts.push(a);
            }
        }
    }
    true
}

enum Delivery {
    Done,
    Stopped,
    Split,
}

async fn send_part(
    shared: &Shared,
    client: &mut Client,
    part: &[Entry],
    stopped: &mut watch::Receiver<bool>,
) -> Delivery {
    let dest = &shared.dest;
    let q = &dest.raw.queue_config;
    let m = &shared.metrics;
    let samples: u64 = part.iter().map(|e| e.samples.len() as u64).sum();
    let histograms: u64 = part.iter().map(|e| e.histograms.len() as u64).sum();
    let exemplars: u64 = part.iter().map(|e| e.exemplars.len() as u64).sum();
    let mut v2 = shared.v2.load(Ordering::Relaxed);
    let encode = |v2: bool| if v2 { encode_v2(part) } else { encode_v1(part) };
    let mut body: Bytes = encode(v2);
    let mut backoff = Backoff::new(q.min_backoff, q.max_backoff);
    loop {
        if *stopped.borrow() {
            return Delivery::Stopped;
        }
        let outcome = client
            .post(
                &dest.endpoint,
                body.clone(),
                BodyKind::RemoteWrite { v2 },
                q.retry_on_http_429,
            )
            .await;
        let fallback = matches!(
            outcome,
            Outcome::Sent {
                counts_reported: false,
                ..
            } | Outcome::Refused { status: 415, .. }
        );
        if v2 && fallback {
            // The spec's fallback: the receiver does not speak 2.0 (a 1.0 receiver reads a
            // 2.0 body as empty and answers 2xx without the written counts).
            shared.v2.store(false, Ordering::Relaxed);
            warn!(remote_name = %dest.name, "receiver does not speak remote-write 2.0: sending 1.0");
            v2 = false;
            body = encode(false);
            continue;
        }
        match outcome {
            Outcome::Sent { .. } => {
                m.samples.inc_by(samples);
                m.histograms.inc_by(histograms);
                m.exemplars.inc_by(exemplars);
                m.bytes.inc_by(body.len() as u64);
                let highest = part
                    .iter()
                    .flat_map(|e| e.samples.iter().map(|s| s.t))
                    .max();
                if let Some(t) = highest {
                    let secs = t as f64 / 1000.0;
                    if secs > m.highest_sent.get() {
                        m.highest_sent.set(secs);
                    }
                }
                *shared.last_error.lock() = None;
                return Delivery::Done;
            }
            Outcome::Refused { status, why } => {
                if status == 400 && part.len() > 1 && refused_per_sample(&why) {
                    return Delivery::Split;
                }
                m.failed.inc_by(samples + histograms);
                shared.error(format!(
                    "non-recoverable error, dropping {samples} samples: {why}"
                ));
                return Delivery::Done;
            }
            Outcome::Retry { after, why } => {
                m.retried.inc_by(samples + histograms);
                shared.error(format!("recoverable error, retrying: {why}"));
                let wait = backoff.wait(after);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.wait_for(|s| *s) => return Delivery::Stopped,
                }
            }
        }
    }
}

/// Every `send_interval`, every metric family's metadata in 1.0 requests of at most
/// `max_samples_per_send` entries; a request is retried until the next round is due.
async fn send_metadata(
    shared: Arc<Shared>,
    source: MetadataSource,
    mut stopped: watch::Receiver<bool>,
) {
    let dest = &shared.dest;
    let mc = &dest.raw.metadata_config;
    let q = &dest.raw.queue_config;
    let mut client = Client::default();
    let mut tick = tokio::time::interval(mc.send_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let round = tokio::time::Instant::now() + mc.send_interval;
        let source = source.clone();
        let Ok(families) = tokio::task::spawn_blocking(move || source()).await else {
            continue;
        };
        for chunk in families.chunks(mc.max_samples_per_send) {
            let body = encode_metadata(chunk);
            let mut backoff = q.min_backoff;
            loop {
                match client
                    .post(
                        &dest.endpoint,
                        body.clone(),
                        BodyKind::RemoteWrite { v2: false },
                        q.retry_on_http_429,
                    )
                    .await
                {
                    Outcome::Sent { .. } => {
                        shared.metrics.metadata.inc_by(chunk.len() as u64);
                        break;
                    }
                    Outcome::Retry { .. } if tokio::time::Instant::now() + backoff < round => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(q.max_backoff);
                    }
                    Outcome::Retry { why, .. } | Outcome::Refused { why, .. } => {
                        shared.metrics.metadata_failed.inc_by(chunk.len() as u64);
                        shared.error(format!("sending metadata: {why}"));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_waits_for_the_oldest_record_in_flight() {
        let mut p = Progress {
            read_upto: 10,
            acked: 10,
            ..Progress::default()
        };
        p.outstanding.insert(10, 2);
        p.outstanding.insert(12, 1);
        p.read_upto = 13;
        assert_eq!(p.target(), None);
        p.outstanding.remove(&10);
        assert_eq!(p.target(), Some(12));
        p.outstanding.remove(&12);
        assert_eq!(p.target(), Some(13));
        assert_eq!(p.target(), None);
    }

    /// External labels are added where the series lacks them, then `write_relabel_configs`
    /// apply; a dropped series is remembered as dropped; each label set is prepared once.
    #[tokio::test]
    async fn series_are_sent_with_external_labels_after_relabelling() {
        use storage::{Labels, Sample, SeriesBatch};
        let dir = tempfile::tempdir().unwrap();
        let tsdb = storage::Tsdb::open(
            dir.path(),
            storage::TsdbOptions {
                flush_interval: Duration::ZERO,
                ..storage::TsdbOptions::default()
            },
        )
        .unwrap();
        let cfg: super::super::RemoteWriteConfig = serde_yaml::from_str(
            "url: http://x/\nwrite_relabel_configs:\n  - {source_labels: [__name__], regex: dropped, action: drop}\n  - {source_labels: [edge], target_label: site, replacement: 'site-$1'}\n",
        )
        .unwrap();
        let external = BTreeMap::from([
            ("edge".to_string(), "e1".to_string()),
            ("job".to_string(), "external".to_string()),
        ]);
        let prepared = super::super::Prepared::new(&[cfg], &external).unwrap();
        let dest = prepared.destinations[0].clone();
        let metrics = super::super::metrics::ForwardMetrics::default().queue(
            super::super::metrics::QueueLabels {
                remote_name: "t".into(),
                url: "http://x/".into(),
            },
        );
        let shared = Arc::new(Shared::new(dest, tsdb.outbox(), metrics, 0));
        let (_stop, stopped) = watch::channel(false);
        let mut reader = Reader::new(shared, tokio::runtime::Handle::current(), stopped, 0);
        let series = |pairs: &[(&str, &str)]| SeriesBatch {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: vec![Sample { t: 1, v: 1.0 }],
            histograms: Vec::new(),
        };
        let batch = storage::EncodedBatch::from(vec![
            series(&[("__name__", "up"), ("job", "node")]),
            series(&[("__name__", "dropped")]),
        ]);
        let entries: Vec<_> = batch.iter().collect();
        let (labels, _) = reader.prepared(entries[0]).unwrap();
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        // The series' own job wins over the external one; relabelling sees the external edge.
        assert_eq!(
            pairs,
            [
                ("__name__", "up"),
                ("edge", "e1"),
                ("job", "node"),
                ("site", "site-e1")
            ]
        );
        assert!(reader.prepared(entries[1]).is_none());
        let (again, _) = reader.prepared(entries[0]).unwrap();
        assert!(Arc::ptr_eq(&labels, &again));
    }

    #[test]
    fn per_sample_refusals_are_told_from_other_400s() {
        assert!(refused_per_sample(
            "server returned HTTP status 400: out of order sample"
        ));
        assert!(!refused_per_sample(
            "server returned HTTP status 400: snappy: corrupt input"
        ));
    }
}
