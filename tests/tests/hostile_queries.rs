//! Queries built to exhaust the stack or memory of the query engines get each API's own error
//! and leave the process serving: deep nesting (queries run on tokio's blocking pool, whose
//! threads have 2 MiB stacks) and subqueries over billions of steps.

use e2e::{enc, Novamon};

/// Status and body of a GET.
fn get(n: &Novamon, path_and_query: &str) -> (u16, String) {
    let mut resp = n
        .agent
        .get(format!("{}{path_and_query}", n.url))
        .call()
        .unwrap_or_else(|e| panic!("GET {}…: {e}", &path_and_query[..60]));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn nested(open: &str, inner: &str, close: &str, times: usize) -> String {
    format!("{}{inner}{}", open.repeat(times), close.repeat(times))
}

#[test]
fn hostile_queries_get_each_apis_error_and_the_process_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let n = Novamon::start(&dir.path().join("data"), &[]);

    // PromQL: a 48 KB operator chain and deep parentheses are Prometheus's parse errors.
    for q in [
        format!("1{}", "+1".repeat(12_000)),
        nested("(", "1", ")", 50_000),
    ] {
        let (status, body, _) = n.post_raw(
            "/api/v1/query",
            "application/x-www-form-urlencoded",
            &[],
            format!("query={}&time=1000", enc(&q)).into_bytes(),
        );
        assert_eq!(status, 400, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["errorType"], "bad_data", "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("nested too deeply"),
            "{body}"
        );
    }
    // The endpoints that parse without evaluating refuse the same queries as bad input.
    let deep = nested("(", "up", ")", 50_000);
    for path in [
        "/api/v1/parse_query?query=",
        "/api/v1/format_query?query=",
        "/api/v1/series?match[]=",
        "/api/v1/query_exemplars?query=",
    ] {
        let (status, body, _) = n.post_raw(
            path.split('?').next().unwrap(),
            "application/x-www-form-urlencoded",
            &[],
            format!(
                "{}={}",
                path.split('?').nth(1).unwrap().trim_end_matches('='),
                enc(&deep)
            )
            .into_bytes(),
        );
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("nested too deeply"), "{path}: {body}");
    }
    // A subquery of ten years at one second is over max_samples before it is allocated.
    let (status, body) = n.get_json(&format!(
        "/api/v1/query?query={}&time=1000",
        enc("max_over_time(vector(1)[10y:1s])")
    ));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("query processing would load too many samples into memory"),
        "{body}"
    );

    // LogQL: deep parentheses are Loki's 400.
    let q = nested("(", "vector(1)", ")", 5_000);
    let (status, body) = get(
        &n,
        &format!("/loki/api/v1/query?query={}&time=1000", enc(&q)),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested too deeply"), "{body}");

    // TraceQL: deep parentheses are Tempo's 400.
    let q = nested("(", r#"{ name = "a" }"#, ")", 3_000);
    let (status, body) = get(&n, &format!("/tempo/api/search?q={}", enc(&q)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested too deeply"), "{body}");

    // Still serving.
    let ok = n.get_ok("/api/v1/query?query=1%2B1&time=1000");
    assert_eq!(ok["data"]["result"][1], "2", "{ok}");
}
