//! Refuses state-changing requests a web page on another site could make a browser send:
//! every POST, PUT, DELETE and PATCH (writes, pushes, reload, silences) goes through
//! [`guard`]. The rule is Go's `http.CrossOriginProtection`: a browser request is refused
//! (403) when `Sec-Fetch-Site` says it does not come from this origin, or, from browsers that
//! do not send that header, when its `Origin` names another host than the request's `Host`.
//! Clients that are not browsers (curl, Prometheus, Grafana's backend, SDKs) send neither
//! header and pass unchanged; so do reads sent as form POSTs (Grafana's `/api/v1/query`).
//!
//! Admin endpoints (`/-/…`) also refuse the three body types a page can send without a CORS
//! preflight (415), so even a browser that sends no origin information cannot trigger them
//! from a form. The Alertmanager API does its own check (`api::alertmanager_v2`, with
//! Alertmanager's error); the Pushgateway's pushes take `text/plain` as the Pushgateway does,
//! so there the origin checks above are the defence; the other writes take only types no form
//! can produce.

use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::web::refuse;

/// Go's texts for the two refusals.
const FROM_SEC_FETCH_SITE: &str = "cross-origin request detected from Sec-Fetch-Site header";
const FROM_ORIGIN: &str = "cross-origin request detected, and/or browser is out of date: Sec-Fetch-Site is missing, and Origin does not match Host";

/// The content types an HTML form or a no-preflight `fetch` can send.
const SIMPLE_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

pub async fn guard(req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return next.run(req).await;
    }
    if let Some(refusal) = refusal(req.headers(), req.uri().authority().map(|a| a.as_str())) {
        let answer = (StatusCode::FORBIDDEN, format!("{refusal}\n")).into_response();
        return refuse(req, answer).await;
    }
    if req.uri().path().starts_with("/-/") {
        if let Some(t) = simple_type(req.headers()) {
            let answer = (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported media type {t:?}: admin endpoints take no form body\n"),
            )
                .into_response();
            return refuse(req, answer).await;
        }
    }
    next.run(req).await
}

/// Why a state-changing request is refused as cross-origin, if it is. `authority` is the
/// request target's, which HTTP/2 carries instead of a `Host` header.
fn refusal(headers: &HeaderMap, authority: Option<&str>) -> Option<&'static str> {
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        // "none": typed in the address bar or opened from a bookmark.
        Some(b"same-origin" | b"none") => return None,
        Some(_) => return Some(FROM_SEC_FETCH_SITE),
        None => {}
    }
    let origin = headers.get(ORIGIN)?;
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    // The origin's host and port, as `scheme://host[:port]` carries them; "null" (a sandboxed
    // frame, a local file) has none and matches nothing.
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => None,
        _ => Some(FROM_ORIGIN),
    }
}

/// The request's media type when it is one a page can send without a preflight.
fn simple_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    SIMPLE_TYPES.contains(&media.as_str()).then_some(media)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/-/reload", post(|| async { "reloaded" }))
            .route(
                "/api/v1/write",
                post(|| async { "written" }).put(|| async {}),
            )
            .route(
                "/api/v1/query",
                post(|| async { "queried" }).get(|| async { "queried" }),
            )
            .layer(axum::middleware::from_fn(guard))
    }

    async fn status(method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn cross_origin_browser_writes_are_refused() {
        let host = ("host", "nm:9090");
        for headers in [
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://nm:9091")],
            vec![host, ("origin", "null")],
            vec![("origin", "http://nm:9090")],
        ] {
            for (method, path) in [
                ("POST", "/-/reload"),
                ("POST", "/api/v1/write"),
                ("PUT", "/api/v1/write"),
                ("POST", "/api/v1/query"),
            ] {
                let (code, body) = status(method, path, &headers).await;
                assert_eq!(code, 403, "{method} {path} {headers:?}: {body}");
                assert!(body.starts_with("cross-origin request detected"), "{body}");
            }
        }
        let (_, body) = status(
            "POST",
            "/-/reload",
            &[host, ("sec-fetch-site", "cross-site")],
        )
        .await;
        assert_eq!(body, format!("{FROM_SEC_FETCH_SITE}\n"));
    }

    #[tokio::test]
    async fn clients_without_origin_same_origin_pages_and_reads_pass() {
        let host = ("host", "nm:9090");
        for headers in [
            vec![],
            vec![host],
            vec![host, ("origin", "http://nm:9090")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "none")],
            // Sec-Fetch-Site decides when present.
            vec![
                host,
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://x"),
            ],
        ] {
            let (code, body) = status("POST", "/api/v1/write", &headers).await;
            assert_eq!((code, body.as_str()), (200, "written"), "{headers:?}");
        }
        for headers in [
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("origin", "http://evil.example")],
        ] {
            let (code, _) = status("GET", "/api/v1/query", &headers).await;
            assert_eq!(code, 200, "{headers:?}");
        }
        // A form-encoded read from a non-browser client.
        let form = ("content-type", "application/x-www-form-urlencoded");
        let (code, _) = status("POST", "/api/v1/query", &[host, form]).await;
        assert_eq!(code, 200);
    }

    #[tokio::test]
    async fn admin_endpoints_refuse_form_body_types() {
        for ct in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "Multipart/Form-Data; boundary=x",
        ] {
            let (code, body) = status("POST", "/-/reload", &[("content-type", ct)]).await;
            assert_eq!(code, 415, "{ct}: {body}");
        }
        for headers in [vec![], vec![("content-type", "application/json")]] {
            let (code, body) = status("POST", "/-/reload", &headers).await;
            assert_eq!((code, body.as_str()), (200, "reloaded"), "{headers:?}");
        }
        // Elsewhere the endpoint's own content-type rules apply.
        let (code, _) = status("POST", "/api/v1/write", &[("content-type", "text/plain")]).await;
        assert_eq!(code, 200);
    }
}
