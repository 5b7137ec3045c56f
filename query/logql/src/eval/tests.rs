use super::*;
use crate::parse;
use storage::logs::{LogOptions, LogRecord, LogStore};
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
    let limits = QueryLimits {
        max_lines: 1_000_000,
        ..QueryLimits::default()
    };
    (dir, LogEngine::new(store, limits))
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

/// The one step at 60s, whose [1m] window holds the first minute of lines.
fn metric_at_60(e: &LogEngine, q: &str) -> Vec<(LabelMap, Vec<(i64, f64)>)> {
    metric(e, q, 60, 60, 60)
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
    let got = metric_at_60(&e, r#"sum(rate({app=~".+"}[1m]))"#);
    assert_eq!(got, vec![(lm(&[]), vec![(60, 3.0 / 60.0 + 2.0 / 60.0)])]);
    let web4 = "level=info method=GET path=/a bytes=10KB".len() as f64;
    let web5 = "level=warn method=POST path=/b bytes=2KiB".len() as f64;
    let got = metric_at_60(&e, r#"bytes_over_time({app="web"}[1m])"#);
    assert_eq!(got[0].1, vec![(60, web4 + web5)]);
    let got = metric_at_60(&e, r#"bytes_rate({app="web"}[1m])"#);
    assert_eq!(got[0].1, vec![(60, (web4 + web5) / 60.0)]);
}

#[test]
fn unwrap_aggregations_and_quantiles_by_hand() {
    let (_d, e) = fixture();
    let q = |f: &str| {
        metric_at_60(
            &e,
            &format!(r#"{f}({{app="api"}} | json | unwrap status [1m]) by (app)"#),
        )
    };
    assert_eq!(q("sum_over_time")[0].1, vec![(60, 1104.0)]);
    assert_eq!(q("avg_over_time")[0].1, vec![(60, 368.0)]);
    assert_eq!(q("max_over_time")[0].1, vec![(60, 500.0)]);
    assert_eq!(q("min_over_time")[0].1, vec![(60, 200.0)]);
    assert_eq!(q("last_over_time")[0].1, vec![(60, 404.0)]);
    // Sorted 200, 404, 500: the 0.5 quantile is 404, the 0.75 one 404 + 0.5 * 96 = 452.
    let got = metric_at_60(
        &e,
        r#"quantile_over_time(0.75, {app="api"} | json | unwrap status [1m]) by (app)"#,
    );
    assert_eq!(got[0].1, vec![(60, 452.0)]);
    let got = metric_at_60(
        &e,
        r#"sum_over_time({app="api"} | json | unwrap duration(latency) [1m]) by (app)"#,
    );
    assert!((got[0].1[0].1 - 2.65).abs() < 1e-9, "{got:?}");
}

#[test]
fn vector_literals_are_vectors_in_binary_operations() {
    let (_d, e) = fixture();
    // Grafana's Loki "Save & test" query.
    let got = metric(&e, "vector(1)+vector(1)", 60, 120, 60);
    assert_eq!(got, vec![(lm(&[]), vec![(60, 2.0), (120, 2.0)])]);
    // A vector literal on one side keeps vector matching: no label set matches `{app=...}`.
    let got = metric_at_60(&e, r#"count_over_time({app=~".+"}[1m]) + vector(1)"#);
    assert_eq!(got, vec![]);
    let got = metric_at_60(&e, r#"sum(count_over_time({app=~".+"}[1m])) * vector(-2)"#);
    assert_eq!(got, vec![(lm(&[]), vec![(60, -10.0)])]);
}

#[test]
fn vector_aggregations_topk_and_binary_operations() {
    let (_d, e) = fixture();
    let got = metric_at_60(
        &e,
        // Each line fails one of the two parsers; dropping the error labels accepts that.
        r#"sum by (level) (count_over_time({app=~".+"} | json | logfmt | drop __error__, __error_details__ [1m]))"#,
    );
    assert_eq!(
        got,
        vec![
            (lm(&[("level", "error")]), vec![(60, 1.0)]),
            (lm(&[("level", "info")]), vec![(60, 3.0)]),
            (lm(&[("level", "warn")]), vec![(60, 1.0)]),
        ]
    );
    let got = metric_at_60(&e, r#"topk(1, count_over_time({app=~".+"}[1m]))"#);
    assert_eq!(got, vec![(lm(&[("app", "api")]), vec![(60, 3.0)])]);
    let got = metric_at_60(&e, r#"count_over_time({app="api"}[1m]) * 2 + 1"#);
    assert_eq!(got[0].1, vec![(60, 7.0)]);
    let got = metric_at_60(
        &e,
        r#"sum(count_over_time({app="api"}[1m])) / sum(count_over_time({app=~".+"}[1m]))"#,
    );
    assert_eq!(got[0].1, vec![(60, 0.6)]);
    let got = metric_at_60(&e, r#"count_over_time({app=~".+"}[1m]) > 2"#);
    assert_eq!(got, vec![(lm(&[("app", "api")]), vec![(60, 3.0)])]);
    let got = metric_at_60(&e, r#"absent_over_time({app="nope"}[1m])"#);
    assert_eq!(got, vec![(lm(&[("app", "nope")]), vec![(60, 1.0)])]);
    assert_eq!(
        metric_at_60(&e, r#"absent_over_time({app="api"}[1m])"#),
        vec![]
    );
    let got = metric_at_60(
        &e,
        r#"max without (app) (count_over_time({app=~".+"}[1m]))"#,
    );
    assert_eq!(got, vec![(lm(&[]), vec![(60, 3.0)])]);
}

/// Metric query `q` evaluated at one step, a minute after `T0`.
fn metric_at(e: &LogEngine, q: &str) -> Result<Vec<Series>, EvalError> {
    let Expr::Metric(m) = parse(q).unwrap() else {
        panic!("not a metric query")
    };
    let steps = Steps {
        start_ns: T0 + 60 * S,
        end_ns: T0 + 60 * S,
        step_ns: S,
    };
    e.eval_metric(&m, steps)
}

fn metric_err(e: &LogEngine, q: &str) -> String {
    metric_at(e, q).unwrap_err().to_string()
}

#[test]
fn errors_tag_lines_instead_of_dropping_them_and_label_filters_select_them() {
    let (_d, e) = engine(vec![
        rec(1, "mix", r#"{"status":"200","took":"5ms"}"#),
        rec(2, "mix", "not json at all"),
        rec(3, "mix", r#"{"status":"abc","took":"slow"}"#),
        rec(4, "mix", r#"{"took":"1s"}"#),
    ]);
    let all = |q: &str| logs(&e, q, Direction::Forward, 100);
    // The line that is not JSON is kept, tagged, with details.
    let got = all(r#"{app="mix"} | json"#);
    let bad = got
        .iter()
        .find(|(l, _)| l.get("__error__").map(String::as_str) == Some("JSONParserErr"))
        .expect("tagged line");
    assert_eq!(bad.1, ["not json at all"]);
    assert!(bad.0.contains_key("__error_details__"), "{:?}", bad.0);
    // A numeric comparison: a missing label drops the line, an unconvertible value keeps it
    // tagged LabelFilterErr, and a line tagged earlier passes untouched.
    let got = all(r#"{app="mix"} | json | status > 100"#);
    let lines: Vec<(&str, Option<&str>)> = got
        .iter()
        .flat_map(|(l, v)| {
            v.iter()
                .map(move |x| (x.as_str(), l.get("__error__").map(String::as_str)))
        })
        .collect();
    assert_eq!(lines.len(), 3, "{got:?}");
    assert!(lines.contains(&(r#"{"status":"200","took":"5ms"}"#, None)));
    assert!(lines.contains(&("not json at all", Some("JSONParserErr"))));
    assert!(lines.contains(&(r#"{"status":"abc","took":"slow"}"#, Some("LabelFilterErr"))));
    let details = got
        .iter()
        .find(|(l, _)| l.get("__error__").map(String::as_str) == Some("LabelFilterErr"))
        .and_then(|(l, _)| l.get("__error_details__").cloned());
    assert_eq!(
        details.as_deref(),
        Some(r#"strconv.ParseFloat: parsing "abc": invalid syntax"#)
    );
    // `__error__=""` keeps only clean lines.
    let clean = all(r#"{app="mix"} | json | status > 100 | __error__="""#);
    assert_eq!(clean.iter().map(|(_, v)| v.len()).sum::<usize>(), 1);
    // Logfmt errors name the position; template errors keep the line.
    let got =
        all(r#"{app="mix"} |= "not json" | logfmt | line_format "{{ substr \"x\" 1 __line__ }}""#);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, ["not json at all"]);
    assert_eq!(
        got[0].0.get("__error__").map(String::as_str),
        Some("TemplateFormatErr")
    );
    let got = all(r#"{app="mix"} |= "5ms" | logfmt"#);
    assert_eq!(
        got[0].0.get("__error__").map(String::as_str),
        Some("LogfmtParserErr")
    );
    assert_eq!(
        got[0].0.get("__error_details__").map(String::as_str),
        Some("logfmt syntax error at pos 2 : unexpected '\"'")
    );
}

#[test]
fn metric_queries_over_errors_fail_with_lokis_text_unless_filtered() {
    let (_d, e) = engine(vec![
        rec(1, "mix", r#"{"took":"5ms"}"#),
        rec(2, "mix", "not json"),
        rec(3, "mix", r#"{"took":"slow"}"#),
    ]);
    let err = metric_err(&e, r#"count_over_time({app="mix"} | json [1m])"#);
    assert!(
        err.starts_with("pipeline error: 'JSONParserErr' for series: '{__error__=\"JSONParserErr\", __error_details__=\""),
        "{err}"
    );
    assert!(err.ends_with(
        "Use a label filter to intentionally skip this error. (e.g | __error__!=\"JSONParserErr\").\n\
         To skip all potential errors you can match empty errors.(e.g __error__=\"\")\n\
         The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )\n"
    ), "{err}");
    // Filtered: counts only the clean lines.
    let ok = metric(
        &e,
        r#"count_over_time({app="mix"} | json | __error__="" [1m])"#,
        60,
        60,
        1,
    );
    assert_eq!(ok.iter().map(|s| s.1[0].1).sum::<f64>(), 2.0);
    // Checked on the range aggregation's series, before any vector aggregation groups them.
    let err = metric_err(
        &e,
        r#"sum by (app) (count_over_time({app="mix"} | json [1m]))"#,
    );
    assert!(err.starts_with("pipeline error: 'JSONParserErr'"), "{err}");
    let err = metric_err(
        &e,
        r#"sum_over_time({app="mix"} | json | __error__="" | unwrap duration(took) [1m])"#,
    );
    assert!(
        err.starts_with("pipeline error: 'SampleExtractionErr'"),
        "{err}"
    );
    assert!(
        err.contains(r#"__error_details__="time: invalid duration \"slow\"""#),
        "{err}"
    );
    let ok = metric(
        &e,
        r#"sum_over_time({app="mix"} | json | __error__="" | unwrap duration(took) | __error__="" [1m])"#,
        60,
        60,
        1,
    );
    assert_eq!(ok.len(), 1);
    assert!((ok[0].1[0].1 - 0.005).abs() < 1e-12, "{ok:?}");
}

#[test]
fn line_and_label_format_run_loki_template_functions() {
    let (_d, e) = engine(vec![rec(
        1,
        "api",
        "level=warn path=/api/v1/users took=1m30s",
    )]);
    let got = logs(
        &e,
        r#"{app="api"} | logfmt | label_format lvl="{{ .level | ToUpper }}", ep=`{{ .path | trimPrefix "/api" | replace "/" "." }}` | line_format `{{ __timestamp__ | unixEpoch }} {{ alignLeft 5 .lvl }}|{{ printf "%-8s" .ep }}|{{ if eq .level "warn" }}W{{ else }}-{{ end }} {{ .took | duration }}s`"#,
        Direction::Forward,
        10,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.get("lvl").map(String::as_str), Some("WARN"));
    assert_eq!(got[0].1, [format!("{} WARN |.v1.users|W 90s", T0 / S + 1)]);
    // A template that does not parse is a query parse error.
    let err = parse(r#"{app="api"} | line_format "{{ .a | nosuch }}""#).unwrap_err();
    assert!(
        err.to_string().contains(r#"function "nosuch" not defined"#),
        "{err}"
    );
}

#[test]
fn vector_matching_on_ignoring_and_group_modifiers() {
    let (_d, e) = engine(vec![
        rec(1, "api", "level=error team=a"),
        rec(2, "api", "level=error team=a"),
        rec(3, "api", "level=info team=a"),
        rec(4, "web", "level=error team=b"),
        rec(5, "web", "level=info team=b"),
        rec(6, "web", "level=info team=b"),
        rec(7, "web", "level=info team=b"),
    ]);
    let q = |s: &str| metric_at_60(&e, s);
    let per_level = r#"sum by (app, level) (count_over_time({app=~".+"} | logfmt [1m]))"#;
    let per_app = r#"sum by (app) (count_over_time({app=~".+"} [1m]))"#;
    // Share of each level in its app: many-to-one, keeping the left's labels.
    let got = q(&format!("{per_level} / on(app) group_left {per_app}"));
    assert_eq!(
        got,
        vec![
            (
                lm(&[("app", "api"), ("level", "error")]),
                vec![(60, 2.0 / 3.0)]
            ),
            (
                lm(&[("app", "api"), ("level", "info")]),
                vec![(60, 1.0 / 3.0)]
            ),
            (lm(&[("app", "web"), ("level", "error")]), vec![(60, 0.25)]),
            (lm(&[("app", "web"), ("level", "info")]), vec![(60, 0.75)]),
        ]
    );
    // group_right mirrors it; the "one" side's labels listed in it are copied over.
    let per_team = r#"sum by (app, team) (count_over_time({app=~".+"} | logfmt [1m]))"#;
    let got = q(&format!(
        "{per_team} * on(app) group_right(team) {per_level}"
    ));
    assert_eq!(got.len(), 4);
    assert!(got.contains(&(
        lm(&[("app", "web"), ("level", "info"), ("team", "b")]),
        vec![(60, 4.0 * 3.0)]
    )));
    // One-to-one with ignoring: the result keeps the matched labels only.
    let got = q(&format!(
        "sum by (app) ({per_level}) - ignoring(level) sum by (app, level) (count_over_time({{app=~\".+\"}} | logfmt | level=\"error\" [1m]))"
    ));
    assert_eq!(
        got,
        vec![
            (lm(&[("app", "api")]), vec![(60, 1.0)]),
            (lm(&[("app", "web")]), vec![(60, 3.0)]),
        ]
    );
    // Comparisons: filter keeps the left value, bool gives 0/1; `on()` matches everything.
    let web = r#"sum by (app) (count_over_time({app="web"}[1m]))"#;
    let api = r#"sum by (app) (count_over_time({app="api"}[1m]))"#;
    assert_eq!(
        q(&format!("{web} > bool on() {api}")),
        vec![(lm(&[]), vec![(60, 1.0)])]
    );
    assert_eq!(
        q(&format!("{web} < bool on() {api}")),
        vec![(lm(&[]), vec![(60, 0.0)])]
    );
    assert_eq!(
        q(&format!("{web} > on() {api}")),
        vec![(lm(&[]), vec![(60, 4.0)])]
    );
    assert_eq!(q(&format!("{web} > {api}")), vec![]);
    let err = {
        let Expr::Metric(m) = parse(&format!("{per_level} / on(app) {per_app}")).unwrap() else {
            panic!()
        };
        let steps = Steps {
            start_ns: T0 + 60 * S,
            end_ns: T0 + 60 * S,
            step_ns: S,
        };
        e.eval_metric(&m, steps).unwrap_err().to_string()
    };
    assert!(
        err.starts_with("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"),
        "{err}"
    );
    let got = q(&format!(
        "{per_level} and on(app) sum by (app) (count_over_time({{app=\"web\"}}[1m]))"
    ));
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|(l, _)| l.get("app").map(String::as_str) == Some("web")));
    let got = q(&format!("{per_level} unless ignoring(level) {per_app}"));
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn counts_without_stages_split_series_by_structured_metadata_and_filter_on_it() {
    let with_meta = |secs, app, kind: &str| LogRecord {
        metadata: vec![("kind".into(), kind.into())],
        ..rec(secs, app, "line")
    };
    let (_d, e) = engine(vec![
        rec(1, "api", "plain"),
        with_meta(2, "api", "a"),
        with_meta(3, "api", "a"),
        with_meta(4, "web", "b"),
        rec(5, "web", "plain"),
    ]);
    let got = metric_at_60(&e, r#"count_over_time({app=~".+"}[1m])"#);
    assert_eq!(
        got,
        vec![
            (lm(&[("app", "api")]), vec![(60, 1.0)]),
            (lm(&[("app", "api"), ("kind", "a")]), vec![(60, 2.0)]),
            (lm(&[("app", "web")]), vec![(60, 1.0)]),
            (lm(&[("app", "web"), ("kind", "b")]), vec![(60, 1.0)]),
        ]
    );
    let got = metric_at_60(&e, r#"sum by (kind) (count_over_time({app=~".+"}[1m]))"#);
    assert_eq!(
        got,
        vec![
            (lm(&[]), vec![(60, 2.0)]),
            (lm(&[("kind", "a")]), vec![(60, 2.0)]),
            (lm(&[("kind", "b")]), vec![(60, 1.0)]),
        ]
    );
}

#[test]
fn metadata_shadowed_by_a_stream_label_joins_the_stream_series_in_time_order() {
    let shadowed = LogRecord {
        metadata: vec![("app".into(), "other".into())],
        ..rec(50, "api", "line")
    };
    let (_d, e) = engine(vec![rec(1, "api", "a"), shadowed, rec(100, "api", "b")]);
    let got = metric(&e, r#"count_over_time({app="api"}[1m])"#, 60, 120, 60);
    assert_eq!(
        got,
        vec![(lm(&[("app", "api")]), vec![(60, 2.0), (120, 1.0)])]
    );
}

/// Runs `f` on a thread with the 2 MiB stack queries get in the server (tokio's blocking
/// pool), so a stack overflow fails the test instead of passing by a bigger test stack.
fn on_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn_scoped(s, f)
            .unwrap()
            .join()
            .unwrap()
    })
}

#[test]
fn deep_queries_are_parse_errors_not_stack_overflows() {
    let wrap = |open: &str, inner: &str, close: &str, times: usize| {
        format!("{}{inner}{}", open.repeat(times), close.repeat(times))
    };
    for q in [
        wrap("(", "vector(1)", ")", 10_000),
        format!("vector(1){}", " + 1".repeat(20_000)),
        format!("1{}", " ^ 1".repeat(20_000)),
        wrap("sum(", "vector(1)", ")", 10_000),
        format!(
            r#"{{app="api"}} | json | level="info"{}"#,
            r#" and level="info""#.repeat(20_000)
        ),
        format!(
            r#"{{app="api"}} | json | {}"#,
            wrap("(", r#"level="info""#, ")", 10_000)
        ),
    ] {
        let err = on_small_stack(|| parse(&q).map(|_| ())).unwrap_err();
        assert!(err.msg.contains("nested too deeply"), "{err}");
    }
}

#[test]
fn queries_at_the_nesting_limit_evaluate_on_a_small_stack() {
    use crate::parser::MAX_NESTING;
    let n = MAX_NESTING;
    let (_dir, e) = fixture();
    let wrap = |open: &str, inner: &str, close: &str, times: usize| {
        format!("{}{inner}{}", open.repeat(times), close.repeat(times))
    };
    let count = r#"count_over_time({app="api"}[1m])"#;
    for (q, want) in [
        (format!("vector(1){}", " + 1".repeat(n)), n as f64 + 1.0),
        (format!("{count}{}", " * on() vector(1)".repeat(n - 1)), 3.0),
        (wrap("(", count, ")", n), 3.0),
        (wrap("sum(", count, ")", n), 3.0),
        (
            format!(
                r#"count_over_time({{app="api"}} | json | level="info"{}[1m])"#,
                r#" and level="info""#.repeat(n)
            ),
            2.0,
        ),
        (
            format!(
                r#"count_over_time({{app="api"}} | json | {}[1m])"#,
                wrap("(", r#"level="info""#, ")", n)
            ),
            2.0,
        ),
    ] {
        let got = on_small_stack(|| metric_at_60(&e, &q));
        let total: f64 = got.iter().flat_map(|(_, p)| p).map(|(_, v)| v).sum();
        assert_eq!(total, want, "{}…", &q[..40]);
    }
}

#[test]
fn queries_over_lokis_entries_and_series_limits_fail_with_its_texts() {
    let (_d, e) = engine(vec![rec(1, "a", "x"), rec(2, "b", "y"), rec(3, "c", "z")]);
    let limits = QueryLimits {
        max_lines: 1000,
        max_entries: 2,
        max_series: 2,
    };
    let e = LogEngine::new(e.store().clone(), limits);
    let Expr::Log(log) = parse(r#"{app=~".+"}"#).unwrap() else {
        panic!("not a log query")
    };
    let select = |limit| e.select_logs(&log, T0, T0 + 10 * S, limit, Direction::Forward);
    assert_eq!(
        select(3).unwrap_err().to_string(),
        "max entries limit per query exceeded, limit > max_entries_limit_per_query (3 > 2)"
    );
    assert_eq!(select(2).unwrap().len(), 2);

    let err = metric_err(&e, r#"count_over_time({app=~".+"}[5m])"#);
    assert!(
        err.starts_with("maximum number of series (2) reached for a single query;"),
        "{err}"
    );
    // The answer is counted, not the series inside an aggregation.
    let sum = metric_at(&e, r#"sum(count_over_time({app=~".+"}[5m]))"#);
    assert_eq!(sum.unwrap().len(), 1);
}

#[test]
fn metric_queries_over_the_line_budget_fail_with_or_without_a_pipeline() {
    let (_d, e) = engine(vec![rec(1, "a", "x"), rec(2, "b", "y"), rec(3, "c", "z")]);
    let limits = |max_lines| QueryLimits {
        max_lines,
        max_entries: 1000,
        max_series: 1000,
    };
    let tight = LogEngine::new(e.store().clone(), limits(2));
    let want = EvalError::TooManyEntries(2).to_string();
    // A bare selector is counted from columns (the store refuses it while collecting); a
    // pipeline reads lines (the engine counts them).
    for q in [
        r#"count_over_time({app=~".+"}[5m])"#,
        r#"count_over_time({app=~".+"} |= "" [5m])"#,
    ] {
        assert_eq!(metric_err(&tight, q), want, "{q}");
    }
    let enough = LogEngine::new(e.store().clone(), limits(3));
    assert!(metric_at(&enough, r#"sum(count_over_time({app=~".+"}[5m]))"#).is_ok());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Counting without lines (the store's per-bucket counts) answers as counting the lines
    /// read one by one (`|= ""` makes the engine read them), whatever the range, step, offset
    /// and start: the buckets' grid must hold every window's ends.
    #[test]
    fn bucketed_counts_match_counting_lines(
        range in 1i64..200,
        step in 1i64..120,
        offset in 0i64..30,
        start in 0i64..100,
        rate in proptest::bool::ANY,
    ) {
        let (_d, e) = &counted_fixture();
        let func = if rate { "rate" } else { "count_over_time" };
        let q = |stages: &str| {
            format!("sum by (app) ({func}({{app=~\".+\"}}{stages} [{range}s] offset {offset}s))")
        };
        let (bare, read) = (q(""), q(r#" |= """#));
        let end = start + 300;
        proptest::prop_assert_eq!(
            metric(e, &bare, start, end, step),
            metric(e, &read, start, end, step)
        );
    }
}

/// Records over five and a half minutes, up to two per second, in two streams.
fn counted_fixture() -> (tempfile::TempDir, LogEngine) {
    let records: Vec<LogRecord> = (0..400)
        .map(|i| {
            let app = if i % 3 == 0 { "web" } else { "api" };
            rec((i * 37) % 331, app, "line")
        })
        .collect();
    engine(records)
}
