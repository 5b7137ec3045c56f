//! `load_with_nhcb`: classic histogram series (`X_bucket{le=…}`, `X_count`, `X_sum`) are also
//! loaded as one native histogram series with custom buckets (`X`), one sample per timestamp,
//! as Prometheus's test harness does. Owns that conversion only.

use std::collections::BTreeMap;

use storage::{HistogramSample, Label, Labels, SeriesBatch, METRIC_NAME};

use super::script::{SeqValue, SeriesDesc};
use crate::float_histogram::{FloatHistogram, Span, CUSTOM_BUCKETS_SCHEMA};

#[derive(Default)]
struct Temp {
    /// (le, cumulative count), first value per bound wins.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
}

enum Part {
    Bucket(f64),
    Count,
    Sum,
}

fn parse_le(s: &str) -> Option<f64> {
    let v = match s.trim().to_ascii_lowercase().as_str() {
        "+inf" | "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        t => t.parse::<f64>().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

pub(super) fn convert(interval: i64, series: &[SeriesDesc]) -> Vec<SeriesBatch> {
    let mut groups: BTreeMap<Labels, BTreeMap<i64, Temp>> = BTreeMap::new();
    for s in series {
        let Some(name) = s.labels.metric_name() else {
            continue;
        };
        let (base, part) = if let Some(b) = name.strip_suffix("_bucket") {
            match s.labels.get("le").and_then(parse_le) {
                Some(le) => (b, Part::Bucket(le)),
                None => continue,
            }
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, Part::Count)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, Part::Sum)
        } else {
            continue;
        };
        let labels = Labels::new(
            s.labels
                .iter()
                .filter(|l| l.name != "le")
                .map(|l| {
                    if l.name == METRIC_NAME {
                        Label::new(METRIC_NAME, base)
                    } else {
                        l.clone()
                    }
                })
                .collect(),
        );
        let by_t = groups.entry(labels).or_default();
        for (i, v) in s.values.iter().enumerate() {
            let SeqValue::Float(f) = v else { continue };
            let temp = by_t.entry(i as i64 * interval).or_default();
            match part {
                Part::Bucket(le) => {
                    if !temp.buckets.iter().any(|b| b.0 == le) {
                        temp.buckets.push((le, *f));
                    }
                }
                Part::Count => temp.count = Some(*f),
                Part::Sum => temp.sum = Some(*f),
            }
        }
    }
    groups
        .into_iter()
        .filter_map(|(labels, by_t)| {
            let histograms: Vec<HistogramSample> = by_t
                .into_iter()
                .filter(|(_, temp)| !temp.buckets.is_empty())
                .map(|(t, temp)| HistogramSample {
                    t,
                    h: storage::Histogram::from(&to_histogram(temp)),
                })
                .collect();
            (!histograms.is_empty()).then(|| SeriesBatch {
                labels,
                samples: Vec::new(),
                histograms,
            })
        })
        .collect()
}

fn to_histogram(mut temp: Temp) -> FloatHistogram {
    temp.buckets
        .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if temp.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        let total = temp
            .count
            .unwrap_or_else(|| temp.buckets.last().map_or(0.0, |b| b.1));
        temp.buckets.push((f64::INFINITY, total));
    }
    let mut prev = 0.0;
    let mut counts = Vec::with_capacity(temp.buckets.len());
    for &(_, cum) in &temp.buckets {
        counts.push(cum - prev);
        prev = cum;
    }
    let custom_values: Vec<f64> = temp
        .buckets
        .iter()
        .map(|b| b.0)
        .filter(|le| le.is_finite())
        .collect();
    FloatHistogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        count: temp.count.unwrap_or(prev),
        sum: temp.sum.unwrap_or(0.0),
        positive_spans: vec![Span {
            offset: 0,
            length: counts.len() as u32,
        }],
        positive_buckets: counts,
        custom_values,
        ..FloatHistogram::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promqltest::script::{parse_series, MAX_LOAD_VALUES};

    #[test]
    fn classic_buckets_become_custom_buckets() {
        let series: Vec<SeriesDesc> = [
            r#"x_bucket{le="1", a="b"} 1 2"#,
            r#"x_bucket{le="+Inf", a="b"} 3 5"#,
            r#"x_sum{a="b"} 7 9"#,
        ]
        .iter()
        .map(|l| parse_series(l, &mut MAX_LOAD_VALUES.clone()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
        let out = convert(1000, &series);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels.to_string(), r#"x{a="b"}"#);
        let h = FloatHistogram::from(out[0].histograms[1].h.clone());
        assert_eq!(out[0].histograms[1].t, 1000);
        assert_eq!(h.custom_values, vec![1.0]);
        assert_eq!(h.positive_buckets, vec![2.0, 3.0]);
        assert_eq!((h.count, h.sum), (5.0, 9.0));
    }
}
