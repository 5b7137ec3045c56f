//! Scraping end to end inside the crate: a local HTTP target whose answer each test sets, a
//! real TSDB in a temporary directory, the manager applying configs as a reload would.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;
use storage::{
    Exemplar, ExemplarQuerier, Label, Labels, MatchOp, Matcher, Querier, SelectHints,
    SeriesSamples, Tsdb, TsdbOptions,
};

use super::{Prepared, ScrapeConfig, ScrapeManager};

/// What the target answers next: status, content type, body, and a delay.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    gzip: bool,
    delay: Duration,
}

fn text(body: &str) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type: "text/plain; version=0.0.4",
        body: body.as_bytes().to_vec(),
        gzip: false,
        delay: Duration::ZERO,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    tsdb: Arc<Tsdb>,
    manager: Arc<ScrapeManager>,
    answer: Arc<Mutex<Answer>>,
    addr: String,
}

async fn fixture(first: Answer) -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(Mutex::new(first));
    let a = answer.clone();
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let a = a.lock().clone();
            async move {
                tokio::time::sleep(a.delay).await;
                let mut body = a.body;
                let mut resp = Response::builder()
                    .status(a.status)
                    .header(header::CONTENT_TYPE, a.content_type);
                if a.gzip {
                    use std::io::Write;
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    enc.write_all(&body).unwrap();
                    body = enc.finish().unwrap();
                    resp = resp.header(header::CONTENT_ENCODING, "gzip");
                }
                resp.body(axum::body::Body::from(body))
                    .unwrap()
                    .into_response()
            }
        }),
    );
    // Redirects: `/hops/N` sends to `/hops/N-1`, `/hops/0` to the page; `/loop` to itself;
    // `/elsewhere` to the page by another host name (a connection of its own).
    let elsewhere = format!("http://localhost:{port}/metrics");
    let app = app
        .route(
            "/hops/{n}",
            axum::routing::get(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    let to = match n {
                        0 => "../metrics".to_string(),
                        n => format!("/hops/{}", n - 1),
                    };
                    (StatusCode::FOUND, [(header::LOCATION, to)])
                },
            ),
        )
        .route(
            "/elsewhere",
            axum::routing::get(move || {
                let to = elsewhere.clone();
                async move { (StatusCode::FOUND, [(header::LOCATION, to)]) }
            }),
        )
        .route(
            "/loop",
            axum::routing::get(|| async {
                (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/loop")])
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let tsdb = Arc::new(Tsdb::open(dir.path(), TsdbOptions::default()).unwrap());
    let manager = ScrapeManager::new(tsdb.clone(), Default::default());
    Fixture {
        _dir: dir,
        tsdb,
        manager,
        answer,
        addr,
    }
}

impl Fixture {
    async fn apply(&self, job_yaml: &str) {
        let yml = job_yaml.replace("TARGET", &self.addr);
        let c: ScrapeConfig = serde_yaml::from_str(&yml).unwrap();
        let p = Prepared::new(
            &[c],
            Duration::from_secs(60),
            Duration::from_secs(10),
            ".".into(),
            1 << 20,
        )
        .unwrap();
        self.manager.apply(p).await;
    }

    fn series(&self, name: &str) -> Vec<SeriesSamples> {
        let m = Matcher::new(MatchOp::RegexMatch, storage::METRIC_NAME, name).unwrap();
        self.tsdb
            .select_decoded(&[m], &SelectHints::range(0, i64::MAX, 1 << 30))
            .unwrap()
    }

    fn values(&self, name: &str) -> Vec<f64> {
        self.series(name)
            .into_iter()
            .flat_map(|s| s.samples.into_iter().map(|p| p.v))
            .collect()
    }

    /// Waits until `up` has `n` samples (`n` scrapes done).
    async fn scrapes(&self, n: usize) {
        for _ in 0..200 {
            if self.values("up").len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} scrapes");
    }

    fn status(&self) -> super::TargetStatus {
        self.manager.active()[0].status.clone()
    }

    /// The status once the first scrape has reported (its samples are committed a moment
    /// before the loop records it).
    async fn first_status(&self) -> super::TargetStatus {
        for _ in 0..200 {
            let st = self.status();
            if st.last_scrape.is_some() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no scrape reported");
    }
}

const JOB: &str = "job_name: app\nscrape_interval: 100ms\nstatic_configs: [{targets: ['TARGET'], labels: {env: prod}}]\n";

fn stale(v: &f64) -> bool {
    storage::is_stale_nan(*v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_carry_target_labels_and_report_series() {
    let f = fixture(text(
        "# TYPE app_requests_total counter\n# HELP app_requests_total Requests.\napp_requests_total{code=\"200\",job=\"inner\"} 7\n",
    ))
    .await;
    f.apply(JOB).await;
    f.scrapes(2).await;
    let s = f.series("app_requests_total");
    assert_eq!(s.len(), 1);
    let l = &s[0].labels;
    // honor_labels: false: the exposed `job` becomes `exported_job`.
    assert_eq!(l.get("job"), Some("app"));
    assert_eq!(l.get("exported_job"), Some("inner"));
    assert_eq!(l.get("instance"), Some(f.addr.as_str()));
    assert_eq!(l.get("env"), Some("prod"));
    assert!(s[0].samples.iter().all(|p| p.v == 7.0));
    assert!(f.values("up").iter().all(|v| *v == 1.0));
    assert!(f.values("scrape_samples_scraped").iter().all(|v| *v == 1.0));
    assert!(f
        .values("scrape_samples_post_metric_relabeling")
        .iter()
        .all(|v| *v == 1.0));
    // New to the target in the first scrape only.
    assert_eq!(f.values("scrape_series_added")[..2], [1.0, 0.0]);
    assert!(f
        .values("scrape_duration_seconds")
        .iter()
        .all(|v| *v > 0.0 && *v < 1.0));
    let st = f.status();
    assert_eq!(st.health, super::Health::Up);
    assert_eq!(st.metadata["app_requests_total"].kind, "counter");
    assert_eq!(st.metadata["app_requests_total"].help, "Requests.");
    f.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honor_labels_keeps_the_exposed_ones() {
    let f = fixture(text("m{job=\"inner\",instance=\"x\"} 1\n")).await;
    f.apply(&format!("{JOB}honor_labels: true\n")).await;
    f.scrapes(1).await;
    let s = f.series("m");
    assert_eq!(s[0].labels.get("job"), Some("inner"));
    assert_eq!(s[0].labels.get("instance"), Some("x"));
    assert_eq!(s[0].labels.get("env"), Some("prod"));
    f.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_series_and_failed_scrapes_get_staleness_markers() {
    let f = fixture(text("a 1\nb 2\n")).await;
    f.apply(JOB).await;
    f.scrapes(2).await;
    *f.answer.lock() = text("a 1\n");
    let n = f.values("up").len();
    f.scrapes(n + 2).await;
    let b = f.values("b");
    assert!(stale(b.last().unwrap()), "{b:?}");
    assert_eq!(
        b.iter().filter(|v| stale(v)).count(),
        1,
        "one marker: {b:?}"
    );
    // A failing target: up 0, the reason, and its series end.
    f.answer.lock().status = StatusCode::INTERNAL_SERVER_ERROR;
    let n = f.values("up").len();
    // One scrape may have been in flight with the old answer; the status of a scrape is
    // recorded just after its samples, so the third from now has both behind it.
    f.scrapes(n + 3).await;
    assert_eq!(*f.values("up").last().unwrap(), 0.0);
    assert!(stale(f.values("a").last().unwrap()));
    let st = f.status();
    assert_eq!(st.health, super::Health::Down);
    assert_eq!(
        st.last_error,
        "server returned HTTP status 500 Internal Server Error"
    );
    // Back up: the series resume.
    *f.answer.lock() = text("a 3\n");
    let n = f.values("up").len();
    f.scrapes(n + 1).await;
    assert_eq!(*f.values("a").last().unwrap(), 3.0);
    // Removed from the config: its series end.
    f.apply("job_name: other\nstatic_configs: []\n").await;
    assert!(stale(f.values("a").last().unwrap()));
    assert!(f.manager.active().is_empty());
    f.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_as_gos_client_follows_them() {
    // (metrics_path and follow_redirects, up, what lastError holds). `/hops/0` redirects to a
    // relative path with a dot segment; Go's client follows nine redirects, not ten.
    let cases = [
        ("/hops/8", "", 1.0, ""),
        ("/elsewhere", "", 1.0, ""),
        (
            "/hops/9",
            "",
            0.0,
            "Get \"../metrics\": stopped after 10 redirects",
        ),
        (
            "/hops/0",
            "follow_redirects: false\n",
            0.0,
            "server returned HTTP status 302 Found",
        ),
        (
            "/loop",
            "",
            0.0,
            "Get \"/loop\": stopped after 10 redirects",
        ),
    ];
    for (path, extra, up, error) in cases {
        let f = fixture(text("page 1\n")).await;
        f.apply(&format!("{JOB}metrics_path: {path}\n{extra}"))
            .await;
        f.scrapes(1).await;
        assert_eq!(f.values("up")[0], up, "{path} {extra}");
        let st = f.first_status().await;
        assert!(st.last_error.contains(error), "{path}: {}", st.last_error);
        assert_eq!(f.values("page").len(), up as usize, "{path}");
        f.manager.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_limits_fail_the_whole_scrape() {
    let cases: [(Answer, &str, &str); 5] = [
        (text("ok 1\nbroken{ 2\n"), "", "line 2"),
        (
            text("a 1\nb 1\nc 1\n"),
            "sample_limit: 2\n",
            "sample limit exceeded",
        ),
        (
            text("a{x=\"1234567\"} 1\n"),
            "label_value_length_limit: 5\n",
            "label_value_length_limit exceeded",
        ),
        (
            text(&"x 1\n".repeat(100_000)),
            "body_size_limit: 1KB\n",
            "body size limit exceeded",
        ),
        (
            Answer {
                delay: Duration::from_secs(5),
                ..text("slow 1\n")
            },
            "scrape_timeout: 50ms\n",
            "context deadline exceeded",
        ),
    ];
    for (answer, extra, error) in cases {
        let f = fixture(answer).await;
        f.apply(&format!("{JOB}{extra}")).await;
        f.scrapes(1).await;
        assert_eq!(f.values("up")[0], 0.0, "{extra}");
        let st = f.first_status().await;
        assert!(st.last_error.contains(error), "{extra}: {}", st.last_error);
        // Nothing of the failed scrape was stored.
        let all = f.series(".+");
        let names: Vec<&str> = all.iter().filter_map(|s| s.labels.metric_name()).collect();
        assert!(
            names.iter().all(|n| n.starts_with("scrape_") || *n == "up"),
            "{extra}: {names:?}"
        );
        f.manager.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_openmetrics_relabelling_and_explicit_timestamps() {
    // A minute ago, in OpenMetrics' seconds.
    let ts_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000)
        / 1000
        * 1000
        + 500;
    let body = format!(
        "# TYPE c counter\nc_total{{path=\"/a\"}} 1 {}.5\nc_total{{path=\"/b\"}} 2\n# EOF\n",
        ts_ms / 1000
    );
    let f = fixture(Answer {
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
        gzip: true,
        ..text(&body)
    })
    .await;
    f.apply(&format!(
        "{JOB}metric_relabel_configs: [{{source_labels: [path], regex: /b, action: drop}}]\n"
    ))
    .await;
    f.scrapes(2).await;
    let s = f.series("c_total");
    assert_eq!(s.len(), 1, "/b dropped");
    assert_eq!(s[0].samples[0].t, ts_ms);
    assert_eq!(s[0].samples.len(), 1, "one timestamp, however many scrapes");
    assert!(f.values("scrape_samples_scraped").iter().all(|v| *v == 2.0));
    assert!(f
        .values("scrape_samples_post_metric_relabeling")
        .iter()
        .all(|v| *v == 1.0));
    // Explicit timestamps get no staleness markers (track_timestamps_staleness: false).
    *f.answer.lock() = text("");
    let n = f.values("up").len();
    f.scrapes(n + 2).await;
    assert!(!f.values("c_total").iter().any(stale));
    f.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_over_its_target_limit_scrapes_again_once_within_it() {
    let f = fixture(text("page 1\n")).await;
    let job = |limit: usize| {
        format!("job_name: app\nscrape_interval: 100ms\ntarget_limit: {limit}\nstatic_configs: [{{targets: ['TARGET', '127.0.0.1:1']}}]\n")
    };
    f.apply(&job(1)).await;
    f.scrapes(2).await;
    assert!(f.values("up").iter().all(|v| *v == 0.0));
    assert!(
        f.values("page").is_empty(),
        "nothing fetched while over the limit"
    );
    let errors: Vec<String> = f
        .manager
        .active()
        .iter()
        .map(|t| t.status.last_error.clone())
        .collect();
    assert_eq!(
        errors,
        ["target_limit exceeded (number of targets: 2, limit: 1)"; 2]
    );
    f.apply(&job(2)).await;
    for _ in 0..200 {
        if !f.values("page").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(f.values("page")[0], 1.0, "scraped once within the limit");
    f.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_job_keeps_its_loops_across_a_reload() {
    let f = fixture(text("a 1\n")).await;
    f.apply(JOB).await;
    f.scrapes(2).await;
    // A loop's series cache says which loop scraped: a new one counts `a` as added again.
    // Applies a config, waits two scrapes, and counts the scrapes that added a series.
    async fn loops_after(f: &Fixture, config: &str) -> (usize, Vec<f64>) {
        f.apply(config).await;
        let n = f.values("up").len();
        f.scrapes(n + 2).await;
        let added = f.values("scrape_series_added");
        (added.iter().filter(|v| **v > 0.0).count(), added)
    }
    let (loops, added) = loops_after(&f, JOB).await;
    assert_eq!(loops, 1, "same loop: {added:?}");
    // A changed job gets new loops, which do not end the series.
    let (loops, added) = loops_after(&f, &format!("{JOB}sample_limit: 10\n")).await;
    assert_eq!(loops, 2, "a new loop: {added:?}");
    assert!(!f.values("a").iter().any(stale));
    f.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_exemplars_reach_the_exemplar_storage() {
    let long = "x".repeat(130);
    // Timestamps of a minute ago (seconds with a fraction), within the retention.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (ago, ts_ms) = (now_s - 60, (now_s - 60) * 1000);
    let page = |bucket: u32, trace_id: &str| {
        format!(
            "# TYPE req counter\nreq_total{{code=\"200\"}} 5 # {{trace_id=\"abc\"}} 0.5 {ago}.5\n\
             # TYPE lat histogram\nlat_bucket{{le=\"0.1\"}} {bucket} # {{trace_id=\"{trace_id}\",span_id=\"\"}} 0.05\n\
             lat_bucket{{le=\"+Inf\"}} 2 # {{trace_id=\"{long}\"}} 3\nlat_count 2\nlat_sum 3.05\n\
             # TYPE stamped counter\nstamped_total 1 {ago} # {{trace_id=\"ts\"}} 2\n\
             # TYPE dropped counter\ndropped_total 1 # {{trace_id=\"gone\"}} 1\n# EOF\n"
        )
    };
    let om = |body: String| Answer {
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ..text(&body)
    };
    let f = fixture(om(page(1, "def"))).await;
    let drop = "metric_relabel_configs: [{source_labels: [__name__], regex: dropped_total, action: drop}]\n";
    f.apply(&format!("{JOB}{drop}")).await;
    f.scrapes(3).await;
    // The bucket's exemplar replaced (and its count, to tell the scrapes apart).
    *f.answer.lock() = om(page(2, "ghi"));
    let n = f.values("up").len();
    f.scrapes(n + 3).await;
    f.manager.stop().await;
    let all = Matcher::new(MatchOp::RegexMatch, storage::METRIC_NAME, ".+").unwrap();
    let found = f.tsdb.select_exemplars(0, i64::MAX, &[vec![all]]).unwrap();
    let by_series = |name: &str, le: Option<&str>| {
        let s = found
            .iter()
            .find(|s| {
                s.series_labels.metric_name() == Some(name) && s.series_labels.get("le") == le
            })
            .unwrap_or_else(|| panic!("no exemplars of {name} {le:?}: {found:?}"));
        // The series' labels after the target's are added, as its samples have them.
        assert_eq!(s.series_labels.get("job"), Some("app"));
        assert_eq!(s.series_labels.get("env"), Some("prod"));
        assert_eq!(s.series_labels.get("instance"), Some(f.addr.as_str()));
        s.exemplars.clone()
    };
    let trace = |id: &str| Labels::new(vec![Label::new("trace_id", id)]);
    // With a timestamp of its own: stored once, the repeats are no-ops.
    assert_eq!(
        by_series("req_total", None),
        [Exemplar {
            labels: trace("abc"),
            value: 0.5,
            t: ts_ms + 500
        }]
    );
    // Without: at its sample's time, the scrape's; stored once until replaced; the empty
    // label left out.
    let first_at = |count: f64| {
        f.series("lat_bucket")
            .into_iter()
            .find(|s| s.labels.get("le") == Some("0.1"))
            .unwrap()
            .samples
            .iter()
            .find(|p| p.v == count)
            .unwrap()
            .t
    };
    let untimed = |id: &str, t: i64| Exemplar {
        labels: trace(id),
        value: 0.05,
        t,
    };
    assert_eq!(
        by_series("lat_bucket", Some("0.1")),
        [untimed("def", first_at(1.0)), untimed("ghi", first_at(2.0))]
    );
    // Without one, on a sample with one: the sample's (honor_timestamps).
    assert_eq!(by_series("stamped_total", None)[0].t, ts_ms);
    // Over 128 characters: refused, the sample kept; of a dropped series: nothing.
    assert!(found
        .iter()
        .all(|s| s.series_labels.get("le") != Some("+Inf")
            && s.series_labels.metric_name() != Some("dropped_total")));
    assert!(f
        .series("lat_bucket")
        .iter()
        .any(|s| s.labels.get("le") == Some("+Inf")));
    assert_eq!(found.len(), 3, "{found:?}");
}
