//! Disk full: novamon on a small tmpfs. While the disk is full every write path refuses with
//! its protocol's retryable answer (remote-write and Loki push 503, OTLP/HTTP 503, OTLP/gRPC
//! UNAVAILABLE, forward: the connection closed without ack); once space is back it writes
//! again without a restart; after a kill -9 every acknowledged write is queryable. And a
//! full disk under the log index alone: the indexer resumes once space is back, with every
//! acknowledged line searchable exactly once.
//!
//! Mounting needs root, as CI runs: the test fails (it does not skip) when it cannot mount.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::series::{v1_request, v1_series, V1};
use e2e::{enc, now_ns, wait_until, Novamon};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use rmpv::Value;
use serde_json::json;

/// Small enough to fill in an instant. Large enough to resume: a RocksDB database resumes
/// after a full disk once the free space holds its largest memtable (the TSDB's: 64 MiB),
/// and on resuming each preallocates a new WAL file (64 + 32 + 16 MiB for the three stores).
const TMPFS_SIZE: &str = "256m";
/// Padding of each log line and span, so that a few writes fill what is left.
const PAD: usize = 2048;
/// Lines per Loki push.
const LOKI_LINES: u64 = 8;
/// Free space left when novamon starts. RocksDB preallocates each WAL file (up to its write
/// buffer size, 16 to 64 MiB here); with less free space than that the preallocation fails
/// and is skipped, so filling the disk later makes the next writes fail at once instead of
/// after tens of MiB more data.
const ROOM: u64 = 12 << 20;
/// The one trace every span of the test belongs to (span ids tell the writes apart).
const TRACE_ID: [u8; 16] = *b"disk-full-trace!";

/// A tmpfs mounted on a directory, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (run it as root, as CI does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding files there must not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system refuses: the disk is then full.
fn fill(path: &Path) -> std::fs::File {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 1 << 20];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // What did not fit in the last block.
    for _ in 0..(1 << 20) / 512 {
        if f.write_all(&[0u8; 512]).is_err() {
            break;
        }
    }
    f
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Acked,
    /// The protocol's retryable refusal.
    Refused,
    Other(String),
}

/// The write paths, each sending write `id` and telling what came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    RemoteWrite,
    LokiPush,
    OtlpHttpLogs,
    OtlpHttpTraces,
    OtlpGrpcLogs,
    OtlpGrpcTraces,
    Forward,
}

const PATHS: [Route; 7] = [
    Route::RemoteWrite,
    Route::LokiPush,
    Route::OtlpHttpLogs,
    Route::OtlpHttpTraces,
    Route::OtlpGrpcLogs,
    Route::OtlpGrpcTraces,
    Route::Forward,
];

struct Client {
    n: Novamon,
    rt: tokio::runtime::Runtime,
    base_ms: i64,
    base_ns: i64,
}

fn resource() -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("disk-full".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn pad() -> String {
    "x".repeat(PAD)
}

impl Client {
    fn http(&self, url: String, content_type: &str, extra: &[(&str, &str)], body: Vec<u8>) -> u16 {
        let mut req = self.n.agent.post(url).header("Content-Type", content_type);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send(&body[..]).map_or(0, |r| r.status().as_u16())
    }

    fn status(code: u16, ok: u16, retryable: u16) -> Outcome {
        match code {
            c if c == ok => Outcome::Acked,
            c if c == retryable => Outcome::Refused,
            c => Outcome::Other(format!("HTTP {c}")),
        }
    }

    fn grpc(result: Result<(), tonic::Status>) -> Outcome {
        match result {
            Ok(()) => Outcome::Acked,
            Err(s) if s.code() == tonic::Code::Unavailable => Outcome::Refused,
            Err(s) => Outcome::Other(format!("{s:?}")),
        }
    }

    fn log_record(&self, id: u64, what: &str) -> ResourceLogs {
        ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: (self.base_ns + id as i64 * 1000) as u64,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "{what} {id}/0 {}",
                            pad()
                        ))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Span ids: the path in the high byte, the write id below.
    fn span(&self, path: Route, id: u64) -> ResourceSpans {
        let start = (self.base_ns + id as i64 * 1000) as u64;
        ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: TRACE_ID.to_vec(),
                    span_id: span_id(path, id).to_be_bytes().to_vec(),
                    name: pad(),
                    kind: 2,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 1_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn send(&self, path: Route, id: u64) -> Outcome {
        let n = &self.n;
        match path {
            Route::RemoteWrite => {
                let samples: Vec<(i64, f64)> = (0..100)
                    .map(|i| (self.base_ms + (id * 100 + i) as i64, (id * 100 + i) as f64))
                    .collect();
                let body = v1_request(vec![v1_series(&[("__name__", "disk_full")], &samples)]);
                let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
                let url = format!("{}/api/v1/write", n.url);
                let code = self.http(url, V1, &[("Content-Encoding", "snappy")], body);
                Self::status(code, 204, 503)
            }
            Route::LokiPush => {
                let values: Vec<_> = (0..LOKI_LINES)
                    .map(|k| {
                        let t = self.base_ns + (id * LOKI_LINES + k) as i64;
                        json!([t.to_string(), format!("loki {id}/{k} {}", pad())])
                    })
                    .collect();
                let body = json!({"streams": [{"stream": {"job": "disk_full"}, "values": values}]});
                let url = format!("{}/loki/api/v1/push", n.url);
                let code = self.http(url, "application/json", &[], body.to_string().into());
                Self::status(code, 204, 503)
            }
            Route::OtlpHttpLogs => {
                let req = ExportLogsServiceRequest {
                    resource_logs: vec![self.log_record(id, "otlp-http")],
                };
                let url = format!("{}/v1/logs", n.otlp_http_url);
                let code = self.http(url, "application/x-protobuf", &[], encode(&req));
                Self::status(code, 200, 503)
            }
            Route::OtlpHttpTraces => {
                let req = ExportTraceServiceRequest {
                    resource_spans: vec![self.span(path, id)],
                };
                let url = format!("{}/v1/traces", n.otlp_http_url);
                let code = self.http(url, "application/x-protobuf", &[], encode(&req));
                Self::status(code, 200, 503)
            }
            Route::OtlpGrpcLogs => Self::grpc(self.rt.block_on(async {
                let mut c = LogsServiceClient::connect(n.otlp_grpc_url.clone())
                    .await
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                let req = ExportLogsServiceRequest {
                    resource_logs: vec![self.log_record(id, "otlp-grpc")],
                };
                c.export(req).await.map(drop)
            })),
            Route::OtlpGrpcTraces => Self::grpc(self.rt.block_on(async {
                let mut c = TraceServiceClient::connect(n.otlp_grpc_url.clone())
                    .await
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                let req = ExportTraceServiceRequest {
                    resource_spans: vec![self.span(path, id)],
                };
                c.export(req).await.map(drop)
            })),
            Route::Forward => self.forward(id),
        }
    }

    /// One connection per message, as the server closes it on a store failure.
    fn forward(&self, id: u64) -> Outcome {
        let mut s = TcpStream::connect(&self.n.forward_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let msg = Value::Array(vec![
            Value::from("disk.full"),
            Value::from(self.base_ns / 1_000_000_000),
            Value::Map(vec![(
                Value::from("log"),
                Value::from(format!("fwd {id}/0 {}", pad())),
            )]),
            Value::Map(vec![(Value::from("chunk"), Value::from(format!("c{id}")))]),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &msg).unwrap();
        s.write_all(&out).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            match s.read(&mut chunk) {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                // Closed without an ack: Fluentd keeps the chunk and sends it again.
                Ok(_) => return Outcome::Refused,
                Err(e) => return Outcome::Other(format!("reading the ack: {e}")),
            }
            if let Ok(v) = rmpv::decode::read_value(&mut &buf[..]) {
                let want = Value::Map(vec![(Value::from("ack"), Value::from(format!("c{id}")))]);
                return if v == want {
                    Outcome::Acked
                } else {
                    Outcome::Other(format!("unexpected answer {v}"))
                };
            }
        }
    }
}

fn encode(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

fn span_id(path: Route, id: u64) -> u64 {
    ((path as u64 + 1) << 56) | id
}

/// Acknowledged write ids per path, and the next id to send.
#[derive(Default)]
struct Ledger {
    acked: std::collections::BTreeMap<Route, BTreeSet<u64>>,
    next: u64,
}

impl Ledger {
    /// Sends on `path` until `until` comes back (recording every ack), within `timeout`.
    fn send_until(&mut self, c: &Client, path: Route, until: Outcome, timeout: Duration) {
        let mut last = None;
        let got = wait_until(timeout, || {
            let id = self.next;
            self.next += 1;
            let outcome = c.send(path, id);
            if outcome == Outcome::Acked {
                self.acked.entry(path).or_default().insert(id);
            }
            if let Outcome::Other(what) = &outcome {
                panic!(
                    "{path:?}: write {id} got {what}; log:\n{}",
                    c.n.process.log()
                );
            }
            let done = outcome == until;
            last = Some(outcome);
            done
        });
        assert!(
            got.is_some(),
            "{path:?}: no {until:?} within {timeout:?} (last: {last:?}); log:\n{}",
            c.n.process.log()
        );
    }
}

/// Lines as "<prefix> <id>", what `check_lines` compares.
fn write_ids(lines: Vec<String>) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Each line of each acknowledged write of `prefix` is among `lines`, and no line is there
/// twice.
fn check_lines(what: &str, lines: &[String], prefix: &str, per_write: u64, acked: &BTreeSet<u64>) {
    let mut seen = BTreeSet::new();
    for l in lines {
        assert!(seen.insert(l.as_str()), "{what}: {l:?} stored twice");
    }
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| (0..per_write).any(|k| !seen.contains(format!("{prefix} {id}/{k}").as_str())))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged writes lost: {lost:?}"
    );
}

#[test]
fn a_full_disk_refuses_writes_retryably_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Mounted on the data directory itself: the server's log is written beside it.
    let _tmpfs = Tmpfs::mount(&data, TMPFS_SIZE);
    let (reserve, filler) = (data.join("reserve"), data.join("filler"));
    let base_ns = now_ns() - 600_000_000_000;
    let reserved = fill(&reserve);
    reserved
        .set_len(reserved.metadata().unwrap().len() - ROOM)
        .unwrap();
    // Closed, so that deleting it frees its space.
    drop(reserved);
    let mut c = Client {
        n: Novamon::start(&data, &[]),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        base_ms: base_ns / 1_000_000,
        base_ns,
    };
    let mut ledger = Ledger::default();
    let timeout = Duration::from_secs(20);

    for path in PATHS {
        ledger.send_until(&c, path, Outcome::Acked, timeout);
    }
    drop(fill(&filler));
    for path in PATHS {
        ledger.send_until(&c, path, Outcome::Refused, timeout);
    }
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&reserve).unwrap();
    for path in PATHS {
        ledger.send_until(&c, path, Outcome::Acked, timeout);
    }
    // One warning per store and episode, however many writes were refused.
    let log = c.n.process.log();
    for what in ["tsdb append", "log store append", "trace store write"] {
        let warned = log
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "{what} failed; logged again only once it succeeds"
                ))
            })
            .count();
        assert_eq!(warned, 1, "{what}: {warned} warnings; log:\n{log}");
    }

    // Without a restart, everything acknowledged is queryable (the log indexer resumed too).
    check_acknowledged(&c, &ledger);
    let status = c.n.process.signal_and_wait("KILL", Duration::from_secs(10));
    assert!(!status.success());
    c.n = Novamon::start(&data, &[]);
    check_acknowledged(&c, &ledger);
}

/// Every acknowledged write is queryable, once.
fn check_acknowledged(c: &Client, ledger: &Ledger) {
    let (n, base_ns) = (&c.n, c.base_ns);
    // Samples: every acknowledged request's 100 samples.
    let end_ms = c.base_ms + (ledger.next * 100) as i64;
    let body = n.get_ok(&format!(
        "/api/v1/query?query={}&time={}",
        enc(&format!("disk_full[{}ms]", ledger.next * 100 + 1000)),
        end_ms as f64 / 1000.0
    ));
    let stored: BTreeSet<u64> = body["data"]["result"][0]["values"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| v[1].as_str().unwrap().parse::<u64>().unwrap())
                .collect()
        })
        .unwrap_or_default();
    let acked = &ledger.acked[&Route::RemoteWrite];
    let lost: Vec<u64> = acked
        .iter()
        .filter(|id| !(0..100).all(|i| stored.contains(&(*id * 100 + i))))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "remote-write: acknowledged requests lost: {lost:?}"
    );

    // Logs: replayed from the append log into the index after the restart.
    let start = base_ns - 3_600_000_000_000;
    for (what, selector, prefix, per_write, path) in [
        (
            "Loki push",
            r#"{job="disk_full"}"#,
            "loki",
            LOKI_LINES,
            Route::LokiPush,
        ),
        (
            "OTLP/HTTP logs",
            r#"{service_name="disk-full"} |= "otlp-http""#,
            "otlp-http",
            1,
            Route::OtlpHttpLogs,
        ),
        (
            "OTLP/gRPC logs",
            r#"{service_name="disk-full"} |= "otlp-grpc""#,
            "otlp-grpc",
            1,
            Route::OtlpGrpcLogs,
        ),
        ("forward", r#"{tag="disk.full"}"#, "fwd", 1, Route::Forward),
    ] {
        let acked = &ledger.acked[&path];
        let mut lines = Vec::new();
        wait_until(Duration::from_secs(30), || {
            lines = write_ids(n.log_lines(selector, start));
            lines.len() as u64 >= acked.len() as u64 * per_write
        });
        check_lines(what, &lines, prefix, per_write, acked);
    }

    // Spans: all in one trace, told apart by span id.
    let body = n.get_ok(&format!(
        "/jaeger/api/traces/{}",
        TRACE_ID
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let stored: BTreeSet<u64> = body["data"][0]["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| u64::from_str_radix(s["spanID"].as_str().unwrap(), 16).unwrap())
                .collect()
        })
        .unwrap_or_default();
    for path in [Route::OtlpHttpTraces, Route::OtlpGrpcTraces] {
        let lost: Vec<u64> = ledger.acked[&path]
            .iter()
            .filter(|id| !stored.contains(&span_id(path, **id)))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "{path:?}: acknowledged spans lost: {lost:?}"
        );
    }
}

/// Only the log index on a full disk: pushes are still acknowledged (the append log is on
/// another disk) while the indexer fails mid-batch; once space is back the indexer resumes
/// without a restart and every line is searchable exactly once.
#[test]
fn a_full_log_index_resumes_without_losing_or_doubling_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let index = data.join("logs").join("index");
    let _tmpfs = Tmpfs::mount(&index, "16m");
    let n = Novamon::start(&data, &[]);
    let base_ns = now_ns() - 600_000_000_000;
    let push = |id: u64| {
        let values: Vec<_> = (0..LOKI_LINES)
            .map(|k| {
                let t = base_ns + (id * LOKI_LINES + k) as i64;
                json!([t.to_string(), format!("loki {id}/{k} {}", pad())])
            })
            .collect();
        let body = json!({"streams": [{"stream": {"job": "index_full"}, "values": values}]});
        let (status, text, _) = n.post_raw(
            "/loki/api/v1/push",
            "application/json",
            &[],
            body.to_string().into(),
        );
        assert_eq!(status, 204, "{text}");
    };
    let searchable = |count: u64| {
        let mut lines = Vec::new();
        wait_until(Duration::from_secs(30), || {
            lines = write_ids(n.log_lines(r#"{job="index_full"}"#, base_ns - 1));
            lines.len() as u64 >= count * LOKI_LINES
        });
        let acked = (0..count).collect();
        check_lines("Loki push", &lines, "loki", LOKI_LINES, &acked);
    };
    for id in 0..10 {
        push(id);
    }
    searchable(10);

    let filler = index.join("filler");
    drop(fill(&filler));
    for id in 10..200 {
        push(id);
    }
    wait_until(Duration::from_secs(30), || {
        n.process.log().contains("log indexer failed")
    })
    .unwrap_or_else(|| panic!("the indexer never failed; log:\n{}", n.process.log()));
    std::fs::remove_file(&filler).unwrap();
    searchable(200);
    // The indexer retried every 200 ms while full, and warned once.
    let log = n.process.log();
    assert_eq!(log.matches("log indexer failed").count(), 1, "{log}");
    assert!(log.contains("log indexer succeeds again"), "{log}");
}
