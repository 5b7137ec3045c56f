//! The exporter over real stores holding two finished days (three and two days ago): each
//! day of each signal written once, rewritten identically, and read back by the tables
//! together with the local days as the local stores alone answer.

use std::path::Path as FsPath;
use std::sync::Mutex;

use datafusion::arrow::util::pretty::pretty_format_batches;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use storage::logs::{LogOptions, LogRecord, LogStore};
use storage::traces::{TraceStore, TraceStoreOptions};
use storage::{AppendMode, Appendable, Labels, Sample, SeriesBatch, Tsdb};

use super::*;
use crate::history::Retention;
use crate::{SqlEngine, SqlOptions};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

struct Stores {
    _dir: tempfile::TempDir,
    tsdb: Arc<Tsdb>,
    logs: Arc<LogStore>,
    traces: Arc<TraceStore>,
    /// The first of the two days, days since the epoch.
    first_day: i64,
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Per day: `load{instance=a}` and `load{instance=b}` every 10 minutes (values i and 2i),
/// three log lines per hour (levels cycling), one span per hour of `shop` or `cart`.
fn stores() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let today = now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 / DAY_MS;
    let first_day = today - 3;
    let tsdb = Arc::new(Tsdb::open(&dir.path().join("tsdb"), Default::default()).unwrap());
    let mut app = tsdb.appender(AppendMode::AllOrNothing);
    for (instance, scale) in [("a", 1.0), ("b", 2.0)] {
        app.append(SeriesBatch {
            labels: Labels::from_pairs([("__name__", "load"), ("instance", instance)]),
            samples: (0..2 * 144)
                .map(|i| Sample {
                    t: first_day * DAY_MS + i * 600_000,
                    v: i as f64 * scale,
                })
                .collect(),
            histograms: Vec::new(),
        });
    }
    app.commit().unwrap();

    let logs = Arc::new(LogStore::open(&dir.path().join("logs"), LogOptions::default()).unwrap());
    let levels = ["info", "warn", "error"];
    let records: Vec<LogRecord> = (0..2 * 24 * 3)
        .map(|i: i64| LogRecord {
            ts_ns: (first_day * DAY_MS + i * HOUR_MS / 3) * 1_000_000,
            labels: Labels::from_pairs([("app", if i % 2 == 0 { "a" } else { "b" })]),
            line: format!("line {i}"),
            metadata: vec![(
                "detected_level".to_owned(),
                levels[i as usize % 3].to_owned(),
            )],
        })
        .collect();
    logs.append(&records).unwrap();
    logs.sync().unwrap();

    let traces = Arc::new(
        TraceStore::open(&dir.path().join("traces"), TraceStoreOptions::default()).unwrap(),
    );
    let resource = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(service.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    let span = |i: i64| {
        let start = ((first_day * DAY_MS + i * HOUR_MS) * 1_000_000) as u64;
        Span {
            trace_id: vec![i as u8 + 1; 16],
            span_id: vec![i as u8 + 1; 8],
            name: format!("op {}", i % 4),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + (i as u64 + 1) * 1_000_000,
            ..Default::default()
        }
    };
    traces
        .write(&[
            resource("shop", (0..48).filter(|i| i % 3 != 0).map(span).collect()),
            resource("cart", (0..48).filter(|i| i % 3 == 0).map(span).collect()),
        ])
        .unwrap();
    Stores {
        _dir: dir,
        tsdb,
        logs,
        traces,
        first_day,
    }
}

/// Retention under which the stores hold `first_day + 1` onward whole (the retention starts
/// an hour into `first_day`).
fn retention_from(first_day: i64) -> Retention {
    let now_ms = now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let keep = Duration::from_millis((now_ms - first_day * DAY_MS - HOUR_MS) as u64);
    Retention {
        metrics: keep,
        logs: keep,
        spans: keep,
    }
}

const FIFTEEN_DAYS: Retention = Retention {
    metrics: Duration::from_secs(15 * 86_400),
    logs: Duration::from_secs(15 * 86_400),
    spans: Duration::from_secs(15 * 86_400),
};

#[derive(Default)]
struct Seen {
    days: Mutex<Vec<(Signal, u64, u64)>>,
    passes: Mutex<Vec<bool>>,
}

impl ExportObserver for Seen {
    fn day_exported(&self, signal: Signal, rows: u64, bytes: u64) {
        self.days.lock().unwrap().push((signal, rows, bytes));
    }

    fn pass_finished(&self, ok: bool, _at: SystemTime) {
        self.passes.lock().unwrap().push(ok);
    }
}

fn exporter(s: &Stores, history: &History) -> Exporter {
    Exporter::new(
        s.tsdb.clone(),
        s.logs.clone(),
        s.traces.clone(),
        history.clone(),
        Duration::from_secs(3600),
    )
}

/// Every file under `dir` (relative path → bytes).
fn files(dir: &FsPath) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn finished_days_are_written_once_and_rewritten_identically() {
    let s = stores();
    let out = tempfile::tempdir().unwrap();
    let history = History::local(out.path(), FIFTEEN_DAYS).unwrap();
    let seen = Seen::default();
    let report = exporter(&s, &history).run(now(), &seen).await.unwrap();
    let date = |d| crate::history::date_of_day(s.first_day + d);
    let mut expected = Vec::new();
    for signal in Signal::ALL {
        expected.push((signal, date(0)));
        expected.push((signal, date(1)));
    }
    assert_eq!(report.written, expected);
    let rows: Vec<(Signal, u64)> = seen
        .days
        .lock()
        .unwrap()
        .iter()
        .map(|(s, r, _)| (*s, *r))
        .collect();
    assert_eq!(
        rows,
        [
            (Signal::Metrics, 288),
            (Signal::Metrics, 288),
            (Signal::Logs, 72),
            (Signal::Logs, 72),
            (Signal::Spans, 24),
            (Signal::Spans, 24),
        ]
    );
    assert_eq!(*seen.passes.lock().unwrap(), [true]);
    let written = files(out.path());
    let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("signal=logs/date={}/part-0.parquet", date(0)),
            format!("signal=logs/date={}/part-0.parquet", date(1)),
            format!("signal=metrics/date={}/part-0.parquet", date(0)),
            format!("signal=metrics/date={}/part-0.parquet", date(1)),
            format!("signal=spans/date={}/part-0.parquet", date(0)),
            format!("signal=spans/date={}/part-0.parquet", date(1)),
        ]
    );
    for (name, bytes) in &written {
        assert_eq!(&bytes[..4], b"PAR1", "{name}");
    }

    // A second pass finds every day written.
    let again = exporter(&s, &history).run(now(), &seen).await.unwrap();
    assert_eq!(again.written, []);

    // A day lost (as after a crash before its rename) is written again, byte for byte; so is
    // a whole export into another directory.
    let lost = out
        .path()
        .join(format!("signal=spans/date={}/part-0.parquet", date(1)));
    std::fs::remove_file(&lost).unwrap();
    let redo = exporter(&s, &history).run(now(), &seen).await.unwrap();
    assert_eq!(redo.written, [(Signal::Spans, date(1))]);
    assert_eq!(files(out.path()), written);
    let other = tempfile::tempdir().unwrap();
    let elsewhere = History::local(other.path(), FIFTEEN_DAYS).unwrap();
    exporter(&s, &elsewhere).run(now(), &seen).await.unwrap();
    assert_eq!(files(other.path()), written);
}

#[tokio::test]
async fn a_day_is_not_written_before_it_is_finished() {
    let s = stores();
    let out = tempfile::tempdir().unwrap();
    let history = History::local(out.path(), FIFTEEN_DAYS).unwrap();
    // Half an hour into the second day's next day, with an hour's delay: only the first day.
    let at = UNIX_EPOCH + Duration::from_millis(((s.first_day + 2) * DAY_MS + HOUR_MS / 2) as u64);
    let report = exporter(&s, &history)
        .run(at, &Seen::default())
        .await
        .unwrap();
    assert_eq!(
        report.written,
        Signal::ALL
            .map(|signal| (signal, crate::history::date_of_day(s.first_day)))
            .to_vec()
    );
}

async fn answer(engine: &SqlEngine, sql: &str) -> String {
    let r = engine
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&r.batches).unwrap().to_string()
}

#[tokio::test]
async fn exported_and_local_days_answer_as_the_local_stores() {
    let s = stores();
    let out = tempfile::tempdir().unwrap();
    let history = History::local(out.path(), FIFTEEN_DAYS).unwrap();
    exporter(&s, &history)
        .run(now(), &Seen::default())
        .await
        .unwrap();
    let local = SqlEngine::new(
        s.tsdb.clone(),
        s.logs.clone(),
        s.traces.clone(),
        SqlOptions::default(),
    )
    .unwrap();
    // The stores still hold both days; the history engine reads the first from Parquet.
    let dir = out.path();
    let mixed = local
        .clone()
        .with_history(History::local(dir, retention_from(s.first_day)).unwrap());
    let second_day = to_ms(s.first_day + 1);
    let queries = [
        "SELECT instance, count(*), sum(value), min(ts), max(ts) FROM metrics \
         GROUP BY instance ORDER BY instance"
            .to_owned(),
        format!(
            "SELECT instance, count(*), sum(value) FROM metrics WHERE metric = 'load' \
             AND ts < to_timestamp_millis({second_day}) + interval '1 hour' \
             AND labels['instance'] = 'b' GROUP BY instance"
        ),
        "SELECT level, labels['app'] AS app, count(*), min(line) FROM logs \
         GROUP BY level, app ORDER BY level, app"
            .to_owned(),
        "SELECT service, count(*), sum(duration_ns), max(start) FROM spans \
         GROUP BY service ORDER BY service"
            .to_owned(),
        "SELECT ts, value FROM metrics ORDER BY ts DESC, value LIMIT 3".to_owned(),
        format!(
            "SELECT count(*) FROM spans WHERE service = 'cart' \
             AND start < to_timestamp_millis({second_day})"
        ),
    ];
    for q in &queries {
        assert_eq!(answer(&mixed, q).await, answer(&local, q).await, "{q}");
    }

    // The first day comes from its files: without them it is gone from the answer.
    let first = crate::history::date_of_day(s.first_day);
    std::fs::remove_file(dir.join(format!("signal=metrics/date={first}/part-0.parquet"))).unwrap();
    assert_eq!(
        answer(&mixed, "SELECT count(*) AS n FROM metrics").await,
        answer(
            &local,
            &format!(
                "SELECT count(*) AS n FROM metrics WHERE ts >= to_timestamp_millis({second_day})"
            )
        )
        .await,
    );
}

fn to_ms(day: i64) -> i64 {
    day * DAY_MS
}
