//! One `forward:` destination's queue: its store's outbox read from the destination's
//! acknowledged offset, each record's lines (or resources' spans) kept when the selector
//! takes them, sent in batches of at most `max_items_per_send` by one sender, so every
//! stream's lines and every resource's spans leave in the order they were stored: POSTed over
//! HTTP (Loki push, OTLP/HTTP) or exported over gRPC (OTLP). A batch is retried (5xx, 429
//! when configured, transport errors, gRPC's retryable codes; after `Retry-After` or
//! `RetryInfo` when given, else with capped exponential back-off) until sent or refused
//! (other 4xx, other gRPC codes: dropped, counted). Items a receiver reports rejected in an
//! OTLP partial success are counted as failed.
//!
//! After each batch the acknowledged offset moves to the first record with an item not yet
//! sent: a restart (kill -9 included) resends at most the batch in flight and the rest of its
//! records. At most one read (1 MiB of records) and one batch are held in memory however long
//! the backlog, and ingest never waits for this queue. When the backlog on disk passes
//! `max_disk_usage`, the oldest unread records are passed over and counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;
use storage::{OutboxLog, StorageError};
use tokio::sync::watch;
use tracing::warn;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

use super::grpc::{self, Export};
use super::metrics::SignalQueueMetrics;
use super::send::{Backoff, BodyKind, Client, Outcome};
use super::signal_config::{Protocol, Signal, SignalDestination};
use super::signal_send::{encode_loki, otlp_logs, otlp_traces, Item};

/// Most bytes of records read at once.
const READ_BYTES: usize = 1 << 20;
/// How long the queue waits for new records before it looks again (it is woken by them).
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// What the queue and the status page share.
pub(crate) struct SignalShared {
    pub(crate) dest: Arc<SignalDestination>,
    pub(crate) outbox: OutboxLog,
    pub(crate) metrics: SignalQueueMetrics,
    pub(crate) last_error: Mutex<Option<String>>,
    log_throttle: Mutex<Option<Instant>>,
}

impl SignalShared {
    fn error(&self, why: String) {
        let now = Instant::now();
        let mut last = self.log_throttle.lock();
        if last.is_none_or(|l| now.duration_since(l) >= Duration::from_secs(10)) {
            *last = Some(now);
            warn!(remote_name = %self.dest.raw.name, url = %self.dest.raw.url, signal = self.dest.signal.as_str(), "forward: {why}");
        }
        *self.last_error.lock() = Some(why);
    }
}

/// A running queue.
pub(crate) struct SignalQueue {
    pub(crate) shared: Arc<SignalShared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SignalQueue {
    /// Starts sending from the destination's offset (registered already).
    pub(crate) fn start(
        dest: Arc<SignalDestination>,
        outbox: OutboxLog,
        metrics: SignalQueueMetrics,
    ) -> SignalQueue {
        let shared = Arc::new(SignalShared {
            dest,
            outbox,
            metrics,
            last_error: Mutex::new(None),
            log_throttle: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), stopped));
        SignalQueue { shared, stop, task }
    }

    /// Stops sending; what was in flight is sent again when the destination starts again.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Runs a blocking outbox call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| format!("reading the outbox: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// How a receiver answered one batch, over either transport.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    /// Taken, but for `rejected` items the receiver dropped (a `partial_success`).
    Taken {
        rejected: u64,
        why: Option<String>,
    },
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Refused {
        why: String,
    },
}

impl Answer {
    /// A batch the receiver took, with the `partial_success` of its OTLP answer if any: the
    /// rejected items are counted failed and its message kept as the last error.
    pub(crate) fn taken(partial: Option<(i64, String)>) -> Answer {
        match partial {
            None => Answer::Taken {
                rejected: 0,
                why: None,
            },
            Some((rejected, message)) => Answer::Taken {
                rejected: rejected.max(0) as u64,
                why: (rejected > 0 || !message.is_empty())
                    .then(|| format!("partial success: {rejected} rejected: {message}")),
            },
        }
    }
}

/// A trace export answer's `partial_success`: (items rejected, message).
pub(crate) fn traces_partial(answer: ExportTraceServiceResponse) -> Option<(i64, String)> {
    answer
        .partial_success
        .map(|p| (p.rejected_spans, p.error_message))
}

/// A log export answer's `partial_success`: (items rejected, message).
pub(crate) fn logs_partial(answer: ExportLogsServiceResponse) -> Option<(i64, String)> {
    answer
        .partial_success
        .map(|p| (p.rejected_log_records, p.error_message))
}

/// The `partial_success` of an OTLP/HTTP answer (protobuf, as the request was), which the
/// specification has a receiver give over HTTP as over gRPC. A body that does not decode is
/// taken as none: the status said the batch was taken.
fn otlp_http_partial(signal: Signal, body: &[u8]) -> Option<(i64, String)> {
    match signal {
        Signal::Traces => traces_partial(ExportTraceServiceResponse::decode(body).ok()?),
        Signal::Logs => logs_partial(ExportLogsServiceResponse::decode(body).ok()?),
    }
}

impl From<Outcome> for Answer {
    fn from(o: Outcome) -> Answer {
        match o {
            Outcome::Sent { .. } => Answer::taken(None),
            Outcome::Retry { after, why } => Answer::Retry { after, why },
            Outcome::Refused { why, .. } => Answer::Refused { why },
        }
    }
}

/// How a destination's batches go out: POSTs over HTTP/1.1, or OTLP exports over a gRPC
/// channel.
enum Transport {
    Http(Client),
    Grpc(tonic::transport::Channel),
}

/// A batch as its destination's protocol carries it, built once for all its tries.
enum Payload {
    Http { body: Bytes, kind: BodyKind },
    Grpc(Export),
}

impl Transport {
    fn new(dest: &SignalDestination) -> Transport {
        match &dest.grpc {
            Some(target) => Transport::Grpc(target.channel()),
            None => Transport::Http(Client::default()),
        }
    }

    fn payload(dest: &SignalDestination, batch: &[Item]) -> Payload {
        let http = |body, kind| Payload::Http { body, kind };
        match (dest.signal, dest.raw.protocol) {
            (Signal::Logs, Protocol::Loki) => http(encode_loki(batch), BodyKind::LokiPush),
            (Signal::Logs, Protocol::OtlpHttp) => http(
                Bytes::from(otlp_logs(batch).encode_to_vec()),
                BodyKind::Otlp,
            ),
            (Signal::Traces, Protocol::OtlpHttp | Protocol::Loki) => http(
                Bytes::from(otlp_traces(batch).encode_to_vec()),
                BodyKind::Otlp,
            ),
            (Signal::Logs, Protocol::OtlpGrpc) => Payload::Grpc(Export::Logs(otlp_logs(batch))),
            (Signal::Traces, Protocol::OtlpGrpc) => {
                Payload::Grpc(Export::Traces(otlp_traces(batch)))
            }
        }
    }

    async fn send(&mut self, dest: &SignalDestination, payload: &Payload) -> Answer {
        let retry_on_429 = dest.raw.queue_config.retry_on_http_429;
        match (self, payload) {
            (Transport::Http(client), Payload::Http { body, kind }) => {
                match client
                    .post(&dest.endpoint, body.clone(), *kind, retry_on_429)
                    .await
                {
                    Outcome::Sent { body, .. } if *kind == BodyKind::Otlp => {
                        Answer::taken(otlp_http_partial(dest.signal, &body))
                    }
                    outcome => outcome.into(),
                }
            }
            (Transport::Grpc(channel), Payload::Grpc(export)) => {
                grpc::export(channel, &dest.endpoint, export).await
            }
            _ => unreachable!("a destination's payload is built for its transport"),
        }
    }
}

impl Payload {
    /// Bytes sent (before HTTP's or gRPC's framing).
    fn len(&self) -> usize {
        match self {
            Payload::Http { body, .. } => body.len(),
            Payload::Grpc(export) => export.encoded_len(),
        }
    }
}

/// An item and the outbox record it came from.
struct Queued {
    seq: u64,
    item: Item,
}

/// The selected items of one record.
fn select(dest: &SignalDestination, body: &[u8]) -> Result<Vec<Item>, StorageError> {
    Ok(match dest.signal {
        Signal::Logs => storage::logs::outbox_records(body)?
            .into_iter()
            .filter(|r| dest.selector.stream(&r.labels))
            .map(Item::Line)
            .collect(),
        Signal::Traces => storage::traces::outbox_spans(body)?
            .into_iter()
            .filter(|rs| {
                let attributes = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                dest.selector
                    .service(storage::traces::service_name(attributes))
            })
            .map(Item::Spans)
            .collect(),
    })
}

async fn run(shared: Arc<SignalShared>, mut stopped: watch::Receiver<bool>) {
    let dest = shared.dest.clone();
    let key = dest.key();
    let outbox = shared.outbox.clone();
    let q = dest.raw.queue_config.clone();
    let mut cursor = outbox.offset(&key).unwrap_or_else(|| outbox.end());
    let mut queued: VecDeque<Queued> = VecDeque::new();
    let mut queued_weight = 0usize;
    // When the oldest queued item was read: a partial batch goes once this is
    // `batch_send_deadline` old.
    let mut oldest: Option<Instant> = None;
    let mut transport = Transport::new(&dest);
    while !*stopped.borrow() {
        if queued_weight < q.max_items_per_send {
            if let Err(e) = enforce_disk_cap(&shared, &mut cursor).await {
                shared.error(e);
            }
            let from = cursor;
            let read = {
                let outbox = outbox.clone();
                blocking(move || outbox.read(from, READ_BYTES)).await
            };
            let records = match read {
                Ok(r) => r,
                Err(e) => {
                    shared.error(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let got = !records.is_empty();
            for (seq, body) in records {
                match select(&dest, &body) {
                    Ok(items) => {
                        for item in items {
                            queued_weight += item.weight();
                            shared.metrics.pending.inc_by(item.weight() as i64);
                            queued.push_back(Queued { seq, item });
                        }
                    }
                    // A record that cannot be read cannot be sent either: passed over, said.
                    Err(e) => shared.error(format!("skipping outbox record {seq}: {e}")),
                }
                cursor = seq + 1;
            }
            if queued.is_empty() {
                ack(&shared, &key, cursor);
                if !got {
                    let outbox = outbox.clone();
                    let wait = blocking(move || Ok(outbox.wait(from, IDLE_WAIT)));
                    tokio::select! {
                        _ = wait => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                }
                continue;
            }
            let since = *oldest.get_or_insert_with(Instant::now);
            if !got && queued_weight < q.max_items_per_send {
                let left = q.batch_send_deadline.saturating_sub(since.elapsed());
                if !left.is_zero() {
                    let outbox = outbox.clone();
                    let wait = blocking(move || Ok(outbox.wait(from, left)));
                    tokio::select! {
                        _ = wait => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    continue;
                }
            } else if got && queued_weight < q.max_items_per_send {
                continue;
            }
        }
        let mut batch = Vec::new();
        let mut weight = 0;
        while let Some(front) = queued.front() {
            let w = front.item.weight();
            if !batch.is_empty() && weight + w > q.max_items_per_send {
                break;
            }
            weight += w;
            batch.push(queued.pop_front().expect("front exists").item);
        }
        queued_weight -= weight;
        if !send(&shared, &mut transport, &batch, weight as u64, &mut stopped).await {
            return;
        }
        shared.metrics.pending.dec_by(weight as i64);
        oldest = (!queued.is_empty()).then(Instant::now);
        // Every record below the first one still queued is sent whole.
        ack(&shared, &key, queued.front().map_or(cursor, |f| f.seq));
    }
}

fn ack(shared: &SignalShared, key: &str, upto: u64) {
    if let Err(e) = shared.outbox.ack(key, upto) {
        shared.error(format!("recording the acknowledged offset: {e}"));
    }
}

/// Passes over the oldest unread records while the backlog from `cursor` is over
/// `max_disk_usage`.
async fn enforce_disk_cap(shared: &SignalShared, cursor: &mut u64) -> Result<(), String> {
    let from = *cursor;
    let cap = shared.dest.raw.max_disk_usage;
    let outbox = shared.outbox.clone();
    let (backlog, skipped) = blocking(move || {
        let backlog = outbox.backlog_bytes(from)?;
        let skipped = if backlog > cap {
            Some(outbox.skip_parts(from, backlog - cap)?)
        } else {
            None
        };
        Ok((backlog, skipped))
    })
    .await?;
    shared.metrics.outbox_bytes.set(backlog as i64);
    if let Some(s) = skipped {
        shared.metrics.dropped.inc_by(s.items);
        *cursor = s.next;
        shared.error(format!(
            "backlog over max_disk_usage ({cap} bytes): dropped the oldest {} {}",
            s.items,
            if shared.dest.signal == Signal::Logs {
                "lines"
            } else {
                "spans"
            },
        ));
    }
    Ok(())
}

/// Sends a batch until it is sent or refused; false when stopping first.
async fn send(
    shared: &SignalShared,
    transport: &mut Transport,
    batch: &[Item],
    weight: u64,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let dest = &shared.dest;
    let q = &dest.raw.queue_config;
    let m = &shared.metrics;
    let payload = Transport::payload(dest, batch);
    let mut backoff = Backoff::new(q.min_backoff, q.max_backoff);
    loop {
        if *stopped.borrow() {
            return false;
        }
        match transport.send(dest, &payload).await {
            Answer::Taken { rejected, why } => {
                let rejected = rejected.min(weight);
                m.sent.inc_by(weight - rejected);
                m.failed.inc_by(rejected);
                m.bytes.inc_by(payload.len() as u64);
                if let Some(t) = batch.iter().map(Item::newest_ns).max() {
                    let secs = t as f64 / 1e9;
                    if secs > m.highest_sent.get() {
                        m.highest_sent.set(secs);
                    }
                }
                match why {
                    // The receiver dropped those itself: sending them again would not help.
                    Some(why) => shared.error(why),
                    None => *shared.last_error.lock() = None,
                }
                return true;
            }
            Answer::Refused { why } => {
                m.failed.inc_by(weight);
                shared.error(format!(
                    "non-recoverable error, dropping {weight} items: {why}"
                ));
                return true;
            }
            Answer::Retry { after, why } => {
                m.retried.inc_by(weight);
                shared.error(format!("recoverable error, retrying: {why}"));
                let wait = backoff.wait(after);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.wait_for(|s| *s) => return false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    #[test]
    fn an_otlp_http_partial_success_counts_its_rejected_items() {
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            Answer::taken(otlp_http_partial(Signal::Traces, &body)),
            Answer::Taken {
                rejected: 3,
                why: Some("partial success: 3 rejected: too old".into())
            }
        );
        // An empty answer, or one that is not protobuf: all taken.
        for body in [&b""[..], b"{\"partialSuccess\":{}}"] {
            assert_eq!(
                Answer::taken(otlp_http_partial(Signal::Logs, body)),
                Answer::Taken {
                    rejected: 0,
                    why: None
                }
            );
        }
    }
}
