//! Crash loop: novamon is killed with SIGKILL 20 times while five writers load it (remote-write,
//! Fluentd forward with chunk acks, Loki push, OTLP/HTTP logs and traces). Afterwards every
//! write that was acknowledged is queryable exactly once. Prints the restart times.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::series::{v1_request, v1_series, V1};
use e2e::{enc, now_ns, wait_until, Novamon};
use rmpv::Value;
use serde_json::json;

const CYCLES: usize = 20;
/// How long each life of the server takes load before it is killed.
const LOAD: Duration = Duration::from_millis(700);
/// Samples per remote-write request.
const BATCH: u64 = 10;

/// The writers, by their index in [`Acked`].
const SAMPLES: usize = 0;
const FORWARD: usize = 1;
const LOKI: usize = 2;
const OTLP_LOGS: usize = 3;
const SPANS: usize = 4;

/// The ids each writer got an acknowledgement for, across all cycles.
type Acked = [Vec<u64>; 5];

/// Where the writers of one life send, and the clock they share.
struct Target {
    url: String,
    otlp_http: String,
    forward: String,
    base_ms: i64,
    base_ns: i64,
}

/// Runs `send(seq)` until `stop`, recording `seq` when it was acknowledged. Sequence numbers
/// continue across lives (`next`), so an id never repeats.
fn writer(
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    slot: usize,
    mut next: u64,
    mut send: Box<dyn FnMut(u64) -> bool + Send>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if send(next) {
                acked.lock().unwrap()[slot].push(next);
            }
            next += 1;
        }
        next
    })
}

fn post(agent: &ureq::Agent, url: &str, content_type: &str, body: Vec<u8>) -> bool {
    agent
        .post(url)
        .header("Content-Type", content_type)
        .send(&body[..])
        .is_ok_and(|r| r.status().is_success())
}

fn remote_write(t: &Target, agent: &ureq::Agent, seq: u64) -> bool {
    let samples: Vec<(i64, f64)> = (0..BATCH)
        .map(|i| {
            let id = seq * BATCH + i;
            (t.base_ms + id as i64 * 10, id as f64)
        })
        .collect();
    let body = v1_request(vec![v1_series(&[("__name__", "crash_loop")], &samples)]);
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    agent
        .post(format!("{}/api/v1/write", t.url))
        .header("Content-Type", V1)
        .header("Content-Encoding", "snappy")
        .send(&body[..])
        .is_ok_and(|r| r.status().is_success())
}

/// One forward connection per life; each message carries a chunk id and waits for its ack.
fn forward(conn: &mut Option<TcpStream>, t: &Target, seq: u64) -> bool {
    if conn.is_none() {
        *conn = TcpStream::connect(&t.forward).ok();
        if let Some(s) = conn {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
    }
    let Some(s) = conn.as_mut() else {
        return false;
    };
    let msg = Value::Array(vec![
        Value::from("crash.fwd"),
        Value::from((t.base_ns / 1_000_000_000) + seq as i64 / 1000),
        Value::Map(vec![(
            Value::from("log"),
            Value::from(format!("fwd {seq}")),
        )]),
        Value::Map(vec![(Value::from("chunk"), Value::from(format!("c{seq}")))]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &msg).unwrap();
    if s.write_all(&out).is_err() {
        *conn = None;
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                *conn = None;
                return false;
            }
        }
        if let Ok(v) = rmpv::decode::read_value(&mut &buf[..]) {
            let want = Value::Map(vec![(Value::from("ack"), Value::from(format!("c{seq}")))]);
            return v == want;
        }
    }
}

fn loki(t: &Target, agent: &ureq::Agent, seq: u64) -> bool {
    let body = json!({"streams": [{
        "stream": {"job": "crash_loki"},
        "values": [[(t.base_ns + seq as i64 * 1000).to_string(), format!("loki {seq}")]],
    }]});
    post(
        agent,
        &format!("{}/loki/api/v1/push", t.url),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
}

fn otlp_log(t: &Target, agent: &ureq::Agent, seq: u64) -> bool {
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "crash-otlp"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": (t.base_ns + seq as i64 * 1000).to_string(),
            "body": {"stringValue": format!("otlp {seq}")},
        }]}],
    }]});
    post(
        agent,
        &format!("{}/v1/logs", t.otlp_http),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
}

fn trace_id(seq: u64) -> String {
    format!("{:032x}", 0x00c0_ffee_0000_0000_u128 + seq as u128)
}

fn otlp_span(t: &Target, agent: &ureq::Agent, seq: u64) -> bool {
    let start = t.base_ns + seq as i64 * 1000;
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "crash-traces"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id(seq),
            "spanId": format!("{:016x}", seq + 1),
            "name": "op",
            "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string(),
        }]}],
    }]});
    post(
        agent,
        &format!("{}/v1/traces", t.otlp_http),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
}

/// Each acknowledged id's line is present exactly once; lines of writes that were cut off
/// before their ack may be there too, but also only once.
fn check_lines(what: &str, lines: &[String], prefix: &str, acked: &[u64]) {
    let mut seen = std::collections::HashMap::new();
    for l in lines {
        *seen.entry(l.as_str()).or_insert(0u32) += 1;
    }
    for (line, count) in &seen {
        assert_eq!(*count, 1, "{what}: {line:?} stored {count} times");
    }
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(format!("{prefix}{id}").as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn twenty_kill_9s_under_mixed_load_lose_and_duplicate_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base_ms = (now_ns() / 1_000_000) - 1_800_000;
    let base_ns = now_ns() - 1_800_000_000_000;
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut next = [0u64; 5];
    let mut restarts = Vec::new();

    for _ in 0..CYCLES {
        let started = Instant::now();
        let mut n = Novamon::start(&data, &[]);
        restarts.push(started.elapsed());
        let t = Arc::new(Target {
            url: n.url.clone(),
            otlp_http: n.otlp_http_url.clone(),
            forward: n.forward_addr.clone(),
            base_ms,
            base_ns,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let agent = n.agent.clone();
        let senders: [Box<dyn FnMut(u64) -> bool + Send>; 5] = [
            {
                let (t, agent) = (t.clone(), agent.clone());
                Box::new(move |s| remote_write(&t, &agent, s))
            },
            {
                let t = t.clone();
                let mut conn = None;
                Box::new(move |s| forward(&mut conn, &t, s))
            },
            {
                let (t, agent) = (t.clone(), agent.clone());
                Box::new(move |s| loki(&t, &agent, s))
            },
            {
                let (t, agent) = (t.clone(), agent.clone());
                Box::new(move |s| otlp_log(&t, &agent, s))
            },
            {
                let (t, agent) = (t.clone(), agent.clone());
                Box::new(move |s| otlp_span(&t, &agent, s))
            },
        ];
        let handles: Vec<JoinHandle<u64>> = senders
            .into_iter()
            .enumerate()
            .map(|(slot, send)| writer(stop.clone(), acked.clone(), slot, next[slot], send))
            .collect();
        std::thread::sleep(LOAD);
        let status = n.process.signal_and_wait("KILL", Duration::from_secs(10));
        assert!(!status.success());
        stop.store(true, Ordering::SeqCst);
        for (i, h) in handles.into_iter().enumerate() {
            next[i] = h.join().unwrap();
        }
    }

    let n = Novamon::start(&data, &[]);
    let acked = acked.lock().unwrap();
    for (what, ids) in [
        ("remote-write requests", &acked[SAMPLES]),
        ("forward messages", &acked[FORWARD]),
        ("Loki pushes", &acked[LOKI]),
        ("OTLP log requests", &acked[OTLP_LOGS]),
        ("OTLP span requests", &acked[SPANS]),
    ] {
        assert!(
            ids.len() >= CYCLES,
            "only {} {what} acknowledged over {CYCLES} lives: the load did not run",
            ids.len()
        );
    }

    // Samples: each acknowledged one is there with its value, and no timestamp twice.
    let written = next[SAMPLES] * BATCH;
    let end_ms = base_ms + written as i64 * 10;
    let body = n.get_ok(&format!(
        "/api/v1/query?query={}&time={}",
        enc(&format!(
            "count_over_time(crash_loop[{}ms])",
            written * 10 + 1000
        )),
        end_ms as f64 / 1000.0
    ));
    let stored = body["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(
        stored >= acked[SAMPLES].len() as u64 * BATCH && stored <= written,
        "{stored} samples stored, {} acknowledged, {written} sent",
        acked[SAMPLES].len() as u64 * BATCH
    );
    for &seq in &acked[SAMPLES] {
        let at = base_ms + (seq * BATCH) as i64 * 10;
        let body = n.get_ok(&format!(
            "/api/v1/query_range?query=crash_loop&start={}&end={}&step=0.01",
            at as f64 / 1000.0,
            (at + (BATCH as i64 - 1) * 10) as f64 / 1000.0
        ));
        let values = body["data"]["result"][0]["values"].as_array().cloned();
        let got: Vec<String> = values
            .unwrap_or_default()
            .iter()
            .map(|v| v[1].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = (0..BATCH).map(|i| (seq * BATCH + i).to_string()).collect();
        assert_eq!(got, want, "acknowledged request {seq} lost samples");
    }

    // Logs: the append log is replayed into the index after a restart; wait until every
    // acknowledged line of each source is searchable, then check nothing came twice.
    for (what, selector, prefix, ids) in [
        ("forward", r#"{tag="crash.fwd"}"#, "fwd ", &acked[FORWARD]),
        ("Loki push", r#"{job="crash_loki"}"#, "loki ", &acked[LOKI]),
        (
            "OTLP logs",
            r#"{service_name="crash-otlp"}"#,
            "otlp ",
            &acked[OTLP_LOGS],
        ),
    ] {
        let start = base_ns - 3_600_000_000_000;
        let mut lines = Vec::new();
        wait_until(Duration::from_secs(60), || {
            lines = n.log_lines(selector, start);
            lines.len() >= ids.len()
        });
        check_lines(what, &lines, prefix, ids);
    }

    // Spans: every acknowledged trace has its one span.
    for &seq in &acked[SPANS] {
        let body = n.get_ok(&format!("/jaeger/api/traces/{}", trace_id(seq)));
        let spans = body["data"][0]["spans"].as_array().map_or(0, Vec::len);
        assert_eq!(spans, 1, "trace of acknowledged span {seq}: {body}");
    }

    restarts.sort();
    eprintln!(
        "crash loop: {CYCLES} kill -9s; acknowledged: {} remote-write requests, {} forward \
         messages, {} Loki pushes, {} OTLP log and {} OTLP span requests; start-up to ready \
         min {:?}, median {:?}, max {:?}",
        acked[SAMPLES].len(),
        acked[FORWARD].len(),
        acked[LOKI].len(),
        acked[OTLP_LOGS].len(),
        acked[SPANS].len(),
        restarts[0],
        restarts[CYCLES / 2],
        restarts[CYCLES - 1],
    );
}
