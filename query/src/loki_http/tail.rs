//! `/loki/api/v1/tail`: a websocket that first sends the newest lines since `start` (at most
//! `limit`), then every second the lines that became searchable since, in Loki's tail frame
//! shape `{"streams": [...], "dropped_entries": null}`.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use storage::logs::Direction;

use super::params::{now_ns, Params};
use super::{labels_json, LokiError, LokiState};
use crate::logql::ast::{Expr, LogExpr};
use crate::logql::{parse, Stream};

const POLL: Duration = Duration::from_secs(1);

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
    ws.on_upgrade(move |socket| run(socket, s, log, start, limit))
}

fn frame(streams: &[Stream]) -> String {
    let streams: Vec<_> = streams
        .iter()
        .map(|s| {
            let values: Vec<_> = s
                .entries
                .iter()
                .map(|(t, l)| json!([t.to_string(), l]))
                .collect();
            json!({"stream": labels_json(&s.labels), "values": values})
        })
        .collect();
    json!({"streams": streams, "dropped_entries": null}).to_string()
}

async fn run(mut socket: WebSocket, s: LokiState, log: LogExpr, start: i64, limit: usize) {
    let mut from = start;
    let mut first = true;
    loop {
        let now = now_ns();
        let (engine, log2) = (s.engine.clone(), log.clone());
        // The first batch is the newest `limit` lines; later ones everything new, oldest first.
        let (direction, n) = if first {
            (Direction::Backward, limit)
        } else {
            (Direction::Forward, usize::MAX)
        };
        let selected = tokio::task::spawn_blocking(move || {
            engine.select_logs(&log2, from, now + 1, n, direction)
        })
        .await;
        let mut streams = match selected {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                let _ = socket.send(Message::Close(None)).await;
                tracing::warn!("tail: {e}");
                return;
            }
            Err(_) => return,
        };
        first = false;
        let newest = streams
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| e.0))
            .max();
        if let Some(newest) = newest {
            from = newest + 1;
            for st in &mut streams {
                st.entries.sort_by_key(|e| e.0);
            }
            if socket
                .send(Message::Text(frame(&streams).into()))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            msg = socket.recv() => if !matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Binary(_)))) {
                return;
            }
        }
    }
}
