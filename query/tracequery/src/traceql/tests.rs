use super::*;

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
    ] {
        parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}

#[test]
fn unsupported_forms_are_errors_naming_why() {
    assert!(parse("{ a } >> { b }").is_err());
    assert!(parse(r#"{ .a = "x" } >> { .b = "y" }"#)
        .unwrap_err()
        .to_string()
        .contains("structural"));
    assert!(parse(r#"{ .a = "x" } | count() > 1"#)
        .unwrap_err()
        .to_string()
        .contains("pipelines"));
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
    assert_eq!(seek("{ duration > 1s }"), Seek::Time);
    assert_eq!(
        seek(r#"{ resource.service.name = "x" } || { name = "y" }"#),
        Seek::Time
    );
    assert_eq!(
        seek(r#"{ duration > 1s } && { resource.service.name = "x" }"#),
        Seek::Service("x".into())
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
            assert!(query.eval(std::slice::from_ref(&span)).is_some());
            let mut fields = Vec::new();
            query.fields(&mut fields);
            assert!(fields.contains(&Field::Name));
            query.seek();
        });
    }
}
