//! The query DSL: the model of the queries Grafana, Kibana and runbooks send (`bool`,
//! `range`, `term`, `terms`, `match`, `match_phrase`, `match_all`, `exists`, `prefix`,
//! `wildcard`, `query_string`, `simple_query_string`), read from their JSON, and their
//! evaluation on one [`Document`]. Owns what a query means; which records are read to find
//! matches is `search`'s business (it takes the time bounds from [`Query::time_bounds`]).
//!
//! Every string is both `text` and `keyword` here, as Elasticsearch's dynamic mapping makes
//! it: `term` compares whole values, full-text queries (`match`, `query_string`) compare the
//! lowercased alphanumeric tokens of the value.

use chrono::DateTime;
use serde_json::{Map, Value};

use crate::doc::{number, text, tokens, Document};
use crate::index::glob_chars;
use crate::EsError;

#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    MatchAll,
    MatchNone,
    Bool(Box<BoolQuery>),
    /// Whole-value equality with any of `values` (`term`, `terms`).
    Term {
        field: String,
        values: Vec<String>,
    },
    /// Full text: with `all`, every token must be in the field, else any (`None` = any field).
    Match {
        field: Option<String>,
        tokens: Vec<String>,
        all: bool,
    },
    /// These tokens, consecutive, in the field (`None` = any field).
    Phrase {
        field: Option<String>,
        tokens: Vec<String>,
    },
    /// `*` and `?` wildcards against the field's tokens, or against its whole value.
    Wildcard {
        field: Option<String>,
        pattern: String,
    },
    Exists {
        field: String,
    },
    Range(Range),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoolQuery {
    pub must: Vec<Query>,
    pub filter: Vec<Query>,
    pub should: Vec<Query>,
    pub must_not: Vec<Query>,
    pub minimum_should_match: Option<usize>,
}

/// Bounds on a field; on the time field they are epoch milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Range {
    pub field: String,
    /// A range on the time field compares the record's timestamp (epoch ms).
    pub time: bool,
    pub gt: Option<Bound>,
    pub gte: Option<Bound>,
    pub lt: Option<Bound>,
    pub lte: Option<Bound>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Number(f64),
    Text(String),
}

impl Query {
    /// Reads a query object. `time_field` and `now_ms` resolve dates in ranges on it.
    pub fn parse(v: &Value, time_field: &str, now_ms: i64) -> Result<Query, EsError> {
        Parser { time_field, now_ms }.query(v)
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Document) -> bool {
        match self {
            Query::MatchAll => true,
            Query::MatchNone => false,
            Query::Bool(b) => b.matches(doc),
            Query::Term { field, values } => doc
                .get(field)
                .is_some_and(|v| each_scalar(&v).any(|s| values.iter().any(|x| *x == text(s)))),
            Query::Match { field, tokens, all } => {
                let have = field_tokens(doc, field.as_deref());
                let found = |t: &String| have.iter().any(|h| h.contains(t));
                if *all {
                    tokens.iter().all(found)
                } else {
                    tokens.iter().any(found)
                }
            }
            Query::Phrase { field, tokens } => field_tokens(doc, field.as_deref())
                .iter()
                .any(|have| tokens.is_empty() || have.windows(tokens.len()).any(|w| w == tokens)),
            Query::Wildcard { field, pattern } => {
                let p: Vec<char> = pattern.chars().collect();
                let lower: Vec<char> = pattern.to_lowercase().chars().collect();
                let hit = |s: &str, p: &[char]| {
                    glob_chars(p, &s.chars().collect::<Vec<_>>(), '*', Some('?'))
                };
                values_of(doc, field.as_deref())
                    .iter()
                    .any(|v| hit(v, &p) || tokens(v).iter().any(|t| hit(t, &lower)))
            }
            Query::Exists { field } => doc.get(field).is_some_and(|v| !v.is_null()),
            Query::Range(r) => r.matches(doc),
        }
    }

    /// The time range (epoch ms, inclusive) every match lies in, from ranges on the time
    /// field that every match must satisfy: what the store is asked to read.
    pub fn time_bounds(&self, time_field: &str) -> (Option<i64>, Option<i64>) {
        match self {
            Query::Range(r) if r.time && r.field == time_field => {
                let ms = |b: &Option<Bound>| match b {
                    Some(Bound::Number(n)) => Some(*n as i64),
                    _ => None,
                };
                let lo = ms(&r.gte).or(ms(&r.gt).map(|x| x + 1));
                let hi = ms(&r.lte).or(ms(&r.lt).map(|x| x - 1));
                (lo, hi)
            }
            Query::Bool(b) => {
                let mut lo: Option<i64> = None;
                let mut hi: Option<i64> = None;
                for q in b.must.iter().chain(&b.filter) {
                    let (l, h) = q.time_bounds(time_field);
                    lo = max_opt(lo, l);
                    hi = min_opt(hi, h);
                }
                (lo, hi)
            }
            _ => (None, None),
        }
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl BoolQuery {
    fn matches(&self, doc: &Document) -> bool {
        if !self.must.iter().chain(&self.filter).all(|q| q.matches(doc)) {
            return false;
        }
        if self.must_not.iter().any(|q| q.matches(doc)) {
            return false;
        }
        // Elasticsearch: without must or filter clauses, at least one should clause.
        let required = self.minimum_should_match.unwrap_or(usize::from(
            self.must.is_empty() && self.filter.is_empty() && !self.should.is_empty(),
        ));
        required == 0 || self.should.iter().filter(|q| q.matches(doc)).count() >= required
    }
}

impl Range {
    fn matches(&self, doc: &Document) -> bool {
        let Some(v) = doc.get(&self.field) else {
            return false;
        };
        let cmp = |b: &Bound| -> Option<std::cmp::Ordering> {
            match b {
                Bound::Number(n) => {
                    let x = if self.time {
                        Some(doc.ts_ms() as f64)
                    } else {
                        number(&v)
                    }?;
                    x.partial_cmp(n)
                }
                Bound::Text(s) => Some(text(&v).as_str().cmp(s.as_str())),
            }
        };
        use std::cmp::Ordering::*;
        let ok = |b: &Option<Bound>, want: &[std::cmp::Ordering]| {
            b.as_ref()
                .is_none_or(|b| cmp(b).is_some_and(|o| want.contains(&o)))
        };
        ok(&self.gt, &[Greater])
            && ok(&self.gte, &[Greater, Equal])
            && ok(&self.lt, &[Less])
            && ok(&self.lte, &[Less, Equal])
    }
}

/// The scalars of a value: itself, or an array's elements.
fn each_scalar(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Array(a) => Box::new(a.iter()),
        v => Box::new(std::iter::once(v)),
    }
}

/// The text of the named field's values, or of every field's.
fn values_of(doc: &Document, field: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |v: &Value| out.extend(each_scalar(v).map(text));
    match field {
        Some(f) if f != "*" => {
            if let Some(v) = doc.get(f) {
                push(&v);
            }
        }
        _ => doc.fields.values().for_each(push),
    }
    out
}

fn field_tokens(doc: &Document, field: Option<&str>) -> Vec<Vec<String>> {
    values_of(doc, field).iter().map(|v| tokens(v)).collect()
}

struct Parser<'a> {
    time_field: &'a str,
    now_ms: i64,
}

impl Parser<'_> {
    fn query(&self, v: &Value) -> Result<Query, EsError> {
        let obj = v
            .as_object()
            .ok_or_else(|| EsError::parse("[_na] query malformed, must start with start_object"))?;
        let mut it = obj.iter();
        let (Some((kind, body)), None) = (it.next(), it.next()) else {
            return Err(EsError::parse(
                "[_na] query malformed, a query object holds exactly one query",
            ));
        };
        match kind.as_str() {
            "match_all" => Ok(Query::MatchAll),
            "match_none" => Ok(Query::MatchNone),
            "bool" => self.bool(body),
            "term" => {
                let (field, v) = single_field(kind, body)?;
                let v = v.get("value").unwrap_or(v);
                Ok(Query::Term {
                    field,
                    values: vec![text(v)],
                })
            }
            "terms" => {
                let obj = body.as_object().ok_or_else(|| malformed(kind))?;
                let (field, values) = obj
                    .iter()
                    .find(|(k, _)| k.as_str() != "boost")
                    .ok_or_else(|| malformed(kind))?;
                let values = values.as_array().ok_or_else(|| {
                    EsError::parse("[terms] query does not support a single value")
                })?;
                Ok(Query::Term {
                    field: field.clone(),
                    values: values.iter().map(text).collect(),
                })
            }
            "match" | "match_phrase" | "match_phrase_prefix" => {
                let (field, v) = single_field(kind, body)?;
                let (q, all) = match v {
                    Value::Object(o) => (
                        o.get("query").ok_or_else(|| malformed(kind))?,
                        o.get("operator")
                            .and_then(Value::as_str)
                            .is_some_and(|op| op.eq_ignore_ascii_case("and")),
                    ),
                    v => (v, false),
                };
                let tokens = tokens(&text(q));
                Ok(if kind == "match" {
                    Query::Match {
                        field: Some(field),
                        tokens,
                        all,
                    }
                } else {
                    Query::Phrase {
                        field: Some(field),
                        tokens,
                    }
                })
            }
            "prefix" | "wildcard" => {
                let (field, v) = single_field(kind, body)?;
                let v = v.get("value").or_else(|| v.get("wildcard")).unwrap_or(v);
                let mut pattern = text(v);
                if kind == "prefix" {
                    pattern.push('*');
                }
                Ok(Query::Wildcard {
                    field: Some(field),
                    pattern,
                })
            }
            "exists" => Ok(Query::Exists {
                field: body
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| EsError::parse("[exists] must be provided with a [field]"))?
                    .to_owned(),
            }),
            "range" => self.range(body),
            "query_string" | "simple_query_string" => {
                let q = body.get("query").and_then(Value::as_str).ok_or_else(|| {
                    EsError::parse(format!("[{kind}] must be provided with a [query]"))
                })?;
                let default_field =
                    body.get("default_field")
                        .and_then(Value::as_str)
                        .or_else(|| {
                            body.get("fields")
                                .and_then(Value::as_array)
                                .filter(|f| f.len() == 1)
                                .and_then(|f| f[0].as_str())
                        });
                let and = body
                    .get("default_operator")
                    .and_then(Value::as_str)
                    .is_some_and(|op| op.eq_ignore_ascii_case("and"));
                crate::lucene::parse(q, default_field, and, self.time_field, self.now_ms)
            }
            other => Err(EsError::Parse {
                kind: "parsing_exception",
                reason: format!("unknown query [{other}]"),
            }),
        }
    }

    fn bool(&self, body: &Value) -> Result<Query, EsError> {
        let obj = body.as_object().ok_or_else(|| malformed("bool"))?;
        let mut b = BoolQuery::default();
        for (k, v) in obj {
            let clauses = match k.as_str() {
                "must" => &mut b.must,
                "filter" => &mut b.filter,
                "should" => &mut b.should,
                "must_not" => &mut b.must_not,
                "minimum_should_match" => {
                    b.minimum_should_match = match v {
                        Value::Number(n) => n.as_u64().map(|n| n as usize),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    };
                    continue;
                }
                "boost" | "_name" | "adjust_pure_negative" => continue,
                other => {
                    return Err(EsError::parse(format!(
                        "[bool] query does not support [{other}]"
                    )))
                }
            };
            // A clause list may be one query object or an array of them (Grafana sends both).
            match v {
                Value::Array(a) => {
                    for q in a {
                        clauses.push(self.query(q)?);
                    }
                }
                q => clauses.push(self.query(q)?),
            }
        }
        Ok(Query::Bool(Box::new(b)))
    }

    fn range(&self, body: &Value) -> Result<Query, EsError> {
        let (field, spec) = single_field("range", body)?;
        let spec = spec.as_object().ok_or_else(|| malformed("range"))?;
        let format = spec.get("format").and_then(Value::as_str);
        let is_time = field == self.time_field;
        let bound = |key: &str, up: bool| -> Result<Option<Bound>, EsError> {
            let Some(v) = spec.get(key).filter(|v| !v.is_null()) else {
                return Ok(None);
            };
            if is_time {
                date_ms(v, format, self.now_ms, up).map(|ms| Some(Bound::Number(ms as f64)))
            } else {
                Ok(Some(match number(v) {
                    Some(n) => Bound::Number(n),
                    None => Bound::Text(text(v)),
                }))
            }
        };
        let mut r = Range {
            field: field.clone(),
            time: is_time,
            gt: bound("gt", false)?,
            gte: bound("gte", false)?.or(bound("from", false)?),
            lt: bound("lt", true)?,
            lte: bound("lte", true)?.or(bound("to", true)?),
        };
        if spec.get("include_lower") == Some(&Value::Bool(false)) {
            r.gt = r.gte.take();
        }
        if spec.get("include_upper") == Some(&Value::Bool(false)) {
            r.lt = r.lte.take();
        }
        Ok(Query::Range(r))
    }
}

fn malformed(kind: &str) -> EsError {
    EsError::parse(format!("[{kind}] query malformed"))
}

/// `{"field": spec}`, the shape of most leaf queries.
fn single_field<'a>(kind: &str, body: &'a Value) -> Result<(String, &'a Value), EsError> {
    let obj: &Map<String, Value> = body.as_object().ok_or_else(|| malformed(kind))?;
    let mut it = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "boost" | "_name"));
    match (it.next(), it.next()) {
        (Some((f, v)), None) => Ok((f.clone(), v)),
        _ => Err(EsError::parse(format!(
            "[{kind}] query doesn't support multiple fields"
        ))),
    }
}

/// A date as epoch milliseconds: a number or numeric string in `epoch_millis` (or
/// `epoch_second`) format, RFC 3339, or date math from `now` (`now-15m`, `now/d`); `up`
/// rounds `/unit` up, as an upper bound does.
pub fn date_ms(v: &Value, format: Option<&str>, now_ms: i64, up: bool) -> Result<i64, EsError> {
    let bad = || EsError::Parse {
        kind: "parse_exception",
        reason: format!(
            "failed to parse date field [{}] with format [{}]",
            text(v),
            format.unwrap_or("strict_date_optional_time||epoch_millis")
        ),
    };
    let scale = if format.is_some_and(|f| f.contains("epoch_second")) {
        1000.0
    } else {
        1.0
    };
    if let Some(n) = number(v) {
        return Ok((n * scale) as i64);
    }
    let s = v.as_str().ok_or_else(bad)?;
    if let Some(rest) = s.strip_prefix("now") {
        return date_math(now_ms, rest, up).ok_or_else(bad);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d
            .and_hms_opt(0, 0, 0)
            .ok_or_else(bad)?
            .and_utc()
            .timestamp_millis();
        return Ok(if up { t + 86_400_000 - 1 } else { t });
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc().timestamp_millis());
    }
    Err(bad())
}

fn unit_ms(u: char) -> Option<i64> {
    Some(match u {
        's' => 1000,
        'm' => 60_000,
        'h' | 'H' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    })
}

fn date_math(mut t: i64, mut rest: &str, up: bool) -> Option<i64> {
    while !rest.is_empty() {
        let op = rest.chars().next()?;
        rest = &rest[1..];
        if op == '/' {
            let u = unit_ms(rest.chars().next()?)?;
            rest = &rest[1..];
            t = t.div_euclid(u) * u + if up { u - 1 } else { 0 };
            continue;
        }
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let n: i64 = if digits == 0 {
            1
        } else {
            rest[..digits].parse().ok()?
        };
        rest = &rest[digits..];
        let u = unit_ms(rest.chars().next()?)?;
        rest = &rest[1..];
        t = match op {
            '+' => t + n * u,
            '-' => t - n * u,
            _ => return None,
        };
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn doc(fields: Value) -> Document {
        let mut f = BTreeMap::new();
        crate::doc::flatten("", &fields, &mut f);
        f.insert("@timestamp".into(), json!("2023-11-14T22:13:20.000Z"));
        Document {
            ts_ns: 1_700_000_000_000_000_000,
            index: "app".into(),
            id: "1".into(),
            fields: f,
        }
    }

    fn q(v: Value) -> Query {
        Query::parse(&v, "@timestamp", 1_700_000_100_000).unwrap()
    }

    #[test]
    fn grafana_bool_filter_range_and_query_string() {
        let d = doc(json!({"message": "GET /login failed", "status": "500", "host": "web-1"}));
        let query = q(json!({"bool": {"filter": [
            {"range": {"@timestamp": {"gte": 1_699_999_999_000i64, "lte": 1_700_000_001_000i64, "format": "epoch_millis"}}},
            {"query_string": {"analyze_wildcard": true, "query": "failed AND host:web-1"}}
        ]}}));
        assert!(query.matches(&d));
        assert_eq!(
            query.time_bounds("@timestamp"),
            (Some(1_699_999_999_000), Some(1_700_000_001_000))
        );
        let later = q(json!({"bool": {"filter": {"range": {"@timestamp": {"gte": "now-1m"}}}}}));
        assert!(!later.matches(&d));
    }

    #[test]
    fn leaf_queries() {
        let d =
            doc(json!({"message": "Connection Reset by peer", "status": 500, "tags": ["a", "b"]}));
        assert!(q(json!({"term": {"status": 500}})).matches(&d));
        assert!(q(json!({"terms": {"tags": ["x", "b"]}})).matches(&d));
        assert!(!q(json!({"term": {"message": "reset"}})).matches(&d));
        assert!(q(json!({"match": {"message": "reset nothing"}})).matches(&d));
        assert!(
            !q(json!({"match": {"message": {"query": "reset nothing", "operator": "and"}}}))
                .matches(&d)
        );
        assert!(q(json!({"match_phrase": {"message": "reset by"}})).matches(&d));
        assert!(!q(json!({"match_phrase": {"message": "by reset"}})).matches(&d));
        assert!(q(json!({"exists": {"field": "status"}})).matches(&d));
        assert!(!q(json!({"exists": {"field": "nope"}})).matches(&d));
        assert!(q(json!({"range": {"status": {"gte": 400, "lt": 501}}})).matches(&d));
        assert!(q(json!({"wildcard": {"message": "conn*"}})).matches(&d));
        assert!(q(json!({"prefix": {"message.keyword": "Connection"}})).matches(&d));
        assert!(q(json!({"bool": {"must_not": {"term": {"status": 404}}}})).matches(&d));
        assert!(!q(json!({"bool": {"should": [{"term": {"status": 404}}]}})).matches(&d));
    }

    #[test]
    fn malformed_queries_are_parsing_exceptions() {
        for bad in [
            json!({"nope": {}}),
            json!({"term": {"a": 1, "b": 2}}),
            json!([1]),
            json!({"bool": {"x": []}}),
        ] {
            let e = Query::parse(&bad, "@timestamp", 0).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    #[test]
    fn date_math_rounds() {
        let now = 1_700_000_123_456;
        assert_eq!(
            date_ms(&json!("now-1h"), None, now, false).unwrap(),
            now - 3_600_000
        );
        assert_eq!(
            date_ms(&json!("now/d"), None, now, false).unwrap(),
            1_699_920_000_000
        );
        assert_eq!(
            date_ms(&json!("now/d"), None, now, true).unwrap(),
            1_700_006_399_999
        );
        assert_eq!(
            date_ms(&json!("1700000000"), Some("epoch_second"), 0, false).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            date_ms(&json!("2023-11-14T22:13:20Z"), None, 0, false).unwrap(),
            1_700_000_000_000
        );
        assert!(date_ms(&json!("yesterday"), None, 0, false).is_err());
    }
}
