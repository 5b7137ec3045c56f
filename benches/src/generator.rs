//! Synthetic node-exporter-like series for load benches: counters, gauges and classic
//! histograms (`_bucket{le=..}`, `_sum`, `_count`) per host, with values that move the way real
//! ones do (monotonic counters, slow gauges, cumulative buckets), so that compression figures
//! mean something. Deterministic: the same arguments give the same series and values. Knows
//! nothing of wire formats.

/// One synthetic series: its labels (sorted by name) and how its value evolves.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    model: Model,
    value: f64,
}

#[derive(Clone, Copy, Debug)]
enum Model {
    /// Grows by about `mean` per step; `decimals` as node-exporter prints them (None: integer).
    Counter {
        seed: u64,
        mean: f64,
        decimals: Option<i32>,
    },
    /// Random walk around its start in multiples of `quantum`, within ±`spread`.
    Gauge {
        seed: u64,
        base: f64,
        quantum: f64,
        spread: f64,
    },
    Constant,
    /// A cumulative bucket of a classic histogram: the share `fraction` of the group's observations.
    Bucket {
        group: u64,
        fraction: f64,
    },
    HistogramSum {
        group: u64,
    },
    HistogramCount {
        group: u64,
    },
}

/// Observations per step of a histogram group, and their mean (seconds).
const OBSERVATIONS_PER_STEP: f64 = 40.0;
const MEAN_LATENCY: f64 = 0.12;
const BUCKETS: [f64; 12] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];
const CPU_MODES: [(&str, f64); 8] = [
    ("idle", 0.7),
    ("user", 0.15),
    ("system", 0.06),
    ("iowait", 0.03),
    ("irq", 0.005),
    ("softirq", 0.01),
    ("steal", 0.002),
    ("nice", 0.001),
];

/// splitmix64: a stateless hash, so any series can compute its step independently.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Uniform in [0, 1) for (seed, step).
fn unit(seed: u64, step: u64) -> f64 {
    (mix(seed ^ mix(step)) >> 11) as f64 / (1u64 << 53) as f64
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

impl Series {
    fn new(name: &str, host: usize, extra: &[(&str, String)], model: Model, start: f64) -> Series {
        let mut labels = vec![
            ("__name__".to_string(), name.to_string()),
            ("instance".to_string(), format!("host-{host:04}:9100")),
            ("job".to_string(), "node".to_string()),
        ];
        labels.extend(extra.iter().map(|(n, v)| (n.to_string(), v.clone())));
        labels.sort();
        Series {
            labels,
            model,
            value: start,
        }
    }

    /// Advances to `step` (called with 0, 1, 2, ...) and returns the value there.
    pub fn next(&mut self, step: u64) -> f64 {
        let observations = |group: u64| (OBSERVATIONS_PER_STEP * (0.5 + unit(group, step))).floor();
        match self.model {
            Model::Counter {
                seed,
                mean,
                decimals,
            } => {
                let inc = mean * (0.5 + unit(seed, step));
                self.value = match decimals {
                    Some(d) => round_to(self.value + inc, d),
                    None => (self.value + inc).round(),
                };
            }
            Model::Gauge {
                seed,
                base,
                quantum,
                spread,
            } => {
                let delta = ((unit(seed, step) - 0.5) * 8.0).round() * quantum;
                self.value = (self.value + delta).clamp(base - spread, base + spread);
            }
            Model::Constant => {}
            Model::Bucket { group, fraction } => {
                self.value += (observations(group) * fraction).round()
            }
            Model::HistogramCount { group } => self.value += observations(group),
            Model::HistogramSum { group } => {
                let mean = MEAN_LATENCY * (0.8 + 0.4 * unit(group ^ 0x5eed, step));
                self.value = round_to(self.value + observations(group) * mean, 6);
            }
        }
        self.value
    }
}

/// `limit` series of as many node-exporter-like hosts as needed (about 90 series per host).
pub fn node_series(limit: usize) -> Vec<Series> {
    let mut out = Vec::with_capacity(limit);
    let mut host = 0;
    while out.len() < limit {
        host_series(host, &mut out);
        host += 1;
    }
    out.truncate(limit);
    out
}

fn host_series(host: usize, out: &mut Vec<Series>) {
    let seed = |i: usize| mix(((host as u64) << 20) | i as u64);
    let mut i = 0;
    let mut next_seed = || {
        i += 1;
        seed(i)
    };
    let gib = 1024.0 * 1024.0 * 1024.0;
    for cpu in 0..4 {
        for (mode, share) in CPU_MODES {
            let model = Model::Counter {
                seed: next_seed(),
                mean: 15.0 * share,
                decimals: Some(2),
            };
            let extra = [("cpu", cpu.to_string()), ("mode", mode.to_string())];
            out.push(Series::new(
                "node_cpu_seconds_total",
                host,
                &extra,
                model,
                1e5 * share,
            ));
        }
    }
    for (name, base) in [
        ("node_memory_MemTotal_bytes", 0.0),
        ("node_memory_MemFree_bytes", 2.0 * gib),
        ("node_memory_MemAvailable_bytes", 9.0 * gib),
        ("node_memory_Cached_bytes", 5.0 * gib),
        ("node_memory_Buffers_bytes", 0.3 * gib),
        ("node_memory_SwapFree_bytes", 0.0),
    ] {
        let model = if base == 0.0 {
            Model::Constant
        } else {
            Model::Gauge {
                seed: next_seed(),
                base,
                quantum: 4096.0,
                spread: 0.2 * gib,
            }
        };
        let start = if base == 0.0 { 16.0 * gib } else { base };
        out.push(Series::new(name, host, &[], model, start));
    }
    for name in ["node_load1", "node_load5", "node_load15"] {
        let model = Model::Gauge {
            seed: next_seed(),
            base: 1.0,
            quantum: 0.01,
            spread: 0.9,
        };
        out.push(Series::new(name, host, &[], model, 1.0));
    }
    for device in ["eth0", "lo"] {
        for (name, mean) in [
            ("node_network_receive_bytes_total", 1.5e6),
            ("node_network_transmit_bytes_total", 9e5),
            ("node_network_receive_packets_total", 1200.0),
            ("node_network_transmit_packets_total", 900.0),
        ] {
            let model = Model::Counter {
                seed: next_seed(),
                mean,
                decimals: None,
            };
            out.push(Series::new(
                name,
                host,
                &[("device", device.to_string())],
                model,
                mean * 1e4,
            ));
        }
    }
    for device in ["sda", "sdb"] {
        for (name, mean, decimals) in [
            ("node_disk_read_bytes_total", 2e5, None),
            ("node_disk_written_bytes_total", 6e5, None),
            ("node_disk_io_time_seconds_total", 0.4, Some(3)),
        ] {
            let model = Model::Counter {
                seed: next_seed(),
                mean,
                decimals,
            };
            out.push(Series::new(
                name,
                host,
                &[("device", device.to_string())],
                model,
                mean * 1e4,
            ));
        }
    }
    for (device, mountpoint, fstype) in [
        ("/dev/sda1", "/", "ext4"),
        ("/dev/sdb1", "/data", "xfs"),
        ("tmpfs", "/run", "tmpfs"),
    ] {
        let extra = [
            ("device", device.to_string()),
            ("fstype", fstype.to_string()),
            ("mountpoint", mountpoint.to_string()),
        ];
        let avail = Model::Gauge {
            seed: next_seed(),
            base: 40.0 * gib,
            quantum: 4096.0,
            spread: gib,
        };
        out.push(Series::new(
            "node_filesystem_avail_bytes",
            host,
            &extra,
            avail,
            40.0 * gib,
        ));
        out.push(Series::new(
            "node_filesystem_size_bytes",
            host,
            &extra,
            Model::Constant,
            100.0 * gib,
        ));
    }
    for handler in ["/metrics", "/api/v1/query"] {
        let group = next_seed();
        for le in BUCKETS {
            let fraction = 1.0 - (-le / MEAN_LATENCY).exp();
            let le_text = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let extra = [("handler", handler.to_string()), ("le", le_text)];
            let model = Model::Bucket { group, fraction };
            out.push(Series::new(
                "http_request_duration_seconds_bucket",
                host,
                &extra,
                model,
                0.0,
            ));
        }
        let extra = [("handler", handler.to_string())];
        let sum = Model::HistogramSum { group };
        out.push(Series::new(
            "http_request_duration_seconds_sum",
            host,
            &extra,
            sum,
            0.0,
        ));
        let count = Model::HistogramCount { group };
        out.push(Series::new(
            "http_request_duration_seconds_count",
            host,
            &extra,
            count,
            0.0,
        ));
    }
    out.push(Series::new("up", host, &[], Model::Constant, 1.0));
}

/// A native histogram sample as a remote-write sender holds it: integer counts, one span of
/// consecutive buckets, bucket counts absolute (the wire encoding takes their deltas).
#[derive(Clone, Debug, PartialEq)]
pub struct NativeHistogram {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    /// Index of the first bucket (the span's offset).
    pub offset: i32,
    pub buckets: Vec<u64>,
}

/// Buckets of a [`native_histogram_series`] latency histogram: schema 3 (8 buckets per power
/// of two), from 2^(-40/8) ≈ 31 ms up, about where [`MEAN_LATENCY`] puts observations.
const NATIVE_SCHEMA: i32 = 3;
const NATIVE_OFFSET: i32 = -40;
const NATIVE_BUCKETS: usize = 24;

/// A request-duration native histogram series: what the same handlers' classic histograms in
/// [`node_series`] would be as one native histogram each.
#[derive(Clone, Debug)]
pub struct NativeHistogramSeries {
    pub labels: Vec<(String, String)>,
    group: u64,
    value: NativeHistogram,
}

impl NativeHistogramSeries {
    /// Advances to `step` (called with 0, 1, 2, ...) and returns the histogram there: every
    /// bucket gains its share of the step's observations, rounded per step.
    pub fn next(&mut self, step: u64) -> &NativeHistogram {
        let observations = (OBSERVATIONS_PER_STEP * (0.5 + unit(self.group, step))).floor();
        let h = &mut self.value;
        let base = 2f64.powf(2f64.powi(-NATIVE_SCHEMA));
        for (i, b) in h.buckets.iter_mut().enumerate() {
            // Upper bound of bucket index k is base^k; the share is the exponential
            // distribution's mass between this bucket's bounds.
            let k = NATIVE_OFFSET + i as i32;
            let (lo, hi) = (base.powi(k - 1), base.powi(k));
            let share = (-lo / MEAN_LATENCY).exp() - (-hi / MEAN_LATENCY).exp();
            let add = (observations * share * (0.5 + unit(self.group ^ i as u64, step))).round();
            *b += add as u64;
            h.count += add as u64;
            h.sum += add * (lo + hi) / 2.0;
        }
        h.sum = round_to(h.sum, 6);
        &self.value
    }
}

/// `limit` native histogram series, two handlers per host as in [`node_series`].
pub fn native_histogram_series(limit: usize) -> Vec<NativeHistogramSeries> {
    (0..limit)
        .map(|i| {
            let (host, handler) = (i / 2, ["/metrics", "/api/v1/query"][i % 2]);
            let mut labels = vec![
                (
                    "__name__".to_string(),
                    "http_request_duration_seconds".to_string(),
                ),
                ("handler".to_string(), handler.to_string()),
                ("instance".to_string(), format!("host-{host:04}:9100")),
                ("job".to_string(), "node".to_string()),
            ];
            labels.sort();
            NativeHistogramSeries {
                labels,
                group: mix(i as u64 ^ 0x4e41_5449_5645),
                value: NativeHistogram {
                    schema: NATIVE_SCHEMA,
                    zero_threshold: 1e-128,
                    zero_count: 0,
                    count: 0,
                    sum: 0.0,
                    offset: NATIVE_OFFSET,
                    buckets: vec![0; NATIVE_BUCKETS],
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_unique_sorted_and_limited() {
        let series = node_series(1000);
        assert_eq!(series.len(), 1000);
        let mut seen = std::collections::HashSet::new();
        for s in &series {
            assert!(
                s.labels.windows(2).all(|w| w[0].0 < w[1].0),
                "{:?}",
                s.labels
            );
            assert!(seen.insert(s.labels.clone()), "duplicate {:?}", s.labels);
        }
    }

    #[test]
    fn counters_and_buckets_never_decrease_and_buckets_stay_cumulative() {
        let mut series = node_series(200);
        let mut last: Vec<f64> = vec![f64::NEG_INFINITY; series.len()];
        for step in 0..50 {
            let values: Vec<f64> = series.iter_mut().map(|s| s.next(step)).collect();
            for (i, s) in series.iter().enumerate() {
                let name = &s.labels[0].1;
                if name.ends_with("_total") || name.ends_with("_bucket") || name.ends_with("_count")
                {
                    assert!(values[i] >= last[i], "{name} went down");
                }
            }
            // Within each histogram group, bucket values grow with le and +Inf equals _count.
            for (i, s) in series.iter().enumerate() {
                if s.labels[0].1 == "http_request_duration_seconds_bucket"
                    && i + BUCKETS.len() + 1 < series.len()
                {
                    let le = &s.labels.iter().find(|l| l.0 == "le").unwrap().1;
                    if le == "0.005" {
                        let group = &values[i..i + BUCKETS.len()];
                        assert!(group.windows(2).all(|w| w[0] <= w[1]), "{group:?}");
                        assert_eq!(
                            group[BUCKETS.len() - 1],
                            values[i + BUCKETS.len() + 1],
                            "+Inf must equal _count"
                        );
                    }
                }
            }
            last = values;
        }
    }

    #[test]
    fn native_histograms_stay_consistent_and_grow() {
        let mut series = native_histogram_series(10);
        let mut last_count = vec![0u64; series.len()];
        for step in 0..30 {
            for (i, s) in series.iter_mut().enumerate() {
                let h = s.next(step).clone();
                assert_eq!(h.count, h.zero_count + h.buckets.iter().sum::<u64>());
                assert!(h.count >= last_count[i]);
                last_count[i] = h.count;
            }
        }
        assert!(last_count.iter().all(|&c| c > 100), "{last_count:?}");
    }
}
