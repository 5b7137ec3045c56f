//! `/loki/api/v1/tail`: a websocket that first sends the newest lines since `start` (at most
//! `limit`), then every second the lines that became searchable since, in Loki's tail frame
//! shape `{"streams": [...], "dropped_entries": null}`.
//!
//! Lines become searchable in arrival order, not timestamp order (shippers batch, streams lag
//! each other, the indexer runs every 200 ms), so "newer than the newest line sent" misses
//! lines. Each poll re-reads the last [`LATE`] and sends what was not sent yet, counting
//! identical entries so repeated lines are sent as often as they were logged.
//!
//! With `X-Loki-Response-Encoding-Flags: categorize-labels` the frames are categorized as
//! Loki 3's tail sends them: lines grouped by stream labels, each value
//! `[ts, line, {"structuredMetadata", "parsed"}]`, and the flags echoed as `encodingFlags`.
//! Grafana 12 does not ask for it (its backend dials the tail without headers and reads two
//! elements per value), so without the header the frames stay two-element.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use storage::logs::Direction;

use super::params::{now_ns, Params};
use super::{categorized_streams_json, streams_json, LokiError, LokiState, CATEGORIZE_LABELS};
use logql::ast::{Expr, LogExpr};
use logql::{parse, CategorizedEntry, CategorizedStream, LabelMap, Stream};

const POLL: Duration = Duration::from_secs(1);
/// How long after its timestamp a line may become searchable and still be tailed.
const LATE: i64 = 30 * 1_000_000_000;

pub(super) async fn tail(
    State(s): State<LokiState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let p = Params::new(q.as_deref(), &headers, &[]);
    let log = match parse(p.get("query")) {
        Ok(Expr::Log(l)) => l,
        Ok(Expr::Metric(_)) => {
            return LokiError::bad("tailing a metric query is not supported").into_response()
        }
        Err(e) => return LokiError::bad(e.to_string()).into_response(),
    };
    let start = match p.time_or("start", now_ns() - 3_600 * 1_000_000_000) {
        Ok(t) => t,
        Err(e) => return LokiError::bad(e).into_response(),
    };
    let limit = match p.limit(100) {
        Ok(l) => l,
        Err(e) => return LokiError::bad(e).into_response(),
    };
    // Loki checks the first batch's size as it checks a log query's.
    let max = s.engine.max_entries();
    if limit > max {
        return LokiError::from(logql::EvalError::EntriesLimit { limit, max }).into_response();
    }
    let flags = p.encoding_flags();
    ws.on_upgrade(move |socket| run(socket, s, log, start, limit, flags))
}

/// One poll's lines, in the shape the tail was asked for.
enum Batch {
    Plain(Vec<Stream>),
    Categorized(Vec<CategorizedStream>),
}

impl Batch {
    fn is_empty(&self) -> bool {
        match self {
            Batch::Plain(s) => s.is_empty(),
            Batch::Categorized(s) => s.is_empty(),
        }
    }

    /// The timestamps of its entries.
    fn stamps(&self) -> Vec<i64> {
        match self {
            Batch::Plain(s) => s.iter().flat_map(|s| &s.entries).map(|e| e.0).collect(),
            Batch::Categorized(s) => s.iter().flat_map(|s| &s.entries).map(|e| e.ts_ns).collect(),
        }
    }

    /// The tail frame: `flags` echoed when there are any, as Loki does.
    fn frame(&self, flags: &[String]) -> String {
        let (streams, _, _) = match self {
            Batch::Plain(s) => streams_json(s),
            Batch::Categorized(s) => categorized_streams_json(s),
        };
        let mut frame = json!({"streams": streams, "dropped_entries": null});
        if !flags.is_empty() {
            frame["encodingFlags"] = json!(flags);
        }
        frame.to_string()
    }
}

/// What the tail tells entries of one stream apart by.
trait TailEntry {
    fn ts(&self) -> i64;
    fn line(&self) -> &str;
}

impl TailEntry for (i64, String) {
    fn ts(&self) -> i64 {
        self.0
    }
    fn line(&self) -> &str {
        &self.1
    }
}

impl TailEntry for CategorizedEntry {
    fn ts(&self) -> i64 {
        self.ts_ns
    }
    fn line(&self) -> &str {
        &self.line
    }
}

/// An entry's identity for "already sent": timestamp, then stream and line hashed.
type EntryKey = (i64, u64);

fn key(labels: &logql::LabelMap, ts: i64, line: &str) -> EntryKey {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    line.hash(&mut h);
    (ts, h.finish())
}

/// What a tail has sent, to send each line exactly once whenever it turns up.
#[derive(Default)]
struct Sent {
    /// How many times each entry of the last [`LATE`] was sent.
    counts: HashMap<EntryKey, u32>,
}

impl Sent {
    /// Keeps, per stream, the entries not sent yet (oldest first) and records them as sent.
    fn fresh(&mut self, batch: Batch) -> Batch {
        let mut seen: HashMap<EntryKey, u32> = HashMap::new();
        match batch {
            Batch::Plain(mut streams) => {
                streams.retain_mut(|st| self.keep_fresh(&mut seen, &st.labels, &mut st.entries));
                Batch::Plain(streams)
            }
            Batch::Categorized(mut streams) => {
                streams.retain_mut(|st| self.keep_fresh(&mut seen, &st.labels, &mut st.entries));
                Batch::Categorized(streams)
            }
        }
    }

    /// Sorts a stream's entries oldest first and keeps those not sent yet; `seen` counts the
    /// batch's identical entries. Whether any is left.
    fn keep_fresh<E: TailEntry>(
        &mut self,
        seen: &mut HashMap<EntryKey, u32>,
        labels: &LabelMap,
        entries: &mut Vec<E>,
    ) -> bool {
        entries.sort_by_key(TailEntry::ts);
        entries.retain(|e| {
            let k = key(labels, e.ts(), e.line());
            let n = seen.entry(k).or_default();
            *n += 1;
            let sent = self.counts.entry(k).or_default();
            if *n > *sent {
                *sent += 1;
                true
            } else {
                false
            }
        });
        !entries.is_empty()
    }

    fn forget_before(&mut self, ts: i64) {
        self.counts.retain(|k, _| k.0 >= ts);
    }
}

async fn run(
    mut socket: WebSocket,
    s: LokiState,
    log: LogExpr,
    start: i64,
    limit: usize,
    flags: Vec<String>,
) {
    let categorize = flags.iter().any(|f| f == CATEGORIZE_LABELS);
    // Lines older than this are never sent: before `start`, or older than the first batch
    // when that was cut at `limit`.
    let mut floor = start;
    let mut sent = Sent::default();
    let mut first = true;
    loop {
        let now = now_ns();
        let from = if first { start } else { floor.max(now - LATE) };
        let (engine, log2) = (s.engine.clone(), log.clone());
        // The first batch is the newest `limit` lines; later ones the window's oldest lines up
        // to the query's cap (what is left is read by the next poll while in the window).
        let (direction, n) = if first {
            (Direction::Backward, limit)
        } else {
            (Direction::Forward, s.engine.max_entries())
        };
        let selected = tokio::task::spawn_blocking(move || {
            if categorize {
                engine
                    .select_logs_categorized(&log2, from, now + 1, n, direction)
                    .map(Batch::Categorized)
            } else {
                engine
                    .select_logs(&log2, from, now + 1, n, direction)
                    .map(Batch::Plain)
            }
        })
        .await;
        let batch = match selected {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                let _ = socket.send(Message::Close(None)).await;
                tracing::warn!("tail: {e}");
                return;
            }
            Err(_) => return,
        };
        if first {
            let stamps = batch.stamps();
            if stamps.len() >= limit {
                if let Some(oldest) = stamps.into_iter().min() {
                    floor = oldest + 1;
                }
            }
            first = false;
        }
        sent.forget_before(from);
        let batch = sent.fresh(batch);
        if !batch.is_empty()
            && socket
                .send(Message::Text(batch.frame(&flags).into()))
                .await
                .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            msg = socket.recv() => if !matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Binary(_)))) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(app: &str, entries: &[(i64, &str)]) -> Stream {
        Stream {
            labels: [("app".to_owned(), app.to_owned())].into_iter().collect(),
            entries: entries.iter().map(|(t, l)| (*t, (*l).to_owned())).collect(),
        }
    }

    fn entries(batch: &Batch) -> Vec<(i64, String)> {
        match batch {
            Batch::Plain(streams) => streams.iter().flat_map(|s| s.entries.clone()).collect(),
            Batch::Categorized(streams) => streams
                .iter()
                .flat_map(|s| &s.entries)
                .map(|e| (e.ts_ns, e.line.clone()))
                .collect(),
        }
    }

    #[test]
    fn late_lines_and_repeated_lines_are_sent_exactly_once_each() {
        let mut sent = Sent::default();
        let got = sent.fresh(Batch::Plain(vec![stream("a", &[(20, "x"), (10, "y")])]));
        assert_eq!(entries(&got), [(10, "y".into()), (20, "x".into())]);
        // A line older than the newest sent turns up later (another shipper, indexer lag),
        // and the same line is logged twice at the same instant.
        let got = sent.fresh(Batch::Plain(vec![
            stream("a", &[(10, "y"), (15, "late"), (20, "x"), (20, "x")]),
            stream("b", &[(20, "x")]),
        ]));
        assert_eq!(
            entries(&got),
            [(15, "late".into()), (20, "x".into()), (20, "x".into())]
        );
        let Batch::Plain(streams) = &got else {
            panic!("a plain batch stays plain")
        };
        assert_eq!(streams[1].labels.get("app").map(String::as_str), Some("b"));
        let again = sent.fresh(Batch::Plain(vec![
            stream("a", &[(10, "y"), (15, "late"), (20, "x"), (20, "x")]),
            stream("b", &[(20, "x")]),
        ]));
        assert!(again.is_empty(), "{:?}", entries(&again));
        sent.forget_before(15);
        assert_eq!(sent.counts.len(), 3);
    }

    /// Label pairs as written in a test.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn categorized(entries: &[(i64, &str, Pairs<'_>)]) -> Batch {
        let labels = |pairs: Pairs<'_>| -> LabelMap {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Batch::Categorized(vec![CategorizedStream {
            labels: labels(&[("app", "a")]),
            entries: entries
                .iter()
                .map(|(ts, line, meta)| CategorizedEntry {
                    ts_ns: *ts,
                    line: (*line).to_owned(),
                    structured_metadata: labels(meta),
                    parsed: LabelMap::new(),
                })
                .collect(),
        }])
    }

    #[test]
    fn categorized_frames_are_sent_once_with_three_element_values_and_the_flags() {
        let mut sent = Sent::default();
        let got = sent.fresh(categorized(&[
            (20, "x", &[("trace_id", "t1")]),
            (10, "y", &[]),
        ]));
        let frame: serde_json::Value =
            serde_json::from_str(&got.frame(&[CATEGORIZE_LABELS.to_owned()])).unwrap();
        // Loki 3's tail frame for the flag (its marshal tests): an empty third element when
        // the entry has neither kind.
        assert_eq!(
            frame,
            json!({
                "streams": [{"stream": {"app": "a"}, "values": [
                    ["10", "y", {}],
                    ["20", "x", {"structuredMetadata": {"trace_id": "t1"}}],
                ]}],
                "dropped_entries": null,
                "encodingFlags": ["categorize-labels"],
            })
        );
        let again = sent.fresh(categorized(&[(10, "y", &[]), (30, "z", &[])]));
        assert_eq!(entries(&again), [(30, "z".into())]);
    }
}
