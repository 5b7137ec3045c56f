//! `http_sd_configs`, as Prometheus 2.42's `discovery/http`: a task per entry GETs the URL
//! right away and then every `refresh_interval` (`Accept: application/json`,
//! `X-Prometheus-Refresh-Interval-Seconds`, the entry's credentials and TLS, the interval as
//! the timeout), over the scrape client's [`Connection`]. A `200` with a JSON content type and
//! a JSON list of target groups replaces the groups, each labelled `__meta_url`; anything else
//! keeps the last good groups (as Prometheus's refresh loop does) and is logged once per
//! failure episode. Owns fetching and parsing the list; what becomes of a group is `target`'s.

use std::sync::Arc;
use std::time::Duration;

use super::{Discovered, Episode, Refresh, SdMetrics};
use crate::forward::UrlParts;
use crate::scrape::client::{Connection, Get, HttpSettings};
use crate::scrape::config::{HttpSdConfig, TargetGroup};

/// The most bytes of a discovery answer read (decoded, when gzipped). Prometheus reads any
/// size; the URL is a remote peer, so novamon bounds what one answer can cost. A group list
/// takes some 50 to 100 bytes a target: 16 MiB holds well over a hundred thousand targets,
/// more than one scrape pool runs, while several entries fetching at once stay cheap.
pub(crate) const MAX_BODY_BYTES: u64 = 16 << 20;

/// What Prometheus names each group's URL with.
const URL_LABEL: &str = "__meta_url";

/// One entry, checked and compiled at config load (a bad TLS file fails the load).
pub(crate) struct HttpSource {
    url: String,
    scheme: String,
    host: String,
    address: String,
    path_and_query: String,
    refresh: Duration,
    settings: HttpSettings,
}

impl HttpSource {
    pub(crate) fn new(c: &HttpSdConfig) -> Result<HttpSource, String> {
        c.check()?;
        // Go's client drops the fragment; it is never sent.
        let url = c.url.split('#').next().unwrap_or_default();
        let parts = UrlParts::split(url)?;
        Ok(HttpSource {
            url: c.url.clone(),
            scheme: parts.scheme.to_string(),
            host: parts.authority.to_string(),
            address: parts.address,
            path_and_query: parts.path_and_query,
            refresh: c.refresh_interval,
            settings: HttpSettings::for_http_sd(c, MAX_BODY_BYTES)?,
        })
    }

    /// One GET of the URL and its groups, errors worded as Prometheus's.
    async fn fetch(&self, conn: &mut Connection) -> Result<Vec<Discovered>, String> {
        let get = Get {
            scheme: &self.scheme,
            host: &self.host,
            address: &self.address,
            path_and_query: &self.path_and_query,
            hint: (
                "X-Prometheus-Refresh-Interval-Seconds",
                format!("{}", self.refresh.as_secs_f64()),
            ),
            // Prometheus sets the client's timeout to the refresh interval.
            timeout: self.refresh,
            content_type: Some(json_content_type),
        };
        let fetched = conn.get(&self.settings, &get).await?;
        parse(&fetched.body, &self.url)
    }
}

/// Prometheus's check of the answer's content type, made before the body is read.
fn json_content_type(content_type: Option<&str>) -> Result<(), String> {
    let content_type = content_type.unwrap_or_default();
    if is_json(content_type) {
        Ok(())
    } else {
        Err(format!("unsupported content type {content_type:?}"))
    }
}

/// Prometheus's `^(?i:application/json(;\s*charset=("utf-8"|utf-8))?)$`, on the header
/// trimmed.
fn is_json(content_type: &str) -> bool {
    let ct = content_type.trim().to_ascii_lowercase();
    let Some(rest) = ct.strip_prefix("application/json") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix(';') else {
        return false;
    };
    // RE2's `\s`: space, tab, newline, form feed, carriage return.
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\x0c', '\r']);
    matches!(rest, "charset=utf-8" | "charset=\"utf-8\"")
}

/// An answer's groups: a JSON list of `{targets, labels}` (no other keys, no `null` item,
/// label names valid), each labelled with the URL.
fn parse(body: &[u8], url: &str) -> Result<Vec<Discovered>, String> {
    let groups: Vec<Option<TargetGroup>> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    groups
        .into_iter()
        .map(|g| {
            let mut group = g.ok_or("nil target group item found")?;
            if let Some(bad) = group
                .labels
                .keys()
                .find(|k| !storage::relabel::valid_name(k))
            {
                return Err(format!("{bad:?} is not a valid label name"));
            }
            // A group label, as Prometheus sets it: it replaces one the answer names itself.
            group.labels.insert(URL_LABEL.into(), url.into());
            Ok(Discovered {
                group,
                meta: Vec::new(),
            })
        })
        .collect()
}

/// What an `http_sd_configs` answer's body becomes: its groups, each labelled with a
/// placeholder URL, or why it is refused (the fuzz target's entry point).
pub fn http_sd_answer(body: &[u8]) -> Result<Vec<Discovered>, String> {
    parse(body, "http://sd.invalid/")
}

/// One entry's refreshing: its connection (kept alive between fetches) and failure episode.
pub(crate) struct HttpRefresh {
    job: String,
    source: Arc<HttpSource>,
    conn: Connection,
    episode: Episode,
    metrics: Arc<SdMetrics>,
}

impl HttpRefresh {
    pub(crate) fn new(
        job: String,
        source: Arc<HttpSource>,
        metrics: Arc<SdMetrics>,
    ) -> HttpRefresh {
        HttpRefresh {
            job,
            source,
            conn: Connection::default(),
            episode: Episode::new("http_sd"),
            metrics,
        }
    }
}

impl Refresh for HttpRefresh {
    const MECHANISM: &'static str = "http";

    fn interval(&self) -> Duration {
        self.source.refresh
    }

    /// Any failure keeps the last groups, as Prometheus's refresh loop does.
    async fn refresh(&mut self) -> Option<Vec<Discovered>> {
        let source = &self.source;
        match source.fetch(&mut self.conn).await {
            Ok(groups) => {
                self.episode.succeeded(&self.job, &source.url);
                Some(groups)
            }
            Err(e) => {
                self.metrics.http_failures.inc();
                self.episode.failed(&self.job, &source.url, &e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn content_types_as_prometheus_matches_them() {
        for ok in [
            "application/json",
            " Application/JSON ",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json;\t charset=utf-8",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/jsonx",
            "application/json; charset=latin1",
            "application/json charset=utf-8",
            "application/json; charset=utf-8; x=y",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn groups_are_parsed_and_labelled_with_the_url() {
        let body = br#"[
            {"targets": ["a:9100", "b:9100"], "labels": {"dc": "eu", "__meta_url": "forged"}},
            {"targets": []},
            {"labels": {"x": "y"}}
        ]"#;
        let g = parse(body, "http://sd/x").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].group.targets, ["a:9100", "b:9100"]);
        assert_eq!(g[0].group.labels["dc"], "eu");
        assert!(g.iter().all(|d| d.group.labels[URL_LABEL] == "http://sd/x"));
        assert!(g.iter().all(|d| d.meta.is_empty()));
        assert_eq!(parse(b"[]", "u"), Ok(Vec::new()));
    }

    #[test]
    fn bad_answers_say_why() {
        assert_eq!(
            json_content_type(Some("text/plain")),
            Err("unsupported content type \"text/plain\"".into())
        );
        assert_eq!(
            json_content_type(None),
            Err("unsupported content type \"\"".into())
        );
        assert_eq!(json_content_type(Some("application/json")), Ok(()));
        for (body, why) in [
            (&b"[null]"[..], "nil target group item found"),
            (b"{}", "invalid type"),
            (b"[{\"targets\": [\"a:1\"", "EOF"),
            (b"[{\"target\": [\"a:1\"]}]", "unknown field"),
            (
                b"[{\"labels\": {\"1x\": \"y\"}}]",
                "\"1x\" is not a valid label name",
            ),
            (b"[{\"labels\": {\"x\": 1}}]", "invalid type"),
        ] {
            let err = parse(body, "u").unwrap_err();
            assert!(err.contains(why), "{body:?}: {err}");
        }
    }

    /// A server answering each connection's requests with the next of `answers` (status,
    /// content type, body); returns its URL and the requests' heads.
    async fn serve(
        answers: Vec<(u16, &'static str, Vec<u8>)>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sd?x=1", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                let Some((status, ct, body)) = answers.next() else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed mid-request");
                    head.extend_from_slice(&buf[..n]);
                }
                seen.lock().push(String::from_utf8(head).unwrap());
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                // The client may stop reading an oversized body: a failed write is expected.
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        (url, heads)
    }

    fn source(url: &str) -> HttpSource {
        let c: HttpSdConfig = serde_yaml::from_str(&format!(
            "url: '{url}'\nrefresh_interval: 30s\nauthorization: {{credentials: secret}}\n"
        ))
        .unwrap();
        HttpSource::new(&c).unwrap()
    }

    #[tokio::test]
    async fn failures_keep_the_last_good_groups() {
        let good = br#"[{"targets": ["a:1"], "labels": {"k": "v"}}]"#.to_vec();
        let (url, heads) = serve(vec![
            (200, "application/json", good.clone()),
            (500, "application/json", b"[]".to_vec()),
            (200, "text/html", b"[]".to_vec()),
            (200, "application/json", b"[{".to_vec()),
            (
                200,
                "application/json",
                vec![b' '; MAX_BODY_BYTES as usize + 1],
            ),
            (200, "application/json; charset=utf-8", good.clone()),
            (200, "application/json", b"[]".to_vec()),
        ])
        .await;
        let metrics = Arc::new(SdMetrics::default());
        let mut r = HttpRefresh::new("job".into(), Arc::new(source(&url)), metrics.clone());
        let first = r.refresh().await.expect("first groups");
        assert_eq!(first.len(), 1);
        for _ in 0..4 {
            assert_eq!(r.refresh().await, None, "a failure keeps the last groups");
        }
        assert!(r.episode.failing);
        assert_eq!(r.refresh().await, Some(first));
        assert!(!r.episode.failing);
        assert_eq!(r.refresh().await, Some(Vec::new()), "an empty list empties");
        assert_eq!(metrics.http_failures.get(), 4, "each failed refresh counts");

        let heads = heads.lock();
        assert_eq!(heads.len(), 7);
        let head = heads[0].to_ascii_lowercase();
        for h in [
            "get /sd?x=1 http/1.1",
            "accept: application/json",
            "x-prometheus-refresh-interval-seconds: 30\r\n",
            "authorization: bearer secret",
        ] {
            assert!(head.contains(h), "{h} in {head}");
        }
    }

    #[tokio::test]
    async fn each_failure_says_why() {
        let (url, _) = serve(vec![
            (503, "application/json", Vec::new()),
            // Refused for its type before its body is read, as Prometheus does.
            (200, "text/plain", vec![b' '; MAX_BODY_BYTES as usize + 1]),
            (
                200,
                "application/json",
                vec![b' '; MAX_BODY_BYTES as usize + 1],
            ),
        ])
        .await;
        let src = source(&url);
        let mut conn = Connection::default();
        let mut errors = Vec::new();
        for _ in 0..3 {
            errors.push(src.fetch(&mut conn).await.unwrap_err());
        }
        assert_eq!(
            errors,
            [
                "server returned HTTP status 503 Service Unavailable",
                "unsupported content type \"text/plain\"",
                "body size limit exceeded",
            ]
        );
        let refused = source("http://127.0.0.1:1/sd")
            .fetch(&mut Connection::default())
            .await
            .unwrap_err();
        assert!(
            refused.starts_with("Get \"http://127.0.0.1:1/sd\": dial tcp"),
            "{refused}"
        );
    }

    #[test]
    fn entries_are_checked_as_prometheus_checks_them() {
        for (yml, why) in [
            ("refresh_interval: 10s", "URL is missing"),
            ("url: ftp://x/", "URL scheme must be 'http' or 'https'"),
            ("url: x/y", "URL scheme must be 'http' or 'https'"),
            ("url: 'http:///sd'", "host is missing in URL"),
            (
                "url: http://x/\nbasic_auth: {username: u}\nbearer_token: t",
                "at most one of basic_auth",
            ),
            // Options the client does not have, refused as Prometheus refuses unknown fields.
            (
                "url: http://x/\nproxy_url: http://p/",
                "field proxy_url not found in type http.SDConfig",
            ),
            (
                "url: http://x/\noauth2: {}",
                "field oauth2 not found in type http.SDConfig",
            ),
        ] {
            let c: HttpSdConfig = serde_yaml::from_str(yml).unwrap();
            let err = HttpSource::new(&c).err().unwrap();
            assert!(err.contains(why), "{yml}: {err}");
        }
        let yml = "url: http://x/\nrefresh_interval: 0s";
        assert!(serde_yaml::from_str::<HttpSdConfig>(yml).is_err(), "{yml}");
        let c: HttpSdConfig = serde_yaml::from_str("url: http://x:81/sd#frag").unwrap();
        assert_eq!(c.refresh_interval, Duration::from_secs(60));
        let s = HttpSource::new(&c).unwrap();
        assert_eq!(
            (
                s.host.as_str(),
                s.address.as_str(),
                s.path_and_query.as_str()
            ),
            ("x:81", "x:81", "/sd")
        );
    }
}
