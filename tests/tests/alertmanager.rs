//! The built-in Alertmanager and the alert sender against real peers: Debian's
//! `prometheus-alertmanager` as the external Alertmanager (the sender's alerts arrive in it,
//! and the built-in v2 API answers the same JSON as it for the same requests), and a local
//! HTTP sink receiving webhook, Slack and PagerDuty notifications with Alertmanager's
//! grouping and timing, retries of a failing receiver, and no duplicate after a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{agent, enc, get_json, wait_for_go_ready_url, wait_until, Json, Novamon, Process};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// The config both the real and the built-in Alertmanager run with in the API comparison.
const AM_CONFIG: &str = "route:
  receiver: default
  routes:
    - matchers: ['severity=\"critical\"']
      receiver: pager
receivers:
  - name: default
  - name: pager
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [alertname]
";

/// The real Alertmanager on loopback port 0 (it logs the port it bound) with a one-receiver
/// config.
fn real_alertmanager(dir: &Path) -> (Process, String) {
    assert!(
        Path::new(ALERTMANAGER).exists(),
        "the prometheus-alertmanager package is required (tests/run.sh installs it)"
    );
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(&cfg, AM_CONFIG).unwrap();
    let mut p = Process::spawn(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address="),
        dir.join("alertmanager.log"),
    );
    let url = wait_for_go_ready_url(&mut p);
    (p, url)
}

/// (status, body as JSON or as a JSON string when not JSON, or null when empty).
fn request(method: &str, url: &str, body: Option<&str>) -> (u16, Json) {
    let a = agent();
    let mut resp = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("DELETE", _) => a.delete(url).call(),
        (_, b) => a
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.unwrap_or("")),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let json = if text.trim().is_empty() {
        Json::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Json::String(text))
    };
    (status, json)
}

/// (status, body) of a POST declaring `content_type` (none when None).
fn post_typed(url: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    let mut req = agent().post(url);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let mut resp = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// go-swagger's content negotiation, which also keeps a web page's form from posting alerts
/// or silences: the built-in API answers every body type as the real Alertmanager does.
#[test]
fn post_bodies_must_be_declared_json_as_in_the_real_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let (_am, am) = real_alertmanager(dir.path());
    let nm = Novamon::start(&dir.path().join("novamon"), &[]);
    for path in ["/api/v2/alerts", "/api/v2/silences"] {
        for ct in [
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/json;;x"),
            None,
        ] {
            let theirs = post_typed(&format!("{am}{path}"), ct, "[]");
            let ours = post_typed(&format!("{}{path}", nm.url), ct, "[]");
            assert!(matches!(theirs.0, 400 | 415), "{path} {ct:?}: {theirs:?}");
            let json = |b: &str| serde_json::from_str::<Json>(b).unwrap_or(Json::String(b.into()));
            assert_eq!(
                (ours.0, json(&ours.1)),
                (theirs.0, json(&theirs.1)),
                "{path} {ct:?}"
            );
        }
    }
}

fn is_api_time(v: &Json) -> bool {
    let s = v.as_str().unwrap_or("");
    let b = s.as_bytes();
    s.len() == 24 && b[10] == b'T' && b[19] == b'.' && s.ends_with('Z')
}

/// Replaces times (after checking their format) and silence ids, which differ between two
/// servers answering the same requests.
fn normalize(v: &Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "startsAt" | "endsAt" | "updatedAt" => {
                            assert!(is_api_time(v), "{k}: {v}");
                            Json::String("<time>".into())
                        }
                        "id" | "silenceID" => Json::String("<id>".into()),
                        "silencedBy" => Json::Array(
                            v.as_array()
                                .unwrap()
                                .iter()
                                .map(|_| Json::String("<id>".into()))
                                .collect(),
                        ),
                        _ => normalize(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

#[test]
fn builtin_api_answers_as_the_real_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let (_am, am) = real_alertmanager(dir.path());
    let config = dir.path().join("novamon.yml");
    std::fs::write(
        &config,
        format!(
            "alertmanager:\n  config_file: {}\n",
            dir.path().join("alertmanager.yml").display()
        ),
    )
    .unwrap();
    let nm = Novamon::start(
        &dir.path().join("novamon"),
        &["--config", config.to_str().unwrap()],
    );
    let ours = nm.url.clone();
    let both = |method: &str, path: &str, body: Option<&str>| {
        let theirs = request(method, &format!("{am}{path}"), body);
        let mine = request(method, &format!("{ours}{path}"), body);
        (theirs, mine)
    };
    let same = |method: &str, path: &str, body: Option<&str>| {
        let (theirs, mine) = both(method, path, body);
        assert_eq!(
            mine.0, theirs.0,
            "{method} {path}: status; theirs {}, ours {}",
            theirs.1, mine.1
        );
        assert_eq!(normalize(&mine.1), normalize(&theirs.1), "{method} {path}");
        mine.1
    };
    let alerts = r#"[
        {"labels": {"alertname": "DiskFull", "instance": "db-1", "severity": "warning"},
         "annotations": {"summary": "disk is full"}, "generatorURL": "http://prom/graph?g0.expr=x"},
        {"labels": {"alertname": "Down", "instance": "web-1", "severity": "critical", "empty": ""}},
        {"labels": {"alertname": "DiskFull", "instance": "db-2", "severity": "critical"}},
        {"labels": {"alertname": "Old"}, "startsAt": "2024-01-01T00:00:00Z", "endsAt": "2024-01-01T01:00:00Z"}
    ]"#;
    same("POST", "/api/v2/alerts", Some(alerts));
    // The real Alertmanager applies inhibition asynchronously: wait until it shows.
    let inhibited = |v: &Json| {
        v.as_array().is_some_and(|l| {
            l.iter().any(|a| {
                a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|i| !i.is_empty())
            })
        })
    };
    wait_until(Duration::from_secs(10), || {
        inhibited(&request("GET", &format!("{am}/api/v2/alerts"), None).1)
    })
    .expect("the real Alertmanager inhibits the warning");
    let list = same("GET", "/api/v2/alerts", None);
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "resolved alerts are not listed: {list}"
    );
    assert!(inhibited(&list), "{list}");
    same("GET", "/api/v2/alerts?inhibited=false", None);
    let groups = same("GET", "/api/v2/alerts/groups", None);
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    same("GET", "/api/v2/alerts/groups?receiver=pager", None);
    same("GET", "/api/v2/alerts/groups?inhibited=false", None);
    same("GET", "/api/v2/alerts?receiver=pager", None);
    same(
        "GET",
        &format!("/api/v2/alerts?filter={}", enc("severity=\"warning\"")),
        None,
    );
    same(
        "GET",
        &format!(
            "/api/v2/alerts?filter={}&filter={}",
            enc("severity=~\"w.*\""),
            enc("instance!=\"x\"")
        ),
        None,
    );
    same("GET", "/api/v2/alerts?receiver=default", None);
    same("GET", "/api/v2/alerts?receiver=nobody", None);
    // Validation: missing labels is the API schema's 422, an empty label set the handler's 400.
    same("POST", "/api/v2/alerts", Some(r#"[{"annotations": {}}]"#));
    same("POST", "/api/v2/alerts", Some(r#"[{"labels": {}}]"#));
    same(
        "POST",
        "/api/v2/alerts",
        Some(
            r#"[{"labels": {"a": "b"}, "startsAt": "2024-01-02T00:00:00Z", "endsAt": "2024-01-01T00:00:00Z"}]"#,
        ),
    );

    let silence = r#"{"matchers": [{"name": "severity", "value": "warning", "isRegex": false}],
        "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "ops", "comment": "maintenance"}"#;
    let (theirs, mine) = both("POST", "/api/v2/silences", Some(silence));
    assert_eq!(
        (mine.0, normalize(&mine.1)),
        (theirs.0, normalize(&theirs.1))
    );
    let (their_id, my_id) = (
        theirs.1["silenceID"].as_str().unwrap().to_owned(),
        mine.1["silenceID"].as_str().unwrap().to_owned(),
    );
    let silences = same("GET", "/api/v2/silences", None);
    assert_eq!(silences[0]["status"]["state"], "active");
    same(
        "GET",
        &format!("/api/v2/silences?filter={}", enc("severity=\"warning\"")),
        None,
    );
    same(
        "GET",
        &format!("/api/v2/silences?filter={}", enc("severity=\"critical\"")),
        None,
    );
    let list = same("GET", "/api/v2/alerts", None);
    assert_eq!(list[0]["status"]["state"], "suppressed", "{list}");
    same("GET", "/api/v2/alerts?silenced=false", None);
    same("GET", "/api/v2/alerts?active=false", None);
    let theirs = request("GET", &format!("{am}/api/v2/silence/{their_id}"), None);
    let mine = request("GET", &format!("{ours}/api/v2/silence/{my_id}"), None);
    assert_eq!(
        (mine.0, normalize(&mine.1)),
        (theirs.0, normalize(&theirs.1))
    );
    // Silence validation and lookups of unknown or malformed ids.
    same(
        "POST",
        "/api/v2/silences",
        Some(
            r#"{"matchers": [], "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "me"}"#,
        ),
    );
    same(
        "POST",
        "/api/v2/silences",
        Some(
            r#"{"matchers": [{"name": "a", "value": "b", "isRegex": false}], "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2029-01-01T00:00:00Z", "createdBy": "me", "comment": "c"}"#,
        ),
    );
    same(
        "POST",
        "/api/v2/silences",
        Some(
            r#"{"matchers": [{"name": "a", "value": "b", "isRegex": false}], "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2021-01-01T00:00:00Z", "createdBy": "me", "comment": "c"}"#,
        ),
    );
    same(
        "POST",
        "/api/v2/silences",
        Some(
            r#"{"id": "0b5c4fb9-1d5e-4e7a-9a8d-3a4c1f0e2b11", "matchers": [{"name": "a", "value": "b", "isRegex": false}], "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "me", "comment": "c"}"#,
        ),
    );
    same("GET", "/api/v2/silence/not-a-uuid", None);
    same(
        "GET",
        "/api/v2/silence/0b5c4fb9-1d5e-4e7a-9a8d-3a4c1f0e2b11",
        None,
    );
    same(
        "DELETE",
        "/api/v2/silence/0b5c4fb9-1d5e-4e7a-9a8d-3a4c1f0e2b11",
        None,
    );
    // Expiring: 200, then the silence is listed as expired and no longer mutes.
    let theirs = request("DELETE", &format!("{am}/api/v2/silence/{their_id}"), None);
    let mine = request("DELETE", &format!("{ours}/api/v2/silence/{my_id}"), None);
    assert_eq!((mine.0, &mine.1), (theirs.0, &theirs.1));
    let silences = same("GET", "/api/v2/silences", None);
    assert_eq!(silences[0]["status"]["state"], "expired");
    same("GET", "/api/v2/alerts?silenced=false", None);
    let theirs = request("DELETE", &format!("{am}/api/v2/silence/{their_id}"), None);
    let mine = request("DELETE", &format!("{ours}/api/v2/silence/{my_id}"), None);
    assert_eq!(
        mine.0, theirs.0,
        "expiring twice: theirs {}, ours {}",
        theirs.1, mine.1
    );
    assert_eq!(mine.1, theirs.1);

    same("GET", "/api/v2/receivers", None);
    let (theirs, mine) = both("GET", "/api/v2/status", None);
    assert_eq!(mine.0, theirs.0);
    let keys = |v: &Json| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&mine.1), keys(&theirs.1));
    assert_eq!(mine.1["cluster"], theirs.1["cluster"]);
    assert_eq!(keys(&mine.1["versionInfo"]), keys(&theirs.1["versionInfo"]));
    assert!(mine.1["config"]["original"]
        .as_str()
        .unwrap()
        .contains("receiver: default"));
}

#[test]
fn rule_alerts_reach_the_real_alertmanager_and_the_builtin_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_am, am) = real_alertmanager(dir.path());
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: always\n    interval: 1s\n    rules:\n      - alert: AlwaysOn\n        expr: vector(1)\n        labels: {severity: page, drop_me: x}\n        annotations: {summary: 'value {{ $value }}'}\n",
    )
    .unwrap();
    let config = dir.path().join("novamon.yml");
    let am_addr = am.trim_start_matches("http://");
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 1s\n  external_labels: {{cluster: edge-1}}\nrule_files: ['{}']\nalerting:\n  alert_relabel_configs:\n    - {{regex: drop_me, action: labeldrop}}\n  alertmanagers:\n    - static_configs: [{{targets: ['{am_addr}']}}]\n      timeout: 5s\n",
            rules.display()
        ),
    )
    .unwrap();
    let nm = Novamon::start(
        &dir.path().join("novamon"),
        &["--config", config.to_str().unwrap()],
    );
    let a = agent();
    let mut last = Json::Null;
    wait_until(Duration::from_secs(20), || {
        last = get_json(&a, &format!("{am}/api/v2/alerts")).1;
        last.as_array().is_some_and(|l| !l.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "no alert reached the real Alertmanager: {last}\n{}",
            nm.process.log()
        )
    });
    let alert = &last[0];
    assert_eq!(
        alert["labels"],
        serde_json::json!({"alertname": "AlwaysOn", "severity": "page", "cluster": "edge-1"})
    );
    assert_eq!(alert["annotations"]["summary"], "value 1");
    assert_eq!(alert["status"]["state"], "active");
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap_or("")
            .contains("/graph?g0.expr="),
        "{alert}"
    );
    // The built-in Alertmanager got the same alert in-process (without the sender's
    // external labels and relabelling, which only apply on the way out).
    let builtin = nm.get_ok("/api/v2/alerts");
    assert_eq!(builtin[0]["labels"]["alertname"], "AlwaysOn", "{builtin}");
    let metrics = request("GET", &format!("{}/metrics", nm.url), None).1;
    let metrics = metrics.as_str().unwrap_or("");
    assert!(
        metrics.contains(&format!(
            "prometheus_notifications_sent_total{{alertmanager=\"{am}/api/v2/alerts\"}}"
        )),
        "{metrics}"
    );
}

/// What the local sink received: path, JSON body, when.
type Received = Arc<Mutex<Vec<(String, Json, Instant)>>>;

/// A minimal HTTP/1.1 server on loopback port 0: records every POST and answers 200, or 500
/// for paths under `/fail`.
fn http_sink() -> (String, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let got: Received = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let json = serde_json::from_slice(&body).unwrap_or(Json::Null);
                    g.lock().unwrap().push((path.clone(), json, Instant::now()));
                    let status = if path.starts_with("/fail") {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (url, got)
}

fn received(got: &Received, path: &str) -> Vec<(Json, Instant)> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, b, t)| (b.clone(), *t))
        .collect()
}

/// Completed flushes of `receiver`'s aggregation groups in the built-in Alertmanager: each is
/// a decision whether to notify, taken after the notifications it sent were answered.
fn flushes(nm: &Novamon, receiver: &str) -> f64 {
    nm.metric(&format!(
        "alertmanager_dispatcher_aggregation_group_flushes_total{{receiver_name=\"{receiver}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Waits until `receiver`'s groups have completed `n` flushes since `nm` started.
fn wait_for_flushes(nm: &Novamon, receiver: &str, n: f64) {
    wait_until(Duration::from_secs(20), || flushes(nm, receiver) >= n).unwrap_or_else(|| {
        panic!(
            "{receiver}: {} group flushes, waited for {n}; log:\n{}",
            flushes(nm, receiver),
            nm.process.log()
        )
    });
}

#[test]
fn notifications_are_grouped_timed_resolved_retried_and_not_repeated_after_restart() {
    let (sink, got) = http_sink();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("novamon.yml");
    std::fs::write(
        &config,
        format!(
            r##"alertmanager:
  config:
    route:
      receiver: hook
      group_by: [alertname]
      group_wait: 1s
      group_interval: 2s
      repeat_interval: 1h
      routes:
        - matchers: ['severity="critical"']
          receiver: pager
          continue: true
        - matchers: ['severity="critical"']
          receiver: slack
        - matchers: [team=broken]
          receiver: broken
    receivers:
      - name: hook
        webhook_configs: [{{url: '{sink}/hook'}}]
      - name: pager
        pagerduty_configs: [{{routing_key: rk-1, url: '{sink}/pd'}}]
      - name: slack
        slack_configs: [{{api_url: '{sink}/slack', channel: '#ops', send_resolved: true}}]
      - name: broken
        webhook_configs: [{{url: '{sink}/fail'}}]
"##
        ),
    )
    .unwrap();
    let data = dir.path().join("novamon");
    let args = ["--config", config.to_str().unwrap()];
    let mut nm = Novamon::start(&data, &args);
    let post = |nm: &Novamon, body: &str| {
        let (status, _, _) = nm.post_raw(
            "/api/v2/alerts",
            "application/json",
            &[],
            body.as_bytes().to_vec(),
        );
        assert_eq!(status, 200, "{body}");
    };
    let posted = Instant::now();
    post(
        &nm,
        r#"[{"labels": {"alertname": "Disk", "instance": "a"}},
            {"labels": {"alertname": "Disk", "instance": "b"}},
            {"labels": {"alertname": "Down", "severity": "critical"}, "annotations": {"summary": "site down"}}]"#,
    );
    wait_until(Duration::from_secs(5), || {
        !received(&got, "/hook").is_empty()
            && !received(&got, "/pd").is_empty()
            && !received(&got, "/slack").is_empty()
    })
    .unwrap_or_else(|| {
        panic!(
            "notifications missing: {:?}\n{}",
            got.lock().unwrap(),
            nm.process.log()
        )
    });
    let hook = received(&got, "/hook");
    let (body, at) = &hook[0];
    let waited = at.duration_since(posted);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "group_wait: {waited:?}"
    );
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(
        body["groupLabels"],
        serde_json::json!({"alertname": "Disk"})
    );
    assert_eq!(
        body["commonLabels"],
        serde_json::json!({"alertname": "Disk"})
    );
    assert_eq!(body["groupKey"], "{}:{alertname=\"Disk\"}");
    assert_eq!(body["version"], "4");
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(
        alerts.len(),
        2,
        "both Disk alerts in one notification: {body}"
    );
    assert_eq!(alerts[0]["labels"]["instance"], "a");
    assert_eq!(alerts[0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(alerts[0]["fingerprint"].as_str().unwrap().len(), 16);

    let (pd, _) = &received(&got, "/pd")[0];
    assert_eq!(pd["routing_key"], "rk-1");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["dedup_key"].as_str().unwrap().len(), 64);
    assert_eq!(pd["payload"]["summary"], "[FIRING:1] Down (critical)");
    assert_eq!(pd["payload"]["severity"], "error");
    assert_eq!(pd["payload"]["custom_details"]["num_firing"], "1");
    let (slack, _) = &received(&got, "/slack")[0];
    assert_eq!(slack["channel"], "#ops");
    assert_eq!(
        slack["attachments"][0]["title"],
        "[FIRING:1] Down (critical)"
    );
    assert_eq!(slack["attachments"][0]["color"], "danger");

    // Nothing changed: group_interval flushes (every 2s) repeat nothing before repeat_interval.
    // Two more flushes of the hook group (its only one) decided so.
    wait_for_flushes(&nm, "hook", flushes(&nm, "hook") + 2.0);
    assert_eq!(received(&got, "/hook").len(), 1);

    // Resolving one Disk alert and the Down alert: sent at the next group_interval flush.
    post(
        &nm,
        r#"[{"labels": {"alertname": "Disk", "instance": "a"}, "endsAt": "2020-01-01T00:00:00Z"},
            {"labels": {"alertname": "Down", "severity": "critical"}, "endsAt": "2020-01-01T00:00:00Z"}]"#,
    );
    wait_until(Duration::from_secs(5), || {
        received(&got, "/hook").len() == 2
            && received(&got, "/pd").len() == 2
            && received(&got, "/slack").len() == 2
    })
    .unwrap_or_else(|| panic!("resolved notifications missing: {:?}", got.lock().unwrap()));
    let (body, _) = &received(&got, "/hook")[1];
    assert_eq!(body["status"], "firing", "b still fires");
    let states: Vec<(&str, &str)> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["instance"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("a", "resolved"), ("b", "firing")]);
    assert_eq!(received(&got, "/pd")[1].0["event_action"], "resolve");
    assert_eq!(
        received(&got, "/slack")[1].0["attachments"][0]["color"],
        "good"
    );

    // A failing receiver is retried with back-off, and its failures are counted.
    post(
        &nm,
        r#"[{"labels": {"alertname": "Broken", "team": "broken"}}]"#,
    );
    wait_until(Duration::from_secs(8), || {
        received(&got, "/fail").len() >= 3
    })
    .unwrap_or_else(|| panic!("no retries: {:?}", received(&got, "/fail")));
    let fails = received(&got, "/fail");
    let gaps: Vec<Duration> = fails
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1))
        .collect();
    assert!(gaps[1] > gaps[0], "back-off grows: {gaps:?}");
    let failed =
        nm.metric("alertmanager_notification_requests_failed_total{integration=\"webhook\"}");
    assert!(failed >= Some(3.0), "{failed:?}");

    // Restart: the still-firing Disk alert is re-sent (as Prometheus would), but the
    // receiver was already told, so nothing goes out again.
    nm.process.signal_and_wait("TERM", Duration::from_secs(30));
    let before = received(&got, "/hook").len();
    nm = Novamon::start(&data, &args);
    post(
        &nm,
        r#"[{"labels": {"alertname": "Disk", "instance": "b"}}]"#,
    );
    // Two more flushes of the restarted server's Disk group: at least one took its alerts
    // after the POST, and each decided against the notification log.
    wait_for_flushes(&nm, "hook", flushes(&nm, "hook") + 2.0);
    assert_eq!(
        received(&got, "/hook").len(),
        before,
        "no duplicate after restart: {:?}",
        received(&got, "/hook").last()
    );
    // A new alert in the same group is still notified.
    post(
        &nm,
        r#"[{"labels": {"alertname": "Disk", "instance": "c"}}]"#,
    );
    wait_until(Duration::from_secs(5), || {
        received(&got, "/hook").len() == before + 1
    })
    .expect("new alert after restart notified");
}

#[test]
fn check_config_rejects_bad_alertmanager_and_alerting_sections() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "alertmanager:\n  config:\n    route: {receiver: pager}\n    receivers: [{name: ops}]\n",
            "undefined receiver \"pager\" used in route",
        ),
        (
            "alerting:\n  alertmanagers: [{api_version: v1, static_configs: [{targets: ['am:9093']}]}]\n",
            "api_version \"v1\" is not supported",
        ),
        ("alertmanager:\n  config:\n    route: {receiver: a}\n    receivers: [{name: a}]\n", ""),
    ];
    for (i, (yml, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yml"));
        std::fs::write(&path, yml).unwrap();
        let (code, stderr) = e2e::check_config(&path);
        if want.is_empty() {
            assert_eq!(code, Some(0), "{yml}: {stderr}");
        } else {
            assert_eq!(code, Some(2), "{yml}: {stderr}");
            assert!(stderr.contains(want), "{yml}: {stderr}");
        }
    }
}

#[test]
fn reload_swaps_alertmanager_config_and_alerting_targets_atomically() {
    let (sink, got) = http_sink();
    let host = sink.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("novamon.yml");
    let rule = |name: &str| {
        format!("groups:\n- name: {name}\n  interval: 1s\n  rules:\n  - alert: {name}\n    expr: vector(1)\n")
    };
    std::fs::write(dir.path().join("before.yml"), rule("Before")).unwrap();
    // `Later` fires two evaluations after `After`, so it reaches the sender in a later batch.
    std::fs::write(
        dir.path().join("after.yml"),
        format!(
            "{}  - alert: Later\n    expr: vector(1)\n    for: 2s\n",
            rule("After")
        ),
    )
    .unwrap();
    // `Kept` has a route a reload leaves alone; everything else goes to the root receiver.
    let write_config = |rule_files: &str, root: &str, root_url: &str, ext: &str| {
        let text = format!(
            r##"rule_files: [{rule_files}]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ['{host}']}}]
      path_prefix: {ext}
alertmanager:
  config:
    route:
      receiver: {root}
      group_by: [alertname]
      group_wait: 100ms
      group_interval: 1s
      repeat_interval: 1h
      routes:
        - matchers: [alertname=Kept]
          receiver: kept
    receivers:
      - name: {root}
        webhook_configs: [{{url: '{root_url}'}}]
      - name: kept
        webhook_configs: [{{url: '{sink}/kept'}}]
"##
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config("before.yml", "one", &format!("{sink}/one"), "/ext1");
    let nm = Novamon::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (status, _, _) = nm.post_raw(
        "/api/v2/alerts",
        "application/json",
        &[],
        br#"[{"labels": {"alertname": "Manual"}}, {"labels": {"alertname": "Kept"}}]"#.to_vec(),
    );
    assert_eq!(status, 200);
    let names = |path: &str| -> Vec<String> {
        received(&got, path)
            .iter()
            .flat_map(|(b, _)| {
                b.as_array()
                    .cloned()
                    .unwrap_or_else(|| b["alerts"].as_array().cloned().unwrap_or_default())
            })
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect()
    };
    wait_until(Duration::from_secs(10), || {
        names("/one").contains(&"Manual".to_owned())
            && names("/kept").contains(&"Kept".to_owned())
            && names("/ext1/api/v2/alerts").contains(&"Before".to_owned())
    })
    .unwrap_or_else(|| {
        panic!(
            "before reload: {:?}\n{}",
            got.lock().unwrap(),
            nm.process.log()
        )
    });

    // As `curl -X POST`: no body, no content type (admin endpoints refuse form types).
    let reload = || {
        let mut r = nm
            .agent
            .post(format!("{}/-/reload", nm.url))
            .send_empty()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    // Bad Alertmanager config, then bad `alerting:`: both refused with the reason, nothing
    // changes (the new rule file in the same reload is not loaded either).
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace("receiver: kept", "receiver: nobody")
            .replace("[before.yml]", "[before.yml, after.yml]"),
    )
    .unwrap();
    let (status, body) = reload();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("undefined receiver \"nobody\""), "{body}");
    std::fs::write(
        &config,
        good.replace(
            "path_prefix: /ext1",
            "path_prefix: /ext1\n      api_version: v1",
        )
        .replace("[before.yml]", "[before.yml, after.yml]"),
    )
    .unwrap();
    let (status, body) = reload();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("api_version \"v1\""), "{body}");
    assert!(nm.process.log().contains("reload rejected"));
    let (_, am_status) = nm.get_json("/api/v2/status");
    assert!(
        am_status["config"]["original"]
            .as_str()
            .unwrap()
            .contains("receiver: one\n"),
        "{am_status}"
    );

    // A good reload: new root receiver, new alerting target, one more rule file.
    write_config(
        "before.yml, after.yml",
        "two",
        &format!("{sink}/two"),
        "/ext2",
    );
    let (status, body) = reload();
    assert_eq!(status, 200, "{body}");
    // The sender posts one batch at a time to every target, so once `Later` reached the new
    // target, the earlier batch with `After` was answered by every target it went to.
    wait_until(Duration::from_secs(15), || {
        names("/two").contains(&"Manual".to_owned())
            && names("/two").contains(&"After".to_owned())
            && names("/ext2/api/v2/alerts").contains(&"After".to_owned())
            && names("/ext2/api/v2/alerts").contains(&"Later".to_owned())
    })
    .unwrap_or_else(|| {
        panic!(
            "after reload: {:?}\n{}",
            got.lock().unwrap(),
            nm.process.log()
        )
    });
    // Two more flushes of the kept group (one group interval apart, after the new alerts
    // were routed): the unchanged route's group is not notified again, and the old receiver
    // and target got nothing new.
    wait_for_flushes(&nm, "kept", flushes(&nm, "kept") + 2.0);
    assert_eq!(names("/kept"), ["Kept"]);
    let one = names("/one");
    assert!(
        !one.contains(&"After".to_owned()) && !one.contains(&"Later".to_owned()),
        "{one:?}"
    );
    let ext1 = names("/ext1/api/v2/alerts");
    assert!(
        !ext1.contains(&"After".to_owned()) && !ext1.contains(&"Later".to_owned()),
        "{ext1:?}"
    );
    let (_, am_status) = nm.get_json("/api/v2/status");
    assert!(
        am_status["config"]["original"]
            .as_str()
            .unwrap()
            .contains("receiver: two\n"),
        "{am_status}"
    );
}

/// Messages the SMTP servers of `tests/smtp/server.py` accepted, one JSON object each.
type Mails = Arc<Mutex<Vec<Json>>>;

/// Real SMTP servers (aiosmtpd): plain, STARTTLS with AUTH, implicit TLS with AUTH, and one
/// without STARTTLS, with the server certificate of [`e2e::pki::Pki`] (for 127.0.0.1, signed
/// by its CA). Returns the process (stdin open: closing it stops the servers), the CA file,
/// the four ports and the accepted messages.
fn smtp_servers(dir: &Path) -> (std::process::Child, String, [u16; 4], Mails) {
    let pki = e2e::pki::Pki::new(dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp/server.py");
    let mut child = Command::new(e2e::venv_python())
        .arg(script)
        .args(["server.crt", "server.key", "alerts", "s3cret"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ports: Vec<u16> = line
        .strip_prefix("PORTS ")
        .unwrap_or_else(|| panic!("SMTP servers did not start: {line:?}"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let mails: Mails = Arc::default();
    let m = mails.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            m.lock().unwrap().push(serde_json::from_str(&line).unwrap());
        }
    });
    (child, pki.path("ca.crt"), ports.try_into().unwrap(), mails)
}

#[test]
fn email_notifications_go_through_real_smtp_servers_with_tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (mut servers, ca, [plain, starttls, implicit, notls], mails) = smtp_servers(dir.path());
    let config = dir.path().join("novamon.yml");
    std::fs::write(
        &config,
        format!(
            r##"alertmanager:
  config:
    global:
      smtp_from: 'Alertmanager <am@example.org>'
      smtp_hello: novamon.test
    route:
      receiver: plain
      group_by: [alertname]
      group_wait: 0s
      group_interval: 2s
      routes:
        - {{matchers: [via=starttls], receiver: starttls}}
        - {{matchers: [via=implicit], receiver: implicit}}
        - {{matchers: [via=notls], receiver: notls}}
    receivers:
      - name: plain
        email_configs:
          - {{to: 'ops@example.org', smarthost: '127.0.0.1:{plain}', require_tls: false}}
      - name: starttls
        email_configs:
          - to: 'ops@example.org, dba@example.org'
            smarthost: '127.0.0.1:{starttls}'
            auth_username: alerts
            auth_password: s3cret
            tls_config: {{ca_file: '{ca}'}}
      - name: implicit
        email_configs:
          - to: 'ops@example.org'
            smarthost: '127.0.0.1:{implicit}'
            force_implicit_tls: true
            text: 'plain {{{{ .CommonLabels.alertname }}}}'
            html: '<b>{{{{ .CommonLabels.alertname }}}}</b>'
            auth_username: alerts
            auth_password: s3cret
            tls_config: {{ca_file: '{ca}'}}
      - name: notls
        email_configs:
          - {{to: 'ops@example.org', smarthost: '127.0.0.1:{notls}'}}
"##
        ),
    )
    .unwrap();
    let nm = Novamon::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (status, _, _) = nm.post_raw(
        "/api/v2/alerts",
        "application/json",
        &[],
        br#"[{"labels": {"alertname": "Plain"}},
             {"labels": {"alertname": "Starttls", "via": "starttls"}},
             {"labels": {"alertname": "Implicit", "via": "implicit"}},
             {"labels": {"alertname": "NoTls", "via": "notls"}}]"#
            .to_vec(),
    );
    assert_eq!(status, 200);
    let mail = |server: &str| {
        mails
            .lock()
            .unwrap()
            .iter()
            .find(|m| m["server"] == server)
            .cloned()
    };
    wait_until(Duration::from_secs(10), || {
        ["plain", "starttls", "implicit"]
            .iter()
            .all(|s| mail(s).is_some())
    })
    .unwrap_or_else(|| {
        panic!(
            "mails missing: {:?}\n{}",
            mails.lock().unwrap(),
            nm.process.log()
        )
    });

    let m = mail("plain").unwrap();
    assert_eq!(m["from"], "am@example.org");
    assert_eq!(m["to"], serde_json::json!(["ops@example.org"]));
    assert_eq!(m["tls"], false);
    assert_eq!(m["login"], Json::Null);
    let data = m["data"].as_str().unwrap();
    for header in [
        "Subject: [FIRING:1] Plain",
        "To: ops@example.org\r\n",
        "From: Alertmanager <am@example.org>\r\n",
    ] {
        assert!(data.contains(header), "{header:?} in {data}");
    }
    assert!(data.contains("alertname = Plain"), "{data}");
    // Alertmanager's body is always multipart/alternative, one part per template set; by
    // default only the (plain) alert list.
    assert!(
        data.contains("Content-Type: multipart/alternative"),
        "{data}"
    );
    assert!(!data.contains("text/html"), "{data}");

    // STARTTLS (required by default) against the CA of tls_config, then AUTH, which this
    // server offers only over TLS.
    let m = mail("starttls").unwrap();
    assert_eq!(
        (&m["tls"], &m["login"]),
        (&Json::Bool(true), &Json::from("alerts"))
    );
    assert_eq!(
        m["to"],
        serde_json::json!(["ops@example.org", "dba@example.org"])
    );
    assert!(m["data"]
        .as_str()
        .unwrap()
        .contains("Subject: [FIRING:1] Starttls"));
    let m = mail("implicit").unwrap();
    assert_eq!(
        (&m["tls"], &m["login"]),
        (&Json::Bool(true), &Json::from("alerts"))
    );
    // text and html set: both alternatives, the plain one first, HTML last (the preferred).
    let data = m["data"].as_str().unwrap();
    let plain = data.find("Content-Type: text/plain").expect(data);
    let html = data.find("Content-Type: text/html").expect(data);
    assert!(plain < html, "{data}");
    assert!(data.contains("plain Implicit"), "{data}");
    assert!(data.contains("<b>Implicit</b>"), "{data}");

    // require_tls against a server without STARTTLS: every attempt fails with Alertmanager's
    // error, is retried until the flush's deadline, then counted as a failed notification.
    wait_until(Duration::from_secs(20), || {
        nm.metric("alertmanager_notifications_failed_total{integration=\"email\"}") >= Some(1.0)
    })
    .unwrap_or_else(|| panic!("no failed email notification:\n{}", nm.process.log()));
    let requests_failed =
        nm.metric("alertmanager_notification_requests_failed_total{integration=\"email\"}");
    assert!(requests_failed >= Some(2.0), "retried: {requests_failed:?}");
    let log = nm.process.log();
    assert!(
        log.contains(&format!(
            "'require_tls' is true (default) but \"127.0.0.1:{notls}\" does not advertise the STARTTLS extension"
        )),
        "{log}"
    );
    assert!(mail("notls").is_none());
    drop(servers.stdin.take());
    servers.wait().unwrap();
}
