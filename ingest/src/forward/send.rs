//! The wire side of forwarding: a batch of series entries encoded as remote-write 1.0 or 2.0
//! (snappy-compressed protobuf, the receiver's own message types), metadata as 1.0 sends it,
//! and one POST over a kept-alive connection, its response classified as the spec says:
//! sent, retry (5xx, 429 when configured, transport errors, after `Retry-After` when given)
//! or refused (other 4xx). Owns no queueing and no retry loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use prost::Message;
use storage::{Exemplar, HistogramSample, Label, Metadata, Sample};

use super::config::{Endpoint, MESSAGE_V2};
use crate::remote_write::proto::{self, v1, v2};

pub(crate) const USER_AGENT: &str = concat!("novamon/", env!("CARGO_PKG_VERSION"));

/// Most bytes of a response body read (for the error message); a longer body is not read
/// and its connection not reused, so a receiver answering garbage costs no more than this.
const MAX_RESPONSE_BYTES: usize = 4096;

/// One series' data from one outbox record, as sent: labels after external labels and
/// `write_relabel_configs`, sorted by name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// The outbox record it came from.
    pub(crate) seq: u64,
    /// Shared by every entry of the series (the reader caches it per label set).
    pub(crate) labels: Arc<[Label]>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) histograms: Vec<HistogramSample>,
    pub(crate) exemplars: Vec<Exemplar>,
}

impl Entry {
    /// What the entry counts for against a shard's capacity and a batch's size.
    pub(crate) fn weight(&self) -> usize {
        (self.samples.len() + self.histograms.len() + self.exemplars.len()).max(1)
    }
}

fn v1_labels(labels: &[Label]) -> Vec<v1::Label> {
    labels
        .iter()
        .map(|l| v1::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// Stored histograms are float histograms with absolute bucket counts.
fn histogram(h: &HistogramSample) -> proto::Histogram {
    let spans = |s: &[storage::HistogramSpan]| {
        s.iter()
            .map(|s| proto::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    proto::Histogram {
        count: Some(proto::histogram::Count::CountFloat(h.h.count)),
        sum: h.h.sum,
        schema: h.h.schema,
        zero_threshold: h.h.zero_threshold,
        zero_count: Some(proto::histogram::ZeroCount::ZeroCountFloat(h.h.zero_count)),
        negative_spans: spans(&h.h.negative_spans),
        negative_deltas: Vec::new(),
        negative_counts: h.h.negative_buckets.clone(),
        positive_spans: spans(&h.h.positive_spans),
        positive_deltas: Vec::new(),
        positive_counts: h.h.positive_buckets.clone(),
        reset_hint: i32::from(h.h.counter_reset_hint),
        timestamp: h.t,
        custom_values: h.h.custom_values.clone(),
        start_timestamp: 0,
    }
}

pub(crate) fn snappy(raw: &[u8]) -> Bytes {
    // Only fails on inputs beyond snappy's 4 GiB limit, far above any batch.
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// A 1.0 `WriteRequest` of the entries, compressed. Labels and samples are written straight
/// from the entries (prost's messages would need every label string copied, for every
/// sample, which cost more than the rest of forwarding together); exemplars and histograms,
/// rare, go through prost.
pub(crate) fn encode_v1(entries: &[Entry]) -> Bytes {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    fn string(tag: u32, s: &str, out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }
    fn string_len(s: &str) -> usize {
        1 + encoded_len_varint(s.len() as u64) + s.len()
    }
    let mut out = Vec::with_capacity(entries.len() * 160);
    let mut series = Vec::with_capacity(256);
    for e in entries {
        series.clear();
        for l in e.labels.iter() {
            encode_key(1, WireType::LengthDelimited, &mut series);
            encode_varint(
                (string_len(&l.name) + string_len(&l.value)) as u64,
                &mut series,
            );
            string(1, &l.name, &mut series);
            string(2, &l.value, &mut series);
        }
        for s in &e.samples {
            encode_key(2, WireType::LengthDelimited, &mut series);
            encode_varint((10 + encoded_len_varint(s.t as u64)) as u64, &mut series);
            encode_key(1, WireType::SixtyFourBit, &mut series);
            series.extend_from_slice(&s.v.to_bits().to_le_bytes());
            encode_key(2, WireType::Varint, &mut series);
            encode_varint(s.t as u64, &mut series);
        }
        for x in &e.exemplars {
            let x = v1::Exemplar {
                labels: v1_labels(x.labels.as_slice()),
                value: x.value,
                timestamp: x.t,
            };
            prost::encoding::message::encode(3, &x, &mut series);
        }
        for h in &e.histograms {
            prost::encoding::message::encode(4, &histogram(h), &mut series);
        }
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(series.len() as u64, &mut out);
        out.extend_from_slice(&series);
    }
    snappy(&out)
}

/// A 2.0 request's symbol table: every string once, "" first.
struct Symbols<'a> {
    refs: HashMap<&'a str, u32>,
    table: Vec<String>,
}

impl<'a> Symbols<'a> {
    fn new() -> Symbols<'a> {
        Symbols {
            refs: HashMap::from([("", 0)]),
            table: vec![String::new()],
        }
    }

    fn labels(&mut self, labels: &'a [Label]) -> Vec<u32> {
        let mut out = Vec::with_capacity(labels.len() * 2);
        for l in labels {
            out.push(self.get(&l.name));
            out.push(self.get(&l.value));
        }
        out
    }

    fn get(&mut self, s: &'a str) -> u32 {
        let table = &mut self.table;
        *self.refs.entry(s).or_insert_with(|| {
            table.push(s.to_owned());
            table.len() as u32 - 1
        })
    }
}

/// A 2.0 `Request` of the entries (labels as references into one symbol table), compressed.
pub(crate) fn encode_v2(entries: &[Entry]) -> Bytes {
    let mut symbols = Symbols::new();
    let mut timeseries = Vec::with_capacity(entries.len());
    for e in entries {
        timeseries.push(v2::TimeSeries {
            labels_refs: symbols.labels(&e.labels),
            samples: e
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.v,
                    timestamp: s.t,
                    start_timestamp: 0,
                })
                .collect(),
            histograms: e.histograms.iter().map(histogram).collect(),
            exemplars: e
                .exemplars
                .iter()
                .map(|x| v2::Exemplar {
                    labels_refs: symbols.labels(x.labels.as_slice()),
                    value: x.value,
                    timestamp: x.t,
                })
                .collect(),
            metadata: None,
            created_timestamp: 0,
        });
    }
    snappy(
        &v2::Request {
            symbols: symbols.table,
            timeseries,
        }
        .encode_to_vec(),
    )
}

/// A 1.0 `WriteRequest` carrying metadata only, as Prometheus sends it every
/// `metadata_config.send_interval`.
pub(crate) fn encode_metadata(families: &[(String, Metadata)]) -> Bytes {
    let kind = |k: &str| match k {
        "counter" => v1::MetricType::Counter,
        "gauge" => v1::MetricType::Gauge,
        "histogram" => v1::MetricType::Histogram,
        "gaugehistogram" => v1::MetricType::Gaugehistogram,
        "summary" => v1::MetricType::Summary,
        "info" => v1::MetricType::Info,
        "stateset" => v1::MetricType::Stateset,
        _ => v1::MetricType::Unknown,
    };
    let req = v1::WriteRequest {
        timeseries: Vec::new(),
        metadata: families
            .iter()
            .map(|(name, md)| v1::MetricMetadata {
                r#type: kind(&md.kind) as i32,
                metric_family_name: name.clone(),
                help: md.help.clone(),
                unit: md.unit.clone(),
            })
            .collect(),
    };
    snappy(&req.encode_to_vec())
}

/// How a receiver answered.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// 2xx. For 2.0, whether the response said how much it wrote (the spec's headers): a
    /// 1.0 receiver answers 2xx without them, having read nothing of a 2.0 body. `body`:
    /// what it answered (an OTLP receiver's partial success).
    Sent { counts_reported: bool, body: Bytes },
    /// Worth sending again: after `after` when the receiver said (`Retry-After`).
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Not worth sending again (4xx). `status` 415 to a 2.0 request means "send 1.0".
    Refused { status: u16, why: String },
}

/// What a request carries, as its headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// Remote-write 1.0 or 2.0, snappy-compressed.
    RemoteWrite { v2: bool },
    /// Loki's `logproto.PushRequest`, snappy-compressed.
    LokiPush,
    /// An OTLP/HTTP export request, protobuf.
    Otlp,
}

/// The longest `Retry-After` honoured: a receiver cannot park a queue for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Capped exponential back-off between retries of one request.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { next: min, max }
    }

    /// How long to wait before the next try: what the receiver asked (`Retry-After`, capped)
    /// or the back-off, which doubles each time up to its maximum.
    pub(crate) fn wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.map_or(self.next, |a| a.min(MAX_RETRY_AFTER));
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// One destination's connection, kept alive between requests.
#[derive(Default)]
pub(crate) struct Client {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// POSTs `body` within the endpoint's timeout.
    pub(crate) async fn post(
        &mut self,
        endpoint: &Endpoint,
        body: Bytes,
        kind: BodyKind,
        retry_on_429: bool,
    ) -> Outcome {
        let v2 = kind == BodyKind::RemoteWrite { v2: true };
        match tokio::time::timeout(endpoint.timeout, self.exchange(endpoint, body, kind)).await {
            Ok(Ok((status, headers, body))) => classify(status, &headers, body, v2, retry_on_429),
            Ok(Err(why)) => {
                self.sender = None;
                Outcome::Retry { after: None, why }
            }
            Err(_) => {
                // The connection may hold half a response: start afresh.
                self.sender = None;
                Outcome::Retry {
                    after: None,
                    why: "context deadline exceeded".into(),
                }
            }
        }
    }

    async fn exchange(
        &mut self,
        endpoint: &Endpoint,
        body: Bytes,
        kind: BodyKind,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
        let mut req = hyper::Request::post(endpoint.path_and_query.as_str())
            .header(hyper::header::HOST, endpoint.host.as_str())
            .header(hyper::header::USER_AGENT, USER_AGENT);
        req = match kind {
            BodyKind::RemoteWrite { v2 } => {
                let (content_type, version) = if v2 {
                    (
                        format!("application/x-protobuf;proto={MESSAGE_V2}"),
                        "2.0.0",
                    )
                } else {
                    ("application/x-protobuf".to_owned(), "0.1.0")
                };
                req.header(hyper::header::CONTENT_TYPE, content_type)
                    .header(hyper::header::CONTENT_ENCODING, "snappy")
                    .header("X-Prometheus-Remote-Write-Version", version)
            }
            // Loki's clients send snappy without saying so in Content-Encoding.
            BodyKind::LokiPush | BodyKind::Otlp => {
                req.header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            }
        };
        if let Some(auth) = endpoint.auth.header()? {
            req = req.header(hyper::header::AUTHORIZATION, auth);
        }
        for (k, v) in &endpoint.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let alive = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            self.sender = Some(
                crate::scrape::client::connect(
                    &endpoint.address,
                    endpoint.tls.as_ref(),
                    endpoint.server_name.as_deref(),
                )
                .await?,
            );
        }
        let sender = self.sender.as_mut().expect("connected above");
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let (parts, mut body) = resp.into_parts();
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                let room = MAX_RESPONSE_BYTES - text.len();
                text.extend_from_slice(&data[..data.len().min(room)]);
                if data.len() >= room {
                    // The rest is not read: this connection cannot carry another request.
                    self.sender = None;
                    break;
                }
            }
        }
        Ok((status, parts.headers, Bytes::from(text)))
    }
}

fn classify(
    status: u16,
    headers: &hyper::HeaderMap,
    body: Bytes,
    v2: bool,
    retry_on_429: bool,
) -> Outcome {
    let why = || {
        let text = String::from_utf8_lossy(&body);
        format!("server returned HTTP status {status}: {}", text.trim())
    };
    match status {
        200..=299 => Outcome::Sent {
            counts_reported: !v2
                || headers.contains_key("X-Prometheus-Remote-Write-Samples-Written"),
            body,
        },
        500..=599 => Outcome::Retry {
            after: retry_after(headers),
            why: why(),
        },
        429 if retry_on_429 => Outcome::Retry {
            after: retry_after(headers),
            why: why(),
        },
        _ => Outcome::Refused { status, why: why() },
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, samples: &[(i64, f64)]) -> Entry {
        Entry {
            seq: 0,
            labels: vec![Label::new("__name__", name), Label::new("job", "j")].into(),
            samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
            histograms: Vec::new(),
            exemplars: Vec::new(),
        }
    }

    fn decode_v1(b: &Bytes) -> v1::WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(b).unwrap();
        v1::WriteRequest::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn both_versions_carry_the_same_series() {
        let entries = [entry("a", &[(1, 1.0), (2, 2.0)]), entry("b", &[(1, 3.0)])];
        let req = decode_v1(&encode_v1(&entries));
        assert_eq!(req.timeseries.len(), 2);
        assert_eq!(req.timeseries[0].labels[0].value, "a");
        assert_eq!(req.timeseries[0].samples[1].timestamp, 2);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&encode_v2(&entries))
            .unwrap();
        let req = v2::Request::decode(raw.as_slice()).unwrap();
        // "" first; every string once.
        assert_eq!(req.symbols, ["", "__name__", "a", "job", "j", "b"]);
        assert_eq!(req.timeseries[1].labels_refs, [1, 5, 3, 4]);
        assert_eq!(req.timeseries[1].samples[0].value, 3.0);
    }

    /// The hand-written 1.0 encoding is what prost makes of the same request.
    #[test]
    fn v1_is_encoded_as_prost_would() {
        let mut e = entry("a", &[(-5, 0.0), (1_700_000_000_000, f64::NAN), (0, -1.5)]);
        e.exemplars.push(Exemplar {
            labels: storage::Labels::from_pairs([("trace_id", "abc")]),
            value: 2.0,
            t: 7,
        });
        e.histograms.push(HistogramSample {
            t: 9,
            h: storage::Histogram {
                count: 3.0,
                sum: 1.5,
                positive_spans: vec![storage::HistogramSpan {
                    offset: 0,
                    length: 1,
                }],
                positive_buckets: vec![3.0],
                ..storage::Histogram::default()
            },
        });
        let entries = [e.clone(), entry("b", &[])];
        let want = v1::WriteRequest {
            timeseries: entries
                .iter()
                .map(|e| v1::TimeSeries {
                    labels: v1_labels(&e.labels),
                    samples: e
                        .samples
                        .iter()
                        .map(|s| v1::Sample {
                            value: s.v,
                            timestamp: s.t,
                        })
                        .collect(),
                    exemplars: e
                        .exemplars
                        .iter()
                        .map(|x| v1::Exemplar {
                            labels: v1_labels(x.labels.as_slice()),
                            value: x.value,
                            timestamp: x.t,
                        })
                        .collect(),
                    histograms: e.histograms.iter().map(histogram).collect(),
                })
                .collect(),
            metadata: Vec::new(),
        };
        let got = decode_v1(&encode_v1(&entries));
        // NaN is not equal to itself: compare the bits through the debug form.
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert_eq!(
            got.timeseries[0].samples[1].value.to_bits(),
            f64::NAN.to_bits()
        );
    }

    #[test]
    fn responses_are_classified_as_the_spec_says() {
        let mut h = hyper::HeaderMap::new();
        let sent = |v2, h: &hyper::HeaderMap| classify(204, h, Bytes::new(), v2, false);
        assert_eq!(
            sent(false, &h),
            Outcome::Sent {
                counts_reported: true,
                body: Bytes::new()
            }
        );
        // A 1.0 receiver's 2xx to a 2.0 body: fall back.
        assert_eq!(
            sent(true, &h),
            Outcome::Sent {
                counts_reported: false,
                body: Bytes::new()
            }
        );
        h.insert(
            "X-Prometheus-Remote-Write-Samples-Written",
            "3".parse().unwrap(),
        );
        assert_eq!(
            sent(true, &h),
            Outcome::Sent {
                counts_reported: true,
                body: Bytes::new()
            }
        );
        h.insert(hyper::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            classify(503, &h, "busy".into(), false, false),
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                why: "server returned HTTP status 503: busy".into()
            }
        );
        assert!(matches!(
            classify(429, &h, Bytes::new(), false, false),
            Outcome::Refused { status: 429, .. }
        ));
        assert!(matches!(
            classify(429, &h, Bytes::new(), false, true),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(400, &h, Bytes::new(), false, true),
            Outcome::Refused { status: 400, .. }
        ));
        h.insert(
            hyper::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
