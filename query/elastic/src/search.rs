//! A search request run against the log store, and the index listings. The store is read
//! through its read contract, `LogReader::scan` (the time-ordered, round-by-round read LogQL's
//! log queries use), selecting streams by the `index` label (`IndexPattern::matcher`) and the
//! query's time bounds; each record read becomes a [`Document`] the query is evaluated on.
//! Owns a search's shape (hits, `size`/`from`, `sort` by time, `_source` filtering, `fields`,
//! totals, aggregations); knows no HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use storage::logs::{Direction, LogDeleter, LogQuery, LogReader};

use crate::aggs;
use crate::doc::{rfc3339_nanos, Document};
use crate::dsl::Query;
use crate::index::IndexPattern;
use crate::{EsError, INDEX_LABEL};

#[derive(Clone, Debug)]
pub struct SearchOptions {
    /// The document field the record's time is (`@timestamp`).
    pub time_field: String,
    /// The most documents one search may read (matching or not).
    pub max_documents: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            time_field: "@timestamp".into(),
            max_documents: 5_000_000,
        }
    }
}

/// An index as `_cat/indices` and `_nodes/stats` list it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexInfo {
    pub name: String,
    pub docs: u64,
    /// Documents deleted but still on disk: tantivy's deleted documents of the index's
    /// streams, until a merge drops them (Lucene's, which Elasticsearch reports, alike).
    pub deleted: u64,
    /// Bytes on disk. A partition (a day) holds many indices in one tantivy index, so each
    /// partition's disk bytes are apportioned by the index's share of its documents (alive
    /// and deleted, as both take space); the sum over indices is the disk use of their
    /// partitions, less the share of streams that are no index (pushed through Loki, OTLP).
    pub bytes: u64,
}

/// Which missing indices a delete refuses, as Elasticsearch's `allow_no_indices` and
/// `ignore_unavailable` parameters say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteOptions {
    /// A wildcard expression matching no index is no error (Elasticsearch's default: true).
    pub allow_no_indices: bool,
    /// A named index that does not exist is skipped instead of refused (default: false).
    pub ignore_unavailable: bool,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions {
            allow_no_indices: true,
            ignore_unavailable: false,
        }
    }
}

/// Hits counted exactly up to this many, as Elasticsearch's `track_total_hits` default.
const TRACK_TOTAL_HITS: usize = 10_000;

#[derive(Clone)]
pub struct Searcher {
    reader: Arc<dyn LogReader>,
    /// Only [`Searcher::delete_indices`] writes, through it.
    deleter: Arc<dyn LogDeleter>,
    opts: SearchOptions,
}

impl Searcher {
    pub fn new<S: LogReader + LogDeleter + 'static>(
        store: Arc<S>,
        opts: SearchOptions,
    ) -> Searcher {
        Searcher {
            reader: store.clone(),
            deleter: store,
            opts,
        }
    }

    pub fn time_field(&self) -> &str {
        &self.opts.time_field
    }

    /// `POST /<target>/_search` with `body` (`{}` when none): the response object. Blocks on
    /// the store; call it off the async workers.
    pub fn search(&self, target: &str, body: &Value, now_ms: i64) -> Result<Value, EsError> {
        let started = std::time::Instant::now();
        let tf = self.opts.time_field.as_str();
        let body = body.as_object().cloned().unwrap_or_default();
        for k in body.keys() {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                return Err(EsError::Parse {
                    kind: "parsing_exception",
                    reason: format!("Unknown key for a START_OBJECT in [{k}]."),
                });
            }
        }
        let query = match body.get("query") {
            Some(q) => Query::parse(q, tf, now_ms)?,
            None => Query::MatchAll,
        };
        let aggs = match body.get("aggs").or(body.get("aggregations")) {
            Some(a) => aggs::parse(a, tf, now_ms)?,
            None => Vec::new(),
        };
        let size = usize_param(&body, "size", 10)?;
        let from = usize_param(&body, "from", 0)?;
        let ascending = sort_ascending(body.get("sort"), tf)?;
        let pattern = IndexPattern::parse(target);
        self.check_exists(&pattern)?;
        let (lo, hi) = query.time_bounds(tf);
        let q = LogQuery {
            matchers: vec![pattern.matcher()],
            start_ns: lo.map_or(i64::MIN, |ms| ms.saturating_mul(1_000_000)),
            end_ns: hi.map_or(i64::MAX, |ms| {
                ms.saturating_add(1).saturating_mul(1_000_000)
            }),
            contains: Vec::new(),
        };
        let direction = if ascending {
            Direction::Forward
        } else {
            Direction::Backward
        };
        let track_all =
            !aggs.is_empty() || body.get("track_total_hits") == Some(&Value::Bool(true));
        let mut read = 0usize;
        let mut total = 0usize;
        let mut hits: Vec<Document> = Vec::new();
        let mut matched: Vec<Document> = Vec::new();
        let mut over = false;
        self.reader.scan(&q, direction, &mut |r| {
            read += 1;
            if read > self.opts.max_documents {
                over = true;
                return ControlFlow::Break(());
            }
            let d = Document::from_record(&r, tf);
            if !pattern.matches(&d.index) || !query.matches(&d) {
                return ControlFlow::Continue(());
            }
            total += 1;
            if total > from && hits.len() < size {
                hits.push(d.clone());
            }
            if !aggs.is_empty() {
                matched.push(d);
            }
            if !track_all && hits.len() >= size && total >= TRACK_TOTAL_HITS {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if over {
            return Err(EsError::TooManyDocuments(self.opts.max_documents));
        }
        let relation = if !track_all && total >= TRACK_TOTAL_HITS {
            "gte"
        } else {
            "eq"
        };
        let source = SourceFilter::parse(body.get("_source"));
        let wanted_fields = requested_fields(body.get("fields"), body.get("docvalue_fields"));
        let hits: Vec<Value> = hits
            .iter()
            .map(|d| {
                let mut h = json!({
                    "_index": d.index,
                    "_id": d.id,
                    "_score": Value::Null,
                    "sort": [d.ts_ms()],
                });
                if let Some(src) = source.apply(d.source()) {
                    h["_source"] = src;
                }
                if !wanted_fields.is_empty() {
                    h["fields"] = fields_of(d, &wanted_fields, tf);
                }
                h
            })
            .collect();
        let mut out = json!({
            "took": started.elapsed().as_millis() as u64,
            "timed_out": false,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": total, "relation": relation},
                "max_score": Value::Null,
                "hits": hits,
            },
        });
        if !aggs.is_empty() {
            let refs: Vec<&Document> = matched.iter().collect();
            out["aggregations"] = aggs::compute(&aggs, &refs)?;
        }
        Ok(out)
    }

    /// A target naming a concrete index that has no documents is `index_not_found_exception`.
    fn check_exists(&self, pattern: &IndexPattern) -> Result<(), EsError> {
        let missing: Vec<&str> = pattern.concrete().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let known = self.index_names()?;
        match missing.into_iter().find(|m| !known.contains(*m)) {
            Some(m) => Err(EsError::IndexNotFound(m.to_owned())),
            None => Ok(()),
        }
    }

    fn index_names(&self) -> Result<BTreeSet<String>, EsError> {
        let m = IndexPattern::parse("*").matcher();
        Ok(self
            .reader
            .streams(&[m], i64::MIN, i64::MAX)?
            .iter()
            .filter_map(|l| l.get(INDEX_LABEL).map(str::to_owned))
            .collect())
    }

    /// The indices `target` matches, with their documents and disk bytes (see [`IndexInfo`]).
    pub fn indices(&self, target: &str) -> Result<Vec<IndexInfo>, EsError> {
        let pattern = IndexPattern::parse(target);
        let mut by_index: BTreeMap<String, (IndexInfo, f64)> = BTreeMap::new();
        for part in self.reader.usage(&[pattern.matcher()])? {
            for s in part.streams {
                let Some(name) = s.labels.get(INDEX_LABEL).filter(|n| pattern.matches(n)) else {
                    continue;
                };
                let (info, bytes) = by_index.entry(name.to_owned()).or_default();
                info.docs += s.docs;
                info.deleted += s.deleted;
                if part.docs > 0 {
                    *bytes +=
                        part.disk_bytes as f64 * (s.docs + s.deleted) as f64 / part.docs as f64;
                }
            }
        }
        by_index.retain(|_, (i, _)| i.docs > 0);
        if by_index.is_empty() && !pattern.is_wildcard() {
            if let Some(m) = pattern.concrete().next() {
                return Err(EsError::IndexNotFound(m.to_owned()));
            }
        }
        Ok(by_index
            .into_iter()
            .map(|(name, (info, bytes))| IndexInfo {
                name,
                bytes: bytes.round() as u64,
                ..info
            })
            .collect())
    }

    /// `DELETE /<target>`: deletes every document of the indices `target` matches (names,
    /// `*` wildcards, `-name` exclusions, `_all`), durably, in every partition; returns how
    /// many. A named index that does not exist is `index_not_found_exception` (unless
    /// `ignore_unavailable`), and so is a wildcard expression matching none when
    /// `allow_no_indices` is false; nothing is deleted then. Elasticsearch 8 refuses
    /// wildcards here unless `action.destructive_requires_name` is false; runbooks deleting
    /// old indices by pattern are why novamon takes them, as Elasticsearch 7 did by default.
    pub fn delete_indices(&self, target: &str, opts: DeleteOptions) -> Result<u64, EsError> {
        let pattern = IndexPattern::parse(target);
        let known = self.index_names()?;
        if !opts.ignore_unavailable {
            if let Some(m) = pattern.concrete().find(|m| !known.contains(*m)) {
                return Err(EsError::IndexNotFound(m.to_owned()));
            }
        }
        if !opts.allow_no_indices {
            if let Some(w) = pattern
                .wildcards()
                .find(|w| !known.iter().any(|k| crate::index::glob(w, k)))
            {
                return Err(EsError::IndexNotFound(w.to_owned()));
            }
        }
        Ok(self.deleter.delete_streams(&|labels| {
            labels
                .get(INDEX_LABEL)
                .is_some_and(|name| pattern.matches(name))
        })?)
    }

    /// Each matching index's fields and their Elasticsearch types, from its newest
    /// `sample` documents (dynamic mapping: strings are `text` with a `keyword` sub-field,
    /// numbers `long` or `float`, the time field `date`).
    pub fn mappings(
        &self,
        target: &str,
        sample: usize,
    ) -> Result<BTreeMap<String, BTreeMap<String, &'static str>>, EsError> {
        let mut out: BTreeMap<String, BTreeMap<String, &'static str>> = BTreeMap::new();
        for info in self.indices(target)? {
            let q = LogQuery {
                matchers: vec![IndexPattern::parse(&info.name).matcher()],
                start_ns: i64::MIN,
                end_ns: i64::MAX,
                contains: Vec::new(),
            };
            let fields = out.entry(info.name.clone()).or_default();
            fields.insert(self.opts.time_field.clone(), "date");
            let mut n = 0;
            self.reader.scan(&q, Direction::Backward, &mut |r| {
                let d = Document::from_record(&r, &self.opts.time_field);
                for (k, v) in &d.fields {
                    let ty = match v {
                        _ if *k == self.opts.time_field => "date",
                        Value::Number(n) if n.is_f64() => "float",
                        Value::Number(_) => "long",
                        Value::Bool(_) => "boolean",
                        _ => "text",
                    };
                    fields.entry(k.clone()).or_insert(ty);
                }
                n += 1;
                if n >= sample {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        }
        Ok(out)
    }
}

/// What a search body may hold; anything else is refused as Elasticsearch refuses it.
const KNOWN_KEYS: [&str; 22] = [
    "query",
    "aggs",
    "aggregations",
    "size",
    "from",
    "sort",
    "_source",
    "fields",
    "docvalue_fields",
    "script_fields",
    "highlight",
    "track_total_hits",
    "timeout",
    "stored_fields",
    "version",
    "seq_no_primary_term",
    "explain",
    "track_scores",
    "min_score",
    "terminate_after",
    "search_after",
    "runtime_mappings",
];

fn usize_param(body: &Map<String, Value>, key: &str, default: usize) -> Result<usize, EsError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => crate::doc::number(v)
            .filter(|n| *n >= 0.0)
            .map(|n| n as usize)
            .ok_or_else(|| {
                EsError::IllegalArgument(format!("[{key}] must be a non-negative number"))
            }),
    }
}

/// Hits come in time order: descending unless the sort asks for the time field ascending.
/// Sorting on other fields is refused rather than silently answered in time order.
fn sort_ascending(sort: Option<&Value>, tf: &str) -> Result<bool, EsError> {
    let mut keys: Vec<(String, Option<String>)> = Vec::new();
    let mut add = |v: &Value| match v {
        Value::String(s) => {
            let (f, o) = s
                .split_once(':')
                .map_or((s.as_str(), None), |(f, o)| (f, Some(o)));
            keys.push((f.to_owned(), o.map(str::to_owned)));
        }
        Value::Object(m) => {
            for (f, spec) in m {
                let order = match spec {
                    Value::String(o) => Some(o.clone()),
                    Value::Object(o) => o.get("order").and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                };
                keys.push((f.clone(), order));
            }
        }
        _ => {}
    };
    match sort {
        None => return Ok(false),
        Some(Value::Array(a)) => a.iter().for_each(&mut add),
        Some(v) => add(v),
    }
    let mut ascending = false;
    for (f, order) in keys {
        match f.as_str() {
            "_doc" | "_score" => {}
            f if f == tf => ascending = order.as_deref() == Some("asc"),
            other => {
                return Err(EsError::IllegalArgument(format!(
                    "sorting on [{other}] is not supported; only on [{tf}]"
                )))
            }
        }
    }
    Ok(ascending)
}

/// `_source`: `false`, a field list, or `{includes, excludes}` (with `*` wildcards).
struct SourceFilter {
    enabled: bool,
    includes: Vec<String>,
    excludes: Vec<String>,
}

impl SourceFilter {
    fn parse(v: Option<&Value>) -> SourceFilter {
        let list = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            }
        };
        match v {
            Some(Value::Bool(b)) => SourceFilter {
                enabled: *b,
                includes: Vec::new(),
                excludes: Vec::new(),
            },
            Some(Value::Object(o)) => SourceFilter {
                enabled: true,
                includes: list(o.get("includes").or(o.get("include"))),
                excludes: list(o.get("excludes").or(o.get("exclude"))),
            },
            other => SourceFilter {
                enabled: true,
                includes: list(other),
                excludes: Vec::new(),
            },
        }
    }

    fn apply(&self, source: Value) -> Option<Value> {
        if !self.enabled {
            return None;
        }
        if self.includes.is_empty() && self.excludes.is_empty() {
            return Some(source);
        }
        let mut flat = BTreeMap::new();
        crate::doc::flatten("", &source, &mut flat);
        let hit = |pats: &[String], k: &str| {
            pats.iter()
                .any(|p| crate::index::glob(p, k) || k.starts_with(&format!("{p}.")))
        };
        let kept: BTreeMap<String, Value> = flat
            .into_iter()
            .filter(|(k, _)| {
                (self.includes.is_empty() || hit(&self.includes, k)) && !hit(&self.excludes, k)
            })
            .collect();
        let d = Document {
            ts_ns: 0,
            index: String::new(),
            id: String::new(),
            fields: kept,
        };
        Some(d.source())
    }
}

/// Field names of `fields` (strings or `{field, format}`) and `docvalue_fields`.
fn requested_fields(fields: Option<&Value>, docvalue: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    for v in [fields, docvalue].into_iter().flatten() {
        if let Value::Array(a) = v {
            for f in a {
                match f {
                    Value::String(s) => out.push(s.clone()),
                    Value::Object(o) => {
                        if let Some(s) = o.get("field").and_then(Value::as_str) {
                            out.push(s.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `fields` of a hit: each requested field's values as an array, the time field with
/// nanoseconds (what Grafana asks for with `strict_date_optional_time_nanos`).
fn fields_of(d: &Document, wanted: &[String], tf: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in &d.fields {
        if !wanted.iter().any(|w| crate::index::glob(w, k)) {
            continue;
        }
        let v = if k == tf {
            json!(rfc3339_nanos(d.ts_ns))
        } else {
            v.clone()
        };
        out.insert(
            k.clone(),
            match v {
                Value::Array(a) => Value::Array(a),
                v => json!([v]),
            },
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::logs::{LogOptions, LogRecord, LogStore};
    use storage::Labels;

    fn store() -> (tempfile::TempDir, Arc<LogStore>) {
        let dir = tempfile::tempdir().unwrap();
        // The fixed 2023 timestamps must outlive retention.
        let opts = LogOptions {
            retention: std::time::Duration::from_secs(100 * 365 * 86_400),
            ..LogOptions::default()
        };
        let s = Arc::new(LogStore::open(dir.path(), opts).unwrap());
        let rec = |ts_ms: i64, index: &str, line: &str, host: &str| LogRecord {
            ts_ns: ts_ms * 1_000_000,
            labels: Labels::from_pairs([("index", index), ("host", host)]),
            line: line.into(),
            metadata: vec![(
                "status".into(),
                if line.contains("fail") { "500" } else { "200" }.into(),
            )],
        };
        let now = 1_700_000_000_000;
        s.append(&[
            rec(now, "app", "login ok", "a"),
            rec(now + 1000, "app", "login failed", "b"),
            rec(now + 2000, "app", "logout ok", "a"),
            rec(now + 3000, "other", "payment failed", "a"),
        ])
        .unwrap();
        s.sync().unwrap();
        (dir, s)
    }

    #[test]
    fn search_hits_sort_and_aggregate() {
        let (_d, s) = store();
        let se = Searcher::new(s, SearchOptions::default());
        let now = 1_700_000_000_000i64;
        let body = json!({
            "size": 2,
            "query": {"bool": {"filter": [
                {"range": {"@timestamp": {"gte": now, "lte": now + 5000, "format": "epoch_millis"}}},
                {"query_string": {"query": "login OR logout"}}
            ]}},
            "sort": [{"@timestamp": {"order": "desc", "unmapped_type": "boolean"}}, {"_doc": {"order": "desc"}}],
            "aggs": {"h": {"terms": {"field": "host"}}},
            "fields": [{"field": "@timestamp", "format": "strict_date_optional_time_nanos"}],
        });
        let out = se.search("app", &body, now).unwrap();
        assert_eq!(out["hits"]["total"]["value"], 3);
        let hits = out["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0]["_source"]["message"], "logout ok");
        assert_eq!(hits[0]["_index"], "app");
        assert_eq!(hits[0]["sort"][0], now + 2000);
        assert_eq!(
            hits[0]["fields"]["@timestamp"][0],
            "2023-11-14T22:13:22.000000000Z"
        );
        assert_eq!(out["aggregations"]["h"]["buckets"][0]["key"], "a");
        assert_eq!(out["aggregations"]["h"]["buckets"][0]["doc_count"], 2);
        let asc = se
            .search(
                "a*,-nothing",
                &json!({"sort": {"@timestamp": "asc"}, "_source": ["message"]}),
                now,
            )
            .unwrap();
        assert_eq!(
            asc["hits"]["hits"][0]["_source"],
            json!({"message": "login ok"})
        );
        let failed = se
            .search("*", &json!({"query": {"term": {"status": "500"}}}), now)
            .unwrap();
        assert_eq!(failed["hits"]["total"]["value"], 2);
    }

    #[test]
    fn missing_index_and_bad_bodies() {
        let (_d, s) = store();
        let se = Searcher::new(s, SearchOptions::default());
        assert_eq!(se.search("nope", &json!({}), 0).unwrap_err().status(), 404);
        assert_eq!(
            se.search("nope*", &json!({}), 0).unwrap()["hits"]["total"]["value"],
            0
        );
        assert_eq!(
            se.search("app", &json!({"qeury": {}}), 0)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            se.search("app", &json!({"sort": ["host"]}), 0)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn listings() {
        let (_d, s) = store();
        let se = Searcher::new(s, SearchOptions::default());
        let idx = se.indices("*").unwrap();
        assert_eq!(
            idx.iter()
                .map(|i| (i.name.as_str(), i.docs))
                .collect::<Vec<_>>(),
            [("app", 3), ("other", 1)]
        );
        assert!(idx[0].bytes > 0);
        let m = se.mappings("app", 100).unwrap();
        assert_eq!(m["app"]["@timestamp"], "date");
        assert_eq!(m["app"]["message"], "text");
        assert_eq!(se.indices("nope").unwrap_err().status(), 404);
    }

    fn listed(se: &Searcher) -> Vec<(String, u64, u64)> {
        se.indices("*")
            .unwrap()
            .into_iter()
            .map(|i| (i.name, i.docs, i.deleted))
            .collect()
    }

    #[test]
    fn deleting_indices_resolves_patterns_as_elasticsearch_does() {
        let (_d, s) = store();
        let se = Searcher::new(s.clone(), SearchOptions::default());
        let strict = DeleteOptions {
            allow_no_indices: false,
            ignore_unavailable: false,
        };
        // A named index that does not exist refuses the whole request: nothing deleted.
        let e = se
            .delete_indices("other,nope", DeleteOptions::default())
            .unwrap_err();
        assert_eq!((e.status(), e.kind()), (404, "index_not_found_exception"));
        assert_eq!(e.to_string(), "no such index [nope]");
        // A wildcard matching nothing is no error by default, and one under
        // `allow_no_indices=false`.
        assert_eq!(
            se.delete_indices("nope*", DeleteOptions::default())
                .unwrap(),
            0
        );
        let e = se.delete_indices("o*,nope*", strict).unwrap_err();
        assert_eq!(e.to_string(), "no such index [nope*]");
        assert_eq!(listed(&se), [("app".into(), 3, 0), ("other".into(), 1, 0)]);
        // `ignore_unavailable` skips the missing name and deletes the rest.
        let skip = DeleteOptions {
            ignore_unavailable: true,
            ..DeleteOptions::default()
        };
        assert_eq!(se.delete_indices("nope,other", skip).unwrap(), 1);
        assert_eq!(listed(&se), [("app".into(), 3, 0)]);
        assert_eq!(se.indices("other").unwrap_err().status(), 404);
        assert_eq!(se.search("other", &json!({}), 0).unwrap_err().status(), 404);
        // Exclusions keep their indices.
        assert_eq!(se.delete_indices("*,-app", strict).unwrap(), 0);
        assert_eq!(se.delete_indices("_all", strict).unwrap(), 3);
        assert!(listed(&se).is_empty());
        assert_eq!(
            se.search("*", &json!({}), 0).unwrap()["hits"]["total"]["value"],
            0
        );
        // Written again, the index holds its new documents only: the segment whose
        // documents were all deleted was dropped at the delete's commit.
        s.append(&[LogRecord {
            ts_ns: 1_700_000_000_000_000_000,
            labels: Labels::from_pairs([("index", "app")]),
            line: "again".into(),
            metadata: vec![],
        }])
        .unwrap();
        s.sync().unwrap();
        assert_eq!(listed(&se), [("app".into(), 1, 0)]);
    }

    #[test]
    fn index_sizes_are_the_disk_bytes_apportioned_by_documents() {
        let (d, s) = store();
        let se = Searcher::new(s, SearchOptions::default());
        let idx = se.indices("*").unwrap();
        let disk: u64 = std::fs::read_dir(d.path().join("index"))
            .unwrap()
            .flat_map(|day| std::fs::read_dir(day.unwrap().path()).unwrap())
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum();
        // One partition, its four documents all indices': 3/4 and 1/4 of its files.
        let (app, other) = (idx[0].bytes as f64, idx[1].bytes as f64);
        assert!(
            (app + other - disk as f64).abs() <= 1.0,
            "{app} + {other} vs {disk}"
        );
        assert!((app - 3.0 * other).abs() <= 2.0, "{app} vs {other}");
        // Disk bytes, not the lines' bytes (tens of bytes here).
        assert!(other > 1000.0, "{other}");
    }
}
