//! `/loki/api/v1/tail`: a websocket that first sends the newest lines since `start` (at most
//! `limit`), then every second the lines that became searchable since, in Loki's tail frame
//! shape `{"streams": [...], "dropped_entries": null}`.
//!
//! Lines become searchable in arrival order, not timestamp order (shippers batch, streams lag
//! each other, the indexer runs every 200 ms), so "newer than the newest line sent" misses
//! lines. Each poll re-reads the last [`LATE`] and sends what was not sent yet, counting
//! identical entries so repeated lines are sent as often as they were logged.

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
use super::{LokiError, LokiState};
use logql::ast::{Expr, LogExpr};
use logql::{parse, Stream};

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
    ws.on_upgrade(move |socket| run(socket, s, log, start, limit))
}

fn frame(streams: &[Stream]) -> String {
    let (streams, _, _) = super::streams_json(streams);
    json!({"streams": streams, "dropped_entries": null}).to_string()
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
    fn fresh(&mut self, streams: Vec<Stream>) -> Vec<Stream> {
        let mut seen: HashMap<EntryKey, u32> = HashMap::new();
        let mut out = Vec::new();
        for mut st in streams {
            st.entries.sort_by_key(|e| e.0);
            let labels = st.labels.clone();
            st.entries.retain(|(ts, line)| {
                let k = key(&labels, *ts, line);
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
            if !st.entries.is_empty() {
                out.push(st);
            }
        }
        out
    }

    fn forget_before(&mut self, ts: i64) {
        self.counts.retain(|k, _| k.0 >= ts);
    }
}

async fn run(mut socket: WebSocket, s: LokiState, log: LogExpr, start: i64, limit: usize) {
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
            engine.select_logs(&log2, from, now + 1, n, direction)
        })
        .await;
        let streams = match selected {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                let _ = socket.send(Message::Close(None)).await;
                tracing::warn!("tail: {e}");
                return;
            }
            Err(_) => return,
        };
        if first {
            let count: usize = streams.iter().map(|s| s.entries.len()).sum();
            if count >= limit {
                if let Some(oldest) = streams
                    .iter()
                    .flat_map(|s| s.entries.iter().map(|e| e.0))
                    .min()
                {
                    floor = oldest + 1;
                }
            }
            first = false;
        }
        sent.forget_before(from);
        let streams = sent.fresh(streams);
        if !streams.is_empty()
            && socket
                .send(Message::Text(frame(&streams).into()))
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

    fn entries(streams: &[Stream]) -> Vec<(i64, String)> {
        streams.iter().flat_map(|s| s.entries.clone()).collect()
    }

    #[test]
    fn late_lines_and_repeated_lines_are_sent_exactly_once_each() {
        let mut sent = Sent::default();
        let got = sent.fresh(vec![stream("a", &[(20, "x"), (10, "y")])]);
        assert_eq!(entries(&got), [(10, "y".into()), (20, "x".into())]);
        // A line older than the newest sent turns up later (another shipper, indexer lag),
        // and the same line is logged twice at the same instant.
        let got = sent.fresh(vec![
            stream("a", &[(10, "y"), (15, "late"), (20, "x"), (20, "x")]),
            stream("b", &[(20, "x")]),
        ]);
        assert_eq!(
            entries(&got),
            [(15, "late".into()), (20, "x".into()), (20, "x".into())]
        );
        assert_eq!(got[1].labels.get("app").map(String::as_str), Some("b"));
        let again = sent.fresh(vec![
            stream("a", &[(10, "y"), (15, "late"), (20, "x"), (20, "x")]),
            stream("b", &[(20, "x")]),
        ]);
        assert!(again.is_empty(), "{:?}", entries(&again));
        sent.forget_before(15);
        assert_eq!(sent.counts.len(), 3);
    }
}
