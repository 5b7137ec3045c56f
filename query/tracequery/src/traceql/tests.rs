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
