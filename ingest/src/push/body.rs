//! A push's body as the Pushgateway reads it: the text format (0.0.4), or length-delimited
//! `io.prometheus.client.MetricFamily` protobuf messages when the Content-Type says so. Both
//! become [`Families`]: per family name its type, help and samples, as the text format would
//! show them (`_bucket`/`_sum`/`_count` of histograms, `quantile` of summaries). Owns decoding
//! only; whether the push is consistent is the store's.

use std::collections::BTreeMap;

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::scrape::exposition::{Entry, Format, MetricType, Parser};

/// A family's type, named as the Pushgateway's API names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
    Untyped,
    Histogram,
    GaugeHistogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "COUNTER",
            Kind::Gauge => "GAUGE",
            Kind::Summary => "SUMMARY",
            Kind::Untyped => "UNTYPED",
            Kind::Histogram => "HISTOGRAM",
            Kind::GaugeHistogram => "GAUGE_HISTOGRAM",
        }
    }

    /// Samples of these families carry suffixes (`_bucket`, `_sum`, `_count`).
    fn suffixed(self) -> bool {
        matches!(self, Kind::Summary | Kind::Histogram | Kind::GaugeHistogram)
    }
}

/// One sample as the text format would show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushedSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Family {
    pub kind: Kind,
    #[serde(default)]
    pub help: String,
    pub samples: Vec<PushedSample>,
}

pub type Families = BTreeMap<String, Family>;

/// What a body holds, and whether any sample carried a timestamp (which a push must not).
pub struct Decoded {
    pub families: Families,
    pub timestamps: bool,
}

/// The Content-Type of delimited protobuf, as the Pushgateway matches it.
fn is_protobuf(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/vnd.google.protobuf"))
    {
        return false;
    }
    let params: BTreeMap<String, String> = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect();
    params.get("encoding").map(String::as_str) == Some("delimited")
        && params.get("proto").map(String::as_str) == Some("io.prometheus.client.MetricFamily")
}

pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<Decoded, String> {
    if is_protobuf(content_type) {
        protobuf(body)
    } else {
        text(body)
    }
}

fn kind_of(t: MetricType) -> Kind {
    match t {
        MetricType::Counter => Kind::Counter,
        MetricType::Gauge => Kind::Gauge,
        MetricType::Histogram => Kind::Histogram,
        MetricType::GaugeHistogram => Kind::GaugeHistogram,
        MetricType::Summary => Kind::Summary,
        _ => Kind::Untyped,
    }
}

/// The family a sample belongs to: its own name, or the declared histogram or summary its
/// suffix belongs to.
fn family_of<'a>(name: &'a str, families: &Families) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| f.kind.suffixed()) {
                return base;
            }
        }
    }
    name
}

fn text(body: &[u8]) -> Result<Decoded, String> {
    let mut families = Families::new();
    let mut timestamps = false;
    let mut parser = Parser::new(body, Format::Prometheus);
    let blank = || Family {
        kind: Kind::Untyped,
        help: String::new(),
        samples: Vec::new(),
    };
    loop {
        let entry = parser
            .next()
            .map_err(|e| format!("text format parsing error in {e}"))?;
        match entry {
            None => break,
            Some(Entry::Type { family, kind }) => {
                families
                    .entry(family.to_string())
                    .or_insert_with(blank)
                    .kind = kind_of(kind)
            }
            Some(Entry::Help { family, text }) => {
                families
                    .entry(family.to_string())
                    .or_insert_with(blank)
                    .help = text.into_owned()
            }
            Some(Entry::Unit { .. }) => {}
            Some(Entry::Sample(s)) => {
                timestamps |= s.timestamp_ms.is_some();
                let name = s.name();
                let mut labels = BTreeMap::new();
                s.for_each_label(|n, v| {
                    labels.insert(n.to_string(), v.into_owned());
                });
                let family = family_of(name, &families).to_string();
                families
                    .entry(family)
                    .or_insert_with(blank)
                    .samples
                    .push(PushedSample {
                        name: name.to_string(),
                        labels,
                        value: s.value,
                    });
            }
        }
    }
    // A family announced by TYPE or HELP alone holds nothing: the Pushgateway drops it too.
    families.retain(|_, f| !f.samples.is_empty());
    normalize_bounds(&mut families)?;
    Ok(Decoded {
        families,
        timestamps,
    })
}

/// `io.prometheus.client` (metrics.proto), the fields a push uses.
mod dto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        #[prost(double, optional, tag = "1")]
        pub quantile: Option<f64>,
        #[prost(double, optional, tag = "2")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
        #[prost(double, optional, tag = "4")]
        pub cumulative_count_float: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(double, optional, tag = "4")]
        pub sample_count_float: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Value>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Value>,
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Value>,
        #[prost(int64, optional, tag = "6")]
        pub timestamp_ms: Option<i64>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }
}

/// A bucket bound or quantile as Go's text format writes it in `le`/`quantile` (`%g` with the
/// shortest digits: `1e+06`, `0.5`, `+Inf`).
fn bound(v: f64) -> String {
    gocompat::fmt::shortest(v)
}

/// The `le` of histogram buckets and the `quantile` of summaries written back from their
/// float, as the Pushgateway does (it holds pushes as protobuf): `1000000` is exposed as
/// `1e+06`, `0.50` as `0.5`. A value that is no float fails the push, as Go's parser fails it.
fn normalize_bounds(families: &mut Families) -> Result<(), String> {
    for (family, f) in families.iter_mut() {
        let (label, suffix) = match f.kind {
            Kind::Histogram | Kind::GaugeHistogram => ("le", "_bucket"),
            Kind::Summary => ("quantile", ""),
            _ => continue,
        };
        for s in &mut f.samples {
            if s.name.strip_prefix(family.as_str()) != Some(suffix) {
                continue;
            }
            if let Some(v) = s.labels.get_mut(label) {
                let x: f64 = v.parse().map_err(|_| {
                    format!(
                        "text format parsing error: expected float as value for '{label}' label, got {v:?}"
                    )
                })?;
                *v = bound(x);
            }
        }
    }
    Ok(())
}

fn protobuf(mut body: &[u8]) -> Result<Decoded, String> {
    let mut families = Families::new();
    let mut timestamps = false;
    while !body.is_empty() {
        let mf = dto::MetricFamily::decode_length_delimited(&mut body)
            .map_err(|e| format!("protobuf: {e}"))?;
        let name = mf.name.clone().unwrap_or_default();
        if !name.bytes().enumerate().all(|(i, b)| {
            b == b'_' || b == b':' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
        }) || name.is_empty()
        {
            return Err(format!("invalid metric name {name:?}"));
        }
        let kind = match mf.r#type.unwrap_or(0) {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            2 => Kind::Summary,
            3 => Kind::Untyped,
            4 => Kind::Histogram,
            5 => Kind::GaugeHistogram,
            t => return Err(format!("unknown metric type {t}")),
        };
        let mut samples = Vec::new();
        for m in &mf.metric {
            timestamps |= m.timestamp_ms.is_some();
            let mut labels = BTreeMap::new();
            for l in &m.label {
                let n = l.name.clone().unwrap_or_default();
                if !storage::relabel::valid_name(&n) {
                    return Err(format!("invalid label name {n:?}"));
                }
                labels.insert(n, l.value.clone().unwrap_or_default());
            }
            let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
                let mut labels = labels.clone();
                if let Some((n, v)) = extra {
                    labels.insert(n.to_string(), v);
                }
                samples.push(PushedSample {
                    name: format!("{name}{suffix}"),
                    labels,
                    value,
                });
            };
            let simple = |v: &Option<dto::Value>| v.as_ref().and_then(|v| v.value);
            match kind {
                Kind::Counter => push("", None, simple(&m.counter).unwrap_or(0.0)),
                Kind::Gauge => push("", None, simple(&m.gauge).unwrap_or(0.0)),
                Kind::Untyped => push("", None, simple(&m.untyped).unwrap_or(0.0)),
                Kind::Summary => {
                    let s = m.summary.clone().unwrap_or_default();
                    for q in &s.quantile {
                        let at = bound(q.quantile.unwrap_or(0.0));
                        push("", Some(("quantile", at)), q.value.unwrap_or(0.0));
                    }
                    push("_sum", None, s.sample_sum.unwrap_or(0.0));
                    push("_count", None, s.sample_count.unwrap_or(0) as f64);
                }
                Kind::Histogram | Kind::GaugeHistogram => {
                    let h = m.histogram.clone().unwrap_or_default();
                    let count = h
                        .sample_count_float
                        .filter(|c| *c > 0.0)
                        .unwrap_or(h.sample_count.unwrap_or(0) as f64);
                    let mut inf = false;
                    for b in &h.bucket {
                        let le = b.upper_bound.unwrap_or(0.0);
                        inf |= le == f64::INFINITY;
                        let c = b
                            .cumulative_count_float
                            .filter(|c| *c > 0.0)
                            .unwrap_or(b.cumulative_count.unwrap_or(0) as f64);
                        push("_bucket", Some(("le", bound(le))), c);
                    }
                    // The text format always shows the +Inf bucket (the count).
                    if !inf && !h.bucket.is_empty() {
                        push("_bucket", Some(("le", "+Inf".into())), count);
                    }
                    push("_sum", None, h.sample_sum.unwrap_or(0.0));
                    push("_count", None, count);
                }
            }
        }
        families.insert(
            name,
            Family {
                kind,
                help: mf.help.clone().unwrap_or_default(),
                samples,
            },
        );
    }
    Ok(Decoded {
        families,
        timestamps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTO: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

    #[test]
    fn text_bodies_group_suffixes_into_their_family() {
        let d = decode(
            b"# TYPE job_duration_seconds histogram\n# HELP job_duration_seconds How long.\njob_duration_seconds_bucket{le=\"1\"} 2\njob_duration_seconds_bucket{le=\"+Inf\"} 3\njob_duration_seconds_sum 4.5\njob_duration_seconds_count 3\nlast_success 1.7e9\n# TYPE announced gauge\n",
            Some("text/plain"),
        )
        .unwrap();
        assert!(!d.timestamps);
        let h = &d.families["job_duration_seconds"];
        assert_eq!(
            (h.kind, h.help.as_str(), h.samples.len()),
            (Kind::Histogram, "How long.", 4)
        );
        assert_eq!(d.families["last_success"].kind, Kind::Untyped);
        assert!(!d.families.contains_key("announced"));
        assert!(decode(b"x 1 1700000000000\n", None).unwrap().timestamps);
        // Bounds and quantiles as Go writes their floats back; one that is no float fails.
        let d = decode(
            b"# TYPE h histogram\nh_bucket{le=\"1000000\"} 1\nh_bucket{le=\"+Inf\"} 1\n# TYPE s summary\ns{quantile=\"0.50\"} 1\n",
            None,
        )
        .unwrap();
        let bound = |f: &str, l: &str| -> Vec<String> {
            d.families[f]
                .samples
                .iter()
                .filter_map(|s| s.labels.get(l).cloned())
                .collect()
        };
        assert_eq!(bound("h", "le"), ["1e+06", "+Inf"]);
        assert_eq!(bound("s", "quantile"), ["0.5"]);
        let e = decode(b"# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", None)
            .err()
            .unwrap();
        assert!(e.contains("expected float as value for 'le' label"), "{e}");
        let e = decode(b"x{ 1\n", None).err().unwrap();
        assert!(e.starts_with("text format parsing error in line 1"), "{e}");
    }

    #[test]
    fn protobuf_bodies_become_the_samples_the_text_format_shows() {
        let mf = dto::MetricFamily {
            name: Some("rpc".into()),
            help: Some("RPCs.".into()),
            r#type: Some(4),
            metric: vec![dto::Metric {
                label: vec![dto::LabelPair {
                    name: Some("svc".into()),
                    value: Some("a".into()),
                }],
                histogram: Some(dto::Histogram {
                    sample_count: Some(5),
                    sample_sum: Some(1.5),
                    bucket: vec![
                        dto::Bucket {
                            cumulative_count: Some(2),
                            upper_bound: Some(0.5),
                            cumulative_count_float: None,
                        },
                        dto::Bucket {
                            cumulative_count: Some(4),
                            upper_bound: Some(1e6),
                            cumulative_count_float: None,
                        },
                    ],
                    sample_count_float: None,
                }),
                ..Default::default()
            }],
        };
        let mut body = mf.encode_length_delimited_to_vec();
        body.extend(
            dto::MetricFamily {
                name: Some("up_since".into()),
                r#type: Some(1),
                metric: vec![dto::Metric {
                    gauge: Some(dto::Value { value: Some(7.0) }),
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_length_delimited_to_vec(),
        );
        let d = decode(&body, Some(PROTO)).unwrap();
        let names: Vec<(String, Option<String>, f64)> = d.families["rpc"]
            .samples
            .iter()
            .map(|s| (s.name.clone(), s.labels.get("le").cloned(), s.value))
            .collect();
        assert_eq!(
            names,
            [
                ("rpc_bucket".to_string(), Some("0.5".to_string()), 2.0),
                ("rpc_bucket".to_string(), Some("1e+06".to_string()), 4.0),
                ("rpc_bucket".to_string(), Some("+Inf".to_string()), 5.0),
                ("rpc_sum".to_string(), None, 1.5),
                ("rpc_count".to_string(), None, 5.0),
            ]
        );
        assert_eq!(d.families["up_since"].samples[0].value, 7.0);
        assert!(decode(&body[..body.len() - 1], Some(PROTO)).is_err());
    }
}
