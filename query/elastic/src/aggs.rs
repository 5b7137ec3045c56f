//! Aggregations over the matching documents, answered in Elasticsearch's shapes: bucket
//! aggregations `date_histogram` (`fixed_interval`, `calendar_interval` up to a week,
//! `min_doc_count`, `extended_bounds`, `format: epoch_millis`), `terms` (`size`, `order` by
//! `_count`, `_key` or a metric sub-aggregation, `min_doc_count`), `histogram`, `filters`;
//! metric aggregations `avg`, `min`, `max`, `sum`, `value_count`, `cardinality`,
//! `percentiles`, `stats`, `extended_stats`. Owns their parsing and computation; which
//! documents match is the caller's.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use crate::doc::{number, rfc3339_millis, text, Document};
use crate::dsl::{date_ms, Query};
use crate::EsError;

/// Buckets one request may build, as Elasticsearch's `search.max_buckets` default.
pub const MAX_BUCKETS: usize = 65_536;

#[derive(Clone, Debug, PartialEq)]
pub struct Agg {
    pub name: String,
    pub kind: Kind,
    pub subs: Vec<Agg>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    DateHistogram {
        field: String,
        interval_ms: i64,
        min_doc_count: u64,
        bounds: Option<(i64, i64)>,
        epoch_millis: bool,
    },
    Histogram {
        field: String,
        interval: f64,
        min_doc_count: u64,
        bounds: Option<(f64, f64)>,
    },
    Terms {
        field: String,
        size: usize,
        order: Order,
        min_doc_count: u64,
    },
    Filters(Vec<(String, Query)>),
    Metric {
        field: String,
        metric: Metric,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    Avg,
    Min,
    Max,
    Sum,
    ValueCount,
    Cardinality,
    Percentiles(Vec<f64>),
    Stats,
    ExtendedStats,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    /// `_count`, `_key` (`_term`) or a metric sub-aggregation's name.
    pub by: String,
    pub desc: bool,
}

/// Reads the `aggs` (or `aggregations`) object of a request.
pub fn parse(v: &Value, time_field: &str, now_ms: i64) -> Result<Vec<Agg>, EsError> {
    let obj = v
        .as_object()
        .ok_or_else(|| EsError::parse("aggregations must be an object"))?;
    let mut out = Vec::new();
    for (name, spec) in obj {
        let spec = spec
            .as_object()
            .ok_or_else(|| EsError::parse(format!("aggregation [{name}] must be an object")))?;
        let mut kind = None;
        let mut subs = Vec::new();
        for (k, body) in spec {
            match k.as_str() {
                "aggs" | "aggregations" => subs = parse(body, time_field, now_ms)?,
                "meta" => {}
                _ if kind.is_some() => {
                    return Err(EsError::parse(format!(
                        "Found two aggregation type definitions in [{name}]: [{k}]"
                    )))
                }
                _ => kind = Some(parse_kind(name, k, body, time_field, now_ms)?),
            }
        }
        let kind = kind.ok_or_else(|| {
            EsError::parse(format!("Missing definition for aggregation [{name}]"))
        })?;
        out.push(Agg {
            name: name.clone(),
            kind,
            subs,
        });
    }
    Ok(out)
}

fn field_of(name: &str, body: &Value) -> Result<String, EsError> {
    body.get("field")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            EsError::IllegalArgument(format!(
                "Required one of fields [field, script], but none were specified in [{name}]"
            ))
        })
}

/// `1000ms`, `10s`, `1m`, `1h`, `1d`, `1w`, or the calendar names Elasticsearch accepts.
pub fn interval_ms(s: &str) -> Option<i64> {
    let named = match s {
        "second" | "1s" => Some(1000),
        "minute" | "1m" => Some(60_000),
        "hour" | "1h" => Some(3_600_000),
        "day" | "1d" => Some(86_400_000),
        "week" | "1w" => Some(7 * 86_400_000),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let n: i64 = s[..digits].parse().ok()?;
    let unit = match &s[digits..] {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    (n > 0).then_some(n * unit)
}

fn parse_kind(
    name: &str,
    kind: &str,
    body: &Value,
    time_field: &str,
    now_ms: i64,
) -> Result<Kind, EsError> {
    let min_doc_count = body.get("min_doc_count").and_then(Value::as_u64);
    Ok(match kind {
        "date_histogram" => {
            let field = field_of(name, body)?;
            let spec = ["fixed_interval", "calendar_interval", "interval"]
                .iter()
                .find_map(|k| body.get(*k).and_then(Value::as_str))
                .ok_or_else(|| {
                    EsError::IllegalArgument(format!(
                        "Invalid interval specified, must be non-null and non-empty [{name}]"
                    ))
                })?;
            let interval_ms = interval_ms(spec).ok_or_else(|| {
                EsError::IllegalArgument(format!("failed to parse setting [date_histogram.fixed_interval] with value [{spec}] as a time value"))
            })?;
            let format = body.get("format").and_then(Value::as_str);
            let bounds = match body.get("extended_bounds") {
                Some(b) => {
                    let get = |k: &str, up: bool| {
                        b.get(k)
                            .map(|v| date_ms(v, format.or(Some("epoch_millis")), now_ms, up))
                            .transpose()
                    };
                    match (get("min", false)?, get("max", true)?) {
                        (Some(lo), Some(hi)) => Some((lo, hi)),
                        _ => None,
                    }
                }
                None => None,
            };
            Kind::DateHistogram {
                field,
                interval_ms,
                min_doc_count: min_doc_count.unwrap_or(0),
                bounds,
                epoch_millis: format == Some("epoch_millis"),
            }
        }
        "histogram" => {
            let field = field_of(name, body)?;
            let interval = body
                .get("interval")
                .and_then(number)
                .filter(|i| *i > 0.0)
                .ok_or_else(|| {
                    EsError::IllegalArgument(format!(
                        "[interval] must be >0 for histogram aggregation [{name}]"
                    ))
                })?;
            let bounds = body.get("extended_bounds").and_then(|b| {
                Some((
                    b.get("min").and_then(number)?,
                    b.get("max").and_then(number)?,
                ))
            });
            Kind::Histogram {
                field,
                interval,
                min_doc_count: min_doc_count.unwrap_or(0),
                bounds,
            }
        }
        "terms" => {
            let field = field_of(name, body)?;
            let size = body.get("size").and_then(number).map_or(10, |n| n as usize);
            let order = match body.get("order") {
                Some(Value::Object(o)) => o.iter().next().map(|(k, v)| Order {
                    by: if k == "_term" {
                        "_key".into()
                    } else {
                        k.clone()
                    },
                    desc: v.as_str() != Some("asc"),
                }),
                Some(Value::Array(a)) => a.first().and_then(Value::as_object).and_then(|o| {
                    o.iter().next().map(|(k, v)| Order {
                        by: k.clone(),
                        desc: v.as_str() != Some("asc"),
                    })
                }),
                _ => None,
            }
            .unwrap_or(Order {
                by: "_count".into(),
                desc: true,
            });
            Kind::Terms {
                field,
                size,
                order,
                min_doc_count: min_doc_count.unwrap_or(1),
            }
        }
        "filters" => {
            let filters = body
                .get("filters")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    EsError::parse(format!("[filters] in [{name}] must be an object"))
                })?;
            let mut out = Vec::new();
            for (k, q) in filters {
                out.push((k.clone(), Query::parse(q, time_field, now_ms)?));
            }
            Kind::Filters(out)
        }
        "avg" | "min" | "max" | "sum" | "value_count" | "cardinality" | "percentiles" | "stats"
        | "extended_stats" => {
            let field = field_of(name, body)?;
            let metric = match kind {
                "avg" => Metric::Avg,
                "min" => Metric::Min,
                "max" => Metric::Max,
                "sum" => Metric::Sum,
                "value_count" => Metric::ValueCount,
                "cardinality" => Metric::Cardinality,
                "stats" => Metric::Stats,
                "extended_stats" => Metric::ExtendedStats,
                _ => Metric::Percentiles(
                    body.get("percents")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(number).collect())
                        .unwrap_or_else(|| vec![1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0]),
                ),
            };
            Kind::Metric { field, metric }
        }
        other => {
            return Err(EsError::Parse {
                kind: "x_content_parse_exception",
                reason: format!("[1:1] unknown field [{other}]"),
            })
        }
    })
}

/// Computes `aggs` over `docs`: the `aggregations` object of a response.
pub fn compute(aggs: &[Agg], docs: &[&Document]) -> Result<Value, EsError> {
    let mut budget = MAX_BUCKETS;
    compute_within(aggs, docs, &mut budget)
}

fn compute_within(aggs: &[Agg], docs: &[&Document], budget: &mut usize) -> Result<Value, EsError> {
    let mut out = Map::new();
    for a in aggs {
        out.insert(a.name.clone(), one(a, docs, budget)?);
    }
    Ok(Value::Object(out))
}

fn take_buckets(budget: &mut usize, n: usize) -> Result<(), EsError> {
    *budget = budget.checked_sub(n).ok_or_else(|| {
        EsError::IllegalArgument(format!(
            "Trying to create too many buckets. Must be less than or equal to: [{MAX_BUCKETS}]."
        ))
    })?;
    Ok(())
}

/// With `min_doc_count: 0`: a bucket, empty or not, for every key `step` apart from the first
/// to the last, stretched to `bounds` (`extended_bounds`, already as keys).
fn fill_empty(
    groups: &mut BTreeMap<i64, Vec<&Document>>,
    bounds: Option<(i64, i64)>,
    step: i64,
    budget: &mut usize,
) -> Result<(), EsError> {
    let first = groups.keys().next().copied();
    let last = groups.keys().next_back().copied();
    let lo = first.into_iter().chain(bounds.map(|b| b.0)).min();
    let hi = last.into_iter().chain(bounds.map(|b| b.1)).max();
    if let (Some(lo), Some(hi)) = (lo, hi) {
        take_buckets(
            budget,
            usize::try_from((hi - lo) / step + 1).unwrap_or(usize::MAX),
        )?;
        let mut k = lo;
        while k <= hi {
            groups.entry(k).or_default();
            k += step;
        }
    }
    Ok(())
}

/// A bucket: its keys, count and sub-aggregations.
fn bucket(
    mut head: Map<String, Value>,
    docs: &[&Document],
    subs: &[Agg],
    budget: &mut usize,
) -> Result<Value, EsError> {
    head.insert("doc_count".into(), json!(docs.len()));
    if let Value::Object(m) = compute_within(subs, docs, budget)? {
        head.extend(m);
    }
    Ok(Value::Object(head))
}

fn one(a: &Agg, docs: &[&Document], budget: &mut usize) -> Result<Value, EsError> {
    match &a.kind {
        Kind::DateHistogram {
            field,
            interval_ms,
            min_doc_count,
            bounds,
            epoch_millis,
        } => {
            let mut groups: BTreeMap<i64, Vec<&Document>> = BTreeMap::new();
            for d in docs {
                let ms = match d.get(field) {
                    Some(_) if field_is_time(d, field) => d.ts_ms(),
                    Some(v) => match date_ms(&v, None, 0, false) {
                        Ok(ms) => ms,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                groups
                    .entry(ms.div_euclid(*interval_ms) * interval_ms)
                    .or_default()
                    .push(d);
            }
            if *min_doc_count == 0 {
                let key = |t: i64| t.div_euclid(*interval_ms) * interval_ms;
                let bounds = bounds.map(|b| (key(b.0), key(b.1)));
                fill_empty(&mut groups, bounds, *interval_ms, budget)?;
            }
            let mut buckets = Vec::new();
            for (k, ds) in groups {
                if (ds.len() as u64) < *min_doc_count {
                    continue;
                }
                let mut head = Map::new();
                head.insert(
                    "key_as_string".into(),
                    json!(if *epoch_millis {
                        k.to_string()
                    } else {
                        rfc3339_millis(k * 1_000_000)
                    }),
                );
                head.insert("key".into(), json!(k));
                buckets.push(bucket(head, &ds, &a.subs, budget)?);
            }
            Ok(json!({"buckets": buckets}))
        }
        Kind::Histogram {
            field,
            interval,
            min_doc_count,
            bounds,
        } => {
            let mut groups: BTreeMap<i64, Vec<&Document>> = BTreeMap::new();
            for d in docs {
                if let Some(x) = d.get(field).as_ref().and_then(number) {
                    groups
                        .entry((x / interval).floor() as i64)
                        .or_default()
                        .push(d);
                }
            }
            if *min_doc_count == 0 {
                let key = |x: f64| (x / interval).floor() as i64;
                let bounds = bounds.map(|b| (key(b.0), key(b.1)));
                fill_empty(&mut groups, bounds, 1, budget)?;
            }
            let mut buckets = Vec::new();
            for (k, ds) in groups {
                if (ds.len() as u64) < *min_doc_count {
                    continue;
                }
                let mut head = Map::new();
                head.insert("key".into(), json!(k as f64 * interval));
                buckets.push(bucket(head, &ds, &a.subs, budget)?);
            }
            Ok(json!({"buckets": buckets}))
        }
        Kind::Terms {
            field,
            size,
            order,
            min_doc_count,
        } => {
            let mut groups: HashMap<String, (Value, Vec<&Document>)> = HashMap::new();
            for d in docs {
                let Some(v) = d.get(field) else { continue };
                let values = match v {
                    Value::Array(a) => a,
                    v => vec![v],
                };
                for v in values {
                    groups
                        .entry(text(&v))
                        .or_insert_with(|| (v.clone(), Vec::new()))
                        .1
                        .push(d);
                }
            }
            take_buckets(budget, groups.len().min(*size))?;
            let mut rows: Vec<(String, Value, Vec<&Document>, Value)> = Vec::new();
            for (k, (v, ds)) in groups {
                if (ds.len() as u64) < *min_doc_count {
                    continue;
                }
                let subs = compute_within(&a.subs, &ds, budget)?;
                rows.push((k, v, ds, subs));
            }
            let metric_of = |subs: &Value| -> f64 {
                let (name, key) = order.by.split_once('.').unwrap_or((&order.by, "value"));
                subs.get(name)
                    .and_then(|m| m.get(key))
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            rows.sort_by(|a, b| {
                let o = match order.by.as_str() {
                    "_count" => a.2.len().cmp(&b.2.len()),
                    "_key" => match (number(&a.1), number(&b.1)) {
                        (Some(x), Some(y)) if !a.1.is_string() => x.total_cmp(&y),
                        _ => a.0.cmp(&b.0),
                    },
                    _ => metric_of(&a.3).total_cmp(&metric_of(&b.3)),
                };
                let o = if order.desc { o.reverse() } else { o };
                // Ties by key ascending, as Elasticsearch breaks them.
                o.then_with(|| a.0.cmp(&b.0))
            });
            let other: usize = rows.iter().skip(*size).map(|r| r.2.len()).sum();
            let buckets: Vec<Value> = rows
                .into_iter()
                .take(*size)
                .map(|(_, v, ds, subs)| {
                    let mut head = Map::new();
                    head.insert("key".into(), v);
                    head.insert("doc_count".into(), json!(ds.len()));
                    if let Value::Object(m) = subs {
                        head.extend(m);
                    }
                    Value::Object(head)
                })
                .collect();
            Ok(
                json!({"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": buckets}),
            )
        }
        Kind::Filters(filters) => {
            let mut buckets = Map::new();
            for (k, q) in filters {
                let ds: Vec<&Document> = docs.iter().copied().filter(|d| q.matches(d)).collect();
                buckets.insert(k.clone(), bucket(Map::new(), &ds, &a.subs, budget)?);
            }
            Ok(json!({"buckets": buckets}))
        }
        Kind::Metric { field, metric } => Ok(metric_value(field, metric, docs)),
    }
}

fn field_is_time(d: &Document, field: &str) -> bool {
    d.fields.get(field).and_then(Value::as_str) == Some(rfc3339_millis(d.ts_ns).as_str())
}

fn metric_value(field: &str, metric: &Metric, docs: &[&Document]) -> Value {
    let values: Vec<Value> = docs.iter().filter_map(|d| d.get(field)).collect();
    let mut nums: Vec<f64> = values
        .iter()
        .filter_map(|v| {
            if field_is_time_value(v) {
                None
            } else {
                number(v)
            }
        })
        .collect();
    // A time field aggregates as epoch milliseconds, as a date field does.
    if nums.is_empty() {
        nums = docs
            .iter()
            .filter(|d| d.get(field).is_some() && field_is_time(d, field))
            .map(|d| d.ts_ms() as f64)
            .collect();
    }
    let n = nums.len() as f64;
    let sum: f64 = nums.iter().sum();
    let min = nums.iter().copied().reduce(f64::min);
    let max = nums.iter().copied().reduce(f64::max);
    let avg = (n > 0.0).then(|| sum / n);
    match metric {
        Metric::Avg => json!({"value": avg}),
        Metric::Min => json!({"value": min}),
        Metric::Max => json!({"value": max}),
        Metric::Sum => json!({"value": sum}),
        Metric::ValueCount => json!({"value": values.len()}),
        Metric::Cardinality => {
            let distinct: HashSet<String> = values.iter().map(text).collect();
            json!({"value": distinct.len()})
        }
        Metric::Percentiles(ps) => {
            nums.sort_by(f64::total_cmp);
            let mut out = Map::new();
            for p in ps {
                out.insert(format!("{p:?}"), json!(percentile(&nums, *p)));
            }
            json!({"values": out})
        }
        Metric::Stats | Metric::ExtendedStats => {
            let mut s =
                json!({"count": nums.len(), "min": min, "max": max, "avg": avg, "sum": sum});
            if *metric == Metric::ExtendedStats {
                let sq: f64 = nums.iter().map(|x| x * x).sum();
                let var = avg.map(|m| (sq / n - m * m).max(0.0));
                let sd = var.map(f64::sqrt);
                let bound = |k: f64| avg.zip(sd).map(|(m, s)| m + k * s);
                s["sum_of_squares"] = json!(if n > 0.0 { Some(sq) } else { None });
                s["variance"] = json!(var);
                s["variance_population"] = json!(var);
                s["variance_sampling"] = json!(avg
                    .filter(|_| n > 1.0)
                    .map(|m| (sq - n * m * m).max(0.0) / (n - 1.0)));
                s["std_deviation"] = json!(sd);
                s["std_deviation_population"] = json!(sd);
                s["std_deviation_bounds"] = json!({"upper": bound(2.0), "lower": bound(-2.0)});
            }
            s
        }
    }
}

fn field_is_time_value(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}

/// Linear interpolation between closest ranks (what t-digest gives on few values).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(ts_ms: i64, host: &str, bytes: f64) -> Document {
        let mut fields = BTreeMap::new();
        fields.insert(
            "@timestamp".into(),
            json!(rfc3339_millis(ts_ms * 1_000_000)),
        );
        fields.insert("host".into(), json!(host));
        fields.insert("bytes".into(), json!(bytes.to_string()));
        Document {
            ts_ns: ts_ms * 1_000_000,
            index: "app".into(),
            id: ts_ms.to_string(),
            fields,
        }
    }

    #[test]
    fn grafana_terms_split_date_histogram() {
        let docs = [
            doc(1000, "a", 1.0),
            doc(1500, "b", 3.0),
            doc(3100, "a", 5.0),
        ];
        let refs: Vec<&Document> = docs.iter().collect();
        let aggs = parse(
            &json!({"3": {"terms": {"field": "host", "size": 10, "order": {"_key": "desc"}, "min_doc_count": 1},
                "aggs": {"2": {"date_histogram": {"field": "@timestamp", "min_doc_count": 0,
                    "extended_bounds": {"min": 0, "max": 4000}, "format": "epoch_millis", "fixed_interval": "1000ms"},
                    "aggs": {"1": {"avg": {"field": "bytes"}}}}}}}),
            "@timestamp",
            0,
        )
        .unwrap();
        let out = compute(&aggs, &refs).unwrap();
        let buckets = out["3"]["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0]["key"], "b");
        let a = &buckets[1]["2"]["buckets"];
        assert_eq!(a.as_array().unwrap().len(), 5, "{a}");
        assert_eq!(a[1]["key"], 1000);
        assert_eq!(a[1]["key_as_string"], "1000");
        assert_eq!(a[1]["doc_count"], 1);
        assert_eq!(a[1]["1"]["value"], 1.0);
        assert_eq!(a[2]["doc_count"], 0);
        assert_eq!(a[2]["1"]["value"], Value::Null);
        assert_eq!(a[3]["1"]["value"], 5.0);
    }

    #[test]
    fn metrics() {
        let docs = [
            doc(1, "a", 1.0),
            doc(2, "b", 2.0),
            doc(3, "b", 3.0),
            doc(4, "c", 4.0),
        ];
        let refs: Vec<&Document> = docs.iter().collect();
        let aggs = parse(
            &json!({
                "s": {"sum": {"field": "bytes"}}, "mn": {"min": {"field": "bytes"}}, "mx": {"max": {"field": "bytes"}},
                "c": {"cardinality": {"field": "host"}}, "n": {"value_count": {"field": "host"}},
                "p": {"percentiles": {"field": "bytes", "percents": [50]}},
                "x": {"extended_stats": {"field": "bytes"}},
                "h": {"histogram": {"field": "bytes", "interval": 2}},
                "t": {"terms": {"field": "host", "size": 1}}
            }),
            "@timestamp",
            0,
        )
        .unwrap();
        let out = compute(&aggs, &refs).unwrap();
        assert_eq!(out["s"]["value"], 10.0);
        assert_eq!(out["mn"]["value"], 1.0);
        assert_eq!(out["mx"]["value"], 4.0);
        assert_eq!(out["c"]["value"], 3);
        assert_eq!(out["n"]["value"], 4);
        assert_eq!(out["p"]["values"]["50.0"], 2.5);
        assert_eq!(out["x"]["count"], 4);
        assert_eq!(out["x"]["variance"], 1.25);
        assert_eq!(out["h"]["buckets"][0]["key"], 0.0);
        assert_eq!(out["h"]["buckets"][1]["doc_count"], 2);
        assert_eq!(out["t"]["buckets"][0]["key"], "b");
        assert_eq!(out["t"]["sum_other_doc_count"], 2);
    }

    #[test]
    fn bad_aggregations_are_refused() {
        for bad in [
            json!({"a": {"nope": {}}}),
            json!({"a": {"date_histogram": {"field": "t", "fixed_interval": "1q"}}}),
            json!({"a": {"avg": {}}}),
        ] {
            assert_eq!(parse(&bad, "t", 0).unwrap_err().status(), 400, "{bad}");
        }
        let too_many = parse(
            &json!({"a": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1ms",
            "extended_bounds": {"min": 0, "max": 10_000_000}}}}),
            "@timestamp",
            0,
        )
        .unwrap();
        let docs = [doc(1, "a", 1.0)];
        assert!(compute(&too_many, &[&docs[0]]).is_err());
    }
}
