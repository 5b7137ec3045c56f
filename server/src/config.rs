//! The configuration file: Prometheus's `prometheus.yml` shape where the concept exists
//! (`global`, `rule_files`, `alerting`, `remote_write`, `scrape_configs`) plus novamon's own
//! sections (`storage`, `listeners`, `query`, `limits`). Owns parsing, defaults and validation;
//! knows nothing about how the settings are used.
//!
//! Unknown keys are errors everywhere we model a section. The Prometheus sections novamon does
//! not act on yet (`scrape_configs`, `remote_write`) are accepted as written so an existing
//! prometheus.yml loads, and reported once at start-up as ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The embedded default: what `novamon` with no arguments runs on.
pub const DEFAULT_CONFIG: &str = include_str!("default.yml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this was loaded from (None for the embedded default): what a reload re-reads
    /// and what relative `rule_files` are resolved against.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub global: Global,
    #[serde(default)]
    pub rule_files: Vec<String>,
    #[serde(default)]
    pub alerting: Option<query::alertmanager::AlertingConfig>,
    #[serde(default)]
    pub remote_write: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub scrape_configs: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub listeners: Listeners,
    #[serde(default)]
    pub query: Query,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub traces: Traces,
    #[serde(default)]
    pub logs: Logs,
    #[serde(default)]
    pub alertmanager: Alertmanager,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    pub scrape_interval: PromDuration,
    pub scrape_timeout: PromDuration,
    pub evaluation_interval: PromDuration,
    pub external_labels: std::collections::BTreeMap<String, String>,
    pub query_log_file: Option<String>,
    /// How far back rule groups without their own `query_offset` evaluate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_query_offset: Option<PromDuration>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            scrape_interval: PromDuration(Duration::from_secs(60)),
            scrape_timeout: PromDuration(Duration::from_secs(10)),
            evaluation_interval: PromDuration(Duration::from_secs(60)),
            external_labels: Default::default(),
            query_log_file: None,
            rule_query_offset: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Where every store keeps its files.
    pub path: PathBuf,
    pub retention: PromDuration,
    pub out_of_order_window: PromDuration,
    /// fsync RocksDB's WAL on every write: survives power loss, not only a crash, at a cost.
    pub wal_fsync: bool,
    pub flush_interval: PromDuration,
}

impl Default for Storage {
    fn default() -> Self {
        let tsdb = storage::TsdbOptions::default();
        Storage {
            path: PathBuf::from("./data"),
            retention: PromDuration(tsdb.retention),
            out_of_order_window: PromDuration(tsdb.out_of_order_window),
            wal_fsync: tsdb.wal_fsync,
            flush_interval: PromDuration(tsdb.flush_interval),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    pub http: SocketAddr,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            http: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Query {
    pub lookback_delta: PromDuration,
    pub max_samples: usize,
    pub timeout: PromDuration,
}

impl Default for Query {
    fn default() -> Self {
        let engine = query::EngineOptions::default();
        Query {
            lookback_delta: PromDuration(engine.lookback_delta),
            max_samples: engine.max_samples,
            timeout: PromDuration(engine.timeout),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest remote-write body accepted, after snappy decompression.
    pub remote_write_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            remote_write_max_bytes: 32 << 20,
        }
    }
}

/// The trace store and the OTLP receiver (all three signals are received on these listeners).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Traces {
    /// How long spans are kept, by start time.
    pub retention: PromDuration,
    pub otlp: Otlp,
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            retention: PromDuration(storage::traces::TraceStoreOptions::default().retention),
            otlp: Otlp::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// OTLP/gRPC listener (the OTLP default port 4317).
    pub grpc: SocketAddr,
    /// OTLP/HTTP listener (port 4318); `/v1/*` is also served on the main HTTP listener.
    pub http: SocketAddr,
    /// Largest OTLP request accepted, decompressed.
    pub max_message_bytes: u64,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            grpc: SocketAddr::from(([0, 0, 0, 0], 4317)),
            http: SocketAddr::from(([0, 0, 0, 0], 4318)),
            max_message_bytes: 16 << 20,
        }
    }
}

/// The log store, the Fluentd forward listener and how records become streams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logs {
    /// Whole days of logs older than this are dropped.
    pub retention: PromDuration,
    /// Record keys whose values become stream labels (besides `tag`).
    pub label_keys: Vec<String>,
    /// Most log lines one metric query may read.
    pub max_query_lines: usize,
    pub forward: Forward,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            retention: PromDuration(storage::logs::LogOptions::default().retention),
            label_keys: ingest::logs::Mapping::default().label_keys,
            max_query_lines: 5_000_000,
            forward: Forward::default(),
        }
    }
}

/// The Fluentd Forward Protocol v1 listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forward {
    pub listen: SocketAddr,
    /// When set, clients must pass the HELO/PING/PONG handshake with this key.
    pub shared_key: Option<String>,
    /// When non-empty, the handshake also requires one of these users (needs `shared_key`).
    pub users: Vec<ForwardUser>,
    /// When set, the listener speaks TLS with this certificate.
    pub tls: Option<ForwardTls>,
    pub self_hostname: String,
    /// Largest frame accepted; a larger one closes the connection.
    pub max_frame_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardUser {
    pub username: String,
    pub password: String,
}

/// PEM files: the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for Forward {
    fn default() -> Self {
        let d = ingest::logs::forward::ForwardOptions::default();
        Forward {
            listen: SocketAddr::from(([0, 0, 0, 0], 24224)),
            shared_key: d.shared_key,
            users: Vec::new(),
            tls: None,
            self_hostname: d.self_hostname,
            max_frame_bytes: d.max_frame_bytes as u64,
        }
    }
}

/// The built-in Alertmanager: on by default with a route to no receiver, so alerts are
/// accepted and listed but sent nowhere until a config names receivers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alertmanager {
    pub enabled: bool,
    /// An alertmanager.yml to load (relative paths from the working directory).
    pub config_file: Option<PathBuf>,
    /// The same, inline; exclusive with `config_file`.
    pub config: Option<serde_yaml::Value>,
    /// The URL notifications link back to (Alertmanager's --web.external-url).
    pub external_url: String,
}

impl Default for Alertmanager {
    fn default() -> Self {
        Alertmanager {
            enabled: true,
            config_file: None,
            config: None,
            external_url: String::new(),
        }
    }
}

/// A duration in Prometheus's notation (`90s`, `1h30m`, `15d`), printed back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromDuration(pub Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&promql_parser::util::display_duration(&self.0))
    }
}

/// Prometheus durations; unlike the query API, a config file takes no bare numbers.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.parse::<f64>().is_ok() {
        return Err(format!(
            "not a valid duration string: {s:?} (use a unit, e.g. 30s, 15d)"
        ));
    }
    promql_parser::util::parse_duration(s)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `path` is the offending key (`storage.retention`); serde_yaml's message gives its line.
    #[error("invalid config {origin}: {path}: {source}")]
    Parse {
        origin: String,
        path: String,
        source: serde_yaml::Error,
    },
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(DEFAULT_CONFIG, "(embedded default)"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let mut config = Config::parse(&text, &p.display().to_string())?;
                config.source = Some(p.to_owned());
                Ok(config)
            }
        }
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // An empty file is a valid (all-defaults) config, as in Prometheus.
        if text.trim().is_empty() {
            return Config::parse("{}", origin);
        }
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
            ConfigError::Parse {
                origin: origin.to_owned(),
                path: e.path().to_string(),
                source: e.into_inner(),
            }
        })
    }

    /// Prometheus sections that are accepted but not acted on, for one start-up log line each.
    pub fn ignored_sections(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.scrape_configs.is_empty() {
            out.push("scrape_configs");
        }
        if !self.remote_write.is_empty() {
            out.push("remote_write");
        }
        out
    }

    pub fn log_options(&self) -> storage::logs::LogOptions {
        storage::logs::LogOptions {
            retention: self.logs.retention.0,
            wal_fsync: self.storage.wal_fsync,
            ..Default::default()
        }
    }

    /// Also loads the TLS certificate and key, so a bad file stops start-up.
    pub fn forward_options(&self) -> anyhow::Result<ingest::logs::forward::ForwardOptions> {
        use ingest::logs::forward as fwd;
        let f = &self.logs.forward;
        anyhow::ensure!(
            f.users.is_empty() || f.shared_key.is_some(),
            "logs.forward.users needs logs.forward.shared_key: user authentication is part of the shared-key handshake"
        );
        let tls = match &f.tls {
            Some(t) => Some(
                fwd::ForwardTls::load(&t.cert_file, &t.key_file)
                    .map_err(|e| anyhow::anyhow!("logs.forward.tls: {e}"))?,
            ),
            None => None,
        };
        Ok(fwd::ForwardOptions {
            shared_key: f.shared_key.clone(),
            users: f
                .users
                .iter()
                .map(|u| fwd::ForwardUser {
                    username: u.username.clone(),
                    password: u.password.clone(),
                })
                .collect(),
            tls,
            self_hostname: self.logs.forward.self_hostname.clone(),
            max_frame_bytes: self.logs.forward.max_frame_bytes as usize,
            ..Default::default()
        })
    }

    pub fn tsdb_options(&self) -> storage::TsdbOptions {
        storage::TsdbOptions {
            retention: self.storage.retention.0,
            out_of_order_window: self.storage.out_of_order_window.0,
            wal_fsync: self.storage.wal_fsync,
            flush_interval: self.storage.flush_interval.0,
        }
    }

    pub fn trace_store_options(&self) -> storage::traces::TraceStoreOptions {
        storage::traces::TraceStoreOptions {
            retention: self.traces.retention.0,
            wal_fsync: self.storage.wal_fsync,
        }
    }

    pub fn engine_options(&self) -> query::EngineOptions {
        query::EngineOptions {
            lookback_delta: self.query.lookback_delta.0,
            max_samples: self.query.max_samples,
            timeout: self.query.timeout.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_to_the_documented_defaults() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.storage.path, PathBuf::from("./data"));
        assert_eq!(c.storage.retention.0, Duration::from_secs(15 * 86400));
        assert_eq!(c.listeners.http, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.limits.remote_write_max_bytes, 32 << 20);
    }

    #[test]
    fn a_prometheus_yml_loads_and_its_unhandled_sections_are_reported() {
        let yml = r#"
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels: {cluster: edge-1}
  rule_query_offset: 30s
rule_files: ["rules/*.yml"]
scrape_configs:
  - job_name: node
    static_configs: [{targets: ["localhost:9100"]}]
remote_write:
  - url: http://example.invalid/api/v1/write
"#;
        let c = Config::parse(yml, "t").unwrap();
        assert_eq!(c.global.scrape_interval.0, Duration::from_secs(15));
        assert_eq!(c.global.external_labels["cluster"], "edge-1");
        assert_eq!(
            c.global.rule_query_offset.map(|d| d.0),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.ignored_sections(), vec!["scrape_configs", "remote_write"]);
    }

    #[test]
    fn alerting_and_alertmanager_sections_load_and_are_acted_on() {
        let c = Config::load(None).unwrap();
        assert!(c.alertmanager.enabled && c.alertmanager.config_file.is_none());
        let yml = "alerting:\n  alertmanagers:\n    - static_configs: [{targets: ['am:9093']}]\n      timeout: 5s\nalertmanager:\n  enabled: false\n  config: {route: {receiver: a}, receivers: [{name: a}]}\n";
        let c = Config::parse(yml, "t").unwrap();
        assert!(
            c.ignored_sections().is_empty(),
            "{:?}",
            c.ignored_sections()
        );
        assert!(!c.alertmanager.enabled);
        let back = serde_yaml::to_string(&c).unwrap();
        assert!(back.contains("timeout: 5s"), "{back}");
        let err = Config::parse("alerting:\n  alertmanagers: [{timeout: soon}]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("alerting.alertmanagers[0].timeout"), "{err}");
    }

    #[test]
    fn logs_section_defaults_and_overrides() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.logs.forward.listen, "0.0.0.0:24224".parse().unwrap());
        assert_eq!(
            c.logs.label_keys,
            ["service", "level", "host", "container_name", "namespace"]
        );
        assert_eq!(c.logs.forward.shared_key, None);
        let c = Config::parse("logs:\n  retention: 3d\n  label_keys: [app]\n  forward:\n    listen: 127.0.0.1:1\n    shared_key: s\n", "t").unwrap();
        assert_eq!(c.log_options().retention, Duration::from_secs(3 * 86400));
        assert_eq!(
            c.forward_options().unwrap().shared_key.as_deref(),
            Some("s")
        );
        assert_eq!(c.logs.label_keys, ["app"]);
    }

    #[test]
    fn forward_users_need_a_shared_key_and_tls_files_must_load() {
        let c = Config::parse(
            "logs:\n  forward:\n    users: [{username: u, password: p}]\n",
            "t",
        )
        .unwrap();
        let err = c.forward_options().unwrap_err().to_string();
        assert!(
            err.contains("logs.forward.users needs logs.forward.shared_key"),
            "{err}"
        );
        let c = Config::parse(
            "logs:\n  forward:\n    shared_key: k\n    users: [{username: u, password: p}]\n",
            "t",
        )
        .unwrap();
        let users = c.forward_options().unwrap().users;
        assert_eq!(
            (users[0].username.as_str(), users[0].password.as_str()),
            ("u", "p")
        );
        let c = Config::parse(
            "logs:\n  forward:\n    tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n",
            "t",
        )
        .unwrap();
        let err = c.forward_options().unwrap_err().to_string();
        assert!(
            err.starts_with("logs.forward.tls: reading /nonexistent/c.pem"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let err = Config::parse("storage:\n  path: /x\n  retension: 3d\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retension"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error_naming_key_and_line() {
        let err = Config::parse("global:\n  scrape_interval: soon\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scrape_interval"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn traces_section_defaults_and_overrides() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.traces.otlp.grpc, "0.0.0.0:4317".parse().unwrap());
        assert_eq!(c.traces.otlp.http, "0.0.0.0:4318".parse().unwrap());
        let c = Config::parse(
            "traces:\n  retention: 3d\n  otlp:\n    grpc: 127.0.0.1:14317\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.traces.retention.0, Duration::from_secs(3 * 86400));
        assert_eq!(c.traces.otlp.grpc, "127.0.0.1:14317".parse().unwrap());
        assert_eq!(c.traces.otlp.http, "0.0.0.0:4318".parse().unwrap());
        assert!(Config::parse("traces:\n  otlp:\n    grcp: x\n", "t").is_err());
    }

    #[test]
    fn durations_round_trip_in_prometheus_notation() {
        let c = Config::parse("storage:\n  retention: 36h\n", "t").unwrap();
        assert_eq!(c.storage.retention.0, Duration::from_secs(36 * 3600));
        let back = serde_yaml::to_string(&c).unwrap();
        assert!(back.contains("retention: 1d12h"), "{back}");
    }
}
