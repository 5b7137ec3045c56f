//! `/ui/api/status`: what the status page needs that no public API answers — the data
//! directory, and per store its directory, bytes on disk and item counts. The server supplies
//! the stores through [`StatusSource`]; this module only measures directories and renders JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The server's side of the status page.
pub trait StatusSource: Send + Sync + 'static {
    fn data_dir(&self) -> PathBuf;
    /// Called off the async runtime, so it may read the stores.
    fn stores(&self) -> Vec<Store>;
    /// The `remote_write` destinations, in name order.
    fn remote_write(&self) -> Vec<RemoteWrite>;
    /// The `forward:` destinations of logs and traces, logs first, in name order.
    fn forward(&self) -> Vec<Forward>;
}

/// One `forward:` destination's queue: what it sent, what waits, what went wrong.
pub struct Forward {
    pub name: String,
    /// "logs" or "traces".
    pub signal: &'static str,
    pub url: String,
    /// Lines or spans.
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub pending: i64,
    /// Bytes on disk not yet sent.
    pub backlog_bytes: i64,
    /// Dropped unsent because the backlog passed `max_disk_usage`.
    pub dropped_disk_full: u64,
    pub last_error: Option<String>,
}

/// One `remote_write` destination's queue: what it sent, what waits, what went wrong.
pub struct RemoteWrite {
    pub name: String,
    pub url: String,
    /// The protocol sent now: "1.0", or "2.0" until a receiver makes it fall back.
    pub protocol: &'static str,
    pub shards: i64,
    pub samples_sent: u64,
    pub samples_failed: u64,
    pub samples_retried: u64,
    pub samples_pending: i64,
    /// Bytes on disk not yet sent.
    pub backlog_bytes: i64,
    /// Samples dropped unsent because the backlog passed `max_disk_usage`.
    pub samples_dropped_disk_full: u64,
    /// Seconds since the epoch of the newest sample sent; 0 before any.
    pub highest_sent_seconds: f64,
    pub last_error: Option<String>,
}

/// One store (TSDB, logs, traces): where it lives and how much it holds.
pub struct Store {
    pub name: &'static str,
    pub dir: PathBuf,
    pub counts: Vec<Count>,
}

/// A count shown on the status page; an error is shown in its place.
pub struct Count {
    pub what: &'static str,
    pub value: Result<u64, String>,
}

pub(crate) async fn serve(State(source): State<Arc<dyn StatusSource>>) -> Response {
    match tokio::task::spawn_blocking(move || render(source.as_ref())).await {
        Ok(data) => Json(json!({"status": "success", "data": data})).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "error", "errorType": "internal", "error": e.to_string()})),
        )
            .into_response(),
    }
}

fn render(source: &dyn StatusSource) -> Value {
    let stores: Vec<Value> = source
        .stores()
        .into_iter()
        .map(|s| {
            let counts: Vec<Value> = s
                .counts
                .iter()
                .map(|c| match &c.value {
                    Ok(v) => json!({"what": c.what, "value": v}),
                    Err(e) => json!({"what": c.what, "error": e}),
                })
                .collect();
            let mut store = json!({"name": s.name, "dir": s.dir, "counts": counts});
            match disk_bytes(&s.dir) {
                Ok(b) => store["diskBytes"] = json!(b),
                Err(e) => store["diskError"] = json!(format!("{}: {e}", s.dir.display())),
            }
            store
        })
        .collect();
    let remote_write: Vec<Value> = source
        .remote_write()
        .into_iter()
        .map(|r| {
            json!({
                "name": r.name,
                "url": r.url,
                "protocol": r.protocol,
                "shards": r.shards,
                "samplesSent": r.samples_sent,
                "samplesFailed": r.samples_failed,
                "samplesRetried": r.samples_retried,
                "samplesPending": r.samples_pending,
                "backlogBytes": r.backlog_bytes,
                "samplesDroppedDiskFull": r.samples_dropped_disk_full,
                "highestSentSeconds": r.highest_sent_seconds,
                "lastError": r.last_error,
            })
        })
        .collect();
    let forward: Vec<Value> = source
        .forward()
        .into_iter()
        .map(|f| {
            json!({
                "name": f.name,
                "signal": f.signal,
                "url": f.url,
                "sent": f.sent,
                "failed": f.failed,
                "retried": f.retried,
                "pending": f.pending,
                "backlogBytes": f.backlog_bytes,
                "droppedDiskFull": f.dropped_disk_full,
                "lastError": f.last_error,
            })
        })
        .collect();
    json!({"dataDir": source.data_dir(), "stores": stores, "remoteWrite": remote_write, "forward": forward})
}

/// Bytes of the regular files under `dir` (symlinks are not followed). Files that vanish
/// while walking (RocksDB compactions, tantivy merges) are skipped, not errors.
fn disk_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    let mut top = true;
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if !top && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        top = false;
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A source with fixed answers.
    #[derive(Default)]
    pub(crate) struct Fixed {
        pub(crate) dir: PathBuf,
    }

    impl StatusSource for Fixed {
        fn data_dir(&self) -> PathBuf {
            self.dir.clone()
        }

        fn stores(&self) -> Vec<Store> {
            vec![
                Store {
                    name: "tsdb",
                    dir: self.dir.join("tsdb"),
                    counts: vec![Count {
                        what: "series",
                        value: Ok(7),
                    }],
                },
                Store {
                    name: "logs",
                    dir: self.dir.join("missing"),
                    counts: vec![Count {
                        what: "streams",
                        value: Err("index unreadable".into()),
                    }],
                },
            ]
        }

        fn remote_write(&self) -> Vec<RemoteWrite> {
            vec![RemoteWrite {
                name: "central".into(),
                url: "http://central:9090/api/v1/write".into(),
                protocol: "1.0",
                shards: 2,
                samples_sent: 40,
                samples_failed: 1,
                samples_retried: 3,
                samples_pending: 5,
                backlog_bytes: 512,
                samples_dropped_disk_full: 0,
                highest_sent_seconds: 1.5,
                last_error: Some("server returned HTTP status 503".into()),
            }]
        }

        fn forward(&self) -> Vec<Forward> {
            vec![Forward {
                name: "central-loki".into(),
                signal: "logs",
                url: "http://loki:3100/loki/api/v1/push".into(),
                sent: 12,
                failed: 0,
                retried: 2,
                pending: 1,
                backlog_bytes: 64,
                dropped_disk_full: 0,
                last_error: None,
            }]
        }
    }

    #[tokio::test]
    async fn stores_report_disk_bytes_counts_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let tsdb = tmp.path().join("tsdb");
        std::fs::create_dir_all(tsdb.join("sub")).unwrap();
        std::fs::write(tsdb.join("a"), [0u8; 100]).unwrap();
        std::fs::write(tsdb.join("sub/b"), [0u8; 23]).unwrap();
        std::os::unix::fs::symlink(tsdb.join("a"), tsdb.join("link")).unwrap();
        let app = crate::routes(Arc::new(Fixed {
            dir: tmp.path().to_owned(),
        }));
        let resp = app
            .oneshot(Request::get("/ui/api/status").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let data = &body["data"];
        assert_eq!(data["dataDir"], json!(tmp.path()));
        assert_eq!(data["stores"][0]["diskBytes"], 123);
        assert_eq!(
            data["stores"][0]["counts"][0],
            json!({"what": "series", "value": 7})
        );
        let logs = &data["stores"][1];
        assert!(logs["diskBytes"].is_null());
        assert!(
            logs["diskError"].as_str().unwrap().contains("missing"),
            "{logs}"
        );
        assert_eq!(
            logs["counts"][0],
            json!({"what": "streams", "error": "index unreadable"})
        );
        let rw = &data["remoteWrite"][0];
        assert_eq!(
            (&rw["name"], &rw["samplesSent"], &rw["backlogBytes"]),
            (&json!("central"), &json!(40), &json!(512))
        );
        assert_eq!(rw["lastError"], "server returned HTTP status 503");
        let f = &data["forward"][0];
        assert_eq!(
            (&f["name"], &f["signal"], &f["sent"], &f["retried"]),
            (
                &json!("central-loki"),
                &json!("logs"),
                &json!(12),
                &json!(2)
            )
        );
        assert_eq!(f["lastError"], Value::Null);
    }
}
