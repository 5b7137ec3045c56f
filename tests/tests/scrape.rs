//! Scraping side by side with the real Prometheus 2.42 (Debian packages): the same
//! `scrape_configs` over the real node and blackbox exporters, a target that is down and one
//! relabelled away. Both must store the same series with the same `up` and the same values
//! where the exporter is deterministic, and answer the targets APIs alike. Also: the embedded
//! default scrapes novamon itself, and a reload changes the jobs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{
    agent, enc, get_json, instant_values as instant, wait_for_go_listen_url, wait_for_go_ready_url,
    wait_until, Json, Novamon, Process,
};
use e2e::{spawn_prometheus, PROMETHEUS};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

fn require(bin: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is required (tests/run.sh installs its Debian package)"
    );
}

/// A Go exporter on a port of its own choosing; returns it and `host:port`.
fn go_server(dir: &Path, name: &str, cmd: &mut Command) -> (Process, String) {
    let mut p = Process::spawn(
        cmd.arg("--web.listen-address=127.0.0.1:0"),
        dir.join(format!("{name}.log")),
    );
    let url = wait_for_go_listen_url(&mut p);
    (p, url.trim_start_matches("http://").to_string())
}

/// Prometheus on `config`, once ready; returns it and its URL.
fn prometheus(dir: &Path, config: &Path) -> (Process, String) {
    let mut p = spawn_prometheus(dir, config, "127.0.0.1:0", &[]);
    let url = wait_for_go_ready_url(&mut p);
    (p, url)
}

fn config(node: &str, blackbox: &str) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ['{node}'], labels: {{dc: eu}}}}]
  - job_name: blackbox
    metrics_path: /probe
    params: {{module: [http_2xx]}}
    static_configs: [{{targets: ['http://{node}/metrics']}}]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: instance}}
      - {{target_label: __address__, replacement: '{blackbox}'}}
  - job_name: down
    static_configs: [{{targets: ['127.0.0.1:1']}}]
  - job_name: relabelled
    static_configs: [{{targets: ['127.0.0.1:2', '127.0.0.1:3']}}]
    relabel_configs:
      - {{source_labels: [__address__], regex: '.*:3', action: drop}}
      - {{source_labels: [__address__], target_label: host, regex: '(.*):.*'}}
"#
    )
}

/// Writes `text` as the scrape config `scrape.yml` in `dir` and starts novamon on it (its data
/// in `dir/novamon`); the config's path is for Prometheus or a later rewrite.
fn novamon_on(dir: &Path, text: &str) -> (Novamon, PathBuf) {
    let cfg = dir.join("scrape.yml");
    std::fs::write(&cfg, text).unwrap();
    let novamon = Novamon::start(&dir.join("novamon"), &["--config", cfg.to_str().unwrap()]);
    (novamon, cfg)
}

/// Active targets by `(scrapePool, instance)`, with the fields both must agree on.
fn targets(a: &ureq::Agent, base: &str) -> (BTreeMap<String, Json>, Vec<Json>) {
    let (status, body) = get_json(a, &format!("{base}/api/v1/targets"));
    assert_eq!(status, 200, "{body}");
    let active = body["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let key = format!("{} {}", t["scrapePool"], t["labels"]["instance"]);
            let mut t = t.clone();
            let o = t.as_object_mut().unwrap();
            // Times and durations differ run to run; globalUrl names each server's host.
            for k in ["lastScrape", "lastScrapeDuration", "globalUrl"] {
                assert!(o.remove(k).is_some(), "{k} missing in {base}");
            }
            (key, t)
        })
        .collect();
    let mut dropped = body["data"]["droppedTargets"].as_array().unwrap().clone();
    dropped.sort_by_key(|d| d.to_string());
    (active, dropped)
}

#[test]
fn novamon_and_prometheus_scrape_the_same_exporters_alike() {
    for bin in [PROMETHEUS, NODE_EXPORTER, BLACKBOX] {
        require(bin);
    }
    let dir = tempfile::tempdir().unwrap();
    let (_node, node) = go_server(dir.path(), "node", &mut Command::new(NODE_EXPORTER));
    let (_bb, blackbox) = go_server(
        dir.path(),
        "blackbox",
        Command::new(BLACKBOX).arg("--config.file=/etc/prometheus/blackbox.yml"),
    );
    let (novamon, cfg) = novamon_on(dir.path(), &config(&node, &blackbox));
    let (prom_process, prom) = prometheus(dir.path(), &cfg);
    let a = agent();
    let up = |base: &str| instant(&a, base, "up");
    // Both have scraped every target a few times.
    wait_until(Duration::from_secs(60), || {
        let q = "count_over_time(up[1m]) >= 3";
        instant(&a, &novamon.url, q).len() == 4 && instant(&a, &prom, q).len() == 4
    })
    .unwrap_or_else(|| {
        panic!(
            "not every target scraped 3 times: novamon {:?} prometheus {:?}\n{}",
            up(&novamon.url),
            up(&prom),
            prom_process.log()
        )
    });
    assert_eq!(up(&novamon.url), up(&prom));
    assert_eq!(
        up(&novamon.url).values().filter(|v| *v == "1").count(),
        2,
        "node and blackbox up, the others down"
    );

    // The same series from the node exporter (names and labels), and the same values where
    // they cannot change between two scrapes.
    let series =
        |base: &str| -> Vec<String> { instant(&a, base, r#"{job="node"}"#).into_keys().collect() };
    let (ns, ps) = (series(&novamon.url), series(&prom));
    assert!(ns.len() > 200, "{} node exporter series", ns.len());
    let only_n: Vec<&String> = ns.iter().filter(|s| !ps.contains(s)).collect();
    let only_p: Vec<&String> = ps.iter().filter(|s| !ns.contains(s)).collect();
    assert!(
        only_n.is_empty() && only_p.is_empty(),
        "only in novamon: {only_n:?}\nonly in prometheus: {only_p:?}"
    );
    for q in [
        "node_memory_MemTotal_bytes",
        "node_boot_time_seconds",
        "node_exporter_build_info",
        "node_uname_info",
        r#"probe_success{job="blackbox"}"#,
        r#"probe_http_status_code{job="blackbox"}"#,
        r#"scrape_samples_scraped{job="blackbox"}"#,
        r#"scrape_samples_post_metric_relabeling{job="blackbox"}"#,
    ] {
        let (n, p) = (instant(&a, &novamon.url, q), instant(&a, &prom, q));
        assert!(!n.is_empty(), "{q}: nothing in novamon");
        assert_eq!(n, p, "{q}");
    }

    // The targets API: labels, discovered labels, URL, health, intervals, errors.
    let (na, nd) = targets(&a, &novamon.url);
    let (pa, pd) = targets(&a, &prom);
    assert_eq!(na.keys().collect::<Vec<_>>(), pa.keys().collect::<Vec<_>>());
    for (k, n) in &na {
        assert_eq!(n, &pa[k], "target {k}");
    }
    // Prometheus 3 names each dropped target's scrapePool, 2.42 does not: novamon answers as 3
    // does, so only the discovered labels are compared.
    assert!(nd.iter().all(|d| d["scrapePool"] == "relabelled"), "{nd:?}");
    let discovered = |d: &[Json]| {
        d.iter()
            .map(|d| d["discoveredLabels"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(discovered(&nd), discovered(&pd), "dropped targets");
    let md = |base: &str| {
        let (s, b) = get_json(
            &a,
            &format!(
                "{base}/api/v1/targets/metadata?match_target={}&metric=node_boot_time_seconds",
                enc(r#"{job="node"}"#)
            ),
        );
        assert_eq!(s, 200, "{b}");
        b["data"].clone()
    };
    assert_eq!(md(&novamon.url), md(&prom));
    let (_, pools) = novamon.get_json("/api/v1/scrape_pools");
    assert_eq!(
        pools["data"]["scrapePools"],
        serde_json::json!(["blackbox", "down", "node", "relabelled"])
    );

    // A reload without the `down` job: its target goes, the others stay as they were.
    let before = novamon.get_ok("/api/v1/targets?scrapePool=node")["data"]["activeTargets"][0]
        ["lastScrape"]
        .clone();
    let text = config(&node, &blackbox);
    let without_down = text.replace(
        "  - job_name: down\n    static_configs: [{targets: ['127.0.0.1:1']}]\n",
        "",
    );
    assert_ne!(text, without_down);
    std::fs::write(&cfg, without_down).unwrap();
    let resp = a
        .post(format!("{}/-/reload", novamon.url))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t = novamon.get_ok("/api/v1/targets?state=active");
    let pools: Vec<&str> = t["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scrapePool"].as_str().unwrap())
        .collect();
    assert!(!pools.contains(&"down"), "{pools:?}");
    assert_eq!(t["data"]["droppedTargets"], serde_json::json!([]));
    let after = novamon.get_ok("/api/v1/targets?scrapePool=node")["data"]["activeTargets"][0]
        ["lastScrape"]
        .clone();
    assert!(
        after.as_str() >= before.as_str(),
        "the node target kept its state"
    );
}

/// A plain HTTP/1.1 server on a port of its own, one request per connection: `answer` gets
/// the request's path and headers (lower-cased names) and gives the status line with any
/// headers (each ending in CRLF), and the body. Returns `host:port`.
fn http_server(
    answer: impl Fn(&str, &BTreeMap<String, String>) -> (String, String) + Send + 'static,
) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = BTreeMap::new();
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
                h.clear();
            }
            let path = line.split(' ').nth(1).unwrap_or("/");
            let (resp, body) = answer(path, &headers);
            let _ = write!(
                &stream,
                "{resp}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// A target that redirects: `/hops/N` to `/hops/N-1`, `/hops/0` to `../metrics` (a relative
/// location with a dot segment), `/metrics` answers a page.
fn redirecting_target() -> String {
    http_server(|path, _| {
        let resp = match path.strip_prefix("/hops/").map(str::parse::<u32>) {
            Some(Ok(0)) => "HTTP/1.1 302 Found\r\nLocation: ../metrics\r\n".to_string(),
            Some(Ok(n)) => format!("HTTP/1.1 302 Found\r\nLocation: /hops/{}\r\n", n - 1),
            _ if path == "/metrics" => {
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n".to_string()
            }
            _ => "HTTP/1.1 404 Not Found\r\n".to_string(),
        };
        let body = if resp.contains("200 OK") {
            "page 1\n"
        } else {
            ""
        };
        (resp, body.to_string())
    })
}

/// What [`scrape_alike`] found: novamon's `up`, its targets' `lastError`s by target, and the
/// instant vector asked for from novamon and from Prometheus.
struct Alike {
    up: BTreeMap<String, String>,
    errors: BTreeMap<String, String>,
    also: [BTreeMap<String, String>; 2],
}

/// Starts novamon and Prometheus 2.42 on the same `scrape_configs` (`jobs`: YAML list items)
/// until both have scraped each of the `n` targets twice; checks that they agree on `up` and on
/// each target's labels, discovered labels, health and `lastError`.
fn scrape_alike(jobs: &str, n: usize, also: &str) -> Alike {
    require(PROMETHEUS);
    let dir = tempfile::tempdir().unwrap();
    let (novamon, cfg) = novamon_on(
        dir.path(),
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}"),
    );
    let (_prom, prom) = prometheus(dir.path(), &cfg);
    let a = agent();
    let q = "count_over_time(up[1m]) >= 2";
    wait_until(Duration::from_secs(60), || {
        instant(&a, &novamon.url, q).len() == n && instant(&a, &prom, q).len() == n
    })
    .unwrap_or_else(|| {
        panic!(
            "not every target scraped twice: novamon {:?}\nprometheus {:?}\n{}",
            instant(&a, &novamon.url, q),
            instant(&a, &prom, q),
            novamon.get_ok("/api/v1/targets")
        )
    });
    let up = instant(&a, &novamon.url, "up");
    assert_eq!(up, instant(&a, &prom, "up"));
    let (na, _) = targets(&a, &novamon.url);
    let (pa, _) = targets(&a, &prom);
    assert_eq!(na.len(), n);
    for (k, t) in &na {
        for field in ["labels", "discoveredLabels", "lastError"] {
            assert_eq!(t[field], pa[k][field], "target {k}: {field}");
        }
        assert_eq!(t["health"], pa[k]["health"], "target {k}");
    }
    let errors = na
        .iter()
        .map(|(k, t)| (k.clone(), t["lastError"].as_str().unwrap().to_string()))
        .collect();
    Alike {
        up,
        errors,
        also: [instant(&a, &novamon.url, also), instant(&a, &prom, also)],
    }
}

#[test]
fn redirects_are_followed_as_prometheus_follows_them() {
    let target = redirecting_target();
    let job = |name: &str, path: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n    metrics_path: {path}\n{extra}    static_configs: [{{targets: ['{target}']}}]\n"
        )
    };
    let jobs = [
        job("nine", "/hops/8", ""),
        job("ten", "/hops/9", ""),
        job("not_followed", "/hops/0", "    follow_redirects: false\n"),
    ];
    let Alike {
        up, also: [n, p], ..
    } = scrape_alike(&jobs.concat(), 3, "page");
    assert_eq!(up.values().filter(|v| *v == "1").count(), 1, "{up:?}");
    assert_eq!(n.len(), 1);
    assert_eq!(n, p);
}

/// `http_sd_configs` side by side: a discovery endpoint that wants a bearer token serves two
/// groups (a target that answers, one that is down, a `__meta_url` of its own that the URL
/// replaces); a second entry's endpoint is down and a third's answers HTML. Both find the same
/// two targets with the same labels, and scrape them alike. The token's `type` is written out:
/// 2.42 does not default it to `Bearer` in `http_sd_configs` (fixed in 2.48), novamon does.
#[test]
fn http_discovery_finds_the_targets_prometheus_finds() {
    let target = redirecting_target();
    let groups = format!(
        r#"[{{"targets": ["{target}"], "labels": {{"team": "a"}}}},
            {{"targets": ["127.0.0.1:1"], "labels": {{"team": "b", "__meta_url": "forged"}}}}]"#
    );
    let sd = http_server(move |path, headers| {
        let authorized = headers.get("authorization").map(String::as_str) == Some("Bearer s3cret");
        let asked = |h: &str| headers.get(h).map(String::as_str);
        match path {
            "/sd" if !authorized => ("HTTP/1.1 401 Unauthorized\r\n".into(), String::new()),
            "/sd"
                if asked("x-prometheus-refresh-interval-seconds") != Some("1")
                    || asked("accept") != Some("application/json") =>
            {
                ("HTTP/1.1 400 Bad Request\r\n".into(), String::new())
            }
            "/sd" => (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n".into(),
                groups.clone(),
            ),
            _ => (
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n".into(),
                "[]".into(),
            ),
        }
    });
    let jobs = format!(
        r#"  - job_name: http_sd
    http_sd_configs:
      - {{url: 'http://{sd}/sd', refresh_interval: 1s, authorization: {{type: Bearer, credentials: s3cret}}}}
      - {{url: 'http://127.0.0.1:1/sd', refresh_interval: 1s}}
      - {{url: 'http://{sd}/html', refresh_interval: 1s}}
    relabel_configs:
      - {{source_labels: [__meta_url], target_label: sd}}
"#
    );
    let Alike {
        up,
        errors,
        also: [n, p],
    } = scrape_alike(&jobs, 2, "page");
    assert_eq!(up.values().filter(|v| *v == "1").count(), 1, "{up:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(n.len(), 1);
    assert_eq!(n, p);
    let sd_url = format!("http://{sd}/sd");
    assert!(
        n.keys()
            .all(|k| k.contains(&format!("\"sd\":\"{sd_url}\""))),
        "__meta_url relabelled into sd: {n:?}"
    );
}

/// What an endpoint serves changes: a failing one (500, then HTML) leaves both with the
/// targets they had, as Prometheus keeps the last groups; an empty list takes them away.
#[test]
fn a_failing_http_discovery_keeps_its_targets_as_prometheus_does() {
    require(PROMETHEUS);
    let target = redirecting_target();
    let answer = std::sync::Arc::new(std::sync::Mutex::new((
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string(),
        format!(r#"[{{"targets": ["{target}"]}}]"#),
    )));
    let serving = answer.clone();
    let sd = http_server(move |_, _| serving.lock().unwrap().clone());
    let dir = tempfile::tempdir().unwrap();
    let (novamon, cfg) = novamon_on(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: http_sd\n    http_sd_configs: [{{url: 'http://{sd}/sd', refresh_interval: 1s}}]\n"
        ),
    );
    let (_prom, prom) = prometheus(dir.path(), &cfg);
    let a = agent();
    let active = |base: &str| targets(&a, base).0.len();
    let both = |n: usize| active(&novamon.url) == n && active(&prom) == n;
    wait_until(Duration::from_secs(30), || both(1)).expect("both found the target");
    for failing in [
        "HTTP/1.1 500 Internal Server Error\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n",
    ] {
        *answer.lock().unwrap() = (failing.to_string(), "[]".to_string());
        // Several refreshes fail; the target stays with both.
        std::thread::sleep(Duration::from_secs(4));
        assert!(both(1), "{failing}");
    }
    *answer.lock().unwrap() = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string(),
        "[]".to_string(),
    );
    wait_until(Duration::from_secs(30), || both(0)).expect("an empty list takes it away");
}

#[test]
fn a_pool_over_its_target_limit_fails_every_target_as_prometheus_does() {
    let target = redirecting_target();
    let jobs = format!(
        "  - job_name: limited\n    target_limit: 1\n    static_configs: [{{targets: ['{target}', 'localhost:{}']}}]\n  - job_name: within\n    target_limit: 1\n    static_configs: [{{targets: ['{target}']}}]\n",
        target.rsplit_once(':').unwrap().1
    );
    let Alike {
        up,
        errors,
        also: [n, p],
    } = scrape_alike(&jobs, 3, "page");
    assert_eq!(up.values().filter(|v| *v == "1").count(), 1, "{up:?}");
    let limited: Vec<&String> = errors
        .iter()
        .filter(|(k, _)| k.starts_with("\"limited\""))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        limited, ["target_limit exceeded (number of targets: 2, limit: 1)"; 2],
        "{errors:?}"
    );
    assert_eq!(n.len(), 1, "only the pool within its limit stored the page");
    assert_eq!(n, p);
}

#[test]
fn the_embedded_default_scrapes_novamon_itself() {
    let dir = tempfile::tempdir().unwrap();
    let novamon = Novamon::start(dir.path(), &[]);
    let t = novamon.get_ok("/api/v1/targets");
    let active = t["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{t}");
    assert_eq!(active[0]["labels"]["job"], "novamon");
    assert_eq!(
        active[0]["scrapeUrl"],
        format!("{}/metrics", novamon.url).as_str()
    );
    // The first scrape comes within one 15 s interval.
    wait_until(Duration::from_secs(40), || {
        let r = novamon.get_ok("/api/v1/query?query=up%7Bjob%3D%22novamon%22%7D");
        r["data"]["result"][0]["value"][1] == "1"
    })
    .unwrap_or_else(|| panic!("novamon did not scrape itself:\n{}", novamon.process.log()));
    let r = novamon.get_ok(&format!(
        "/api/v1/query?query={}",
        enc(r#"novamon_build_info{job="novamon"} or process_resident_memory_bytes{job="novamon"}"#)
    ));
    assert!(!r["data"]["result"].as_array().unwrap().is_empty(), "{r}");
}

/// Prometheus 2.42 federating from novamon (`honor_labels: true`, `/federate?match[]=…`) ends
/// up with novamon's series, each with the external labels novamon adds, and their values.
#[test]
fn prometheus_federates_from_novamon() {
    for bin in [PROMETHEUS, NODE_EXPORTER] {
        require(bin);
    }
    let dir = tempfile::tempdir().unwrap();
    let (_node, node) = go_server(dir.path(), "node", &mut Command::new(NODE_EXPORTER));
    let (novamon, cfg) = novamon_on(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  external_labels: {{cluster: edge-1}}\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['{node}']}}]\n"
        ),
    );
    let a = agent();
    wait_until(Duration::from_secs(30), || {
        instant(&a, &novamon.url, "count_over_time(up[1m]) >= 2").len() == 1
    })
    .expect("novamon scraped the node exporter");
    // Bad selectors are refused as Prometheus refuses them.
    let resp = a
        .get(format!("{}/federate?match[]={}", novamon.url, enc("{")))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(resp.status(), 400);
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n    params: {{'match[]': ['{{job=\"node\"}}']}}\n    static_configs: [{{targets: ['{}']}}]\n",
            novamon.url.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let (prom_process, prom) = prometheus(dir.path(), &prom_cfg);
    wait_until(Duration::from_secs(60), || {
        instant(&a, &prom, r#"count_over_time(up{job="federate"}[1m]) >= 2"#).len() == 1
            && instant(&a, &prom, r#"up{job="federate"}"#)
                .values()
                .all(|v| v == "1")
    })
    .unwrap_or_else(|| panic!("prometheus did not federate:\n{}", prom_process.log()));
    let with_cluster = |m: &String| {
        let mut v: serde_json::Map<String, Json> = serde_json::from_str(m).unwrap();
        v.insert("cluster".into(), "edge-1".into());
        serde_json::to_string(&v).unwrap()
    };
    let ours: Vec<String> = instant(&a, &novamon.url, r#"{job="node"}"#)
        .keys()
        .map(with_cluster)
        .collect();
    let theirs: Vec<String> = instant(&a, &prom, r#"{job="node"}"#).into_keys().collect();
    assert!(ours.len() > 200, "{}", ours.len());
    let missing: Vec<&String> = ours.iter().filter(|s| !theirs.contains(s)).collect();
    let extra: Vec<&String> = theirs.iter().filter(|s| !ours.contains(s)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not federated: {missing:?}\nunexpected: {extra:?}"
    );
    for q in [
        "node_memory_MemTotal_bytes",
        "node_boot_time_seconds",
        "node_uname_info",
    ] {
        let n: Vec<String> = instant(&a, &novamon.url, q).into_values().collect();
        let p: Vec<String> = instant(&a, &prom, q).into_values().collect();
        assert_eq!(n, p, "{q}");
    }

    // External labels are re-read on reload, as Prometheus re-reads its global config.
    let federated = || {
        a.get(format!("{}/federate?match[]={}", novamon.url, enc("up")))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    assert!(federated().contains(r#"cluster="edge-1""#));
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("edge-1", "edge-2")).unwrap();
    let resp = a
        .post(format!("{}/-/reload", novamon.url))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = federated();
    assert!(body.contains(r#"cluster="edge-2""#), "{body}");
}

/// A server's `prometheus_sd_*` families from its `/metrics` (Prometheus's text format or
/// novamon's OpenMetrics), by family name (a counter's without `_total`, which OpenMetrics
/// leaves off its `# TYPE` line): the type, the help, and each sample (`name{labels, sorted}`)
/// with its value.
type Families = BTreeMap<String, Family>;

#[derive(Debug)]
struct Family {
    kind: String,
    help: String,
    samples: BTreeMap<String, f64>,
}

fn sd_families(a: &ureq::Agent, base: &str) -> Families {
    let mut resp = a.get(format!("{base}/metrics")).call().unwrap();
    let body = resp.body_mut().read_to_string().unwrap();
    let mut families = Families::new();
    let mut help = String::new();
    let mut current = None;
    for line in body.lines() {
        if let Some(h) = line.strip_prefix("# HELP ") {
            help = h.split_once(' ').map_or("", |(_, h)| h).to_string();
            continue;
        }
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            current = name.starts_with("prometheus_sd_").then(|| {
                let family = match kind {
                    "counter" => name.trim_end_matches("_total"),
                    _ => name,
                };
                families.insert(
                    family.to_string(),
                    Family {
                        kind: kind.to_string(),
                        help: std::mem::take(&mut help),
                        samples: BTreeMap::new(),
                    },
                );
                family.to_string()
            });
            continue;
        }
        let Some(family) = current.as_ref().filter(|_| !line.starts_with('#')) else {
            continue;
        };
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .collect();
        labels.sort();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{base}: {line}"));
        let samples = &mut families.get_mut(family).unwrap().samples;
        samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    families
}

/// Service discovery's self-metrics side by side: static targets, a target file directory
/// with a good file and a broken one, an HTTP endpoint that answers and one that is down, and
/// a DNS name, each refreshed once in the test's time (an hour's interval). novamon shows the
/// `prometheus_sd_*` families Prometheus 2.42 shows for these discoveries, with the same types
/// and label sets, and the same values wherever they do not depend on timing: targets
/// discovered per job, read errors, the good file's modification time, HTTP and refresh
/// failures, DNS lookups and their failures, how many scans and refreshes were timed.
#[test]
fn service_discovery_metrics_match_prometheus() {
    require(PROMETHEUS);
    let dir = tempfile::tempdir().unwrap();
    // A directory of their own: Prometheus watches the files' directory and rescans on any
    // change in it (its own log, written beside, would make it rescan endlessly).
    let sd_dir = dir.path().join("sd");
    std::fs::create_dir(&sd_dir).unwrap();
    let good = sd_dir.join("good.json");
    std::fs::write(
        &good,
        r#"[{"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"team": "a"}}]"#,
    )
    .unwrap();
    std::fs::write(sd_dir.join("broken.json"), r#"[{"targets": "#).unwrap();
    let sd = http_server(|_, _| {
        (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".into(),
            r#"[{"targets": ["127.0.0.1:3", "127.0.0.1:4"]}, {"targets": ["127.0.0.1:5"]}]"#.into(),
        )
    });
    let text = format!(
        r#"global:
  scrape_interval: 1h
scrape_configs:
  - job_name: static
    static_configs: [{{targets: ['127.0.0.1:6']}}]
  - job_name: files
    file_sd_configs: [{{files: ['{}/*.json'], refresh_interval: 1h}}]
  - job_name: http
    http_sd_configs:
      - {{url: 'http://{sd}/sd', refresh_interval: 1h}}
      - {{url: 'http://127.0.0.1:1/sd', refresh_interval: 1h}}
  - job_name: dns
    dns_sd_configs: [{{names: ['novamon-sd-test.invalid'], type: A, port: 80, refresh_interval: 1h}}]
"#,
        sd_dir.display()
    );
    let (novamon, cfg) = novamon_on(dir.path(), &text);
    let (_prom, prom) = prometheus(dir.path(), &cfg);
    let a = agent();
    let discovered = |f: &Families, job: &str| {
        f.get("prometheus_sd_discovered_targets")
            .and_then(|f| {
                f.samples.get(&format!(
                    "prometheus_sd_discovered_targets{{config=\"{job}\",name=\"scrape\"}}"
                ))
            })
            .copied()
    };
    let settled = |f: &Families| {
        [("static", 1.0), ("files", 2.0), ("http", 3.0), ("dns", 0.0)]
            .iter()
            .all(|(job, n)| discovered(f, job) == Some(*n))
            && f.get("prometheus_sd_dns_lookups")
                .is_some_and(|f| f.samples.values().all(|v| *v >= 1.0))
    };
    let (mut n, mut p) = (Families::new(), Families::new());
    // Prometheus passes discovered groups on at most every 5 s; a DNS lookup no server answers
    // takes 2 s.
    wait_until(Duration::from_secs(60), || {
        n = sd_families(&a, &novamon.url);
        p = sd_families(&a, &prom);
        settled(&n) && settled(&p)
    })
    .unwrap_or_else(|| panic!("discovery did not settle:\nnovamon {n:#?}\nprometheus {p:#?}"));

    // What Prometheus has that novamon's discoveries have no counterpart for: the notifier's
    // discovery manager, Azure, inotify (novamon polls), and the updates its discovery
    // manager receives and sends on (novamon's discoveries are read by the scrape manager
    // itself).
    let absent = [
        "prometheus_sd_azure_failures",
        "prometheus_sd_failed_configs",
        "prometheus_sd_file_watcher_errors",
        "prometheus_sd_received_updates",
        "prometheus_sd_updates",
    ];
    let prom_names: Vec<&String> = p.keys().filter(|k| !absent.contains(&k.as_str())).collect();
    assert_eq!(n.keys().collect::<Vec<_>>(), prom_names);
    for (name, family) in &n {
        let prom_family = &p[name];
        assert_eq!(family.kind, prom_family.kind, "{name}");
        assert_eq!(family.help, prom_family.help, "{name}");
        assert_eq!(
            family.samples.keys().collect::<Vec<_>>(),
            prom_family.samples.keys().collect::<Vec<_>>(),
            "{name}: label sets"
        );
    }
    // Every value but the durations timed: counts, targets, the file's modification time.
    let timed = |sample: &str| sample.contains("quantile=") || sample.contains("_sum{");
    for (name, family) in &n {
        for (sample, v) in family.samples.iter().filter(|(s, _)| !timed(s)) {
            assert_eq!(*v, p[name].samples[sample], "{sample}");
        }
    }
    let value = |family: &str, sample: &str| n[family].samples[sample];
    assert_eq!(
        value(
            "prometheus_sd_file_read_errors",
            "prometheus_sd_file_read_errors_total{}"
        ),
        1.0
    );
    assert_eq!(
        value(
            "prometheus_sd_file_mtime_seconds",
            &format!(
                "prometheus_sd_file_mtime_seconds{{filename=\"{}\"}}",
                good.display()
            )
        ),
        std::fs::metadata(&good)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as f64
    );
    assert_eq!(
        n["prometheus_sd_file_mtime_seconds"].samples.len(),
        1,
        "the broken file has none"
    );
    assert_eq!(
        value(
            "prometheus_sd_file_scan_duration_seconds",
            "prometheus_sd_file_scan_duration_seconds_count{}"
        ),
        1.0
    );
    assert_eq!(
        value(
            "prometheus_sd_http_failures",
            "prometheus_sd_http_failures_total{}"
        ),
        1.0
    );
    for (mechanism, failures, refreshes) in [("http", 1.0, 2.0), ("dns", 0.0, 1.0)] {
        let labels = format!("{{mechanism=\"{mechanism}\"}}");
        assert_eq!(
            value(
                "prometheus_sd_refresh_failures",
                &format!("prometheus_sd_refresh_failures_total{labels}")
            ),
            failures,
            "{mechanism}"
        );
        assert_eq!(
            value(
                "prometheus_sd_refresh_duration_seconds",
                &format!("prometheus_sd_refresh_duration_seconds_count{labels}")
            ),
            refreshes,
            "{mechanism}"
        );
    }
    assert_eq!(
        value(
            "prometheus_sd_dns_lookups",
            "prometheus_sd_dns_lookups_total{}"
        ),
        1.0
    );
}

/// `query_exemplars` of `{job="om"}` over the last hour: by series labels, each series'
/// exemplars in order.
fn exemplars(a: &ureq::Agent, base: &str) -> BTreeMap<String, Vec<Json>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = format!(
        "{base}/api/v1/query_exemplars?query={}&start={}&end={}",
        enc(r#"{job="om"}"#),
        now - 3600,
        now + 60
    );
    let (status, body) = get_json(a, &url);
    assert_eq!(status, 200, "{base}: {body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let series = s["seriesLabels"].to_string();
            (series, s["exemplars"].as_array().unwrap().clone())
        })
        .collect()
}

/// The samples of `series` in the last minute: (ms, value).
fn samples(a: &ureq::Agent, base: &str, series: &str) -> Vec<(i64, String)> {
    let url = format!(
        "{base}/api/v1/query?query={}",
        enc(&format!("{series}[1m]"))
    );
    let (status, body) = get_json(a, &url);
    assert_eq!(status, 200, "{base}: {body}");
    body["data"]["result"][0]["values"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|p| (ms(&p[0]), p[1].as_str().unwrap().to_string()))
        .collect()
}

fn ms(seconds: &Json) -> i64 {
    (seconds.as_f64().unwrap() * 1000.0).round() as i64
}

/// An OpenMetrics target with exemplars on counters and histogram buckets, scraped by novamon
/// and by Prometheus 2.42 with its exemplar storage on: the same exemplars of the same series
/// (the target's labels and relabelling applied) with the same labels, values and times. Those
/// with a timestamp of their own keep it and are stored once; one without gets its sample's
/// time, each server's scrape time, and is stored once until the target replaces it. Over 128
/// characters of labels or on a series dropped by `metric_relabel_configs`: stored by
/// neither. Label values as written, escapes and all; empty ones left out.
#[test]
fn openmetrics_exemplars_are_stored_as_prometheus_stores_them() {
    require(PROMETHEUS);
    // A minute ago, in whole seconds (within either's retention and head).
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let long = "x".repeat(130);
    let page = move |bucket: u32, trace_id: &str| {
        format!(
            r#"# HELP req Requests.
# TYPE req counter
req_total{{code="200"}} 5 # {{trace_id="abc",span_id="s1"}} 0.5 {t}.25
# TYPE lat histogram
lat_bucket{{le="0.1"}} {bucket} # {{trace_id="{trace_id}"}} 0.05
lat_bucket{{le="1"}} 2 # {{trace_id="e\"s\\c"}} 0.7 {t}.5
lat_bucket{{le="+Inf"}} 3 # {{trace_id="{long}"}} 3 {t}
lat_count 3
lat_sum 3.75
# TYPE stamped counter
stamped_total 1 {t} # {{trace_id="ts"}} 2
# TYPE empty counter
empty_total 1 # {{trace_id="",other="o"}} 1 {t}
# TYPE dropped counter
dropped_total 1 # {{trace_id="gone"}} 1 {t}
# EOF
"#
        )
    };
    let serving = std::sync::Arc::new(std::sync::Mutex::new(page(1, "def")));
    let answer = serving.clone();
    let target = http_server(move |_, _| {
        (
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n".into(),
            answer.lock().unwrap().clone(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let (novamon, cfg) = novamon_on(
        dir.path(),
        &format!(
            r#"global:
  scrape_interval: 1s
scrape_configs:
  - job_name: om
    static_configs: [{{targets: ['{target}'], labels: {{team: a}}}}]
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: dropped_total, action: drop}}
"#
        ),
    );
    let mut prom_process = spawn_prometheus(
        dir.path(),
        &cfg,
        "127.0.0.1:0",
        &["--enable-feature=exemplar-storage"],
    );
    let prom = wait_for_go_ready_url(&mut prom_process);
    let a = agent();
    let bucket = r#"lat_bucket{le="0.1"}"#;
    // Both scrape each page three times: the bucket's exemplar (and count) replaced between.
    let scraped = |count: &str| {
        wait_until(Duration::from_secs(60), || {
            [&novamon.url, &prom].iter().all(|base| {
                let s = samples(&a, base, bucket);
                s.iter().filter(|(_, v)| v == count).count() >= 3
            })
        })
        .unwrap_or_else(|| panic!("3 scrapes of page {count}\n{}", prom_process.log()));
    };
    scraped("1");
    *serving.lock().unwrap() = page(2, "ghi");
    scraped("2");
    let (mut n, mut p) = (exemplars(&a, &novamon.url), exemplars(&a, &prom));
    // The bucket's two exemplars, each at the first time of its page in that server.
    for (base, found) in [(&novamon.url, &mut n), (&prom, &mut p)] {
        let s = samples(&a, base, bucket);
        let first = |count: &str| s.iter().find(|(_, v)| v == count).unwrap().0;
        let (_, series) = found
            .iter_mut()
            .find(|(s, _)| s.contains(r#""le":"0.1""#))
            .unwrap_or_else(|| panic!("{base}: no exemplars of {bucket}"));
        let at: Vec<i64> = series.iter().map(|e| ms(&e["timestamp"])).collect();
        assert_eq!(at, [first("1"), first("2")], "{base}: {series:?}");
        for e in series.iter_mut() {
            e["timestamp"] = Json::Null;
        }
    }
    assert_eq!(n, p);
    let stored: Vec<&str> = n
        .values()
        .flatten()
        .map(|e| e["labels"]["trace_id"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(
        stored,
        ["none", "def", "ghi", r#"e\"s\\c"#, "abc", "ts"],
        "{n:?}"
    );
    assert!(n.keys().all(|s| s.contains(r#""team":"a""#)), "{n:?}");
}
