//! The UI's static files: embedded at compile time, gzip-compressed once when the routes are
//! built, served with an ETag per representation so a revisit costs a 304. Owns content
//! negotiation and caching; knows nothing of what the pages do.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const JS: &str = "text/javascript; charset=utf-8";

/// (name under `/ui/`, content type, bytes). `index.html` is also what `/` serves.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/style.css"),
    ),
    ("app.js", JS, include_bytes!("../assets/app.js")),
    ("lib.js", JS, include_bytes!("../assets/lib.js")),
    ("graph.js", JS, include_bytes!("../assets/graph.js")),
    ("status.js", JS, include_bytes!("../assets/status.js")),
    ("metrics.js", JS, include_bytes!("../assets/metrics.js")),
    ("logs.js", JS, include_bytes!("../assets/logs.js")),
    ("traces.js", JS, include_bytes!("../assets/traces.js")),
    ("sql.js", JS, include_bytes!("../assets/sql.js")),
    ("alerts.js", JS, include_bytes!("../assets/alerts.js")),
    ("targets.js", JS, include_bytes!("../assets/targets.js")),
];

struct Asset {
    name: &'static str,
    content_type: &'static str,
    raw: &'static [u8],
    gzip: Bytes,
    etag: String,
    etag_gzip: String,
}

pub(crate) struct Assets(Vec<Asset>);

impl Assets {
    pub(crate) fn load() -> Assets {
        Assets(
            FILES
                .iter()
                .map(|&(name, content_type, raw)| {
                    let mut h = DefaultHasher::new();
                    raw.hash(&mut h);
                    let tag = h.finish();
                    Asset {
                        name,
                        content_type,
                        raw,
                        gzip: Bytes::from(gzip(raw)),
                        etag: format!("\"{tag:016x}\""),
                        etag_gzip: format!("\"{tag:016x}-gz\""),
                    }
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&Asset> {
        self.0.iter().find(|a| a.name == name)
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

pub(crate) async fn index(State(assets): State<Arc<Assets>>, headers: HeaderMap) -> Response {
    match assets.get("index.html") {
        Some(a) => respond(a, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn file(
    State(assets): State<Arc<Assets>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match assets.get(&name) {
        Some(a) => respond(a, &headers),
        None => (StatusCode::NOT_FOUND, format!("no UI file named {name}\n")).into_response(),
    }
}

fn respond(asset: &Asset, headers: &HeaderMap) -> Response {
    let gz = accepts_gzip(headers);
    let etag = if gz { &asset.etag_gzip } else { &asset.etag };
    let mut out = HeaderMap::new();
    out.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    // File names carry no version, so browsers must revalidate; the ETag makes that a 304.
    out.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        out.insert(ETAG, v);
    }
    if matches_etag(headers, etag) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    let body = if gz {
        out.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        Body::from(asset.gzip.clone())
    } else {
        Body::from(asset.raw)
    };
    (out, body).into_response()
}

/// Whether Accept-Encoding allows gzip (RFC 9110 §12.5.3: `gzip` or `*`, with q > 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// If-None-Match uses the weak comparison (RFC 9110 §13.1.2), so `W/` prefixes are ignored.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::io::Read;
    use tower::ServiceExt;

    fn app() -> axum::Router {
        crate::routes(Arc::new(crate::status::tests::Fixed::default()))
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, bytes)
    }

    #[tokio::test]
    async fn gzip_is_served_when_accepted_and_decodes_to_the_file() {
        let (status, h, body) = get("/ui/app.js", &[("accept-encoding", "br, gzip;q=0.8")]).await;
        assert_eq!(status, 200);
        assert_eq!(h[CONTENT_ENCODING], "gzip");
        assert_eq!(h[CONTENT_TYPE], JS);
        assert_eq!(h[VARY], "Accept-Encoding");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, include_bytes!("../assets/app.js"));
        assert!(body.len() < plain.len());
    }

    #[tokio::test]
    async fn identity_when_gzip_is_not_accepted_or_refused() {
        for accept in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
            let headers: Vec<_> = accept.iter().map(|a| ("accept-encoding", *a)).collect();
            let (status, h, body) = get("/", &headers).await;
            assert_eq!(status, 200, "{accept:?}");
            assert!(h.get(CONTENT_ENCODING).is_none(), "{accept:?}");
            assert_eq!(body, include_bytes!("../assets/index.html"), "{accept:?}");
        }
    }

    #[tokio::test]
    async fn a_matching_etag_is_a_304_and_each_encoding_has_its_own() {
        let (_, plain, _) = get("/ui/style.css", &[]).await;
        let (_, gz, _) = get("/ui/style.css", &[("accept-encoding", "gzip")]).await;
        assert_ne!(plain[ETAG], gz[ETAG]);
        let etag = gz[ETAG].to_str().unwrap().to_owned();
        let (status, h, body) = get(
            "/ui/style.css",
            &[
                ("accept-encoding", "gzip"),
                ("if-none-match", &format!("W/{etag}")),
            ],
        )
        .await;
        assert_eq!(status, 304);
        assert_eq!(h[ETAG], etag.as_str());
        assert!(body.is_empty());
        // The gzip ETag does not validate the identity representation.
        let (status, _, _) = get("/ui/style.css", &[("if-none-match", &etag)]).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn unknown_files_are_404_with_a_message() {
        let (status, _, body) = get("/ui/nope.js", &[]).await;
        assert_eq!(status, 404);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "no UI file named nope.js\n"
        );
    }

    #[test]
    fn every_module_a_module_imports_is_embedded() {
        let mut imports = 0;
        for (name, _, raw) in FILES.iter().filter(|f| f.1 == JS) {
            let text = std::str::from_utf8(raw).unwrap();
            // Static imports, and the pages fetched when first shown (`import("./sql.js")`).
            let lazy = text.split("import(").skip(1);
            for line in text
                .lines()
                .filter(|l| l.starts_with("import "))
                .chain(lazy)
            {
                let file = line
                    .split(['"', '\''])
                    .nth(1)
                    .and_then(|p| p.strip_prefix("./"))
                    .unwrap_or_else(|| panic!("{name}: import not relative: {line}"));
                assert!(
                    FILES.iter().any(|f| f.0 == file),
                    "{name} imports {file}, not embedded"
                );
                imports += 1;
            }
        }
        assert!(imports >= 10, "{imports}");
    }
}
