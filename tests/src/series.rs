//! Building remote-write requests for tests, with the receiver's own protobuf messages.

use ingest::remote_write::proto::v1;
use prost::Message;

pub const V1: &str = "application/x-protobuf";
pub const V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// One series given as `name{k="v",…}` pairs plus (t, v) samples.
pub fn v1_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| v1::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

pub fn v1_request(series: Vec<v1::TimeSeries>) -> Vec<u8> {
    v1::WriteRequest {
        timeseries: series,
        ..Default::default()
    }
    .encode_to_vec()
}
