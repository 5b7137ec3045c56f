//! The three tables over real stores in a temporary directory holding known data.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::util::pretty::pretty_format_batches;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use storage::logs::{LogOptions, LogRecord, LogStore};
use storage::traces::{TraceStore, TraceStoreOptions};
use storage::{
    AppendMode, Appendable, Classify, ErrorClass, HistogramSample, Labels, Sample, SeriesBatch,
    Tsdb,
};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: SqlEngine,
    /// The first sample's time, ms (a minute boundary ten minutes ago).
    t0_ms: i64,
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// `http_requests_total` of instances a (1..=10) and b (10..=100), one sample a second;
/// `up` of a (1) and a native histogram `latency` of a; logs of two apps at three levels;
/// a trace of two spans of `shop` and one of `cart`.
fn fixture_with(opts: SqlOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0_ms = (now_ms / 60_000 - 10) * 60_000;
    let tsdb = Arc::new(Tsdb::open(&dir.path().join("tsdb"), Default::default()).unwrap());
    let mut app = tsdb.appender(AppendMode::AllOrNothing);
    for (instance, scale) in [("a:1", 1.0), ("b:1", 10.0)] {
        app.append(SeriesBatch {
            labels: Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", instance),
                ("code", "200"),
            ]),
            samples: (1..=10)
                .map(|i| Sample {
                    t: t0_ms + (i - 1) * 1000,
                    v: i as f64 * scale,
                })
                .collect(),
            histograms: Vec::new(),
        });
    }
    app.append(SeriesBatch {
        labels: Labels::from_pairs([("__name__", "up"), ("job", "api"), ("instance", "a:1")]),
        samples: vec![Sample { t: t0_ms, v: 1.0 }],
        histograms: Vec::new(),
    });
    app.append(SeriesBatch {
        labels: Labels::from_pairs([("__name__", "latency"), ("job", "api")]),
        samples: Vec::new(),
        histograms: vec![HistogramSample {
            t: t0_ms,
            h: storage::Histogram {
                schema: 3,
                count: 4.0,
                sum: 2.5,
                zero_count: 1.0,
                zero_threshold: 0.001,
                positive_spans: vec![
                    storage::HistogramSpan {
                        offset: 0,
                        length: 1,
                    },
                    storage::HistogramSpan {
                        offset: 2,
                        length: 1,
                    },
                ],
                positive_buckets: vec![2.0, 1.0],
                counter_reset_hint: 2,
                ..Default::default()
            },
        }],
    });
    app.commit().unwrap();

    let logs = Arc::new(LogStore::open(&dir.path().join("logs"), LogOptions::default()).unwrap());
    let t0_ns = t0_ms * 1_000_000;
    let records: Vec<LogRecord> = [
        ("a", "error", "boom: disk full"),
        ("a", "info", "started"),
        ("a", "info", "listening"),
        ("b", "error", "boom again"),
        ("b", "warn", "slow"),
        ("b", "info", "ok"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (app, level, line))| LogRecord {
        ts_ns: t0_ns + i as i64 * 1_000_000_000,
        labels: Labels::from_pairs([("app", *app)]),
        line: (*line).to_owned(),
        metadata: vec![("detected_level".to_owned(), (*level).to_owned())],
    })
    .collect();
    logs.append(&records).unwrap();
    logs.sync().unwrap();

    let traces = Arc::new(
        TraceStore::open(&dir.path().join("traces"), TraceStoreOptions::default()).unwrap(),
    );
    let span = |id: u8, parent: Option<u8>, name: &str, kind: i32, dur_ms: u64| Span {
        trace_id: vec![0xab; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: t0_ns as u64 + u64::from(id) * 1_000_000,
        end_time_unix_nano: t0_ns as u64 + u64::from(id) * 1_000_000 + dur_ms * 1_000_000,
        attributes: vec![kv("http.route", name)],
        status: (id == 2).then(|| Status {
            code: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let resource = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    traces
        .write(&[
            resource(
                "shop",
                vec![
                    span(1, None, "GET /cart", 2, 300),
                    span(2, Some(1), "SELECT cart", 3, 120),
                ],
            ),
            resource("cart", vec![span(3, Some(2), "GET /items", 2, 50)]),
        ])
        .unwrap();
    let engine = SqlEngine::new(tsdb, logs, traces, opts).unwrap();
    Fixture {
        _dir: dir,
        engine,
        t0_ms,
    }
}

fn fixture() -> Fixture {
    fixture_with(SqlOptions::default())
}

async fn table(f: &Fixture, sql: &str) -> String {
    let r = f
        .engine
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&r.batches).unwrap().to_string()
}

/// The physical plan's lines.
async fn plan(f: &Fixture, sql: &str) -> String {
    let r = f.engine.query(&format!("EXPLAIN {sql}")).await.unwrap();
    pretty_format_batches(&r.batches).unwrap().to_string()
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[tokio::test]
async fn metrics_group_by_instance_with_name_and_time_pushed() {
    let f = fixture();
    let since = f.t0_ms + 5000;
    let q = format!(
        "SELECT instance, sum(value) AS s, count(*) AS n FROM metrics \
         WHERE metric = 'http_requests_total' AND ts >= to_timestamp_millis({since}) \
         GROUP BY instance ORDER BY instance"
    );
    assert_eq!(
        lines(&table(&f, &q).await),
        [
            "+----------+-------+---+",
            "| instance | s     | n |",
            "+----------+-------+---+",
            "| a:1      | 40.0  | 5 |",
            "| b:1      | 400.0 | 5 |",
            "+----------+-------+---+",
        ]
    );
    // Both filters are the select's: its range and matchers, and no filter above the scan.
    let p = plan(&f, &q).await;
    assert!(
        p.contains(&format!(
            "StoreExec: table=metrics, projection=[value, instance], ts_ms=[{since}, {}], \
             matchers={{__name__=\"http_requests_total\"}}",
            i64::MAX - 1
        )),
        "{p}"
    );
    assert!(!p.contains("FilterExec"), "{p}");
}

#[tokio::test]
async fn label_columns_push_equality_and_other_filters_stay_above_the_scan() {
    let f = fixture();
    let q = "SELECT metric, value FROM metrics WHERE job = 'api' AND instance = 'a:1' \
             AND value > 8 ORDER BY metric, value";
    assert_eq!(
        lines(&table(&f, q).await),
        [
            "+---------------------+-------+",
            "| metric              | value |",
            "+---------------------+-------+",
            "| http_requests_total | 9.0   |",
            "| http_requests_total | 10.0  |",
            "+---------------------+-------+",
        ]
    );
    let p = plan(&f, q).await;
    assert!(
        p.contains("matchers={job=\"api\", instance=\"a:1\", __name__=~\".+\"}"),
        "{p}"
    );
    assert!(p.contains("FilterExec: value@0 > 8"), "{p}");
}

/// Regexes, `LIKE`, `IN` and equality on the name and on `labels['…']` reach the select as
/// matchers, in the forms DataFusion rewrites them into (`regexp_like(x, '^b')` is
/// `x LIKE 'b%'`), and no filter is left above the scan.
#[tokio::test]
async fn label_and_name_patterns_become_matchers() {
    let f = fixture();
    for (q, matchers, answer) in [
        (
            "SELECT instance, count(*) AS n FROM metrics \
             WHERE regexp_like(labels['instance'], '^b') GROUP BY instance",
            "matchers={instance=~\"b.*\", __name__=~\".+\"}",
            "| b:1      | 10 |",
        ),
        (
            "SELECT instance, count(*) AS n FROM metrics \
             WHERE labels['code'] = '200' AND instance = 'a:1' GROUP BY instance",
            "matchers={instance=\"a:1\", code=\"200\", __name__=~\".+\"}",
            "| a:1      | 10 |",
        ),
        (
            "SELECT metric, count(*) AS n FROM metrics \
             WHERE metric ~ '^(up|late)[a-z]*$' GROUP BY metric ORDER BY metric",
            "matchers={__name__=~\".*(?-s:^(up|late)[a-z]*$).*\"}",
            "| latency | 1 |",
        ),
    ] {
        let t = table(&f, q).await;
        assert_eq!(lines(&t)[3], answer, "{q}\n{t}");
        let p = plan(&f, q).await;
        assert!(p.contains(matchers), "{q}\n{p}");
        assert!(!p.contains("FilterExec"), "{q}\n{p}");
    }
    let q = "SELECT metric, count(*) AS n FROM metrics \
             WHERE metric ~ 'requests|up' GROUP BY metric ORDER BY metric";
    assert_eq!(
        lines(&table(&f, q).await),
        [
            "+---------------------+----+",
            "| metric              | n  |",
            "+---------------------+----+",
            "| http_requests_total | 20 |",
            "| up                  | 1  |",
            "+---------------------+----+",
        ]
    );
    let p = plan(&f, q).await;
    assert!(
        p.contains("matchers={__name__=~\"(?:.*requests.*)|(?:.*up.*)\"}"),
        "{p}"
    );
    // A pattern matching the empty value would, as a matcher, also keep `latency`, which
    // has no instance (NULL in SQL, true of no pattern): DataFusion applies it.
    let q = "SELECT count(*) AS n FROM metrics WHERE labels['instance'] ~ 'z*'";
    assert_eq!(lines(&table(&f, q).await)[3], "| 21 |");
    assert!(plan(&f, q).await.contains("FilterExec"));
}

/// Negations become the negated matcher and, on a column that can be NULL, `label=~".+"`
/// (an absent label is NULL, true of no negation): the rows counted by hand, and no filter
/// above the scan.
#[tokio::test]
async fn negations_become_matchers() {
    let f = fixture();
    for (filter, matchers, n) in [
        (
            "instance != 'a:1'",
            "matchers={instance!=\"a:1\", instance=~\".+\", __name__=~\".+\"}",
            10,
        ),
        // 20 requests and the histogram of `latency`.
        (
            "metric != 'up'",
            "matchers={__name__!=\"up\", __name__=~\".+\"}",
            21,
        ),
        (
            "labels['code'] NOT LIKE '2%'",
            "matchers={code!~\"2.*\", code=~\".+\", __name__=~\".+\"}",
            0,
        ),
        // `up` and the requests of a:1; DataFusion makes a short list two `!=`.
        (
            "instance NOT IN ('b:1', 'c:1')",
            "matchers={instance!=\"b:1\", instance=~\".+\", instance!=\"c:1\", \
             __name__=~\".+\"}",
            11,
        ),
        // DataFusion makes it `NOT ILIKE '%B%'`.
        (
            "metric = 'http_requests_total' AND instance !~* 'B'",
            "matchers={__name__=\"http_requests_total\", instance!~\"(?i:.*B.*)\", \
             instance=~\".+\"}",
            10,
        ),
    ] {
        let q = format!("SELECT count(*) AS n FROM metrics WHERE {filter}");
        assert_eq!(lines(&table(&f, &q).await)[3], format!("| {n} |"), "{q}");
        let p = plan(&f, &q).await;
        assert!(p.contains(matchers), "{q}\n{p}");
        assert!(!p.contains("FilterExec"), "{q}\n{p}");
    }
}

#[tokio::test]
async fn labels_map_and_histograms_are_columns() {
    let f = fixture();
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT labels['code'] AS code, count(*) AS n FROM metrics \
                 WHERE metric = 'http_requests_total' GROUP BY 1"
            )
            .await
        ),
        [
            "+------+----+",
            "| code | n  |",
            "+------+----+",
            "| 200  | 20 |",
            "+------+----+",
        ]
    );
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT value, histogram['count'] AS c, histogram['sum'] AS s, job, instance \
                 FROM metrics WHERE metric = 'latency'"
            )
            .await
        ),
        [
            "+-------+-----+-----+-----+----------+",
            "| value | c   | s   | job | instance |",
            "+-------+-----+-----+-----+----------+",
            "|       | 4.0 | 2.5 | api |          |",
            "+-------+-----+-----+-----+----------+",
        ]
    );
    // The buckets: spans and absolute counts as stored, the reset hint.
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT metric, histogram['counter_reset_hint'] AS hint, \
                 histogram['positive_spans'][2]['offset'] AS second, \
                 histogram['positive_buckets'] AS buckets, \
                 array_length(histogram['negative_buckets'], 1) AS negative \
                 FROM metrics WHERE metric = 'latency'"
            )
            .await
        ),
        [
            "+---------+------+--------+------------+----------+",
            "| metric  | hint | second | buckets    | negative |",
            "+---------+------+--------+------------+----------+",
            "| latency | 2    | 2      | [2.0, 1.0] | 0        |",
            "+---------+------+--------+------------+----------+",
        ]
    );
}

#[tokio::test]
async fn limit_stops_the_scan() {
    let f = fixture();
    let r = f
        .engine
        .query("SELECT * FROM metrics LIMIT 3")
        .await
        .unwrap();
    assert_eq!(r.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    assert_eq!(r.schema.fields().len(), 7);
    let p = plan(&f, "SELECT value FROM metrics LIMIT 3").await;
    assert!(
        p.contains("StoreExec: table=metrics, projection=[value], limit=3"),
        "{p}"
    );
}

#[tokio::test]
async fn a_time_range_that_cannot_hold_rows_reads_nothing() {
    let f = fixture();
    let q = "SELECT count(*) AS n FROM metrics WHERE ts < to_timestamp_millis(1000) \
             AND ts > to_timestamp_millis(2000)";
    assert!(table(&f, q).await.contains("| 0 |"));
}

#[tokio::test]
async fn logs_count_by_level_from_counts_and_lines_by_contains() {
    let f = fixture();
    let q = "SELECT level, count(*) AS n FROM logs GROUP BY level ORDER BY level";
    assert_eq!(
        lines(&table(&f, q).await),
        [
            "+-------+---+",
            "| level | n |",
            "+-------+---+",
            "| error | 2 |",
            "| info  | 3 |",
            "| warn  | 1 |",
            "+-------+---+",
        ]
    );
    assert!(plan(&f, q).await.contains("read=counts"));
    let t2 = (f.t0_ms + 2000) * 1_000_000;
    let q = format!(
        "SELECT labels['app'] AS app, line FROM logs \
         WHERE line LIKE '%boom%' AND ts >= to_timestamp_nanos({t2}) ORDER BY ts"
    );
    assert_eq!(
        lines(&table(&f, &q).await),
        [
            "+-----+------------+",
            "| app | line       |",
            "+-----+------------+",
            "| b   | boom again |",
            "+-----+------------+",
        ]
    );
    let p = plan(&f, &q).await;
    assert!(
        p.contains(&format!(
            "ts_ns=[{t2}, {}], contains=[\"boom\"], read=records",
            i64::MAX - 1
        )),
        "{p}"
    );
    // The index's match is a candidate test: DataFusion checks the pattern again.
    assert!(p.contains("FilterExec: line@2 LIKE %boom%"), "{p}");
}

#[tokio::test]
async fn spans_have_their_fields() {
    let f = fixture();
    let q = "SELECT service, name, kind, status_code, duration_ns, parent_span_id, \
             attributes['http.route'] AS route FROM spans WHERE service = 'shop' ORDER BY start";
    assert_eq!(
        lines(&table(&f, q).await),
        [
            "+---------+-------------+--------+-------------+-------------+------------------+-------------+",
            "| service | name        | kind   | status_code | duration_ns | parent_span_id   | route       |",
            "+---------+-------------+--------+-------------+-------------+------------------+-------------+",
            "| shop    | GET /cart   | server | unset       | 300000000   |                  | GET /cart   |",
            "| shop    | SELECT cart | client | error       | 120000000   | 0101010101010101 | SELECT cart |",
            "+---------+-------------+--------+-------------+-------------+------------------+-------------+",
        ]
    );
    let after_first = (f.t0_ms * 1_000_000) + 1_000_000;
    let q = format!(
        "SELECT span_id FROM spans WHERE start > to_timestamp_nanos({after_first}) ORDER BY start"
    );
    assert_eq!(lines(&table(&f, &q).await)[3], "| 0202020202020202 |");
    assert!(!plan(&f, &q).await.contains("FilterExec"));
}

/// With a budget of one span, only a scan that seeks the service's (or the operation's)
/// spans can answer: a walk of the time index reads all three.
#[tokio::test]
async fn service_and_name_seek_the_trace_index() {
    let f = fixture_with(SqlOptions {
        max_spans: 1,
        ..SqlOptions::default()
    });
    let q = "SELECT span_id FROM spans WHERE service = 'shop' AND name = 'SELECT cart'";
    assert_eq!(lines(&table(&f, q).await)[3], "| 0202020202020202 |");
    let p = plan(&f, q).await;
    assert!(
        p.contains(
            "seek=Operation { service: \"shop\", name: \"SELECT cart\" }, \
             service=\"shop\", name=\"SELECT cart\""
        ),
        "{p}"
    );
    assert!(!p.contains("FilterExec"), "{p}");
    let q = "SELECT name, count(*) AS n FROM spans WHERE service = 'cart' GROUP BY name";
    assert_eq!(lines(&table(&f, q).await)[3], "| GET /items | 1 |");
    assert!(plan(&f, q).await.contains("seek=Service(\"cart\")"));
    // A name alone has no index of its own: the time index, each span checked.
    let f = fixture();
    let q = "SELECT service FROM spans WHERE name = 'GET /items'";
    assert_eq!(
        lines(&table(&f, q).await),
        [
            "+---------+",
            "| service |",
            "+---------+",
            "| cart    |",
            "+---------+",
        ]
    );
    let p = plan(&f, q).await;
    assert!(p.contains("seek=Time, name=\"GET /items\""), "{p}");
    assert!(!p.contains("FilterExec"), "{p}");
}

#[tokio::test]
async fn bad_sql_ddl_and_large_answers_are_refused_with_their_class() {
    let f = fixture_with(SqlOptions {
        max_rows: 5,
        ..SqlOptions::default()
    });
    let e = f.engine.query("SELEC 1").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(e.to_string().contains("Line: 1, Column: 1"), "{e}");
    let e = f
        .engine
        .query("SELECT nope FROM metrics")
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    for ddl in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let e = f.engine.query(ddl).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{ddl}: {e}");
        assert!(matches!(e, SqlError::Refused(_)), "{ddl}: {e:?}");
    }
    let e = f.engine.query("SELECT * FROM nope").await.unwrap_err();
    assert!(
        matches!(&e, SqlError::UnknownTable(t) if t == "novamon.public.nope"),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::BadInput);
    let e = f.engine.query("SELECT * FROM metrics").await.unwrap_err();
    assert!(matches!(e, SqlError::TooManyRows { limit: 5 }), "{e}");
    assert_eq!(e.class(), ErrorClass::TooLarge);
}

#[tokio::test]
async fn store_budgets_fail_the_query_as_too_large() {
    let f = fixture_with(SqlOptions {
        max_samples: 3,
        max_log_records: 2,
        max_spans: 1,
        ..SqlOptions::default()
    });
    for q in [
        "SELECT sum(value) FROM metrics",
        "SELECT count(line) FROM logs",
        "SELECT count(*) FROM spans",
    ] {
        let e = f.engine.query(q).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::TooLarge, "{q}: {e}");
    }
}

#[test]
fn time_bounds_convert_to_the_column_unit_exactly() {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{col, lit, Expr};
    use scan::TimeRange;
    let ns = |v: i64| Expr::Literal(ScalarValue::TimestampNanosecond(Some(v), None), None);
    let ms = 1_000_000;
    // ts_ms * 1e6 > 1_500_000 ⇔ ts_ms ≥ 2; ≥ 1_500_000 ⇔ ts_ms ≥ 2; < ⇔ ≤ 1; ≤ ⇔ ≤ 1.
    assert_eq!(
        TimeRange::of(&col("ts").gt(ns(1_500_000)), "ts", ms)
            .unwrap()
            .lo,
        2
    );
    assert_eq!(
        TimeRange::of(&col("ts").gt_eq(ns(1_500_000)), "ts", ms)
            .unwrap()
            .lo,
        2
    );
    assert_eq!(
        TimeRange::of(&col("ts").lt(ns(1_500_000)), "ts", ms)
            .unwrap()
            .hi,
        1
    );
    assert_eq!(
        TimeRange::of(&col("ts").lt_eq(ns(1_500_000)), "ts", ms)
            .unwrap()
            .hi,
        1
    );
    assert_eq!(
        TimeRange::of(&col("ts").gt(ns(2_000_000)), "ts", ms)
            .unwrap()
            .lo,
        3
    );
    assert_eq!(
        TimeRange::of(&col("ts").lt(ns(2_000_000)), "ts", ms)
            .unwrap()
            .hi,
        1
    );
    // The literal on the left: the operator turns around.
    assert_eq!(
        TimeRange::of(&ns(2_000_000).lt(col("ts")), "ts", ms)
            .unwrap()
            .lo,
        3
    );
    let r = TimeRange::of(&col("ts").between(ns(-1), ns(5_000_000)), "ts", ms).unwrap();
    assert_eq!((r.lo, r.hi), (0, 5));
    // Not a time literal, or not the column: not a bound the scan applies.
    assert!(TimeRange::of(&col("ts").gt(lit(5)), "ts", ms).is_none());
    assert!(TimeRange::of(&col("value").gt(ns(5)), "ts", ms).is_none());
}

#[tokio::test]
async fn describe_plans_without_reading_and_parameters_bind_in_order() {
    let f = fixture();
    let d = f
        .engine
        .describe(
            "SELECT instance, value FROM metrics WHERE value > $2 AND instance = $1",
            Vec::new(),
        )
        .await
        .unwrap();
    let names: Vec<&str> = d
        .schema
        .fields()
        .iter()
        .map(|c| c.name().as_str())
        .collect();
    assert_eq!(names, ["instance", "value"]);
    assert_eq!(
        d.parameters,
        [Some(DataType::Utf8), Some(DataType::Float64)]
    );
    let r = f
        .engine
        .query_with(
            "SELECT count(*) FROM metrics WHERE metric = 'http_requests_total' \
             AND value > $2 AND instance = $1",
            vec![ScalarValue::from("b:1"), ScalarValue::from(50.0)],
        )
        .await
        .unwrap();
    assert_eq!(
        pretty_format_batches(&r.batches).unwrap().to_string(),
        pretty_format_batches(
            &f.engine
                .query(
                    "SELECT count(*) FROM metrics WHERE metric = 'http_requests_total' \
                     AND value > 50 AND instance = 'b:1'"
                )
                .await
                .unwrap()
                .batches
        )
        .unwrap()
        .to_string()
    );
    // A parameter as a column has the type of the value bound to it.
    let d = f
        .engine
        .describe("SELECT $1 AS p", vec![ScalarValue::from(2.5)])
        .await
        .unwrap();
    assert_eq!(d.schema.field(0).data_type(), &DataType::Float64);
    assert!(matches!(
        f.engine
            .describe("DROP TABLE metrics", Vec::new())
            .await
            .unwrap_err(),
        SqlError::Refused(_)
    ));
}

/// `information_schema` lists the tables and their columns with Postgres's type names
/// (`SHOW TABLES` and `SHOW COLUMNS` read it), and `pg_extension` answers, empty, when named
/// without its schema.
#[tokio::test]
async fn information_schema_names_columns_as_postgres_types() {
    let f = fixture();
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT table_schema, table_name, table_type FROM information_schema.tables \
                 WHERE table_schema <> 'information_schema' ORDER BY 1, 2"
            )
            .await
        ),
        [
            "+--------------+--------------+------------+",
            "| table_schema | table_name   | table_type |",
            "+--------------+--------------+------------+",
            "| pg_catalog   | pg_extension | BASE TABLE |",
            "| public       | logs         | BASE TABLE |",
            "| public       | metrics      | BASE TABLE |",
            "| public       | spans        | BASE TABLE |",
            "+--------------+--------------+------------+",
        ]
    );
    assert_eq!(
        lines(&table(&f, "SHOW COLUMNS FROM metrics").await)[3..10]
            .iter()
            .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>()[4..7].join(" "))
            .collect::<Vec<_>>(),
        [
            "ts timestamp with time zone NO",
            "value double precision YES",
            "metric text NO",
            "job text YES",
            "instance text YES",
            "labels json NO",
            "histogram json YES",
        ]
    );
    assert!(table(&f, "SHOW TABLES").await.contains("| metrics "));
    let r = f.engine.query("SELECT * FROM pg_extension").await.unwrap();
    assert_eq!(r.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(r.schema.field(5).name(), "extversion");
}

/// Postgres's FROM rules: a one-column function's column is named after its alias, a scalar
/// function is a one-row table; an uncorrelated `IN` subquery answers in a select list and
/// an ORDER BY; the catalog functions answer as Postgres's.
#[tokio::test]
async fn postgres_from_rules_functions_and_in_subqueries_outside_where() {
    let f = fixture();
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT i, trim(s[i]) AS part FROM generate_series(array_lower(\
                 string_to_array(current_setting('search_path'), ','), 1), array_upper(\
                 string_to_array(current_setting('search_path'), ','), 1)) AS i, \
                 string_to_array(current_setting('search_path'), ',') s ORDER BY i"
            )
            .await
        ),
        [
            "+---+---------+",
            "| i | part    |",
            "+---+---------+",
            "| 1 | \"$user\" |",
            "| 2 | public  |",
            "+---+---------+",
        ]
    );
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT table_name, table_name IN (SELECT 'spans' UNION SELECT 'logs') AS m \
                 FROM information_schema.tables WHERE table_schema = 'public' \
                 ORDER BY table_name IN (SELECT 'metrics'), table_name"
            )
            .await
        ),
        [
            "+------------+-------+",
            "| table_name | m     |",
            "+------------+-------+",
            "| logs       | true  |",
            "| spans      | true  |",
            "| metrics    | false |",
            "+------------+-------+",
        ]
    );
    assert_eq!(
        lines(
            &table(
                &f,
                "SELECT quote_ident('Metrics') AS q, (parse_ident('public.\"Odd\"'))[2] AS p, \
                 array_length(parse_ident('a.b'), 1) AS n, \
                 current_setting('server_version_num') AS v, \
                 current_setting('nope', true) IS NULL AS missing, current_user IS NULL AS u"
            )
            .await
        ),
        [
            "+-----------+-----+---+--------+---------+------+",
            "| q         | p   | n | v      | missing | u    |",
            "+-----------+-----+---+--------+---------+------+",
            "| \"Metrics\" | Odd | 2 | 160006 | true    | true |",
            "+-----------+-----+---+--------+---------+------+",
        ]
    );
    let alice = f.engine.for_user("alice");
    let r = table_of(&alice, "SELECT user AS u, session_user AS s").await;
    assert!(r.contains("| alice | alice |"), "{r}");
    let e = f
        .engine
        .query("SELECT current_setting('nope')")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("unrecognized configuration parameter \"nope\""),
        "{e}"
    );
}

async fn table_of(engine: &SqlEngine, sql: &str) -> String {
    let r = engine
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&r.batches).unwrap().to_string()
}
