//! The Elasticsearch-compatible API against the real binary: the official Python client
//! (`elasticsearch` 8.x: `helpers.bulk`, search, msearch, the indices and cat APIs) on the
//! API's own listener; the same documents through LogQL and the ES API; the requests
//! Grafana's Elasticsearch data source builds (health check, logs query, date histogram split
//! by terms, raw data, field list) under the `/es` prefix of the HTTP port, read as Grafana
//! reads the answers; and bad bulk bodies, whose bad items fail alone.
//!
//! Needs the venv `tests/run.sh` creates (with `elasticsearch`).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use e2e::{now_ns, venv_python, Json, Novamon};
use serde_json::json;

/// Starts novamon with the Elasticsearch listener on; returns it and that listener's URL.
fn start(dir: &std::path::Path) -> (Novamon, String) {
    let config = dir.join("novamon.yml");
    std::fs::write(
        &config,
        "listeners:\n  elasticsearch: 127.0.0.1:0\nlimits:\n  log_max_line_bytes: 4096\n",
    )
    .expect("config");
    let mut n = Novamon::start(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    let addr = n
        .process
        .wait_for_log_values(&[" Elasticsearch listening addr="], Duration::from_secs(30))
        .remove(0);
    (n, format!("http://{addr}"))
}

/// Runs a Python script with the venv's interpreter; its stdout, parsed as JSON.
fn python(script: &str) -> Json {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn post(
    n: &Novamon,
    path: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Json, Vec<(String, String)>) {
    let (status, text, headers) = n.post_raw(path, content_type, extra, body);
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (status, json, headers)
}

fn product(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-elastic-product"))
        .map(|(_, v)| v.as_str())
}

#[test]
fn python_client_bulk_search_msearch_and_indices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, es_url) = start(dir.path());
    let script = format!(
        r#"
import json, time
from datetime import datetime, timedelta, timezone
from elasticsearch import Elasticsearch, helpers

es = Elasticsearch("{es_url}", request_timeout=30)
info = es.info()
base = datetime.now(timezone.utc) - timedelta(minutes=5)
actions = []
for i in range(40):
    actions.append({{
        "_index": "app-logs" if i % 4 else "audit",
        "_source": {{
            "@timestamp": (base + timedelta(seconds=i)).isoformat(),
            "message": ("payment error code %d" % i) if i % 3 == 0 else ("request served %d" % i),
            "host": "web-%d" % (i % 2),
            "http": {{"status": 500 if i % 3 == 0 else 200}},
        }},
    }})
ok, errors = helpers.bulk(es, actions)
es.indices.refresh(index="app-logs")

def count(index, query):
    return es.search(index=index, query=query, size=0, track_total_hits=True)["hits"]["total"]["value"]

deadline = time.time() + 30
while time.time() < deadline and count("app-logs,audit", {{"match_all": {{}}}}) < 40:
    time.sleep(0.2)

search = es.search(index="app-logs", query={{"bool": {{"filter": [
    {{"query_string": {{"query": "error AND host:web-0"}}}},
]}}}}, sort=[{{"@timestamp": {{"order": "asc"}}}}], size=100)
msearch = es.msearch(searches=[
    {{"index": "app-logs"}}, {{"query": {{"match_phrase": {{"message": "payment error"}}}}, "size": 0}},
    {{"index": "audit"}}, {{"query": {{"term": {{"http.status": "200"}}}}, "size": 0}},
    {{"index": "missing"}}, {{"query": {{"match_all": {{}}}}}},
])
print(json.dumps({{
    "info": info.body,
    "bulk": [ok, errors],
    "search": search.body,
    "msearch": msearch.body,
    "exists": [es.indices.exists(index="app-logs").body, es.indices.exists(index="nope").body],
    "mapping": es.indices.get_mapping(index="app-logs").body,
    "cat": es.cat.indices(format="json", s="index").body,
    "health": es.cluster.health().body,
}}))
"#
    );
    let out = python(&script);
    assert!(
        out["info"]["version"]["number"]
            .as_str()
            .is_some_and(|v| v.starts_with("8.")),
        "{}",
        out["info"]
    );
    assert_eq!(out["bulk"], json!([40, []]));
    // 30 documents in app-logs; errors are i % 3 == 0 and host web-0 is even i: i % 6 == 0
    // and i % 4 != 0: 6, 18, 30.
    let hits = out["search"]["hits"]["hits"].as_array().expect("hits");
    let messages: Vec<&str> = hits
        .iter()
        .map(|h| h["_source"]["message"].as_str().expect("message"))
        .collect();
    assert_eq!(
        messages,
        [
            "payment error code 6",
            "payment error code 18",
            "payment error code 30"
        ],
        "{}",
        out["search"]
    );
    assert_eq!(hits[0]["_index"], "app-logs");
    assert_eq!(hits[0]["_source"]["host"], "web-0");
    assert_eq!(hits[0]["_source"]["http"]["status"], "500");
    let r = &out["msearch"]["responses"];
    // Errors in app-logs: i % 3 == 0 and i % 4 != 0, below 40: 10 of the 14 multiples of 3.
    assert_eq!(r[0]["hits"]["total"]["value"], 10, "{r}");
    // audit is i % 4 == 0 (10 docs), status 200 where i % 3 != 0: 6 of them.
    assert_eq!(r[1]["hits"]["total"]["value"], 6, "{r}");
    assert_eq!(r[2]["status"], 404);
    assert_eq!(r[2]["error"]["type"], "index_not_found_exception");
    assert_eq!(out["exists"], json!([true, false]));
    let props = &out["mapping"]["app-logs"]["mappings"]["properties"];
    assert_eq!(props["@timestamp"]["type"], "date");
    assert_eq!(props["http"]["properties"]["status"]["type"], "text");
    let cat: Vec<(String, String)> = out["cat"]
        .as_array()
        .expect("cat rows")
        .iter()
        .map(|r| {
            (
                r["index"].as_str().unwrap_or("").to_owned(),
                r["docs.count"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        cat,
        [
            ("app-logs".to_owned(), "30".to_owned()),
            ("audit".to_owned(), "10".to_owned())
        ]
    );
    assert_eq!(out["health"]["status"], "green");

    // The same documents through LogQL: the index is the stream label, the line the message.
    let start = now_ns() - 3_600_000_000_000;
    let mut logql: Vec<String> =
        n.log_lines(r#"{index="app-logs", host="web-0"} |= "error""#, start);
    logql.sort();
    let mut es: Vec<String> = messages.iter().map(|m| (*m).to_owned()).collect();
    es.sort();
    assert_eq!(logql, es);
    let all: BTreeSet<String> = n
        .log_lines(r#"{index="app-logs"} |= "error""#, start)
        .into_iter()
        .collect();
    assert_eq!(all.len(), 10);
}

/// Requests as Grafana's Elasticsearch data source (pkg/tsdb/elasticsearch) builds them.
#[test]
fn grafana_data_source_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, _) = start(dir.path());
    let base_ms = (now_ns() / 1_000_000_000 - 120) * 1000;
    let mut nd = String::new();
    for i in 0..30 {
        let ts = base_ms + i * 1000;
        nd += &json!({"index": {"_index": "logs-grafana"}}).to_string();
        nd.push('\n');
        nd += &json!({"@timestamp": ts, "message": format!("line {i} {}", if i % 2 == 0 { "ok" } else { "failed" }),
            "service": if i % 3 == 0 { "api" } else { "web" }, "latency": i * 10}).to_string();
        nd.push('\n');
    }
    let (status, body, headers) = post(
        &n,
        "/es/_bulk",
        "application/x-ndjson",
        &[],
        nd.into_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"], false);
    assert_eq!(product(&headers), Some("Elasticsearch"));
    n.wait_for_log_lines(
        r#"{index="logs-grafana"}"#,
        base_ms * 1_000_000 - 1,
        None,
        30,
    );

    // Health check: GET _cluster/health?wait_for_status=yellow, healthy unless "red".
    let health = n.get_ok("/es/_cluster/health?wait_for_status=yellow");
    assert_ne!(health["status"], "red");
    // Version check: GET / on the data source URL.
    let root = n.get_ok("/es/");
    assert_eq!(root["version"]["build_flavor"], "default");

    let (from, to) = (base_ms - 1000, base_ms + 60_000);
    let header = json!({"ignore_unavailable": true, "index": "logs-grafana", "search_type": "query_then_fetch"});
    let range =
        json!({"range": {"@timestamp": {"format": "epoch_millis", "gte": from, "lte": to}}});
    // The logs query, with its query string.
    let logs = json!({
        "docvalue_fields": ["@timestamp"],
        "query": {"bool": {"filter": [range, {"query_string": {"analyze_wildcard": true, "query": "failed AND service:web"}}]}},
        "script_fields": {},
        "size": 500,
        "sort": {"@timestamp": {"order": "desc", "unmapped_type": "boolean"}, "_doc": {"order": "desc"}},
        "highlight": {"pre_tags": ["@HIGHLIGHT@"], "post_tags": ["@/HIGHLIGHT@"], "fragment_size": 2147483647, "fields": {"*": {}}},
        "fields": [{"field": "@timestamp", "format": "strict_date_optional_time_nanos"}],
        "aggs": {"1": {"date_histogram": {"field": "@timestamp", "min_doc_count": 0,
            "extended_bounds": {"min": from, "max": to}, "format": "epoch_millis", "fixed_interval": "10000ms"}}}
    });
    // A time series: count per 5 s, split by the top terms of `service`, and the average latency.
    let histogram = json!({
        "size": 0,
        "query": {"bool": {"filter": range}},
        "aggs": {"3": {
            "terms": {"field": "service.keyword", "size": 10, "order": {"_key": "asc"}, "min_doc_count": 1},
            "aggs": {"2": {
                "date_histogram": {"field": "@timestamp", "min_doc_count": 0,
                    "extended_bounds": {"min": from, "max": to}, "format": "epoch_millis", "fixed_interval": "5000ms"},
                "aggs": {"1": {"avg": {"field": "latency"}}}
            }}
        }}
    });
    // Raw data: the newest documents.
    let raw = json!({
        "docvalue_fields": ["@timestamp"],
        "query": {"bool": {"filter": range}},
        "script_fields": {},
        "size": 5,
        "sort": {"@timestamp": {"order": "desc", "unmapped_type": "boolean"}, "_doc": {"order": "desc"}},
        "fields": [{"field": "@timestamp", "format": "strict_date_optional_time_nanos"}]
    });
    let mut body = String::new();
    for b in [&logs, &histogram, &raw] {
        body += &format!("{header}\n{b}\n");
    }
    let (status, out, headers) = post(
        &n,
        "/es/_msearch?max_concurrent_shard_requests=5",
        "application/x-ndjson",
        &[],
        body.into_bytes(),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(product(&headers), Some("Elasticsearch"));
    let r = out["responses"].as_array().expect("responses");
    assert_eq!(r.len(), 3);

    // Logs: hits newest first; Grafana reads `_source` and the time from `fields`.
    let hits = r[0]["hits"]["hits"].as_array().expect("hits");
    let want: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 2 == 1 && i % 3 != 0)
        .map(|i| format!("line {i} failed"))
        .collect();
    let got: Vec<&str> = hits
        .iter()
        .map(|h| h["_source"]["message"].as_str().expect("message"))
        .collect();
    assert_eq!(got, want);
    for h in hits {
        let t = h["fields"]["@timestamp"][0].as_str().expect("time field");
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
        assert!(h["_id"].is_string() && h["_index"] == "logs-grafana");
    }
    let volume: i64 = r[0]["aggregations"]["1"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["doc_count"].as_i64().unwrap())
        .sum();
    assert_eq!(volume, want.len() as i64);

    // The histogram split by terms: a bucket per service, every 5 s step present.
    let services = r[1]["aggregations"]["3"]["buckets"]
        .as_array()
        .expect("terms");
    let keys: Vec<&str> = services
        .iter()
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["api", "web"]);
    assert_eq!(services[0]["doc_count"], 10);
    let steps = services[0]["2"]["buckets"].as_array().expect("histogram");
    assert_eq!(steps.len() as i64, (to / 5000) - (from / 5000) + 1);
    let total: i64 = steps.iter().map(|b| b["doc_count"].as_i64().unwrap()).sum();
    assert_eq!(total, 10);
    for s in steps {
        let key = s["key"].as_i64().expect("epoch ms key");
        assert_eq!(s["key_as_string"], key.to_string());
        assert_eq!(s["1"]["value"].is_null(), s["doc_count"] == 0);
    }

    // Raw data: five newest, as sorted.
    let raw_hits = r[2]["hits"]["hits"].as_array().expect("raw hits");
    assert_eq!(raw_hits.len(), 5);
    assert_eq!(raw_hits[0]["_source"]["message"], "line 29 failed");
    assert_eq!(r[2]["hits"]["total"]["value"], 30);

    // The field list: the index's mapping.
    let mapping = n.get_ok("/es/logs-grafana/_mapping");
    let props = &mapping["logs-grafana"]["mappings"]["properties"];
    assert_eq!(props["@timestamp"]["type"], "date");
    // A document with a message keeps its other fields as structured metadata, which is text:
    // a number there is mapped as text (with its keyword), not as long.
    assert_eq!(props["latency"]["type"], "text");
    assert_eq!(props["service"]["fields"]["keyword"]["type"], "keyword");

    // Runbooks: _cat/indices as text and the node's stats.
    let (status, text) = n.get_text("/es/_cat/indices?v&s=store.size:desc", &[]);
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("health status index"), "{text}");
    assert!(
        lines[1].contains("logs-grafana") && lines[1].contains(" 30 "),
        "{text}"
    );
    let stats = n.get_ok("/es/_nodes/stats");
    let node = stats["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .next()
        .expect("a node");
    assert_eq!(node["indices"]["docs"]["count"], 30);
    assert!(node["indices"]["store"]["size_in_bytes"].as_u64().unwrap() > 0);
    // An error, in Elasticsearch's shape, with the header too.
    let (status, err, headers) = post(
        &n,
        "/es/logs-grafana/_search",
        "application/json",
        &[],
        br#"{"query":{"bogus":{}}}"#.to_vec(),
    );
    assert_eq!(status, 400);
    assert_eq!(err["error"]["root_cause"][0]["type"], "parsing_exception");
    assert_eq!(err["status"], 400);
    assert_eq!(product(&headers), Some("Elasticsearch"));
}

#[test]
fn bad_bulk_bodies_fail_per_item_and_keep_the_valid_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, _) = start(dir.path());
    let now_ms = now_ns() / 1_000_000;
    let big = "x".repeat(5000);
    let body = format!(
        "{{\"index\":{{}}}}\n{{\"message\":\"valid one\",\"@timestamp\":{now_ms}}}\n\
         {{\"index\":{{}}\n{{\"message\":\"after a broken action line\"}}\n\
         {{\"message\":\"no action line\"}}\n\
         {{\"create\":{{}}}}\n{{\"message\": \"broken json\n\
         {{\"index\":{{}}}}\n{{\"message\":\"{big}\"}}\n\
         {{\"index\":{{\"_index\":\"Upper\"}}}}\n{{\"message\":\"bad index name\"}}\n\
         {{\"index\":{{}}}}\n{{\"message\":\"valid two\"}}\n"
    );
    let (status, out, headers) = post(
        &n,
        "/es/bulk-test/_bulk",
        "application/x-ndjson",
        &[],
        body.into_bytes(),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(product(&headers), Some("Elasticsearch"));
    assert_eq!(out["errors"], true);
    let items = out["items"].as_array().expect("items");
    let statuses: Vec<(String, i64)> = items
        .iter()
        .map(|i| {
            let (op, v) = i.as_object().unwrap().iter().next().unwrap();
            (op.clone(), v["status"].as_i64().unwrap())
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("index", 201),
        ("index", 400),
        ("index", 400),
        ("create", 400),
        ("index", 400),
        ("index", 400),
        ("index", 201),
    ]
    .iter()
    .map(|(o, s)| ((*o).to_owned(), *s))
    .collect();
    assert_eq!(statuses, want, "{out}");
    for i in items {
        let v = i.as_object().unwrap().values().next().unwrap();
        if v["status"] == 400 {
            assert!(
                v["error"]["type"].is_string() && v["error"]["reason"].is_string(),
                "{v}"
            );
        }
    }
    // The valid items of the request are stored.
    n.wait_for_log_lines(
        r#"{index="bulk-test"}"#,
        now_ns() - 3_600_000_000_000,
        None,
        2,
    );
    let mut lines = n.log_lines(r#"{index="bulk-test"}"#, now_ns() - 3_600_000_000_000);
    lines.sort();
    assert_eq!(lines, ["valid one", "valid two"]);

    // Gzip bodies; and a body that is not gzip at all fails whole, in Elasticsearch's shape.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"index\":{\"_index\":\"bulk-gz\"}}\n{\"log\":\"zipped\"}\n")
        .expect("gzip");
    let (status, out, _) = post(
        &n,
        "/es/_bulk",
        "application/x-ndjson",
        &[("Content-Encoding", "gzip")],
        gz.finish().expect("gzip"),
    );
    assert_eq!((status, &out["errors"]), (200, &json!(false)), "{out}");
    assert_eq!(out["items"][0]["index"]["status"], 201);
    n.wait_for_log_lines(
        r#"{index="bulk-gz"}"#,
        now_ns() - 3_600_000_000_000,
        None,
        1,
    );
    let (status, out, _) = post(
        &n,
        "/es/_bulk",
        "application/x-ndjson",
        &[("Content-Encoding", "gzip")],
        b"plain".to_vec(),
    );
    assert_eq!(status, 400, "{out}");
    assert_eq!(out["error"]["type"], "parse_exception");
}

/// `DELETE /<index-pattern>` through the official client: the indices' documents leave the ES
/// API, LogQL and `_cat/indices`, stay gone after `kill -9` and a restart (nothing replayed
/// brings them back), and the other indices keep theirs.
#[test]
fn deleted_indices_are_gone_for_every_api_and_stay_gone_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut n, es_url) = start(dir.path());
    let t = now_ns() / 1_000_000 - 60_000;
    let mut body = String::new();
    for i in 0..30 {
        let index = ["logs-a", "logs-b", "keep"][i % 3];
        body.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\"}}}}\n{{\"@timestamp\":{},\"message\":\"line {i} of {index}\"}}\n",
            t + i as i64
        ));
    }
    let (status, bulk, _) = post(
        &n,
        "/es/_bulk",
        "application/x-ndjson",
        &[],
        body.into_bytes(),
    );
    assert_eq!((status, &bulk["errors"]), (200, &json!(false)), "{bulk}");
    // The last ten are only in the append log when the delete comes (the indexer commits
    // about once a second): the delete must reach them too.
    let script = format!(
        r#"
import json
from elasticsearch import Elasticsearch, NotFoundError
es = Elasticsearch("{es_url}", request_timeout=30)
out = {{"deleted": es.indices.delete(index="logs-*,-logs-b").body}}
try:
    es.indices.delete(index="logs-a")
    out["again"] = None
except NotFoundError as e:
    out["again"] = [e.meta.status, e.body]
out["cat"] = es.cat.indices(format="json", s="index", h="index,docs.count").body
print(json.dumps(out))
"#
    );
    let out = python(&script);
    assert_eq!(out["deleted"], json!({"acknowledged": true}));
    assert_eq!(out["again"][0], 404, "{out}");
    assert_eq!(
        out["again"][1]["error"]["type"],
        "index_not_found_exception"
    );
    let cat =
        json!([{"index": "keep", "docs.count": "10"}, {"index": "logs-b", "docs.count": "10"}]);
    assert_eq!(out["cat"], cat);
    let since = now_ns() - 3_600_000_000_000;
    let check = |n: &Novamon| {
        assert!(n.log_lines(r#"{index="logs-a"}"#, since).is_empty());
        assert_eq!(n.log_lines(r#"{index=~"logs-b|keep"}"#, since).len(), 20);
        let (status, v) = n.get_json("/es/logs-a/_search");
        assert_eq!(
            (status, &v["error"]["type"]),
            (404, &json!("index_not_found_exception"))
        );
        let values = n.get_ok("/loki/api/v1/label/index/values");
        assert_eq!(values["data"], json!(["keep", "logs-b"]));
    };
    check(&n);
    let status = n.process.signal_and_wait("KILL", Duration::from_secs(10));
    assert!(!status.success());
    let (n, _) = start(dir.path());
    check(&n);
    let (status, text) = n.get_text(
        "/es/_cat/indices?h=index,docs.count,docs.deleted&s=index",
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(text, "keep   10 0\nlogs-b 10 0\n");
}
