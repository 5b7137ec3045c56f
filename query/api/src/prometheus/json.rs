//! Prometheus's exact JSON encoding of query results: sample values as strings in Go's
//! shortest round-trip form (`"+Inf"`, `"NaN"`, exponent below 1e-6 and from 1e21), timestamps
//! as seconds with millisecond fraction. Owns number formatting and the result envelope;
//! knows nothing of HTTP.

use std::fmt::Write;

use storage::{ExemplarSeries, Labels};

use promql::{FloatHistogram, QueryResult, Value};

use gocompat::fmt::{json_sample as format_value, write_json_sample};

/// A millisecond timestamp as Prometheus prints it: seconds, then `.mmm` when not whole.
pub(crate) fn write_timestamp(out: &mut String, t: i64) {
    let abs = t.unsigned_abs();
    if t < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

pub(crate) fn write_str(out: &mut String, s: &str) {
    // serde_json's string escaping is the JSON standard one, as Go's encoder produces.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

pub(crate) fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &l.name);
        out.push(':');
        write_str(out, &l.value);
    }
    out.push('}');
}

/// The answer of `/api/v1/query_exemplars`, as Prometheus's codec writes exemplars: labels
/// as an object, the value as a sample value string, the time as seconds.
pub(crate) fn exemplars(found: &[ExemplarSeries]) -> String {
    let mut out = String::from(r#"{"status":"success","data":["#);
    for (i, series) in found.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"seriesLabels":"#);
        write_labels(&mut out, &series.series_labels);
        out.push_str(r#","exemplars":["#);
        for (j, e) in series.exemplars.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(r#"{"labels":"#);
            write_labels(&mut out, &e.labels);
            out.push_str(r#","value":""#);
            write_json_sample(&mut out, e.value);
            out.push_str(r#"","timestamp":"#);
            write_timestamp(&mut out, e.t);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    write_json_sample(out, v);
    out.push_str("\"]");
}

/// A native histogram as Prometheus prints it: count, sum and the non-empty buckets as
/// `[boundary rule, lower, upper, count]` (rule 0: open left, 1: open right, 2: open both,
/// 3: closed both).
fn write_histogram(out: &mut String, h: &FloatHistogram) {
    let _ = write!(
        out,
        r#"{{"count":"{}","sum":"{}""#,
        format_value(h.count),
        format_value(h.sum)
    );
    let mut first = true;
    for b in h.buckets().iter().filter(|b| b.count != 0.0) {
        out.push_str(if first { r#","buckets":["# } else { "," });
        first = false;
        let rule = match (b.lower_inclusive, b.upper_inclusive) {
            (true, true) => 3,
            (true, false) => 1,
            (false, true) => 0,
            (false, false) => 2,
        };
        let _ = write!(
            out,
            r#"[{rule},"{}","{}","{}"]"#,
            format_value(b.lower),
            format_value(b.upper),
            format_value(b.count)
        );
    }
    if !first {
        out.push(']');
    }
    out.push('}');
}

fn write_histogram_point(out: &mut String, t: i64, h: &FloatHistogram) {
    out.push('[');
    write_timestamp(out, t);
    out.push(',');
    write_histogram(out, h);
    out.push(']');
}

/// `{"status":"success","data":{"resultType":…,"result":…},"warnings":…,"infos":…}`
pub(crate) fn query_result(res: &QueryResult) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(r#"{"status":"success","data":{"resultType":"#);
    match &res.value {
        Value::Scalar { t, v } => {
            out.push_str(r#""scalar","result":"#);
            write_point(&mut out, *t, *v);
        }
        Value::String { t, v } => {
            out.push_str(r#""string","result":["#);
            write_timestamp(&mut out, *t);
            out.push(',');
            write_str(&mut out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str(r#""vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                match &s.h {
                    Some(h) => {
                        out.push_str(r#","histogram":"#);
                        write_histogram_point(&mut out, s.t, h);
                    }
                    None => {
                        out.push_str(r#","value":"#);
                        write_point(&mut out, s.t, s.v);
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push_str(r#""matrix","result":["#);
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                if !s.samples.is_empty() || s.histograms.is_empty() {
                    out.push_str(r#","values":["#);
                    for (j, p) in s.samples.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_point(&mut out, p.t, p.v);
                    }
                    out.push(']');
                }
                if !s.histograms.is_empty() {
                    out.push_str(r#","histograms":["#);
                    for (j, p) in s.histograms.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        write_histogram_point(&mut out, p.t, &p.h);
                    }
                    out.push(']');
                }
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push('}');
    write_notes(&mut out, "warnings", &res.warnings);
    write_notes(&mut out, "infos", &res.infos);
    out.push('}');
    out
}

fn write_notes(out: &mut String, key: &str, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    let _ = write!(out, r#","{key}":["#);
    for (i, n) in notes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, n);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_format_like_go_strconv() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-2.5), "-2.5");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(
            format_value(123456789012345680000.0),
            "123456789012345680000"
        );
        assert_eq!(format_value(1.5e-7), "1.5e-07");
        assert_eq!(format_value(0.000001), "0.000001");
        assert_eq!(
            format_value(1.7976931348623157e308),
            "1.7976931348623157e+308"
        );
        assert_eq!(format_value(1.0 / 3.0), "0.3333333333333333");
    }

    #[test]
    fn histograms_print_like_prometheus() {
        use promql::{HistogramPoint, InstantSample, RangeSeries, Span};
        let h = FloatHistogram {
            schema: 0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            count: 7.0,
            sum: 10.5,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            positive_buckets: vec![1.0, 0.0],
            negative_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            negative_buckets: vec![4.0],
            ..FloatHistogram::default()
        };
        let res = |value| QueryResult {
            value,
            warnings: vec![],
            infos: vec![],
        };
        let labels = Labels::from_pairs([("a", "b")]);
        let v = query_result(&res(Value::Vector(vec![InstantSample {
            labels: labels.clone(),
            t: 1500,
            v: 0.0,
            h: Some(h.clone()),
        }])));
        let want_h = r#"{"count":"7","sum":"10.5","buckets":[[1,"-2","-1","4"],[3,"-0.001","0.001","2"],[0,"0.5","1","1"]]}"#;
        assert_eq!(
            v,
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"a":"b"}},"histogram":[1.500,{want_h}]}}]}}}}"#
            )
        );
        let m = query_result(&res(Value::Matrix(vec![RangeSeries {
            labels,
            samples: vec![],
            histograms: vec![HistogramPoint { t: 2000, h }],
        }])));
        assert_eq!(
            m,
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"a":"b"}},"histograms":[[2,{want_h}]]}}]}}}}"#
            )
        );
    }

    #[test]
    fn exemplars_print_like_prometheus() {
        let found = vec![storage::ExemplarSeries {
            series_labels: Labels::from_pairs([("__name__", "x"), ("job", "a\"b")]),
            exemplars: vec![
                storage::Exemplar {
                    labels: Labels::from_pairs([("trace_id", "EpTxMJ40fUus7aGY")]),
                    value: 6.0,
                    t: 1_600_096_945_479,
                },
                storage::Exemplar {
                    labels: Labels::default(),
                    value: f64::INFINITY,
                    t: 1_600_096_946_000,
                },
            ],
        }];
        assert_eq!(
            exemplars(&found),
            concat!(
                r#"{"status":"success","data":[{"seriesLabels":{"__name__":"x","job":"a\"b"},"#,
                r#""exemplars":[{"labels":{"trace_id":"EpTxMJ40fUus7aGY"},"value":"6","timestamp":1600096945.479},"#,
                r#"{"labels":{},"value":"+Inf","timestamp":1600096946}]}]}"#
            )
        );
        assert_eq!(exemplars(&[]), r#"{"status":"success","data":[]}"#);
    }

    #[test]
    fn timestamps_are_seconds_with_millisecond_fraction() {
        let cases = [
            (0, "0"),
            (1500, "1.500"),
            (1_435_781_451_781, "1435781451.781"),
            (5, "0.005"),
            (-1500, "-1.500"),
        ];
        for (t, want) in cases {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            assert_eq!(s, want, "t={t}");
        }
    }
}
