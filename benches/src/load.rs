//! Remote-write load: batches generated series the way Prometheus's queue manager does (series
//! sharded over concurrent senders, each shard time-ordered, about 2000 samples a request),
//! encodes 1.0 or 2.0 requests ahead of time so that the measured phase is sending only, and
//! sends them to one loopback target. Knows nothing of which server is behind the URL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ingest::remote_write::proto::{self, v1, v2};
use ingest::remote_write::Protocol;
use prost::Message;

use crate::generator::{
    native_histogram_series, node_series, NativeHistogram, NativeHistogramSeries, Series,
};

/// Upper bound on samples per run: requests are built in memory before sending.
pub const MAX_TOTAL_SAMPLES: usize = 50_000_000;
const MAX_ATTEMPTS: u32 = 5;

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub series: usize,
    pub samples_per_series: usize,
    pub concurrency: usize,
    pub batch_samples: usize,
    pub protocol: Protocol,
    pub interval_ms: i64,
    /// Timestamp of the last sample of every series.
    pub end_ms: i64,
}

/// The shape of a load, as the benchmark binaries take it on their command line.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    /// Number of series (about 90 per simulated host).
    #[arg(long, default_value_t = 20_000)]
    pub series: usize,
    /// Samples per series, 15 s apart by default, the last one at the current time.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Concurrent senders (Prometheus's queue-manager shards).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
}

impl LoadConfig {
    /// The query benchmarks' data: `series` × `samples` 15 s apart, the last at `end_ms`, sent
    /// as Prometheus sends (4 senders, 2000 samples per request, remote-write 1.0).
    pub fn scraped(series: usize, samples: usize, end_ms: i64) -> LoadConfig {
        LoadConfig {
            series,
            samples_per_series: samples,
            concurrency: 4,
            batch_samples: 2000,
            protocol: Protocol::V1,
            interval_ms: 15_000,
            end_ms,
        }
    }
}

impl LoadArgs {
    /// The load, with its last samples at the current time, or just before the last UTC 2h
    /// boundary when the run would straddle it.
    pub fn config(&self, protocol: Protocol, interval_ms: i64) -> LoadConfig {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let span_ms = (self.samples as i64 - 1).max(0) * interval_ms;
        LoadConfig {
            series: self.series,
            samples_per_series: self.samples,
            concurrency: self.concurrency,
            batch_samples: self.batch,
            protocol,
            interval_ms,
            end_ms: unsplit_end(now_ms, span_ms),
        }
    }
}

/// Where a run of `span_ms` ending near `now_ms` should end so that it does not straddle a
/// 2h boundary (when it is shorter than 2h). TSDBs cut chunks or blocks at those boundaries,
/// Prometheus and novamon both: a run that straddled one measured, depending on the time of
/// day, twice the chunks and nearly twice novamon's bytes per sample.
fn unsplit_end(now_ms: i64, span_ms: i64) -> i64 {
    const WINDOW_MS: i64 = 2 * 3600 * 1000;
    let boundary = now_ms - now_ms.rem_euclid(WINDOW_MS);
    if span_ms < WINDOW_MS && now_ms - span_ms < boundary {
        boundary - 1
    } else {
        now_ms
    }
}

/// One encoded, snappy-compressed request.
#[derive(Clone, Debug)]
pub struct Batch {
    body: Bytes,
    samples: usize,
}

impl Batch {
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn samples(&self) -> usize {
        self.samples
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub samples_sent: usize,
    pub samples_accepted: usize,
    pub requests: usize,
    pub failed_requests: usize,
    pub retries: usize,
    pub request_bytes: usize,
    pub elapsed: Duration,
    pub first_error: Option<String>,
    /// Time from sending each request to its final answer (retries included).
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Both reports' counts and latencies together, and their time one after the other.
    pub fn merge(mut self, other: LoadReport) -> LoadReport {
        self.samples_sent += other.samples_sent;
        self.samples_accepted += other.samples_accepted;
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        self.retries += other.retries;
        self.request_bytes += other.request_bytes;
        self.elapsed += other.elapsed;
        self.first_error = self.first_error.or(other.first_error);
        self.latencies.extend(other.latencies);
        self
    }

    pub fn samples_per_sec(&self) -> f64 {
        self.samples_accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the request latencies, nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        sorted.get(((last as f64) * q).round() as usize).copied()
    }
}

/// Builds every request of the run over `cfg.series` node-exporter-like series, one list per
/// sender.
pub fn prepare(cfg: &LoadConfig) -> Result<Vec<Vec<Batch>>, String> {
    // Checked before the series are generated: a run too big to hold is refused at once.
    check_size(cfg.series, cfg)?;
    prepare_series(cfg, node_series(cfg.series))
}

fn check_size(series: usize, cfg: &LoadConfig) -> Result<(), String> {
    let total = series.saturating_mul(cfg.samples_per_series);
    if total > MAX_TOTAL_SAMPLES {
        return Err(format!(
            "{total} samples is more than the {MAX_TOTAL_SAMPLES} a run may hold in memory"
        ));
    }
    Ok(())
}

/// Builds every request of the run over the given series (`cfg.series` is not read), one list
/// per sender.
pub fn prepare_series(cfg: &LoadConfig, series: Vec<Series>) -> Result<Vec<Vec<Batch>>, String> {
    shard_requests(
        cfg,
        series,
        |s, step| s.next(step),
        |shard, samples| encode(cfg.protocol, shard, samples),
    )
}

/// The requests of a run of native histograms, [`native_histogram_series`] one sample each
/// per step, remote-write 1.0 only (`cfg.protocol` is not read).
pub fn prepare_native_histograms(cfg: &LoadConfig) -> Result<Vec<Vec<Batch>>, String> {
    check_size(cfg.series, cfg)?;
    shard_requests(
        cfg,
        native_histogram_series(cfg.series),
        |s, step| s.next(step).clone(),
        encode_native_histograms,
    )
}

/// Shards `series` over the senders as Prometheus's queue manager does, walks each shard step
/// by step (`value` gives a series' sample at a step) and encodes every `cfg.batch_samples`
/// samples as one request.
fn shard_requests<S: Clone, V>(
    cfg: &LoadConfig,
    series: Vec<S>,
    mut value: impl FnMut(&mut S, u64) -> V,
    encode: impl Fn(&[S], &[(usize, i64, V)]) -> Batch,
) -> Result<Vec<Vec<Batch>>, String> {
    check_size(series.len(), cfg)?;
    if cfg.concurrency == 0 || cfg.batch_samples == 0 {
        return Err("concurrency and batch size must be at least 1".into());
    }
    let mut shards: Vec<Vec<S>> = vec![Vec::new(); cfg.concurrency];
    for (i, s) in series.into_iter().enumerate() {
        shards[i % cfg.concurrency].push(s);
    }
    let first_ms = cfg.end_ms - (cfg.samples_per_series as i64 - 1) * cfg.interval_ms;
    Ok(shards
        .into_iter()
        .map(|mut shard| {
            let mut batches = Vec::new();
            let mut pending: Vec<(usize, i64, V)> = Vec::with_capacity(cfg.batch_samples);
            for step in 0..cfg.samples_per_series {
                let t = first_ms + step as i64 * cfg.interval_ms;
                for i in 0..shard.len() {
                    pending.push((i, t, value(&mut shard[i], step as u64)));
                    if pending.len() == cfg.batch_samples {
                        batches.push(encode(&shard, &pending));
                        pending.clear();
                    }
                }
            }
            if !pending.is_empty() {
                batches.push(encode(&shard, &pending));
            }
            batches
        })
        .collect())
}

/// Native histogram samples as one remote-write 1.0 request, each its own TimeSeries entry.
fn encode_native_histograms(
    series: &[NativeHistogramSeries],
    samples: &[(usize, i64, NativeHistogram)],
) -> Batch {
    let raw = v1::WriteRequest {
        timeseries: samples
            .iter()
            .map(|(i, t, h)| v1::TimeSeries {
                labels: v1_labels(&series[*i].labels),
                histograms: vec![proto::Histogram {
                    count: Some(proto::histogram::Count::CountInt(h.count)),
                    sum: h.sum,
                    schema: h.schema,
                    zero_threshold: h.zero_threshold,
                    zero_count: Some(proto::histogram::ZeroCount::ZeroCountInt(h.zero_count)),
                    positive_spans: vec![proto::BucketSpan {
                        offset: h.offset,
                        length: h.buckets.len() as u32,
                    }],
                    // The wire holds each bucket as the change from the one before.
                    positive_deltas: h
                        .buckets
                        .iter()
                        .scan(0i64, |prev, &b| {
                            let d = b as i64 - *prev;
                            *prev = b as i64;
                            Some(d)
                        })
                        .collect(),
                    timestamp: *t,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
    .encode_to_vec();
    compressed(&raw, samples.len())
}

fn v1_labels(labels: &[(String, String)]) -> Vec<v1::Label> {
    labels
        .iter()
        .map(|(n, v)| v1::Label {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

fn compressed(raw: &[u8], samples: usize) -> Batch {
    let body = snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("snappy accepts any input below 4 GiB");
    Batch {
        body: Bytes::from(body),
        samples,
    }
}

/// Encodes (series index, t, v) samples as one request. As Prometheus's queue manager does,
/// every sample is its own TimeSeries entry, so a series may appear more than once.
pub fn encode(protocol: Protocol, series: &[Series], samples: &[(usize, i64, f64)]) -> Batch {
    let raw = match protocol {
        Protocol::V1 => v1::WriteRequest {
            timeseries: samples
                .iter()
                .map(|&(i, t, v)| v1::TimeSeries {
                    labels: v1_labels(&series[i].labels),
                    samples: vec![v1::Sample {
                        value: v,
                        timestamp: t,
                    }],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        }
        .encode_to_vec(),
        Protocol::V2 => {
            let mut symbols = Symbols::default();
            let timeseries = samples
                .iter()
                .map(|&(i, t, v)| v2::TimeSeries {
                    labels_refs: series[i]
                        .labels
                        .iter()
                        .flat_map(|(n, v)| [symbols.intern(n), symbols.intern(v)])
                        .collect(),
                    samples: vec![v2::Sample {
                        value: v,
                        timestamp: t,
                        start_timestamp: 0,
                    }],
                    ..Default::default()
                })
                .collect();
            v2::Request {
                symbols: symbols.table,
                timeseries,
            }
            .encode_to_vec()
        }
    };
    compressed(&raw, samples.len())
}

/// A 2.0 symbols table under construction; starts with the empty string, as the spec requires.
struct Symbols<'a> {
    table: Vec<String>,
    index: HashMap<&'a str, u32>,
}

impl Default for Symbols<'_> {
    fn default() -> Self {
        Symbols {
            table: vec![String::new()],
            index: HashMap::from([("", 0)]),
        }
    }
}

impl<'a> Symbols<'a> {
    fn intern(&mut self, s: &'a str) -> u32 {
        *self.index.entry(s).or_insert_with(|| {
            self.table.push(s.to_string());
            (self.table.len() - 1) as u32
        })
    }
}

fn content_type(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::V1 => "application/x-protobuf",
        Protocol::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    }
}

fn version_header(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::V1 => "0.1.0",
        Protocol::V2 => "2.0.0",
    }
}

/// Sends every shard's batches in order from its own thread; the shards run concurrently.
/// Like Prometheus, retries 5xx, 429 and connection errors with backoff (bounded), and gives
/// up on 4xx.
pub fn send(url: &str, protocol: Protocol, shards: Vec<Vec<Batch>>) -> LoadReport {
    let started = Instant::now();
    let reports: Vec<LoadReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .into_iter()
            .map(|batches| scope.spawn(move || send_shard(url, protocol, batches)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| LoadReport {
                    first_error: Some("sender thread panicked".into()),
                    ..LoadReport::default()
                })
            })
            .collect()
    });
    // The senders ran side by side: the run took the wall time, not the sum of theirs.
    LoadReport {
        elapsed: started.elapsed(),
        ..reports
            .into_iter()
            .fold(LoadReport::default(), LoadReport::merge)
    }
}

fn send_shard(url: &str, protocol: Protocol, batches: Vec<Batch>) -> LoadReport {
    let mut report = LoadReport::default();
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            report.first_error = Some(format!("building HTTP client: {e}"));
            return report;
        }
    };
    for batch in batches {
        report.samples_sent += batch.samples;
        report.request_bytes += batch.body.len();
        report.requests += 1;
        let mut attempt = 0;
        let sent = Instant::now();
        let outcome = loop {
            attempt += 1;
            let result = client
                .post(url)
                .header("Content-Type", content_type(protocol))
                .header("Content-Encoding", "snappy")
                .header(
                    "X-Prometheus-Remote-Write-Version",
                    version_header(protocol),
                )
                .body(batch.body.clone())
                .send();
            let retryable = match &result {
                Ok(resp) => resp.status().is_server_error() || resp.status().as_u16() == 429,
                Err(_) => true,
            };
            if !retryable || attempt == MAX_ATTEMPTS {
                break result;
            }
            report.retries += 1;
            std::thread::sleep(Duration::from_millis(50 << attempt));
        };
        report.latencies.push(sent.elapsed());
        match outcome {
            Ok(resp) if resp.status().is_success() => {
                // A 2.0 receiver says how many it wrote; a 1.0 success means all of them.
                let written = resp
                    .headers()
                    .get("X-Prometheus-Remote-Write-Samples-Written")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                report.samples_accepted += written.unwrap_or(batch.samples);
            }
            Ok(resp) => {
                report.failed_requests += 1;
                if report.first_error.is_none() {
                    let status = resp.status();
                    let body = resp.text().unwrap_or_default();
                    report.first_error = Some(format!("{status}: {}", body.trim()));
                }
            }
            Err(e) => {
                report.failed_requests += 1;
                report.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    report
}

/// Waits until `url` accepts an empty remote-write 1.0 request, polling for at most `timeout`.
pub fn wait_ready(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let empty = snap::raw::Encoder::new()
        .compress_vec(&v1::WriteRequest::default().encode_to_vec())
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        let result = client
            .post(url)
            .header("Content-Type", content_type(Protocol::V1))
            .header("Content-Encoding", "snappy")
            .body(empty.clone())
            .send();
        match result {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("status {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
        // Fine enough to time a restart by.
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{url} not ready after {timeout:?}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::remote_write::decode;
    use ingest::Limits;

    fn config(protocol: Protocol) -> LoadConfig {
        LoadConfig {
            series: 300,
            samples_per_series: 10,
            concurrency: 3,
            batch_samples: 250,
            protocol,
            interval_ms: 15_000,
            end_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn runs_end_before_a_2h_boundary_they_would_straddle() {
        const H: i64 = 3600 * 1000;
        // 30 minutes ending 10 minutes past a boundary: moved to end just before it.
        assert_eq!(unsplit_end(10 * H + H / 6, H / 2), 10 * H - 1);
        // Clear of the boundary, or longer than a window: left at now.
        assert_eq!(unsplit_end(11 * H, H / 2), 11 * H);
        assert_eq!(unsplit_end(10 * H + H / 6, 3 * H), 10 * H + H / 6);
    }

    #[test]
    fn native_histogram_batches_decode_with_the_generated_counts() {
        let cfg = config(Protocol::V1);
        let shards = prepare_native_histograms(&cfg).unwrap();
        let mut expected = native_histogram_series(cfg.series);
        let mut total = 0;
        for batch in shards.iter().flatten() {
            let decoded = decode(Protocol::V1, batch.body(), &Limits::default()).unwrap();
            assert_eq!(decoded.errors().count(), 0);
            for s in decoded.series().iter() {
                assert!(s.samples.is_empty());
                total += s.histograms.len();
                for h in s.histograms {
                    assert_eq!(h.h.positive_buckets.len(), 24);
                    assert_eq!(h.h.count, h.h.positive_buckets.iter().sum::<f64>());
                }
            }
        }
        assert_eq!(total, 3000);
        // The first request of the first sender starts with series 0 at step 0, as generated
        // (the wire's bucket deltas summed back).
        let want = expected[0].next(0).clone();
        let decoded = decode(Protocol::V1, shards[0][0].body(), &Limits::default()).unwrap();
        let first = decoded.series().iter().next().unwrap().histograms[0]
            .h
            .clone();
        let buckets: Vec<f64> = want.buckets.iter().map(|&b| b as f64).collect();
        assert_eq!(first.positive_buckets, buckets);
        assert_eq!(first.count, want.count as f64);
        assert_eq!(first.sum, want.sum);
    }

    #[test]
    fn batches_decode_and_cover_every_sample_in_time_order() {
        for protocol in [Protocol::V1, Protocol::V2] {
            let shards = prepare(&config(protocol)).unwrap();
            assert_eq!(shards.len(), 3);
            let mut total = 0;
            for shard in &shards {
                let mut last_t: HashMap<String, i64> = HashMap::new();
                for batch in shard {
                    assert!(batch.samples() <= 250);
                    let decoded = decode(protocol, batch.body(), &Limits::default()).unwrap();
                    assert_eq!(decoded.errors().count(), 0);
                    for s in decoded.series().iter() {
                        total += s.samples.len();
                        for sample in s.samples {
                            let prev = last_t.insert(s.labels().to_string(), sample.t);
                            assert!(
                                prev.is_none_or(|p| p < sample.t),
                                "{protocol}: series not time-ordered"
                            );
                        }
                    }
                }
            }
            assert_eq!(total, 3000, "{protocol}");
        }
    }

    #[test]
    fn oversized_runs_are_refused() {
        let cfg = LoadConfig {
            series: MAX_TOTAL_SAMPLES,
            samples_per_series: 2,
            ..config(Protocol::V1)
        };
        assert!(prepare(&cfg).is_err());
    }
}
