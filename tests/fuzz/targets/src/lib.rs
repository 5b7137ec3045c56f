//! The bodies of the cargo-fuzz targets in `tests/fuzz/fuzz_targets/`, one function per target,
//! each feeding its bytes to the entry point a remote peer or a user file reaches (the same
//! functions and routers the servers mount) and checking what is cheap to check about the
//! answer. They live in the main workspace so that `cargo test` replays the committed corpora
//! and crash regressions through them (`tests/corpora.rs`) without nightly or a sanitizer build.
//!
//! - `stores`: stores that accept and drop everything, and the runtime the HTTP and forward
//!   targets run on.
//!
//! Decodes and parses only: nothing here evaluates a query or reads a store.

mod stores;

use std::io::Write;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Request};
use ingest::logs::forward::{ForwardOptions, ForwardUser};
use ingest::remote_write::{Protocol, RemoteWriteError};
use tower::ServiceExt;

/// What a target does with one input: returns, or panics on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz target and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("remote_write_v1", remote_write_v1),
    ("remote_write_v2", remote_write_v2),
    ("snappy", snappy),
    ("forward", forward),
    ("forward_handshake", forward_handshake),
    ("otlp_traces_proto", otlp_traces_proto),
    ("otlp_traces_json", otlp_traces_json),
    ("otlp_metrics_proto", otlp_metrics_proto),
    ("otlp_metrics_json", otlp_metrics_json),
    ("otlp_logs_proto", otlp_logs_proto),
    ("otlp_logs_json", otlp_logs_json),
    ("loki_push_json", loki_push_json),
    ("loki_push_proto", loki_push_proto),
    ("promql", promql),
    ("logql", logql),
    ("traceql", traceql),
    ("promtool_series", promtool_series),
    ("rule_file", rule_file),
    ("server_config", server_config),
    ("web_config", web_config),
    ("scrape_body", scrape_body),
    ("http_sd_answer", http_sd_answer),
    ("dns_answer", dns_answer),
];

/// A remote-write 1.0 body (snappy-compressed `prometheus.WriteRequest`) as the handler reads it.
pub fn remote_write_v1(data: &[u8]) {
    remote_write(Protocol::V1, data);
}

/// A remote-write 2.0 body (snappy-compressed `io.prometheus.write.v2.Request`).
pub fn remote_write_v2(data: &[u8]) {
    remote_write(Protocol::V2, data);
}

fn remote_write(protocol: Protocol, data: &[u8]) {
    let limits = ingest::Limits::default();
    match ingest::remote_write::decode(protocol, data, &limits) {
        Ok(decoded) => {
            for s in decoded.series().iter() {
                let labels = s.labels();
                assert!(labels.len() <= limits.max_labels_per_series);
                assert!(labels.iter().all(|l| {
                    l.name.len() <= limits.max_label_name_length
                        && l.value.len() <= limits.max_label_value_length
                }));
            }
        }
        // Bad input is the sender's fault (4xx): never an internal error.
        Err(e) => assert!(
            !matches!(
                e,
                RemoteWriteError::Internal(_) | RemoteWriteError::Storage(_)
            ),
            "{e}"
        ),
    }
}

/// Snappy blocks: any bytes decompress within the limit or fail, and compressing then
/// decompressing gives the bytes back, refused when the limit is one byte short.
pub fn snappy(data: &[u8]) {
    const LIMIT: usize = 1 << 16;
    if let Ok(out) = ingest::remote_write::decompress(data, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
    let compressed = snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy compresses any input");
    let round = ingest::remote_write::decompress(&compressed, data.len()).expect("round trip");
    assert_eq!(round, data);
    if !data.is_empty() {
        assert!(matches!(
            ingest::remote_write::decompress(&compressed, data.len() - 1),
            Err(RemoteWriteError::DecompressedTooLarge { .. })
        ));
    }
}

/// A forward protocol connection without a shared key: the bytes are everything the client
/// sends (frames of any mode, back to back), then it closes.
pub fn forward(data: &[u8]) {
    forward_connection(data, ForwardOptions::default());
}

/// A forward protocol connection with a shared key and users: the bytes are the client's
/// side after HELO (its PING, then frames). The nonce is random, so a PING is refused after
/// it is parsed; what is fuzzed is the parsing.
pub fn forward_handshake(data: &[u8]) {
    forward_connection(
        data,
        ForwardOptions {
            shared_key: Some("fuzz".into()),
            users: vec![ForwardUser {
                username: "fuzz".into(),
                password: "fuzz".into(),
            }],
            ..ForwardOptions::default()
        },
    );
}

fn forward_connection(data: &[u8], opts: ForwardOptions) {
    let sink = log_sink();
    let stream = tokio::io::join(data, tokio::io::sink());
    // A refused frame closes the connection with an error: that is the protocol's answer.
    let _ = stores::block_on(ingest::logs::forward::serve_connection(
        stream, &sink, &opts,
    ));
}

pub fn otlp_traces_proto(data: &[u8]) {
    otlp("/v1/traces", "application/x-protobuf", data);
}

pub fn otlp_traces_json(data: &[u8]) {
    otlp("/v1/traces", "application/json", data);
}

pub fn otlp_metrics_proto(data: &[u8]) {
    otlp("/v1/metrics", "application/x-protobuf", data);
}

pub fn otlp_metrics_json(data: &[u8]) {
    otlp("/v1/metrics", "application/json", data);
}

pub fn otlp_logs_proto(data: &[u8]) {
    otlp("/v1/logs", "application/x-protobuf", data);
}

pub fn otlp_logs_json(data: &[u8]) {
    otlp("/v1/logs", "application/json", data);
}

fn otlp(path: &str, content_type: &str, data: &[u8]) {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    let router = ROUTER.get_or_init(|| {
        let state = ingest::otlp::OtlpState::new(stores::traces(), stores::metrics(), 4 << 20)
            .with_logs(stores::logs())
            .with_log_bounds(log_bounds());
        ingest::otlp::http_routes(state)
    });
    post(router, path, content_type, data);
}

/// A Loki push body in JSON.
pub fn loki_push_json(data: &[u8]) {
    loki_push("application/json", data);
}

/// A Loki push body in Loki's default encoding: snappy-compressed protobuf.
pub fn loki_push_proto(data: &[u8]) {
    loki_push("application/x-protobuf", data);
}

fn loki_push(content_type: &str, data: &[u8]) {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    let router =
        ROUTER.get_or_init(|| ingest::logs::routes(log_sink().with_push_max_bytes(4 << 20)));
    post(router, "/loki/api/v1/push", content_type, data);
}

fn log_sink() -> ingest::logs::LogSink {
    ingest::logs::LogSink::new(stores::logs(), ingest::logs::Mapping::default())
        .with_bounds(log_bounds())
}

/// No record is too old: an input decodes the same whenever it runs, and the mapping after the
/// bounds check is reached whatever timestamps the corpus holds.
fn log_bounds() -> ingest::logs::LogBounds {
    ingest::logs::LogBounds {
        max_age: std::time::Duration::MAX,
        ..ingest::logs::LogBounds::default()
    }
}

/// Posts `data` through the router as a client would; bad input is never a 5xx.
fn post(router: &axum::Router, path: &str, content_type: &str, data: &[u8]) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(data.to_vec()))
        .expect("a valid request");
    let response = stores::block_on(router.clone().oneshot(request)).expect("infallible");
    assert!(
        !response.status().is_server_error(),
        "{path}: {}",
        response.status()
    );
}

/// A PromQL query as `/api/v1/query` and `/api/v1/format_query` parse it; when it prints,
/// printing the printed query gives it back unchanged.
pub fn promql(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(printed) = promql::format_extended(q) {
        assert_eq!(
            promql::format_extended(&printed).as_deref(),
            Some(printed.as_str()),
            "{q:?}"
        );
    }
}

/// A LogQL query; a parsed query prints as a query that parses to the same printed form.
pub fn logql(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = logql::parse(q) {
        let printed = expr.to_string();
        let again = logql::parse(&printed)
            .unwrap_or_else(|e| panic!("{q:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(again.to_string(), printed, "{q:?}");
    }
}

/// A TraceQL query as Tempo's search and metrics APIs receive it: parsed, then evaluated on a
/// small trace (a root, a child, a grandchild and a parentless span) so the structural
/// operators and pipeline stages run on every query that parses.
pub fn traceql(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = tracequery::traceql::parse(q) else {
        return;
    };
    let trace = small_trace();
    let sets = query.eval(trace);
    for set in &sets {
        assert!(!set.spans.is_empty(), "{q:?} kept an empty spanset");
        assert!(set.spans.windows(2).all(|w| w[0] < w[1]), "{q:?}");
        assert!(set.spans.iter().all(|&i| i < trace.len()), "{q:?}");
    }
    for s in trace.iter() {
        query.candidate(s);
    }
}

/// Four spans of one trace: `a` → `b` → `c`, and `d` whose parent never arrived.
fn small_trace() -> &'static [storage::traces::StoredSpan] {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
    static TRACE: std::sync::OnceLock<Vec<storage::traces::StoredSpan>> =
        std::sync::OnceLock::new();
    TRACE.get_or_init(|| {
        let origin = std::sync::Arc::new(storage::traces::Origin {
            skeleton: ResourceSpans::default(),
        });
        [
            (b'a', None),
            (b'b', Some(b'a')),
            (b'c', Some(b'b')),
            (b'd', Some(b'x')),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (id, parent))| storage::traces::StoredSpan {
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: (id as char).to_string(),
                kind: i as i32,
                start_time_unix_nano: 1_000 * i as u64,
                end_time_unix_nano: 5_000,
                ..Span::default()
            },
            origin: origin.clone(),
        })
        .collect()
    })
}

/// Series in promtool's notation (`input_series` of rule unit tests, `load` of PromQL tests),
/// one per line: all together never expand beyond the load budget.
pub fn promtool_series(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(series) = promql::promqltest::parse_series(text.lines()) {
        let values: usize = series.iter().map(|s| s.values.len()).sum();
        assert!(values <= promql::promqltest::MAX_LOAD_VALUES);
    }
}

/// A rule file as `novamon check rules` (promtool check rules) and the rule manager load it.
pub fn rule_file(data: &[u8]) {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    let path = dir.path().join("rules.yml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(data))
        .expect("writing the rule file");
    rules::check_files(&[path], &mut std::io::sink()).expect("writing to a sink");
}

/// novamon's configuration file, as `--config.file` and a reload load it, then everything
/// start-up derives from it and the text `/api/v1/status/config` shows, which must load again.
pub fn server_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = novamon::config::Config::parse(text, "fuzz.yml") else {
        return;
    };
    let _ = config.remote_write();
    let _ = config.deprecated_keys();
    let _ = config.log_options();
    let _ = config.ingest_limits();
    let _ = config.log_redactor();
    let _ = config.log_bounds();
    let _ = config.trace_limits();
    let _ = config.sender_limits();
    let _ = config.http_listener_options();
    let _ = config.otlp_listener_options();
    let _ = config.tsdb_options();
    let _ = config.trace_store_options();
    let _ = config.log_query_limits();
    let _ = config.engine_options();
    let shown = serde_yaml::to_string(&config).expect("a loaded config renders");
    if let Err(e) = novamon::config::Config::parse(&shown, "shown.yml") {
        panic!("the shown config does not load: {e}\n{shown}");
    }
}

/// A web config file (`--web.config.file`), checked as a load or reload checks it, without
/// reading the certificate files it names.
pub fn web_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = novamon::web::check_text(text);
    }
}

/// A scrape target's answer: the first byte picks the format (odd: OpenMetrics), the rest is the
/// body `ingest::scrape::exposition` parses. Every sample it lets through has a valid metric
/// name and valid label names, unique among those with a value (an empty value is no label, so
/// `a="",a="x"` is fine, as in Prometheus); an error stops the parse, as it fails the scrape.
pub fn scrape_body(data: &[u8]) {
    use ingest::scrape::exposition::{Entry, Format, Parser};
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let format = if first % 2 == 1 {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let mut parser = Parser::new(body, format);
    let metric_name = |n: &str| {
        let mut c = n.bytes();
        matches!(c.next(), Some(b) if b == b'_' || b == b':' || b.is_ascii_alphabetic())
            && c.all(|b| b == b'_' || b == b':' || b.is_ascii_alphanumeric())
    };
    while let Ok(Some(entry)) = parser.next() {
        if let Entry::Sample(s) = entry {
            assert!(metric_name(s.name()), "{:?}", s.name());
            let mut names = Vec::new();
            s.for_each_label(|n, v| {
                assert!(storage::relabel::valid_name(n), "{n:?}");
                if !v.is_empty() {
                    names.push(n);
                }
            });
            let count = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), count, "repeated label names");
        }
    }
}

/// An `http_sd_configs` endpoint's answer: every group it lets through carries the URL label
/// discovery sets, over whatever the answer named itself.
pub fn http_sd_answer(data: &[u8]) {
    if let Ok(groups) = ingest::scrape::http_sd_answer(data) {
        for g in groups {
            assert_eq!(
                g.group.labels.get("__meta_url").map(String::as_str),
                Some("http://sd.invalid/")
            );
        }
    }
}

/// A DNS server's response to a discovery lookup: parsed or refused as malformed, never a
/// panic, and never a loop (compression pointers may point anywhere, themselves included).
pub fn dns_answer(data: &[u8]) {
    if let Ok(records) = ingest::scrape::dns_answer(data) {
        // Each record takes at least 11 bytes (a root name, type, class, TTL, length).
        assert!(records <= data.len() / 11);
    }
}
