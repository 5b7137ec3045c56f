//! OTLP metrics → Prometheus series, as Prometheus's OTLP receiver does: monotonic cumulative
//! sums are counters (`_total`), non-monotonic sums and gauges are gauges, explicit-bucket
//! histograms are classic `_bucket{le}`/`_sum`/`_count`, summaries `{quantile}`/`_sum`/`_count`.
//! `service.namespace`/`service.name` → `job`, `service.instance.id` → `instance`, every other
//! resource attribute goes on one `target_info` series per resource. Delta temporality and
//! exponential histograms are rejected (Prometheus needs feature flags for them). Exemplars
//! as Prometheus's translator (`getPromExemplars`) makes them: `trace_id`/`span_id` in hex
//! and the filtered attributes as labels, on a sum's series or on the `_bucket` series of
//! the first bound not below the exemplar's value (gauges carry none there either). Pure
//! conversion; writing is the caller's.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::exemplar::Value as ExemplarValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, Exemplar as OtlpExemplar, NumberDataPoint,
    ResourceMetrics,
};
use storage::traces::value_text;
use storage::{
    Exemplar, Label, Labels, Metadata, Sample, SeriesBatch, EXEMPLAR_MAX_LABEL_SET_LENGTH,
    METRIC_NAME, STALE_NAN_BITS,
};

use super::metric_names::{label_name, metric_name, Kind};

#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub(crate) series: Vec<SeriesBatch>,
    /// Exemplars by the label set of the series they go with, oldest first.
    pub(crate) exemplars: HashMap<Labels, Vec<Exemplar>>,
    pub(crate) metadata: Vec<(String, Metadata)>,
    pub(crate) rejected_points: usize,
    pub(crate) reason: Option<String>,
}

const RESOURCE_IDENTITY: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

#[derive(Default)]
struct Builder {
    series: HashMap<Labels, Vec<Sample>>,
    exemplars: HashMap<Labels, Vec<Exemplar>>,
    metadata: BTreeMap<String, Metadata>,
    rejected: usize,
    reason: Option<String>,
}

impl Builder {
    fn reject(&mut self, points: usize, reason: String) {
        self.rejected += points;
        self.reason.get_or_insert(reason);
    }

    /// Adds a sample; returns the series' label set.
    fn add(
        &mut self,
        base: &[Label],
        name: &str,
        extra: Option<(&str, String)>,
        t: i64,
        v: f64,
    ) -> Labels {
        let mut labels = base.to_vec();
        labels.push(Label::new(METRIC_NAME, name));
        if let Some((n, value)) = extra {
            labels.push(Label::new(n, value));
        }
        let labels = Labels::new(labels);
        self.series
            .entry(labels.clone())
            .or_default()
            .push(Sample { t, v });
        labels
    }

    fn add_exemplars(&mut self, series: Labels, exemplars: impl IntoIterator<Item = Exemplar>) {
        let mut exemplars = exemplars.into_iter().peekable();
        if exemplars.peek().is_some() {
            self.exemplars.entry(series).or_default().extend(exemplars);
        }
    }
}

pub(crate) fn convert(resources: &[ResourceMetrics]) -> Converted {
    let mut b = Builder::default();
    for rm in resources {
        let attrs = rm
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let identity = identity_labels(attrs);
        let mut newest: Option<i64> = None;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                let (kind, prom_type) = match data {
                    Data::Sum(s) if s.is_monotonic => (Kind::Counter, "counter"),
                    Data::Sum(_) | Data::Gauge(_) => (Kind::Gauge, "gauge"),
                    Data::Histogram(_) | Data::ExponentialHistogram(_) => {
                        (Kind::Other, "histogram")
                    }
                    Data::Summary(_) => (Kind::Other, "summary"),
                };
                let name = metric_name(&m.name, &m.unit, kind);
                let before = b.series.len() + b.rejected;
                add_points(&mut b, &identity, &name, data, &mut newest);
                if b.series.len() + b.rejected > before {
                    b.metadata.insert(
                        name,
                        Metadata {
                            kind: prom_type.to_owned(),
                            help: m.description.clone(),
                            unit: m.unit.clone(),
                        },
                    );
                }
            }
        }
        let others: Vec<&KeyValue> = attrs
            .iter()
            .filter(|kv| !RESOURCE_IDENTITY.contains(&kv.key.as_str()))
            .collect();
        if let (Some(t), false) = (newest, others.is_empty()) {
            let mut base = identity.clone();
            base.extend(others.iter().filter_map(|kv| {
                Some(Label::new(
                    label_name(&kv.key),
                    value_text(kv.value.as_ref()?)?,
                ))
            }));
            b.add(&base, "target_info", None, t, 1.0);
            b.metadata.insert(
                "target_info".to_owned(),
                Metadata {
                    kind: "gauge".to_owned(),
                    help: "Target metadata".to_owned(),
                    unit: String::new(),
                },
            );
        }
    }
    // A reservoir's exemplars come in no particular order, and storage keeps only those newer
    // than a series' newest: in time order, all of them are.
    for exemplars in b.exemplars.values_mut() {
        exemplars.sort_by_key(|e| e.t);
    }
    let series = b
        .series
        .into_iter()
        .map(|(labels, mut samples)| {
            samples.sort_by_key(|s| s.t);
            samples.dedup_by_key(|s| s.t);
            SeriesBatch {
                labels,
                samples,
                histograms: Vec::new(),
            }
        })
        .collect();
    Converted {
        series,
        exemplars: b.exemplars,
        metadata: b.metadata.into_iter().collect(),
        rejected_points: b.rejected,
        reason: b.reason,
    }
}

fn identity_labels(attrs: &[KeyValue]) -> Vec<Label> {
    let get = |k: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| value_text(kv.value.as_ref()?))
    };
    let job = match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
        (None, Some(name)) => Some(name),
        _ => None,
    };
    [("job", job), ("instance", get("service.instance.id"))]
        .into_iter()
        .filter_map(|(n, v)| Some(Label::new(n, v?)))
        .collect()
}

fn point_labels(identity: &[Label], attrs: &[KeyValue]) -> Vec<Label> {
    let mut labels: Vec<Label> = attrs
        .iter()
        .filter_map(|kv| {
            Some(Label::new(
                label_name(&kv.key),
                value_text(kv.value.as_ref()?)?,
            ))
        })
        .collect();
    // Resource identity wins over a point attribute of the same name, as in Prometheus.
    labels.extend(identity.iter().cloned());
    labels
}

/// Prometheus's `getPromExemplars`: the trace and span ids in hex, then the filtered
/// attributes unless they would take the labels past the exemplar length limit. An exemplar
/// without a value is skipped.
fn exemplars(points: &[OtlpExemplar]) -> impl Iterator<Item = Exemplar> + '_ {
    points.iter().filter_map(|e| {
        let value = match e.value? {
            ExemplarValue::AsDouble(d) => d,
            ExemplarValue::AsInt(i) => i as f64,
        };
        let mut labels = Vec::new();
        for (name, id) in [("trace_id", &e.trace_id), ("span_id", &e.span_id)] {
            if !id.is_empty() {
                labels.push(Label::new(name, hex(id)));
            }
        }
        let chars = |l: &Label| l.name.chars().count() + l.value.chars().count();
        let ids: usize = labels.iter().map(chars).sum();
        let attributes: Vec<Label> = e
            .filtered_attributes
            .iter()
            .filter_map(|kv| Some(Label::new(&kv.key, value_text(kv.value.as_ref()?)?)))
            .collect();
        if ids + attributes.iter().map(chars).sum::<usize>() <= EXEMPLAR_MAX_LABEL_SET_LENGTH {
            labels.extend(attributes);
        }
        Some(Exemplar {
            labels: Labels::new(labels),
            value,
            t: ms(e.time_unix_nano),
        })
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// The point's value, or the staleness marker when the SDK flags it as having none.
fn value_or_stale(flags: u32, v: f64) -> f64 {
    if flags & DataPointFlags::NoRecordedValueMask as u32 != 0 {
        f64::from_bits(STALE_NAN_BITS)
    } else {
        v
    }
}

fn cumulative(temporality: i32) -> bool {
    temporality == AggregationTemporality::Cumulative as i32
}

/// Gauge and sum points: one sample each, a stale marker where OTLP flags no recorded value;
/// a sum's exemplars (`with_exemplars`) go on its series.
fn add_numbers(
    b: &mut Builder,
    identity: &[Label],
    name: &str,
    points: &[NumberDataPoint],
    with_exemplars: bool,
    seen: &mut impl FnMut(i64),
) {
    for p in points {
        let v = match p.value {
            Some(NumberValue::AsDouble(d)) => d,
            Some(NumberValue::AsInt(i)) => i as f64,
            None => continue,
        };
        let t = ms(p.time_unix_nano);
        seen(t);
        let series = b.add(
            &point_labels(identity, &p.attributes),
            name,
            None,
            t,
            value_or_stale(p.flags, v),
        );
        if with_exemplars {
            b.add_exemplars(series, exemplars(&p.exemplars));
        }
    }
}

fn add_points(
    b: &mut Builder,
    identity: &[Label],
    name: &str,
    data: &Data,
    newest: &mut Option<i64>,
) {
    let mut seen = |t: i64| *newest = Some(newest.map_or(t, |n| n.max(t)));
    match data {
        Data::Gauge(g) => add_numbers(b, identity, name, &g.data_points, false, &mut seen),
        Data::Sum(s) => {
            if !cumulative(s.aggregation_temporality) {
                b.reject(
                    s.data_points.len(),
                    format!("{name}: delta temporality is not supported"),
                );
                return;
            }
            add_numbers(b, identity, name, &s.data_points, true, &mut seen);
        }
        Data::Histogram(h) => {
            if !cumulative(h.aggregation_temporality) {
                b.reject(
                    h.data_points.len(),
                    format!("{name}: delta temporality is not supported"),
                );
                return;
            }
            for p in &h.data_points {
                if !p.bucket_counts.is_empty()
                    && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                {
                    b.reject(
                        1,
                        format!(
                            "{name}: histogram has {} bucket counts for {} bounds",
                            p.bucket_counts.len(),
                            p.explicit_bounds.len()
                        ),
                    );
                    continue;
                }
                let t = ms(p.time_unix_nano);
                seen(t);
                let base = point_labels(identity, &p.attributes);
                let bucket = format!("{name}_bucket");
                let mut acc = 0u64;
                let mut buckets = Vec::with_capacity(p.explicit_bounds.len() + 1);
                for (count, bound) in p.bucket_counts.iter().zip(&p.explicit_bounds) {
                    acc = acc.saturating_add(*count);
                    let series = b.add(
                        &base,
                        &bucket,
                        Some(("le", format_le(*bound))),
                        t,
                        value_or_stale(p.flags, acc as f64),
                    );
                    buckets.push((*bound, series));
                }
                let inf = b.add(
                    &base,
                    &bucket,
                    Some(("le", "+Inf".to_owned())),
                    t,
                    value_or_stale(p.flags, p.count as f64),
                );
                buckets.push((f64::INFINITY, inf));
                // Bounds sorted, as Prometheus sorts them before placing exemplars.
                buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
                for e in exemplars(&p.exemplars) {
                    // A NaN value is below no bound: it goes nowhere, as in Prometheus.
                    if let Some((_, series)) = buckets.iter().find(|(bound, _)| e.value <= *bound) {
                        b.add_exemplars(series.clone(), [e]);
                    }
                }
                if let Some(sum) = p.sum {
                    b.add(
                        &base,
                        &format!("{name}_sum"),
                        None,
                        t,
                        value_or_stale(p.flags, sum),
                    );
                }
                b.add(
                    &base,
                    &format!("{name}_count"),
                    None,
                    t,
                    value_or_stale(p.flags, p.count as f64),
                );
            }
        }
        Data::ExponentialHistogram(h) => {
            b.reject(
                h.data_points.len(),
                format!("{name}: exponential histograms are not supported"),
            );
        }
        Data::Summary(s) => {
            for p in &s.data_points {
                let t = ms(p.time_unix_nano);
                seen(t);
                let base = point_labels(identity, &p.attributes);
                for q in &p.quantile_values {
                    b.add(
                        &base,
                        name,
                        Some(("quantile", format_le(q.quantile))),
                        t,
                        value_or_stale(p.flags, q.value),
                    );
                }
                b.add(
                    &base,
                    &format!("{name}_sum"),
                    None,
                    t,
                    value_or_stale(p.flags, p.sum),
                );
                b.add(
                    &base,
                    &format!("{name}_count"),
                    None,
                    t,
                    value_or_stale(p.flags, p.count as f64),
                );
            }
        }
    }
}

/// Bucket bounds and quantiles as Prometheus prints them (`0.25`, `10`, `+Inf`).
fn format_le(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn resource(metrics: Vec<Metric>) -> ResourceMetrics {
        ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "shop"),
                    kv("service.instance.id", "i-1"),
                    kv("host.name", "h"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            schema_url: String::new(),
        }
    }

    fn point(t_ns: u64, v: f64) -> NumberDataPoint {
        NumberDataPoint {
            time_unix_nano: t_ns,
            value: Some(NumberValue::AsDouble(v)),
            attributes: vec![kv("http.method", "GET")],
            ..Default::default()
        }
    }

    fn find<'a>(c: &'a Converted, name: &str, extra: Option<(&str, &str)>) -> &'a SeriesBatch {
        c.series
            .iter()
            .find(|s| {
                s.labels.metric_name() == Some(name)
                    && extra.is_none_or(|(n, v)| s.labels.get(n) == Some(v))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{name} {extra:?} not in {:?}",
                    c.series.iter().map(|s| &s.labels).collect::<Vec<_>>()
                )
            })
    }

    fn otlp_exemplar(t_ms: u64, v: f64, attrs: Vec<KeyValue>) -> OtlpExemplar {
        OtlpExemplar {
            filtered_attributes: attrs,
            time_unix_nano: t_ms * 1_000_000,
            value: Some(ExemplarValue::AsDouble(v)),
            span_id: vec![0xab; 8],
            trace_id: vec![
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
        }
    }

    #[test]
    fn exemplars_go_on_the_sum_and_on_the_first_bucket_bound_not_below_them() {
        let cumulative = AggregationTemporality::Cumulative as i32;
        let with = |p: NumberDataPoint, e: Vec<OtlpExemplar>| NumberDataPoint { exemplars: e, ..p };
        let c = convert(&[resource(vec![
            Metric {
                name: "requests".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![with(
                        point(5_000_000, 3.0),
                        // Out of time order, as a reservoir hands them over.
                        vec![
                            otlp_exemplar(4, 1.0, vec![kv("user", "u1")]),
                            otlp_exemplar(3, 1.0, vec![kv("k", &"v".repeat(100))]),
                        ],
                    )],
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "queue.depth".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![with(
                        point(7_000_000, 2.0),
                        vec![otlp_exemplar(6, 2.0, vec![])],
                    )],
                })),
                ..Default::default()
            },
            Metric {
                name: "latency".into(),
                unit: "s".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: 6_000_000,
                        count: 5,
                        sum: Some(2.5),
                        bucket_counts: vec![1, 3, 1],
                        explicit_bounds: vec![0.1, 1.0],
                        exemplars: vec![
                            otlp_exemplar(1, 0.05, vec![]),
                            otlp_exemplar(2, 1.0, vec![]),
                            otlp_exemplar(3, 7.0, vec![]),
                            otlp_exemplar(4, f64::NAN, vec![]),
                        ],
                        ..Default::default()
                    }],
                    aggregation_temporality: cumulative,
                })),
                ..Default::default()
            },
        ])]);
        let of = |name: &str, extra| -> Vec<(i64, f64, Labels)> {
            c.exemplars
                .get(&find(&c, name, extra).labels)
                .map(|v| v.iter().map(|e| (e.t, e.value, e.labels.clone())).collect())
                .unwrap_or_default()
        };
        let ids = [
            ("span_id", "abababababababab"),
            ("trace_id", "0123456789abcdef0000000000000001"),
        ];
        let with_ids = |more: &[(&str, &str)]| Labels::from_pairs(ids.iter().chain(more).copied());
        // Ids alone take 8+16 + 7+32 = 63 characters: 100 more of attributes are left out.
        assert_eq!(
            of("requests_total", None),
            vec![
                (3, 1.0, with_ids(&[])),
                (4, 1.0, with_ids(&[("user", "u1")]))
            ]
        );
        assert_eq!(of("queue_depth", None), vec![]);
        assert_eq!(
            of("latency_seconds_bucket", Some(("le", "0.1"))),
            vec![(1, 0.05, with_ids(&[]))]
        );
        assert_eq!(
            of("latency_seconds_bucket", Some(("le", "1"))),
            vec![(2, 1.0, with_ids(&[]))]
        );
        assert_eq!(
            of("latency_seconds_bucket", Some(("le", "+Inf"))),
            vec![(3, 7.0, with_ids(&[]))]
        );
        assert_eq!(of("latency_seconds_count", None), vec![]);
    }

    #[test]
    fn counters_gauges_histograms_and_target_info() {
        let cumulative = AggregationTemporality::Cumulative as i32;
        let c = convert(&[resource(vec![
            Metric {
                name: "requests".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![point(5_000_000, 3.0)],
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "queue.depth".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![point(7_000_000, 2.0)],
                })),
                ..Default::default()
            },
            Metric {
                name: "latency".into(),
                unit: "s".into(),
                description: "how long".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: 6_000_000,
                        count: 5,
                        sum: Some(2.5),
                        bucket_counts: vec![1, 3, 1],
                        explicit_bounds: vec![0.1, 1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: cumulative,
                })),
                ..Default::default()
            },
        ])]);
        assert_eq!(c.rejected_points, 0);
        let req = find(&c, "requests_total", None);
        assert_eq!(req.labels.get("job"), Some("shop"));
        assert_eq!(req.labels.get("instance"), Some("i-1"));
        assert_eq!(req.labels.get("http_method"), Some("GET"));
        assert_eq!(
            req.labels.get("host_name"),
            None,
            "resource attributes go to target_info only"
        );
        assert_eq!(req.samples, vec![Sample { t: 5, v: 3.0 }]);
        assert_eq!(find(&c, "queue_depth", None).samples[0].v, 2.0);
        assert_eq!(
            find(&c, "latency_seconds_bucket", Some(("le", "0.1"))).samples[0].v,
            1.0
        );
        assert_eq!(
            find(&c, "latency_seconds_bucket", Some(("le", "1"))).samples[0].v,
            4.0
        );
        assert_eq!(
            find(&c, "latency_seconds_bucket", Some(("le", "+Inf"))).samples[0].v,
            5.0
        );
        assert_eq!(find(&c, "latency_seconds_sum", None).samples[0].v, 2.5);
        assert_eq!(find(&c, "latency_seconds_count", None).samples[0].v, 5.0);
        let ti = find(&c, "target_info", None);
        assert_eq!(ti.labels.get("host_name"), Some("h"));
        assert_eq!(
            ti.samples,
            vec![Sample { t: 7, v: 1.0 }],
            "at the newest point's time"
        );
        let md: HashMap<_, _> = c.metadata.iter().cloned().collect();
        assert_eq!(md["requests_total"].kind, "counter");
        assert_eq!(md["latency_seconds"].help, "how long");
    }

    #[test]
    fn delta_sums_and_malformed_histograms_are_rejected_with_a_reason() {
        let c = convert(&[resource(vec![
            Metric {
                name: "d".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![point(1, 1.0), point(2, 1.0)],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "h".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        count: 1,
                        bucket_counts: vec![1],
                        explicit_bounds: vec![1.0, 2.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            },
        ])]);
        assert_eq!(c.rejected_points, 3);
        assert_eq!(
            c.reason.as_deref(),
            Some("d_total: delta temporality is not supported")
        );
        assert!(c.series.is_empty());
    }

    #[test]
    fn no_recorded_value_is_a_staleness_marker() {
        let mut p = point(1_000_000, 9.0);
        p.flags = DataPointFlags::NoRecordedValueMask as u32;
        let c = convert(&[resource(vec![Metric {
            name: "g".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![p],
            })),
            ..Default::default()
        }])]);
        assert!(storage::is_stale_nan(find(&c, "g", None).samples[0].v));
    }
}
