//! Service discovery's self-metrics, by Prometheus 2.42's names, types and labels
//! (`prometheus_sd_*`: `discovery/manager.go`, `file/file.go`, `http/http.go`, `dns/dns.go`,
//! `refresh/refresh.go`). Owns names, labels and the summaries' windows; the discoveries count.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscoveredLabels {
    config: String,
    /// The discovery manager: novamon has only the scrape one.
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    filename: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MechanismLabels {
    mechanism: &'static str,
}

/// Every `prometheus_sd_*` series novamon keeps. Prometheus registers them once per process
/// (its discoveries' `init`), so they outlive reloads; novamon's belong to the scrape manager,
/// which lives as long as the process and keeps them across reloads, and hands them to each
/// discovery (so a test can count its own).
#[derive(Default)]
pub struct SdMetrics {
    discovered: Family<DiscoveredLabels, Gauge>,
    pub(crate) file_read_errors: Counter,
    pub(crate) file_scan: Summary,
    file_mtime: Family<FileLabels, Gauge<f64, AtomicU64>>,
    pub(crate) http_failures: Counter,
    pub(crate) dns_lookups: Counter,
    pub(crate) dns_lookup_failures: Counter,
    refresh_failures: Family<MechanismLabels, Counter>,
    /// By mechanism, in the order they first refreshed.
    refresh_duration: Mutex<Vec<(&'static str, Arc<Summary>)>>,
}

const FILE_SCAN: &str = "prometheus_sd_file_scan_duration_seconds";
const REFRESH_DURATION: &str = "prometheus_sd_refresh_duration_seconds";

impl SdMetrics {
    /// Registers the counters and gauges (their help without Prometheus's final period, which
    /// prometheus-client adds); the summaries, which prometheus-client cannot encode, are
    /// written by [`SdMetrics::encode_summaries`].
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "prometheus_sd_discovered_targets",
            "Current number of discovered targets",
            self.discovered.clone(),
        );
        registry.register(
            "prometheus_sd_file_read_errors",
            "The number of File-SD read errors",
            self.file_read_errors.clone(),
        );
        registry.register(
            "prometheus_sd_file_mtime_seconds",
            "Timestamp (mtime) of files read by FileSD. Timestamp is set at read time",
            self.file_mtime.clone(),
        );
        registry.register(
            "prometheus_sd_http_failures",
            "Number of HTTP service discovery refresh failures",
            self.http_failures.clone(),
        );
        registry.register(
            "prometheus_sd_dns_lookups",
            "The number of DNS-SD lookups",
            self.dns_lookups.clone(),
        );
        registry.register(
            "prometheus_sd_dns_lookup_failures",
            "The number of DNS-SD lookup failures",
            self.dns_lookup_failures.clone(),
        );
        registry.register(
            "prometheus_sd_refresh_failures",
            "Number of refresh failures for the given SD mechanism",
            self.refresh_failures.clone(),
        );
    }

    /// The summaries as OpenMetrics text families, for the exposition to add before its
    /// `# EOF`.
    pub fn encode_summaries(&self, out: &mut String) -> std::fmt::Result {
        let now = Instant::now();
        writeln!(
            out,
            "# HELP {FILE_SCAN} The duration of the File-SD scan in seconds."
        )?;
        writeln!(out, "# TYPE {FILE_SCAN} summary")?;
        self.file_scan.encode(out, FILE_SCAN, "", now)?;
        writeln!(
            out,
            "# HELP {REFRESH_DURATION} The duration of a refresh in seconds for the given SD mechanism."
        )?;
        writeln!(out, "# TYPE {REFRESH_DURATION} summary")?;
        for (mechanism, s) in self.refresh_duration.lock().iter() {
            s.encode(
                out,
                REFRESH_DURATION,
                &format!("mechanism=\"{mechanism}\","),
                now,
            )?;
        }
        Ok(())
    }

    /// A job's targets as discovered (before relabelling), counted over all its groups.
    pub(crate) fn set_discovered(&self, job: &str, targets: usize) {
        self.discovered
            .get_or_create(&discovered_labels(job))
            .set(targets as i64);
    }

    /// A job gone on reload takes its series with it.
    pub(crate) fn remove_discovered(&self, job: &str) {
        self.discovered.remove(&discovered_labels(job));
    }

    /// A file read whole, as of its modification time (whole seconds, as Prometheus keeps
    /// them).
    pub(crate) fn set_mtime(&self, filename: &str, secs: u64) {
        self.file_mtime
            .get_or_create(&FileLabels {
                filename: filename.into(),
            })
            .set(secs as f64);
    }

    /// A file no longer matched, or its discovery ended.
    pub(crate) fn remove_mtime(&self, filename: &str) {
        self.file_mtime.remove(&FileLabels {
            filename: filename.into(),
        });
    }

    /// A refreshing mechanism started: its failure counter shows from then on, at 0, as in
    /// Prometheus.
    pub(crate) fn mechanism_started(&self, mechanism: &'static str) {
        let _ = self
            .refresh_failures
            .get_or_create(&MechanismLabels { mechanism });
    }

    /// One refresh of `mechanism` took `took`; `failed` when it kept the last groups.
    pub(crate) fn refreshed(&self, mechanism: &'static str, took: Duration, failed: bool) {
        if failed {
            self.refresh_failures
                .get_or_create(&MechanismLabels { mechanism })
                .inc();
        }
        let summary = {
            let mut all = self.refresh_duration.lock();
            match all.iter().find(|(m, _)| *m == mechanism) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = Arc::new(Summary::default());
                    all.push((mechanism, s.clone()));
                    s
                }
            }
        };
        summary.observe(took.as_secs_f64());
    }
}

fn discovered_labels(job: &str) -> DiscoveredLabels {
    DiscoveredLabels {
        config: job.into(),
        name: "scrape",
    }
}

/// A summary as client_golang keeps Prometheus's: the 0.5, 0.9 and 0.99 quantiles of the last
/// ten minutes' observations (NaN when there were none), and the count and sum since start.
/// Discoveries observe at most about once a second, so the window is kept whole (bounded, in
/// case one refreshes far more often) and its quantiles are exact.
#[derive(Default)]
pub(crate) struct Summary {
    inner: Mutex<SummaryState>,
}

#[derive(Default)]
struct SummaryState {
    window: VecDeque<(Instant, f64)>,
    count: u64,
    sum: f64,
}

/// client_golang's `DefMaxAge`.
const MAX_AGE: Duration = Duration::from_secs(600);
/// The most observations a window holds; older ones leave it first.
const MAX_WINDOW: usize = 4096;
const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")];

impl Summary {
    pub(crate) fn observe(&self, v: f64) {
        let now = Instant::now();
        let mut s = self.inner.lock();
        s.count += 1;
        s.sum += v;
        if s.window.len() == MAX_WINDOW {
            s.window.pop_front();
        }
        s.window.push_back((now, v));
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.inner.lock().count
    }

    /// The window's φ-quantiles, by rank: the smallest value with at least φ of the
    /// observations at or below it.
    fn quantiles(&self, now: Instant) -> ([f64; 3], u64, f64) {
        let mut s = self.inner.lock();
        while s
            .window
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > MAX_AGE)
        {
            s.window.pop_front();
        }
        let mut values: Vec<f64> = s.window.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        let q = QUANTILES.map(|(phi, _)| {
            if values.is_empty() {
                return f64::NAN;
            }
            let rank = (phi * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        });
        (q, s.count, s.sum)
    }

    /// Its samples; `labels` are the other labels, each followed by a comma.
    fn encode(&self, out: &mut String, name: &str, labels: &str, now: Instant) -> std::fmt::Result {
        let (q, count, sum) = self.quantiles(now);
        for ((_, phi), v) in QUANTILES.iter().zip(q) {
            writeln!(out, "{name}{{{labels}quantile=\"{phi}\"}} {}", float(v))?;
        }
        let labels = labels.trim_end_matches(',');
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        writeln!(out, "{name}_sum{labels} {}", float(sum))?;
        writeln!(out, "{name}_count{labels} {count}")
    }
}

/// An OpenMetrics float: `NaN`, or Rust's shortest form with a fraction, as prometheus-client
/// writes its values.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.is_finite() {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_written_as_openmetrics_summaries() {
        let m = SdMetrics::default();
        m.mechanism_started("http");
        let mut out = String::new();
        m.encode_summaries(&mut out).unwrap();
        assert!(out.contains(
            "# TYPE prometheus_sd_file_scan_duration_seconds summary\n\
             prometheus_sd_file_scan_duration_seconds{quantile=\"0.5\"} NaN\n"
        ));
        assert!(out.contains("prometheus_sd_file_scan_duration_seconds_count 0\n"));
        assert!(
            !out.contains("mechanism="),
            "no refresh yet, no duration series: {out}"
        );

        for ms in 1..=100 {
            m.file_scan.observe(ms as f64 / 1000.0);
        }
        m.refreshed("http", Duration::from_millis(250), true);
        m.refreshed("http", Duration::from_millis(750), false);
        m.refreshed("dns", Duration::from_millis(500), false);
        let mut out = String::new();
        m.encode_summaries(&mut out).unwrap();
        for line in [
            "prometheus_sd_file_scan_duration_seconds{quantile=\"0.5\"} 0.05\n",
            "prometheus_sd_file_scan_duration_seconds{quantile=\"0.9\"} 0.09\n",
            "prometheus_sd_file_scan_duration_seconds{quantile=\"0.99\"} 0.099\n",
            "prometheus_sd_file_scan_duration_seconds_count 100\n",
            "prometheus_sd_refresh_duration_seconds{mechanism=\"http\",quantile=\"0.5\"} 0.25\n",
            "prometheus_sd_refresh_duration_seconds{mechanism=\"http\",quantile=\"0.99\"} 0.75\n",
            "prometheus_sd_refresh_duration_seconds_sum{mechanism=\"http\"} 1.0\n",
            "prometheus_sd_refresh_duration_seconds_count{mechanism=\"http\"} 2\n",
            "prometheus_sd_refresh_duration_seconds_count{mechanism=\"dns\"} 1\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        // One family each, every sample of it after its TYPE line.
        assert_eq!(out.matches("# TYPE").count(), 2);
        assert_eq!(
            m.refresh_failures
                .get_or_create(&MechanismLabels { mechanism: "http" })
                .get(),
            1
        );
        assert_eq!(
            m.refresh_failures
                .get_or_create(&MechanismLabels { mechanism: "dns" })
                .get(),
            0
        );
    }

    #[test]
    fn old_observations_leave_the_window_but_not_the_totals() {
        let s = Summary::default();
        s.observe(1.0);
        s.observe(3.0);
        let (q, count, sum) = s.quantiles(Instant::now() + MAX_AGE + Duration::from_secs(1));
        assert!(q.iter().all(|v| v.is_nan()), "{q:?}");
        assert_eq!((count, sum), (2, 4.0));
        for v in 0..MAX_WINDOW + 10 {
            s.observe(v as f64);
        }
        assert_eq!(s.inner.lock().window.len(), MAX_WINDOW);
    }
}
