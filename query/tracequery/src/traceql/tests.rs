use super::parse::MAX_NESTING;
use super::*;
use crate::test_traces::{checkout, stored};

#[test]
fn common_forms_parse() {
    for q in [
        r#"{ resource.service.name = "x" && span.http.status_code >= 500 }"#,
        "{ duration > 100ms }",
        "{ status = error }",
        r#"{ name =~ "GET .*" }"#,
        r#"{ .http.method = "GET" || kind = server }"#,
        r#"{ span.a = "1" } && { resource.b != "2" }"#,
        r#"({ name = "a" } || { name = "b" })"#,
        "{}",
        "{ span.flag = true && (status = ok || statusMessage = `x`) }",
        r#"{ .a = "x" } >> { .b = "y" }"#,
        r#"{ .a = "x" } !< { .b = "y" } && { } ~ { }"#,
        r#"({ nestedSetParent<0 && true } &>> { status = error }) || ({ nestedSetParent<0 }) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)"#,
        r#"{ .a = "x" } | count() > 2"#,
        r#"{ } | by(resource.service.name) | avg(duration) >= 1.5s | coalesce()"#,
        r#"{ trace:rootService = "a" && rootName != nil && traceDuration > 1s }"#,
        r#"{ event:name = "exception" && event.exception.type =~ "IO.*" && link:traceID != "" }"#,
        r#"{ instrumentation:name = "x" && instrumentation.a = 1 && span:parentID = nil }"#,
        r#"{ span."attr with spaces" = "v" && !(kind = client) }"#,
        r#"{ nestedSetParent<0 && true && status=error } | rate() by(resource.service.name) with(sample=true)"#,
        "{} | quantile_over_time(duration, 0.5, 0.9, 0.99) by (span.http.route)",
        "{} | histogram_over_time(duration) with(sample=true)",
        "{} | count_over_time() by (name) | topk(3)",
        "{} | avg_over_time(span.bytes) > 10",
        r#"{ resource.service.name = "a" && status=error } | select(resource.service.name, event.exception.message) with(most_recent=true)"#,
    ] {
        parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}

#[test]
fn unsupported_forms_are_errors_naming_why() {
    assert!(parse(r#"{ .a = "x" "#).is_err());
    assert!(parse(r#"{ foo = "x" }"#)
        .unwrap_err()
        .to_string()
        .contains("unsupported field"));
    assert!(parse(r#"{ name =~ "(" }"#)
        .unwrap_err()
        .to_string()
        .contains("invalid regex"));
    assert!(parse("{ .a = \"x }").is_err());
    assert!(parse("{ .a = 1 } | rate() | foo(2)").is_err());
    assert!(parse("{ } | quantile_over_time(duration)").is_err());
    assert!(parse("{ } | quantile_over_time(duration, 1.5)").is_err());
    assert!(parse("{ } | count() > hello").is_err());
}

/// `compare()`'s arguments as Tempo's grammar and `MetricsCompare.validate` take them.
#[test]
fn compare_takes_a_filter_top_n_and_a_window() {
    let parsed = |q: &str| match parse(q).unwrap_or_else(|e| panic!("{q}: {e}")).metrics {
        Some(MetricsStage::Compare(c)) => c,
        other => panic!("{q}: {other:?}"),
    };
    // Traces Drilldown's request for the errors of one service's root spans.
    let c = parsed(
        r#"{nestedSetParent<0 && resource.service.name="shop"} | compare({status = error}, 10)"#,
    );
    assert_eq!((c.top_n, c.window), (10, None));
    let error = stored(&checkout(1, 0))
        .into_iter()
        .find(|s| status(s) == "error")
        .unwrap();
    assert_eq!(c.selection.check(SpanRef::alone(&error)), Some(true));
    // Its request for a brushed duration range of a time window: start and end in ns.
    let c = parsed(
        "{true && true} | compare({duration >= 100ms && duration <= 1.5s}, 10, 1700000000000000000, 1700000300000000000)",
    );
    assert_eq!(
        c.window,
        Some((1_700_000_000_000_000_000, 1_700_000_300_000_000_000))
    );
    // Tempo's defaults: topN 10, no window; `{}` selects every span.
    let c = parsed("{} | compare({})");
    assert_eq!((c.top_n, c.window), (10, None));
    assert_eq!(c.selection.check(SpanRef::alone(&error)), Some(true));
    assert_eq!(
        parsed("{} | compare({ status = error }, 1000) with(sample=true)").top_n,
        1000
    );
    for (q, why) in [
        ("{} | compare({}, 0)", "between 1 and 1000"),
        ("{} | compare({}, 1001)", "between 1 and 1000"),
        ("{} | compare({}, 10, 5)", "both or neither"),
        (
            "{} | compare({}, 10, 0, 5)",
            "positive integer unix nanoseconds",
        ),
        (
            "{} | compare({}, 10, 5, 5)",
            "end timestamp must be greater",
        ),
        ("{} | compare({}, ten)", "integers"),
        ("{} | compare()", "expected LBrace"),
        ("{} | compare({}) by (name)", "unexpected"),
        ("{} | compare({}) | topk(2)", "unexpected"),
        ("compare({})", "ends a spanset pipeline"),
    ] {
        let e = parse(q).unwrap_err().to_string();
        assert!(e.contains(why), "{q}: {e}");
    }
}

#[test]
fn seeks_use_the_most_specific_index() {
    let seek = |q: &str| parse(q).unwrap().seek();
    assert_eq!(
        seek(r#"{ resource.service.name = "x" }"#),
        Seek::Service("x".into())
    );
    assert_eq!(
        seek(r#"{ resource.service.name = "x" && name = "op" }"#),
        Seek::Operation {
            service: "x".into(),
            name: "op".into()
        }
    );
    assert_eq!(
        seek("{ span.http.status_code = 500 }"),
        Seek::Attribute {
            resource: false,
            key: "http.status_code".into(),
            value: "500".into()
        }
    );
    let at_least = |service: Option<&str>, min_ns| Seek::Duration {
        service: service.map(str::to_owned),
        min_ns,
    };
    assert_eq!(seek("{ duration > 1s }"), at_least(None, 1_000_000_000));
    assert_eq!(
        seek(r#"{ resource.service.name = "x" && span:duration >= 2s }"#),
        at_least(Some("x"), 2_000_000_000)
    );
    assert_eq!(seek("{ duration < 1s }"), Seek::Time);
    assert_eq!(
        seek(r#"{ resource.service.name = "x" } || { name = "y" }"#),
        Seek::Time
    );
    assert_eq!(
        seek(r#"{ duration > 1s } && { resource.service.name = "x" }"#),
        at_least(None, 1_000_000_000)
    );
}

/// Runs `f` on a thread with the 2 MiB stack searches get in the server (tokio's blocking
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

fn wrap(open: &str, inner: &str, close: &str, times: usize) -> String {
    format!("{}{inner}{}", open.repeat(times), close.repeat(times))
}

#[test]
fn deep_queries_are_parse_errors_not_stack_overflows() {
    let filter = r#"{ name = "a" }"#;
    for q in [
        wrap("(", filter, ")", 3_000),
        format!("{filter}{}", format!(" && {filter}").repeat(20_000)),
        format!("{{ {} }}", wrap("(", r#"name = "a""#, ")", 3_000)),
        format!(r#"{{ name = "a"{} }}"#, r#" || name = "a""#.repeat(20_000)),
    ] {
        let err = on_small_stack(|| parse(&q).map(|_| ())).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");
    }
}

#[test]
fn queries_at_the_nesting_limit_evaluate_on_a_small_stack() {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
    let n = MAX_NESTING;
    let span = StoredSpan {
        span: Span {
            name: "a".into(),
            ..Span::default()
        },
        origin: std::sync::Arc::new(storage::traces::Origin {
            skeleton: ResourceSpans::default(),
        }),
    };
    let filter = r#"{ name = "a" }"#;
    for q in [
        wrap("(", filter, ")", n),
        format!("{filter}{}", format!(" && {filter}").repeat(n)),
        format!("{{ {} }}", wrap("(", r#"name = "a""#, ")", n)),
        format!(r#"{{ name = "a"{} }}"#, r#" && name = "a""#.repeat(n)),
    ] {
        on_small_stack(|| {
            let query = parse(&q).unwrap();
            assert!(query.candidate(&span));
            assert!(!query.eval(std::slice::from_ref(&span)).is_empty());
            let mut fields = Vec::new();
            query.fields(&mut fields);
            assert!(fields.contains(&Field::Intrinsic(Intrinsic::Name)));
            query.seek();
        });
    }
}

/// The span letters (`a`…`f` of [`checkout`]) in each matching spanset, as hand-derived from
/// the tree and Tempo's documented semantics.
fn matches(q: &str) -> Vec<String> {
    let trace = stored(&checkout(7, 1_000_000_000));
    let query = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    query
        .eval(&trace)
        .iter()
        .map(|set| {
            set.spans
                .iter()
                .map(|&i| trace[i].span.span_id[0] as char)
                .collect()
        })
        .collect()
}

#[test]
fn structural_operators_follow_the_span_tree() {
    for (q, want) in [
        (
            r#"{ resource.service.name = "frontend" } >> { resource.service.name = "db" }"#,
            vec!["d"],
        ),
        (r#"{ name = "GET /api" } > { }"#, vec!["de"]),
        (r#"{ name = "query" } < { }"#, vec!["c"]),
        (r#"{ name = "query" } << { }"#, vec!["abc"]),
        (r#"{ name = "query" } ~ { }"#, vec!["e"]),
        (
            r#"{ resource.service.name = "frontend" } !>> { resource.service.name = "api" }"#,
            vec![],
        ),
        ("{ kind = server } !> { }", vec!["ac"]),
        (r#"{ name = "GET /" } &> { kind = internal }"#, vec!["af"]),
        (
            r#"{ name = "query" } !~ { resource.service.name = "api" }"#,
            vec!["c"],
        ),
        (
            r#"{ status = error } && { span.db.system = "postgres" }"#,
            vec!["cd"],
        ),
        (r#"{ status = error } && { name = "nope" }"#, vec![]),
        (r#"{ status = error } || { name = "nope" }"#, vec!["c"]),
        // `&&`/`||` bind looser than structural operators.
        (
            r#"{ name = "nope" } || { name = "GET /api" } > { kind = internal }"#,
            vec!["e"],
        ),
    ] {
        let want: Vec<String> = want.into_iter().map(String::from).collect();
        assert_eq!(matches(q), want, "{q}");
    }
}

#[test]
fn trace_level_and_scoped_intrinsics_read_the_whole_trace() {
    for (q, want) in [
        (
            r#"{ rootServiceName = "frontend" && traceDuration >= 100ms && kind = server }"#,
            "ac",
        ),
        (
            r#"{ trace:rootName = "GET /" && trace:duration < 101ms && name = "query" }"#,
            "d",
        ),
        ("{ nestedSetParent < 0 }", "a"),
        (
            "{ nestedSetParent > 0 && nestedSetLeft > 0 && nestedSetRight > nestedSetLeft }",
            "bcdef",
        ),
        ("{ span.http.status_code >= 500 }", "c"),
        (r#"{ span.http.status_code = "500" }"#, "c"),
        ("{ .db.system != nil }", "d"),
        (
            r#"{ !(kind = client) && resource.service.name = "frontend" }"#,
            "af",
        ),
        (r#"{ span:parentID = nil }"#, "a"),
        (r#"{ duration > 50ms && duration < 90ms }"#, "bc"),
        ("{ status = error && true }", "c"),
    ] {
        assert_eq!(matches(q), vec![want.to_string()], "{q}");
    }
    assert!(matches(r#"{ rootServiceName = "api" }"#).is_empty());
    assert!(matches(r#"{ span.db.system = nil && resource.service.name = "db" }"#).is_empty());
}

#[test]
fn pipelines_group_filter_and_merge_spansets() {
    // By service: api {c, e}, db {d}, frontend {a, b, f}; then only groups of more than one.
    assert_eq!(
        matches("{ } | by(resource.service.name) | count() > 1"),
        vec!["ce", "abf"]
    );
    // Mean duration (100+80+70+10+5+10)/6 ms ≈ 45.8 ms.
    assert_eq!(matches("{ } | avg(duration) > 40ms"), vec!["abcdef"]);
    assert!(matches("{ } | avg(duration) > 50ms").is_empty());
    assert_eq!(matches("{ } | max(duration) = 100ms"), vec!["abcdef"]);
    assert_eq!(matches("{ } | by(kind) | coalesce()"), vec!["abcdef"]);
    assert_eq!(
        matches(
            r#"({ kind = server } | by(resource.service.name) | count() = 1) >> { kind = client }"#
        ),
        vec!["bd"]
    );
    // What Traces Drilldown's structure tab sends.
    assert_eq!(
        matches(
            "({nestedSetParent<0 && true} &>> { status = error }) || ({nestedSetParent<0 && true}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)"
        ),
        vec!["ac"]
    );
    let trace = stored(&checkout(7, 0));
    let sets = parse("{ } | by(resource.service.name) | count() > 1")
        .unwrap()
        .eval(&trace);
    assert_eq!(
        sets[0].attributes,
        vec![
            (
                "by(resource.service.name)".to_string(),
                Value::Str("api".into())
            ),
            ("count()".to_string(), Value::Float(2.0)),
        ]
    );
}

#[test]
fn a_span_alone_answers_unknown_only_for_trace_level_fields() {
    let trace = stored(&checkout(7, 0));
    let (root, child) = (&trace[0], &trace[2]);
    let check = |q: &str, s| match parse(q).unwrap().pipeline.single_filter() {
        Some(c) => c.check(SpanRef::alone(s)),
        None => panic!("{q} is not a single filter"),
    };
    assert_eq!(check("{ nestedSetParent < 0 }", root), Some(true));
    assert_eq!(check("{ nestedSetParent < 0 }", child), Some(false));
    assert_eq!(check("{ nestedSetParent = 3 }", child), None);
    assert_eq!(check(r#"{ rootName = "GET /" }"#, child), None);
    assert_eq!(
        check(r#"{ rootName = "GET /" && kind = client }"#, child),
        Some(false)
    );
    assert_eq!(
        check(r#"{ rootName = "GET /" || status = error }"#, child),
        Some(true)
    );
    assert_eq!(check("{ status = error }", child), Some(true));
}
