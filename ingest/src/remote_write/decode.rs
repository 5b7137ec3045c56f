//! Turns a compressed remote-write body into validated series, ready for `Tsdb::append`:
//! snappy (with the size limit checked before allocating), protobuf, symbol resolution (2.0),
//! label validation. Owns what counts as a valid series; never touches storage.

use std::collections::HashMap;
use std::mem::size_of;

use prost::Message;
use storage::{
    EncodedBatch, Exemplar, Histogram as StoredHistogram, HistogramSample, HistogramSpan, Labels,
    Metadata, Sample, METRIC_NAME,
};

use super::error::RemoteWriteError;
use super::negotiate::Protocol;
use super::proto::{v1, v2, Histogram};
use crate::metrics::DropReason;
use crate::wire::{self, Field, Shape, Value, WireError};
use crate::{Limits, EXPANSION_FLOOR_BYTES};

/// A decoded request: the series that passed validation (label sets encoded, ready for the
/// store), the metadata it carried, and the series (or parts of series) that did not pass.
#[derive(Debug, Default)]
pub struct DecodedWrite {
    pub(crate) series: EncodedBatch,
    pub(crate) metadata: Vec<(String, Metadata)>,
    pub(crate) invalid: Vec<InvalidSeries>,
}

impl DecodedWrite {
    /// The valid series with samples or exemplars (series with neither are left out).
    pub fn series(&self) -> &EncodedBatch {
        &self.series
    }

    /// One message per series (or part of a series) that cannot be written.
    pub fn errors(&self) -> impl Iterator<Item = &str> {
        self.invalid.iter().map(|i| i.message.as_str())
    }
}

/// Samples that validation refused, and why.
#[derive(Debug)]
pub(crate) struct InvalidSeries {
    pub(crate) message: String,
    pub(crate) reason: DropReason,
    /// Float and histogram samples refused.
    pub(crate) samples: usize,
}

/// Decompresses, decodes and validates a remote-write body of the given protocol.
pub fn decode(
    protocol: Protocol,
    body: &[u8],
    limits: &Limits,
) -> Result<DecodedWrite, RemoteWriteError> {
    let raw = decompress(body, limits.max_decompressed_bytes)?;
    let budget = wire::budget(raw.len(), limits.max_expansion, EXPANSION_FLOOR_BYTES);
    match protocol {
        Protocol::V1 => from_v1(&raw, limits, wire::Budget::new(budget)),
        Protocol::V2 => {
            let scan = wire::scan(&raw, &V2_REQUEST, budget)?;
            check_series_count(scan.count(V2_SERIES.name), limits)?;
            from_v2(v2::Request::decode(raw.as_slice())?, limits)
        }
    }
}

fn check_series_count(count: usize, limits: &Limits) -> Result<(), RemoteWriteError> {
    if count > limits.max_series_per_request {
        return Err(RemoteWriteError::TooManySeries {
            count,
            limit: limits.max_series_per_request,
        });
    }
    Ok(())
}

// What each message decodes to, for the walk that bounds what prost builds: a 2.0 body, and
// the parts of a 1.0 body that the in-place reader leaves to prost.
static LABEL: Shape = Shape {
    name: "Label",
    size: size_of::<v1::Label>(),
    fields: &[],
};
static SPAN: Shape = Shape {
    name: "BucketSpan",
    size: size_of::<super::proto::BucketSpan>(),
    fields: &[],
};
static HISTOGRAM: Shape = Shape {
    name: "Histogram",
    size: size_of::<Histogram>(),
    fields: &[
        (8, Field::Message(&SPAN)),
        (9, Field::Varints(8)),
        (11, Field::Message(&SPAN)),
        (12, Field::Varints(8)),
    ],
};
static V1_EXEMPLAR: Shape = Shape {
    name: "Exemplar",
    size: size_of::<v1::Exemplar>(),
    fields: &[(1, Field::Message(&LABEL))],
};
static V1_METADATA: Shape = Shape {
    name: "MetricMetadata",
    size: size_of::<v1::MetricMetadata>(),
    fields: &[],
};
static V2_SAMPLE: Shape = Shape {
    name: "Sample",
    size: size_of::<v2::Sample>(),
    fields: &[],
};
static V2_EXEMPLAR: Shape = Shape {
    name: "Exemplar",
    size: size_of::<v2::Exemplar>(),
    fields: &[(1, Field::Varints(size_of::<u32>()))],
};
static V2_METADATA: Shape = Shape {
    name: "Metadata",
    size: size_of::<v2::Metadata>(),
    fields: &[],
};
static V2_SERIES: Shape = Shape {
    name: "TimeSeries",
    size: size_of::<v2::TimeSeries>(),
    fields: &[
        (1, Field::Varints(size_of::<u32>())),
        (2, Field::Message(&V2_SAMPLE)),
        (3, Field::Message(&HISTOGRAM)),
        (4, Field::Message(&V2_EXEMPLAR)),
        (5, Field::Message(&V2_METADATA)),
    ],
};
static V2_REQUEST: Shape = Shape {
    name: "Request",
    size: size_of::<v2::Request>(),
    fields: &[(4, Field::Strings), (5, Field::Message(&V2_SERIES))],
};

/// Decompresses a snappy block of at most `limit` bytes decompressed, refusing a larger one
/// before allocating.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, RemoteWriteError> {
    // The declared length is the first thing in a snappy block: refuse before allocating it.
    let len = snap::raw::decompress_len(body)?;
    if len > limit {
        return Err(RemoteWriteError::DecompressedTooLarge { len, limit });
    }
    Ok(snap::raw::Decoder::new().decompress_vec(body)?)
}

/// What one series costs in a [`DecodedWrite`] beyond its label bytes (which are fewer than
/// on the wire) and its samples: its entry in the batch.
const SERIES_COST: usize = 32;

/// Remote-write 1.0, read in place: every sample of a Prometheus sender is its own series
/// entry, so building prost's structs (two strings per label) was most of what a sample cost.
/// Labels and samples are read from the body as they lie; histograms, exemplars and metadata,
/// rare, are left to prost. What is built is charged to `budget` as it is built.
fn from_v1(
    raw: &[u8],
    limits: &Limits,
    mut budget: wire::Budget,
) -> Result<DecodedWrite, RemoteWriteError> {
    // Counted first (one varint per series) so the limit is checked before any is decoded.
    let mut count = 0;
    let mut buf = raw;
    while !buf.is_empty() {
        if let (1, _) = wire::next_field(&mut buf)? {
            count += 1;
        }
    }
    check_series_count(count, limits)?;
    // A label set encoded takes fewer bytes than in the body, which also holds its samples.
    // A series worth writing takes more than 16 bytes of body, so even a body of empty series
    // reserves no more than a few times its size, well inside the expansion budget.
    let mut out = DecodedWrite {
        series: EncodedBatch::with_capacity(count.min(raw.len() / 16), raw.len()),
        ..DecodedWrite::default()
    };
    let mut metadata = HashMap::new();
    let mut series = SeriesParts::default();
    let mut buf = raw;
    while !buf.is_empty() {
        match wire::next_field(&mut buf)? {
            (1, Value::Bytes(ts)) => {
                budget.charge(SERIES_COST)?;
                series.read_v1(ts, &mut budget)?;
                let known = out.invalid.len();
                out.push_series(
                    &series.pairs,
                    &series.samples,
                    &series.histograms,
                    &series.exemplars,
                    limits,
                );
                for refused in &out.invalid[known..] {
                    budget.charge(size_of::<InvalidSeries>() + refused.message.len())?;
                }
            }
            (3, Value::Bytes(md)) => {
                budget.charge(V1_METADATA.size)?;
                budget.scan(md, &V1_METADATA)?;
                let md = v1::MetricMetadata::decode(md)?;
                if md.metric_family_name.is_empty() {
                    continue;
                }
                let kind = v1::MetricType::try_from(md.r#type).unwrap_or(v1::MetricType::Unknown);
                metadata.insert(
                    md.metric_family_name,
                    Metadata {
                        kind: kind_name_v1(kind).into(),
                        help: md.help,
                        unit: md.unit,
                    },
                );
            }
            (1 | 3, _) => return Err(wrong_wire_type("WriteRequest field of the wrong wire type")),
            _ => {}
        }
    }
    Ok(out.finish(metadata))
}

/// A known field with a wire type its declaration does not allow.
fn wrong_wire_type(message: &'static str) -> RemoteWriteError {
    RemoteWriteError::Wire(WireError::Malformed(message))
}

/// One series as read from the wire, reused from series to series of a request.
#[derive(Default)]
struct SeriesParts<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    samples: Vec<Sample>,
    histograms: Vec<Histogram>,
    exemplars: Vec<Exemplar>,
}

impl<'a> SeriesParts<'a> {
    /// Reads a 1.0 `TimeSeries`.
    fn read_v1(
        &mut self,
        mut buf: &'a [u8],
        budget: &mut wire::Budget,
    ) -> Result<(), RemoteWriteError> {
        self.pairs.clear();
        self.samples.clear();
        self.histograms.clear();
        self.exemplars.clear();
        while !buf.is_empty() {
            match wire::next_field(&mut buf)? {
                (1, Value::Bytes(label)) => {
                    // The scratch list is reused, but one series may hold many labels.
                    budget.charge(size_of::<(&str, &str)>())?;
                    self.pairs.push(read_label(label)?);
                }
                (2, Value::Bytes(sample)) => {
                    budget.charge(size_of::<Sample>())?;
                    self.samples.push(read_sample(sample)?);
                }
                (3, Value::Bytes(exemplar)) => {
                    budget.scan(exemplar, &V1_EXEMPLAR)?;
                    let e = v1::Exemplar::decode(exemplar)?;
                    // Kept as owned labels: charged as many bytes again as they take here.
                    budget.charge(size_of::<Exemplar>() + exemplar.len())?;
                    self.exemplars.push(exemplar_v1(e));
                }
                (4, Value::Bytes(h)) => {
                    budget.charge(HISTOGRAM.size)?;
                    budget.scan(h, &HISTOGRAM)?;
                    self.histograms.push(Histogram::decode(h)?);
                }
                (1..=4, _) => {
                    return Err(wrong_wire_type("TimeSeries field of the wrong wire type"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A `Label` message: name 1, value 2; of repeated fields the last wins, as in prost.
fn read_label(mut buf: &[u8]) -> Result<(&str, &str), RemoteWriteError> {
    let (mut name, mut value): (&[u8], &[u8]) = (b"", b"");
    while !buf.is_empty() {
        match wire::next_field(&mut buf)? {
            (1, Value::Bytes(b)) => name = b,
            (2, Value::Bytes(b)) => value = b,
            (1 | 2, _) => return Err(wrong_wire_type("Label field of the wrong wire type")),
            _ => {}
        }
    }
    let utf8 = |b| {
        std::str::from_utf8(b).map_err(|_| WireError::Malformed("label name or value is not UTF-8"))
    };
    Ok((utf8(name)?, utf8(value)?))
}

/// A `Sample` message: value 1 (double), timestamp 2 (int64).
fn read_sample(mut buf: &[u8]) -> Result<Sample, RemoteWriteError> {
    let mut s = Sample { t: 0, v: 0.0 };
    while !buf.is_empty() {
        match wire::next_field(&mut buf)? {
            (1, Value::Fixed64(bits)) => s.v = f64::from_bits(bits),
            (2, Value::Varint(t)) => s.t = t as i64,
            (1 | 2, _) => return Err(wrong_wire_type("Sample field of the wrong wire type")),
            _ => {}
        }
    }
    Ok(s)
}

fn from_v2(req: v2::Request, limits: &Limits) -> Result<DecodedWrite, RemoteWriteError> {
    let symbols = &req.symbols;
    let mut out = DecodedWrite::default();
    let mut metadata = HashMap::new();
    let (mut pairs, mut exemplar_pairs, mut samples) = (Vec::new(), Vec::new(), Vec::new());
    let mut exemplars = Vec::new();
    for (i, ts) in req.timeseries.iter().enumerate() {
        resolve_pairs(
            symbols,
            &ts.labels_refs,
            || format!("series {i}"),
            &mut pairs,
        )?;
        exemplars.clear();
        for ex in &ts.exemplars {
            let what = || format!("an exemplar of series {i}");
            resolve_pairs(symbols, &ex.labels_refs, what, &mut exemplar_pairs)?;
            exemplars.push(exemplar(
                exemplar_pairs.iter().copied(),
                ex.value,
                ex.timestamp,
            ));
        }
        let md = ts
            .metadata
            .map(|md| metadata_v2(symbols, md))
            .transpose()?
            .flatten();
        // Reused from series to series, as the 1.0 reader's are.
        samples.clear();
        samples.extend(ts.samples.iter().map(|s| Sample {
            t: s.timestamp,
            v: s.value,
        }));
        if out.push_series(&pairs, &samples, &ts.histograms, &exemplars, limits) {
            if let (Some(md), Some(name)) = (md, metric_name(&pairs)) {
                metadata.insert(family_name(name, &md.kind).to_string(), md);
            }
        }
    }
    Ok(out.finish(metadata))
}

fn metric_name<'a>(pairs: &[(&str, &'a str)]) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, v)| *n == METRIC_NAME && !v.is_empty())
        .map(|(_, v)| *v)
}

impl DecodedWrite {
    /// Validates one series and files its samples as valid or invalid. Returns whether its
    /// labels are valid (its histograms may still have been refused).
    fn push_series(
        &mut self,
        pairs: &[(&str, &str)],
        samples: &[Sample],
        histograms: &[Histogram],
        exemplars: &[Exemplar],
        limits: &Limits,
    ) -> bool {
        let refuse = |err: &dyn std::fmt::Display, samples| InvalidSeries {
            message: format!("invalid series {}: {err}", shown_labels(pairs)),
            reason: DropReason::InvalidLabels,
            samples,
        };
        if let Err(err) = validate_labels(pairs, limits) {
            self.invalid
                .push(refuse(&err, samples.len() + histograms.len()));
            return false;
        }
        let mut converted = Vec::with_capacity(histograms.len());
        for h in histograms {
            match histogram_sample(h) {
                Ok(s) => converted.push(s),
                Err(err) => self.invalid.push(InvalidSeries {
                    message: format!(
                        "invalid native histogram in series {}: {err}",
                        shown_labels(pairs)
                    ),
                    reason: DropReason::NativeHistogram,
                    samples: 1,
                }),
            }
        }
        converted.sort_by_key(|h| h.t);
        if samples.is_empty() && converted.is_empty() && exemplars.is_empty() {
            return true;
        }
        // Checked canonical above, so the batch takes them; were it ever to refuse, the
        // series is reported, never dropped silently.
        match self
            .series
            .push_pairs(pairs.iter().copied(), samples, &converted)
        {
            Ok(()) => {
                self.series.add_exemplars(exemplars.iter().cloned());
                true
            }
            Err(e) => {
                self.invalid
                    .push(refuse(&e, samples.len() + converted.len()));
                false
            }
        }
    }

    fn finish(mut self, metadata: HashMap<String, Metadata>) -> DecodedWrite {
        self.metadata = metadata.into_iter().collect();
        self
    }
}

fn symbol<'a>(
    symbols: &'a [String],
    r: u32,
    what: &dyn Fn() -> String,
) -> Result<&'a str, RemoteWriteError> {
    symbols.get(r as usize).map(String::as_str).ok_or_else(|| {
        RemoteWriteError::Malformed(format!(
            "symbol reference {r} of {} is out of range (the symbols table has {} entries)",
            what(),
            symbols.len()
        ))
    })
}

/// A 1.0 exemplar as storage takes it (Prometheus's `exemplarProtoToExemplar`).
fn exemplar_v1(e: v1::Exemplar) -> Exemplar {
    let pairs = e.labels.into_iter().map(|l| (l.name, l.value));
    exemplar(pairs, e.value, e.timestamp)
}

/// Labels with an empty value are left out, as Prometheus's appender does (`WithoutEmpty`).
fn exemplar<N: Into<String>, V: Into<String> + AsRef<str>>(
    pairs: impl IntoIterator<Item = (N, V)>,
    value: f64,
    t: i64,
) -> Exemplar {
    let pairs = pairs.into_iter().filter(|(_, v)| !v.as_ref().is_empty());
    Exemplar {
        labels: Labels::from_pairs(pairs),
        value,
        t,
    }
}

/// Resolves label references into `out` (cleared first), borrowing from the symbols table.
fn resolve_pairs<'a>(
    symbols: &'a [String],
    refs: &[u32],
    what: impl Fn() -> String,
    out: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), RemoteWriteError> {
    out.clear();
    if refs.len() % 2 == 1 {
        return Err(RemoteWriteError::Malformed(format!(
            "labels_refs of {} has odd length {}",
            what(),
            refs.len()
        )));
    }
    for pair in refs.chunks_exact(2) {
        out.push((
            symbol(symbols, pair[0], &what)?,
            symbol(symbols, pair[1], &what)?,
        ));
    }
    Ok(())
}

/// Metadata worth storing: `None` when the sender said nothing (unspecified type, no help, no unit).
fn metadata_v2(symbols: &[String], md: v2::Metadata) -> Result<Option<Metadata>, RemoteWriteError> {
    let what = || "series metadata".to_string();
    let help = symbol(symbols, md.help_ref, &what)?;
    let unit = symbol(symbols, md.unit_ref, &what)?;
    let kind = v2::MetricType::try_from(md.r#type).unwrap_or(v2::MetricType::Unspecified);
    if kind == v2::MetricType::Unspecified && help.is_empty() && unit.is_empty() {
        return Ok(None);
    }
    Ok(Some(Metadata {
        kind: kind_name_v2(kind).into(),
        help: help.into(),
        unit: unit.into(),
    }))
}

fn kind_name_v1(kind: v1::MetricType) -> &'static str {
    match kind {
        v1::MetricType::Unknown => "unknown",
        v1::MetricType::Counter => "counter",
        v1::MetricType::Gauge => "gauge",
        v1::MetricType::Histogram => "histogram",
        v1::MetricType::Gaugehistogram => "gaugehistogram",
        v1::MetricType::Summary => "summary",
        v1::MetricType::Info => "info",
        v1::MetricType::Stateset => "stateset",
    }
}

fn kind_name_v2(kind: v2::MetricType) -> &'static str {
    match kind {
        v2::MetricType::Unspecified => "unknown",
        v2::MetricType::Counter => "counter",
        v2::MetricType::Gauge => "gauge",
        v2::MetricType::Histogram => "histogram",
        v2::MetricType::Gaugehistogram => "gaugehistogram",
        v2::MetricType::Summary => "summary",
        v2::MetricType::Info => "info",
        v2::MetricType::Stateset => "stateset",
    }
}

/// 2.0 attaches metadata to each series, 1.0 (and the metadata API) to the family: the
/// `_bucket`, `_sum` and `_count` series of a classic histogram or summary share one family.
fn family_name<'a>(series_name: &'a str, kind: &str) -> &'a str {
    let suffixes: &[&str] = match kind {
        "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
        "summary" => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| series_name.strip_suffix(s).filter(|f| !f.is_empty()))
        .unwrap_or(series_name)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LabelsError {
    #[error("no labels")]
    NoLabels,
    #[error("empty label name")]
    EmptyName,
    #[error("duplicate label name {0:?}")]
    DuplicateName(String),
    #[error("missing metric name (label __name__)")]
    MissingMetricName,
    #[error("labels not sorted by name ({0:?} after {1:?})")]
    Unsorted(String, String),
    #[error("number of labels exceeds the limit (actual: {actual}, limit: {limit})")]
    TooManyLabels { actual: usize, limit: usize },
    #[error(
        "label name length exceeds the limit (actual: {actual}, limit: {limit}), label: '{name}'"
    )]
    NameTooLong {
        actual: usize,
        limit: usize,
        name: String,
    },
    #[error("label value length exceeds the limit (actual: {actual}, limit: {limit}), label: '{name}', value: '{value}'")]
    ValueTooLong {
        actual: usize,
        limit: usize,
        name: String,
        value: String,
    },
}

/// How much of a label or series is quoted in an error, as Mimir does (`%.200s`): an
/// oversized label must not make an oversized response.
const QUOTED_CHARS: usize = 200;

fn quoted(s: &str) -> String {
    match s.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// The limits of Mimir's distributor: label count, name and value lengths. OTLP metrics are
/// held to them too.
pub(crate) fn check_limits<'a>(
    mut pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    limits: &Limits,
) -> Option<LabelsError> {
    if pairs.len() > limits.max_labels_per_series {
        return Some(LabelsError::TooManyLabels {
            actual: pairs.len(),
            limit: limits.max_labels_per_series,
        });
    }
    pairs.find_map(|(name, value)| {
        if name.len() > limits.max_label_name_length {
            Some(LabelsError::NameTooLong {
                actual: name.len(),
                limit: limits.max_label_name_length,
                name: quoted(name),
            })
        } else if value.len() > limits.max_label_value_length {
            Some(LabelsError::ValueTooLong {
                actual: value.len(),
                limit: limits.max_label_value_length,
                name: quoted(name),
                value: quoted(value),
            })
        } else {
            None
        }
    })
}

/// The labels as an error shows them (canonicalised, cut to a few hundred characters).
fn shown_labels(pairs: &[(&str, &str)]) -> String {
    quoted(&Labels::from_pairs(pairs.iter().copied()).to_string())
}

/// Checks a series' labels as the wire gave them. Names are validated as Prometheus 3 does
/// by default: any non-empty UTF-8 string (the decoder has already refused strings that are
/// not UTF-8). Labels must come sorted by name, as both specs require: Prometheus's receiver
/// would quietly sort them, but a sender that breaks this rule is broken and is told so
/// (every real sender sorts). Empty values mean "no such label" (the batch leaves them out),
/// so `__name__=""` counts as missing.
fn validate_labels(pairs: &[(&str, &str)], limits: &Limits) -> Result<(), LabelsError> {
    if pairs.is_empty() {
        return Err(LabelsError::NoLabels);
    }
    if let Some(err) = check_limits(pairs.iter().copied(), limits) {
        return Err(err);
    }
    for (i, (name, _)) in pairs.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| pairs[p].0);
        if name.is_empty() {
            return Err(LabelsError::EmptyName);
        } else if prev == Some(*name) {
            return Err(LabelsError::DuplicateName(name.to_string()));
        } else if let Some(prev) = prev.filter(|p| p > name) {
            return Err(LabelsError::Unsorted(name.to_string(), prev.to_string()));
        }
    }
    if metric_name(pairs).is_none() {
        return Err(LabelsError::MissingMetricName);
    }
    Ok(())
}

/// Converts a protobuf histogram (integer counts as deltas, or float counts as absolute
/// values) to the stored float form.
fn histogram_sample(h: &Histogram) -> Result<HistogramSample, String> {
    use super::proto::histogram::{Count, ZeroCount};
    let is_int = matches!(h.count, Some(Count::CountInt(_)) | None);
    let spans = |spans: &[super::proto::BucketSpan]| -> Vec<HistogramSpan> {
        spans
            .iter()
            .map(|s| HistogramSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    };
    let buckets = |deltas: &[i64], counts: &[f64]| -> Vec<f64> {
        if is_int {
            let mut acc = 0i64;
            deltas
                .iter()
                .map(|d| {
                    acc = acc.wrapping_add(*d);
                    acc as f64
                })
                .collect()
        } else {
            counts.to_vec()
        }
    };
    let positive_spans = spans(&h.positive_spans);
    let negative_spans = spans(&h.negative_spans);
    let positive_buckets = buckets(&h.positive_deltas, &h.positive_counts);
    let negative_buckets = buckets(&h.negative_deltas, &h.negative_counts);
    for (side, sp, b) in [
        ("positive", &positive_spans, &positive_buckets),
        ("negative", &negative_spans, &negative_buckets),
    ] {
        let need: u64 = sp.iter().map(|s| u64::from(s.length)).sum();
        if need != b.len() as u64 {
            return Err(format!(
                "{side} side: spans need {need} buckets, have {} buckets",
                b.len()
            ));
        }
        if let Some(c) = b.iter().find(|c| **c < 0.0) {
            return Err(format!("{side} side: bucket has observation count of {c}"));
        }
    }
    Ok(HistogramSample {
        t: h.timestamp,
        h: StoredHistogram {
            counter_reset_hint: u8::try_from(h.reset_hint).unwrap_or(0).min(3),
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: match h.zero_count {
                Some(ZeroCount::ZeroCountInt(c)) => c as f64,
                Some(ZeroCount::ZeroCountFloat(c)) => c,
                None => 0.0,
            },
            count: match h.count {
                Some(Count::CountInt(c)) => c as f64,
                Some(Count::CountFloat(c)) => c,
                None => 0.0,
            },
            sum: h.sum,
            positive_spans,
            positive_buckets,
            negative_spans,
            negative_buckets,
            custom_values: h.custom_values.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::{histogram, BucketSpan};
    use crate::wire::WireError;
    use proptest::prelude::*;
    use storage::SeriesBatch;

    fn series(d: &DecodedWrite) -> Vec<SeriesBatch> {
        d.series().to_series_batches()
    }

    /// Every exemplar of the decoded series, by series, with its value's bits.
    fn exemplar_bits(d: &DecodedWrite) -> Vec<(Labels, Labels, i64, u64)> {
        d.series()
            .iter()
            .flat_map(|s| {
                s.exemplars
                    .iter()
                    .map(move |e| (s.labels(), e.labels.clone(), e.t, e.value.to_bits()))
            })
            .collect()
    }

    fn compress(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).unwrap()
    }

    fn l1(n: &str, v: &str) -> v1::Label {
        v1::Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn series_v1(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
        v1::TimeSeries {
            labels: labels.iter().map(|(n, v)| l1(n, v)).collect(),
            samples: samples
                .iter()
                .map(|&(t, v)| v1::Sample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn decode_v1(req: &v1::WriteRequest) -> Result<DecodedWrite, RemoteWriteError> {
        decode(
            Protocol::V1,
            &compress(&req.encode_to_vec()),
            &Limits::default(),
        )
    }

    fn decode_v2(req: &v2::Request) -> Result<DecodedWrite, RemoteWriteError> {
        decode(
            Protocol::V2,
            &compress(&req.encode_to_vec()),
            &Limits::default(),
        )
    }

    fn int_histogram() -> Histogram {
        Histogram {
            count: Some(histogram::Count::CountInt(1)),
            timestamp: 5,
            ..Default::default()
        }
    }

    #[test]
    fn v1_request_decodes_to_series_and_metadata() {
        let req = v1::WriteRequest {
            timeseries: vec![
                series_v1(
                    &[("__name__", "up"), ("empty", ""), ("job", "node")],
                    &[(1000, 1.0), (2000, 0.0)],
                ),
                series_v1(&[("__name__", "no_samples")], &[]),
            ],
            metadata: vec![
                v1::MetricMetadata {
                    r#type: v1::MetricType::Counter as i32,
                    metric_family_name: "http_requests_total".into(),
                    help: "Requests.".into(),
                    unit: "".into(),
                },
                v1::MetricMetadata {
                    r#type: 42,
                    metric_family_name: "odd".into(),
                    help: "".into(),
                    unit: "".into(),
                },
                v1::MetricMetadata {
                    metric_family_name: "".into(),
                    help: "nameless".into(),
                    ..Default::default()
                },
            ],
        };
        let d = decode_v1(&req).unwrap();
        assert_eq!(d.errors().count(), 0);
        assert_eq!(
            series(&d),
            [SeriesBatch {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "node")]),
                samples: vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 0.0 }],
                histograms: vec![],
            }]
        );
        let mut md = d.metadata.clone();
        md.sort_by(|a, b| a.0.cmp(&b.0));
        let kinds: Vec<_> = md
            .iter()
            .map(|(n, m)| (n.as_str(), m.kind.as_str(), m.help.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("http_requests_total", "counter", "Requests."),
                ("odd", "unknown", "")
            ]
        );
    }

    #[test]
    fn v2_request_resolves_symbols_and_family_metadata() {
        let req = v2::Request {
            symbols: [
                "",
                "__name__",
                "rpc_seconds_bucket",
                "le",
                "0.5",
                "Latency.",
                "seconds",
                "instance",
                "a:1",
            ]
            .map(String::from)
            .to_vec(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2, 7, 8, 3, 4],
                samples: vec![v2::Sample {
                    value: 3.0,
                    timestamp: 10,
                    start_timestamp: 0,
                }],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![7, 8],
                    value: 0.1,
                    timestamp: 9,
                }],
                metadata: Some(v2::Metadata {
                    r#type: v2::MetricType::Histogram as i32,
                    help_ref: 5,
                    unit_ref: 6,
                }),
                ..Default::default()
            }],
        };
        let d = decode_v2(&req).unwrap();
        assert_eq!(d.errors().count(), 0);
        assert_eq!(d.series().len(), 1);
        assert_eq!(
            series(&d)[0].labels,
            Labels::from_pairs([
                ("__name__", "rpc_seconds_bucket"),
                ("instance", "a:1"),
                ("le", "0.5")
            ])
        );
        assert_eq!(series(&d)[0].samples, vec![Sample { t: 10, v: 3.0 }]);
        let expected = Metadata {
            kind: "histogram".into(),
            help: "Latency.".into(),
            unit: "seconds".into(),
        };
        assert_eq!(d.metadata, vec![("rpc_seconds".to_string(), expected)]);
    }

    #[test]
    fn v2_unspecified_metadata_is_not_stored() {
        let req = v2::Request {
            symbols: ["", "__name__", "up"].map(String::from).to_vec(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: 1,
                    start_timestamp: 0,
                }],
                metadata: Some(v2::Metadata::default()),
                ..Default::default()
            }],
        };
        assert!(decode_v2(&req).unwrap().metadata.is_empty());
    }

    #[test]
    fn invalid_labels_are_reported_per_series() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "invalid series {}: no labels"),
            (
                &[("__name__", "up"), ("", "x")],
                r#"invalid series up{="x"}: empty label name"#,
            ),
            (
                &[("__name__", "up"), ("job", "a"), ("job", "b")],
                r#"invalid series up{job="b"}: duplicate label name "job""#,
            ),
            (
                &[("job", "a")],
                r#"invalid series {job="a"}: missing metric name (label __name__)"#,
            ),
            (
                &[("__name__", ""), ("job", "a")],
                r#"invalid series {job="a"}: missing metric name (label __name__)"#,
            ),
        ];
        for (labels, message) in cases {
            let req = v1::WriteRequest {
                timeseries: vec![series_v1(labels, &[(1, 1.0)])],
                metadata: vec![],
            };
            let d = decode_v1(&req).unwrap();
            assert!(d.series().is_empty(), "{labels:?}");
            assert_eq!(d.errors().collect::<Vec<_>>(), vec![*message]);
            assert_eq!(d.invalid[0].samples, 1);
        }
    }

    #[test]
    fn utf8_names_are_valid() {
        let utf8 = validate_labels(
            &[("__name__", "mété.o"), ("ünit/1", "v")],
            &Limits::default(),
        );
        assert_eq!(utf8, Ok(()));
    }

    #[test]
    fn names_that_are_not_utf8_fail_decoding() {
        // WriteRequest{timeseries: [{labels: [{name: b"\xff", value: "v"}]}]}
        let bytes = [0x0a, 0x08, 0x0a, 0x06, 0x0a, 0x01, 0xff, 0x12, 0x01, b'v'];
        let err = decode(Protocol::V1, &compress(&bytes), &Limits::default()).unwrap_err();
        assert!(matches!(err, RemoteWriteError::Wire(_)), "{err}");
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn histograms_are_converted_alongside_samples() {
        let mut ts = series_v1(&[("__name__", "mixed")], &[(1, 1.0)]);
        let mut int_h = int_histogram();
        int_h.positive_spans = vec![BucketSpan {
            offset: -1,
            length: 3,
        }];
        int_h.positive_deltas = vec![2, -1, 3];
        let float_h = Histogram {
            count: Some(histogram::Count::CountFloat(2.5)),
            schema: -53,
            custom_values: vec![1.0],
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_counts: vec![0.5, 2.0],
            reset_hint: histogram::ResetHint::Gauge as i32,
            timestamp: 3,
            ..Default::default()
        };
        ts.histograms = vec![int_h, float_h];
        let d = decode_v1(&v1::WriteRequest {
            timeseries: vec![ts],
            metadata: vec![],
        })
        .unwrap();
        assert_eq!(d.errors().count(), 0);
        let s = &series(&d)[0];
        assert_eq!(s.samples.len(), 1);
        assert_eq!(s.histograms.len(), 2);
        assert_eq!((s.histograms[0].t, s.histograms[1].t), (3, 5));
        let h = &s.histograms[1].h;
        assert_eq!(h.positive_buckets, vec![2.0, 1.0, 4.0]);
        assert_eq!(
            h.positive_spans,
            vec![HistogramSpan {
                offset: -1,
                length: 3
            }]
        );
        assert_eq!(h.count, 1.0);
        let g = &s.histograms[0].h;
        assert_eq!((g.schema, g.counter_reset_hint, g.count), (-53, 3, 2.5));
        assert_eq!(g.custom_values, vec![1.0]);
    }

    #[test]
    fn inconsistent_histograms_are_refused() {
        let mut ts = series_v1(&[("__name__", "bad")], &[(1, 1.0)]);
        let mut h = int_histogram();
        h.positive_spans = vec![BucketSpan {
            offset: 0,
            length: 2,
        }];
        h.positive_deltas = vec![1];
        ts.histograms = vec![h];
        let d = decode_v1(&v1::WriteRequest {
            timeseries: vec![ts],
            metadata: vec![],
        })
        .unwrap();
        assert_eq!(
            d.errors().collect::<Vec<_>>(),
            vec!["invalid native histogram in series bad{}: positive side: spans need 2 buckets, have 1 buckets"]
        );
        assert_eq!(d.invalid[0].reason, DropReason::NativeHistogram);
        assert_eq!(series(&d)[0].samples.len(), 1);
    }

    #[test]
    fn v2_bad_symbol_references_are_malformed() {
        let symbols = ["", "__name__", "up"].map(String::from).to_vec();
        let with = |ts: v2::TimeSeries| v2::Request {
            symbols: symbols.clone(),
            timeseries: vec![ts],
        };
        let cases = [
            (
                v2::TimeSeries {
                    labels_refs: vec![1, 3],
                    ..Default::default()
                },
                "symbol reference 3 of series 0",
            ),
            (
                v2::TimeSeries {
                    labels_refs: vec![1, 2, 1],
                    ..Default::default()
                },
                "labels_refs of series 0 has odd length 3",
            ),
            (
                v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    exemplars: vec![v2::Exemplar {
                        labels_refs: vec![1, 99],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                "symbol reference 99 of an exemplar of series 0",
            ),
            (
                v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    metadata: Some(v2::Metadata {
                        r#type: 1,
                        help_ref: 7,
                        unit_ref: 0,
                    }),
                    ..Default::default()
                },
                "symbol reference 7 of series metadata",
            ),
        ];
        for (ts, expected) in cases {
            let err = decode_v2(&with(ts)).unwrap_err();
            assert!(matches!(err, RemoteWriteError::Malformed(_)), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn declared_size_over_the_limit_is_refused_before_decompressing() {
        let raw = vec![0u8; 4096];
        let limits = Limits {
            max_decompressed_bytes: 4095,
            ..Limits::default()
        };
        let err = decode(Protocol::V1, &compress(&raw), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                RemoteWriteError::DecompressedTooLarge {
                    len: 4096,
                    limit: 4095
                }
            ),
            "{err}"
        );
        // Only the header: claims 2^32-1 bytes but carries none. Must fail fast, not allocate.
        let header_only = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = decode(Protocol::V1, &header_only, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, RemoteWriteError::DecompressedTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = decode(Protocol::V1, b"not snappy at all", &Limits::default()).unwrap_err();
        assert!(matches!(err, RemoteWriteError::Snappy(_)), "{err}");
        let full = v1::WriteRequest {
            timeseries: vec![series_v1(&[("__name__", "up")], &[(1, 1.0)])],
            metadata: vec![],
        }
        .encode_to_vec();
        let truncated = compress(&full[..full.len() - 3]);
        // The walk that bounds the body before decoding finds the truncation.
        let err = decode(Protocol::V1, &truncated, &Limits::default()).unwrap_err();
        assert!(matches!(err, RemoteWriteError::Wire(_)), "{err}");
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    /// 2 bytes of protobuf each, about a hundred decoded: a 1.5 MB snappy body of these
    /// decoded to gigabytes. Refused by the walk before anything is decoded.
    #[test]
    fn a_body_of_empty_series_is_refused_before_decoding() {
        let raw = [0x0a, 0x00].repeat(8 << 20);
        let body = compress(&raw);
        assert!(body.len() < 2 << 20);
        for protocol in [Protocol::V1, Protocol::V2] {
            let raw = if protocol == Protocol::V2 {
                [0x2a, 0x00].repeat(8 << 20)
            } else {
                raw.clone()
            };
            // With no series limit in the way, the decoded size is what refuses them.
            let limits = Limits {
                max_series_per_request: usize::MAX,
                ..Limits::default()
            };
            let err = decode(protocol, &compress(&raw), &limits).unwrap_err();
            assert!(
                matches!(err, RemoteWriteError::Wire(WireError::TooLarge { .. })),
                "{err}"
            );
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn series_over_the_per_request_limit_are_refused_whole() {
        let limits = Limits {
            max_series_per_request: 2,
            ..Limits::default()
        };
        let req = |n: usize| v1::WriteRequest {
            timeseries: (0..n)
                .map(|i| series_v1(&[("__name__", "up"), ("i", &i.to_string())], &[(1, 1.0)]))
                .collect(),
            metadata: vec![],
        };
        let body = |n| compress(&req(n).encode_to_vec());
        assert_eq!(
            decode(Protocol::V1, &body(2), &limits)
                .unwrap()
                .series()
                .len(),
            2
        );
        let err = decode(Protocol::V1, &body(3), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many series in the request (actual: 3, limit: 2)"
        );
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn label_count_and_lengths_are_limited_per_series() {
        let limits = Limits {
            max_labels_per_series: 2,
            // `__name__` is 8 bytes, and held to the same limit.
            max_label_name_length: 8,
            max_label_value_length: 5,
            ..Limits::default()
        };
        let long = "v".repeat(300);
        let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
            (
                vec![("__name__", "up"), ("a", "1"), ("b", "2")],
                "invalid series up{a=\"1\", b=\"2\"}: number of labels exceeds the limit (actual: 3, limit: 2)".into(),
            ),
            (
                vec![("__name__", "up"), ("abcdefghi", "1")],
                "invalid series up{abcdefghi=\"1\"}: label name length exceeds the limit (actual: 9, limit: 8), label: 'abcdefghi'".into(),
            ),
            (
                vec![("__name__", "up"), ("a", &long)],
                format!(
                    "invalid series {}…: label value length exceeds the limit (actual: 300, limit: 5), label: 'a', value: '{}…'",
                    &format!("up{{a=\"{long}\"}}")[..200],
                    &long[..200]
                ),
            ),
        ];
        for (labels, want) in cases {
            let req = v1::WriteRequest {
                timeseries: vec![series_v1(&labels, &[(1, 1.0)])],
                metadata: vec![],
            };
            let body = compress(&req.encode_to_vec());
            let d = decode(Protocol::V1, &body, &limits).unwrap();
            assert!(d.series().is_empty(), "{labels:?}");
            assert_eq!(d.errors().collect::<Vec<_>>(), vec![want.as_str()]);
            assert_eq!(d.invalid[0].reason, DropReason::InvalidLabels);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), v2 in any::<bool>()) {
            let protocol = if v2 { Protocol::V2 } else { Protocol::V1 };
            let limits = Limits::default();
            // Both as a snappy body and as the protobuf inside a valid snappy body.
            let _ = decode(protocol, &bytes, &limits);
            let _ = decode(protocol, &compress(&bytes), &limits);
        }

        #[test]
        fn valid_v1_series_survive_decoding(
            names in proptest::collection::btree_set("[a-z_][a-z0-9_]{0,8}", 0..5),
            value in "[ -~]{1,12}",
            samples in proptest::collection::vec((any::<i64>(), any::<f64>()), 1..4),
        ) {
            let mut labels: Vec<(String, String)> = names.into_iter().filter(|n| n != "__name__").map(|n| (n, value.clone())).collect();
            labels.push(("__name__".into(), "m".into()));
            labels.sort();
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let req = v1::WriteRequest { timeseries: vec![series_v1(&pairs, &samples)], metadata: vec![] };
            let d = decode_v1(&req).unwrap();
            prop_assert_eq!(d.errors().count(), 0);
            prop_assert_eq!(&series(&d)[0].labels, &Labels::from_pairs(labels.clone()));
            let got: Vec<(i64, u64)> = series(&d)[0].samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
            // Bit-exact (stale markers are NaNs), except that proto3 omits a zero of either
            // sign, so -0.0 arrives as 0.0 (as from Prometheus's own encoder).
            let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, if v == 0.0 { 0 } else { v.to_bits() })).collect();
            prop_assert_eq!(got, want);
        }

        /// The in-place 1.0 reader reads what prost reads: on requests of any labels (empty,
        /// unsorted, repeated) and samples, each with one byte changed, both refuse the bytes
        /// or both give the same series, refusals and metadata.
        #[test]
        fn v1_reader_agrees_with_prost(
            entries in proptest::collection::vec((
                proptest::collection::vec(("[_a-c]{0,2}", "[a-b\u{e9}]{0,2}"), 0..4),
                proptest::collection::vec((any::<i64>(), any::<f64>()), 0..3),
                proptest::collection::vec((any::<i64>(), any::<f64>(), "[a-f0-9]{0,4}"), 0..2),
            ), 0..4),
            family in "[a-c]{0,2}",
            flip in any::<(usize, u8)>(),
        ) {
            let req = v1::WriteRequest {
                timeseries: entries.iter().map(|(labels, samples, exemplars)| {
                    let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                    v1::TimeSeries {
                        exemplars: exemplars.iter().map(|(t, v, trace)| v1::Exemplar {
                            labels: vec![l1("trace_id", trace)],
                            value: *v,
                            timestamp: *t,
                        }).collect(),
                        ..series_v1(&pairs, samples)
                    }
                }).collect(),
                metadata: vec![v1::MetricMetadata { metric_family_name: family, help: "h".into(), ..Default::default() }],
            };
            let mut raw = req.encode_to_vec();
            if !raw.is_empty() {
                let at = flip.0 % raw.len();
                raw[at] ^= flip.1;
            }
            let limits = Limits::default();
            let ours = decode(Protocol::V1, &compress(&raw), &limits)
                .map(|d| {
                    let exemplars = exemplar_bits(&d);
                    (series(&d), d.errors().map(String::from).collect::<Vec<_>>(), d.metadata, exemplars)
                });
            let reference = v1::WriteRequest::decode(raw.as_slice()).map(|req| {
                let mut d = DecodedWrite::default();
                for ts in &req.timeseries {
                    let pairs: Vec<(&str, &str)> = ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
                    let samples: Vec<Sample> = ts.samples.iter().map(|s| Sample { t: s.timestamp, v: s.value }).collect();
                    let exemplars: Vec<Exemplar> = ts.exemplars.iter().cloned().map(exemplar_v1).collect();
                    d.push_series(&pairs, &samples, &ts.histograms, &exemplars, &limits);
                }
                let metadata: Vec<(String, Metadata)> = req.metadata.into_iter().filter(|m| !m.metric_family_name.is_empty()).map(|m| {
                    let kind = v1::MetricType::try_from(m.r#type).unwrap_or(v1::MetricType::Unknown);
                    (m.metric_family_name, Metadata { kind: kind_name_v1(kind).into(), help: m.help, unit: m.unit })
                }).collect();
                (series(&d), d.errors().map(String::from).collect::<Vec<_>>(), metadata, exemplar_bits(&d))
            });
            match (ours, reference) {
                (Ok(mut a), Ok(mut b)) => {
                    // Metadata is keyed by family; compare it as a set.
                    a.2.sort_by(|x, y| x.0.cmp(&y.0));
                    b.2.sort_by(|x, y| x.0.cmp(&y.0));
                    b.2.dedup_by(|x, y| x.0 == y.0);
                    let bits = |v: &[SeriesBatch]| -> Vec<(Labels, Vec<(i64, u64)>)> {
                        v.iter().map(|s| (s.labels.clone(), s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect())).collect()
                    };
                    prop_assert_eq!(bits(&a.0), bits(&b.0));
                    prop_assert_eq!(a.1, b.1);
                    prop_assert_eq!(a.3, b.3);
                    prop_assert_eq!(a.2.len(), b.2.len());
                }
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "reader {:?} but prost {:?}", a.map(|_| ()), b.map(|_| ())),
            }
        }
    }
}
