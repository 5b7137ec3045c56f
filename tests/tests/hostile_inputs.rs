//! Hostile input over real sockets that is not a query: idle connections by the thousand,
//! small JSON bodies that would decode to gigabytes, a series with 10,000 labels. Each gets
//! the original's answer and leaves the process serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::series::{v1_request, v1_series, V1};
use e2e::{an_hour_ago_ms, Json, Novamon};

fn start(dir: &std::path::Path, config: &str) -> Novamon {
    let path = dir.join("novamon.yml");
    std::fs::write(&path, config).unwrap();
    Novamon::start(&dir.join("data"), &["--config", path.to_str().unwrap()])
}

/// The HTTP/2 client preface and an empty SETTINGS frame: an h2c (or gRPC) connection that
/// then sends nothing.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(H2_PREFACE).unwrap();
            c
        })
        .collect()
}

/// Reads what the server sends until it closes `c`; false if it is still open at `deadline`.
fn closed_by_server(mut c: &TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            // Reset by the server.
            Err(_) => return true,
        }
    }
}

/// 1,000 idle HTTP/2 connections on the HTTP port and 1,000 on the OTLP gRPC port: the
/// connection caps (1,024 each) leave room for a real query and a real gRPC export, and every
/// idle connection is closed after `limits.http_idle_timeout`.
#[test]
fn a_thousand_idle_connections_leave_room_and_are_closed_once_idle() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), "limits:\n  http_idle_timeout: 5s\n");
    let http = n.url.trim_start_matches("http://").to_owned();
    let grpc = n.otlp_grpc_url.trim_start_matches("http://").to_owned();
    let mut idle = idle_connections(&http, 1000);
    idle.extend(idle_connections(&grpc, 1000));

    let q = n.get_ok("/api/v1/query?query=1%2B1");
    assert_eq!(q["data"]["result"][1], "2", "{q}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        let mut client = TraceServiceClient::connect(n.otlp_grpc_url.clone())
            .await
            .unwrap();
        client
            .export(ExportTraceServiceRequest::default())
            .await
            .expect("a gRPC export next to 1,000 idle connections");
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let open = idle
        .iter()
        .filter(|c| !closed_by_server(c, deadline))
        .count();
    assert_eq!(
        open, 0,
        "idle connections still open a minute after the idle timeout"
    );
    // The listeners still serve.
    n.get_ok("/api/v1/query?query=1");
}

/// `{}` is three bytes of JSON and a whole struct once decoded: a few MB of them in an
/// OTLP/JSON export or a Loki push are refused with a 400 before decoding.
#[test]
fn json_bodies_of_empty_items_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), "");
    let empties = vec!["{}"; 1 << 20].join(",");
    for (path, body) in [
        ("/v1/traces", format!(r#"{{"resourceSpans":[{empties}]}}"#)),
        (
            "/v1/logs",
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{empties}]}}]}}"#),
        ),
    ] {
        let (status, text, _) = n.post_raw(path, "application/json", &[], body.into_bytes());
        assert_eq!(status, 400, "{path}: {text}");
        let st: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(st["code"], 3, "{text}");
        let msg = st["message"].as_str().unwrap();
        assert!(msg.contains("would decode to more than"), "{path}: {msg}");
    }
    let (status, text, _) = n.post_raw(
        "/loki/api/v1/push",
        "application/json",
        &[],
        format!(r#"{{"streams":[{empties}]}}"#).into_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("would decode to more than"), "{text}");
    // Real bodies still go through.
    let (status, text, _) = n.post_raw(
        "/v1/traces",
        "application/json",
        &[],
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[]}]}]}"#.to_vec(),
    );
    assert_eq!(status, 200, "{text}");
    n.get_ok("/api/v1/query?query=1");
}

/// One series with 10,000 labels: remote-write answers Mimir's 400 at
/// `limits.remote_write_max_labels_per_series`; an OTLP metric with 10,000 attributes is
/// rejected with the same words as OTLP partial success.
#[test]
fn a_series_with_ten_thousand_labels_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), "");
    let names: Vec<String> = (0..10_000).map(|i| format!("l{i:05}")).collect();
    let mut labels = vec![("__name__", "wide")];
    labels.extend(names.iter().map(|l| (l.as_str(), "v")));
    let body = v1_request(vec![v1_series(&labels, &[(an_hour_ago_ms(), 1.0)])]);
    let (status, text, _) = n.remote_write(&body, V1);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("number of labels exceeds the limit (actual: 10001, limit: 64)"),
        "{text}"
    );
    assert!(
        text.len() < 4096,
        "the error quotes the series shortly: {text}"
    );
    let q = n.get_ok("/api/v1/query?query=count(wide)");
    assert_eq!(q["data"]["result"], serde_json::json!([]), "{q}");

    let attrs: Vec<String> = names
        .iter()
        .map(|k| format!(r#"{{"key":"{k}","value":{{"stringValue":"v"}}}}"#))
        .collect();
    let metric = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"wide_otlp","gauge":{{"dataPoints":[{{"timeUnixNano":"{}","asDouble":1,"attributes":[{}]}}]}}}}]}}]}}]}}"#,
        e2e::now_ns(),
        attrs.join(",")
    );
    let (status, text, _) = n.post_raw("/v1/metrics", "application/json", &[], metric.into());
    assert_eq!(status, 200, "{text}");
    let resp: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(resp["partialSuccess"]["rejectedDataPoints"], "1", "{text}");
    assert_eq!(
        resp["partialSuccess"]["errorMessage"],
        "number of labels exceeds the limit (actual: 10001, limit: 64): wide_otlp",
        "{text}"
    );
    let q = n.get_ok("/api/v1/query?query=count(wide_otlp)");
    assert_eq!(q["data"]["result"], serde_json::json!([]), "{q}");
}
