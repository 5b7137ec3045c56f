//! The protobuf messages of remote-write 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`), written as prost derives so no protoc is needed. Owns
//! only the wire shapes; what the fields mean and whether they are valid is `decode`'s job.
//!
//! Field numbers follow Prometheus's `prompb/types.proto`, `prompb/remote.proto` and
//! `prompb/io/prometheus/write/v2/types.proto`. prost skips fields it does not know, so
//! fields added by newer senders (or the reserved Cortex `source` field) are harmless.

/// Remote-write 1.0: `package prometheus`.
pub mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<super::Histogram>,
    }

    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        Gaugehistogram = 4,
        Summary = 5,
        Info = 6,
        Stateset = 7,
    }
}

/// Remote-write 2.0: `package io.prometheus.write.v2`.
pub mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// Fields 1-3 are reserved so that a 1.0 message read as 2.0 decodes as empty.
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Pairs of indices into `Request::symbols`: name, value, name, value, ...
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<super::Histogram>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// 2.0-rc.3; rc.4 reserved the field and moved it to `Sample::start_timestamp`.
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
        /// 2.0-rc.4; zero means unset.
        #[prost(int64, tag = "3")]
        pub start_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Unspecified = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        Gaugehistogram = 4,
        Summary = 5,
        Info = 6,
        Stateset = 7,
    }
}

/// A native histogram sample; 1.0 and 2.0 share the layout.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
    /// 2.0-rc.4 only; zero means unset.
    #[prost(int64, tag = "17")]
    pub start_timestamp: i64,
}

pub mod histogram {
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        Unspecified = 0,
        Yes = 1,
        No = 2,
        Gauge = 3,
    }
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn histogram() -> Histogram {
        Histogram {
            count: Some(histogram::Count::CountInt(12)),
            sum: 3.5,
            schema: -53,
            zero_threshold: 0.001,
            zero_count: Some(histogram::ZeroCount::ZeroCountFloat(1.5)),
            negative_spans: vec![BucketSpan {
                offset: -2,
                length: 1,
            }],
            negative_deltas: vec![-3],
            negative_counts: vec![],
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_deltas: vec![4, -1],
            positive_counts: vec![2.5],
            reset_hint: histogram::ResetHint::Gauge as i32,
            timestamp: -17,
            custom_values: vec![0.1, 1.0],
            start_timestamp: 9,
        }
    }

    fn v1_request() -> v1::WriteRequest {
        let label = |n: &str, v: &str| v1::Label {
            name: n.into(),
            value: v.into(),
        };
        v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "node")],
                samples: vec![v1::Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
                exemplars: vec![v1::Exemplar {
                    labels: vec![label("trace_id", "abc")],
                    value: 2.0,
                    timestamp: 5,
                }],
                histograms: vec![histogram()],
            }],
            metadata: vec![v1::MetricMetadata {
                r#type: v1::MetricType::Gaugehistogram as i32,
                metric_family_name: "up".into(),
                help: "Whether the target is up.".into(),
                unit: "".into(),
            }],
        }
    }

    fn v2_request() -> v2::Request {
        v2::Request {
            symbols: vec![
                "".into(),
                "__name__".into(),
                "up".into(),
                "help text".into(),
            ],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![v2::Sample {
                    value: f64::INFINITY,
                    timestamp: 3,
                    start_timestamp: 1,
                }],
                histograms: vec![histogram()],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![1, 2],
                    value: 0.5,
                    timestamp: 4,
                }],
                metadata: Some(v2::Metadata {
                    r#type: v2::MetricType::Stateset as i32,
                    help_ref: 3,
                    unit_ref: 0,
                }),
                created_timestamp: 2,
            }],
        }
    }

    #[test]
    fn v1_round_trips() {
        let req = v1_request();
        assert_eq!(
            v1::WriteRequest::decode(req.encode_to_vec().as_slice()).unwrap(),
            req
        );
    }

    #[test]
    fn v2_round_trips() {
        let req = v2_request();
        assert_eq!(
            v2::Request::decode(req.encode_to_vec().as_slice()).unwrap(),
            req
        );
    }

    /// Hand-encoded bytes pin the field numbers and wire types, which a round trip cannot.
    #[test]
    fn v1_field_numbers_match_prompb() {
        // WriteRequest{timeseries: [TimeSeries{labels: [{"a","b"}], samples: [{value: 1.0, ts: 2}]}]}
        let label = [0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
        let mut sample = vec![0x09];
        sample.extend_from_slice(&1.0f64.to_le_bytes());
        sample.extend_from_slice(&[0x10, 0x02]);
        let mut series = vec![0x0a, label.len() as u8];
        series.extend_from_slice(&label);
        series.extend_from_slice(&[0x12, sample.len() as u8]);
        series.extend_from_slice(&sample);
        let mut bytes = vec![0x0a, series.len() as u8];
        bytes.extend_from_slice(&series);
        // metadata (field 3): {type: COUNTER, metric_family_name: "a", help: "h", unit: "u"}
        bytes.extend_from_slice(&[
            0x1a, 0x0b, 0x08, 0x01, 0x12, 0x01, b'a', 0x22, 0x01, b'h', 0x2a, 0x01, b'u',
        ]);

        let req = v1::WriteRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 1);
        assert_eq!(
            req.timeseries[0].labels,
            vec![v1::Label {
                name: "a".into(),
                value: "b".into()
            }]
        );
        assert_eq!(
            req.timeseries[0].samples,
            vec![v1::Sample {
                value: 1.0,
                timestamp: 2
            }]
        );
        let md = &req.metadata[0];
        assert_eq!(
            (md.r#type, md.metric_family_name.as_str()),
            (v1::MetricType::Counter as i32, "a")
        );
        assert_eq!((md.help.as_str(), md.unit.as_str()), ("h", "u"));
    }

    #[test]
    fn v2_field_numbers_match_spec() {
        // Request{symbols: ["", "a"], timeseries: [{labels_refs: [1, 1], samples: [{ts: 7}],
        //   metadata: {type: GAUGE, help_ref: 1, unit_ref: 0}}]}
        let series = [
            0x0a, 0x02, 0x01, 0x01, // labels_refs, packed
            0x12, 0x02, 0x10, 0x07, // samples
            0x2a, 0x06, 0x08, 0x02, 0x18, 0x01, 0x20, 0x00, // metadata
        ];
        let mut bytes = vec![0x22, 0x00, 0x22, 0x01, b'a', 0x2a, series.len() as u8];
        bytes.extend_from_slice(&series);
        let req = v2::Request::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.symbols, vec!["".to_string(), "a".to_string()]);
        let ts = &req.timeseries[0];
        assert_eq!(ts.labels_refs, vec![1, 1]);
        assert_eq!(
            ts.samples,
            vec![v2::Sample {
                value: 0.0,
                timestamp: 7,
                start_timestamp: 0
            }]
        );
        assert_eq!(
            ts.metadata,
            Some(v2::Metadata {
                r#type: v2::MetricType::Gauge as i32,
                help_ref: 1,
                unit_ref: 0
            })
        );
    }

    #[test]
    fn unknown_and_reserved_fields_are_skipped() {
        let mut bytes = v1_request().encode_to_vec();
        // The reserved Cortex `source` field (2, varint) and an unknown length-delimited field 99.
        bytes.extend_from_slice(&[0x10, 0x01, 0x9a, 0x06, 0x02, 0xff, 0xff]);
        assert_eq!(
            v1::WriteRequest::decode(bytes.as_slice()).unwrap(),
            v1_request()
        );
    }

    #[test]
    fn v1_payload_read_as_v2_is_empty() {
        let bytes = v1_request().encode_to_vec();
        assert_eq!(
            v2::Request::decode(bytes.as_slice()).unwrap(),
            v2::Request::default()
        );
    }
}
