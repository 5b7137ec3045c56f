//! Search and the listings over `elastic::Searcher`: `_search` (body or `q=`), `_msearch`
//! (NDJSON header and body pairs, one answer or error each), `_mapping`, `_field_caps`,
//! `_cat/indices` (text with `v`, `s`, `h`, `bytes`, or `format=json`), `_cluster/health`,
//! `_nodes/stats`, index existence and deletion. Owns the wire shapes; the meaning is `elastic`'s.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use elastic::{DeleteOptions, EsError, IndexInfo, Searcher};
use serde_json::{json, Map, Value};

use super::info::{CLUSTER_NAME, NODE_ID};
use super::{blocking, respond, ElasticState};

type Params = Query<HashMap<String, String>>;

/// Documents read per index to list its fields.
const MAPPING_SAMPLE: usize = 1000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A request body as JSON (`{}` when empty).
fn json_body(body: &[u8]) -> Result<Value, EsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| EsError::Parse {
        kind: "x_content_parse_exception",
        reason: format!("failed to parse the request body: {e}"),
    })
}

/// `q=` and `size=` of a URI search, over the body's query and size.
fn with_uri_params(mut body: Value, p: &HashMap<String, String>) -> Result<Value, EsError> {
    if let Some(q) = p.get("q") {
        body["query"] = json!({"query_string": {"query": q}});
    }
    for key in ["size", "from"] {
        if let Some(v) = p.get(key) {
            let n: u64 = v.parse().map_err(|_| {
                EsError::IllegalArgument(format!(
                    "Failed to parse int parameter [{key}] with value [{v}]"
                ))
            })?;
            body[key] = json!(n);
        }
    }
    if let Some(s) = p.get("sort") {
        body["sort"] = json!(s.split(',').collect::<Vec<_>>());
    }
    Ok(body)
}

/// `rest_total_hits_as_int=true`: `hits.total` as a bare number, as clients of 6.x expect.
fn total_as_int(mut v: Value, p: &HashMap<String, String>) -> Value {
    if p.get("rest_total_hits_as_int").map(String::as_str) == Some("true") {
        if let Some(n) = v["hits"]["total"]["value"].as_u64() {
            v["hits"]["total"] = json!(n);
        }
    }
    v
}

pub(super) async fn search_all(s: State<ElasticState>, p: Params, body: Bytes) -> Response {
    search(s, String::new(), p, body).await
}

pub(super) async fn search_index(
    s: State<ElasticState>,
    Path(index): Path<String>,
    p: Params,
    body: Bytes,
) -> Response {
    search(s, index, p, body).await
}

async fn search(
    State(s): State<ElasticState>,
    index: String,
    Query(p): Params,
    body: Bytes,
) -> Response {
    let run = async {
        let body = with_uri_params(json_body(&body)?, &p)?;
        let v = blocking(&s, move |se| se.search(&index, &body, now_ms())).await?;
        Ok(total_as_int(v, &p))
    };
    respond(run.await)
}

pub(super) async fn msearch_all(s: State<ElasticState>, p: Params, body: Bytes) -> Response {
    msearch(s, String::new(), p, body).await
}

pub(super) async fn msearch_index(
    s: State<ElasticState>,
    Path(index): Path<String>,
    p: Params,
    body: Bytes,
) -> Response {
    msearch(s, index, p, body).await
}

/// Each header and body pair is searched in turn; one that fails answers its error in its
/// place, as Elasticsearch's multi-search does. A body that is not NDJSON pairs fails whole.
async fn msearch(
    State(s): State<ElasticState>,
    default_index: String,
    Query(p): Params,
    body: Bytes,
) -> Response {
    let run = async {
        let lines: Vec<&[u8]> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .collect();
        if !lines.len().is_multiple_of(2) {
            return Err(EsError::IllegalArgument(
                "The msearch request must be terminated by a newline [\\n] and hold header and body pairs".into(),
            ));
        }
        let mut searches = Vec::new();
        for pair in lines.chunks(2) {
            let header = json_body(pair[0])?;
            let index = match header.get("index") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                _ => default_index.clone(),
            };
            searches.push((index, json_body(pair[1])));
        }
        let started = std::time::Instant::now();
        let responses: Vec<Value> = blocking(&s, move |se: &Searcher| {
            let now = now_ms();
            Ok(searches
                .into_iter()
                .map(
                    |(index, body)| match body.and_then(|b| se.search(&index, &b, now)) {
                        Ok(mut v) => {
                            v["status"] = json!(200);
                            v
                        }
                        Err(e) => e.body(),
                    },
                )
                .collect())
        })
        .await?;
        let responses: Vec<Value> = responses.into_iter().map(|v| total_as_int(v, &p)).collect();
        Ok(json!({"took": started.elapsed().as_millis() as u64, "responses": responses}))
    };
    respond(run.await)
}

/// Field types as Elasticsearch's mapping has them: strings `text` with a `keyword`
/// sub-field, dotted names nested under `properties`.
fn properties(fields: &BTreeMap<String, &'static str>) -> Value {
    let mut root = Map::new();
    for (name, ty) in fields {
        let leaf = if *ty == "text" {
            json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}})
        } else {
            json!({"type": ty})
        };
        let parts: Vec<&str> = name.split('.').collect();
        insert_property(&mut root, &parts, leaf);
    }
    Value::Object(root)
}

/// Puts `leaf` at `parts` under nested `properties`; where a leaf already holds a name an
/// object would need, the field keeps its dotted name at that level instead.
fn insert_property(node: &mut Map<String, Value>, parts: &[&str], leaf: Value) {
    let [head, rest @ ..] = parts else { return };
    if rest.is_empty() {
        node.entry((*head).to_owned()).or_insert(leaf);
        return;
    }
    let entry = node
        .entry((*head).to_owned())
        .or_insert_with(|| json!({"properties": {}}));
    match entry.get_mut("properties").and_then(Value::as_object_mut) {
        Some(children) => insert_property(children, rest, leaf),
        None => {
            node.entry(parts.join(".")).or_insert(leaf);
        }
    }
}

pub(super) async fn mapping_all(s: State<ElasticState>) -> Response {
    mapping(s, String::new()).await
}

pub(super) async fn mapping_index(s: State<ElasticState>, Path(index): Path<String>) -> Response {
    mapping(s, index).await
}

async fn mapping(State(s): State<ElasticState>, index: String) -> Response {
    respond(
        blocking(&s, move |se: &Searcher| {
            let mut out = Map::new();
            for (name, fields) in se.mappings(&index, MAPPING_SAMPLE)? {
                out.insert(
                    name,
                    json!({"mappings": {"properties": properties(&fields)}}),
                );
            }
            Ok(Value::Object(out))
        })
        .await,
    )
}

pub(super) async fn index_info(s: State<ElasticState>, Path(index): Path<String>) -> Response {
    respond(
        blocking(&s, move |se| {
            let mut out = Map::new();
            for (name, fields) in se.mappings(&index, MAPPING_SAMPLE)? {
                out.insert(
                    name.clone(),
                    json!({
                        "aliases": {},
                        "mappings": {"properties": properties(&fields)},
                        "settings": {"index": {
                            "number_of_shards": "1", "number_of_replicas": "0",
                            "provided_name": name, "uuid": name,
                        }},
                    }),
                );
            }
            Ok(Value::Object(out))
        })
        .await,
    )
}

pub(super) async fn field_caps_all(s: State<ElasticState>) -> Response {
    field_caps(s, String::new()).await
}

pub(super) async fn field_caps_index(
    s: State<ElasticState>,
    Path(index): Path<String>,
) -> Response {
    field_caps(s, index).await
}

async fn field_caps(State(s): State<ElasticState>, index: String) -> Response {
    respond(
        blocking(&s, move |se| {
            let mut indices = Vec::new();
            let mut fields: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
            let mut add = |name: String, ty: &str, aggregatable: bool| {
                fields.entry(name).or_default().insert(
                    ty.to_owned(),
                    json!({"type": ty, "metadata_field": false, "searchable": true, "aggregatable": aggregatable}),
                );
            };
            for (name, f) in se.mappings(&index, MAPPING_SAMPLE)? {
                indices.push(name);
                for (field, ty) in f {
                    if ty == "text" {
                        add(format!("{field}.keyword"), "keyword", true);
                        add(field, "text", false);
                    } else {
                        add(field, ty, true);
                    }
                }
            }
            Ok(json!({"indices": indices, "fields": fields}))
        })
        .await,
    )
}

/// `DELETE /<index-pattern>`: deletes the matching indices' documents, answering
/// `{"acknowledged": true}` as Elasticsearch does; `allow_no_indices` and
/// `ignore_unavailable` as Elasticsearch reads them (see `Searcher::delete_indices`).
pub(super) async fn delete_index(
    s: State<ElasticState>,
    Path(index): Path<String>,
    Query(p): Params,
) -> Response {
    let run = async {
        let opts = DeleteOptions {
            allow_no_indices: bool_param(&p, "allow_no_indices", true)?,
            ignore_unavailable: bool_param(&p, "ignore_unavailable", false)?,
        };
        blocking(&s, move |se| se.delete_indices(&index, opts)).await?;
        Ok(json!({"acknowledged": true}))
    };
    respond(run.await)
}

/// A boolean query parameter as Elasticsearch parses it: `true`, `false`, or present without
/// a value (true); anything else refused.
fn bool_param(p: &HashMap<String, String>, key: &str, default: bool) -> Result<bool, EsError> {
    match p.get(key).map(String::as_str) {
        None => Ok(default),
        Some("" | "true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(EsError::IllegalArgument(format!(
            "Failed to parse value [{v}] as only [true] or [false] are allowed."
        ))),
    }
}

/// `_refresh`: indexes what was appended so far, so a search right after a bulk sees it, as
/// Elasticsearch's refresh does.
pub(super) async fn refresh(State(s): State<ElasticState>) -> Response {
    let refresh = s.refresh.clone();
    respond(
        blocking(&s, move |_| {
            refresh()?;
            Ok(json!({"_shards": {"total": 1, "successful": 1, "failed": 0}}))
        })
        .await,
    )
}

pub(super) async fn cluster_health(State(s): State<ElasticState>) -> Response {
    respond(
        blocking(&s, |se| {
            let n = se.indices("*")?.len();
            Ok(json!({
                "cluster_name": CLUSTER_NAME,
                "status": "green",
                "timed_out": false,
                "number_of_nodes": 1,
                "number_of_data_nodes": 1,
                "active_primary_shards": n,
                "active_shards": n,
                "relocating_shards": 0,
                "initializing_shards": 0,
                "unassigned_shards": 0,
                "delayed_unassigned_shards": 0,
                "number_of_pending_tasks": 0,
                "number_of_in_flight_fetch": 0,
                "task_max_waiting_in_queue_millis": 0,
                "active_shards_percent_as_number": 100.0,
            }))
        })
        .await,
    )
}

pub(super) async fn nodes_stats(State(s): State<ElasticState>) -> Response {
    let name = s.node_name.clone();
    respond(
        blocking(&s, move |se| {
            let idx = se.indices("*")?;
            let docs: u64 = idx.iter().map(|i| i.docs).sum();
            let deleted: u64 = idx.iter().map(|i| i.deleted).sum();
            let bytes: u64 = idx.iter().map(|i| i.bytes).sum();
            Ok(json!({
                "_nodes": {"total": 1, "successful": 1, "failed": 0},
                "cluster_name": CLUSTER_NAME,
                "nodes": { NODE_ID: {
                    "name": &*name,
                    "roles": ["data", "ingest", "master"],
                    "indices": {
                        "docs": {"count": docs, "deleted": deleted},
                        "store": {"size_in_bytes": bytes, "reserved_in_bytes": 0},
                    },
                }},
            }))
        })
        .await,
    )
}

pub(super) async fn cat_indices_all(s: State<ElasticState>, p: Params) -> Response {
    cat_indices(s, String::new(), p).await
}

pub(super) async fn cat_indices_index(
    s: State<ElasticState>,
    Path(index): Path<String>,
    p: Params,
) -> Response {
    cat_indices(s, index, p).await
}

const CAT_COLUMNS: [&str; 10] = [
    "health",
    "status",
    "index",
    "uuid",
    "pri",
    "rep",
    "docs.count",
    "docs.deleted",
    "store.size",
    "pri.store.size",
];

/// `_cat/indices`: one row per index, sorted by `s` (`column[:asc|:desc]`, comma-separated),
/// `h` choosing columns, sizes human-readable unless `bytes` names a unit, text (with a
/// header row under `v`) or `format=json`.
async fn cat_indices(State(s): State<ElasticState>, index: String, Query(p): Params) -> Response {
    let infos = match blocking(&s, move |se| se.indices(&index)).await {
        Ok(i) => i,
        Err(e) => return respond(Err(e)),
    };
    match cat_table(&infos, &p) {
        Ok(CatOut::Json(v)) => respond(Ok(v)),
        Ok(CatOut::Text(t)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            t,
        )
            .into_response(),
        Err(e) => respond(Err(e)),
    }
}

enum CatOut {
    Json(Value),
    Text(String),
}

fn cat_table(infos: &[IndexInfo], p: &HashMap<String, String>) -> Result<CatOut, EsError> {
    let unit = p.get("bytes").map(String::as_str);
    let size = |b: u64| match unit {
        Some("b") => b.to_string(),
        Some("kb") => (b / 1024).to_string(),
        Some("mb") => (b >> 20).to_string(),
        Some("gb") => (b >> 30).to_string(),
        _ => human_bytes(b),
    };
    let cell = |i: &IndexInfo, col: &str| -> Option<String> {
        Some(match col {
            "health" | "h" => "green".into(),
            "status" | "s" => "open".into(),
            "index" | "i" | "idx" => i.name.clone(),
            "uuid" | "id" => i.name.clone(),
            "pri" | "p" => "1".into(),
            "rep" | "r" => "0".into(),
            "docs.count" | "dc" | "docsCount" => i.docs.to_string(),
            "docs.deleted" | "dd" | "docsDeleted" => i.deleted.to_string(),
            "store.size" | "ss" | "storeSize" | "pri.store.size" | "dataset.size" => size(i.bytes),
            _ => return None,
        })
    };
    let cols: Vec<String> = match p.get("h") {
        Some(h) => h.split(',').map(str::to_owned).collect(),
        None => CAT_COLUMNS.iter().map(|c| (*c).to_owned()).collect(),
    };
    if let Some(bad) = cols
        .iter()
        .find(|c| cell(&infos.first().cloned().unwrap_or_default(), c).is_none())
    {
        return Err(EsError::IllegalArgument(format!(
            "header [{bad}] does not exist"
        )));
    }
    let mut rows: Vec<&IndexInfo> = infos.iter().collect();
    if let Some(sort) = p.get("s") {
        for key in sort.split(',').rev() {
            let (col, desc) = match key.rsplit_once(':') {
                Some((c, o)) => (c, o == "desc"),
                None => (key, false),
            };
            let numeric = |i: &IndexInfo| -> Option<u64> {
                match col {
                    "docs.count" | "dc" | "docsCount" => Some(i.docs),
                    "docs.deleted" | "dd" | "docsDeleted" => Some(i.deleted),
                    "store.size" | "ss" | "storeSize" | "pri.store.size" | "dataset.size" => {
                        Some(i.bytes)
                    }
                    _ => None,
                }
            };
            if cell(&IndexInfo::default(), col).is_none() {
                return Err(EsError::IllegalArgument(format!(
                    "Unable to sort by unknown sort key `{col}`"
                )));
            }
            rows.sort_by(|a, b| {
                let o = match (numeric(a), numeric(b)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    _ => cell(a, col).cmp(&cell(b, col)),
                };
                if desc {
                    o.reverse()
                } else {
                    o
                }
            });
        }
    }
    if p.get("format").map(String::as_str) == Some("json") {
        let out: Vec<Value> = rows
            .iter()
            .map(|i| {
                let mut m = Map::new();
                for c in &cols {
                    m.insert(c.clone(), json!(cell(i, c)));
                }
                Value::Object(m)
            })
            .collect();
        return Ok(CatOut::Json(json!(out)));
    }
    let verbose = p.contains_key("v") && p.get("v").map(String::as_str) != Some("false");
    let mut table: Vec<Vec<String>> = Vec::new();
    if verbose {
        table.push(cols.clone());
    }
    for i in &rows {
        table.push(
            cols.iter()
                .map(|c| cell(i, c).unwrap_or_default())
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..cols.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for r in table {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        text.push_str(line.join(" ").trim_end());
        text.push('\n');
    }
    Ok(CatOut::Text(text))
}

/// Elasticsearch's human sizes: `123b`, `4.5kb`, `12mb`, one decimal below 10 of a unit.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["b", "kb", "mb", "gb", "tb"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}b")
    } else if v < 10.0 {
        let s = format!("{v:.1}");
        format!("{}{}", s.trim_end_matches(".0"), UNITS[u])
    } else {
        format!("{}{}", v.round(), UNITS[u])
    }
}
