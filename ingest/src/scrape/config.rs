//! `scrape_configs` entries as Prometheus reads them from prometheus.yml, their defaults (the
//! `global` section's interval and timeout) and their load-time checks, with Prometheus's
//! messages. Owns the shapes only; discovery, the HTTP client and the loops read them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use storage::relabel::{RelabelConfig, Rule};

/// One `scrape_configs` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, deserialize_with = "opt_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    #[serde(default)]
    pub track_timestamps_staleness: bool,
    #[serde(default)]
    pub static_configs: Vec<TargetGroup>,
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default)]
    pub http_sd_configs: Vec<HttpSdConfig>,
    #[serde(default)]
    pub dns_sd_configs: Vec<DnsSdConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub sample_limit: usize,
    #[serde(default)]
    pub target_limit: usize,
    #[serde(default)]
    pub label_limit: usize,
    #[serde(default)]
    pub label_name_length_limit: usize,
    #[serde(default)]
    pub label_value_length_limit: usize,
    #[serde(default, deserialize_with = "opt_bytes")]
    pub body_size_limit: Option<u64>,
    #[serde(default)]
    pub scrape_protocols: Option<Vec<String>>,
    #[serde(flatten)]
    pub client: HttpClientConfig,
    /// Everything else: service discoveries novamon does not implement (`*_sd_configs`,
    /// reported once at start-up) and unknown keys (refused).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// The options of Prometheus's `HTTPClientConfig` that novamon's HTTP client has, shared by a
/// scrape job and an `http_sd_configs` entry (flattened into both, as in Prometheus's YAML).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HttpClientConfig {
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_config: TlsConfig,
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    #[serde(default = "yes")]
    pub enable_http2: bool,
}

/// A group of targets with common labels: a `static_configs` entry, or one entry of a file
/// discovered by `file_sd_configs` or of a list served to `http_sd_configs`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default = "default_refresh", deserialize_with = "duration")]
    pub refresh_interval: Duration,
}

/// An `http_sd_configs` entry: Prometheus's `SDConfig` of `discovery/http` with the HTTP client
/// options the scrape client has. `proxy_url` and `oauth2` are refused as unknown fields, as
/// they are in a scrape config: the client has neither.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HttpSdConfig {
    #[serde(default)]
    pub url: String,
    #[serde(default = "default_http_refresh", deserialize_with = "duration")]
    pub refresh_interval: Duration,
    #[serde(flatten)]
    pub client: HttpClientConfig,
    /// Unknown keys, refused by [`HttpSdConfig::check`] (serde's `deny_unknown_fields` does not
    /// work beside a flattened struct).
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml::Value>,
}

impl HttpSdConfig {
    /// Prometheus's checks of the URL on load, with its messages, and the credentials' checks
    /// every HTTP client config has (2.42 skipped those here, so that an `authorization`
    /// without `type` went out with no `Bearer`; 2.48 made them, and novamon follows it).
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(k) = self.other.keys().next() {
            return Err(format!("field {k} not found in type http.SDConfig"));
        }
        if self.url.is_empty() {
            return Err("URL is missing".into());
        }
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return Err("URL scheme must be 'http' or 'https'".into());
        };
        if !matches!(scheme, "http" | "https") {
            return Err("URL scheme must be 'http' or 'https'".into());
        }
        if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
            return Err("host is missing in URL".into());
        }
        self.client.check()
    }
}

/// A `dns_sd_configs` entry: Prometheus's `SDConfig` of `discovery/dns`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSdConfig {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default = "default_dns_refresh", deserialize_with = "duration")]
    pub refresh_interval: Duration,
    #[serde(default = "default_dns_type", rename = "type")]
    pub kind: String,
    /// Ignored for SRV records, which carry their own.
    #[serde(default)]
    pub port: u16,
}

impl DnsSdConfig {
    /// Prometheus's checks on load, with its messages.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.names.is_empty() {
            return Err("DNS-SD config must contain at least one SRV record name".into());
        }
        match self.kind.to_ascii_uppercase().as_str() {
            "SRV" => Ok(()),
            "A" | "AAAA" | "MX" if self.port == 0 => {
                Err("a port is required in DNS-SD configs for all record types except SRV".into())
            }
            "A" | "AAAA" | "MX" => Ok(()),
            _ => Err(format!("invalid DNS-SD records type {}", self.kind)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default = "default_auth_type", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub min_version: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}
fn default_auth_type() -> String {
    "Bearer".into()
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_http_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_dns_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_dns_type() -> String {
    "SRV".into()
}

/// Prometheus's durations (`15s`, `1m30s`); a config file takes no bare numbers.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.parse::<f64>().is_ok() {
        return Err(format!(
            "not a valid duration string: {s:?} (use a unit, e.g. 30s, 15d)"
        ));
    }
    promql_parser::util::parse_duration(s)
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Prometheus's `units.Base2Bytes`: `512`, `10KB`, `64MB`, `1GiB` (powers of 1024 either way).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("invalid byte size {s:?}"))?;
    let shift = match unit {
        "" | "B" => 0,
        "KB" | "KiB" | "K" => 10,
        "MB" | "MiB" | "M" => 20,
        "GB" | "GiB" | "G" => 30,
        "TB" | "TiB" | "T" => 40,
        _ => return Err(format!("invalid byte size {s:?}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("byte size {s:?} out of range"))
}

pub(crate) fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    let s = match v {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s,
        _ => return Err(serde::de::Error::custom("invalid byte size")),
    };
    parse_bytes(&s).map(Some).map_err(serde::de::Error::custom)
}

/// The `scrape_protocols` names Prometheus accepts, and the media type each asks for.
pub(crate) const PROTOCOLS: &[(&str, &str)] = &[
    ("OpenMetricsText1.0.0", "application/openmetrics-text;version=1.0.0"),
    ("OpenMetricsText0.0.1", "application/openmetrics-text;version=0.0.1"),
    ("PrometheusText0.0.4", "text/plain;version=0.0.4"),
    (
        "PrometheusProto",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
    ),
];

/// The settings of one scrape pool after defaults and checks, with its rules compiled.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub raw: ScrapeConfig,
    pub interval: Duration,
    pub timeout: Duration,
    pub relabel: Vec<Rule>,
    pub metric_relabel: Vec<Rule>,
    /// The `Accept` header, from `scrape_protocols` (text formats only: novamon does not
    /// parse the protobuf format, so it never asks for it).
    pub accept: String,
}

impl ScrapeConfig {
    /// Service discoveries in this entry novamon does not implement (their targets are not
    /// scraped); each is named once at start-up.
    pub fn unsupported_discovery(&self) -> impl Iterator<Item = &str> {
        self.other
            .keys()
            .map(String::as_str)
            .filter(|k| k.ends_with("_sd_configs"))
    }

    /// Fills in the global interval and timeout and checks what Prometheus checks on load.
    pub fn compile(
        &self,
        global_interval: Duration,
        global_timeout: Duration,
    ) -> Result<PoolConfig, String> {
        let job = &self.job_name;
        if job.is_empty() {
            return Err("job_name is empty".into());
        }
        if let Some(k) = self.other.keys().find(|k| !k.ends_with("_sd_configs")) {
            return Err(format!("field {k} not found in type config.ScrapeConfig"));
        }
        let interval = self.scrape_interval.unwrap_or(global_interval);
        // An unset timeout is the global one, capped at the interval (Prometheus).
        let timeout = match self.scrape_timeout {
            Some(t) => t,
            None => global_timeout.min(interval),
        };
        if interval.is_zero() {
            return Err(format!("scrape interval is zero for job {job:?}"));
        }
        if timeout > interval {
            return Err(format!(
                "scrape timeout greater than scrape interval for scrape config with job name {job:?}"
            ));
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(format!(
                "unsupported scheme {:?} for job {job:?}",
                self.scheme
            ));
        }
        if !self.metrics_path.starts_with('/') {
            return Err(format!(
                "metrics_path {:?} must start with / (job {job:?})",
                self.metrics_path
            ));
        }
        self.client.check()?;
        let accept = accept_header(self.scrape_protocols.as_deref())?;
        let compile = |rules: &[RelabelConfig]| -> Result<Vec<Rule>, String> {
            rules.iter().map(RelabelConfig::compile).collect()
        };
        Ok(PoolConfig {
            raw: self.clone(),
            interval,
            timeout,
            relabel: compile(&self.relabel_configs)?,
            metric_relabel: compile(&self.metric_relabel_configs)?,
            accept,
        })
    }
}

impl HttpClientConfig {
    /// The checks Prometheus's `HTTPClientConfig.Validate` makes of credentials, with its
    /// messages.
    fn check(&self) -> Result<(), String> {
        let HttpClientConfig {
            basic_auth,
            authorization,
            bearer_token,
            bearer_token_file,
            ..
        } = self;
        let auths = [
            basic_auth.is_some(),
            authorization.is_some(),
            bearer_token.is_some() || bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            return Err(
                "at most one of basic_auth, authorization & bearer_token must be configured".into(),
            );
        }
        if bearer_token.is_some() && bearer_token_file.is_some() {
            return Err(
                "at most one of bearer_token & bearer_token_file must be configured".into(),
            );
        }
        if let Some(b) = basic_auth {
            if b.password.is_some() && b.password_file.is_some() {
                return Err(
                    "at most one of basic_auth password & password_file must be configured".into(),
                );
            }
        }
        if let Some(a) = authorization {
            if a.kind.eq_ignore_ascii_case("basic") {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return Err(
                "at most one of authorization credentials & credentials_file must be configured"
                    .into(),
            );
            }
        }
        Ok(())
    }
}

/// Prometheus's `Accept` for the protocols in order of preference, then `*/*;q=0.1`. Protobuf is skipped (not parsed here); a list of only
/// protobuf asks for the text formats.
fn accept_header(protocols: Option<&[String]>) -> Result<String, String> {
    const DEFAULT: [&str; 3] = [
        "OpenMetricsText1.0.0",
        "OpenMetricsText0.0.1",
        "PrometheusText0.0.4",
    ];
    let asked: Vec<&str> = match protocols {
        Some(p) => p.iter().map(String::as_str).collect(),
        None => DEFAULT.to_vec(),
    };
    for (i, p) in asked.iter().enumerate() {
        if !PROTOCOLS.iter().any(|(n, _)| n == p) {
            return Err(format!(
                "unknown scrape protocol {p}, supported: [OpenMetricsText0.0.1 OpenMetricsText1.0.0 PrometheusProto PrometheusText0.0.4]"
            ));
        }
        if asked[..i].contains(p) {
            return Err(format!(
                "duplicated protocol in scrape_protocols, got {asked:?}"
            ));
        }
    }
    let mut text: Vec<&str> = asked
        .into_iter()
        .filter(|p| *p != "PrometheusProto")
        .collect();
    if text.is_empty() {
        text = DEFAULT.to_vec();
    }
    let mut out = String::new();
    for (i, p) in text.iter().enumerate() {
        let media = PROTOCOLS.iter().find(|(n, _)| n == p).expect("checked").1;
        // 2.42's weights for its three formats: 1, 0.75, 0.5.
        match i {
            0 => out.push_str(media),
            1 => out.push_str(&format!(",{media};q=0.75")),
            _ => out.push_str(&format!(",{media};q=0.5")),
        }
    }
    out.push_str(",*/*;q=0.1");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yml: &str) -> ScrapeConfig {
        serde_yaml::from_str(yml).unwrap()
    }

    #[test]
    fn defaults_and_globals_as_prometheus() {
        let c = parse("job_name: node\nstatic_configs: [{targets: ['a:9100']}]\n");
        let p = c
            .compile(Duration::from_secs(15), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            (p.interval, p.timeout),
            (Duration::from_secs(15), Duration::from_secs(10))
        );
        assert_eq!(c.metrics_path, "/metrics");
        assert!(c.honor_timestamps && !c.honor_labels);
        assert_eq!(
            p.accept,
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        );
        // The global timeout is capped at a shorter job interval.
        let c = parse("job_name: x\nscrape_interval: 5s\n");
        let p = c
            .compile(Duration::from_secs(60), Duration::from_secs(10))
            .unwrap();
        assert_eq!(p.timeout, Duration::from_secs(5));
        let c =
            parse("job_name: x\nbody_size_limit: 10MB\nscrape_protocols: [PrometheusText0.0.4]\n");
        assert_eq!(c.body_size_limit, Some(10 << 20));
        let p = c
            .compile(Duration::from_secs(60), Duration::from_secs(10))
            .unwrap();
        assert_eq!(p.accept, "text/plain;version=0.0.4,*/*;q=0.1");
    }

    #[test]
    fn load_time_checks() {
        let g = (Duration::from_secs(60), Duration::from_secs(10));
        for (yml, msg) in [
            (
                "job_name: x\nscrape_interval: 5s\nscrape_timeout: 10s\n",
                "scrape timeout greater than scrape interval",
            ),
            ("job_name: x\nscheme: ftp\n", "unsupported scheme"),
            ("job_name: x\nfrobnicate: 1\n", "field frobnicate not found"),
            (
                "job_name: x\nbasic_auth: {username: u}\nbearer_token: t\n",
                "at most one of basic_auth",
            ),
            (
                "job_name: x\nrelabel_configs: [{action: hashmod, target_label: a}]\n",
                "non-zero modulus",
            ),
            (
                "job_name: x\nscrape_protocols: [Nope]\n",
                "unknown scrape protocol",
            ),
        ] {
            let err = parse(yml).compile(g.0, g.1).unwrap_err();
            assert!(err.contains(msg), "{yml}: {err}");
        }
        let c = parse("job_name: x\nconsul_sd_configs: [{server: 'c:8500'}]\n");
        assert!(c.compile(g.0, g.1).is_ok());
        assert_eq!(
            c.unsupported_discovery().collect::<Vec<_>>(),
            ["consul_sd_configs"]
        );
        let c = parse("job_name: x\nhttp_sd_configs: [{url: 'http://sd/'}]\n");
        assert_eq!(
            c.unsupported_discovery().count(),
            0,
            "http_sd_configs is run"
        );
        assert_eq!(
            c.http_sd_configs[0].refresh_interval,
            Duration::from_secs(60)
        );
        assert!(c.http_sd_configs[0].client.follow_redirects);
        assert!(
            serde_yaml::from_str::<ScrapeConfig>("job_name: x\nscrape_interval: 15\n").is_err()
        );
    }

    #[test]
    fn byte_sizes_are_base_2() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("1KB"), Ok(1024));
        assert_eq!(parse_bytes("3MiB"), Ok(3 << 20));
        assert!(parse_bytes("1.5MB").is_err());
        assert!(parse_bytes("99999999999999TB").is_err());
    }
}
