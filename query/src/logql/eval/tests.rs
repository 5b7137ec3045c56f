use super::*;
use crate::logql::parse;
use storage::logs::{LogOptions, LogRecord};
use storage::Labels;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * S;

fn engine(records: Vec<LogRecord>) -> (tempfile::TempDir, LogEngine) {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        retention: std::time::Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let store = Arc::new(LogStore::open(dir.path(), opts).unwrap());
    store.append(&records).unwrap();
    store.sync().unwrap();
    (dir, LogEngine::new(store, 1_000_000))
}

fn rec(secs: i64, app: &str, line: &str) -> LogRecord {
    LogRecord {
        ts_ns: T0 + secs * S,
        labels: Labels::from_pairs([("app", app)]),
        line: line.into(),
        metadata: vec![],
    }
}

fn fixture() -> (tempfile::TempDir, LogEngine) {
    engine(vec![
        rec(
            1,
            "api",
            r#"{"level":"info","status":200,"latency":"120ms","msg":"ok"}"#,
        ),
        rec(
            2,
            "api",
            r#"{"level":"error","status":500,"latency":"2.5s","msg":"boom"}"#,
        ),
        rec(
            3,
            "api",
            r#"{"level":"info","status":404,"latency":"30ms","msg":"missing"}"#,
        ),
        rec(4, "web", "level=info method=GET path=/a bytes=10KB"),
        rec(5, "web", "level=warn method=POST path=/b bytes=2KiB"),
        rec(65, "web", "level=info method=GET path=/c bytes=1"),
    ])
}

fn logs(e: &LogEngine, q: &str, dir: Direction, limit: usize) -> Vec<(LabelMap, Vec<String>)> {
    let Expr::Log(l) = parse(q).unwrap() else {
        panic!("not a log query")
    };
    e.select_logs(&l, T0, T0 + 3600 * S, limit, dir)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels, s.entries.into_iter().map(|e| e.1).collect()))
        .collect()
}

fn metric(
    e: &LogEngine,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Vec<(LabelMap, Vec<(i64, f64)>)> {
    let Expr::Metric(m) = parse(q).unwrap() else {
        panic!("not a metric query")
    };
    let steps = Steps {
        start_ns: T0 + start * S,
        end_ns: T0 + end * S,
        step_ns: step * S,
    };
    e.eval_metric(&m, steps)
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.labels,
                s.points
                    .into_iter()
                    .map(|(t, v)| ((t - T0) / S, v))
                    .collect(),
            )
        })
        .collect()
}

fn lm(pairs: &[(&str, &str)]) -> LabelMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn line_filters_chain_and_limit_follows_direction() {
    let (_d, e) = fixture();
    let got = logs(
        &e,
        r#"{app=~"api|web"} |= "level" != "error" |~ "GET|missing""#,
        Direction::Forward,
        100,
    );
    let lines: Vec<_> = got.iter().flat_map(|s| s.1.clone()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let back = logs(&e, r#"{app="web"}"#, Direction::Backward, 2);
    assert_eq!(
        back[0].1,
        vec![
            "level=info method=GET path=/c bytes=1",
            "level=warn method=POST path=/b bytes=2KiB"
        ]
    );
}

#[test]
fn json_parser_label_filters_with_numbers_and_durations_and_line_format() {
    let (_d, e) = fixture();
    let got = logs(
        &e,
        r#"{app="api"} | json | status >= 400 and latency > 1s | line_format "{{.level}}: {{.msg}}""#,
        Direction::Forward,
        100,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec!["error: boom"]);
    assert_eq!(got[0].0.get("status").map(String::as_str), Some("500"));
    let got = logs(
        &e,
        r#"{app="api"} | json lvl="level" | keep app, lvl | lvl="info""#,
        Direction::Forward,
        100,
    );
    assert_eq!(
        got,
        vec![(
            lm(&[("app", "api"), ("lvl", "info")]),
            vec![
                r#"{"level":"info","status":200,"latency":"120ms","msg":"ok"}"#.to_string(),
                r#"{"level":"info","status":404,"latency":"30ms","msg":"missing"}"#.to_string()
            ]
        )]
    );
}

#[test]
fn logfmt_bytes_comparison_label_format_and_drop() {
    let (_d, e) = fixture();
    let got = logs(
        &e,
        r#"{app="web"} | logfmt | bytes > 1KB | label_format verb=method | drop path, level"#,
        Direction::Forward,
        100,
    );
    let labels: Vec<_> = got.iter().map(|s| s.0.clone()).collect();
    assert_eq!(
        labels,
        vec![
            lm(&[("app", "web"), ("bytes", "10KB"), ("verb", "GET")]),
            lm(&[("app", "web"), ("bytes", "2KiB"), ("verb", "POST")]),
        ]
    );
}

#[test]
fn regexp_pattern_and_decolorize() {
    let (_d, e) = engine(vec![rec(1, "x", "\x1b[31mGET /a 200\x1b[0m")]);
    let got = logs(
        &e,
        r#"{app="x"} | decolorize | regexp "(?P<method>\\w+) (?P<path>\\S+)" | pattern "<_> <_> <code>""#,
        Direction::Forward,
        10,
    );
    assert_eq!(got[0].1, vec!["GET /a 200"]);
    assert_eq!(
        got[0].0,
        lm(&[
            ("app", "x"),
            ("code", "200"),
            ("method", "GET"),
            ("path", "/a")
        ])
    );
}

#[test]
fn count_rate_and_bytes_over_time_by_hand() {
    let (_d, e) = fixture();
    // Steps at 60 and 120: window (0,60] holds api@1,2,3 and web@4,5; (60,120] holds web@65.
    let got = metric(&e, r#"count_over_time({app=~".+"}[1m])"#, 60, 120, 60);
    assert_eq!(
        got,
        vec![
            (lm(&[("app", "api")]), vec![(60, 3.0)]),
            (lm(&[("app", "web")]), vec![(60, 2.0), (120, 1.0)])
        ]
    );
    let got = metric(&e, r#"sum(rate({app=~".+"}[1m]))"#, 60, 60, 60);
    assert_eq!(got, vec![(lm(&[]), vec![(60, 3.0 / 60.0 + 2.0 / 60.0)])]);
    let web4 = "level=info method=GET path=/a bytes=10KB".len() as f64;
    let web5 = "level=warn method=POST path=/b bytes=2KiB".len() as f64;
    let got = metric(&e, r#"bytes_over_time({app="web"}[1m])"#, 60, 60, 60);
    assert_eq!(got[0].1, vec![(60, web4 + web5)]);
    let got = metric(&e, r#"bytes_rate({app="web"}[1m])"#, 60, 60, 60);
    assert_eq!(got[0].1, vec![(60, (web4 + web5) / 60.0)]);
}

#[test]
fn unwrap_aggregations_and_quantiles_by_hand() {
    let (_d, e) = fixture();
    let q = |f: &str| {
        metric(
            &e,
            &format!(r#"{f}({{app="api"}} | json | unwrap status [1m]) by (app)"#),
            60,
            60,
            60,
        )
    };
    assert_eq!(q("sum_over_time")[0].1, vec![(60, 1104.0)]);
    assert_eq!(q("avg_over_time")[0].1, vec![(60, 368.0)]);
    assert_eq!(q("max_over_time")[0].1, vec![(60, 500.0)]);
    assert_eq!(q("min_over_time")[0].1, vec![(60, 200.0)]);
    assert_eq!(q("last_over_time")[0].1, vec![(60, 404.0)]);
    // Sorted 200, 404, 500: the 0.5 quantile is 404, the 0.75 one 404 + 0.5 * 96 = 452.
    let got = metric(
        &e,
        r#"quantile_over_time(0.75, {app="api"} | json | unwrap status [1m]) by (app)"#,
        60,
        60,
        60,
    );
    assert_eq!(got[0].1, vec![(60, 452.0)]);
    let got = metric(
        &e,
        r#"sum_over_time({app="api"} | json | unwrap duration(latency) [1m]) by (app)"#,
        60,
        60,
        60,
    );
    assert!((got[0].1[0].1 - 2.65).abs() < 1e-9, "{got:?}");
}

#[test]
fn vector_aggregations_topk_and_binary_operations() {
    let (_d, e) = fixture();
    let got = metric(
        &e,
        r#"sum by (level) (count_over_time({app=~".+"} | json | logfmt [1m]))"#,
        60,
        60,
        60,
    );
    assert_eq!(
        got,
        vec![
            (lm(&[("level", "error")]), vec![(60, 1.0)]),
            (lm(&[("level", "info")]), vec![(60, 3.0)]),
            (lm(&[("level", "warn")]), vec![(60, 1.0)]),
        ]
    );
    let got = metric(
        &e,
        r#"topk(1, count_over_time({app=~".+"}[1m]))"#,
        60,
        60,
        60,
    );
    assert_eq!(got, vec![(lm(&[("app", "api")]), vec![(60, 3.0)])]);
    let got = metric(
        &e,
        r#"count_over_time({app="api"}[1m]) * 2 + 1"#,
        60,
        60,
        60,
    );
    assert_eq!(got[0].1, vec![(60, 7.0)]);
    let got = metric(
        &e,
        r#"sum(count_over_time({app="api"}[1m])) / sum(count_over_time({app=~".+"}[1m]))"#,
        60,
        60,
        60,
    );
    assert_eq!(got[0].1, vec![(60, 0.6)]);
    let got = metric(&e, r#"count_over_time({app=~".+"}[1m]) > 2"#, 60, 60, 60);
    assert_eq!(got, vec![(lm(&[("app", "api")]), vec![(60, 3.0)])]);
    let got = metric(&e, r#"absent_over_time({app="nope"}[1m])"#, 60, 60, 60);
    assert_eq!(got, vec![(lm(&[("app", "nope")]), vec![(60, 1.0)])]);
    assert_eq!(
        metric(&e, r#"absent_over_time({app="api"}[1m])"#, 60, 60, 60),
        vec![]
    );
    let got = metric(
        &e,
        r#"max without (app) (count_over_time({app=~".+"}[1m]))"#,
        60,
        60,
        60,
    );
    assert_eq!(got, vec![(lm(&[]), vec![(60, 3.0)])]);
}
