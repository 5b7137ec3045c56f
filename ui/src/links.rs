//! Prometheus's own UI links, `/graph?g0.expr=…&g0.tab=…&g0.range_input=…` — what alerts'
//! `generatorURL` and the `graphLink`/`tableLink` template functions produce — redirected to
//! the metrics explorer so they open here.

use axum::extract::RawQuery;
use axum::response::Redirect;

pub(crate) async fn graph(RawQuery(query): RawQuery) -> Redirect {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut tab = "graph";
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "g0.expr" => {
                out.append_pair("q", &v);
            }
            "g0.range_input" => {
                out.append_pair("range", &v);
            }
            // Prometheus 2's UI numbers its tabs (0 graph, 1 table); Prometheus 3 names them.
            "g0.tab" if v == "1" || v == "table" => tab = "table",
            _ => {}
        }
    }
    out.append_pair("tab", tab);
    // Relative, so the link also works behind a proxy that mounts novamon under a prefix.
    Redirect::to(&format!("./#/metrics?{}", out.finish()))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::LOCATION;
    use axum::http::Request;
    use std::sync::Arc;
    use tower::ServiceExt;

    async fn location(uri: &str) -> String {
        let app = crate::routes(Arc::new(crate::status::tests::Fixed::default()));
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 303, "{uri}");
        resp.headers()[LOCATION].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn prometheus_graph_links_open_the_metrics_explorer() {
        // As the rule manager writes generatorURL: the expression escaped, the table tab.
        assert_eq!(
            location("/graph?g0.expr=rate%28x%7Bjob%3D%22a+b%22%7D%5B5m%5D%29+%3E+0&g0.tab=1")
                .await,
            "./#/metrics?q=rate%28x%7Bjob%3D%22a+b%22%7D%5B5m%5D%29+%3E+0&tab=table"
        );
        assert_eq!(
            location("/graph?g0.expr=up&g0.tab=0&g0.range_input=2h&g0.stacked=0").await,
            "./#/metrics?q=up&range=2h&tab=graph"
        );
        assert_eq!(location("/graph").await, "./#/metrics?tab=graph");
    }
}
